//! entente-privacy: secure aggregation (and, later, differential privacy) for entente.
pub mod secagg;
pub mod secure_round;
