//! entente-core: named parameter sets, update validation, aggregators, the manifest and the
//! round engine. No network, no database, no ML framework.

pub mod aggregators;
pub mod audit_heads;
pub mod digest;
pub mod engine;
pub mod f32_bytes;
pub mod files;
pub mod manifest;
pub mod metrics;
pub mod params;
pub mod personal;
pub mod seeds;
pub mod text;
pub mod update;
