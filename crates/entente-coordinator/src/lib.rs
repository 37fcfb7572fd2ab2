//! The entente coordinator: [`run`] drives a federated run (the `server` module), with the
//! round engine's sites over gRPC with mutual TLS (`transport`), the durable store (SQLite by
//! default, PostgreSQL for production) and the hash-chained audit log.

pub mod audit;
pub mod server;
pub mod store;
pub mod transport;

pub use server::{
    AuditCheck, CoordinatorConfig, CoordinatorError, FederationStatus, LATEST_AUDIT_ENTRIES,
    NoReport, Report, RunStart, RunSummary, SitePrivacy, SiteStatus, run,
};
