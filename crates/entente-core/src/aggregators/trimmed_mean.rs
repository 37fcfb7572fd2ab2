//! Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the
//! `floor(trim_fraction * n)` smallest and as many largest values, and average the rest
//! (unweighted, in `f64`).

use crate::params::ParamSet;
use crate::update::ValidUpdate;

use super::{AggregateError, Aggregator, RoundBuffer, coordinate_wise, ensure};

/// Coordinate-wise trimmed mean of the updates (buffers every update of the round).
#[derive(Debug)]
pub struct TrimmedMean {
    trim_fraction: f64,
    buffer: RoundBuffer,
}

impl TrimmedMean {
    /// A trimmed-mean aggregator; `trim_fraction` must be in [0, 0.5).
    pub fn new(trim_fraction: f64) -> Result<Self, AggregateError> {
        ensure((0.0..0.5).contains(&trim_fraction), "trimmed_mean", || {
            format!("trim_fraction must be in [0, 0.5), got {trim_fraction}")
        })?;
        Ok(Self {
            trim_fraction,
            buffer: RoundBuffer::default(),
        })
    }

    /// Number of values dropped at each end out of `n`: `floor(trim_fraction * n)`, always
    /// leaving at least one value.
    pub fn trimmed_per_side(&self, n: usize) -> usize {
        let k = (self.trim_fraction * n as f64).floor() as usize;
        k.min(n.saturating_sub(1) / 2)
    }
}

impl Aggregator for TrimmedMean {
    fn name(&self) -> &'static str {
        "trimmed_mean"
    }

    fn begin(&mut self, global: &ParamSet) {
        self.buffer.begin(global);
    }

    fn add(&mut self, update: ValidUpdate) -> Result<(), AggregateError> {
        self.buffer.add(update)
    }

    fn finish(&mut self) -> Result<ParamSet, AggregateError> {
        let (mut out, updates) = self.buffer.take()?;
        let k = self.trimmed_per_side(updates.len());
        coordinate_wise(out.as_flat_mut(), &updates, |column| {
            column.sort_unstable_by(f32::total_cmp);
            let kept = column.get(k..column.len() - k).unwrap_or_default();
            let sum: f64 = kept.iter().map(|v| f64::from(*v)).sum();
            (sum / kept.len().max(1) as f64) as f32
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::{assert_close, global, update};
    use super::*;

    fn run(trim: f64, rows: &[Vec<f32>]) -> Vec<f32> {
        let g = global(&vec![0.0; rows[0].len()]);
        let mut agg = TrimmedMean::new(trim).unwrap();
        agg.begin(&g);
        for (i, row) in rows.iter().enumerate() {
            agg.add(update(&g, &format!("site-{i}"), 1 + 100 * i as u64, row))
                .unwrap();
        }
        agg.finish().unwrap().into_flat()
    }

    #[test]
    fn drops_floor_of_the_fraction_at_each_end() {
        let rows: Vec<Vec<f32>> = [1.0, 100.0, 2.0, -50.0, 3.0]
            .iter()
            .map(|v| vec![*v, 2.0 * v])
            .collect();
        // n = 5, trim 0.2: drop one each end (-50 and 100), mean of 1, 2, 3.
        assert_close(&run(0.2, &rows), &[2.0, 4.0], 1e-7);
        // trim 0.39: floor(1.95) = 1, the same.
        assert_close(&run(0.39, &rows), &[2.0, 4.0], 1e-7);
        // trim 0.4: floor(2.0) = 2 each end, only the median (2) is left.
        assert_close(&run(0.4, &rows), &[2.0, 4.0], 1e-7);
        // trim 0.1: floor(0.5) = 0, the plain unweighted mean 56 / 5.
        assert_close(&run(0.1, &rows), &[11.2, 22.4], 1e-6);
        // trim 0.0 is the plain mean too.
        assert_close(&run(0.0, &rows), &[11.2, 22.4], 1e-6);
    }

    #[test]
    fn trimmed_count_never_empties_the_column() {
        let t = TrimmedMean::new(0.499_999_999_999_999_9).unwrap();
        for n in 1..50 {
            let k = t.trimmed_per_side(n);
            assert!(n - 2 * k >= 1, "n {n} k {k}");
            assert_eq!(k, (n - 1) / 2, "n {n}");
        }
        assert_eq!(TrimmedMean::new(0.25).unwrap().trimmed_per_side(10), 2);
    }

    #[test]
    fn rejects_fractions_outside_zero_to_half() {
        for bad in [-0.01, 0.5, 0.7, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(
                    TrimmedMean::new(bad),
                    Err(AggregateError::InvalidConfig { .. })
                ),
                "{bad}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, rng_seed: prop::test_runner::RngSeed::Fixed(13), ..ProptestConfig::default() })]

        #[test]
        fn one_outlier_stays_inside_the_honest_range(
            honest in prop::collection::vec(prop::collection::vec(-10.0f32..10.0, 3), 4),
            outlier in prop::collection::vec(prop::num::f32::NORMAL, 3),
            position in 0usize..5,
        ) {
            let mut rows = honest.clone();
            rows.insert(position, outlier);
            let out = run(0.2, &rows);
            for (j, v) in out.iter().enumerate() {
                let lo = honest.iter().map(|r| r[j]).fold(f32::INFINITY, f32::min);
                let hi = honest.iter().map(|r| r[j]).fold(f32::NEG_INFINITY, f32::max);
                prop_assert!(lo <= *v && *v <= hi, "coordinate {}: {} not in [{}, {}]", j, v, lo, hi);
            }
        }
    }
}
