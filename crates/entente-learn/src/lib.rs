//! entente-learn: datasets, partitioners, models and the local trainer, on burn.
//!
//! This is the only crate of entente that knows burn; everything it hands out is a
//! [`entente_core::params::ParamSet`].

pub mod data;
pub mod dp_sgd;
pub mod kept;
pub mod model;
pub mod param_store;
pub mod partition;
pub mod personal_head;
pub mod scaffold;
pub mod simulation;
pub mod site;
pub mod site_data;
pub mod trainer;
