//! Metrics that sites and evaluators report.

use serde::Serialize;

/// Loss and accuracy of a model on one data set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Fraction of examples classified correctly.
    pub accuracy: f64,
    /// Accuracy per class; `None` for a class with no example.
    pub per_class_accuracy: Vec<Option<f64>>,
    /// Examples evaluated.
    pub num_examples: usize,
}

impl EvalMetrics {
    /// Example-weighted mean of several sites' metrics (per-class accuracies are left out).
    pub fn weighted_mean(parts: &[EvalMetrics]) -> Option<EvalMetrics> {
        // Saturating: a site's claim cannot wrap the total around.
        let total: usize = parts
            .iter()
            .fold(0usize, |t, m| t.saturating_add(m.num_examples));
        if total == 0 {
            return None;
        }
        let w = |f: fn(&EvalMetrics) -> f64| {
            parts
                .iter()
                .map(|m| f(m) * m.num_examples as f64)
                .sum::<f64>()
                / total as f64
        };
        Some(EvalMetrics {
            loss: w(|m| m.loss),
            accuracy: w(|m| m.accuracy),
            per_class_accuracy: Vec::new(),
            num_examples: total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_mean_weights_by_examples() {
        let m = |acc, n| EvalMetrics {
            loss: 1.0 - acc,
            accuracy: acc,
            per_class_accuracy: vec![],
            num_examples: n,
        };
        let mean = EvalMetrics::weighted_mean(&[m(1.0, 30), m(0.5, 10)]).unwrap();
        assert!((mean.accuracy - 0.875).abs() < 1e-12);
        assert_eq!(mean.num_examples, 40);
        assert!(EvalMetrics::weighted_mean(&[]).is_none());
    }
}
