//! Tests of the secure aggregation protocol (deterministic: every random choice is seeded).

mod active;
mod adversarial;
mod e2e;
mod kat;
mod parallel;
mod uniformity;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::sim::{DropPoint, SiteInput};
use super::{
    EncodingSettings, GraphSpec, Modulus, SecAggConfig, SiteId, SurvivorRequests, UnmaskRequest,
};

/// The unmasking requests of an honest-but-curious round.
pub(super) fn unmask_requests(requests: SurvivorRequests) -> Vec<UnmaskRequest> {
    match requests {
        SurvivorRequests::Unmask(requests) => requests,
        SurvivorRequests::Consistency(_) => panic!("expected unmasking requests"),
    }
}

/// Encoding used by most tests: clip 1, weights up to 1000, scale 2^17 (safe for 16 sites).
pub(super) fn settings() -> EncodingSettings {
    EncodingSettings {
        clip: 1.0,
        scale: 131_072.0,
        max_weight: 1000,
        modulus: Modulus::Pow32,
    }
}

pub(super) fn config(n: u32, threshold: usize, graph: GraphSpec, dim: usize) -> SecAggConfig {
    let mut enc = settings();
    enc.scale = enc.max_safe_scale(n as usize).min(enc.scale).floor();
    SecAggConfig::new(7, (0..n).collect(), threshold, graph, dim, enc)
}

pub(super) fn seed_of(site: SiteId, salt: u64) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..4].copy_from_slice(&site.to_le_bytes());
    s[8..16].copy_from_slice(&salt.to_le_bytes());
    s
}

/// Updates mostly inside the clip range, a few outside (to exercise clipping), weights 1..=1000.
pub(super) fn inputs(n: u32, dim: usize, salt: u64) -> Vec<SiteInput> {
    let mut rng = ChaCha20Rng::seed_from_u64(salt);
    (0..n)
        .map(|id| SiteInput {
            id,
            rng_seed: seed_of(id, salt),
            update: (0..dim).map(|_| rng.random_range(-1.2f32..1.2)).collect(),
            weight: rng.random_range(1..=1000),
            drop: None,
        })
        .collect()
}

pub(super) fn with_drops(
    mut inputs: Vec<SiteInput>,
    drops: &[(SiteId, DropPoint)],
) -> Vec<SiteInput> {
    for &(id, point) in drops {
        inputs[id as usize].drop = Some(point);
    }
    inputs
}

/// The exact weighted mean of the clipped updates of the given sites, in f64.
pub(super) fn plaintext_mean(inputs: &[SiteInput], contributors: &[SiteId], clip: f32) -> Vec<f64> {
    let dim = inputs[0].update.len();
    let mut sum = vec![0f64; dim];
    let mut w = 0u64;
    for i in inputs.iter().filter(|i| contributors.contains(&i.id)) {
        w += i.weight;
        for (s, &x) in sum.iter_mut().zip(&i.update) {
            *s += i.weight as f64 * f64::from(x.clamp(-clip, clip));
        }
    }
    sum.iter().map(|s| s / w as f64).collect()
}

pub(super) fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - y).abs())
        .fold(0.0, f64::max)
}
