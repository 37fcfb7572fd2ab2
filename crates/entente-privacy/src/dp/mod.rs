//! Differential privacy: an RDP accountant for the sampled Gaussian mechanism, noise
//! calibration, and the clipping and Gaussian-noise mechanisms.
//!
//! - [`rdp`]: Rényi DP of the Poisson-sampled Gaussian mechanism (Mironov 2017; Mironov, Talwar
//!   and Zhang 2019), its composition over steps and rounds, and conversion to (epsilon, delta)
//!   as Opacus does it (Balle et al. 2020). Agrees with Opacus's RDP accountant over the grid
//!   stored in `reference/rdp_reference.csv`.
//! - [`client`]: client-level DP for FedAvg with a trusted coordinator (DP-FedAvg).
//! - [`distributed`]: the same guarantee without a trusted coordinator: each site clips its
//!   update and adds its share of the noise before secure aggregation masks it.
//! - [`calibrate`]: the smallest noise multiplier that meets a target (epsilon, delta).
//! - [`mechanisms`]: L2 clipping and seeded Gaussian noise (client-level DP, McMahan et al.
//!   ICLR 2018; the same primitives serve per-example DP-SGD).
//!
//! The accountant assumes Poisson sampling: each record (or, for client-level DP, each site)
//! takes part in a step independently with probability `q`.

pub mod calibrate;
pub mod client;
pub mod distributed;
pub mod mechanisms;
pub mod rdp;

pub use calibrate::{
    DEFAULT_TOLERANCE, MAX_NOISE_MULTIPLIER, calibrate_noise_multiplier,
    calibrate_noise_multiplier_after,
};
pub use distributed::DistributedDp;
pub use mechanisms::{add_gaussian_noise, clip_l2, l2_norm, noise_rng, os_noise_rng};
pub use rdp::{
    Accountant, MAX_ORDER, PrivacySpent, SgmEvent, compute_rdp, default_orders, epsilon,
    get_privacy_spent,
};

/// Errors of the differential-privacy module. Every one carries the offending value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DpError {
    /// A parameter is outside its domain (for example `q` outside `[0, 1]`, a negative noise
    /// multiplier, `delta` outside `(0, 1)`, a non-finite number).
    #[error("invalid {name} = {value}: must be {expected}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What the value must be.
        expected: &'static str,
    },
    /// No RDP orders were given.
    #[error("the list of RDP orders is empty")]
    EmptyOrders,
    /// Two lists that must match element for element have different lengths.
    #[error("length mismatch: {orders} orders but {rdp} RDP values")]
    LengthMismatch {
        /// Number of orders.
        orders: usize,
        /// Number of RDP values.
        rdp: usize,
    },
    /// Two accountants use different RDP orders and cannot be merged.
    #[error("the accountants use different RDP orders")]
    OrdersDiffer,
    /// A vector to clip or noise holds a NaN or an infinity.
    #[error("value at index {index} is not finite ({value})")]
    NonFiniteValue {
        /// Position of the first non-finite value.
        index: usize,
        /// The value.
        value: f32,
    },
    /// No noise multiplier, however large, brings epsilon down to the target: even with
    /// infinite noise the spend already recorded and the conversion leave `floor`.
    #[error(
        "target epsilon {target} is unreachable at delta {delta}: even infinite noise gives epsilon {floor}"
    )]
    TargetUnreachable {
        /// The target epsilon.
        target: f64,
        /// The target delta.
        delta: f64,
        /// The epsilon approached as the noise multiplier grows without bound.
        floor: f64,
    },
    /// The search stopped at [`calibrate::MAX_NOISE_MULTIPLIER`] without reaching the target.
    #[error(
        "target epsilon {target} not reached: noise multiplier {noise_multiplier} still gives epsilon {epsilon}"
    )]
    NotReached {
        /// The target epsilon.
        target: f64,
        /// The largest noise multiplier tried.
        noise_multiplier: f64,
        /// Its epsilon.
        epsilon: f64,
    },
}

/// Checks that `value` is finite and in `[lo, hi]`.
pub(crate) fn check_range(
    name: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    expected: &'static str,
) -> Result<(), DpError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(DpError::InvalidParameter {
            name,
            value,
            expected,
        })
    }
}

/// Checks that `delta` is finite and in the open interval `(0, 1)`.
pub(crate) fn check_delta(delta: f64) -> Result<(), DpError> {
    if delta.is_finite() && delta > 0.0 && delta < 1.0 {
        Ok(())
    } else {
        Err(DpError::InvalidParameter {
            name: "delta",
            value: delta,
            expected: "in (0, 1)",
        })
    }
}
