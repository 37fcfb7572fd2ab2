//! The coordinator's side of the network: mailboxes for the sites, a round-engine [`Site`]
//! over them, the gRPC service nodes call, the mutual-TLS listener, the open connections
//! sessions are bound to, the bounded records of refusals (audit log and warnings), the
//! revocation list in force, and the traffic counters the dashboard shows.
//!
//! [`Site`]: entente_core::engine::Site

pub mod connections;
pub mod hub;
pub mod listener;
mod refusals;
pub mod remote_site;
pub mod revocation;
pub mod service;
pub mod traffic;
pub mod warnings;
