//! Dirichlet label-skew partitioning (Hsu, Qi, Brown 2019), with Flower/FedLab-style retries.

use rand::Rng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

use super::{PartitionError, PartitionOptions, sort_each};

/// For each class, draws site proportions from Dirichlet(alpha) and splits the class's shuffled
/// examples accordingly; retries up to `max_attempts` times until every site has
/// `min_per_site` examples.
pub(super) fn split(
    labels: &[u32],
    num_classes: usize,
    num_sites: usize,
    alpha: f64,
    options: &PartitionOptions,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>, PartitionError> {
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(PartitionError::InvalidAlpha { alpha });
    }
    let min = options.min_per_site.max(1);
    let needed = min.saturating_mul(num_sites);
    if labels.len() < needed {
        return Err(PartitionError::TooFewExamples {
            needed,
            available: labels.len(),
            reason: format!(
                "a Dirichlet split over {num_sites} sites with at least {min} examples each"
            ),
        });
    }
    let sampler = SymmetricDirichlet::new(alpha)?;
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let target = labels.len() / num_sites;
    let attempts = options.max_attempts.max(1);
    let mut best_smallest = 0;
    for _ in 0..attempts {
        let mut sites: Vec<Vec<usize>> = vec![Vec::new(); num_sites];
        for class in &by_class {
            let mut idx = class.clone();
            idx.shuffle(rng);
            let mut p = sampler.sample(rng, num_sites);
            if options.self_balancing {
                balance(&mut p, &sites, target);
            }
            let mut start = 0;
            let mut cum = 0.0;
            for (j, site) in sites.iter_mut().enumerate() {
                cum += p[j];
                let end = if j + 1 == num_sites {
                    idx.len()
                } else {
                    ((cum * idx.len() as f64).round() as usize).clamp(start, idx.len())
                };
                site.extend_from_slice(&idx[start..end]);
                start = end;
            }
        }
        let smallest = sites.iter().map(Vec::len).min().unwrap_or(0);
        if smallest >= min {
            sort_each(&mut sites);
            return Ok(sites);
        }
        best_smallest = best_smallest.max(smallest);
    }
    Err(PartitionError::DirichletMinSize {
        alpha,
        num_sites,
        attempts,
        min_per_site: min,
        smallest: best_smallest,
    })
}

/// Zeroes the share of sites already holding `target` examples and renormalizes (FedLab's
/// `balance`); leaves `p` alone if that would zero every share.
fn balance(p: &mut [f64], sites: &[Vec<usize>], target: usize) {
    let kept: f64 = p
        .iter()
        .zip(sites)
        .filter(|(_, s)| s.len() < target)
        .map(|(x, _)| x)
        .sum();
    if kept > 0.0 {
        for (x, s) in p.iter_mut().zip(sites) {
            *x = if s.len() < target { *x / kept } else { 0.0 };
        }
    }
}

/// Symmetric Dirichlet(alpha) over a run-time number of categories, by normalized Gamma draws.
///
/// For alpha < 1 the Gamma draws are taken in log space, `ln G(alpha) = ln G(alpha + 1) +
/// ln(U) / alpha` (Marsaglia and Tsang 2000, section 6), so that tiny alphas do not underflow
/// every component to zero.
struct SymmetricDirichlet {
    alpha: f64,
    gamma: Gamma<f64>,
    boosted: bool,
}

impl SymmetricDirichlet {
    fn new(alpha: f64) -> Result<Self, PartitionError> {
        let boosted = alpha < 1.0;
        let shape = if boosted { alpha + 1.0 } else { alpha };
        let gamma = Gamma::new(shape, 1.0).map_err(|_| PartitionError::InvalidAlpha { alpha })?;
        Ok(Self {
            alpha,
            gamma,
            boosted,
        })
    }

    fn sample(&self, rng: &mut ChaCha8Rng, k: usize) -> Vec<f64> {
        let logs: Vec<f64> = (0..k)
            .map(|_| {
                let g: f64 = self.gamma.sample(rng);
                let mut l = g.ln();
                if self.boosted {
                    // 1 - [0, 1) is in (0, 1], so the log is finite.
                    let u = 1.0 - rng.random::<f64>();
                    l += u.ln() / self.alpha;
                }
                l
            })
            .collect();
        let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if !max.is_finite() {
            // Every draw underflowed: the limit of a vanishing alpha is a one-hot vector.
            let mut p = vec![0.0; k];
            p[rng.random_range(0..k)] = 1.0;
            return p;
        }
        let weights: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = weights.iter().sum();
        weights.iter().map(|w| w / sum).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn samples_sum_to_one_even_for_tiny_alpha() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for alpha in [1e-4, 0.01, 0.5, 1.0, 3.0, 1e4] {
            let d = SymmetricDirichlet::new(alpha).unwrap();
            for _ in 0..50 {
                let p = d.sample(&mut rng, 6);
                assert_eq!(p.len(), 6);
                assert!(
                    p.iter().all(|x| x.is_finite() && *x >= 0.0),
                    "{alpha}: {p:?}"
                );
                assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{alpha}: {p:?}");
            }
        }
    }

    #[test]
    fn sample_mean_matches_symmetric_dirichlet() {
        // E[p_j] = 1/k for a symmetric Dirichlet; Var[p_j] = (k - 1) / (k^2 (k alpha + 1)).
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (k, alpha, draws) = (4usize, 0.5, 20_000);
        let d = SymmetricDirichlet::new(alpha).unwrap();
        let mut sum = 0.0;
        let mut sq = 0.0;
        for _ in 0..draws {
            let p0 = d.sample(&mut rng, k)[0];
            sum += p0;
            sq += p0 * p0;
        }
        let mean = sum / draws as f64;
        let var = sq / draws as f64 - mean * mean;
        let kf = k as f64;
        let want_var = (kf - 1.0) / (kf * kf * (kf * alpha + 1.0));
        assert!((mean - 0.25).abs() < 0.01, "{mean}");
        assert!(
            (var - want_var).abs() < 0.1 * want_var,
            "{var} vs {want_var}"
        );
    }
}
