//! The policy's rules: the rate each gives, who pays for a round, and the order of the layers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use entente_core::engine::{ErrorKind, LocalOptimizer, LocalTraining, SiteError, TrainTask};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::SiteUpdate;

use super::*;
use crate::dp::rdp::epsilon;

const SIGMA: f64 = 1.0;
const DELTA: f64 = 1e-5;

/// Four sites, two selected per round, three rounds; `tables` after.
fn manifest(tables: &str) -> Manifest {
    let text = format!(
        r#"
[federation]
name = "policy"
seed = 7

[data]
format = "csv"
path = "digits.csv.gz"

[[sites]]
name = "a"

[[sites]]
name = "b"

[[sites]]
name = "c"

[[sites]]
name = "d"

[model]
kind = "mlp"
hidden = [4]

[training]
rounds = 3
learning_rate = 0.1

[selection]
fraction = 0.5
min_sites = 2
{tables}
"#
    );
    Manifest::parse(&text, "policy.toml", Path::new("/base")).unwrap()
}

/// `[privacy]` of client-level DP at `budget`, its ledgers in `ledgers`.
fn client(ledgers: &Path, budget: f64) -> String {
    format!(
        "\n[privacy]\nmechanism = \"client\"\nclip = 1.0\nnoise_multiplier = {SIGMA}\n\
         epsilon_budget = {budget}\nledger = \"{}\"\n",
        ledgers.display()
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("entente-policy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A site that counts the rounds it trained.
struct Counting(String, AtomicUsize);

impl Site for Counting {
    fn name(&self) -> &str {
        &self.0
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        self.1.fetch_add(1, Ordering::SeqCst);
        Ok(SiteUpdate {
            site: self.0.clone(),
            num_examples: 1,
            params: (*task.global).clone(),
            train_loss: 0.0,
        })
    }

    fn evaluate(&self, _params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        Err(SiteError::internal(&self.0, "not evaluated here"))
    }
}

fn members(m: &Manifest) -> Vec<Member> {
    m.sites
        .iter()
        .enumerate()
        .map(|(index, name)| Member {
            index,
            site: Arc::new(Counting(name.clone(), AtomicUsize::new(0))),
            examples: None,
            dataset: "digits".into(),
            identity: None,
        })
        .collect()
}

fn task(round: u32) -> TrainTask {
    TrainTask {
        round,
        global: Arc::new(ParamSet::from_tensors([("w".to_string(), vec![1], vec![0.0])]).unwrap()),
        training: LocalTraining {
            epochs: 1,
            batch_size: 50,
            learning_rate: 0.1,
            optimizer: LocalOptimizer::Sgd { momentum: 0.0 },
            fedprox_mu: 0.0,
            dp_sgd: None,
        },
        seed: 1,
        turn: None,
    }
}

/// The charges in site `site`'s ledger: (round, q, steps).
fn charges(dir: &Path, site: &str) -> Vec<(u32, f64, u64)> {
    Ledger::open(dir, site, "digits", DELTA)
        .unwrap()
        .charges()
        .iter()
        .map(|c| (c.round, c.q, c.steps))
        .collect()
}

#[test]
fn each_rule_gives_its_rate() {
    let dir = scratch("rate");
    let m = manifest(&client(&dir, 100.0));
    // Two of four sites each round.
    assert_eq!(
        SamplingRule::verified(&m),
        SamplingRule::Verified { rate: 0.5 }
    );
    assert_eq!(SamplingRule::verified(&m).rate(), 0.5);
    assert!(SamplingRule::verified(&m).charges_every_site());
    assert_eq!(SamplingRule::Unverified.rate(), 1.0);
    assert!(!SamplingRule::Unverified.charges_every_site());
    let p = m.privacy.as_ref().unwrap();
    assert_eq!(
        RoundPrice::of(p, 0, SamplingRule::Unverified).cost(50, 1),
        (1.0, 1)
    );
    assert_eq!(
        RoundPrice::of(p, 0, SamplingRule::verified(&m)).cost(50, 1),
        (0.5, 1)
    );
}

#[test]
fn the_budget_goes_inside_secure_aggregation_for_every_mechanism() {
    let dir = scratch("order");
    assert_eq!(LAYERS, [Layer::Budget, Layer::SecureAggregation]);
    let secagg = "\n[secure_aggregation]\nthreshold = 0.75\nclip = 9.0\n";
    let cases = [
        (
            format!(
                "{secagg}{}",
                client(&dir, 100.0).replace("client", "distributed")
            ),
            LAYERS.to_vec(),
        ),
        (client(&dir, 100.0), vec![Layer::Budget]),
    ];
    for (tables, layers) in cases {
        let m = manifest(&tables);
        for rule in [SamplingRule::verified(&m), SamplingRule::Unverified] {
            let stack = stack_sites(&m, rule, Keys::Seeded, members(&m)).unwrap();
            for s in &stack.sites {
                assert_eq!(s.layers, layers);
                assert!(s.budget.is_some());
            }
        }
    }
    // No [privacy]: secure aggregation alone, nothing charged, no ledger. A real site under
    // active security (the default) must bring its certificate identity.
    let m = manifest(secagg);
    assert!(matches!(
        stack_sites(&m, SamplingRule::Unverified, Keys::Fresh, members(&m)),
        Err(PolicyError::NoIdentity { index: 0 })
    ));
    let m = manifest(&format!("{secagg}security = \"honest-but-curious\"\n"));
    let stack = stack_sites(&m, SamplingRule::Unverified, Keys::Fresh, members(&m)).unwrap();
    assert!(
        stack
            .sites
            .iter()
            .all(|s| s.layers == [Layer::SecureAggregation])
    );
    assert!(stack.forecast.is_none());
}

#[test]
fn a_verified_round_is_charged_to_every_site_once_before_any_trains() {
    let dir = scratch("verified");
    let m = manifest(&client(&dir, 100.0));
    let stack = stack_sites(&m, SamplingRule::verified(&m), Keys::Seeded, members(&m)).unwrap();
    let predicted = epsilon(0.5, SIGMA, 3, DELTA).unwrap().epsilon;
    assert!((stack.forecast.unwrap() - predicted).abs() < 1e-9);
    // Nothing charged before round 1.
    assert!(charges(&dir, "a").is_empty());
    // Sites a and b train each round; c and d sit out and pay all the same.
    for round in 1..=3 {
        for s in &stack.sites[..2] {
            s.site.train(&task(round)).unwrap();
        }
    }
    for site in ["a", "b", "c", "d"] {
        assert_eq!(
            charges(&dir, site),
            vec![(1, 0.5, 1), (2, 0.5, 1), (3, 0.5, 1)],
            "{site}"
        );
        let spent = Ledger::open(&dir, site, "digits", DELTA)
            .unwrap()
            .spent()
            .unwrap();
        assert!(
            (spent - predicted).abs() < 1e-9,
            "{site}: {spent} vs {predicted}"
        );
    }
    let seen = stack.sites[3].budget.as_ref().unwrap().spent().unwrap();
    assert!((seen - predicted).abs() < 1e-9);
}

#[test]
fn a_verified_task_of_round_0_is_refused_not_trained_for_free() {
    let dir = scratch("round-0");
    let m = manifest(&client(&dir, 100.0));
    let stack = stack_sites(&m, SamplingRule::verified(&m), Keys::Seeded, members(&m)).unwrap();
    let err = stack.sites[0].site.train(&task(0)).err().unwrap();
    assert!(err.reason().contains("round 0"), "{}", err.reason());
    assert!(charges(&dir, "a").is_empty());
}

#[test]
fn an_unverified_site_pays_rate_one_for_the_rounds_it_trains_only() {
    let dir = scratch("unverified");
    let m = manifest(&client(&dir, 100.0));
    let mut all = members(&m);
    let b = all.remove(1);
    let stack = stack_sites(&m, SamplingRule::Unverified, Keys::Fresh, vec![b]).unwrap();
    assert!(stack.forecast.is_none());
    stack.sites[0].site.train(&task(1)).unwrap();
    stack.sites[0].site.train(&task(3)).unwrap();
    assert_eq!(charges(&dir, "b"), vec![(1, 1.0, 1), (3, 1.0, 1)]);
    assert!(charges(&dir, "a").is_empty());
    let spent = Ledger::open(&dir, "b", "digits", DELTA)
        .unwrap()
        .spent()
        .unwrap();
    let predicted = epsilon(1.0, SIGMA, 2, DELTA).unwrap().epsilon;
    assert!((spent - predicted).abs() < 1e-9);
}

#[test]
fn a_verified_run_over_budget_is_refused_before_round_1_and_charges_nothing() {
    let dir = scratch("refused");
    let two = epsilon(0.5, SIGMA, 2, DELTA).unwrap().epsilon;
    let three = epsilon(0.5, SIGMA, 3, DELTA).unwrap().epsilon;
    let m = manifest(&client(&dir, f64::midpoint(two, three)));
    let err = stack_sites(&m, SamplingRule::verified(&m), Keys::Seeded, members(&m))
        .err()
        .unwrap();
    assert!(
        matches!(err, PolicyError::OverBudget { rounds: 3, .. }),
        "{err}"
    );
    assert!(
        err.to_string().starts_with("refused before round 1"),
        "{err}"
    );
    assert!(!dir.exists(), "nothing may be charged");
    // A node does not know in which rounds it will be selected: it refuses rounds, not runs.
    let stack = stack_sites(&m, SamplingRule::Unverified, Keys::Fresh, members(&m)).unwrap();
    stack.sites[0].site.train(&task(1)).unwrap();
}

#[test]
fn the_verified_rule_needs_every_site_and_dp_sgd_needs_entente_s_trainer() {
    let dir = scratch("checks");
    let m = manifest(&client(&dir, 100.0));
    let mut some = members(&m);
    some.truncate(2);
    let err = stack_sites(&m, SamplingRule::verified(&m), Keys::Seeded, some)
        .err()
        .unwrap();
    assert!(
        matches!(err, PolicyError::PartialPopulation { given: 2, sites: 4 }),
        "{err}"
    );
    let m = manifest(&client(&dir, 100.0).replace("client", "dp-sgd"));
    let err = stack_sites(&m, SamplingRule::Unverified, Keys::Fresh, members(&m))
        .err()
        .unwrap();
    assert!(
        matches!(err, PolicyError::DpSgdNeedsOwnTrainer { .. }),
        "{err}"
    );
    let mut outside = members(&m);
    outside[0].index = 9;
    let err = stack_sites(&m, SamplingRule::Unverified, Keys::Fresh, outside)
        .err()
        .unwrap();
    assert!(
        matches!(err, PolicyError::NoSuchSite { index: 9, .. }),
        "{err}"
    );
    let mut twice = members(&m);
    twice[1].index = twice[0].index;
    let err = stack_sites(&m, SamplingRule::Unverified, Keys::Fresh, twice)
        .err()
        .unwrap();
    assert!(matches!(err, PolicyError::DuplicateSite { .. }), "{err}");
}

#[test]
fn a_verified_round_that_no_longer_fits_is_refused_naming_the_full_ledger() {
    let dir = scratch("raced");
    let three = epsilon(0.5, SIGMA, 3, DELTA).unwrap().epsilon;
    let m = manifest(&client(&dir, three + 0.01));
    let stack = stack_sites(&m, SamplingRule::verified(&m), Keys::Seeded, members(&m)).unwrap();
    // Another run spends site c's budget after the check.
    Ledger::open(&dir, "c", "digits", DELTA)
        .unwrap()
        .charge("other", 1, 1.0, SIGMA, 50)
        .unwrap();
    let err = stack.sites[0].site.train(&task(1)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::OverBudget, "{err}");
    assert!(
        err.message.contains("refuses round 1: site `c`'s ledger"),
        "{err}"
    );
}
