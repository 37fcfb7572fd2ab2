//! The coordinator's side of the network: mailboxes for the sites, a round-engine [`Site`]
//! over them, the gRPC service nodes call, and the mutual-TLS listener.
//!
//! [`Site`]: entente_core::engine::Site

pub mod hub;
pub mod listener;
pub mod remote_site;
pub mod service;
