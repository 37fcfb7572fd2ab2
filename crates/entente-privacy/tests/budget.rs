//! Privacy budgets: ledgers survive restarts, and a site refuses a round that would exceed its
//! budget before it touches its data.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use entente_core::engine::{
    DpSgd, ErrorKind, LocalOptimizer, LocalTraining, Site, SiteError, TrainTask,
};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::SiteUpdate;
use entente_privacy::budget::{BudgetedSite, Ledger, LedgerError, RoundPrice, round_cost};
use entente_privacy::dp::rdp::epsilon;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("entente-budget-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

struct CountingSite(AtomicUsize);

impl Site for CountingSite {
    fn name(&self) -> &str {
        "clinic"
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(SiteUpdate {
            site: "clinic".into(),
            num_examples: 1000,
            params: (*task.global).clone(),
            train_loss: 0.1,
        })
    }

    fn evaluate(&self, _params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        Err(SiteError::refused("clinic", "none"))
    }
}

fn task(round: u32, dp: Option<DpSgd>) -> TrainTask {
    TrainTask {
        round,
        global: Arc::new(ParamSet::from_tensors([("w".to_string(), vec![1], vec![0.0])]).unwrap()),
        training: LocalTraining {
            epochs: 1,
            batch_size: 50,
            learning_rate: 0.1,
            optimizer: LocalOptimizer::Sgd { momentum: 0.0 },
            fedprox_mu: 0.0,
            dp_sgd: dp,
        },
        seed: 1,
        turn: None,
    }
}

const DP: DpSgd = DpSgd {
    clip: 1.0,
    noise_multiplier: 1.0,
};

#[test]
fn the_ledger_survives_a_restart_and_composes_charges() {
    let dir = scratch("restart");
    let (q, steps) = round_cost(1000, 50, 1);
    assert_eq!((q, steps), (0.05, 20));
    {
        let mut ledger = Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap();
        ledger.charge("fed", 1, q, 1.0, steps).unwrap();
        ledger.charge("fed", 2, q, 1.0, steps).unwrap();
    }
    let ledger = Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap();
    assert_eq!(ledger.charges().len(), 2);
    let want = epsilon(q, 1.0, 2 * steps, 1e-5).unwrap().epsilon;
    assert!((ledger.spent().unwrap() - want).abs() < 1e-9);
    // Another data set of the same site has its own ledger.
    let other = Ledger::open(&dir, "clinic", "other-records", 1e-5).unwrap();
    assert_eq!(other.spent().unwrap(), 0.0);
    // A different delta for the same data set is refused.
    assert!(matches!(
        Ledger::open(&dir, "clinic", "digits", 1e-6),
        Err(LedgerError::Damaged { .. })
    ));
}

#[cfg(unix)]
#[test]
fn a_ledger_that_is_a_device_or_a_pipe_is_refused_not_read() {
    let dir = scratch("device");
    std::fs::create_dir_all(&dir).unwrap();
    let err = Ledger::load(std::path::Path::new("/dev/zero")).unwrap_err();
    assert!(matches!(err, LedgerError::File(_)), "{err:?}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let fifo = Ledger::path_for(&dir, "clinic", "digits");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let err = Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap_err();
    assert!(err.to_string().contains("a named pipe (FIFO)"), "{err}");
}

#[test]
fn a_damaged_ledger_is_an_error_not_a_fresh_start() {
    let dir = scratch("damaged");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(Ledger::path_for(&dir, "clinic", "digits"), "{not json").unwrap();
    let err = Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
}

#[test]
fn a_site_refuses_the_round_that_would_exceed_its_budget_before_training() {
    let dir = scratch("refuse");
    let (q, steps) = round_cost(1000, 50, 1);
    let one = epsilon(q, 1.0, steps, 1e-5).unwrap().epsilon;
    let two = epsilon(q, 1.0, 2 * steps, 1e-5).unwrap().epsilon;
    // Enough for two rounds, not three.
    let budget = (two + epsilon(q, 1.0, 3 * steps, 1e-5).unwrap().epsilon) / 2.0;
    assert!(one < two && two < budget);
    let inner = Arc::new(CountingSite(AtomicUsize::new(0)));
    let site = BudgetedSite::new(
        inner.clone(),
        "fed",
        RoundPrice::DpSgd { examples: 1000 },
        budget,
        Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap(),
    );
    site.train(&task(1, Some(DP))).unwrap();
    site.train(&task(2, Some(DP))).unwrap();
    let err = site.train(&task(3, Some(DP))).unwrap_err();
    assert_eq!(err.kind, ErrorKind::OverBudget, "{err}");
    assert!(err.message.contains("refuses round 3"), "{}", err.message);
    assert!(err.message.contains("budget"), "{}", err.message);
    assert_eq!(
        inner.0.load(Ordering::SeqCst),
        2,
        "the third round never trained"
    );

    // After a restart the spent budget is still there.
    let again = BudgetedSite::new(
        inner.clone(),
        "fed",
        RoundPrice::DpSgd { examples: 1000 },
        budget,
        Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap(),
    );
    assert!(again.train(&task(1, Some(DP))).is_err());
    assert_eq!(inner.0.load(Ordering::SeqCst), 2);
}

#[test]
fn a_budgeted_site_refuses_to_train_without_dp_sgd() {
    let dir = scratch("nodp");
    let inner = Arc::new(CountingSite(AtomicUsize::new(0)));
    let site = BudgetedSite::new(
        inner.clone(),
        "fed",
        RoundPrice::DpSgd { examples: 1000 },
        10.0,
        Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap(),
    );
    let err = site.train(&task(1, None)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused, "{err}");
    assert!(err.message.contains("without DP-SGD"), "{}", err.message);
    assert_eq!(inner.0.load(Ordering::SeqCst), 0);
}

#[test]
fn client_level_rounds_are_charged_one_unamplified_step_each() {
    let dir = scratch("client");
    let sigma = 1.5;
    let three = epsilon(1.0, sigma, 3, 1e-5).unwrap().epsilon;
    // Enough for three rounds, not four.
    let budget = (three + epsilon(1.0, sigma, 4, 1e-5).unwrap().epsilon) / 2.0;
    let inner = Arc::new(CountingSite(AtomicUsize::new(0)));
    let site = BudgetedSite::new(
        inner.clone(),
        "fed",
        RoundPrice::ClientLevel {
            noise_multiplier: sigma,
            rate: 1.0,
        },
        budget,
        Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap(),
    );
    // No DP-SGD in the task: the update, not the records' gradients, carries the noise.
    for round in 1..=3 {
        site.train(&task(round, None)).unwrap();
    }
    let err = site.train(&task(4, None)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::OverBudget, "{err}");
    assert!(err.message.contains("refuses round 4"), "{}", err.message);
    assert_eq!(inner.0.load(Ordering::SeqCst), 3);
    let ledger = Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap();
    assert_eq!(ledger.charges().len(), 3);
    assert!((ledger.spent().unwrap() - three).abs() < 1e-9);
    assert!(
        ledger
            .charges()
            .iter()
            .all(|c| c.q == 1.0 && c.steps == 1 && c.noise_multiplier == sigma)
    );
}

#[test]
fn a_budgeted_site_refuses_federated_evaluation() {
    let dir = scratch("noeval");
    let inner = Arc::new(CountingSite(AtomicUsize::new(0)));
    let site = BudgetedSite::new(
        inner.clone(),
        "fed",
        RoundPrice::ClientLevel {
            noise_multiplier: 1.0,
            rate: 1.0,
        },
        10.0,
        Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap(),
    );
    let model = Arc::new(ParamSet::from_tensors([("w".to_string(), vec![1], vec![0.0])]).unwrap());
    let err = site.evaluate(&model).unwrap_err();
    assert!(
        err.kind == ErrorKind::Refused && err.message.contains("federated evaluation"),
        "{}",
        err
    );
    assert_eq!(inner.0.load(Ordering::SeqCst), 0);
}

#[test]
fn two_handles_on_one_ledger_cannot_both_spend_the_budget() {
    let dir = scratch("concurrent");
    let (q, steps) = round_cost(1000, 50, 1);
    let one = epsilon(q, 1.0, steps, 1e-5).unwrap().epsilon;
    let two = epsilon(q, 1.0, 2 * steps, 1e-5).unwrap().epsilon;
    let budget = (one + two) / 2.0; // room for one round only
    // Two runs open the ledger before either charges it.
    let mut a = Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap();
    let mut b = Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap();
    a.charge_within(budget, "run-a", 1, q, 1.0, steps).unwrap();
    let err = b
        .charge_within(budget, "run-b", 1, q, 1.0, steps)
        .unwrap_err();
    assert!(matches!(err, LedgerError::OverBudget { .. }), "{err}");
    let reopened = Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap();
    assert_eq!(
        reopened.charges().len(),
        1,
        "run-b's charge must not overwrite run-a's"
    );
}

#[test]
fn a_budgeted_site_tells_what_its_ledger_has_spent() {
    let dir = scratch("spent");
    let site = BudgetedSite::new(
        Arc::new(CountingSite(AtomicUsize::new(0))),
        "fed",
        RoundPrice::DpSgd { examples: 1000 },
        100.0,
        Ledger::open(&dir, "clinic", "digits", 1e-5).unwrap(),
    );
    assert_eq!(site.spent(), Some(0.0));
    site.train(&task(1, Some(DP))).unwrap();
    let (q, steps) = round_cost(1000, 50, 1);
    let want = epsilon(q, DP.noise_multiplier, steps, 1e-5)
        .unwrap()
        .epsilon;
    assert!((site.spent().unwrap() - want).abs() < 1e-9);
}
