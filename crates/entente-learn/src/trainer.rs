//! The local trainer: minibatch SGD (optional momentum) or Adam on cross-entropy, with
//! FedProx's proximal term, and evaluation with per-class accuracy.
//!
//! Training is deterministic for a given seed: batches come from a seeded shuffle and the
//! model starts from the parameters it is given.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use entente_core::engine::{LocalOptimizer, LocalTraining};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::Dataset;
use crate::model::{ModelSpec, Net};
use crate::param_store::{self, StoreError};

/// Errors of training and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The data set is empty.
    #[error("no examples to train or evaluate on")]
    NoData,
    /// Examples do not have the number of features the model expects.
    #[error("examples have {got} features but the model expects {expected}")]
    InputSize {
        /// Features per example in the data.
        got: usize,
        /// Features the model takes.
        expected: usize,
    },
    /// Moving parameters in or out of the model failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The loss could not be read back.
    #[error("could not read the loss value")]
    ReadLoss,
    /// Training produced a non-finite loss (learning rate too high?).
    #[error("training diverged: loss became {0} (try a lower learning rate)")]
    Diverged(f64),
    /// The model or settings ask for something the trainer does not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// DP-SGD settings out of range (clip norm, noise multiplier).
    #[error("invalid DP-SGD settings: {0}")]
    InvalidDpSgd(String),
}

/// The result of local training.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Parameters after training (PyTorch layout, same names as the input).
    pub params: ParamSet,
    /// Mean minibatch loss over all steps.
    pub mean_loss: f64,
    /// Examples in the local data set.
    pub num_examples: usize,
    /// Optimizer steps taken. With DP-SGD the privacy cost of the call is that of `steps`
    /// compositions of the sampled Gaussian mechanism (rate `q`, noise multiplier `sigma`).
    pub steps: usize,
}

pub(crate) fn check_input(spec: &ModelSpec, data: &Dataset) -> Result<(), TrainError> {
    if data.is_empty() {
        return Err(TrainError::NoData);
    }
    if data.dim != spec.input_dim() {
        return Err(TrainError::InputSize {
            got: data.dim,
            expected: spec.input_dim(),
        });
    }
    Ok(())
}

/// Features and labels of `indices` as tensors on `device`.
fn batch(data: &Dataset, indices: &[usize], device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let mut x = Vec::with_capacity(indices.len() * data.dim);
    let mut y = Vec::with_capacity(indices.len());
    for &i in indices {
        data.extend_row(i, &mut x);
        y.push(i64::from(data.labels[i]));
    }
    let n = indices.len();
    (
        Tensor::from_data(TensorData::new(x, [n, data.dim]), device),
        Tensor::from_data(TensorData::new(y, [n]), device),
    )
}

fn optimizer(cfg: &LocalTraining) -> ModuleOptimizer {
    match cfg.optimizer {
        LocalOptimizer::Sgd { momentum } if momentum > 0.0 => SgdConfig::new()
            .with_momentum(Some(MomentumConfig {
                momentum,
                dampening: 0.0,
                nesterov: false,
            }))
            .init(),
        LocalOptimizer::Sgd { .. } => SgdConfig::new().init(),
        LocalOptimizer::Adam => AdamConfig::new().with_epsilon(1e-8).init(),
    }
}

/// Collects every float parameter of a module, flattened.
struct Flatten(Vec<Tensor<1>>);

impl ModuleVisitor for Flatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.0.push(t.reshape([n]));
    }
}

fn flat_params<M: Module>(module: &M) -> Vec<Tensor<1>> {
    let mut f = Flatten(Vec::new());
    module.visit(&mut f);
    f.0
}

/// A module's parameters, flattened and cut off from the gradient tape.
fn detached<M: Module>(module: &M) -> Vec<Tensor<1>> {
    flat_params(module)
        .into_iter()
        .map(|t| t.detach())
        .collect()
}

/// Trains a model of `spec`, starting from `global`, on `data`. `seed` fixes the batch order.
///
/// With `cfg.dp_sgd` set, trains with DP-SGD instead (see [`crate::dp_sgd::train`]; `seed`
/// then fixes the Poisson samples and the noise).
pub fn train(
    spec: &ModelSpec,
    global: &ParamSet,
    data: &Dataset,
    cfg: &LocalTraining,
    seed: u64,
) -> Result<TrainOutcome, TrainError> {
    if let Some(dp) = &cfg.dp_sgd {
        return crate::dp_sgd::train(spec, global, data, cfg, dp, seed);
    }
    let objective = Objective {
        proximal: (cfg.fedprox_mu > 0.0).then_some((global, cfg.fedprox_mu)),
        correction: None,
        frozen: &[],
    };
    train_with(spec, global, objective, data, cfg, seed)
}

/// What local training adds to the cross-entropy loss.
#[derive(Debug, Clone, Copy, Default)]
pub struct Objective<'a> {
    /// `(anchor, mu)`: `mu / 2 * ||w - anchor||^2`, FedProx's proximal term when the anchor is
    /// where training starts, Ditto's pull toward the global model when it is not.
    pub proximal: Option<(&'a ParamSet, f64)>,
    /// `d`, in the model's layout: `<w, d>` is added, so every gradient step moves along
    /// `g + d` (SCAFFOLD's drift correction `c - c_i`).
    pub correction: Option<&'a ParamSet>,
    /// Tensors, by name, that training leaves as they start (FedRep trains its personal
    /// tensors with the shared ones frozen, then the other way round).
    pub frozen: &'a [String],
}

/// Trains from `start` on `data` on the cross-entropy loss plus `objective`'s terms. Never
/// DP-SGD, and `cfg.fedprox_mu` is not read: `objective` says what is added.
pub fn train_with(
    spec: &ModelSpec,
    start: &ParamSet,
    objective: Objective<'_>,
    data: &Dataset,
    cfg: &LocalTraining,
    seed: u64,
) -> Result<TrainOutcome, TrainError> {
    check_input(spec, data)?;
    let device = Device::flex().autodiff();
    let mut model = param_store::import(Net::new(spec, &device), start)?;
    let mut optim = optimizer(cfg);
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let (anchor, mu) = match objective.proximal {
        Some((anchor, mu)) if mu > 0.0 => (Some(anchor), mu),
        _ => (None, 0.0),
    };
    let anchor: Vec<Tensor<1>> = match anchor {
        // FedProx: the anchor is where training starts, already in the model.
        Some(anchor) if std::ptr::eq(start, anchor) => detached(&model),
        Some(anchor) => detached(&param_store::import(Net::new(spec, &device), anchor)?),
        None => Vec::new(),
    };
    let correction: Vec<Tensor<1>> = match objective.correction {
        Some(d) => detached(&param_store::import(Net::new(spec, &device), d)?),
        None => Vec::new(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let batch_size = cfg.batch_size.max(1);
    let (mut loss_sum, mut steps) = (0.0, 0usize);
    for _ in 0..cfg.epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(batch_size) {
            let (x, y) = batch(data, chunk, &device);
            let mut loss = loss_fn.forward(model.forward(x), y);
            let value = f64::from(loss.clone().into_scalar::<f32>());
            if !value.is_finite() {
                return Err(TrainError::Diverged(value));
            }
            if mu > 0.0 {
                let proximal = flat_params(&model)
                    .into_iter()
                    .zip(&anchor)
                    .map(|(w, w0)| (w - w0.clone()).powi_scalar(2).sum())
                    .reduce(|a, b| a + b);
                if let Some(p) = proximal {
                    loss = loss + p.mul_scalar(mu / 2.0);
                }
            }
            let linear = flat_params(&model)
                .into_iter()
                .zip(&correction)
                .map(|(w, d)| (w * d.clone()).sum())
                .reduce(|a, b| a + b);
            if let Some(l) = linear {
                loss = loss + l;
            }
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            param_store::drop_grads(&model, &mut grads, objective.frozen);
            model = optim.step(cfg.learning_rate, model, grads);
            loss_sum += value;
            steps += 1;
        }
    }
    Ok(TrainOutcome {
        params: param_store::export(&model.valid())?,
        mean_loss: if steps > 0 {
            loss_sum / steps as f64
        } else {
            0.0
        },
        num_examples: data.len(),
        steps,
    })
}

/// The batch size every evaluation uses: large, since evaluation keeps no gradients.
pub const EVAL_BATCH: usize = 1000;

/// Evaluates `params` on `data` in batches of `batch_size`.
pub fn evaluate(
    spec: &ModelSpec,
    params: &ParamSet,
    data: &Dataset,
    batch_size: usize,
) -> Result<EvalMetrics, TrainError> {
    check_input(spec, data)?;
    let device = Device::flex();
    let model = param_store::import(Net::new(spec, &device), params)?;
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let classes = data.num_classes.max(1);
    let (mut correct, mut seen) = (vec![0usize; classes], vec![0usize; classes]);
    let mut loss_sum = 0.0;
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let (x, y) = batch(data, chunk, &device);
        let logits = model.forward(x);
        let loss = loss_fn.forward(logits.clone(), y);
        let loss = f64::from(loss.into_scalar::<f32>());
        loss_sum += loss * chunk.len() as f64;
        let predicted = logits
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .map_err(|_| TrainError::ReadLoss)?;
        for (&i, p) in chunk.iter().zip(predicted) {
            let label = data.labels[i] as usize;
            if label < classes {
                seen[label] += 1;
                if p == label as i64 {
                    correct[label] += 1;
                }
            }
        }
    }
    let total_correct: usize = correct.iter().sum();
    Ok(EvalMetrics {
        loss: loss_sum / data.len() as f64,
        accuracy: total_correct as f64 / data.len() as f64,
        per_class_accuracy: correct
            .iter()
            .zip(&seen)
            .map(|(&c, &s)| (s > 0).then(|| c as f64 / s as f64))
            .collect(),
        num_examples: data.len(),
    })
}
