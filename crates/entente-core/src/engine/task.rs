//! What the coordinator hands a site each round.

use std::sync::Arc;

use crate::engine::turn::Turn;
use crate::params::ParamSet;

/// The optimizer a site uses for local training.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LocalOptimizer {
    /// Stochastic gradient descent; `momentum` 0 disables momentum.
    Sgd {
        /// Momentum coefficient (PyTorch semantics, no dampening).
        momentum: f64,
    },
    /// Adam with PyTorch's default betas (0.9, 0.999) and epsilon 1e-8.
    Adam,
}

/// Settings of local training, as the manifest fixes them.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalTraining {
    /// Passes over the local data per round.
    pub epochs: usize,
    /// Examples per minibatch (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Local learning rate.
    pub learning_rate: f64,
    /// Local optimizer.
    pub optimizer: LocalOptimizer,
    /// FedProx proximal coefficient mu; 0 is plain FedAvg local training.
    pub fedprox_mu: f64,
    /// Record-level differential privacy (DP-SGD), when the manifest asks for it.
    pub dp_sgd: Option<DpSgd>,
}

/// Poisson sampling rate `q = min(1, batch_size / examples)` and steps per epoch
/// `max(1, round(examples / batch_size))` of DP-SGD: what a site trains and what it is charged.
pub fn dp_sgd_sampling(examples: usize, batch_size: usize) -> (f64, usize) {
    let b = batch_size.max(1) as f64;
    let n = examples as f64;
    ((b / n).min(1.0), ((n / b).round() as usize).max(1))
}

/// DP-SGD settings (Abadi et al., CCS 2016): every batch is a Poisson sample of the site's
/// examples with rate `batch_size / examples`, every per-example gradient is clipped to L2
/// norm `clip`, and Gaussian noise of standard deviation `noise_multiplier * clip` is added to
/// their sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSgd {
    /// Per-example gradient norm bound C.
    pub clip: f64,
    /// Noise multiplier sigma.
    pub noise_multiplier: f64,
}

/// One round's work for one site.
#[derive(Debug, Clone)]
pub struct TrainTask {
    /// Round number, from 1.
    pub round: u32,
    /// The global model to start from.
    pub global: Arc<ParamSet>,
    /// Local training settings.
    pub training: LocalTraining,
    /// Seed for the site's randomness this round (batch order).
    pub seed: u64,
    /// When the engine takes this site's update (plain aggregation); a site that receives its
    /// update from elsewhere waits for it before taking the update in. `None` when order
    /// does not matter (secure aggregation).
    pub turn: Option<Turn>,
}
