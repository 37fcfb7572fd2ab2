//! FedAvg (McMahan et al. 2017): the average of the updates weighted by their example counts.
//!
//! Streaming: the rule keeps one `f64` running sum of `num_examples * params` and the total
//! weight (no copy of the global model), so memory is O(model) whatever the number of sites. The `f64` accumulator keeps the
//! result exact to `f32` rounding for any realistic number of updates; the hot loop
//! ([`accumulate`]) is a plain zip over slices that the compiler vectorizes.

use std::sync::Arc;

use crate::params::{Layout, ParamSet};
use crate::update::ValidUpdate;

use super::{AggregateError, Aggregator};

/// Weighted average by example count, computed as a running sum.
#[derive(Debug, Default)]
pub struct FedAvg {
    round: Option<Round>,
}

/// State of the round in progress.
#[derive(Debug)]
struct Round {
    /// Layout of the global model: every update must have it, and so does the output.
    layout: Arc<Layout>,
    /// Sum of `weight * params` over the updates added so far.
    sum: Vec<f64>,
    /// Sum of the weights.
    weight: f64,
}

impl FedAvg {
    /// A FedAvg aggregator with no round in progress.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the round and returns the weighted mean in `f64`, in the global model's layout
    /// (used by FedAvgM and FedOpt).
    pub(crate) fn finish_average(&mut self) -> Result<Vec<f64>, AggregateError> {
        let Round {
            mut sum, weight, ..
        } = self.round.take().ok_or(AggregateError::NotStarted)?;
        if weight <= 0.0 {
            return Err(AggregateError::NoUpdates);
        }
        for s in &mut sum {
            *s /= weight;
        }
        Ok(sum)
    }
}

/// Adds `weight * x` to `acc` element by element; the FedAvg hot loop.
///
/// Written as a zip over two slices so there is no bounds check and the loop vectorizes.
#[inline]
pub(crate) fn accumulate(acc: &mut [f64], x: &[f32], weight: f64) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += weight * f64::from(v);
    }
}

impl Aggregator for FedAvg {
    fn name(&self) -> &'static str {
        "fedavg"
    }

    fn begin(&mut self, global: &ParamSet) {
        self.round = Some(Round {
            layout: Arc::clone(global.layout()),
            sum: vec![0.0; global.num_values()],
            weight: 0.0,
        });
    }

    /// Adds the update with weight `num_examples`; an update claiming zero examples carries
    /// no weight and is ignored ([`crate::update::validate`] already rejects those).
    fn add(&mut self, update: ValidUpdate) -> Result<(), AggregateError> {
        let round = self.round.as_mut().ok_or(AggregateError::NotStarted)?;
        if !update.params.has_layout(&round.layout) {
            return Err(AggregateError::LayoutMismatch(update.site));
        }
        if update.num_examples == 0 {
            return Ok(());
        }
        let weight = update.num_examples as f64;
        accumulate(&mut round.sum, update.params.as_flat(), weight);
        round.weight += weight;
        Ok(())
    }

    fn finish(&mut self) -> Result<ParamSet, AggregateError> {
        let layout = Arc::clone(
            &self
                .round
                .as_ref()
                .ok_or(AggregateError::NotStarted)?
                .layout,
        );
        let mean = self.finish_average()?;
        let values = mean.iter().map(|&m| m as f32).collect();
        ParamSet::from_flat(layout, values).map_err(|e| AggregateError::InvalidConfig {
            rule: "fedavg",
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::{assert_close, global, update};
    use super::*;

    fn run(g: &ParamSet, updates: &[(u64, Vec<f32>)]) -> ParamSet {
        let mut agg = FedAvg::new();
        agg.begin(g);
        for (i, (n, values)) in updates.iter().enumerate() {
            agg.add(update(g, &format!("site-{i}"), *n, values))
                .unwrap();
        }
        agg.finish().unwrap()
    }

    #[test]
    fn weighted_by_example_count() {
        let g = global(&[0.0, 0.0]);
        let out = run(&g, &[(1, vec![1.0, 2.0]), (3, vec![3.0, 4.0])]);
        assert_eq!(out.as_flat(), &[2.5, 3.5]);
        assert_eq!(out.layout(), g.layout());
    }

    #[test]
    fn ignores_zero_weight_updates() {
        let g = global(&[0.0]);
        let out = run(&g, &[(2, vec![1.0]), (0, vec![100.0])]);
        assert_eq!(out.as_flat(), &[1.0]);
        let mut agg = FedAvg::new();
        agg.begin(&g);
        agg.add(update(&g, "a", 0, &[5.0])).unwrap();
        assert_eq!(agg.finish(), Err(AggregateError::NoUpdates));
    }

    #[test]
    fn rounds_are_independent() {
        let g = global(&[0.0]);
        let mut agg = FedAvg::new();
        agg.begin(&g);
        agg.add(update(&g, "a", 1, &[10.0])).unwrap();
        assert_eq!(agg.finish().unwrap().as_flat(), &[10.0]);
        agg.begin(&g);
        agg.add(update(&g, "a", 1, &[2.0])).unwrap();
        assert_eq!(agg.finish().unwrap().as_flat(), &[2.0]);
    }

    #[test]
    fn accumulate_handles_lengths_that_are_not_a_multiple_of_the_vector_width() {
        for len in [0, 1, 3, 7, 8, 9, 31, 33, 1000] {
            let x: Vec<f32> = (0..len).map(|i| i as f32 - 5.0).collect();
            let mut acc = vec![1.0; len];
            accumulate(&mut acc, &x, 2.0);
            let want: Vec<f64> = x.iter().map(|v| 1.0 + 2.0 * f64::from(*v)).collect();
            assert_eq!(acc, want, "len {len}");
        }
    }

    fn values(len: usize) -> impl Strategy<Value = Vec<f32>> {
        prop::collection::vec(-1e3f32..1e3, len)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, rng_seed: prop::test_runner::RngSeed::Fixed(7), ..ProptestConfig::default() })]

        #[test]
        fn identical_updates_average_to_themselves(
            x in values(9),
            weights in prop::collection::vec(1u64..1_000_000, 1..8),
        ) {
            let g = global(&[0.0; 9]);
            let updates: Vec<_> = weights.iter().map(|w| (*w, x.clone())).collect();
            let out = run(&g, &updates);
            let want: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
            assert_close(out.as_flat(), &want, 1e-6);
        }

        #[test]
        fn scaling_every_weight_changes_nothing(
            rows in prop::collection::vec((1u64..10_000, values(5)), 1..8),
            scale in 1u64..10_000,
        ) {
            let g = global(&[0.0; 5]);
            let scaled: Vec<_> = rows.iter().map(|(w, x)| (w * scale, x.clone())).collect();
            let a = run(&g, &rows);
            let b = run(&g, &scaled);
            let want: Vec<f64> = a.as_flat().iter().map(|v| f64::from(*v)).collect();
            assert_close(b.as_flat(), &want, 1e-6);
            // And both equal the weighted mean computed directly.
            let total: f64 = rows.iter().map(|(w, _)| *w as f64).sum();
            let direct: Vec<f64> = (0..5)
                .map(|j| rows.iter().map(|(w, x)| *w as f64 * f64::from(x[j])).sum::<f64>() / total)
                .collect();
            assert_close(a.as_flat(), &direct, 1e-6);
        }
    }
}
