//! Aggregation rules: how validated site updates become the next global model.
//!
//! Every rule implements [`Aggregator`]: [`Aggregator::begin`] with the current global model,
//! [`Aggregator::add`] once per validated update (in a fixed site order, so results are
//! deterministic), then [`Aggregator::finish`]. FedAvg streams (one running sum, O(model)
//! memory); the robust rules must see every update and buffer them.
//!
//! [`build`] turns a manifest [`Strategy`] into the matching rule.

mod fedavg;
mod fedavgm;
mod fedopt;
mod krum;
mod median;
pub mod scaffold;
mod trimmed_mean;

pub use fedavg::FedAvg;
pub use fedavgm::FedAvgM;
pub use fedopt::FedOpt;
pub use krum::Krum;
pub use median::Median;
pub use scaffold::Scaffold;
pub use trimmed_mean::TrimmedMean;

use std::sync::Arc;

use crate::params::ParamSet;
use crate::update::ValidUpdate;

/// Why aggregation could not produce a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregateError {
    /// `finish` was called with no update added.
    #[error("no update to aggregate")]
    NoUpdates,
    /// The rule needs more updates than it got (for example Krum with f faulty sites needs
    /// more than 2f + 2).
    #[error("{rule} needs at least {needed} updates, got {got}")]
    TooFewUpdates {
        /// Name of the rule.
        rule: &'static str,
        /// Minimum number of updates.
        needed: usize,
        /// Updates received.
        got: usize,
    },
    /// An update does not share the global model's layout.
    #[error("update from site `{0}` does not match the global model's layout")]
    LayoutMismatch(String),
    /// `add` or `finish` was called before `begin`.
    #[error("aggregator used before begin()")]
    NotStarted,
    /// A strategy parameter is out of range (for example a trim fraction of 0.5 or more).
    #[error("invalid {rule} configuration: {reason}")]
    InvalidConfig {
        /// Name of the rule.
        rule: &'static str,
        /// What is wrong with its parameters.
        reason: String,
    },
}

/// A rule that combines validated updates into the next global model.
pub trait Aggregator: Send {
    /// Short name used in logs and run records, for example `fedavg`.
    fn name(&self) -> &'static str;
    /// Starts a round on top of the current global model.
    fn begin(&mut self, global: &ParamSet);
    /// Adds one validated update.
    fn add(&mut self, update: ValidUpdate) -> Result<(), AggregateError>;
    /// Produces the next global model and resets the round state (server optimizer state,
    /// such as FedAdam's moments, carries over to the next round).
    fn finish(&mut self) -> Result<ParamSet, AggregateError>;
    /// Server optimizer state that carries over between rounds (FedAvgM's momentum, FedAdam's
    /// moments) as one parameter set, for checkpoints; `None` when the rule keeps none.
    fn state(&self) -> Option<ParamSet> {
        None
    }
    /// What the sites are sent to train from this round, once [`Aggregator::begin`] has
    /// started it: the global model, or for SCAFFOLD the model and the server control
    /// variate ([`scaffold::with_control`]). Updates come back in this layout.
    fn task_model(&self, global: &Arc<ParamSet>) -> Arc<ParamSet> {
        Arc::clone(global)
    }
    /// Restores state saved by [`Aggregator::state`] when a run resumes from a checkpoint.
    fn restore(&mut self, state: &ParamSet) -> Result<(), AggregateError> {
        let _ = state;
        Err(AggregateError::InvalidConfig {
            rule: self.name(),
            reason: "this rule keeps no server state to restore".into(),
        })
    }
}

/// Packs named buffers (each in the global layout) into one parameter set whose tensors are
/// called `PART.TENSOR`.
pub(crate) fn pack_state(parts: &[(&str, &ParamSet)]) -> Option<ParamSet> {
    ParamSet::from_tensors(parts.iter().flat_map(|(part, buffer)| {
        buffer.iter().map(move |(spec, values)| {
            (
                format!("{part}.{}", spec.name),
                spec.shape.clone(),
                values.to_vec(),
            )
        })
    }))
    .ok()
}

/// The buffer called `part` in a state packed by [`pack_state`].
pub(crate) fn unpack_state(
    rule: &'static str,
    state: &ParamSet,
    part: &str,
) -> Result<ParamSet, AggregateError> {
    let prefix = format!("{part}.");
    let tensors: Vec<_> = state
        .iter()
        .filter_map(|(spec, values)| {
            spec.name
                .strip_prefix(&prefix)
                .map(|name| (name.to_string(), spec.shape.clone(), values.to_vec()))
        })
        .collect();
    if tensors.is_empty() {
        return Err(AggregateError::InvalidConfig {
            rule,
            reason: format!("the saved server state has no `{part}` buffer"),
        });
    }
    ParamSet::from_tensors(tensors).map_err(|e| AggregateError::InvalidConfig {
        rule,
        reason: format!("the saved server state is malformed: {e}"),
    })
}

/// An aggregation rule and its parameters, as chosen in the manifest's `[strategy]` table.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    /// Weighted average by example count (McMahan et al. 2017).
    FedAvg,
    /// FedAvg with server momentum (Hsu et al. 2019).
    FedAvgM {
        /// Server learning rate.
        server_learning_rate: f64,
        /// Momentum coefficient.
        momentum: f64,
    },
    /// Adaptive server optimizer (Reddi et al., ICLR 2021).
    FedOpt {
        /// Which adaptive rule.
        kind: FedOptKind,
        /// Server learning rate (eta).
        server_learning_rate: f64,
        /// First-moment decay (beta1).
        beta1: f64,
        /// Second-moment decay (beta2; unused by Adagrad).
        beta2: f64,
        /// Adaptivity (tau).
        tau: f64,
    },
    /// Coordinate-wise median.
    Median,
    /// Coordinate-wise trimmed mean.
    TrimmedMean {
        /// Fraction of values dropped at each end, in [0, 0.5).
        trim_fraction: f64,
    },
    /// Krum (Blanchard et al. 2017); `select` > 1 gives Multi-Krum.
    Krum {
        /// Assumed number of faulty sites.
        faulty: usize,
        /// Number of updates averaged (1 = Krum).
        select: usize,
    },
    /// SCAFFOLD (Karimireddy et al., ICML 2020): FedAvg with control variates.
    Scaffold {
        /// Server learning rate (eta_g).
        server_learning_rate: f64,
        /// Number of sites in the federation (N).
        population: usize,
    },
}

/// The adaptive server optimizers of Reddi et al.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FedOptKind {
    /// FedAdam.
    Adam,
    /// FedYogi.
    Yogi,
    /// FedAdagrad.
    Adagrad,
}

impl Strategy {
    /// Checks the strategy's parameters without keeping the aggregator.
    pub fn validate(&self) -> Result<(), AggregateError> {
        build(self).map(drop)
    }
}

/// Builds the aggregator for `strategy`, or says which parameter is out of range.
pub fn build(strategy: &Strategy) -> Result<Box<dyn Aggregator>, AggregateError> {
    Ok(match *strategy {
        Strategy::FedAvg => Box::new(FedAvg::new()),
        Strategy::FedAvgM {
            server_learning_rate,
            momentum,
        } => Box::new(FedAvgM::new(server_learning_rate, momentum)?),
        Strategy::FedOpt {
            kind,
            server_learning_rate,
            beta1,
            beta2,
            tau,
        } => Box::new(FedOpt::new(kind, server_learning_rate, beta1, beta2, tau)?),
        Strategy::Median => Box::new(Median::new()),
        Strategy::TrimmedMean { trim_fraction } => Box::new(TrimmedMean::new(trim_fraction)?),
        Strategy::Krum { faulty, select } => Box::new(Krum::new(faulty, select)?),
        Strategy::Scaffold {
            server_learning_rate,
            population,
        } => Box::new(Scaffold::new(server_learning_rate, population)?),
    })
}

/// Returns an [`AggregateError::InvalidConfig`] for `rule` unless `ok`.
pub(crate) fn ensure(
    ok: bool,
    rule: &'static str,
    reason: impl FnOnce() -> String,
) -> Result<(), AggregateError> {
    if ok {
        Ok(())
    } else {
        Err(AggregateError::InvalidConfig {
            rule,
            reason: reason(),
        })
    }
}

/// The updates of one round, kept whole for the rules that must see all of them at once.
#[derive(Debug, Default)]
pub(crate) struct RoundBuffer {
    /// Copy of the global model taken at `begin`; its buffer becomes the output.
    global: Option<ParamSet>,
    /// Flat values of every update added so far, in insertion order.
    updates: Vec<Vec<f32>>,
}

impl RoundBuffer {
    /// Starts a round, discarding anything left from an unfinished one.
    pub(crate) fn begin(&mut self, global: &ParamSet) {
        self.global = Some(global.clone());
        self.updates.clear();
    }

    /// Keeps `update`'s values after checking its layout against the global model.
    pub(crate) fn add(&mut self, update: ValidUpdate) -> Result<(), AggregateError> {
        let global = self.global.as_ref().ok_or(AggregateError::NotStarted)?;
        if !global.same_layout(&update.params) {
            return Err(AggregateError::LayoutMismatch(update.site));
        }
        self.updates.push(update.params.into_flat());
        Ok(())
    }

    /// Ends the round: the global model (to overwrite with the result) and the updates.
    pub(crate) fn take(&mut self) -> Result<(ParamSet, Vec<Vec<f32>>), AggregateError> {
        let global = self.global.take().ok_or(AggregateError::NotStarted)?;
        let updates = std::mem::take(&mut self.updates);
        if updates.is_empty() {
            return Err(AggregateError::NoUpdates);
        }
        Ok((global, updates))
    }
}

/// Fills `out[j]` with `rule` applied to coordinate `j` of every update, in parallel blocks.
///
/// `rule` gets the values of one coordinate (one per update, in insertion order, free to be
/// reordered) and returns the aggregate. Each coordinate is computed on its own, so the result
/// does not depend on the number of threads.
pub(crate) fn coordinate_wise<F>(out: &mut [f32], updates: &[Vec<f32>], rule: F)
where
    F: Fn(&mut [f32]) -> f32 + Sync,
{
    use rayon::prelude::*;
    const BLOCK: usize = 4096;
    out.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(block, chunk)| {
            let start = block * BLOCK;
            let mut column = vec![0.0f32; updates.len()];
            for (offset, slot) in chunk.iter_mut().enumerate() {
                let j = start + offset;
                for (value, update) in column.iter_mut().zip(updates) {
                    *value = update.get(j).copied().unwrap_or(0.0);
                }
                *slot = rule(&mut column);
            }
        });
}

/// Helpers shared by the aggregator tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use crate::params::ParamSet;
    use crate::update::ValidUpdate;

    /// A global model with one tensor `w` holding `values`.
    pub(crate) fn global(values: &[f32]) -> ParamSet {
        ParamSet::from_tensors([("w".to_string(), vec![values.len()], values.to_vec())]).unwrap()
    }

    /// A validated update in `global`'s layout.
    pub(crate) fn update(
        global: &ParamSet,
        site: &str,
        num_examples: u64,
        values: &[f32],
    ) -> ValidUpdate {
        let params = ParamSet::from_flat(Arc::clone(global.layout()), values.to_vec()).unwrap();
        let update_norm = params.l2_distance(global);
        ValidUpdate {
            site: site.to_string(),
            num_examples,
            params,
            update_norm,
            train_loss: 0.0,
        }
    }

    /// Asserts that two slices agree within `tol`, relative to the larger magnitude (at least 1).
    pub(crate) fn assert_close(got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "length differs: {got:?} vs {want:?}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let scale = w.abs().max(f64::from(*g).abs()).max(1.0);
            assert!(
                (f64::from(*g) - w).abs() <= tol * scale,
                "index {i}: got {g}, want {w} (all: {got:?} vs {want:?})"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{global, update};
    use super::*;

    fn all_strategies() -> Vec<Strategy> {
        let fedopt = |kind| Strategy::FedOpt {
            kind,
            server_learning_rate: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        };
        vec![
            Strategy::FedAvg,
            Strategy::FedAvgM {
                server_learning_rate: 1.0,
                momentum: 0.9,
            },
            fedopt(FedOptKind::Adam),
            fedopt(FedOptKind::Yogi),
            fedopt(FedOptKind::Adagrad),
            Strategy::Median,
            Strategy::TrimmedMean { trim_fraction: 0.2 },
            Strategy::Krum {
                faulty: 0,
                select: 1,
            },
            Strategy::Krum {
                faulty: 0,
                select: 2,
            },
        ]
    }

    /// Round 2 after restoring round 1's saved state into a fresh aggregator gives exactly
    /// what the aggregator that never stopped gives.
    #[test]
    fn saved_state_resumes_exactly() {
        let round = |agg: &mut dyn Aggregator, g: &ParamSet, a: f32| {
            agg.begin(g);
            agg.add(update(g, "a", 3, &[a, 1.0, -2.0])).unwrap();
            agg.add(update(g, "b", 1, &[0.5, a, 2.0])).unwrap();
            agg.add(update(g, "c", 2, &[1.5, 0.0, a])).unwrap();
            agg.finish().unwrap()
        };
        for strategy in all_strategies() {
            let mut running = build(&strategy).unwrap();
            let g1 = round(running.as_mut(), &global(&[0.0, 0.0, 0.0]), 1.0);
            let saved = running.state();
            let g2 = round(running.as_mut(), &g1, 3.0);
            let mut fresh = build(&strategy).unwrap();
            if let Some(state) = &saved {
                let bytes = state.to_safetensors().unwrap();
                fresh
                    .restore(&ParamSet::from_safetensors(&bytes).unwrap())
                    .unwrap();
            } else {
                assert!(fresh.restore(&global(&[1.0])).is_err(), "{strategy:?}");
            }
            let resumed = round(fresh.as_mut(), &g1, 3.0);
            assert_eq!(resumed.as_flat(), g2.as_flat(), "{strategy:?}");
        }
        // The stateful rules do keep state (a test that would pass with none at all is useless).
        assert!(build(&all_strategies()[1]).unwrap().state().is_none());
        let mut m = build(&all_strategies()[1]).unwrap();
        round(m.as_mut(), &global(&[0.0, 0.0, 0.0]), 1.0);
        assert!(m.state().is_some());
    }

    #[test]
    fn build_picks_the_named_rule() {
        let names: Vec<_> = all_strategies()
            .iter()
            .map(|s| build(s).unwrap().name())
            .collect();
        assert_eq!(
            names,
            [
                "fedavg",
                "fedavgm",
                "fedadam",
                "fedyogi",
                "fedadagrad",
                "median",
                "trimmed_mean",
                "krum",
                "multi_krum"
            ]
        );
    }

    #[test]
    fn every_rule_reports_misuse() {
        let g = global(&[0.0, 0.0]);
        let other = ParamSet::from_tensors([("v".to_string(), vec![2], vec![1.0, 1.0])]).unwrap();
        for strategy in all_strategies() {
            let mut agg = build(&strategy).unwrap();
            assert_eq!(
                agg.finish(),
                Err(AggregateError::NotStarted),
                "{strategy:?}"
            );
            assert_eq!(
                agg.add(update(&g, "a", 1, &[1.0, 1.0])),
                Err(AggregateError::NotStarted),
                "{strategy:?}"
            );
            agg.begin(&g);
            assert_eq!(agg.finish(), Err(AggregateError::NoUpdates), "{strategy:?}");
            // finish ended the round, so the aggregator needs a new begin.
            assert_eq!(
                agg.finish(),
                Err(AggregateError::NotStarted),
                "{strategy:?}"
            );
            agg.begin(&g);
            let mismatched = ValidUpdate {
                site: "b".into(),
                num_examples: 1,
                params: other.clone(),
                update_norm: 0.0,
                train_loss: 0.0,
            };
            assert_eq!(
                agg.add(mismatched),
                Err(AggregateError::LayoutMismatch("b".into())),
                "{strategy:?}"
            );
            // A rejected update is not counted, and the round goes on.
            for site in ["c", "d", "e"] {
                agg.add(update(&g, site, 1, &[1.0, 2.0])).unwrap();
            }
            let out = agg.finish().unwrap();
            assert!(out.same_layout(&g), "{strategy:?}");
        }
    }

    #[test]
    fn invalid_parameters_are_reported_not_panicked() {
        let bad = [
            Strategy::TrimmedMean { trim_fraction: 0.5 },
            Strategy::TrimmedMean {
                trim_fraction: -0.1,
            },
            Strategy::TrimmedMean {
                trim_fraction: f64::NAN,
            },
            Strategy::Krum {
                faulty: 1,
                select: 0,
            },
            Strategy::FedAvgM {
                server_learning_rate: 0.0,
                momentum: 0.9,
            },
            Strategy::FedAvgM {
                server_learning_rate: 1.0,
                momentum: 1.0,
            },
            Strategy::FedOpt {
                kind: FedOptKind::Adam,
                server_learning_rate: 0.1,
                beta1: 0.9,
                beta2: 0.99,
                tau: 0.0,
            },
            Strategy::FedOpt {
                kind: FedOptKind::Yogi,
                server_learning_rate: 0.1,
                beta1: 1.0,
                beta2: 0.99,
                tau: 1e-3,
            },
            Strategy::FedOpt {
                kind: FedOptKind::Adam,
                server_learning_rate: 0.1,
                beta1: 0.9,
                beta2: 1.5,
                tau: 1e-3,
            },
        ];
        for strategy in bad {
            let err = strategy.validate().unwrap_err();
            assert!(
                matches!(err, AggregateError::InvalidConfig { .. }),
                "{strategy:?}"
            );
            assert_eq!(build(&strategy).err(), Some(err), "{strategy:?}");
        }
        // Adagrad ignores beta2, so any value is accepted there.
        let adagrad = Strategy::FedOpt {
            kind: FedOptKind::Adagrad,
            server_learning_rate: 0.1,
            beta1: 0.9,
            beta2: 7.0,
            tau: 1e-3,
        };
        assert_eq!(adagrad.validate(), Ok(()));
        for strategy in all_strategies() {
            assert_eq!(strategy.validate(), Ok(()), "{strategy:?}");
        }
    }
}
