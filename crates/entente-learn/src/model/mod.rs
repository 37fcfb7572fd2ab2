//! Models: the 2NN MLP and the small CNN of McMahan et al. (2017), on burn.
//!
//! [`ModelSpec`] describes a model without burn types (it is what the manifest names);
//! [`Net`] is the burn module built from it. Initial parameters come from
//! [`ModelSpec::init_params`], seeded and framework-independent, so every site and every run
//! starts from the same model for a given seed.

mod cnn;
mod mlp;

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use entente_core::manifest::ModelChoice;
use entente_core::params::{Layout, ParamError, ParamSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use cnn::Cnn;
pub use mlp::Mlp;

/// Architecture and input/output sizes of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// Fully connected network with ReLU between layers.
    Mlp {
        /// Input features.
        input: usize,
        /// Width of each hidden layer, in order.
        hidden: Vec<usize>,
        /// Number of classes.
        classes: usize,
    },
    /// McMahan et al.'s CNN: 5x5 conv 32, 2x2 max pool, 5x5 conv 64, 2x2 max pool, dense 512.
    Cnn {
        /// Input channels.
        channels: usize,
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
        /// Number of classes.
        classes: usize,
    },
}

impl ModelSpec {
    /// Names and shapes of every parameter tensor, in PyTorch order and layout
    /// (linear weights are `[out, in]`, convolution weights `[out, in, kh, kw]`).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>, usize)> {
        match self {
            ModelSpec::Mlp {
                input,
                hidden,
                classes,
            } => mlp::tensor_shapes(*input, hidden, *classes),
            ModelSpec::Cnn {
                channels,
                height,
                width,
                classes,
            } => cnn::tensor_shapes(*channels, *height, *width, *classes),
        }
    }

    /// Seeded initial parameters with PyTorch's default scheme: every weight and bias uniform
    /// in `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`.
    pub fn init_params(&self, seed: u64) -> Result<ParamSet, ParamError> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let tensors = self
            .tensor_shapes()
            .into_iter()
            .map(|(name, shape, fan_in)| {
                let bound = 1.0 / (fan_in as f32).sqrt();
                let n: usize = shape.iter().product();
                let values = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
                (name, shape, values)
            });
        ParamSet::from_tensors(tensors)
    }

    /// The built-in model `choice` for examples of `shape` and `classes` classes (an MLP takes
    /// the flattened example; the CNN needs `[channels, height, width]` of at least 4x4).
    /// `None` for `kind = "external"`, whose shapes come from its file.
    pub fn for_examples(
        choice: &ModelChoice,
        shape: &[usize],
        classes: usize,
    ) -> Result<Option<ModelSpec>, String> {
        match choice {
            ModelChoice::Mlp { hidden } => Ok(Some(ModelSpec::Mlp {
                input: shape.iter().product(),
                hidden: hidden.clone(),
                classes,
            })),
            ModelChoice::Cnn => match shape {
                [c, h, w] if *h >= 4 && *w >= 4 => Ok(Some(ModelSpec::Cnn {
                    channels: *c,
                    height: *h,
                    width: *w,
                    classes,
                })),
                other => Err(format!(
                    "model.kind = \"cnn\" needs images (channels x height x width, at least \
                     4x4), but examples have shape {other:?}; use kind = \"mlp\" for tables"
                )),
            },
            ModelChoice::External { .. } => Ok(None),
        }
    }

    /// The built-in MLP whose tensors are exactly those of `layout` (`layers.{k}.weight`
    /// `[out, in]` and `layers.{k}.bias` `[out]`, in any order), so that entente's own trainer
    /// can train an external model of that form; `None` for anything else.
    pub fn mlp_from_layout(layout: &Layout) -> Option<ModelSpec> {
        let shape = |name: String| {
            layout
                .position(&name)
                .map(|i| layout.specs()[i].shape.clone())
        };
        let first = shape("layers.0.weight".into())?;
        let [_, input] = first.as_slice() else {
            return None;
        };
        let mut outs = Vec::new();
        while let Some(w) = shape(format!("layers.{}.weight", outs.len())) {
            outs.push(*w.first()?);
        }
        if *input == 0 || outs.contains(&0) {
            return None;
        }
        let classes = outs.pop()?;
        let spec = ModelSpec::Mlp {
            input: *input,
            hidden: outs,
            classes,
        };
        let expected = spec.tensor_shapes();
        let matches = expected.len() == layout.specs().len()
            && expected.iter().all(|(name, shape, _)| {
                layout
                    .position(name)
                    .is_some_and(|i| layout.specs()[i].shape == *shape)
            });
        matches.then_some(spec)
    }

    /// Number of input features a flat example must have.
    pub fn input_dim(&self) -> usize {
        match self {
            ModelSpec::Mlp { input, .. } => *input,
            ModelSpec::Cnn {
                channels,
                height,
                width,
                ..
            } => channels * height * width,
        }
    }
}

/// A burn module for any [`ModelSpec`].
// One `Net` exists per training task, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Net {
    /// See [`Mlp`].
    Mlp(Mlp),
    /// See [`Cnn`].
    Cnn(Cnn),
}

impl Net {
    /// Builds the module on `device` (its initial values are replaced by the caller).
    pub fn new(spec: &ModelSpec, device: &Device) -> Self {
        match spec {
            ModelSpec::Mlp {
                input,
                hidden,
                classes,
            } => Net::Mlp(Mlp::new(*input, hidden, *classes, device)),
            ModelSpec::Cnn {
                channels,
                height,
                width,
                classes,
            } => Net::Cnn(Cnn::new(*channels, *height, *width, *classes, device)),
        }
    }

    /// Logits `[batch, classes]` for flat inputs `[batch, features]`.
    pub fn forward(&self, input: Tensor<2>) -> Tensor<2> {
        match self {
            Net::Mlp(m) => m.forward(input),
            Net::Cnn(c) => c.forward(input),
        }
    }
}
