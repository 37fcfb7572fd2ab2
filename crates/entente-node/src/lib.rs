//! The entente node: the agent an institution runs beside its data. It connects out to the
//! coordinator over mutual TLS (so it works behind NAT and firewalls that allow outbound TLS),
//! checks every task against the manifest the institution agreed to, trains on local data,
//! and sends back only what the task asks for. Privacy settings (the site's privacy budget
//! under every mechanism, secure aggregation) are enforced here, whatever the coordinator asks.

pub mod agent;
pub mod checks;
mod connector;
pub mod identity;
pub mod local;
pub mod report;

pub use agent::{NodeConfig, NodeError, default_audit_record, leaf_site_name, run, run_reporting};
pub use local::Trainer;
pub use report::{NodeReport, Quiet};
