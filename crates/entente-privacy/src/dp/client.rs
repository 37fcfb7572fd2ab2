//! Client-level differential privacy for FedAvg with a trusted coordinator (central DP;
//! McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent Language
//! Models", ICLR 2018).
//!
//! Every site's update (its model minus the global model) is clipped to L2 norm `clip`, the
//! clipped updates are averaged with equal weight, and Gaussian noise of standard deviation
//! `noise_multiplier * clip / m` is added to the mean of `m` updates: the sum's sensitivity to
//! one site is `clip`. Each round is one step of the sampled Gaussian mechanism over sites,
//! accounted by [`super::rdp`] at the rate that [`crate::policy::SamplingRule`] gives: the
//! fraction of sites selected in simulation, 1 at a node of a real deployment.

use entente_core::aggregators::{AggregateError, Aggregator};
use entente_core::params::ParamSet;
use entente_core::update::ValidUpdate;
use rand_chacha::ChaCha20Rng;

use super::mechanisms::{add_gaussian_noise, clip_l2};

/// DP-FedAvg: clipped, equally weighted, noised mean of the updates.
pub struct DpFedAvg {
    clip: f64,
    noise_multiplier: f64,
    rng: ChaCha20Rng,
    global: Option<ParamSet>,
    sum: Vec<f64>,
    count: usize,
}

impl DpFedAvg {
    /// Clips updates to `clip` and adds noise `noise_multiplier * clip` to their sum; `rng`
    /// draws the noise (seeded in simulation, from the operating system in production).
    pub fn new(clip: f64, noise_multiplier: f64, rng: ChaCha20Rng) -> Self {
        Self {
            clip,
            noise_multiplier,
            rng,
            global: None,
            sum: Vec::new(),
            count: 0,
        }
    }
}

fn invalid(reason: String) -> AggregateError {
    AggregateError::InvalidConfig {
        rule: "dp_fedavg",
        reason,
    }
}

impl Aggregator for DpFedAvg {
    fn name(&self) -> &'static str {
        "dp_fedavg"
    }

    fn begin(&mut self, global: &ParamSet) {
        self.sum = vec![0.0; global.num_values()];
        self.count = 0;
        self.global = Some(global.clone());
    }

    fn add(&mut self, update: ValidUpdate) -> Result<(), AggregateError> {
        let global = self.global.as_ref().ok_or(AggregateError::NotStarted)?;
        if !global.same_layout(&update.params) {
            return Err(AggregateError::LayoutMismatch(update.site));
        }
        let mut delta: Vec<f32> = update
            .params
            .as_flat()
            .iter()
            .zip(global.as_flat())
            .map(|(p, g)| p - g)
            .collect();
        clip_l2(&mut delta, self.clip).map_err(|e| invalid(e.to_string()))?;
        for (s, d) in self.sum.iter_mut().zip(&delta) {
            *s += f64::from(*d);
        }
        self.count += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<ParamSet, AggregateError> {
        let mut global = self.global.take().ok_or(AggregateError::NotStarted)?;
        if self.count == 0 {
            return Err(AggregateError::NoUpdates);
        }
        let m = self.count as f64;
        let mut noisy: Vec<f32> = self.sum.iter().map(|&s| s as f32).collect();
        add_gaussian_noise(&mut noisy, self.noise_multiplier, self.clip, &mut self.rng)
            .map_err(|e| invalid(e.to_string()))?;
        for (g, n) in global.as_flat_mut().iter_mut().zip(&noisy) {
            *g += (f64::from(*n) / m) as f32;
        }
        self.count = 0;
        Ok(global)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dp::mechanisms::noise_rng;

    fn update(global: &ParamSet, values: Vec<f32>) -> ValidUpdate {
        ValidUpdate {
            site: "s".into(),
            num_examples: 1,
            params: ParamSet::from_flat(Arc::clone(global.layout()), values).unwrap(),
            update_norm: 0.0,
            train_loss: 0.0,
        }
    }

    fn global(n: usize) -> ParamSet {
        ParamSet::from_tensors([("w".to_string(), vec![n], vec![0.0; n])]).unwrap()
    }

    #[test]
    fn without_noise_it_is_the_mean_of_clipped_updates() {
        let g = global(2);
        let mut agg = DpFedAvg::new(1.0, 0.0, noise_rng(1));
        agg.begin(&g);
        agg.add(update(&g, vec![3.0, 4.0])).unwrap(); // norm 5 -> clipped to (0.6, 0.8)
        agg.add(update(&g, vec![0.2, 0.0])).unwrap(); // inside the bound
        let out = agg.finish().unwrap();
        let want = [(0.6 + 0.2) / 2.0, 0.8 / 2.0];
        for (o, w) in out.as_flat().iter().zip(want) {
            assert!((f64::from(*o) - w).abs() < 1e-6, "{o} vs {w}");
        }
    }

    #[test]
    fn noise_on_the_mean_has_std_sigma_clip_over_m() {
        let n = 20_000;
        let g = global(n);
        let mut agg = DpFedAvg::new(0.5, 2.0, noise_rng(7));
        agg.begin(&g);
        for _ in 0..4 {
            agg.add(update(&g, vec![0.0; n])).unwrap();
        }
        let out = agg.finish().unwrap();
        let var = out
            .as_flat()
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            / n as f64;
        let want = (2.0 * 0.5 / 4.0f64).powi(2);
        // Sample variance of 20,000 normals: relative standard error about 1%.
        assert!(
            (var / want - 1.0).abs() < 0.05,
            "variance {var}, expected {want}"
        );
    }

    #[test]
    fn a_huge_update_moves_the_mean_by_at_most_clip_over_m() {
        let g = global(3);
        let mut agg = DpFedAvg::new(1.0, 0.0, noise_rng(1));
        agg.begin(&g);
        agg.add(update(&g, vec![1e30, -1e30, 1e30])).unwrap();
        agg.add(update(&g, vec![0.0; 3])).unwrap();
        let out = agg.finish().unwrap();
        let norm = out
            .as_flat()
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(norm <= 0.5 + 1e-6, "{norm}");
    }

    #[test]
    fn finish_without_updates_is_an_error() {
        let g = global(1);
        let mut agg = DpFedAvg::new(1.0, 1.0, noise_rng(1));
        assert!(matches!(agg.finish(), Err(AggregateError::NotStarted)));
        agg.begin(&g);
        assert!(matches!(agg.finish(), Err(AggregateError::NoUpdates)));
    }
}
