//! Distributed client-level DP through the round engine and SecAgg: each site clips its update
//! and adds its share of the noise before masking it (McMahan et al., ICLR 2018).
//!
//! - Without noise the secure, distributed path gives central DP-FedAvg's result (equal
//!   weights, L2-clipped updates) within SecAgg's quantization bound.
//! - With noise the unmasked sum carries Gaussian noise of variance `(sigma S)^2 k / n` for `k`
//!   surviving sites and `n = min_sites`, measured over several seeds.
//! - The fixed-point range must hold the noisy coordinates, and simulated noise repeats with the
//!   seed while a real site's does not.

mod common;

use std::sync::Arc;

use common::{PatternSite, initial, rules, secure_sites};
use entente_core::aggregators::{Strategy, build};
use entente_core::engine::{ErrorKind, NoObserver, RoundEngine, RoundRecord, Site, TrainTask};
use entente_core::update::UpdatePolicy;
use entente_privacy::dp::client::DpFedAvg;
use entente_privacy::dp::{DistributedDp, clip_l2, l2_norm, noise_rng};
use entente_privacy::secagg::{Modulus, Security, quantization_bound};
use entente_privacy::secure_round::{SecAggCoordinator, SecAggSettings, SecureSite};

const DIM: usize = 2000;
const SITES: usize = 6;
const MIN_SITES: usize = 3;

/// Moves coordinate `j` by a site-specific pattern of amplitude `0.004 * (index + 1)^2`: L2
/// norms from about 0.16 to 5.8, so that a bound of 1 clips some sites and not others.
fn pattern(index: usize, j: usize) -> f32 {
    let amplitude = 0.004 * ((index + 1) * (index + 1)) as f32;
    amplitude * (((index * 7 + j * 3) % 11) as f32 / 5.0 - 1.0)
}

/// Site `index`'s whole change to the model.
fn delta(index: usize) -> Vec<f32> {
    (0..DIM).map(|j| pattern(index, j)).collect()
}

/// SecAgg with distributed DP: L2 bound `s`, noise multiplier `sigma`, split over `MIN_SITES`;
/// the fixed-point range is the smallest that holds the noisy coordinates.
fn settings(s: f64, sigma: f64, seed: u64) -> SecAggSettings {
    let dp = DistributedDp::new(s, sigma, MIN_SITES).unwrap();
    SecAggSettings {
        threshold: 0.6,
        neighbours: None,
        clip: dp.coordinate_bound() as f32 * (1.0 + 1e-6),
        max_examples: 1000,
        modulus: Modulus::Pow32,
        seed,
        num_sites: SITES,
        min_sites: MIN_SITES,
        distributed_dp: Some(dp),
        prg: Default::default(),
        security: Security::HonestButCurious,
        context: [0; 32],
    }
}

fn names() -> Vec<String> {
    (0..SITES).map(|i| format!("site-{i}")).collect()
}

fn plain_sites() -> Vec<Arc<dyn Site>> {
    (0..SITES)
        .map(|i| {
            Arc::new(PatternSite {
                name: format!("site-{i}"),
                index: i,
                pattern,
                // Unequal example counts: a weighted mean would differ from DP-FedAvg's.
                examples: 10 + 70 * i as u64,
            }) as Arc<dyn Site>
        })
        .collect()
}

/// One secure round with distributed DP; returns its record and the new global model.
fn distributed_round(
    settings: &SecAggSettings,
    drops: &[(usize, usize)],
    deterministic: bool,
) -> (RoundRecord, Vec<f32>) {
    let mut e = RoundEngine::new(
        secure_sites(plain_sites(), settings, drops, deterministic),
        build(&Strategy::FedAvg).unwrap(),
        None,
        rules(MIN_SITES),
        initial(DIM),
    )
    .with_secure_aggregation(Box::new(SecAggCoordinator::new(settings.clone(), &names())));
    let record = e.run_round(1, &mut NoObserver).unwrap();
    (record, e.global().as_flat().to_vec())
}

fn max_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max)
}

#[test]
fn without_noise_distributed_dp_gives_central_dp_fedavg() {
    let s = 1.0;
    let norms: Vec<f64> = (0..SITES).map(|i| l2_norm(&delta(i))).collect();
    assert!(norms.iter().any(|&n| n < s) && norms.iter().any(|&n| n > 2.0 * s));

    let mut central = RoundEngine::new(
        plain_sites(),
        Box::new(DpFedAvg::new(s, 0.0, noise_rng(1))),
        None,
        rules(1),
        initial(DIM),
    );
    central.run_round(1, &mut NoObserver).unwrap();
    let want = central.global().as_flat().to_vec();

    let settings = settings(s, 0.0, 9);
    let (record, got) = distributed_round(&settings, &[], true);
    assert_eq!(record.accepted.len(), SITES);
    // Every site counts once, and neither its example count nor its loss leaves it.
    assert_eq!(record.accepted_examples, vec![1; SITES]);
    assert_eq!(record.train_loss, 0.0);

    // SecAgg's rounding bound for the mean of SITES weight-1 updates, plus the f32 rounding of
    // adding the mean to the model (values of magnitude below 2).
    let bound =
        quantization_bound(&settings.encoding(SITES), SITES) + 2.0 * f64::from(f32::EPSILON);
    let diff = max_diff(&got, &want);
    assert!(diff <= bound, "difference {diff}, bound {bound}");

    // The example-weighted mean of the same clipped updates is far away: the weights matter.
    let weights: Vec<f64> = (0..SITES).map(|i| (10 + 70 * i) as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut weighted = initial(DIM).as_flat().to_vec();
    for (i, w) in weights.iter().enumerate() {
        let mut d = delta(i);
        clip_l2(&mut d, s).unwrap();
        for (v, x) in weighted.iter_mut().zip(d) {
            *v += (f64::from(x) * w / total) as f32;
        }
    }
    assert!(max_diff(&got, &weighted) > 1000.0 * bound);
}

/// Sample mean and variance (about zero) of the noise in the unmasked sums of rounds with
/// federation seeds `seeds`, for the sites not in `drops`.
fn sum_noise(
    s: f64,
    sigma: f64,
    drops: &[(usize, usize)],
    seeds: std::ops::Range<u64>,
) -> (f64, f64, usize) {
    let survivors: Vec<usize> = (0..SITES)
        .filter(|i| !drops.iter().any(|(d, _)| d == i))
        .collect();
    let k = survivors.len();
    let mut clipped_sum = vec![0.0f64; DIM];
    for &i in &survivors {
        let mut d = delta(i);
        clip_l2(&mut d, s).unwrap();
        for (c, x) in clipped_sum.iter_mut().zip(d) {
            *c += f64::from(x);
        }
    }
    let start = initial(DIM).as_flat().to_vec();
    let mut noise = Vec::new();
    for seed in seeds {
        let (record, got) = distributed_round(&settings(s, sigma, seed), drops, true);
        assert_eq!(record.accepted.len(), k, "{:?}", record.excluded);
        for ((g, x), c) in got.iter().zip(&start).zip(&clipped_sum) {
            // The decoded mean is the noisy sum over k.
            noise.push(f64::from(g - x) * k as f64 - c);
        }
    }
    let n = noise.len() as f64;
    let mean = noise.iter().sum::<f64>() / n;
    let var = noise.iter().map(|z| z * z).sum::<f64>() / n;
    (mean, var, noise.len())
}

#[test]
fn the_unmasked_sum_carries_noise_of_variance_sigma_s_squared_times_k_over_n() {
    let (s, sigma) = (0.5, 2.0);
    // Two sites lost before masking (k = 4), and none (k = 6); n = MIN_SITES = 3.
    for (drops, k) in [(&[(1, 0), (4, 1)][..], 4), (&[][..], 6)] {
        let (mean, var, count) = sum_noise(s, sigma, drops, 100..105);
        let want = (sigma * s).powi(2) * k as f64 / MIN_SITES as f64;
        // 10,000 Gaussian values: the sample variance has a relative standard error of
        // sqrt(2 / 10,000) = 1.4%; 7% is five of them. Central noise (ratio 3 / k away) and
        // undivided shares (ratio 3 away) are far outside.
        assert_eq!(count, 5 * DIM);
        assert!(
            (var / want - 1.0).abs() < 0.07,
            "k = {k}: variance {var}, expected {want}"
        );
        assert!(
            mean.abs() < 5.0 * (want / count as f64).sqrt(),
            "k = {k}: mean {mean}"
        );
    }
}

#[test]
fn the_fixed_point_range_must_hold_the_noisy_coordinates() {
    let mut narrow = settings(0.5, 2.0, 9);
    assert!(narrow.check(DIM).is_ok());
    narrow.clip = 1.0;
    let err = narrow.check(DIM).unwrap_err();
    assert!(err.contains("secure_aggregation.clip"), "{err}");
    // A site refuses to train into a range too narrow, whatever the coordinator says.
    let site = SecureSite::new(
        plain_sites().remove(0),
        0,
        UpdatePolicy::default(),
        narrow,
        true,
    );
    let task = TrainTask {
        round: 1,
        global: Arc::new(initial(DIM)),
        training: rules(MIN_SITES).training,
        seed: 1,
        turn: None,
    };
    let err = site.train(&task).unwrap_err();
    assert!(
        err.kind == ErrorKind::Refused && err.message.contains("secure_aggregation.clip"),
        "{err}"
    );

    // The noise may not be split over more sites than a released sum must hold.
    let mut over = settings(0.5, 2.0, 9);
    over.distributed_dp = Some(DistributedDp::new(0.5, 2.0, MIN_SITES + 1).unwrap());
    assert!(over.check(DIM).unwrap_err().contains("min_sites"));
}

#[test]
fn simulated_noise_repeats_with_the_seed_and_real_noise_does_not() {
    let settings = settings(0.5, 2.0, 9);
    let (_, a) = distributed_round(&settings, &[], true);
    let (_, b) = distributed_round(&settings, &[], true);
    assert_eq!(a, b);
    let (_, c) = distributed_round(&settings, &[], false);
    let (_, d) = distributed_round(&settings, &[], false);
    assert_ne!(c, d);
    assert_ne!(a, c);
}
