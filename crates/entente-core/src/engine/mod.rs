//! The round engine: select sites, hand out the task, collect and validate updates,
//! aggregate, evaluate, record. Written once over the [`Site`] trait, so simulation and
//! network deployments run the same round logic.

pub mod dispatch;
pub mod error;
pub mod secure;
pub mod selection;
pub mod site;
pub mod task;
pub mod turn;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::aggregators::{AggregateError, Aggregator};
use crate::metrics::EvalMetrics;
use crate::params::ParamSet;
use crate::seeds::{self, Stream};
use crate::update::{SiteUpdate, UpdatePolicy, ValidUpdate, check_claims, validate};
pub use dispatch::Dispatch;
pub use error::{ErrorKind, Failure, Source, UnknownKind};
pub use secure::{Envelope, SecureAggregation, SecureError, SecureResult};
pub use site::{Site, SiteError};
pub use task::{DpSgd, LocalOptimizer, LocalTraining, TrainTask, dp_sgd_sampling};
pub use turn::{FoldGate, Turn, Within};

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
    /// Whether every site evaluates each new model on its own test split. Off under a privacy
    /// budget: those metrics would be a release about the site's records that no budget covers.
    pub federated_evaluation: bool,
}

/// Evaluates the global model on a held-out test set the coordinator holds (benchmarks).
pub trait Evaluator: Send + Sync {
    /// Metrics of `params` on the held-out set.
    fn evaluate(&self, params: &ParamSet) -> Result<EvalMetrics, Failure>;
}

/// Why a round could not complete.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Fewer updates were accepted than the quorum needs; the global model is unchanged.
    #[error(
        "round {round}: only {accepted} of {selected} selected sites returned a valid update, \
         the quorum (selection.min_sites) is {min_sites}{}",
        excluded.iter().map(|e| format!("\n  {} ({}): {}", e.site, e.kind, e.reason)).collect::<String>()
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
        /// The sites left out, and why.
        excluded: Vec<Excluded>,
    },
    /// The aggregation rule failed.
    #[error("round {round}: aggregation failed: {source}")]
    Aggregate {
        /// Round number.
        round: u32,
        /// Cause.
        source: AggregateError,
    },
    /// Secure aggregation aborted (for example, fewer sites than its threshold remained);
    /// no partial sum was released and the global model is unchanged.
    #[error("round {round}: secure aggregation aborted ({}): {}", failure.kind, failure.reason())]
    SecureAggregation {
        /// Round number.
        round: u32,
        /// Why, with its kind (named `failure`, not `source`: the message already holds its
        /// causes, so an error chain tells them once).
        failure: SecureError,
    },
    /// The round's result could not be recorded; the run stops before the next round.
    #[error("round {round}: could not record the round ({}): {}", failure.kind, failure.reason())]
    Commit {
        /// Round number.
        round: u32,
        /// Cause, with its kind (held, not a `source`: the message holds its causes).
        failure: Failure,
    },
    /// Central evaluation failed.
    #[error("round {round}: evaluation failed ({}): {}", failure.kind, failure.reason())]
    Evaluate {
        /// Round number.
        round: u32,
        /// Cause, with its kind (held, not a `source`: the message holds its causes).
        failure: Failure,
    },
}

/// A site left out of a round, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Excluded {
    /// The site's name.
    pub site: String,
    /// Why its update was not used.
    pub reason: String,
    /// Which kind of failure left it out.
    pub kind: ErrorKind,
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
    /// Training examples each accepted site declared, in the order of `accepted`.
    pub accepted_examples: Vec<u64>,
    /// Mean training loss each accepted site reported, in the order of `accepted`.
    pub accepted_losses: Vec<f64>,
    /// Sites that failed or whose update was rejected.
    pub excluded: Vec<Excluded>,
    /// The secure-aggregation protocol that combined the updates (`secagg`, `secagg+`), if
    /// one did: then the coordinator saw only the sum.
    pub secure_aggregation: Option<&'static str>,
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
    /// A round's result is final: record it durably (a checkpoint of `global` and of the
    /// aggregator's server state, [`Aggregator::state`], asked for only by an observer that
    /// keeps it) before the next round starts. An error stops the run; the round was not
    /// committed, so a resumed run repeats it.
    fn commit(
        &mut self,
        _record: &RoundRecord,
        _global: &ParamSet,
        _aggregator: &dyn Aggregator,
    ) -> Result<(), Failure> {
        Ok(())
    }
    /// A round completed.
    fn round_finished(&mut self, _record: &RoundRecord) {}
}

/// An observer that does nothing.
pub struct NoObserver;
impl RoundObserver for NoObserver {}

/// Sites accepted and excluded in a round, with their example counts and losses.
#[derive(Default)]
struct Tally {
    accepted: Vec<String>,
    examples: Vec<u64>,
    losses: Vec<f64>,
    excluded: Vec<Excluded>,
}

impl Tally {
    fn accept(&mut self, site: &str, examples: u64, loss: f64) {
        self.accepted.push(site.to_string());
        self.examples.push(examples);
        self.losses.push(loss);
    }

    fn exclude(&mut self, round: u32, site: &str, kind: ErrorKind, reason: String) {
        tracing::warn!(round, site = %site, %kind, %reason, "update excluded");
        self.excluded.push(Excluded {
            site: site.to_string(),
            reason,
            kind,
        });
    }

    fn entries(&self) -> impl Iterator<Item = (&str, u64, f64)> {
        self.accepted
            .iter()
            .zip(&self.examples)
            .zip(&self.losses)
            .map(|((s, e), l)| (s.as_str(), *e, *l))
    }

    /// Example-weighted mean loss of the accepted sites (NaN when none).
    fn mean_loss(&self) -> f64 {
        let total: f64 = self.examples.iter().map(|&e| e as f64).sum();
        let weighted: f64 = self.entries().map(|(_, e, l)| e as f64 * l).sum();
        if total > 0.0 {
            weighted / total
        } else {
            f64::NAN
        }
    }
}

/// Why a site's update is left out: the kind, and the reason in words.
type Rejection = (ErrorKind, String);

/// A site's own error, as a rejection.
fn rejection(e: SiteError) -> Rejection {
    (e.kind, e.reason())
}

/// An update that failed the coordinator's checks, as a rejection.
fn malformed(reason: impl ToString) -> Rejection {
    (ErrorKind::MalformedReply, reason.to_string())
}

/// An update or error must come under the name of the site that was called.
fn check_sender(site: &str, update: &SiteUpdate) -> Result<(), Rejection> {
    if update.site == site {
        Ok(())
    } else {
        Err(malformed(format!(
            "the update claims to come from site `{}`",
            update.site
        )))
    }
}

/// Validates one plain update and feeds it to the aggregator if it is valid. The outcome is
/// recorded under the name of the site that was called, whatever name the update or error
/// carries.
fn fold_plain(
    aggregator: &mut dyn Aggregator,
    global: &ParamSet,
    policy: &UpdatePolicy,
    round: u32,
    site: &str,
    result: Result<SiteUpdate, SiteError>,
    tally: &mut Tally,
) -> Result<(), EngineError> {
    let outcome = result.map_err(rejection).and_then(|u| {
        check_sender(site, &u)?;
        validate(global, u, policy).map_err(|e| malformed(e.problem))
    });
    match outcome {
        Ok(valid) => {
            tally.accept(site, valid.num_examples, valid.train_loss);
            aggregator
                .add(valid)
                .map_err(|source| EngineError::Aggregate { round, source })
        }
        Err((kind, reason)) => {
            tally.exclude(round, site, kind, reason);
            Ok(())
        }
    }
}

/// Runs one call to `site`: a panic in it becomes an internal error of that site, so that one
/// broken site neither stops the round nor leaves the fold waiting for its update.
fn guarded<T>(site: &str, call: impl FnOnce() -> Result<T, SiteError>) -> Result<T, SiteError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(SiteError::internal(
            site,
            format!("the call to the site panicked: {what}"),
        ))
    })
}

/// Drives rounds over a fixed set of sites.
pub struct RoundEngine {
    sites: Vec<Arc<dyn Site>>,
    aggregator: Box<dyn Aggregator>,
    evaluator: Option<Arc<dyn Evaluator>>,
    secure: Option<Box<dyn SecureAggregation>>,
    rules: RoundRules,
    global: Arc<ParamSet>,
    dispatch: Dispatch,
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
            secure: None,
            rules,
            global: Arc::new(initial),
            dispatch: Dispatch::default(),
        }
    }

    /// Runs the calls to sites as `dispatch` says (by default on the rayon pool).
    pub fn with_dispatch(mut self, dispatch: Dispatch) -> Self {
        self.dispatch = dispatch;
        self
    }

    /// Aggregates through `protocol`: the coordinator learns only the weighted mean of the
    /// sites' updates. The aggregator then sees that mean as a single update, so only rules
    /// that work on a mean (FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad) make sense.
    pub fn with_secure_aggregation(mut self, protocol: Box<dyn SecureAggregation>) -> Self {
        self.secure = Some(protocol);
        self
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
        self.run_from(1, observer)
    }

    /// Runs rounds `first..=rules.rounds`: a resumed run starts after its last committed round.
    /// Selection and every site's seed depend only on the run seed and the round number, so a
    /// resumed run repeats exactly what an uninterrupted one would have done.
    pub fn run_from(
        &mut self,
        first: u32,
        observer: &mut dyn RoundObserver,
    ) -> Result<Vec<RoundRecord>, EngineError> {
        let mut records = Vec::new();
        for round in first.max(1)..=self.rules.rounds {
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
        let rules = self.rules.clone();
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

        self.aggregator.begin(&self.global);
        // What the sites train from (for SCAFFOLD, the model and the server's control
        // variate); their updates are checked against it.
        let global = self.aggregator.task_model(&self.global);
        let task = |position: usize, i: usize, turn: Option<&Arc<FoldGate>>| TrainTask {
            round,
            global: Arc::clone(&global),
            training: rules.training.clone(),
            seed: seeds::derive(rules.seed, round, Stream::Training { site: i as u32 }),
            turn: turn.map(|g| Turn::new(Arc::clone(g), position)),
        };
        let mut tally = Tally::default();
        if self.secure.is_some() {
            // Taken in turn like plain updates, though an honest site sends only its count and
            // loss: one that sends parameters is refused at once, and they are not kept.
            let gate = FoldGate::new();
            let mut results = Vec::with_capacity(chosen.len());
            self.dispatch.fold_in_order(
                &chosen,
                &gate,
                |position, &i| {
                    let site = &self.sites[i];
                    guarded(site.name(), || site.train(&task(position, i, Some(&gate))))
                },
                |position, result: Result<SiteUpdate, SiteError>| {
                    results.push(result.and_then(|u| {
                        if u.params.num_values() == 0 {
                            Ok(u)
                        } else {
                            Err(SiteError::new(
                                selected[position].clone(),
                                ErrorKind::MalformedReply,
                                "sent its update in the clear under secure aggregation; the \
                                 coordinator does not use it",
                            ))
                        }
                    }));
                },
            );
            self.collect_secure(round, &chosen, &selected, results, &mut tally)?;
        } else {
            // Sites train in parallel; their updates are folded in selection order as they
            // arrive, so the aggregate does not depend on which finished first or on the
            // number of threads.
            let gate = FoldGate::new();
            let (sites, aggregator, policy) = (&self.sites, &mut self.aggregator, &rules.policy);
            let mut outcome = Ok(());
            self.dispatch.fold_in_order(
                &chosen,
                &gate,
                |position, &i| {
                    let site = &sites[i];
                    guarded(site.name(), || site.train(&task(position, i, Some(&gate))))
                },
                |position, result| {
                    if outcome.is_ok() {
                        outcome = fold_plain(
                            aggregator.as_mut(),
                            &global,
                            policy,
                            round,
                            &selected[position],
                            result,
                            &mut tally,
                        );
                    }
                },
            );
            outcome?;
        }
        if tally.accepted.len() < rules.min_sites {
            return Err(EngineError::QuorumNotMet {
                round,
                selected: selected.len(),
                accepted: tally.accepted.len(),
                min_sites: rules.min_sites,
                excluded: tally.excluded,
            });
        }
        let next = self
            .aggregator
            .finish()
            .map_err(|source| EngineError::Aggregate { round, source })?;
        // The new model becomes the global one only once the round is committed, so a round
        // that fails from here on is not half applied.
        let next = Arc::new(next);

        let test = match &self.evaluator {
            Some(e) => Some(
                e.evaluate(&next)
                    .map_err(|failure| EngineError::Evaluate { round, failure })?,
            ),
            None => None,
        };
        let site_metrics: Vec<EvalMetrics> = if self.rules.federated_evaluation {
            self.dispatch
                .map(&self.sites, |_, s| {
                    guarded(s.name(), || s.evaluate(&next)).ok()
                })
                .into_iter()
                .flatten()
                .collect()
        } else {
            Vec::new()
        };
        let train_loss = tally.mean_loss();
        let record = RoundRecord {
            round,
            selected,
            accepted: tally.accepted,
            accepted_examples: tally.examples,
            accepted_losses: tally.losses,
            excluded: tally.excluded,
            secure_aggregation: self.secure.as_ref().map(|s| s.name()),
            train_loss,
            test,
            federated: EvalMetrics::weighted_mean(&site_metrics),
            seconds: started.elapsed().as_secs_f64(),
        };
        observer
            .commit(&record, &next, self.aggregator.as_ref())
            .map_err(|failure| EngineError::Commit { round, failure })?;
        self.global = next;
        observer.round_finished(&record);
        Ok(record)
    }

    /// Runs the secure-aggregation phases with the sites that trained, then feeds the
    /// unmasked mean to the aggregator as one update. The coordinator never sees a single
    /// site's update: sites check their own update before masking it.
    fn collect_secure(
        &mut self,
        round: u32,
        chosen: &[usize],
        selected: &[String],
        results: Vec<Result<SiteUpdate, SiteError>>,
        tally: &mut Tally,
    ) -> Result<(), EngineError> {
        let mut trained = Tally::default();
        for (site, result) in selected.iter().zip(results) {
            let outcome = result.map_err(rejection).and_then(|u| {
                check_sender(site, &u)?;
                check_claims(&u, &self.rules.policy).map_err(malformed)?;
                Ok(u)
            });
            match outcome {
                Ok(u) => trained.accept(site, u.num_examples, u.train_loss),
                Err((kind, reason)) => tally.exclude(round, site, kind, reason),
            }
        }
        let by_name: HashMap<&str, &Arc<dyn Site>> = chosen
            .iter()
            .map(|&i| (self.sites[i].name(), &self.sites[i]))
            .collect();
        let failed = |failure: SecureError| EngineError::SecureAggregation { round, failure };
        let Some(secure) = self.secure.as_mut() else {
            return Ok(());
        };
        secure
            .begin(round, &trained.accepted, self.global.num_values())
            .map_err(failed)?;
        // Why each site that dropped out of a phase did: its record keeps the kind.
        let mut dropped: HashMap<String, Rejection> = HashMap::new();
        let dispatch = self.dispatch;
        while let Some(messages) = secure.next_messages().map_err(failed)? {
            // Replies are taken in their turn and received as they arrive: a masked input is as
            // large as the model, and the coordinator holds a few at a time, not one per site.
            let gate = FoldGate::new();
            dispatch.fold_in_order(
                &messages,
                &gate,
                |position, (name, message)| match by_name.get(name.as_str()) {
                    Some(site) => {
                        let turn = Turn::new(Arc::clone(&gate), position);
                        guarded(name, || site.secure_exchange(round, message, Some(&turn)))
                    }
                    None => Err(SiteError::internal(
                        name.clone(),
                        "the protocol addressed a site not selected this round",
                    )),
                },
                |position, reply| {
                    // A malformed or rejected reply counts as a dropout: one bad site must not
                    // stop the round for everyone (the protocol's own threshold decides).
                    let name = &messages[position].0;
                    let outcome = reply
                        .map_err(rejection)
                        .and_then(|r| secure.receive(name, r).map_err(|e| (e.kind, e.reason())));
                    if let Err((kind, reason)) = outcome {
                        tracing::warn!(round, site = %name, %kind, %reason, "dropped out of secure aggregation");
                        dropped.insert(name.clone(), (kind, reason));
                    }
                },
            );
        }
        let result = secure.finish().map_err(failed)?;
        for (site, examples, loss) in trained.entries() {
            if result.included.iter().any(|s| s == site) {
                tally.accept(site, examples, loss);
            } else {
                let (kind, reason) = match dropped.remove(site) {
                    Some((kind, why)) => (
                        kind,
                        format!("dropped out during secure aggregation: {why}"),
                    ),
                    None => (
                        ErrorKind::Internal,
                        "dropped out during secure aggregation".to_string(),
                    ),
                };
                tally.exclude(round, site, kind, reason);
            }
        }
        if tally.accepted.is_empty() {
            return Ok(());
        }
        let mut mean = (*self.global).clone();
        for (v, d) in mean.as_flat_mut().iter_mut().zip(&result.mean_delta) {
            *v += d;
        }
        let update_norm = mean.l2_distance(&self.global);
        self.aggregator
            .add(ValidUpdate {
                site: secure.name().to_string(),
                num_examples: result.total_examples,
                params: mean,
                update_norm,
                train_loss: tally.mean_loss(),
            })
            .map_err(|source| EngineError::Aggregate { round, source })
    }
}
