//! Coordinate-wise median (Yin et al. 2018): each value of the next model is the median of
//! that coordinate over the updates, unweighted. For an even count it is the mean of the two
//! middle values. One arbitrarily bad update cannot move a coordinate outside the range of
//! the others.

use crate::params::ParamSet;
use crate::update::ValidUpdate;

use super::{AggregateError, Aggregator, RoundBuffer, coordinate_wise};

/// Coordinate-wise median of the updates (buffers every update of the round).
#[derive(Debug, Default)]
pub struct Median {
    buffer: RoundBuffer,
}

impl Median {
    /// A median aggregator with no round in progress.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Median of `values` (reorders them); mean of the two middle values for an even count.
pub(crate) fn median(values: &mut [f32]) -> f32 {
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    let (lower, upper, _) = values.select_nth_unstable_by(n / 2, f32::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return upper;
    }
    let lower = lower.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    ((f64::from(lower) + f64::from(upper)) / 2.0) as f32
}

impl Aggregator for Median {
    fn name(&self) -> &'static str {
        "median"
    }

    fn begin(&mut self, global: &ParamSet) {
        self.buffer.begin(global);
    }

    fn add(&mut self, update: ValidUpdate) -> Result<(), AggregateError> {
        self.buffer.add(update)
    }

    fn finish(&mut self) -> Result<ParamSet, AggregateError> {
        let (mut out, updates) = self.buffer.take()?;
        coordinate_wise(out.as_flat_mut(), &updates, median);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::{global, update};
    use super::*;

    fn run(rows: &[Vec<f32>]) -> Vec<f32> {
        let g = global(&vec![0.0; rows[0].len()]);
        let mut agg = Median::new();
        agg.begin(&g);
        for (i, row) in rows.iter().enumerate() {
            // Weights differ on purpose: the median ignores them.
            agg.add(update(&g, &format!("site-{i}"), 1 + 100 * i as u64, row))
                .unwrap();
        }
        agg.finish().unwrap().into_flat()
    }

    #[test]
    fn odd_and_even_counts() {
        assert_eq!(
            run(&[vec![3.0, -1.0], vec![1.0, 5.0], vec![2.0, 0.0]]),
            [2.0, 0.0]
        );
        assert_eq!(
            run(&[
                vec![4.0, 1.0],
                vec![1.0, 1.0],
                vec![3.0, 2.0],
                vec![2.0, 7.0]
            ]),
            [2.5, 1.5]
        );
        assert_eq!(run(&[vec![9.0]]), [9.0]);
        assert_eq!(run(&[vec![9.0], vec![-1.0]]), [4.0]);
    }

    #[test]
    fn median_of_extremes_does_not_overflow() {
        assert_eq!(median(&mut [f32::MAX, f32::MAX]), f32::MAX);
        assert_eq!(median(&mut [f32::MAX, -f32::MAX]), 0.0);
    }

    #[test]
    fn many_coordinates_span_several_blocks() {
        let len = 10_000;
        let rows: Vec<Vec<f32>> = (0..4)
            .map(|r| (0..len).map(|j| (j as f32) * (r as f32 - 1.0)).collect())
            .collect();
        // Per coordinate the values are -j, 0, j, 2j: median (0 + j) / 2.
        let out = run(&rows);
        for (j, v) in out.iter().enumerate() {
            assert_eq!(*v, j as f32 / 2.0, "coordinate {j}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, rng_seed: prop::test_runner::RngSeed::Fixed(11), ..ProptestConfig::default() })]

        #[test]
        fn one_outlier_stays_inside_the_honest_range(
            honest in prop::collection::vec(prop::collection::vec(-10.0f32..10.0, 3), 4),
            outlier in prop::collection::vec(prop::num::f32::NORMAL, 3),
            position in 0usize..5,
        ) {
            let mut rows = honest.clone();
            rows.insert(position, outlier);
            let out = run(&rows);
            for (j, v) in out.iter().enumerate() {
                let lo = honest.iter().map(|r| r[j]).fold(f32::INFINITY, f32::min);
                let hi = honest.iter().map(|r| r[j]).fold(f32::NEG_INFINITY, f32::max);
                prop_assert!(lo <= *v && *v <= hi, "coordinate {}: {} not in [{}, {}]", j, v, lo, hi);
            }
        }
    }
}
