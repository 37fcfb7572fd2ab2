//! The entente coordinator: the round engine's sites over gRPC with mutual TLS, the durable
//! store (SQLite by default, PostgreSQL for production) and the hash-chained audit log.

pub mod audit;
pub mod store;
pub mod transport;
