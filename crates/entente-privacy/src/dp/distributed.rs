//! Client-level differential privacy for FedAvg under secure aggregation: distributed DP
//! (McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent Language
//! Models", ICLR 2018, section 2: the noise can be split across sites "so that it composes
//! with secure aggregation").
//!
//! Central DP-FedAvg ([`super::client`]) trusts the coordinator to add the noise to the sum of
//! the clipped updates. Here no one is trusted with a single update: each site clips its own
//! update to L2 norm `S`, adds its share of the noise, `N(0, (sigma * S)^2 / n)` per
//! coordinate, and only then masks it, so the coordinator unmasks nothing but the noisy sum.
//!
//! # Why `n = selection.min_sites`
//!
//! The sum of `k` independent shares has standard deviation `sigma * S * sqrt(k / n)`. That is
//! at least `sigma * S`, the noise of the central mechanism, whenever `k >= n`. A secure round
//! releases a sum only if at least `selection.min_sites` sites contributed (fewer survivors
//! abort it before anything is unmasked, and every site refuses a round that selects fewer), so
//! `n = min_sites` is the conservative choice: the privacy of a released sum is at least that of
//! the central mechanism with noise multiplier `sigma`, and the RDP accountant charges exactly
//! that (sampled Gaussian, `q` = the share of sites selected, one step per round). When more
//! sites survive the sum carries more noise than needed (by a factor `sqrt(k / n)` in standard
//! deviation): a larger `min_sites` means less wasted noise.
//!
//! # Weights
//!
//! As in [`super::client::DpFedAvg`] every site counts once: the sensitivity of the sum to one
//! site is `S` only if a site cannot scale its contribution, so under distributed DP each site
//! masks its update with weight 1 (not its example count) and the coordinator decodes the
//! equally weighted mean `(sum of noisy clipped updates) / k`.
//!
//! # The fixed-point range
//!
//! SecAgg encodes each coordinate in fixed point after clipping it to `[-clip, clip]`. That
//! clipping happens at each site, before the sum, so it is *not* post-processing of the noisy
//! sum: it is only harmless if it (almost) never acts. A coordinate of a clipped update is at
//! most `S` in magnitude and its noise share has standard deviation `sigma * S / sqrt(n)`, so the
//! range must reach [`coordinate_bound`]: `S` plus [`TAIL_STDS`] standard deviations. A
//! coordinate then leaves the range with probability below `2 Phi(-10) = 1.5e-23`; over `N`
//! coordinates (dimension x sites x rounds) the event has probability `beta < N * 1.5e-23`
//! (below `1e-11` up to `N = 1e12`), and the run is `(epsilon, delta + (1 + e^epsilon) beta)`-DP.
//! Rounding to the fixed-point grid (a step of `1 / scale`, about `1e-8` with 32 bits) is, like
//! floating-point Gaussian sampling itself (Mironov, CCS 2012), outside the proof; it is many
//! orders of magnitude below the noise.
//!
//! [`coordinate_bound`]: DistributedDp::coordinate_bound

use rand::Rng;

use super::mechanisms::{add_gaussian_noise, clip_l2};
use super::{DpError, check_range};

/// Standard deviations of a site's noise share that the fixed-point range must hold beyond the
/// clipped value (see the [module documentation](self)); the manifest checks the same bound.
pub const TAIL_STDS: f64 = entente_core::manifest::DISTRIBUTED_DP_TAIL_STDS;

/// One site's half of distributed DP-FedAvg: clip to `clip`, add `1 / expected_sites` of the
/// variance of the central mechanism's noise.
#[derive(Debug, Clone, PartialEq)]
pub struct DistributedDp {
    clip: f64,
    noise_multiplier: f64,
    expected_sites: usize,
}

impl DistributedDp {
    /// Clips each update to L2 norm `clip` (`S`, finite and positive) and adds noise so that
    /// the sum of `expected_sites` (`n`, at least 1) sites' shares has standard deviation
    /// `noise_multiplier * clip` (`sigma`, finite and non-negative; 0 adds none).
    pub fn new(clip: f64, noise_multiplier: f64, expected_sites: usize) -> Result<Self, DpError> {
        let dp = Self {
            clip,
            noise_multiplier,
            expected_sites,
        };
        dp.check()?;
        Ok(dp)
    }

    /// The same settings, not checked: for values that were checked elsewhere (a parsed
    /// manifest). [`DistributedDp::privatize`] checks them again before drawing any noise.
    pub(crate) fn new_unchecked(clip: f64, noise_multiplier: f64, expected_sites: usize) -> Self {
        Self {
            clip,
            noise_multiplier,
            expected_sites,
        }
    }

    /// Checks the settings as [`DistributedDp::new`] does.
    pub fn check(&self) -> Result<(), DpError> {
        check_range(
            "clip",
            self.clip,
            f64::MIN_POSITIVE,
            f64::MAX,
            "finite and positive",
        )?;
        check_range(
            "noise_multiplier",
            self.noise_multiplier,
            0.0,
            f64::MAX,
            "finite and non-negative",
        )?;
        check_range(
            "expected_sites",
            self.expected_sites as f64,
            1.0,
            f64::MAX,
            "at least 1",
        )?;
        check_range(
            "noise_multiplier * clip",
            self.noise_multiplier * self.clip,
            0.0,
            f64::MAX,
            "finite",
        )
    }

    /// The L2 norm bound `S` of each site's update.
    pub fn clip(&self) -> f64 {
        self.clip
    }

    /// The number of sites `n` whose shares make up the full noise.
    pub fn expected_sites(&self) -> usize {
        self.expected_sites
    }

    /// Standard deviation of one site's noise share: `sigma * S / sqrt(n)`.
    pub fn share_std(&self) -> f64 {
        self.share_multiplier() * self.clip
    }

    /// Standard deviation of the noise in the sum of `sites` shares: `sigma * S * sqrt(k / n)`.
    pub fn sum_std(&self, sites: usize) -> f64 {
        self.share_std() * (sites as f64).sqrt()
    }

    /// The largest magnitude a coordinate of a noisy update reaches except with probability
    /// `2 Phi(-TAIL_STDS)`: `S + TAIL_STDS * sigma * S / sqrt(n)`. SecAgg's `clip` must be at
    /// least this.
    pub fn coordinate_bound(&self) -> f64 {
        entente_core::manifest::distributed_dp_range(
            self.clip,
            self.noise_multiplier,
            self.expected_sites,
        )
    }

    /// Clips `update` (a site's model minus the global model) to L2 norm `S` and adds the
    /// site's noise share drawn from `rng`; returns the clipping factor (1 if the update was
    /// within the bound). On error `update` is unchanged.
    pub fn privatize<R: Rng + ?Sized>(
        &self,
        update: &mut [f32],
        rng: &mut R,
    ) -> Result<f64, DpError> {
        self.check()?;
        let factor = clip_l2(update, self.clip)?;
        // The share's standard deviation is (sigma / sqrt(n)) * S: the audited mechanism with a
        // smaller multiplier. It cannot fail here: the settings are checked and the clipped
        // values finite, the two things it refuses.
        add_gaussian_noise(update, self.share_multiplier(), self.clip, rng)?;
        Ok(factor)
    }

    fn share_multiplier(&self) -> f64 {
        self.noise_multiplier / (self.expected_sites.max(1) as f64).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dp::mechanisms::{l2_norm, noise_rng};

    #[test]
    fn rejects_bad_settings() {
        assert!(DistributedDp::new(0.0, 1.0, 3).is_err());
        assert!(DistributedDp::new(f64::NAN, 1.0, 3).is_err());
        assert!(DistributedDp::new(1.0, -0.5, 3).is_err());
        assert!(DistributedDp::new(1.0, 1.0, 0).is_err());
        assert!(DistributedDp::new(1e200, 1e200, 3).is_err());
        assert!(DistributedDp::new(1.0, 0.0, 1).is_ok());
        let bad = DistributedDp::new_unchecked(1.0, 1.0, 0);
        let mut v = vec![1.0f32, 2.0];
        assert!(bad.privatize(&mut v, &mut noise_rng(1)).is_err());
        assert_eq!(v, vec![1.0, 2.0]);
    }

    #[test]
    fn without_noise_it_only_clips() {
        let dp = DistributedDp::new(1.0, 0.0, 4).unwrap();
        let mut v = vec![3.0f32, 4.0];
        let factor = dp.privatize(&mut v, &mut noise_rng(1)).unwrap();
        assert!((factor - 0.2).abs() < 1e-6);
        assert!(l2_norm(&v) <= 1.0);
        assert!(
            (v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6,
            "{v:?}"
        );
    }

    #[test]
    fn a_share_has_std_sigma_clip_over_sqrt_n() {
        let dp = DistributedDp::new(0.5, 2.0, 4).unwrap();
        assert!((dp.share_std() - 0.5).abs() < 1e-12);
        assert!((dp.sum_std(4) - 1.0).abs() < 1e-12);
        assert!((dp.coordinate_bound() - (0.5 + TAIL_STDS * 0.5)).abs() < 1e-12);
        let n = 20_000;
        let mut v = vec![0.0f32; n];
        dp.privatize(&mut v, &mut noise_rng(3)).unwrap();
        let var = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / n as f64;
        // 20,000 normals: relative standard error of the variance about 1%.
        assert!((var / 0.25 - 1.0).abs() < 0.05, "variance {var}");
    }
}
