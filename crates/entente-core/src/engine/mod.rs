//! The round engine: select sites, hand out the task, collect and validate updates,
//! aggregate, evaluate, record. Written once over the [`Site`] trait, so simulation and
//! network deployments run the same round logic.

pub mod selection;
pub mod site;
pub mod task;

use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::aggregators::{AggregateError, Aggregator};
use crate::metrics::EvalMetrics;
use crate::params::ParamSet;
use crate::update::{UpdatePolicy, validate};
pub use site::{Site, SiteError};
pub use task::{LocalOptimizer, LocalTraining, TrainTask};

/// Rules of every round.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRules {
    /// Number of rounds to run.
    pub rounds: u32,
    /// Fraction of sites sampled per round.
    pub fraction: f64,
    /// A round needs at least this many accepted updates.
    pub min_sites: usize,
    /// Run seed (selection and each site's batch order derive from it).
    pub seed: u64,
    /// Checks every update must pass.
    pub policy: UpdatePolicy,
    /// Local training settings handed to sites.
    pub training: LocalTraining,
}

/// Evaluates the global model on a held-out test set the coordinator holds (benchmarks).
pub trait Evaluator: Send + Sync {
    /// Metrics of `params` on the held-out set.
    fn evaluate(&self, params: &ParamSet) -> Result<EvalMetrics, String>;
}

/// Why a round could not complete.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Fewer updates were accepted than the quorum needs; the global model is unchanged.
    #[error(
        "round {round}: only {accepted} of {selected} selected sites returned a valid update, \
         the quorum (selection.min_sites) is {min_sites}"
    )]
    QuorumNotMet {
        /// Round number.
        round: u32,
        /// Sites selected.
        selected: usize,
        /// Valid updates received.
        accepted: usize,
        /// Required.
        min_sites: usize,
    },
    /// The aggregation rule failed.
    #[error("round {round}: aggregation failed: {source}")]
    Aggregate {
        /// Round number.
        round: u32,
        /// Cause.
        source: AggregateError,
    },
    /// Central evaluation failed.
    #[error("round {round}: evaluation failed: {reason}")]
    Evaluate {
        /// Round number.
        round: u32,
        /// Cause.
        reason: String,
    },
}

/// A site left out of a round, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Excluded {
    /// The site's name.
    pub site: String,
    /// Why its update was not used.
    pub reason: String,
}

/// What happened in one round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRecord {
    /// Round number, from 1.
    pub round: u32,
    /// Sites selected.
    pub selected: Vec<String>,
    /// Sites whose update was aggregated.
    pub accepted: Vec<String>,
    /// Sites that failed or whose update was rejected.
    pub excluded: Vec<Excluded>,
    /// Example-weighted mean training loss of accepted sites.
    pub train_loss: f64,
    /// The new global model on the coordinator's held-out test set, if one is configured.
    pub test: Option<EvalMetrics>,
    /// Example-weighted mean of every site's metrics on its own test split.
    pub federated: Option<EvalMetrics>,
    /// Wall-clock seconds of the round.
    pub seconds: f64,
}

/// Hooks for progress display and recording; every method has a no-op default.
pub trait RoundObserver {
    /// A round is about to start with these sites.
    fn round_started(&mut self, _round: u32, _sites: &[String]) {}
    /// A round completed.
    fn round_finished(&mut self, _record: &RoundRecord) {}
}

/// An observer that does nothing.
pub struct NoObserver;
impl RoundObserver for NoObserver {}

/// Drives rounds over a fixed set of sites.
pub struct RoundEngine {
    sites: Vec<Arc<dyn Site>>,
    aggregator: Box<dyn Aggregator>,
    evaluator: Option<Arc<dyn Evaluator>>,
    rules: RoundRules,
    global: Arc<ParamSet>,
}

impl RoundEngine {
    /// An engine starting from `initial` parameters.
    pub fn new(
        sites: Vec<Arc<dyn Site>>,
        aggregator: Box<dyn Aggregator>,
        evaluator: Option<Arc<dyn Evaluator>>,
        rules: RoundRules,
        initial: ParamSet,
    ) -> Self {
        Self {
            sites,
            aggregator,
            evaluator,
            rules,
            global: Arc::new(initial),
        }
    }

    /// The current global model.
    pub fn global(&self) -> &ParamSet {
        &self.global
    }

    /// Runs every round of the rules in order, reporting to `observer`.
    pub fn run(
        &mut self,
        observer: &mut dyn RoundObserver,
    ) -> Result<Vec<RoundRecord>, EngineError> {
        let mut records = Vec::with_capacity(self.rules.rounds as usize);
        for round in 1..=self.rules.rounds {
            records.push(self.run_round(round, observer)?);
        }
        Ok(records)
    }

    /// Runs one round. On error the global model is left as it was.
    pub fn run_round(
        &mut self,
        round: u32,
        observer: &mut dyn RoundObserver,
    ) -> Result<RoundRecord, EngineError> {
        let started = Instant::now();
        let rules = &self.rules;
        let chosen = selection::select(
            self.sites.len(),
            rules.fraction,
            rules.min_sites,
            rules.seed,
            round,
        );
        let selected: Vec<String> = chosen
            .iter()
            .map(|&i| self.sites[i].name().to_string())
            .collect();
        observer.round_started(round, &selected);

        // Sites train in parallel; results are consumed in selection order, so the aggregate
        // does not depend on which finished first or on the number of threads.
        let results: Vec<_> = chosen
            .par_iter()
            .map(|&i| {
                let task = TrainTask {
                    round,
                    global: Arc::clone(&self.global),
                    training: rules.training.clone(),
                    seed: selection::derive_seed(rules.seed, round, 1 + i as u64),
                };
                self.sites[i].train(&task)
            })
            .collect();

        self.aggregator.begin(&self.global);
        let (mut accepted, mut excluded) = (Vec::new(), Vec::new());
        let (mut loss_sum, mut weight_sum) = (0.0, 0.0);
        // Every outcome is recorded under the name of the site that was called, whatever
        // name the update or error carries.
        for (site, result) in selected.iter().zip(results) {
            let outcome = result.map_err(|e| e.reason).and_then(|u| {
                if u.site != *site {
                    return Err(format!("the update claims to come from site `{}`", u.site));
                }
                validate(&self.global, u, &rules.policy).map_err(|e| e.problem.to_string())
            });
            match outcome {
                Ok(valid) => {
                    let weight = valid.num_examples as f64;
                    loss_sum += valid.train_loss * weight;
                    weight_sum += weight;
                    self.aggregator
                        .add(valid)
                        .map_err(|source| EngineError::Aggregate { round, source })?;
                    accepted.push(site.clone());
                }
                Err(reason) => {
                    tracing::warn!(round, site = %site, %reason, "update excluded");
                    excluded.push(Excluded {
                        site: site.clone(),
                        reason,
                    });
                }
            }
        }
        if accepted.len() < rules.min_sites {
            return Err(EngineError::QuorumNotMet {
                round,
                selected: selected.len(),
                accepted: accepted.len(),
                min_sites: rules.min_sites,
            });
        }
        let next = self
            .aggregator
            .finish()
            .map_err(|source| EngineError::Aggregate { round, source })?;
        self.global = Arc::new(next);

        let test = match &self.evaluator {
            Some(e) => Some(
                e.evaluate(&self.global)
                    .map_err(|reason| EngineError::Evaluate { round, reason })?,
            ),
            None => None,
        };
        let site_metrics: Vec<EvalMetrics> = self
            .sites
            .par_iter()
            .filter_map(|s| s.evaluate(&self.global).ok())
            .collect();
        let record = RoundRecord {
            round,
            selected,
            accepted,
            excluded,
            train_loss: if weight_sum > 0.0 {
                loss_sum / weight_sum
            } else {
                f64::NAN
            },
            test,
            federated: EvalMetrics::weighted_mean(&site_metrics),
            seconds: started.elapsed().as_secs_f64(),
        };
        observer.round_finished(&record);
        Ok(record)
    }
}
