//! The round engine driven by fake sites (no ML): every site returns `global + offset` (or a
//! deliberately broken update), so the expected global model can be computed by hand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use entente_core::aggregators::{self, Strategy};
use entente_core::engine::selection;
use entente_core::engine::{
    Dispatch, EngineError, ErrorKind, Evaluator, Failure, LocalOptimizer, LocalTraining,
    NoObserver, RoundEngine, RoundObserver, RoundRecord, RoundRules, Site, SiteError, TrainTask,
};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::{SiteUpdate, UpdatePolicy};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a fake site does when asked to train.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Returns `global + offset` (flat, in the global layout).
    Offset(Vec<f32>),
    /// Returns `global + noise`, the noise drawn from the task's seed (so the update depends
    /// on the seed the engine derives for this site and round).
    SeededNoise,
    /// Returns a model whose first tensor has a different shape.
    WrongShape,
    /// Returns `global` with one value replaced by NaN.
    Nan,
    /// Fails with a `SiteError` of this kind.
    Fail(ErrorKind),
    /// Returns a valid update that claims to come from the named site.
    Impersonate(String),
    /// Panics in `train`.
    Panic,
}

/// A site without a model: its behaviour, example count and evaluation result are given.
struct FakeSite {
    name: String,
    examples: u64,
    behaviour: Behaviour,
    /// Reported training loss.
    loss: f64,
    /// `(accuracy, examples)` of federated evaluation; `None` makes `evaluate` fail.
    eval: Option<(f64, usize)>,
    /// How many times `train` was called.
    calls: AtomicUsize,
}

impl FakeSite {
    fn new(name: &str, examples: u64, behaviour: Behaviour) -> Self {
        Self {
            name: name.to_string(),
            examples,
            behaviour,
            loss: 1.0,
            eval: Some((0.5, 10)),
            calls: AtomicUsize::new(0),
        }
    }

    fn with_loss(mut self, loss: f64) -> Self {
        self.loss = loss;
        self
    }

    fn with_eval(mut self, eval: Option<(f64, usize)>) -> Self {
        self.eval = eval;
        self
    }
}

impl Site for FakeSite {
    fn name(&self) -> &str {
        &self.name
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let global = &task.global;
        let params = match &self.behaviour {
            Behaviour::Offset(offset) => {
                let mut p = (**global).clone();
                for (v, o) in p.as_flat_mut().iter_mut().zip(offset) {
                    *v += o;
                }
                p
            }
            Behaviour::SeededNoise => {
                let mut rng = ChaCha8Rng::seed_from_u64(task.seed);
                let mut p = (**global).clone();
                for v in p.as_flat_mut() {
                    *v += rng.random_range(-0.1f32..0.1);
                }
                p
            }
            Behaviour::WrongShape => {
                let tensors = global.iter().enumerate().map(|(i, (spec, values))| {
                    if i == 0 {
                        // One value more than the global model's tensor.
                        let mut v = values.to_vec();
                        v.push(0.0);
                        (spec.name.clone(), vec![v.len()], v)
                    } else {
                        (spec.name.clone(), spec.shape.clone(), values.to_vec())
                    }
                });
                ParamSet::from_tensors(tensors).unwrap()
            }
            Behaviour::Nan => {
                let mut p = (**global).clone();
                p.as_flat_mut()[1] = f32::NAN;
                p
            }
            Behaviour::Impersonate(_) => (**global).clone(),
            Behaviour::Fail(kind) => {
                return Err(SiteError::new(self.name.clone(), *kind, "disk full"));
            }
            Behaviour::Panic => panic!("a bug in the site"),
        };
        let site = match &self.behaviour {
            Behaviour::Impersonate(other) => other.clone(),
            _ => self.name.clone(),
        };
        Ok(SiteUpdate {
            site,
            num_examples: self.examples,
            params,
            train_loss: self.loss,
        })
    }

    fn evaluate(&self, _params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        match self.eval {
            Some((accuracy, num_examples)) => Ok(EvalMetrics {
                loss: 1.0 - accuracy,
                accuracy,
                per_class_accuracy: vec![],
                num_examples,
            }),
            None => Err(SiteError::refused(self.name.clone(), "no test split")),
        }
    }
}

/// A central evaluator whose "accuracy" is the mean of the parameters, so the record shows
/// that it saw the new global model.
struct MeanEvaluator;

impl Evaluator for MeanEvaluator {
    fn evaluate(&self, params: &ParamSet) -> Result<EvalMetrics, Failure> {
        let flat = params.as_flat();
        let mean = flat.iter().map(|v| f64::from(*v)).sum::<f64>() / flat.len() as f64;
        Ok(EvalMetrics {
            loss: -mean,
            accuracy: mean,
            per_class_accuracy: vec![Some(mean)],
            num_examples: 123,
        })
    }
}

struct FailingEvaluator;

impl Evaluator for FailingEvaluator {
    fn evaluate(&self, _params: &ParamSet) -> Result<EvalMetrics, Failure> {
        Err(Failure::internal("test set unreadable"))
    }
}

/// A global model of two tensors: `w` [2, 2] and `b` [2].
fn initial() -> ParamSet {
    ParamSet::from_tensors([
        ("w".to_string(), vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]),
        ("b".to_string(), vec![2], vec![0.5, -0.5]),
    ])
    .unwrap()
}

fn rules(rounds: u32, fraction: f64, min_sites: usize, seed: u64) -> RoundRules {
    RoundRules {
        rounds,
        fraction,
        min_sites,
        seed,
        policy: UpdatePolicy::default(),
        training: LocalTraining {
            epochs: 1,
            batch_size: 8,
            learning_rate: 0.1,
            optimizer: LocalOptimizer::Sgd { momentum: 0.0 },
            fedprox_mu: 0.0,
            dp_sgd: None,
        },
        federated_evaluation: true,
    }
}

fn engine(sites: Vec<Arc<dyn Site>>, rules: RoundRules, start: ParamSet) -> RoundEngine {
    RoundEngine::new(
        sites,
        aggregators::build(&Strategy::FedAvg).unwrap(),
        None,
        rules,
        start,
    )
}

fn shared(sites: Vec<FakeSite>) -> Vec<Arc<dyn Site>> {
    sites
        .into_iter()
        .map(|s| Arc::new(s) as Arc<dyn Site>)
        .collect()
}

fn bits(p: &ParamSet) -> Vec<u32> {
    p.as_flat().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn fedavg_round_is_the_example_weighted_mean() {
    let sites = shared(vec![
        FakeSite::new(
            "a",
            1,
            Behaviour::Offset(vec![4.0, 8.0, 0.0, 2.0, 1.0, 0.0]),
        )
        .with_loss(2.0),
        FakeSite::new(
            "b",
            3,
            Behaviour::Offset(vec![0.0, -4.0, 2.0, 2.0, 1.0, 4.0]),
        )
        .with_loss(1.0),
        FakeSite::new(
            "c",
            4,
            Behaviour::Offset(vec![2.0, 0.0, -1.0, 2.0, -1.0, 2.0]),
        )
        .with_loss(0.5),
    ]);
    let mut e = engine(sites, rules(1, 1.0, 1, 7), initial());
    let records = e.run(&mut NoObserver).unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.round, 1);
    assert_eq!(r.selected, ["a", "b", "c"]);
    assert_eq!(r.accepted, ["a", "b", "c"]);
    assert!(r.excluded.is_empty());
    // Offsets weighted 1:3:4 over 8 examples:
    //   (1*4 + 3*0 + 4*2)/8 = 1.5, (8 - 12 + 0)/8 = -0.5, (0 + 6 - 4)/8 = 0.25,
    //   (2 + 6 + 8)/8 = 2, (1 + 3 - 4)/8 = 0, (0 + 12 + 8)/8 = 2.5
    let want = [
        1.0 + 1.5,
        2.0 - 0.5,
        3.0 + 0.25,
        4.0 + 2.0,
        0.5 + 0.0,
        -0.5 + 2.5,
    ];
    assert_eq!(e.global().as_flat(), &want);
    assert_eq!(e.global().layout(), initial().layout());
    // Training loss is example-weighted too: (2*1 + 1*3 + 0.5*4)/8.
    assert!((r.train_loss - 7.0 / 8.0).abs() < 1e-12, "{}", r.train_loss);
    assert!(r.test.is_none(), "no evaluator configured");
    assert!(r.seconds >= 0.0);
}

#[test]
fn fedavg_over_several_rounds_keeps_moving_by_the_mean_offset() {
    let sites = shared(vec![
        FakeSite::new("a", 1, Behaviour::Offset(vec![1.0; 6])),
        FakeSite::new("b", 1, Behaviour::Offset(vec![3.0; 6])),
    ]);
    let mut e = engine(sites, rules(3, 1.0, 2, 1), initial());
    let records = e.run(&mut NoObserver).unwrap();
    assert_eq!(
        records.iter().map(|r| r.round).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let want: Vec<f32> = initial().as_flat().iter().map(|v| v + 6.0).collect();
    assert_eq!(e.global().as_flat(), want.as_slice());
}

#[test]
fn wrong_shape_and_nan_updates_are_excluded_and_the_round_completes() {
    let sites = shared(vec![
        FakeSite::new("good-1", 1, Behaviour::Offset(vec![2.0; 6])).with_loss(1.0),
        FakeSite::new("shape", 100, Behaviour::WrongShape).with_loss(50.0),
        FakeSite::new("nan", 100, Behaviour::Nan).with_loss(50.0),
        FakeSite::new("good-2", 3, Behaviour::Offset(vec![-2.0; 6])).with_loss(3.0),
    ]);
    let mut e = engine(sites, rules(1, 1.0, 2, 3), initial());
    let r = e.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(r.selected, ["good-1", "shape", "nan", "good-2"]);
    assert_eq!(r.accepted, ["good-1", "good-2"]);
    assert_eq!(r.excluded.len(), 2, "{:?}", r.excluded);
    assert_eq!(r.excluded[0].site, "shape");
    assert_eq!(r.excluded[0].kind, ErrorKind::MalformedReply);
    assert!(
        r.excluded[0].reason.contains("`w`") && r.excluded[0].reason.contains("shape"),
        "{}",
        r.excluded[0].reason
    );
    assert_eq!(r.excluded[1].site, "nan");
    assert_eq!(r.excluded[1].kind, ErrorKind::MalformedReply);
    assert!(
        r.excluded[1].reason.contains("non-finite") && r.excluded[1].reason.contains("NaN"),
        "{}",
        r.excluded[1].reason
    );
    // Only the good sites count: offset (1*2 - 3*2)/4 = -1, loss (1 + 9)/4.
    let want: Vec<f32> = initial().as_flat().iter().map(|v| v - 1.0).collect();
    assert_eq!(e.global().as_flat(), want.as_slice());
    assert!((r.train_loss - 2.5).abs() < 1e-12, "{}", r.train_loss);
}

#[test]
fn an_update_under_another_sites_name_is_excluded_under_the_callers_name() {
    let sites = shared(vec![
        FakeSite::new("honest", 2, Behaviour::Offset(vec![1.0; 6])),
        FakeSite::new("mallory", 50, Behaviour::Impersonate("honest".into())),
    ]);
    let mut e = engine(sites, rules(1, 1.0, 1, 3), initial());
    let r = e.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(r.accepted, ["honest"]);
    assert_only_excluded(&r, "mallory", ErrorKind::MalformedReply, "claims");
}

#[test]
fn an_update_with_a_nan_training_loss_is_excluded() {
    let sites = shared(vec![
        FakeSite::new("fine", 2, Behaviour::Offset(vec![1.0; 6])),
        FakeSite::new("lossy", 2, Behaviour::Offset(vec![9.0; 6])).with_loss(f64::NAN),
    ]);
    let mut e = engine(sites, rules(1, 1.0, 1, 3), initial());
    let r = e.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(r.accepted, ["fine"]);
    assert_eq!(r.excluded[0].site, "lossy");
    assert!(r.train_loss.is_finite());
}

#[test]
fn a_failing_site_is_excluded_with_its_reason() {
    let sites = shared(vec![
        FakeSite::new("ok", 2, Behaviour::Offset(vec![1.0; 6])),
        FakeSite::new("broken", 2, Behaviour::Fail(ErrorKind::Internal)),
    ]);
    let mut e = engine(sites, rules(1, 1.0, 1, 3), initial());
    let r = e.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(r.accepted, ["ok"]);
    assert_only_excluded(&r, "broken", ErrorKind::Internal, "disk full");
    let want: Vec<f32> = initial().as_flat().iter().map(|v| v + 1.0).collect();
    assert_eq!(e.global().as_flat(), want.as_slice());
}

/// The round left out exactly `site`, for a failure of `kind` whose reason says `says`.
fn assert_only_excluded(r: &RoundRecord, site: &str, kind: ErrorKind, says: &str) {
    assert_eq!(r.excluded.len(), 1, "{:?}", r.excluded);
    let x = &r.excluded[0];
    assert_eq!((x.site.as_str(), x.kind), (site, kind));
    assert!(x.reason.contains(says), "{}", x.reason);
}

/// A site whose call panics is left out like a failing one, under either dispatch: the round
/// neither stops nor waits for its update.
#[test]
fn a_panicking_site_is_excluded_and_the_round_goes_on() {
    for dispatch in [Dispatch::Pool, Dispatch::ThreadPerCall] {
        let sites = shared(vec![
            FakeSite::new("first", 2, Behaviour::Panic),
            FakeSite::new("ok", 2, Behaviour::Offset(vec![1.0; 6])),
        ]);
        let mut e = engine(sites, rules(1, 1.0, 1, 3), initial()).with_dispatch(dispatch);
        let r = e.run_round(1, &mut NoObserver).unwrap();
        assert_eq!(r.accepted, ["ok"], "{dispatch:?}");
        assert_only_excluded(
            &r,
            "first",
            ErrorKind::Internal,
            "panicked: a bug in the site",
        );
    }
}

#[test]
fn each_site_is_excluded_with_the_kind_of_its_failure() {
    let kinds = [
        ErrorKind::Refused,
        ErrorKind::OverBudget,
        ErrorKind::TimedOut,
        ErrorKind::Transport,
    ];
    let mut sites = vec![FakeSite::new("ok", 2, Behaviour::Offset(vec![1.0; 6]))];
    sites.extend(
        kinds
            .iter()
            .map(|&k| FakeSite::new(k.as_str(), 2, Behaviour::Fail(k))),
    );
    let mut e = engine(shared(sites), rules(1, 1.0, 1, 3), initial());
    let r = e.run_round(1, &mut NoObserver).unwrap();
    let seen: Vec<(&str, ErrorKind)> = r
        .excluded
        .iter()
        .map(|x| (x.site.as_str(), x.kind))
        .collect();
    let want: Vec<(&str, ErrorKind)> = kinds.iter().map(|&k| (k.as_str(), k)).collect();
    assert_eq!(seen, want);
    // The record says the kind in the stable name that the store and dashboards read.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["excluded"][1]["kind"], "over_budget");
    assert_eq!(json["excluded"][2]["kind"], "timed_out");
}

#[test]
fn quorum_not_met_is_an_error_and_leaves_the_global_model_unchanged() {
    let sites = shared(vec![
        FakeSite::new("ok-1", 2, Behaviour::Offset(vec![1.0; 6])),
        FakeSite::new("broken", 2, Behaviour::Fail(ErrorKind::OverBudget)),
        FakeSite::new("nan", 2, Behaviour::Nan),
        FakeSite::new("ok-2", 2, Behaviour::Offset(vec![1.0; 6])),
    ]);
    let mut e = engine(sites, rules(2, 1.0, 3, 3), initial());
    let before = bits(e.global());
    let err = e.run(&mut NoObserver).unwrap_err();
    match err {
        EngineError::QuorumNotMet {
            round,
            selected,
            accepted,
            min_sites,
            excluded,
        } => {
            assert_eq!((round, selected, accepted, min_sites), (1, 4, 2, 3));
            assert_eq!(excluded.len(), 2, "{excluded:?}");
        }
        other => panic!("expected QuorumNotMet, got {other:?}"),
    }
    assert_eq!(bits(e.global()), before);
    let message = e.run_round(1, &mut NoObserver).unwrap_err().to_string();
    assert!(message.contains("min_sites"), "{message}");
    assert!(
        message.contains("broken (over_budget): disk full"),
        "{message}"
    );
    assert!(message.contains("nan (malformed_reply): "), "{message}");
    assert_eq!(bits(e.global()), before);
}

#[test]
fn a_round_after_a_failed_quorum_starts_from_the_unchanged_model() {
    // Round 1 fails the quorum; the same engine then runs with a looser quorum and must
    // aggregate only the new round's updates on top of the original model.
    let sites = shared(vec![
        FakeSite::new("ok", 1, Behaviour::Offset(vec![2.0; 6])),
        FakeSite::new("broken", 1, Behaviour::Fail(ErrorKind::Internal)),
    ]);
    let mut strict = engine(sites.clone(), rules(1, 1.0, 2, 3), initial());
    assert!(matches!(
        strict.run_round(1, &mut NoObserver),
        Err(EngineError::QuorumNotMet { .. })
    ));
    let mut loose = engine(sites, rules(1, 1.0, 1, 3), strict.global().clone());
    loose.run_round(1, &mut NoObserver).unwrap();
    let want: Vec<f32> = initial().as_flat().iter().map(|v| v + 2.0).collect();
    assert_eq!(loose.global().as_flat(), want.as_slice());
}

#[test]
fn fraction_selects_the_expected_number_of_sites_reproducibly() {
    fn run(seed: u64) -> (Vec<Vec<String>>, Vec<usize>) {
        let fakes: Vec<Arc<FakeSite>> = (0..6)
            .map(|i| {
                Arc::new(FakeSite::new(
                    &format!("site-{i}"),
                    1,
                    Behaviour::Offset(vec![0.0; 6]),
                ))
            })
            .collect();
        let sites: Vec<Arc<dyn Site>> = fakes
            .iter()
            .map(|s| Arc::clone(s) as Arc<dyn Site>)
            .collect();
        let mut e = engine(sites, rules(10, 0.5, 1, seed), initial());
        let records = e.run(&mut NoObserver).unwrap();
        let calls = fakes
            .iter()
            .map(|s| s.calls.load(Ordering::SeqCst))
            .collect();
        (records.into_iter().map(|r| r.selected).collect(), calls)
    }
    let (a, calls) = run(11);
    assert_eq!(a.len(), 10);
    for (round, selected) in a.iter().enumerate() {
        // ceil(0.5 * 6) = 3 distinct sites, in site order.
        assert_eq!(selected.len(), 3, "round {}: {selected:?}", round + 1);
        let mut sorted = selected.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(&sorted, selected, "round {}", round + 1);
        // The engine uses the documented selection function.
        let want: Vec<String> = selection::select(6, 0.5, 1, 11, round as u32 + 1)
            .into_iter()
            .map(|i| format!("site-{i}"))
            .collect();
        assert_eq!(selected, &want);
    }
    // Only selected sites are asked to train.
    assert_eq!(calls.iter().sum::<usize>(), 30);
    for (i, c) in calls.iter().enumerate() {
        let name = format!("site-{i}");
        assert_eq!(*c, a.iter().filter(|s| s.contains(&name)).count());
    }
    assert!(
        a.iter().any(|s| *s != a[0]),
        "the selection never changes across rounds: {a:?}"
    );
    let (b, calls_b) = run(11);
    assert_eq!(a, b, "same seed, different selection");
    assert_eq!(calls, calls_b);
    let (c, _) = run(12);
    assert_ne!(a, c, "a different seed gave the same ten selections");
}

#[test]
fn min_sites_raises_the_sample_size() {
    let sites = shared(
        (0..6)
            .map(|i| FakeSite::new(&format!("s{i}"), 1, Behaviour::Offset(vec![0.0; 6])))
            .collect(),
    );
    let mut e = engine(sites, rules(3, 0.1, 4, 5), initial());
    for r in e.run(&mut NoObserver).unwrap() {
        assert_eq!(r.selected.len(), 4, "{:?}", r.selected);
    }
}

#[test]
fn the_norm_bound_rejects_the_update_that_moves_too_far() {
    let sites = shared(vec![
        // Distance 0.5 * sqrt(6) ~ 1.22.
        FakeSite::new("near", 1, Behaviour::Offset(vec![0.5; 6])),
        // Distance 10 * sqrt(6) ~ 24.5.
        FakeSite::new("far", 1000, Behaviour::Offset(vec![10.0; 6])),
        FakeSite::new("near-too", 1, Behaviour::Offset(vec![-0.5; 6])),
    ]);
    let mut r = rules(1, 1.0, 1, 9);
    r.policy = UpdatePolicy {
        max_update_norm: Some(2.0),
        max_examples: None,
    };
    let mut e = engine(sites.clone(), r, initial());
    let rec = e.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(rec.accepted, ["near", "near-too"]);
    assert_eq!(rec.excluded.len(), 1);
    assert_eq!(rec.excluded[0].site, "far");
    assert!(
        rec.excluded[0].reason.contains("exceeds the bound"),
        "{}",
        rec.excluded[0].reason
    );
    // The two accepted updates cancel out.
    assert_eq!(e.global().as_flat(), initial().as_flat());

    // Without a bound the far site dominates the average.
    let mut unbounded = engine(sites, rules(1, 1.0, 1, 9), initial());
    let rec = unbounded.run_round(1, &mut NoObserver).unwrap();
    assert!(rec.excluded.is_empty());
    assert!(unbounded.global().l2_distance(&initial()) > 20.0);
}

/// Runs `rounds` rounds over 7 seeded-noise sites and a 10 000-value model with `strategy`.
fn noisy_run(strategy: &Strategy, rounds: u32) -> (ParamSet, Vec<RoundRecord>) {
    noisy_run_dispatched(strategy, rounds, Dispatch::Pool)
}

fn noisy_run_dispatched(
    strategy: &Strategy,
    rounds: u32,
    dispatch: Dispatch,
) -> (ParamSet, Vec<RoundRecord>) {
    let start = ParamSet::from_tensors([
        (
            "big".to_string(),
            vec![100, 99],
            (0..9900).map(|i| (i as f32 * 0.37).sin()).collect(),
        ),
        ("small".to_string(), vec![100], vec![0.25; 100]),
    ])
    .unwrap();
    let sites = shared(
        (0..7)
            .map(|i| {
                FakeSite::new(&format!("s{i}"), 10 + 7 * i, Behaviour::SeededNoise)
                    .with_loss(0.1 * i as f64)
                    .with_eval(Some((0.1 * i as f64, 5 + i as usize)))
            })
            .collect(),
    );
    let mut e = RoundEngine::new(
        sites,
        aggregators::build(strategy).unwrap(),
        Some(Arc::new(MeanEvaluator)),
        rules(rounds, 0.7, 2, 2024),
        start,
    )
    .with_dispatch(dispatch);
    let records = e.run(&mut NoObserver).unwrap();
    (e.global().clone(), records)
}

#[test]
fn results_do_not_depend_on_the_number_of_threads() {
    let strategies = [
        Strategy::FedAvg,
        Strategy::Median,
        Strategy::FedAvgM {
            server_learning_rate: 1.0,
            momentum: 0.9,
        },
    ];
    for strategy in strategies {
        let run_in = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| noisy_run(&strategy, 4))
        };
        let (one, rec_one) = run_in(1);
        let (two, rec_two) = run_in(2);
        assert_eq!(bits(&one), bits(&two), "{strategy:?}");
        let (three, _) = run_in(3);
        assert_eq!(bits(&one), bits(&three), "{strategy:?}");
        // A thread per call, as a coordinator runs its remote sites: the same rounds.
        let (own_threads, rec_own) = noisy_run_dispatched(&strategy, 4, Dispatch::ThreadPerCall);
        assert_eq!(bits(&one), bits(&own_threads), "{strategy:?}");
        for (a, b) in rec_one.iter().zip(&rec_own) {
            assert_eq!(
                (&a.accepted, &a.test, &a.federated),
                (&b.accepted, &b.test, &b.federated)
            );
        }
        for (a, b) in rec_one.iter().zip(&rec_two) {
            assert_eq!(a.selected, b.selected);
            assert_eq!(a.accepted, b.accepted);
            assert_eq!(a.train_loss.to_bits(), b.train_loss.to_bits());
            assert_eq!(a.test, b.test);
            assert_eq!(a.federated, b.federated);
        }
        // The model did move: the noise is not all cancelled out.
        let (start, _) = noisy_run(&strategy, 0);
        assert!(one.l2_distance(&start) > 0.01, "{strategy:?}");
    }
}

#[test]
fn central_and_federated_evaluation_are_recorded() {
    let sites = shared(vec![
        FakeSite::new("a", 1, Behaviour::Offset(vec![1.0; 6])).with_eval(Some((1.0, 30))),
        FakeSite::new("b", 1, Behaviour::Offset(vec![1.0; 6])).with_eval(Some((0.5, 10))),
        // Its evaluation fails: left out of the federated mean, not fatal.
        FakeSite::new("c", 1, Behaviour::Offset(vec![1.0; 6])).with_eval(None),
    ]);
    let mut e = RoundEngine::new(
        sites,
        aggregators::build(&Strategy::FedAvg).unwrap(),
        Some(Arc::new(MeanEvaluator)),
        rules(2, 1.0, 1, 4),
        initial(),
    );
    let records = e.run(&mut NoObserver).unwrap();
    // Mean of the initial model is 10 / 6; each round adds 1.
    for (r, want_mean) in records.iter().zip([10.0 / 6.0 + 1.0, 10.0 / 6.0 + 2.0]) {
        let test = r.test.as_ref().expect("central evaluation missing");
        assert!(
            (test.accuracy - want_mean).abs() < 1e-6,
            "round {}: {}",
            r.round,
            test.accuracy
        );
        assert_eq!(test.num_examples, 123);
        assert_eq!(test.per_class_accuracy.len(), 1);
        let fed = r.federated.as_ref().expect("federated evaluation missing");
        // (1.0 * 30 + 0.5 * 10) / 40.
        assert!((fed.accuracy - 0.875).abs() < 1e-12, "{}", fed.accuracy);
        assert!((fed.loss - 0.125).abs() < 1e-12, "{}", fed.loss);
        assert_eq!(fed.num_examples, 40);
    }
    // The record serializes with both evaluations (this is what metrics.jsonl holds).
    let json = serde_json::to_value(&records[0]).unwrap();
    assert_eq!(json["round"], 1);
    assert_eq!(json["federated"]["num_examples"], 40);
    assert_eq!(json["test"]["num_examples"], 123);
}

#[test]
fn without_any_site_evaluation_the_federated_metrics_are_absent() {
    let sites = shared(vec![
        FakeSite::new("a", 1, Behaviour::Offset(vec![1.0; 6])).with_eval(None),
    ]);
    let mut e = engine(sites, rules(1, 1.0, 1, 4), initial());
    let r = e.run_round(1, &mut NoObserver).unwrap();
    assert!(r.federated.is_none());
    assert!(r.test.is_none());
}

#[test]
fn with_federated_evaluation_off_no_site_is_asked() {
    // The site would answer; the rules (a privacy budget) say not to ask.
    let sites = shared(vec![
        FakeSite::new("a", 1, Behaviour::Offset(vec![1.0; 6])).with_eval(Some((1.0, 30))),
    ]);
    let mut rules = rules(1, 1.0, 1, 4);
    rules.federated_evaluation = false;
    let mut e = engine(sites, rules, initial());
    let r = e.run_round(1, &mut NoObserver).unwrap();
    assert!(r.federated.is_none());
    assert_eq!(r.accepted, vec!["a".to_string()]);
}

#[test]
fn a_failing_central_evaluator_stops_the_round() {
    let sites = shared(vec![FakeSite::new("a", 1, Behaviour::Offset(vec![1.0; 6]))]);
    let mut e = RoundEngine::new(
        sites,
        aggregators::build(&Strategy::FedAvg).unwrap(),
        Some(Arc::new(FailingEvaluator)),
        rules(1, 1.0, 1, 4),
        initial(),
    );
    match e.run(&mut NoObserver) {
        Err(EngineError::Evaluate { round: 1, failure }) => {
            assert_eq!(failure.kind, ErrorKind::Internal);
            assert!(failure.reason().contains("unreadable"), "{failure}");
        }
        other => panic!("expected an Evaluate error, got {other:?}"),
    }
}

/// Records the seed of every task it gets and returns the global model unchanged.
struct SeedSite {
    name: &'static str,
    log: Arc<Mutex<Vec<(String, u32, u64)>>>,
}

impl Site for SeedSite {
    fn name(&self) -> &str {
        self.name
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        self.log
            .lock()
            .unwrap()
            .push((self.name.to_string(), task.round, task.seed));
        assert_eq!(
            task.training.batch_size, 8,
            "training settings not passed on"
        );
        Ok(SiteUpdate {
            site: self.name.to_string(),
            num_examples: 1,
            params: (*task.global).clone(),
            train_loss: 0.0,
        })
    }

    fn evaluate(&self, _: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        Err(SiteError::refused(self.name, "no test split"))
    }
}

#[test]
fn sites_get_distinct_seeds_per_round_and_site() {
    let run = |seed| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sites: Vec<Arc<dyn Site>> = ["x", "y"]
            .into_iter()
            .map(|name| {
                Arc::new(SeedSite {
                    name,
                    log: Arc::clone(&log),
                }) as Arc<dyn Site>
            })
            .collect();
        let mut e = engine(sites, rules(3, 1.0, 1, seed), initial());
        e.run(&mut NoObserver).unwrap();
        let mut seen = log.lock().unwrap().clone();
        seen.sort();
        seen
    };
    let seen = run(77);
    assert_eq!(seen.len(), 6);
    let mut seeds: Vec<u64> = seen.iter().map(|s| s.2).collect();
    seeds.sort_unstable();
    seeds.dedup();
    assert_eq!(seeds.len(), 6, "seeds repeat: {seen:?}");
    assert_eq!(seen, run(77), "same run seed, different task seeds");
    assert_ne!(seen, run(78), "the run seed does not reach the tasks");
}

#[derive(Default)]
struct Log {
    started: Vec<(u32, Vec<String>)>,
    finished: Vec<u32>,
}

impl RoundObserver for Log {
    fn round_started(&mut self, round: u32, sites: &[String]) {
        self.started.push((round, sites.to_vec()));
    }
    fn round_finished(&mut self, record: &RoundRecord) {
        self.finished.push(record.round);
    }
}

#[test]
fn the_observer_sees_every_round_and_not_a_failed_one() {
    let sites = shared(vec![
        FakeSite::new("a", 1, Behaviour::Offset(vec![1.0; 6])),
        FakeSite::new("b", 1, Behaviour::Offset(vec![1.0; 6])),
    ]);
    let mut log = Log::default();
    let mut e = engine(sites, rules(2, 1.0, 1, 4), initial());
    e.run(&mut log).unwrap();
    assert_eq!(
        log.started,
        [
            (1, vec!["a".to_string(), "b".to_string()]),
            (2, vec!["a".to_string(), "b".to_string()])
        ]
    );
    assert_eq!(log.finished, [1, 2]);

    let failing = shared(vec![FakeSite::new(
        "z",
        1,
        Behaviour::Fail(ErrorKind::Internal),
    )]);
    let mut log = Log::default();
    let mut e = engine(failing, rules(2, 1.0, 1, 4), initial());
    assert!(e.run(&mut log).is_err());
    assert_eq!(log.started.len(), 1);
    assert!(log.finished.is_empty());
}

/// An observer whose store has gone away.
struct Unreachable;

impl RoundObserver for Unreachable {
    fn commit(
        &mut self,
        _: &RoundRecord,
        _: &ParamSet,
        _: &dyn aggregators::Aggregator,
    ) -> Result<(), Failure> {
        Err(Failure::new(ErrorKind::Transport, "the database went away")
            .with_source(std::io::Error::other("connection reset")))
    }
}

#[test]
fn a_failed_commit_stops_the_run_with_its_kind_and_cause() {
    let sites = shared(vec![FakeSite::new("a", 1, Behaviour::Offset(vec![1.0; 6]))]);
    let mut e = engine(sites, rules(2, 1.0, 1, 4), initial());
    let before = bits(e.global());
    let err = e.run(&mut Unreachable).unwrap_err();
    assert_eq!(
        err.to_string(),
        "round 1: could not record the round (transport): the database went away: \
         connection reset"
    );
    assert!(matches!(
        err,
        EngineError::Commit { round: 1, ref failure } if failure.kind == ErrorKind::Transport
    ));
    // The message holds the causes, so a printed error chain tells each cause once.
    assert!(
        std::error::Error::source(&err).is_none(),
        "the causes would print twice"
    );
    assert_eq!(
        bits(e.global()),
        before,
        "an uncommitted round is not applied"
    );
}
