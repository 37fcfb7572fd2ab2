//! L2 clipping and seeded Gaussian noise: norms after clipping, and the noise variance checked
//! against a chi-square confidence interval for fixed seeds.

use entente_privacy::dp::{DpError, add_gaussian_noise, clip_l2, l2_norm, noise_rng};
use rand::Rng;

/// Deterministic test vectors of assorted lengths and scales.
fn vectors() -> Vec<Vec<f32>> {
    let mut rng = noise_rng(7);
    let mut out = Vec::new();
    for len in [1usize, 2, 3, 10, 100, 4810, 100_000] {
        for scale in [1e-3f32, 1.0, 37.0, 1e6, 1e30] {
            out.push(
                (0..len)
                    .map(|_| scale * (rng.random::<f32>() * 2.0 - 1.0))
                    .collect(),
            );
        }
    }
    out
}

#[test]
fn clipped_norm_is_at_most_c() {
    for clip in [1e-4, 0.1, 1.0, 3.7, 1e3] {
        for original in vectors() {
            let norm = l2_norm(&original);
            let mut v = original.clone();
            let scale = clip_l2(&mut v, clip).unwrap();
            let clipped = l2_norm(&v);
            assert!(clipped <= clip, "len {} clip {clip}: {clipped}", v.len());
            if norm > clip {
                // Scaled down to (just under) the clip norm, direction kept.
                assert!(scale < 1.0 && scale > 0.0);
                assert!(clipped >= clip * (1.0 - 1e-5), "{clipped} vs {clip}");
                assert!((scale - clip / norm).abs() <= 1e-5 * scale);
                for (a, b) in v.iter().zip(&original) {
                    let expected = f64::from(*b) * scale;
                    assert!((f64::from(*a) - expected).abs() <= 1e-6 * expected.abs() + 1e-38);
                }
            } else {
                assert_eq!(scale, 1.0);
                assert_eq!(v, original);
            }
        }
    }
}

#[test]
fn vectors_below_or_at_c_are_unchanged() {
    let mut v = vec![3.0f32, 4.0];
    assert_eq!(clip_l2(&mut v, 5.0), Ok(1.0));
    assert_eq!(v, vec![3.0, 4.0]);
    assert_eq!(clip_l2(&mut v, 100.0), Ok(1.0));
    assert_eq!(v, vec![3.0, 4.0]);
    let mut zero = vec![0.0f32; 10];
    assert_eq!(clip_l2(&mut zero, 1e-9), Ok(1.0));
    assert_eq!(clip_l2(&mut v, 2.5), Ok(0.5));
    assert_eq!(v, vec![1.5, 2.0]);
}

#[test]
fn clip_rejects_bad_input() {
    let mut v = vec![1.0f32, f32::INFINITY];
    assert!(matches!(
        clip_l2(&mut v, 1.0),
        Err(DpError::NonFiniteValue { index: 1, .. })
    ));
    let mut v = vec![1.0f32, 2.0];
    for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            clip_l2(&mut v, c),
            Err(DpError::InvalidParameter { .. })
        ));
    }
    assert_eq!(v, vec![1.0, 2.0]);
}

/// Quantile of the chi-square distribution with `k` degrees of freedom at standard-normal
/// quantile `z` (Wilson and Hilferty 1931; relative error far below 1e-4 for k in the 1e5s).
fn chi2_quantile(k: f64, z: f64) -> f64 {
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + z * a.sqrt()).powi(3)
}

#[test]
fn noise_variance_matches_sigma_squared_c_squared() {
    // Two-sided 99.9% interval: z = 3.2905.
    const Z: f64 = 3.290_526_731_491_926;
    let n = 200_000usize;
    for (seed, sigma, clip) in [
        (1u64, 1.0, 1.0),
        (2, 1.3, 0.7),
        (3, 0.3, 5.0),
        (4, 10.0, 0.01),
    ] {
        let original: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
        let mut v = original.clone();
        let mut rng = noise_rng(seed);
        let std = add_gaussian_noise(&mut v, sigma, clip, &mut rng).unwrap();
        assert!((std - sigma * clip).abs() < 1e-15);

        let noise: Vec<f64> = v
            .iter()
            .zip(&original)
            .map(|(a, b)| f64::from(*a) - f64::from(*b))
            .collect();
        // Known mean 0: sum (x / std)^2 ~ chi-square with n degrees of freedom.
        let stat: f64 = noise.iter().map(|x| (x / std) * (x / std)).sum();
        let (lo, hi) = (chi2_quantile(n as f64, -Z), chi2_quantile(n as f64, Z));
        assert!(
            stat > lo && stat < hi,
            "seed {seed}: sample variance {} outside [{}, {}] of {}",
            stat / n as f64 * std * std,
            lo / n as f64 * std * std,
            hi / n as f64 * std * std,
            std * std
        );
        // Mean: z-test at the same level.
        let mean = noise.iter().sum::<f64>() / n as f64;
        assert!(
            mean.abs() < Z * std / (n as f64).sqrt(),
            "seed {seed}: mean {mean}"
        );
    }
}

#[test]
fn noise_is_reproducible_per_seed() {
    let draw = |seed| {
        let mut v = vec![0.0f32; 1000];
        add_gaussian_noise(&mut v, 1.0, 2.0, &mut noise_rng(seed)).unwrap();
        v
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
}

#[test]
fn client_level_round_clips_then_noises_the_sum() {
    // McMahan et al. 2018: each site clips its update to S, the sum gets N(0, sigma^2 S^2).
    let (sites, dim, s, sigma) = (20usize, 50_000usize, 0.5, 1.2);
    let mut rng = noise_rng(11);
    let mut sum = vec![0.0f32; dim];
    for _ in 0..sites {
        let mut update: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
        clip_l2(&mut update, s).unwrap();
        assert!(l2_norm(&update) <= s);
        sum.iter_mut().zip(&update).for_each(|(a, b)| *a += b);
    }
    let clean = sum.clone();
    add_gaussian_noise(&mut sum, sigma, s, &mut noise_rng(12)).unwrap();
    let var = sum
        .iter()
        .zip(&clean)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum::<f64>()
        / dim as f64;
    let expected = (sigma * s) * (sigma * s);
    // 99.9% chi-square interval on the ratio.
    let k = dim as f64;
    let z = 3.290_526_731_491_926;
    assert!(
        var / expected > chi2_quantile(k, -z) / k && var / expected < chi2_quantile(k, z) / k,
        "{var} vs {expected}"
    );
}
