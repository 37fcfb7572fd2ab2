//! FedAdam, FedYogi and FedAdagrad: adaptive server optimizers from Reddi et al., "Adaptive
//! Federated Optimization" (ICLR 2021), Algorithm 2.
//!
//! With `x` the global model and `avg` the FedAvg mean of the updates, each round does, per
//! coordinate:
//!
//! ```text
//! delta = avg - x
//! m     = beta1 * m + (1 - beta1) * delta
//! v     = v + delta^2                                        (Adagrad)
//! v     = beta2 * v + (1 - beta2) * delta^2                  (Adam)
//! v     = v - (1 - beta2) * delta^2 * sign(v - delta^2)      (Yogi, sign(0) = 0)
//! x     = x + eta * m / (sqrt(v) + tau)
//! ```
//!
//! `m` and `v` start at zero (no bias correction, as in the paper), persist across rounds and
//! are reset when the model layout changes. Arithmetic is `f64`; the moments are stored as
//! `f32`, like the model.

use crate::params::ParamSet;
use crate::update::ValidUpdate;

use super::fedavg::FedAvg;
use super::{AggregateError, Aggregator, FedOptKind, ensure, pack_state, unpack_state};

/// An adaptive server optimizer (FedAdam, FedYogi or FedAdagrad) on top of FedAvg.
#[derive(Debug)]
pub struct FedOpt {
    kind: FedOptKind,
    eta: f64,
    beta1: f64,
    beta2: f64,
    tau: f64,
    average: FedAvg,
    /// The global model of the round in progress (the server step starts from it).
    global: Option<ParamSet>,
    moments: Option<Moments>,
}

/// Server optimizer state, in the global model's layout.
#[derive(Debug)]
struct Moments {
    /// First moment.
    m: ParamSet,
    /// Second moment.
    v: ParamSet,
}

impl FedOpt {
    /// A FedOpt aggregator; needs eta > 0, beta1 in [0, 1), beta2 in [0, 1) (not used by
    /// Adagrad) and tau > 0, all finite.
    pub fn new(
        kind: FedOptKind,
        server_learning_rate: f64,
        beta1: f64,
        beta2: f64,
        tau: f64,
    ) -> Result<Self, AggregateError> {
        let rule = rule_name(kind);
        ensure(
            server_learning_rate.is_finite() && server_learning_rate > 0.0,
            rule,
            || format!("server_learning_rate must be finite and > 0, got {server_learning_rate}"),
        )?;
        ensure((0.0..1.0).contains(&beta1), rule, || {
            format!("beta1 must be in [0, 1), got {beta1}")
        })?;
        ensure(
            kind == FedOptKind::Adagrad || (0.0..1.0).contains(&beta2),
            rule,
            || format!("beta2 must be in [0, 1), got {beta2}"),
        )?;
        ensure(tau.is_finite() && tau > 0.0, rule, || {
            format!("tau must be finite and > 0, got {tau}")
        })?;
        Ok(Self {
            kind,
            eta: server_learning_rate,
            beta1,
            beta2,
            tau,
            average: FedAvg::new(),
            global: None,
            moments: None,
        })
    }
}

/// Log name of each optimizer.
fn rule_name(kind: FedOptKind) -> &'static str {
    match kind {
        FedOptKind::Adam => "fedadam",
        FedOptKind::Yogi => "fedyogi",
        FedOptKind::Adagrad => "fedadagrad",
    }
}

/// Sign with `sign(0) = 0` (unlike `f64::signum`, which gives 1 for +0).
fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

impl Aggregator for FedOpt {
    fn name(&self) -> &'static str {
        rule_name(self.kind)
    }

    fn begin(&mut self, global: &ParamSet) {
        if self
            .moments
            .as_ref()
            .is_some_and(|s| !s.m.same_layout(global))
        {
            self.moments = None;
        }
        self.average.begin(global);
        self.global = Some(global.clone());
    }

    fn add(&mut self, update: ValidUpdate) -> Result<(), AggregateError> {
        self.average.add(update)
    }

    fn state(&self) -> Option<ParamSet> {
        let moments = self.moments.as_ref()?;
        pack_state(&[("m", &moments.m), ("v", &moments.v)])
    }

    fn restore(&mut self, state: &ParamSet) -> Result<(), AggregateError> {
        let m = unpack_state(self.name(), state, "m")?;
        let v = unpack_state(self.name(), state, "v")?;
        if !m.same_layout(&v) {
            return Err(AggregateError::InvalidConfig {
                rule: self.name(),
                reason: "the saved moments have different layouts".into(),
            });
        }
        self.moments = Some(Moments { m, v });
        Ok(())
    }

    fn finish(&mut self) -> Result<ParamSet, AggregateError> {
        let global = self.global.take();
        let mean = self.average.finish_average()?;
        let mut global = global.ok_or(AggregateError::NotStarted)?;
        let moments = match &mut self.moments {
            Some(s) if s.m.same_layout(&global) => s,
            slot => slot.insert(Moments {
                m: global.zeros_like(),
                v: global.zeros_like(),
            }),
        };
        let (kind, eta, b1, b2, tau) = (self.kind, self.eta, self.beta1, self.beta2, self.tau);
        for (((x, m), v), avg) in global
            .as_flat_mut()
            .iter_mut()
            .zip(moments.m.as_flat_mut())
            .zip(moments.v.as_flat_mut())
            .zip(&mean)
        {
            let x64 = f64::from(*x);
            let delta = avg - x64;
            let d2 = delta * delta;
            let m_new = b1 * f64::from(*m) + (1.0 - b1) * delta;
            let v_old = f64::from(*v);
            let v_new = match kind {
                FedOptKind::Adagrad => v_old + d2,
                FedOptKind::Adam => b2 * v_old + (1.0 - b2) * d2,
                FedOptKind::Yogi => v_old - (1.0 - b2) * d2 * sign(v_old - d2),
            };
            *m = m_new as f32;
            *v = v_new as f32;
            *x = (x64 + eta * m_new / (v_new.sqrt() + tau)) as f32;
        }
        Ok(global)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_close, global, update};
    use super::*;

    fn round(agg: &mut FedOpt, g: &ParamSet, updates: &[(u64, &[f32])]) -> ParamSet {
        agg.begin(g);
        for (i, (n, values)) in updates.iter().enumerate() {
            agg.add(update(g, &format!("site-{i}"), *n, values))
                .unwrap();
        }
        agg.finish().unwrap()
    }

    fn moments(agg: &FedOpt) -> (Vec<f64>, Vec<f64>) {
        let s = agg.moments.as_ref().unwrap();
        let widen = |p: &ParamSet| p.as_flat().iter().map(|v| f64::from(*v)).collect();
        (widen(&s.m), widen(&s.v))
    }

    fn v_of(agg: &FedOpt) -> f64 {
        moments(agg).1[0]
    }

    #[test]
    fn fedadam_one_step_by_hand() {
        let mut agg = FedOpt::new(FedOptKind::Adam, 0.1, 0.9, 0.99, 0.01).unwrap();
        let g = global(&[1.0, 0.0]);
        // avg = ((1.2, 0.4) + 3 * (1.6, -0.4)) / 4 = (1.5, -0.2); delta = (0.5, -0.2).
        let out = round(&mut agg, &g, &[(1, &[1.2, 0.4]), (3, &[1.6, -0.4])]);
        // m = 0.1 * delta = (0.05, -0.02); v = 0.01 * delta^2 = (0.0025, 0.0004);
        // sqrt(v) = (0.05, 0.02); x += 0.1 * m / (sqrt(v) + 0.01).
        let (m, v) = moments(&agg);
        assert_close(
            &m.iter().map(|x| *x as f32).collect::<Vec<_>>(),
            &[0.05, -0.02],
            1e-6,
        );
        assert_close(
            &v.iter().map(|x| *x as f32).collect::<Vec<_>>(),
            &[0.0025, 0.0004],
            1e-6,
        );
        assert_close(
            out.as_flat(),
            &[1.0 + 0.1 * 0.05 / 0.06, -0.1 * 0.02 / 0.03],
            1e-6,
        );
        assert_close(out.as_flat(), &[1.083_333_3, -0.066_666_67], 1e-6);
    }

    #[test]
    fn fedyogi_moves_v_by_the_sign_of_v_minus_delta_squared() {
        let mut yogi = FedOpt::new(FedOptKind::Yogi, 1.0, 0.0, 0.9, 1e-3).unwrap();
        let mut adam = FedOpt::new(FedOptKind::Adam, 1.0, 0.0, 0.9, 1e-3).unwrap();
        let zero = global(&[0.0]);
        // Round 1, delta = 2: v = 0 - 0.1 * 4 * sign(0 - 4) = 0.4, the same as Adam.
        round(&mut yogi, &zero, &[(1, &[2.0])]);
        round(&mut adam, &zero, &[(1, &[2.0])]);
        assert!((v_of(&yogi) - 0.4).abs() < 1e-6);
        assert!((v_of(&adam) - 0.4).abs() < 1e-6);
        // Round 2, delta = 0.5 so delta^2 = 0.25 < v: Yogi subtracts 0.1 * 0.25 (v = 0.375),
        // Adam decays towards it (0.9 * 0.4 + 0.025 = 0.385).
        let out = round(&mut yogi, &zero, &[(1, &[0.5])]);
        round(&mut adam, &zero, &[(1, &[0.5])]);
        assert!((v_of(&yogi) - 0.375).abs() < 1e-6, "{}", v_of(&yogi));
        assert!((v_of(&adam) - 0.385).abs() < 1e-6, "{}", v_of(&adam));
        // beta1 = 0 so m = delta, x = 0 + 0.5 / (sqrt(0.375) + 0.001).
        assert_close(out.as_flat(), &[0.5 / (0.375f64.sqrt() + 1e-3)], 1e-6);
        // Round 3, delta = 3 so delta^2 = 9 > v: Yogi adds 0.1 * 9 (v = 1.275).
        round(&mut yogi, &zero, &[(1, &[3.0])]);
        assert!((v_of(&yogi) - 1.275).abs() < 1e-6, "{}", v_of(&yogi));
    }

    #[test]
    fn fedyogi_leaves_v_alone_when_it_equals_delta_squared() {
        let mut yogi = FedOpt::new(FedOptKind::Yogi, 1.0, 0.0, 0.75, 1e-3).unwrap();
        let zero = global(&[0.0, 0.0]);
        // Round 1: delta = (4, 0) gives v = (0.25 * 16, 0) = (4, 0); sign(0 - 0) = 0 keeps 0.
        round(&mut yogi, &zero, &[(1, &[4.0, 0.0])]);
        assert_eq!(moments(&yogi).1, [4.0, 0.0]);
        // Round 2: delta = (2, 0): delta^2 = v, so sign(v - delta^2) = 0 and v stays (4, 0)
        // (with signum's sign(0) = 1 it would drop to 3).
        round(&mut yogi, &zero, &[(1, &[2.0, 0.0])]);
        assert_eq!(moments(&yogi).1, [4.0, 0.0]);
    }

    #[test]
    fn fedadagrad_accumulates_over_two_rounds() {
        let mut agg = FedOpt::new(FedOptKind::Adagrad, 0.1, 0.9, 0.0, 1e-3).unwrap();
        let zero = global(&[0.0]);
        // Round 1, delta = 1: m = 0.1, v = 1, x = 0.1 * 0.1 / (1 + 0.001).
        let x1 = round(&mut agg, &zero, &[(2, &[1.0])]);
        assert_close(x1.as_flat(), &[0.01 / 1.001], 1e-6);
        // Round 2 from x1, avg = x1 + 2 up to f32 rounding.
        let target = x1.as_flat()[0] + 2.0;
        let delta = f64::from(target) - f64::from(x1.as_flat()[0]);
        let x2 = round(&mut agg, &x1, &[(1, &[target])]);
        // m = 0.9 * 0.1 + 0.1 * delta, v = 1 + delta^2 (accumulated, never decayed).
        let m = 0.09 + 0.1 * delta;
        let v = 1.0 + delta * delta;
        let (got_m, got_v) = moments(&agg);
        assert!((got_m[0] - m).abs() < 1e-6 && (got_v[0] - v).abs() < 1e-6);
        assert!((v - 5.0).abs() < 1e-5);
        let want = f64::from(x1.as_flat()[0]) + 0.1 * m / (v.sqrt() + 1e-3);
        assert_close(x2.as_flat(), &[want], 1e-6);
    }

    #[test]
    fn moments_reset_when_the_layout_changes() {
        let mut agg = FedOpt::new(FedOptKind::Adagrad, 1.0, 0.0, 0.0, 1e-3).unwrap();
        let one = global(&[0.0]);
        round(&mut agg, &one, &[(1, &[3.0])]);
        assert_eq!(moments(&agg).1, [9.0]);
        let two = global(&[0.0, 0.0]);
        round(&mut agg, &two, &[(1, &[1.0, 1.0])]);
        assert_eq!(moments(&agg).1, [1.0, 1.0]);
        round(&mut agg, &one, &[(1, &[1.0])]);
        assert_eq!(moments(&agg).1, [1.0]);
    }

    #[test]
    fn zero_delta_keeps_the_model() {
        for kind in [FedOptKind::Adam, FedOptKind::Yogi, FedOptKind::Adagrad] {
            let mut agg = FedOpt::new(kind, 1.0, 0.9, 0.99, 1e-3).unwrap();
            let g = global(&[0.5, -3.0]);
            let out = round(&mut agg, &g, &[(1, &[0.5, -3.0]), (4, &[0.5, -3.0])]);
            assert_eq!(out.as_flat(), g.as_flat(), "{kind:?}");
        }
    }
}
