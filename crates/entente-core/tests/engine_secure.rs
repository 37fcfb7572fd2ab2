//! The round engine's secure-aggregation path, driven with a toy protocol whose messages are
//! plain numbers: it checks the routing, dropouts, aborts and the final model, not privacy
//! (that is `entente-privacy`'s job).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use entente_core::aggregators::{Strategy, build};
use entente_core::engine::{
    Dispatch, EngineError, Envelope, ErrorKind, LocalOptimizer, LocalTraining, NoObserver,
    RoundEngine, RoundRules, SecureAggregation, SecureError, SecureResult, Site, SiteError,
    TrainTask, Turn,
};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::{SiteUpdate, UpdatePolicy};

fn encode(values: &[f32]) -> Envelope {
    Envelope(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

fn decode(e: &Envelope) -> Vec<f32> {
    e.0.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A site that trains by adding `offset` and answers the toy protocol's single phase with
/// `[weight, weight * delta...]`.
struct ToySite {
    name: String,
    examples: u64,
    offset: f32,
    drops_out: bool,
    pending: Mutex<Option<Vec<f32>>>,
}

impl ToySite {
    fn honest(name: &str, examples: u64, offset: f32) -> Arc<dyn Site> {
        Arc::new(Self {
            name: name.into(),
            examples,
            offset,
            drops_out: false,
            pending: Mutex::new(None),
        })
    }

    fn dropping(name: &str, examples: u64, offset: f32) -> Arc<dyn Site> {
        Arc::new(Self {
            name: name.into(),
            examples,
            offset,
            drops_out: true,
            pending: Mutex::new(None),
        })
    }
}

impl Site for ToySite {
    fn name(&self) -> &str {
        &self.name
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let delta = vec![self.offset; task.global.num_values()];
        *self.pending.lock().unwrap() = Some(delta);
        // The coordinator gets no parameters in secure mode, only the count and loss.
        Ok(SiteUpdate {
            site: self.name.clone(),
            num_examples: self.examples,
            params: ParamSet::from_tensors(Vec::new()).unwrap(),
            train_loss: 1.0,
        })
    }

    fn evaluate(&self, _params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        Err(SiteError::refused(self.name.clone(), "no test split"))
    }

    fn secure_exchange(
        &self,
        _round: u32,
        _message: &Envelope,
        _turn: Option<&Turn>,
    ) -> Result<Envelope, SiteError> {
        if self.drops_out {
            return Err(SiteError::transport(self.name.clone(), "connection lost"));
        }
        let delta = self.pending.lock().unwrap().take().unwrap_or_default();
        let w = self.examples as f32;
        let mut out = vec![w];
        out.extend(delta.iter().map(|d| d * w));
        Ok(encode(&out))
    }
}

/// One phase: ask every site, sum what comes back; abort below `threshold` answers.
struct ToyProtocol {
    threshold: usize,
    asked: bool,
    sites: Vec<String>,
    answers: BTreeMap<String, Vec<f32>>,
}

impl SecureAggregation for ToyProtocol {
    fn name(&self) -> &'static str {
        "toy"
    }

    fn begin(&mut self, _round: u32, sites: &[String], _n: usize) -> Result<(), SecureError> {
        self.sites = sites.to_vec();
        self.asked = false;
        self.answers.clear();
        Ok(())
    }

    fn next_messages(&mut self) -> Result<Option<Vec<(String, Envelope)>>, SecureError> {
        if self.asked {
            return Ok(None);
        }
        self.asked = true;
        Ok(Some(
            self.sites
                .iter()
                .map(|s| (s.clone(), Envelope(Vec::new())))
                .collect(),
        ))
    }

    fn receive(&mut self, site: &str, reply: Envelope) -> Result<(), SecureError> {
        self.answers.insert(site.to_string(), decode(&reply));
        Ok(())
    }

    fn finish(&mut self) -> Result<SecureResult, SecureError> {
        if self.answers.len() < self.threshold {
            return Err(SecureError::internal(format!(
                "{} sites answered, the threshold is {}",
                self.answers.len(),
                self.threshold
            )));
        }
        let n = self.answers.values().next().map_or(0, |v| v.len() - 1);
        let mut sum = vec![0.0f32; n];
        let mut weight = 0.0f32;
        for v in self.answers.values() {
            weight += v[0];
            for (s, x) in sum.iter_mut().zip(&v[1..]) {
                *s += x;
            }
        }
        Ok(SecureResult {
            mean_delta: sum.iter().map(|s| s / weight).collect(),
            included: self.answers.keys().cloned().collect(),
            total_examples: weight as u64,
        })
    }
}

fn rules(min_sites: usize) -> RoundRules {
    RoundRules {
        rounds: 1,
        fraction: 1.0,
        min_sites,
        seed: 5,
        policy: UpdatePolicy::default(),
        training: LocalTraining {
            epochs: 1,
            batch_size: 1,
            learning_rate: 0.1,
            optimizer: LocalOptimizer::Sgd { momentum: 0.0 },
            fedprox_mu: 0.0,
            dp_sgd: None,
        },
        federated_evaluation: true,
    }
}

fn initial() -> ParamSet {
    ParamSet::from_tensors([("w".to_string(), vec![3], vec![1.0, 2.0, 3.0])]).unwrap()
}

fn toy(threshold: usize) -> ToyProtocol {
    ToyProtocol {
        threshold,
        asked: false,
        sites: Vec::new(),
        answers: BTreeMap::new(),
    }
}

fn engine(sites: Vec<Arc<dyn Site>>, threshold: usize, min_sites: usize) -> RoundEngine {
    RoundEngine::new(
        sites,
        build(&Strategy::FedAvg).unwrap(),
        None,
        rules(min_sites),
        initial(),
    )
    .with_secure_aggregation(Box::new(toy(threshold)))
}

#[test]
fn the_secure_path_yields_the_weighted_mean() {
    let mut e = engine(
        vec![ToySite::honest("a", 1, 4.0), ToySite::honest("b", 3, -4.0)],
        2,
        2,
    );
    let r = e.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(r.accepted, ["a", "b"]);
    // Mean delta (1*4 - 3*4) / 4 = -2.
    assert_eq!(e.global().as_flat(), &[-1.0, 0.0, 1.0]);
}

#[test]
fn a_site_that_drops_out_mid_protocol_is_excluded_and_the_round_completes() {
    let mut e = engine(
        vec![
            ToySite::honest("a", 1, 4.0),
            ToySite::dropping("gone", 100, 50.0),
            ToySite::honest("b", 3, -4.0),
        ],
        2,
        2,
    );
    let r = e.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(r.accepted, ["a", "b"]);
    assert_eq!(r.excluded.len(), 1);
    assert_eq!(r.excluded[0].site, "gone");
    // The kind of the failed exchange survives the protocol's dropout.
    assert_eq!(r.excluded[0].kind, ErrorKind::Transport);
    assert_eq!(
        r.excluded[0].reason,
        "dropped out during secure aggregation: connection lost"
    );
    assert_eq!(e.global().as_flat(), &[-1.0, 0.0, 1.0]);
}

#[test]
fn an_abort_below_threshold_is_an_error_and_changes_nothing() {
    let mut e = engine(
        vec![
            ToySite::honest("a", 1, 4.0),
            ToySite::dropping("x", 1, 0.0),
            ToySite::dropping("y", 1, 0.0),
        ],
        2,
        1,
    );
    let err = e.run_round(1, &mut NoObserver).unwrap_err();
    assert!(
        matches!(err, EngineError::SecureAggregation { round: 1, ref failure } if failure.message.contains("threshold")),
        "{err}"
    );
    assert_eq!(e.global().as_flat(), &[1.0, 2.0, 3.0]);
}

type Log = Arc<Mutex<Vec<String>>>;

/// A site that answers only in its turn, and notes when it does.
struct TurnTaking {
    inner: Arc<dyn Site>,
    log: Log,
}

impl Site for TurnTaking {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        self.inner.train(task)
    }

    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        self.inner.evaluate(params)
    }

    fn secure_exchange(
        &self,
        round: u32,
        message: &Envelope,
        turn: Option<&Turn>,
    ) -> Result<Envelope, SiteError> {
        turn.expect("the engine gives every secure reply a turn")
            .wait();
        self.log
            .lock()
            .unwrap()
            .push(format!("{} answers", self.name()));
        self.inner.secure_exchange(round, message, None)
    }
}

/// The toy protocol, noting every reply it receives.
struct Noted {
    inner: ToyProtocol,
    log: Log,
}

impl SecureAggregation for Noted {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn begin(&mut self, round: u32, sites: &[String], n: usize) -> Result<(), SecureError> {
        self.inner.begin(round, sites, n)
    }

    fn next_messages(&mut self) -> Result<Option<Vec<(String, Envelope)>>, SecureError> {
        self.inner.next_messages()
    }

    fn receive(&mut self, site: &str, reply: Envelope) -> Result<(), SecureError> {
        self.log.lock().unwrap().push(format!("{site} received"));
        self.inner.receive(site, reply)
    }

    fn finish(&mut self) -> Result<SecureResult, SecureError> {
        self.inner.finish()
    }
}

#[test]
fn secure_replies_are_received_one_by_one_in_their_turn() {
    let log: Log = Arc::default();
    let sites: Vec<Arc<dyn Site>> = [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", -1.0)]
        .into_iter()
        .map(|(name, offset)| {
            Arc::new(TurnTaking {
                inner: ToySite::honest(name, 1, offset),
                log: Arc::clone(&log),
            }) as Arc<dyn Site>
        })
        .collect();
    let mut e = RoundEngine::new(
        sites,
        build(&Strategy::FedAvg).unwrap(),
        None,
        RoundRules {
            federated_evaluation: false,
            ..rules(4)
        },
        initial(),
    )
    .with_dispatch(Dispatch::ThreadPerCall)
    .with_secure_aggregation(Box::new(Noted {
        inner: toy(4),
        log: Arc::clone(&log),
    }));
    let record = e.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(record.accepted.len(), 4);
    // Every call is in flight at once, yet each reply is received before the next site may
    // hand its own over: the coordinator holds one reply at a time, not one per site.
    let expected: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .flat_map(|s| [format!("{s} answers"), format!("{s} received")])
        .collect();
    assert_eq!(*log.lock().unwrap(), expected);
    // The mean offset, 1.25, added to every value.
    assert_eq!(e.global().as_flat(), &[2.25, 3.25, 4.25]);
}

/// A site that sends its trained model in the clear although the round is secure.
struct Leaky(Arc<dyn Site>);

impl Site for Leaky {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let mut update = self.0.train(task)?;
        update.params = (*task.global).clone();
        Ok(update)
    }

    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        self.0.evaluate(params)
    }

    fn secure_exchange(
        &self,
        round: u32,
        message: &Envelope,
        turn: Option<&Turn>,
    ) -> Result<Envelope, SiteError> {
        self.0.secure_exchange(round, message, turn)
    }
}

#[test]
fn an_update_sent_in_the_clear_under_secure_aggregation_is_refused() {
    let mut e = engine(
        vec![
            ToySite::honest("a", 1, 4.0),
            Arc::new(Leaky(ToySite::honest("b", 1, 2.0))),
            ToySite::honest("c", 3, -4.0),
        ],
        2,
        2,
    );
    let record = e.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(record.accepted, ["a", "c"]);
    assert_eq!(record.excluded.len(), 1, "{:?}", record.excluded);
    let excluded = &record.excluded[0];
    assert_eq!(excluded.site, "b");
    assert_eq!(excluded.kind, ErrorKind::MalformedReply);
    assert!(excluded.reason.contains("in the clear"), "{excluded:?}");
}
