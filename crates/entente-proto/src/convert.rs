//! Conversions between wire messages and the engine's types. Everything that comes off the wire
//! is checked here: a layout must be well formed and of sane size, training settings must be
//! ones the engine knows.

use entente_core::engine::{DpSgd, LocalOptimizer, LocalTraining};
use entente_core::metrics::EvalMetrics;
use entente_core::params::{Layout, TensorSpec};

use crate::WireError;
use crate::v1;

/// Most values a layout from the wire may hold (2^36, 256 GiB of `f32`): beyond any model a
/// federation trains, small enough that sizes cannot overflow.
pub const MAX_VALUES: u64 = 1 << 36;

/// A layout as wire tensor descriptions.
pub fn layout_to_wire(layout: &Layout) -> Vec<v1::TensorInfo> {
    layout
        .specs()
        .iter()
        .map(|s| v1::TensorInfo {
            name: s.name.clone(),
            shape: s.shape.iter().map(|&d| d as u64).collect(),
        })
        .collect()
}

/// A layout from wire tensor descriptions: names unique and non-empty, total size at most
/// [`MAX_VALUES`].
pub fn layout_from_wire(tensors: &[v1::TensorInfo]) -> Result<Layout, WireError> {
    let mut total: u64 = 0;
    let mut specs = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.name.is_empty() {
            return Err(WireError::Malformed("a tensor has an empty name".into()));
        }
        let numel = t
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= MAX_VALUES)
            .ok_or_else(|| {
                WireError::Malformed(format!(
                    "tensor `{}` has an absurd shape {:?}",
                    t.name, t.shape
                ))
            })?;
        total = total.saturating_add(numel);
        if total > MAX_VALUES {
            return Err(WireError::Malformed(format!(
                "the layout holds more than {MAX_VALUES} values"
            )));
        }
        specs.push(TensorSpec {
            name: t.name.clone(),
            shape: t.shape.iter().map(|&d| d as usize).collect(),
        });
    }
    Layout::new(specs).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Local training settings on the wire.
pub fn training_to_wire(t: &LocalTraining) -> v1::Training {
    let (optimizer, momentum) = match t.optimizer {
        LocalOptimizer::Sgd { momentum } => ("sgd", momentum),
        LocalOptimizer::Adam => ("adam", 0.0),
    };
    v1::Training {
        epochs: t.epochs as u32,
        batch_size: t.batch_size as u32,
        learning_rate: t.learning_rate,
        optimizer: optimizer.to_string(),
        momentum,
        fedprox_mu: t.fedprox_mu,
        dp_sgd: t.dp_sgd.map(|d| v1::DpSgd {
            clip: d.clip,
            noise_multiplier: d.noise_multiplier,
        }),
    }
}

/// Local training settings from the wire.
pub fn training_from_wire(t: &v1::Training) -> Result<LocalTraining, WireError> {
    let optimizer = match t.optimizer.as_str() {
        "sgd" => LocalOptimizer::Sgd {
            momentum: t.momentum,
        },
        "adam" => LocalOptimizer::Adam,
        other => {
            return Err(WireError::Malformed(format!(
                "unknown optimizer `{other}` (expected sgd or adam)"
            )));
        }
    };
    Ok(LocalTraining {
        epochs: t.epochs as usize,
        batch_size: t.batch_size as usize,
        learning_rate: t.learning_rate,
        optimizer,
        fedprox_mu: t.fedprox_mu,
        dp_sgd: t.dp_sgd.as_ref().map(|d| DpSgd {
            clip: d.clip,
            noise_multiplier: d.noise_multiplier,
        }),
    })
}

/// Evaluation metrics on the wire (per-class accuracies stay at the site).
pub fn metrics_to_wire(m: &EvalMetrics) -> v1::EvalResult {
    v1::EvalResult {
        loss: m.loss,
        accuracy: m.accuracy,
        num_examples: m.num_examples as u64,
    }
}

/// Evaluation metrics from the wire: finite loss, accuracy in [0, 1].
pub fn metrics_from_wire(m: &v1::EvalResult) -> Result<EvalMetrics, WireError> {
    if !m.loss.is_finite() || !(0.0..=1.0).contains(&m.accuracy) {
        return Err(WireError::Malformed(format!(
            "evaluation with loss {} and accuracy {} is not possible",
            m.loss, m.accuracy
        )));
    }
    Ok(EvalMetrics {
        loss: m.loss,
        accuracy: m.accuracy,
        per_class_accuracy: Vec::new(),
        num_examples: usize::try_from(m.num_examples)
            .map_err(|_| WireError::Malformed("absurd example count".into()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_and_training_round_trip() {
        let layout = Layout::new(vec![
            TensorSpec {
                name: "a.weight".into(),
                shape: vec![3, 4],
            },
            TensorSpec {
                name: "a.bias".into(),
                shape: vec![4],
            },
        ])
        .unwrap();
        assert_eq!(layout_from_wire(&layout_to_wire(&layout)).unwrap(), layout);
        let training = LocalTraining {
            epochs: 2,
            batch_size: 32,
            learning_rate: 0.05,
            optimizer: LocalOptimizer::Sgd { momentum: 0.9 },
            fedprox_mu: 0.01,
            dp_sgd: Some(DpSgd {
                clip: 1.0,
                noise_multiplier: 1.1,
            }),
        };
        assert_eq!(
            training_from_wire(&training_to_wire(&training)).unwrap(),
            training
        );
    }

    #[test]
    fn hostile_layouts_are_refused() {
        let huge = v1::TensorInfo {
            name: "w".into(),
            shape: vec![u64::MAX, 2],
        };
        assert!(layout_from_wire(&[huge]).is_err());
        let twice = v1::TensorInfo {
            name: "w".into(),
            shape: vec![2],
        };
        assert!(layout_from_wire(&[twice.clone(), twice]).is_err());
        let unnamed = v1::TensorInfo {
            name: String::new(),
            shape: vec![1],
        };
        assert!(layout_from_wire(&[unnamed]).is_err());
        let many = v1::TensorInfo {
            name: "big".into(),
            shape: vec![1 << 20, 1 << 17],
        };
        assert!(layout_from_wire(&[many]).is_err());
    }
}
