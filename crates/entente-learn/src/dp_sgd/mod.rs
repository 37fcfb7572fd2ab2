//! Record-level differential privacy for local training: DP-SGD (Abadi et al., CCS 2016).
//!
//! Every step:
//!
//! 1. **Poisson sampling.** Each local example joins the step's batch independently with
//!    probability `q = min(1, batch_size / n)`. An epoch is `max(1, round(n / batch_size))`
//!    steps. A step whose sample is empty still adds noise and updates the model (with a zero
//!    gradient sum), because the accountant for the sampled Gaussian mechanism counts it.
//! 2. **Per-example gradients, clipped.** The per-example gradient `g_i` of example `i`'s own
//!    cross-entropy loss (not divided by the batch size) is scaled by
//!    `c_i = min(1, C / ||g_i||)`, so that every clipped gradient has L2 norm at most `C`.
//! 3. **Noise.** Gaussian noise `N(0, (sigma * C)^2)` is added to every coordinate of the sum
//!    of the clipped gradients, and the result is divided by the *expected* batch size `q * n`
//!    (Opacus's convention; the divisor does not depend on the data).
//! 4. **Update.** SGD (with momentum when configured) or Adam (PyTorch's defaults) on the
//!    flat parameter vector. With FedProx, `mu * (w - w0)` is added to the noisy gradient
//!    after noising: it depends only on the parameters, not on the data, so it is
//!    post-processing and costs no privacy.
//!
//! The privacy cost of a call is that of the sampled Gaussian mechanism with rate `q`, noise
//! multiplier `sigma` and [`TrainOutcome::steps`] compositions.
//!
//! **Per-example gradients without per-example backward passes.** Both models are supported.
//! One batched forward pass and one batched backward pass give every example's gradient of its
//! own loss, layer by layer: for dense layers (the MLP, and the CNN's head) as outer products
//! whose norms and clipped sum need no per-example gradient at all (see `dense.rs`); for the
//! CNN's convolutions as one batched im2col matmul per layer (Goodfellow 2015; see `conv.rs`).
//! The CNN processes a large batch in chunks of a few dozen to a few hundred examples (each
//! chunk one batched pass) so that its per-example convolution gradients stay within about
//! 64 MiB. [`per_example_gradients`] materializes every gradient from the same passes, for
//! checks only.
//!
//! **Randomness.** Poisson sampling and noise both come from one ChaCha stream. [`train`] (and
//! so [`crate::trainer::train`]) seeds it from the round's seed, which makes runs reproducible
//! but lets whoever knows the seed (the coordinator hands it out) recompute the noise and the
//! sample and remove them, which voids the guarantee. A site that does not trust the
//! coordinator must call [`train_with_rng`] with [`rng_from_secret`], keyed by a secret that
//! never leaves the site.

mod conv;
mod dense;
mod optimizer;

use burn::tensor::{Device, Tensor, TensorData};
use entente_core::engine::{DpSgd, LocalTraining};
use entente_core::params::ParamSet;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::data::Dataset;
use crate::model::ModelSpec;
use crate::param_store::StoreError;
use crate::trainer::{TrainError, TrainOutcome, check_input};
use conv::{ConvGrads, ConvTrunk};
use dense::{DensePass, DenseStack};
use optimizer::Optimizer;

/// Values of per-example state a CNN chunk may hold (64 MiB of `f32`).
const CHUNK_FLOATS: usize = 16 << 20;

/// Reproducible DP-SGD randomness from the round's seed. Anyone who knows the seed can
/// reproduce the sample and the noise: use it for simulations, not against an untrusted
/// coordinator (see [`rng_from_secret`]).
pub fn rng_from_seed(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// DP-SGD randomness keyed by a site-held `secret` (256 bits), one stream per round `seed`:
/// reproducible for the site, unpredictable to anyone without the secret.
pub fn rng_from_secret(secret: &[u8; 32], seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::from_seed(*secret);
    rng.set_stream(seed);
    rng
}

/// Sampling rate and steps per epoch (see [`entente_core::engine::dp_sgd_sampling`]).
pub use entente_core::engine::dp_sgd_sampling as sampling;

/// Trains with DP-SGD; randomness (sampling and noise) from [`rng_from_seed`]`(seed)`.
///
/// Called by [`crate::trainer::train`] when `cfg.dp_sgd` is set.
pub fn train(
    spec: &ModelSpec,
    global: &ParamSet,
    data: &Dataset,
    cfg: &LocalTraining,
    dp: &DpSgd,
    seed: u64,
) -> Result<TrainOutcome, TrainError> {
    train_with_rng(spec, global, data, cfg, dp, &mut rng_from_seed(seed))
}

/// Trains with DP-SGD, drawing the Poisson samples and the noise from `rng`.
///
/// Errors: [`TrainError::InvalidDpSgd`] for a non-positive clip norm or a negative noise
/// multiplier, [`TrainError::Unsupported`] for a label the model has no class for, and the
/// trainer's usual errors.
pub fn train_with_rng(
    spec: &ModelSpec,
    global: &ParamSet,
    data: &Dataset,
    cfg: &LocalTraining,
    dp: &DpSgd,
    rng: &mut ChaCha8Rng,
) -> Result<TrainOutcome, TrainError> {
    check_settings(dp)?;
    let net = Network::locate(spec, global)?;
    check_input(spec, data)?;
    check_labels(data, net.classes())?;

    let device = Device::flex();
    let n = data.len();
    let (q, steps_per_epoch) = sampling(n, cfg.batch_size);
    let expected_batch = q * n as f64;
    let noise_std = dp.noise_multiplier * dp.clip;
    if !noise_std.is_finite() {
        return Err(TrainError::InvalidDpSgd(format!(
            "the noise standard deviation sigma * C = {noise_std} is not finite"
        )));
    }

    let anchor: Vec<f32> = global.as_flat().to_vec();
    let mut params = anchor.clone();
    let mut optimizer = Optimizer::new(cfg.optimizer, params.len());
    let mut sample = Vec::with_capacity(cfg.batch_size.saturating_mul(2).min(n));
    let (mut loss_sum, mut loss_steps, mut steps) = (0.0, 0usize, 0usize);

    for _ in 0..cfg.epochs {
        for _ in 0..steps_per_epoch {
            poisson_sample(n, q, rng, &mut sample);
            let mut grad = if sample.is_empty() {
                vec![0f32; params.len()]
            } else {
                let clipped = net.clipped_sum(&params, data, &sample, dp.clip, &device)?;
                let batch_loss = clipped.loss_sum / sample.len() as f64;
                if !batch_loss.is_finite() {
                    return Err(TrainError::Diverged(batch_loss));
                }
                loss_sum += batch_loss;
                loss_steps += 1;
                clipped.sum
            };
            add_noise_and_scale(&mut grad, noise_std, 1.0 / expected_batch, rng);
            if cfg.fedprox_mu > 0.0 {
                let mu = cfg.fedprox_mu as f32;
                for ((g, w), w0) in grad.iter_mut().zip(&params).zip(&anchor) {
                    *g += mu * (w - w0);
                }
            }
            optimizer.step(cfg.learning_rate as f32, &mut params, &grad);
            steps += 1;
        }
    }
    if let Some(bad) = params.iter().find(|w| !w.is_finite()) {
        return Err(TrainError::Diverged(f64::from(*bad)));
    }
    Ok(TrainOutcome {
        params: ParamSet::from_flat(global.layout().clone(), params).map_err(StoreError::from)?,
        mean_loss: if loss_steps > 0 {
            loss_sum / loss_steps as f64
        } else {
            0.0
        },
        num_examples: n,
        steps,
    })
}

/// The clipped gradient sum of a batch, as one DP-SGD step computes it (before noise).
#[derive(Debug, Clone)]
pub struct ClippedSum {
    /// Sum of the clipped per-example gradients, laid out like the parameter set.
    pub sum: Vec<f32>,
    /// Per-example gradient L2 norms before clipping, in batch order.
    pub norms: Vec<f32>,
    /// Clip factors `min(1, C / norm)`, in batch order.
    pub factors: Vec<f32>,
    /// Sum of the per-example cross-entropy losses.
    pub loss_sum: f64,
}

/// The clipped per-example gradient sum of `indices` at `params`, computed exactly as a DP-SGD
/// step does (the MLP and the CNN's dense layers without materializing per-example gradients).
///
/// # Panics
///
/// If an index is out of range for `data`.
pub fn clipped_gradient_sum(
    spec: &ModelSpec,
    params: &ParamSet,
    data: &Dataset,
    indices: &[usize],
    clip: f64,
) -> Result<ClippedSum, TrainError> {
    let net = Network::locate(spec, params)?;
    check_input(spec, data)?;
    check_labels(data, net.classes())?;
    if !(clip.is_finite() && clip > 0.0) {
        return Err(TrainError::InvalidDpSgd(format!(
            "the clip norm must be positive and finite, not {clip}"
        )));
    }
    net.clipped_sum(params.as_flat(), data, indices, clip, &Device::flex())
}

/// Per-example gradients of each example's own cross-entropy loss at `params`, one flat
/// vector per entry of `indices`, laid out like the parameter set. They are materialized from
/// the same batched forward and backward passes that training uses (dense layers as outer
/// products); training itself never builds the dense ones. For checks.
///
/// # Panics
///
/// If an index is out of range for `data`.
pub fn per_example_gradients(
    spec: &ModelSpec,
    params: &ParamSet,
    data: &Dataset,
    indices: &[usize],
) -> Result<Vec<Vec<f32>>, TrainError> {
    let net = Network::locate(spec, params)?;
    check_input(spec, data)?;
    check_labels(data, net.classes())?;
    let flat = params.as_flat();
    let device = Device::flex();
    let mut out = vec![vec![0f32; flat.len()]; indices.len()];
    for (chunk, grads) in indices
        .chunks(net.chunk_len())
        .zip(out.chunks_mut(net.chunk_len()))
    {
        let pass = net.backprop(flat, data, chunk, &device)?;
        net.head.materialize(&pass.head, grads)?;
        if let Some(trunk) = &net.trunk {
            trunk.materialize(&pass.convs, grads)?;
        }
    }
    Ok(out)
}

/// Clip factors `min(1, clip / norm)` for per-example gradient norms (1 for a zero norm).
pub(crate) fn clip_factors(norms: &[f32], clip: f64) -> Vec<f32> {
    norms
        .iter()
        .map(|&norm| {
            let norm = f64::from(norm);
            if norm > clip {
                (clip / norm) as f32
            } else {
                1.0
            }
        })
        .collect()
}

/// Indices `0..n` each kept independently with probability `q`, into `out`.
pub(crate) fn poisson_sample(n: usize, q: f64, rng: &mut ChaCha8Rng, out: &mut Vec<usize>) {
    out.clear();
    out.extend((0..n).filter(|_| rng.random::<f64>() < q));
}

/// Adds `N(0, std^2)` to every coordinate, then multiplies it by `scale` (no draws when `std`
/// is 0). `std * StandardNormal` is `rand_distr::Normal(0, std)`, drawn about 40% faster.
fn add_noise_and_scale(values: &mut [f32], std: f64, scale: f64, rng: &mut ChaCha8Rng) {
    if std > 0.0 {
        for v in values {
            let z: f64 = StandardNormal.sample(rng);
            *v = ((f64::from(*v) + std * z) * scale) as f32;
        }
    } else {
        for v in values {
            *v = (f64::from(*v) * scale) as f32;
        }
    }
}

fn check_settings(dp: &DpSgd) -> Result<(), TrainError> {
    if !(dp.clip.is_finite() && dp.clip > 0.0) {
        return Err(TrainError::InvalidDpSgd(format!(
            "the clip norm must be positive and finite, not {}",
            dp.clip
        )));
    }
    if !(dp.noise_multiplier.is_finite() && dp.noise_multiplier >= 0.0) {
        return Err(TrainError::InvalidDpSgd(format!(
            "the noise multiplier must be non-negative and finite, not {}",
            dp.noise_multiplier
        )));
    }
    Ok(())
}

fn check_labels(data: &Dataset, classes: usize) -> Result<(), TrainError> {
    match data.labels.iter().find(|&&l| l as usize >= classes) {
        Some(l) => Err(TrainError::Unsupported(format!(
            "label {l} is not below the model's {classes} classes"
        ))),
        None => Ok(()),
    }
}

/// A model as DP-SGD sees it: an optional convolutional trunk (the CNN's) followed by dense
/// layers, located in a parameter set's flat vector.
#[derive(Debug)]
struct Network {
    trunk: Option<ConvTrunk>,
    head: DenseStack,
}

/// One batched forward and backward pass over a chunk of examples.
struct Pass {
    head: DensePass,
    /// Per-example gradients of the trunk's convolutions (none for the MLP).
    convs: Vec<ConvGrads>,
}

impl Network {
    /// Finds every layer of `spec` in `params`, checking names and shapes.
    fn locate(spec: &ModelSpec, params: &ParamSet) -> Result<Self, TrainError> {
        let layout = params.layout();
        let tensors = spec.tensor_shapes();
        match spec {
            ModelSpec::Mlp { .. } => Ok(Self {
                trunk: None,
                head: DenseStack::locate(layout, &tensors)?,
            }),
            ModelSpec::Cnn {
                channels,
                height,
                width,
                ..
            } => {
                // The convolutions come first; the first matrix is the first dense weight.
                let convs = tensors
                    .iter()
                    .position(|(_, shape, _)| shape.len() == 2)
                    .unwrap_or(tensors.len());
                Ok(Self {
                    trunk: Some(ConvTrunk::locate(
                        layout,
                        &tensors[..convs],
                        [*channels, *height, *width],
                    )?),
                    head: DenseStack::locate(layout, &tensors[convs..])?,
                })
            }
        }
    }

    fn classes(&self) -> usize {
        self.head.classes()
    }

    /// Examples per batched pass: all of them for the MLP (whose per-example state is a few
    /// activations), enough to fill [`CHUNK_FLOATS`] for the CNN.
    fn chunk_len(&self) -> usize {
        match &self.trunk {
            Some(trunk) => (CHUNK_FLOATS / trunk.floats_per_example().max(1)).max(1),
            None => usize::MAX,
        }
    }

    /// Batched forward and backward pass over `indices` with parameters `flat`.
    fn backprop(
        &self,
        flat: &[f32],
        data: &Dataset,
        indices: &[usize],
        device: &Device,
    ) -> Result<Pass, TrainError> {
        let (x, onehot) = dense::batch(data, indices, self.classes(), device);
        match &self.trunk {
            None => Ok(Pass {
                head: self.head.backprop(flat, x, onehot, device),
                convs: Vec::new(),
            }),
            Some(trunk) => {
                let (features, cache) = trunk.forward(flat, x, device);
                let head = self.head.backprop(flat, features, onehot, device);
                let convs = trunk.backward(cache, head.input_gradient())?;
                Ok(Pass { head, convs })
            }
        }
    }

    /// Per-example norms, clip factors and the clipped gradient sum of `indices`.
    fn clipped_sum(
        &self,
        flat: &[f32],
        data: &Dataset,
        indices: &[usize],
        clip: f64,
        device: &Device,
    ) -> Result<ClippedSum, TrainError> {
        let mut out = ClippedSum {
            sum: vec![0f32; flat.len()],
            norms: Vec::with_capacity(indices.len()),
            factors: Vec::with_capacity(indices.len()),
            loss_sum: 0.0,
        };
        for chunk in indices.chunks(self.chunk_len()) {
            let pass = self.backprop(flat, data, chunk, device)?;
            let mut squared = self.head.squared_norms(&pass.head);
            if let Some(trunk) = &self.trunk {
                squared = squared + trunk.squared_norms(&pass.convs);
            }
            let norms: Vec<f32> = dense::read(squared)?.into_iter().map(f32::sqrt).collect();
            let factors = clip_factors(&norms, clip);
            let c: Tensor<2> =
                Tensor::from_data(TensorData::new(factors.clone(), [chunk.len(), 1]), device);
            self.head.add_clipped_sum(&pass.head, &c, &mut out.sum)?;
            if let Some(trunk) = &self.trunk {
                trunk.add_clipped_sum(&pass.convs, &c, &mut out.sum)?;
            }
            out.norms.extend(norms);
            out.factors.extend(factors);
            out.loss_sum += pass.head.loss_sum;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_factors_bound_the_norm() {
        let norms = [0.0, 0.5, 1.0, 2.0, 1e6];
        let f = clip_factors(&norms, 1.0);
        assert_eq!(f[..3], [1.0, 1.0, 1.0]);
        for (n, c) in norms.iter().zip(&f) {
            assert!(n * c <= 1.0 + 1e-6, "{n} * {c}");
        }
        assert!((f[3] - 0.5).abs() < 1e-7);
    }

    #[test]
    fn sampling_rate_and_steps() {
        assert_eq!(sampling(1000, 100), (0.1, 10));
        assert_eq!(sampling(1000, 300), (0.3, 3));
        assert_eq!(sampling(100, 1000), (1.0, 1));
        assert_eq!(sampling(1438, 64).1, 22);
    }

    /// Batch sizes are Binomial(n, q): their mean and variance over many steps match.
    #[test]
    fn poisson_sample_sizes_are_binomial() {
        let (n, q, trials) = (2000, 0.05, 2000);
        let mut rng = rng_from_seed(3);
        let mut out = Vec::new();
        let sizes: Vec<f64> = (0..trials)
            .map(|_| {
                poisson_sample(n, q, &mut rng, &mut out);
                assert!(out.windows(2).all(|w| w[0] < w[1]));
                out.len() as f64
            })
            .collect();
        let mean = sizes.iter().sum::<f64>() / trials as f64;
        let var = sizes.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / (trials - 1) as f64;
        let (m0, v0) = (n as f64 * q, n as f64 * q * (1.0 - q));
        // Mean within 5 standard errors; variance within 20% (its relative s.e. is ~3%).
        assert!(
            (mean - m0).abs() < 5.0 * (v0 / trials as f64).sqrt(),
            "{mean}"
        );
        assert!((var / v0 - 1.0).abs() < 0.2, "{var} vs {v0}");
    }

    #[test]
    fn secret_keyed_streams_differ_from_seeded_ones() {
        let a: u64 = rng_from_secret(&[7; 32], 1).random();
        let b: u64 = rng_from_secret(&[7; 32], 2).random();
        let c: u64 = rng_from_secret(&[8; 32], 1).random();
        let d: u64 = rng_from_seed(1).random();
        assert!(a != b && a != c && a != d);
        assert_eq!(a, rng_from_secret(&[7; 32], 1).random::<u64>());
    }
}
