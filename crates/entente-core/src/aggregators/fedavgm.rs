//! FedAvgM (Hsu et al. 2019): FedAvg with momentum applied on the server.
//!
//! With `avg` the weighted mean of the updates and `x` the global model, each round does
//! `delta = avg - x`, `m = momentum * m + delta`, `x = x + server_learning_rate * m`.
//! The momentum buffer `m` starts at zero, persists across rounds and is reset when the
//! model layout changes. With momentum 0 and learning rate 1 this is plain FedAvg.

use crate::params::ParamSet;
use crate::update::ValidUpdate;

use super::fedavg::FedAvg;
use super::{AggregateError, Aggregator, ensure, pack_state, unpack_state};

/// FedAvg followed by a server step with momentum.
#[derive(Debug)]
pub struct FedAvgM {
    average: FedAvg,
    /// The global model of the round in progress (the server step starts from it).
    global: Option<ParamSet>,
    server_learning_rate: f64,
    momentum: f64,
    /// Momentum buffer in the global layout (`f32`, like the model); `None` until first used.
    velocity: Option<ParamSet>,
}

impl FedAvgM {
    /// A FedAvgM aggregator; needs a finite learning rate > 0 and momentum in [0, 1).
    pub fn new(server_learning_rate: f64, momentum: f64) -> Result<Self, AggregateError> {
        ensure(
            server_learning_rate.is_finite() && server_learning_rate > 0.0,
            "fedavgm",
            || format!("server_learning_rate must be finite and > 0, got {server_learning_rate}"),
        )?;
        ensure((0.0..1.0).contains(&momentum), "fedavgm", || {
            format!("momentum must be in [0, 1), got {momentum}")
        })?;
        Ok(Self {
            average: FedAvg::new(),
            global: None,
            server_learning_rate,
            momentum,
            velocity: None,
        })
    }
}

impl Aggregator for FedAvgM {
    fn name(&self) -> &'static str {
        "fedavgm"
    }

    fn begin(&mut self, global: &ParamSet) {
        if self
            .velocity
            .as_ref()
            .is_some_and(|v| !v.same_layout(global))
        {
            self.velocity = None;
        }
        self.average.begin(global);
        self.global = Some(global.clone());
    }

    fn add(&mut self, update: ValidUpdate) -> Result<(), AggregateError> {
        self.average.add(update)
    }

    fn state(&self) -> Option<ParamSet> {
        pack_state(&[("velocity", self.velocity.as_ref()?)])
    }

    fn restore(&mut self, state: &ParamSet) -> Result<(), AggregateError> {
        self.velocity = Some(unpack_state(self.name(), state, "velocity")?);
        Ok(())
    }

    fn finish(&mut self) -> Result<ParamSet, AggregateError> {
        let global = self.global.take();
        let mean = self.average.finish_average()?;
        let mut global = global.ok_or(AggregateError::NotStarted)?;
        let velocity = match &mut self.velocity {
            Some(v) if v.same_layout(&global) => v,
            slot => slot.insert(global.zeros_like()),
        };
        let (lr, beta) = (self.server_learning_rate, self.momentum);
        for ((x, v), avg) in global
            .as_flat_mut()
            .iter_mut()
            .zip(velocity.as_flat_mut())
            .zip(&mean)
        {
            let x64 = f64::from(*x);
            let m = beta * f64::from(*v) + (avg - x64);
            *v = m as f32;
            *x = (x64 + lr * m) as f32;
        }
        Ok(global)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_close, global, update};
    use super::*;

    fn round(agg: &mut FedAvgM, g: &ParamSet, updates: &[(u64, &[f32])]) -> ParamSet {
        agg.begin(g);
        for (i, (n, values)) in updates.iter().enumerate() {
            agg.add(update(g, &format!("site-{i}"), *n, values))
                .unwrap();
        }
        agg.finish().unwrap()
    }

    #[test]
    fn momentum_accumulates_over_rounds() {
        let mut agg = FedAvgM::new(0.5, 0.9).unwrap();
        // Round 1: avg = (1*2 + 3*4) / 4 = 3.5, delta = 3.5 - 1 = 2.5, m = 2.5, x = 1 + 0.5*2.5.
        let g0 = global(&[1.0, -2.0]);
        let x1 = round(&mut agg, &g0, &[(1, &[2.0, 0.0]), (3, &[4.0, -2.0])]);
        // Second coordinate: avg = -1.5, delta = 0.5, m = 0.5, x = -2 + 0.25.
        assert_close(x1.as_flat(), &[2.25, -1.75], 1e-7);
        // Round 2: a single update at 3.25 / -1.75 gives delta = 1.0 / 0.0.
        let x2 = round(&mut agg, &x1, &[(5, &[3.25, -1.75])]);
        // m = 0.9*2.5 + 1 = 3.25, x = 2.25 + 1.625 ; m = 0.9*0.5 + 0 = 0.45, x = -1.75 + 0.225.
        assert_close(x2.as_flat(), &[3.875, -1.525], 1e-6);
    }

    #[test]
    fn zero_momentum_and_unit_rate_is_fedavg() {
        let mut agg = FedAvgM::new(1.0, 0.0).unwrap();
        let g = global(&[10.0, 10.0]);
        let out = round(&mut agg, &g, &[(1, &[1.0, 2.0]), (3, &[3.0, 4.0])]);
        assert_close(out.as_flat(), &[2.5, 3.5], 1e-7);
    }

    #[test]
    fn momentum_resets_when_the_layout_changes() {
        let mut agg = FedAvgM::new(1.0, 0.5).unwrap();
        let g = global(&[0.0]);
        round(&mut agg, &g, &[(1, &[4.0])]);
        // A different layout: the momentum from the 1-value model must not leak in.
        let h = global(&[0.0, 0.0]);
        let out = round(&mut agg, &h, &[(1, &[1.0, 1.0])]);
        assert_close(out.as_flat(), &[1.0, 1.0], 1e-7);
        // Back to the first layout: starts from zero again (m = 1, not 0.5*4 + 1).
        let out = round(&mut agg, &g, &[(1, &[1.0])]);
        assert_close(out.as_flat(), &[1.0], 1e-7);
    }
}
