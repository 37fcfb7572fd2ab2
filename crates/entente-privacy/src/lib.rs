//! entente-privacy: secure aggregation (SecAgg, SecAgg+) and differential privacy (the RDP
//! accountant, noise calibration, clipping and Gaussian noise) for entente.
pub mod budget;
pub mod dp;
pub mod policy;
pub mod secagg;
pub mod secure_round;
