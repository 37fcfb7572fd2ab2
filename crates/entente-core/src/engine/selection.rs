//! Seeded choice of the sites that take part in a round.

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use crate::seeds::{self, Stream};

/// Number of sites a round samples: `ceil(fraction * n)`, at least `min_sites`, at most `n`.
pub fn sample_size(num_sites: usize, fraction: f64, min_sites: usize) -> usize {
    let k = (fraction * num_sites as f64).ceil() as usize;
    k.max(min_sites).min(num_sites)
}

/// Indices of the sites selected for `round`, ascending.
pub fn select(
    num_sites: usize,
    fraction: f64,
    min_sites: usize,
    seed: u64,
    round: u32,
) -> Vec<usize> {
    let k = sample_size(num_sites, fraction, min_sites);
    let mut rng = ChaCha8Rng::seed_from_u64(seeds::derive(seed, round, Stream::Selection));
    let mut chosen = sample(&mut rng, num_sites, k).into_vec();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_participation_selects_everyone() {
        assert_eq!(select(5, 1.0, 1, 3, 1), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn fraction_respects_minimum_and_is_seeded() {
        assert_eq!(sample_size(10, 0.3, 2), 3);
        assert_eq!(sample_size(10, 0.05, 2), 2);
        let a = select(10, 0.3, 2, 42, 7);
        assert_eq!(a, select(10, 0.3, 2, 42, 7));
        assert_eq!(a.len(), 3);
        let rounds: Vec<_> = (1..20).map(|r| select(10, 0.3, 2, 42, r)).collect();
        assert!(
            rounds.iter().any(|s| *s != a),
            "selection never changes across rounds"
        );
    }
}
