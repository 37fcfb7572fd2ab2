//! Krum and Multi-Krum (Blanchard et al., NeurIPS 2017).
//!
//! With `n` updates of which at most `f` are faulty, the score of an update is the sum of its
//! squared Euclidean distances to its `n - f - 2` nearest other updates. Krum returns the
//! update with the lowest score; Multi-Krum returns the unweighted mean of the `select`
//! lowest-scored updates (scores computed once, as in the paper). Ties go to the update added
//! first. Needs `n >= 2f + 3` (and `n >= select`).

use rayon::prelude::*;

use crate::params::ParamSet;
use crate::update::ValidUpdate;

use super::{AggregateError, Aggregator, RoundBuffer, ensure};

/// Krum (`select == 1`) or Multi-Krum (`select > 1`) (buffers every update of the round).
#[derive(Debug)]
pub struct Krum {
    faulty: usize,
    select: usize,
    buffer: RoundBuffer,
}

impl Krum {
    /// A Krum aggregator tolerating `faulty` faulty sites and averaging `select >= 1` updates.
    pub fn new(faulty: usize, select: usize) -> Result<Self, AggregateError> {
        ensure(select >= 1, "krum", || {
            "select must be at least 1".to_string()
        })?;
        Ok(Self {
            faulty,
            select,
            buffer: RoundBuffer::default(),
        })
    }

    /// Smallest number of updates a round needs: `max(2f + 3, select)`.
    pub fn min_updates(&self) -> usize {
        self.faulty
            .saturating_mul(2)
            .saturating_add(3)
            .max(self.select)
    }
}

/// Squared Euclidean distance in `f64`, summed over eight lanes so the loop vectorizes.
fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    const LANES: usize = 8;
    let mut lanes = [0.0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    for (xs, ys) in ca.zip(cb) {
        for ((lane, x), y) in lanes.iter_mut().zip(xs).zip(ys) {
            let d = f64::from(*x) - f64::from(*y);
            *lane += d * d;
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// Krum score of every update: sum of squared distances to its `neighbours` nearest others.
fn scores(updates: &[Vec<f32>], neighbours: usize) -> Vec<f64> {
    let n = updates.len();
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .collect();
    let dists: Vec<f64> = pairs
        .par_iter()
        .map(|&(i, j)| squared_distance(&updates[i], &updates[j]))
        .collect();
    let mut rows = vec![Vec::with_capacity(n.saturating_sub(1)); n];
    for (&(i, j), &d) in pairs.iter().zip(&dists) {
        rows[i].push(d);
        rows[j].push(d);
    }
    rows.into_iter()
        .map(|mut row| {
            row.sort_unstable_by(f64::total_cmp);
            row.iter().take(neighbours).sum()
        })
        .collect()
}

/// Indices of the `select` lowest scores, lowest first; equal scores keep insertion order.
fn lowest(scores: &[f64], select: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    order.truncate(select);
    order
}

impl Aggregator for Krum {
    fn name(&self) -> &'static str {
        if self.select == 1 {
            "krum"
        } else {
            "multi_krum"
        }
    }

    fn begin(&mut self, global: &ParamSet) {
        self.buffer.begin(global);
    }

    fn add(&mut self, update: ValidUpdate) -> Result<(), AggregateError> {
        self.buffer.add(update)
    }

    fn finish(&mut self) -> Result<ParamSet, AggregateError> {
        let (mut out, updates) = self.buffer.take()?;
        let n = updates.len();
        let needed = self.min_updates();
        if n < needed {
            return Err(AggregateError::TooFewUpdates {
                rule: self.name(),
                needed,
                got: n,
            });
        }
        let chosen = lowest(&scores(&updates, n - self.faulty - 2), self.select);
        let flat = out.as_flat_mut();
        if let [only] = chosen[..] {
            flat.copy_from_slice(&updates[only]);
            return Ok(out);
        }
        let mut sum = vec![0.0f64; flat.len()];
        for &i in &chosen {
            super::fedavg::accumulate(&mut sum, &updates[i], 1.0);
        }
        let count = chosen.len() as f64;
        for (o, s) in flat.iter_mut().zip(&sum) {
            *o = (s / count) as f32;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::{assert_close, global, update};
    use super::*;

    fn run(faulty: usize, select: usize, rows: &[Vec<f32>]) -> Result<Vec<f32>, AggregateError> {
        let g = global(&vec![0.0; rows[0].len()]);
        let mut agg = Krum::new(faulty, select).unwrap();
        agg.begin(&g);
        for (i, row) in rows.iter().enumerate() {
            agg.add(update(&g, &format!("site-{i}"), 1 + 100 * i as u64, row))?;
        }
        agg.finish().map(ParamSet::into_flat)
    }

    fn points(xs: &[f32]) -> Vec<Vec<f32>> {
        xs.iter().map(|x| vec![*x]).collect()
    }

    #[test]
    fn scores_by_hand() {
        // Points 0, 1, 3, 7, 100 with f = 1: each score sums the 5 - 1 - 2 = 2 nearest.
        // 0: 1 + 9 = 10; 1: 1 + 4 = 5; 3: 4 + 9 = 13; 7: 16 + 36 = 52; 100: 93^2 + 97^2.
        let rows = points(&[0.0, 1.0, 3.0, 7.0, 100.0]);
        assert_eq!(scores(&rows, 2), [10.0, 5.0, 13.0, 52.0, 8649.0 + 9409.0]);
        assert_eq!(run(1, 1, &rows).unwrap(), [1.0]);
        // Multi-Krum with 3: the unweighted mean of 1, 0 and 3.
        assert_close(&run(1, 3, &rows).unwrap(), &[4.0 / 3.0], 1e-7);
    }

    #[test]
    fn distance_over_several_lanes() {
        let a: Vec<f32> = (0..21).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..21).map(|i| (i * 2) as f32).collect();
        let want: f64 = (0..21).map(|i| f64::from(i * i)).sum();
        assert_eq!(squared_distance(&a, &b), want);
    }

    #[test]
    fn ties_go_to_the_first_added() {
        // Points 1, 0, 1, 0, 0 with f = 0 (3 neighbours): each 0 has nearest 0, 0, 1 (score 1),
        // each 1 has nearest 0, 1, 1 (score 2).
        let rows = points(&[1.0, 0.0, 1.0, 0.0, 0.0]);
        let s = scores(&rows, 3);
        assert_eq!(s, [2.0, 1.0, 2.0, 1.0, 1.0]);
        assert_eq!(lowest(&s, 2), [1, 3]);
        assert_eq!(lowest(&[3.0, 1.0, 1.0, 0.5, 1.0], 4), [3, 1, 2, 4]);
        // Two-dimensional case where the tie decides which update comes out whole.
        let rows = vec![
            vec![0.0, 1.0],
            vec![1.0, 0.0],
            vec![0.0, -1.0],
            vec![-1.0, 0.0],
            vec![5.0, 5.0],
        ];
        // The four unit vectors have equal scores; the first one added wins.
        assert_eq!(run(1, 1, &rows).unwrap(), [0.0, 1.0]);
    }

    #[test]
    fn needs_two_f_plus_three_updates() {
        let rows = points(&[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(
            run(1, 1, &rows),
            Err(AggregateError::TooFewUpdates {
                rule: "krum",
                needed: 5,
                got: 4
            })
        );
        assert!(run(0, 1, &points(&[0.0, 1.0, 2.0])).is_ok());
        assert_eq!(
            run(0, 4, &points(&[0.0, 1.0, 2.0])),
            Err(AggregateError::TooFewUpdates {
                rule: "multi_krum",
                needed: 4,
                got: 3
            })
        );
        assert_eq!(Krum::new(usize::MAX, 1).unwrap().min_updates(), usize::MAX);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, rng_seed: prop::test_runner::RngSeed::Fixed(17), ..ProptestConfig::default() })]

        #[test]
        fn never_picks_a_far_outlier(
            honest in prop::collection::vec(prop::collection::vec(-1.0f32..1.0, 4), 4),
            magnitude in prop_oneof![1e2f32..1e4, 1e4f32..1e30, Just(f32::MAX)],
            direction in prop::collection::vec(prop_oneof![Just(-1.0f32), Just(0.0), Just(1.0)], 4)
                .prop_filter("non-zero direction", |d| d.iter().any(|x| *x != 0.0)),
            position in 0usize..5,
        ) {
            let outlier: Vec<f32> = direction.iter().map(|d| d * magnitude).collect();
            let mut rows = honest.clone();
            rows.insert(position, outlier.clone());
            let out = run(1, 1, &rows).unwrap();
            prop_assert!(honest.contains(&out), "picked {:?}, outlier {:?}", out, outlier);
        }
    }
}
