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
//! **Per-example gradients without per-example backward passes.** Only the MLP
//! ([`ModelSpec::Mlp`]) is supported. One forward pass over the batch keeps each layer's input
//! `A_{l-1}` (with `A_0 = X`); one backward pass gives the per-example output gradients
//! `delta_L = softmax(Z_L) - onehot(y)` and `delta_l = (delta_{l+1} W_{l+1}) * 1[Z_l > 0]`, all
//! as `[batch, width]` matrices. Example `i`'s weight gradient of dense layer `l` is the outer
//! product `delta_{l,i} A_{l-1,i}^T` and its bias gradient is `delta_{l,i}`, so its squared
//! norm is exactly `sum_l (||A_{l-1,i}||^2 + 1) * ||delta_{l,i}||^2`, and the clipped sum is
//! `(diag(c) delta_l)^T A_{l-1}` (one matmul per layer) and `sum_i c_i delta_{l,i}`. No
//! per-example gradient is ever materialized in training; [`per_example_gradients`] does so
//! for checks only.
//!
//! **Randomness.** Poisson sampling and noise both come from one ChaCha stream. [`train`] (and
//! so [`crate::trainer::train`]) seeds it from the round's seed, which makes runs reproducible
//! but lets whoever knows the seed (the coordinator hands it out) recompute the noise and the
//! sample and remove them, which voids the guarantee. A site that does not trust the
//! coordinator must call [`train_with_rng`] with [`rng_from_secret`], keyed by a secret that
//! never leaves the site.

use std::ops::Range;

use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Device, Tensor, TensorData};
use entente_core::engine::{DpSgd, LocalOptimizer, LocalTraining};
use entente_core::params::ParamSet;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::data::Dataset;
use crate::model::ModelSpec;
use crate::param_store::StoreError;
use crate::trainer::{TrainError, TrainOutcome, check_input};

/// PyTorch's Adam defaults, as the non-private trainer uses them.
const ADAM_BETA1: f32 = 0.9;
const ADAM_BETA2: f32 = 0.999;
const ADAM_EPSILON: f32 = 1e-8;

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
/// Errors: [`TrainError::Unsupported`] for the CNN, [`TrainError::InvalidDpSgd`] for a
/// non-positive clip norm or a negative noise multiplier, and the trainer's usual errors.
pub fn train_with_rng(
    spec: &ModelSpec,
    global: &ParamSet,
    data: &Dataset,
    cfg: &LocalTraining,
    dp: &DpSgd,
    rng: &mut ChaCha8Rng,
) -> Result<TrainOutcome, TrainError> {
    check_settings(dp)?;
    let mlp = Mlp::locate(spec, global)?;
    check_input(spec, data)?;
    check_labels(data, mlp.classes())?;

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
                let clipped = mlp.clipped_sum(&params, data, &sample, dp.clip, &device)?;
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
/// step does (without materializing per-example gradients). MLP only.
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
    let mlp = Mlp::locate(spec, params)?;
    check_input(spec, data)?;
    check_labels(data, mlp.classes())?;
    if !(clip.is_finite() && clip > 0.0) {
        return Err(TrainError::InvalidDpSgd(format!(
            "the clip norm must be positive and finite, not {clip}"
        )));
    }
    mlp.clipped_sum(params.as_flat(), data, indices, clip, &Device::flex())
}

/// Per-example gradients of each example's own cross-entropy loss at `params`, one flat
/// vector per entry of `indices`, laid out like the parameter set. They are materialized from
/// the same batched forward and backward pass that training uses, as outer products; training
/// itself never builds them. For checks. MLP only.
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
    let mlp = Mlp::locate(spec, params)?;
    check_input(spec, data)?;
    check_labels(data, mlp.classes())?;
    if indices.is_empty() {
        return Ok(Vec::new());
    }
    let pass = mlp.backprop(params.as_flat(), data, indices, &Device::flex())?;
    let inputs = pass
        .inputs
        .into_iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    let deltas = pass
        .deltas
        .into_iter()
        .map(read)
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = vec![vec![0f32; params.num_values()]; indices.len()];
    for (l, layer) in mlp.layers.iter().enumerate() {
        let (fan_in, fan_out) = (layer.inputs, layer.outputs);
        for (i, g) in out.iter_mut().enumerate() {
            let a = &inputs[l][i * fan_in..(i + 1) * fan_in];
            let d = &deltas[l][i * fan_out..(i + 1) * fan_out];
            let w = &mut g[layer.weight.clone()];
            for (o, &d_o) in d.iter().enumerate() {
                for (k, &a_k) in a.iter().enumerate() {
                    w[o * fan_in + k] = d_o * a_k;
                }
            }
            g[layer.bias.clone()].copy_from_slice(d);
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

fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, TrainError> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|_| TrainError::ReadLoss)
}

/// One dense layer's place in the flat parameter vector (PyTorch layout: weight `[out, in]`).
#[derive(Debug, Clone)]
struct Dense {
    weight: Range<usize>,
    bias: Range<usize>,
    inputs: usize,
    outputs: usize,
}

/// The MLP's dense layers, located in a parameter set's flat vector.
#[derive(Debug)]
struct Mlp {
    layers: Vec<Dense>,
}

/// Activations and output gradients of one batched forward and backward pass.
struct Backprop {
    /// Input of every layer, `A_{l-1}`, `[batch, in_l]`.
    inputs: Vec<Tensor<2>>,
    /// Per-example gradient of each example's loss w.r.t. layer `l`'s pre-activation,
    /// `delta_l`, `[batch, out_l]`.
    deltas: Vec<Tensor<2>>,
    /// Sum of the per-example losses.
    loss_sum: f64,
}

impl Mlp {
    /// Finds every layer of `spec` in `params`, checking names and shapes.
    fn locate(spec: &ModelSpec, params: &ParamSet) -> Result<Self, TrainError> {
        if let ModelSpec::Cnn { .. } = spec {
            return Err(TrainError::Unsupported(
                "DP-SGD supports the MLP for now; the CNN's per-example gradients are not \
                 implemented"
                    .into(),
            ));
        }
        let layout = params.layout();
        let find = |name: &str, shape: &[usize]| -> Result<Range<usize>, TrainError> {
            let i = layout
                .position(name)
                .ok_or_else(|| StoreError::Missing(name.to_string()))?;
            let got = &layout.specs()[i].shape;
            if got != shape {
                return Err(StoreError::Shape {
                    name: name.to_string(),
                    got: got.clone(),
                    expected: shape.to_vec(),
                }
                .into());
            }
            Ok(layout.range(i))
        };
        let shapes = spec.tensor_shapes();
        let layers = shapes
            .chunks(2)
            .map(|pair| {
                let [(w_name, w_shape, _), (b_name, b_shape, _)] = pair else {
                    unreachable!("the MLP has a weight and a bias per layer")
                };
                Ok(Dense {
                    weight: find(w_name, w_shape)?,
                    bias: find(b_name, b_shape)?,
                    inputs: w_shape[1],
                    outputs: w_shape[0],
                })
            })
            .collect::<Result<Vec<_>, TrainError>>()?;
        Ok(Self { layers })
    }

    fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// Batched forward and backward pass over `indices` with parameters `flat`.
    fn backprop(
        &self,
        flat: &[f32],
        data: &Dataset,
        indices: &[usize],
        device: &Device,
    ) -> Result<Backprop, TrainError> {
        let batch = indices.len();
        let classes = self.classes();
        let mut x = Vec::with_capacity(batch * data.dim);
        let mut onehot = vec![0f32; batch * classes];
        for (row, &i) in indices.iter().enumerate() {
            x.extend_from_slice(data.row(i));
            onehot[row * classes + data.labels[i] as usize] = 1.0;
        }
        let weights: Vec<(Tensor<2>, Tensor<1>)> = self
            .layers
            .iter()
            .map(|l| {
                (
                    Tensor::from_data(
                        TensorData::new(flat[l.weight.clone()].to_vec(), [l.outputs, l.inputs]),
                        device,
                    ),
                    Tensor::from_data(
                        TensorData::new(flat[l.bias.clone()].to_vec(), [l.outputs]),
                        device,
                    ),
                )
            })
            .collect();

        let last = self.layers.len() - 1;
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut a: Tensor<2> = Tensor::from_data(TensorData::new(x, [batch, data.dim]), device);
        for (l, (w, b)) in weights.iter().enumerate() {
            let z = a.clone().matmul(w.clone().transpose()) + b.clone().unsqueeze::<2>();
            inputs.push(a);
            a = if l < last { relu(z) } else { z };
        }
        let onehot: Tensor<2> =
            Tensor::from_data(TensorData::new(onehot, [batch, classes]), device);
        let log_p = log_softmax(a, 1);
        let loss_sum = -f64::from((log_p.clone() * onehot.clone()).sum().into_scalar::<f32>());

        let mut deltas = Vec::with_capacity(self.layers.len());
        let mut delta = log_p.exp() - onehot;
        for l in (0..last).rev() {
            let active = inputs[l + 1].clone().greater_elem(0.0).float();
            let next = delta.clone().matmul(weights[l + 1].0.clone()) * active;
            deltas.push(delta);
            delta = next;
        }
        deltas.push(delta);
        deltas.reverse();
        Ok(Backprop {
            inputs,
            deltas,
            loss_sum,
        })
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
        let batch = indices.len();
        if batch == 0 {
            return Ok(ClippedSum {
                sum: vec![0.0; flat.len()],
                norms: Vec::new(),
                factors: Vec::new(),
                loss_sum: 0.0,
            });
        }
        let pass = self.backprop(flat, data, indices, device)?;
        let squared = pass
            .inputs
            .iter()
            .zip(&pass.deltas)
            .map(|(a, d)| {
                let a2 = a.clone().powi_scalar(2).sum_dim(1).add_scalar(1.0);
                let d2 = d.clone().powi_scalar(2).sum_dim(1);
                a2 * d2
            })
            .reduce(|x, y| x + y)
            .expect("an MLP has at least one layer");
        let norms: Vec<f32> = read(squared)?.into_iter().map(f32::sqrt).collect();
        let factors = clip_factors(&norms, clip);
        let c: Tensor<2> = Tensor::from_data(TensorData::new(factors.clone(), [batch, 1]), device);

        let mut sum = vec![0f32; flat.len()];
        for ((layer, a), d) in self.layers.iter().zip(pass.inputs).zip(pass.deltas) {
            let dc = d * c.clone();
            let w_grad = dc.clone().transpose().matmul(a);
            sum[layer.weight.clone()].copy_from_slice(&read(w_grad)?);
            sum[layer.bias.clone()].copy_from_slice(&read(dc.sum_dim(0))?);
        }
        Ok(ClippedSum {
            sum,
            norms,
            factors,
            loss_sum: pass.loss_sum,
        })
    }
}

/// SGD (optional momentum, PyTorch semantics without dampening) or Adam on flat values.
enum Optimizer {
    Sgd {
        momentum: f32,
        velocity: Option<Vec<f32>>,
    },
    Adam {
        m: Vec<f32>,
        v: Vec<f32>,
        t: i32,
    },
}

impl Optimizer {
    fn new(kind: LocalOptimizer, len: usize) -> Self {
        match kind {
            LocalOptimizer::Sgd { momentum } => Optimizer::Sgd {
                momentum: momentum as f32,
                velocity: None,
            },
            LocalOptimizer::Adam => Optimizer::Adam {
                m: vec![0.0; len],
                v: vec![0.0; len],
                t: 0,
            },
        }
    }

    fn step(&mut self, lr: f32, params: &mut [f32], grad: &[f32]) {
        match self {
            Optimizer::Sgd { momentum, velocity } if *momentum > 0.0 => {
                let buf = match velocity {
                    Some(buf) => {
                        for (b, g) in buf.iter_mut().zip(grad) {
                            *b = *momentum * *b + g;
                        }
                        buf
                    }
                    None => velocity.insert(grad.to_vec()),
                };
                for (w, b) in params.iter_mut().zip(buf.iter()) {
                    *w -= lr * b;
                }
            }
            Optimizer::Sgd { .. } => {
                for (w, g) in params.iter_mut().zip(grad) {
                    *w -= lr * g;
                }
            }
            Optimizer::Adam { m, v, t } => {
                *t += 1;
                let bc1 = 1.0 - ADAM_BETA1.powi(*t);
                let bc2 = 1.0 - ADAM_BETA2.powi(*t);
                for (((w, g), m), v) in params.iter_mut().zip(grad).zip(m).zip(v) {
                    *m = ADAM_BETA1 * *m + (1.0 - ADAM_BETA1) * g;
                    *v = ADAM_BETA2 * *v + (1.0 - ADAM_BETA2) * g * g;
                    *w -= lr * (*m / bc1) / ((*v / bc2).sqrt() + ADAM_EPSILON);
                }
            }
        }
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

    #[test]
    fn optimizer_matches_pytorch_semantics() {
        let mut w = vec![1.0f32];
        let mut sgd = Optimizer::new(LocalOptimizer::Sgd { momentum: 0.5 }, 1);
        sgd.step(0.1, &mut w, &[1.0]); // buf 1
        sgd.step(0.1, &mut w, &[1.0]); // buf 1.5
        assert!((w[0] - (1.0 - 0.1 - 0.15)).abs() < 1e-6);
        let mut w = vec![0.0f32];
        let mut adam = Optimizer::new(LocalOptimizer::Adam, 1);
        adam.step(0.01, &mut w, &[3.0]); // first step moves by lr (sign of the gradient)
        assert!((w[0] + 0.01).abs() < 1e-6, "{}", w[0]);
    }
}
