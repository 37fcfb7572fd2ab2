//! SecAgg through the round engine: the secure path gives the plaintext FedAvg result within
//! the quantization bound, survives sites that drop out in any phase, and aborts cleanly.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{PatternSite, initial, rules, secure_sites};
use entente_core::aggregators::{Strategy, build};
use entente_core::engine::{
    EngineError, Envelope, NoObserver, RoundEngine, Site, SiteError, TrainTask, Turn,
};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::SiteUpdate;
use entente_privacy::secagg::{MaskPrg, Modulus, Security};
use entente_privacy::secure_round::{SecAggCoordinator, SecAggSettings};

const DIM: usize = 300;

/// A site-specific pattern in [-0.25, 0.25].
fn pattern(index: usize, j: usize) -> f32 {
    ((index * 7 + j * 3) % 11) as f32 / 20.0 - 0.25
}

fn settings() -> SecAggSettings {
    SecAggSettings {
        threshold: 0.6,
        neighbours: None,
        clip: 1.0,
        max_examples: 1000,
        modulus: Modulus::Pow32,
        seed: 9,
        num_sites: 6,
        min_sites: 3,
        distributed_dp: None,
        prg: MaskPrg::default(),
        security: Security::HonestButCurious,
        context: [0; 32],
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("site-{i}")).collect()
}

fn plain_sites(n: usize) -> Vec<Arc<dyn Site>> {
    (0..n)
        .map(|i| {
            Arc::new(PatternSite {
                name: format!("site-{i}"),
                index: i,
                pattern,
                examples: 10 + 7 * i as u64,
            }) as Arc<dyn Site>
        })
        .collect()
}

fn plain_result(sites: Vec<Arc<dyn Site>>) -> Vec<f32> {
    let mut e = RoundEngine::new(
        sites,
        build(&Strategy::FedAvg).unwrap(),
        None,
        rules(1),
        initial(DIM),
    );
    e.run_round(1, &mut NoObserver).unwrap();
    e.global().as_flat().to_vec()
}

fn secure_engine(n: usize, drops: &[(usize, usize)]) -> RoundEngine {
    secure_engine_with(settings(), n, drops)
}

fn secure_engine_with(settings: SecAggSettings, n: usize, drops: &[(usize, usize)]) -> RoundEngine {
    RoundEngine::new(
        secure_sites(plain_sites(n), &settings, drops, true),
        build(&Strategy::FedAvg).unwrap(),
        None,
        rules(3),
        initial(DIM),
    )
    .with_secure_aggregation(Box::new(SecAggCoordinator::new(settings, &names(n))))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn secure_round_matches_plaintext_fedavg() {
    let mut e = secure_engine(6, &[]);
    let r = e.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(r.accepted.len(), 6);
    let want = plain_result(plain_sites(6));
    let diff = max_diff(e.global().as_flat(), &want);
    // Fixed point with the largest safe scale: the error is far below 1e-4 here.
    assert!(diff < 1e-4, "difference {diff}");
    assert!(diff > 0.0 || e.global().as_flat() == want.as_slice());
}

#[test]
fn sites_dropping_out_at_each_phase_are_left_out_and_the_rest_is_right() {
    for phase in 0..3 {
        let mut e = secure_engine(6, &[(2, phase)]);
        let r = e.run_round(1, &mut NoObserver).unwrap();
        assert!(!r.accepted.contains(&"site-2".to_string()), "phase {phase}");
        assert_eq!(r.accepted.len(), 5, "phase {phase}: {:?}", r.excluded);
        {
            // Dropped before its masked input counted: the mean is over the other five.
            let others: Vec<Arc<dyn Site>> = plain_sites(6)
                .into_iter()
                .enumerate()
                .filter(|(i, _)| *i != 2)
                .map(|(_, s)| s)
                .collect();
            let want = plain_result(others);
            let diff = max_diff(e.global().as_flat(), &want);
            assert!(diff < 1e-4, "phase {phase}: difference {diff}");
        }
    }
}

#[test]
fn a_site_lost_during_unmasking_still_counts() {
    // Its masked input arrived; the others' shares remove its masks.
    let mut e = secure_engine(6, &[(2, 3)]);
    let r = e.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(r.accepted.len(), 6, "{:?}", r.excluded);
    let diff = max_diff(e.global().as_flat(), &plain_result(plain_sites(6)));
    assert!(diff < 1e-4, "difference {diff}");
}

#[test]
fn too_many_dropouts_abort_the_round_and_keep_the_model() {
    let mut e = secure_engine(6, &[(0, 1), (1, 1), (2, 1), (3, 1)]);
    let err = e.run_round(1, &mut NoObserver).unwrap_err();
    assert!(
        matches!(err, EngineError::SecureAggregation { round: 1, .. }),
        "{err}"
    );
    assert_eq!(e.global().as_flat(), initial(DIM).as_flat());
}

fn active() -> SecAggSettings {
    SecAggSettings {
        security: Security::Active,
        context: entente_privacy::secagg::auth::context_of(b"secure_round test"),
        ..settings()
    }
}

/// Signed keys and the consistency check change nothing in the result: the same model, bit
/// for bit, with every site in and with one dropping out before its masked input.
#[test]
fn active_security_gives_the_same_model_as_honest_but_curious() {
    for drops in [&[][..], &[(2, 2)][..]] {
        let mut a = secure_engine_with(active(), 6, drops);
        let mut h = secure_engine_with(settings(), 6, drops);
        let ra = a.run_round(1, &mut NoObserver).unwrap();
        let rh = h.run_round(1, &mut NoObserver).unwrap();
        assert_eq!(ra.accepted, rh.accepted);
        assert_eq!(a.global().as_flat(), h.global().as_flat());
    }
    // A site lost after signing the survivor list still counts: the others unmask it.
    let mut a = secure_engine_with(active(), 6, &[(2, 4)]);
    let r = a.run_round(1, &mut NoObserver).unwrap();
    assert_eq!(r.accepted.len(), 6, "{:?}", r.excluded);
}

/// A coordinator cannot downgrade sites that agreed to active security.
#[test]
fn sites_refuse_a_downgrade_to_honest_but_curious() {
    let mut e = RoundEngine::new(
        secure_sites(plain_sites(4), &active(), &[], true),
        build(&Strategy::FedAvg).unwrap(),
        None,
        rules(3),
        initial(DIM),
    )
    .with_secure_aggregation(Box::new(SecAggCoordinator::new(settings(), &names(4))));
    let err = e.run_round(1, &mut NoObserver).unwrap_err();
    assert!(
        matches!(err, EngineError::SecureAggregation { .. }),
        "{err}"
    );
    assert_eq!(e.global().as_flat(), initial(DIM).as_flat());
}

#[test]
fn a_site_refuses_settings_that_differ_from_the_manifest() {
    let mut other = settings();
    other.clip = 5.0;
    let mut e = RoundEngine::new(
        secure_sites(plain_sites(4), &settings(), &[], true),
        build(&Strategy::FedAvg).unwrap(),
        None,
        rules(3),
        initial(DIM),
    )
    .with_secure_aggregation(Box::new(SecAggCoordinator::new(other, &names(4))));
    let err = e.run_round(1, &mut NoObserver).unwrap_err();
    assert!(
        matches!(err, EngineError::SecureAggregation { .. }),
        "{err}"
    );
}

/// Either mask generator gives the same model, bit for bit: the masks cancel exactly, with
/// every site in and with one dropping out after sharing its keys (whose pairwise masks the
/// coordinator then expands with the same generator to remove them).
#[test]
fn either_mask_generator_gives_the_same_aggregate() {
    for drops in [&[][..], &[(2, 2)][..]] {
        let results: Vec<Vec<f32>> = MaskPrg::ALL
            .into_iter()
            .map(|prg| {
                let mut e = secure_engine_with(SecAggSettings { prg, ..settings() }, 6, drops);
                let r = e.run_round(1, &mut NoObserver).unwrap();
                assert_eq!(r.accepted.len(), 6 - drops.len(), "{prg}: {:?}", r.excluded);
                e.global().as_flat().to_vec()
            })
            .collect();
        assert_eq!(results[0], results[1], "drops {drops:?}");
    }
}

/// The generator is part of what every site agreed to: a coordinator using the other one is
/// refused before any key is sent.
#[test]
fn a_site_refuses_a_round_with_another_mask_generator() {
    for prg in MaskPrg::ALL {
        let other = MaskPrg::ALL.into_iter().find(|&p| p != prg).unwrap();
        let mut e = RoundEngine::new(
            secure_sites(
                plain_sites(4),
                &SecAggSettings { prg, ..settings() },
                &[],
                true,
            ),
            build(&Strategy::FedAvg).unwrap(),
            None,
            rules(3),
            initial(DIM),
        )
        .with_secure_aggregation(Box::new(SecAggCoordinator::new(
            SecAggSettings {
                prg: other,
                ..settings()
            },
            &names(4),
        )));
        let err = e.run_round(1, &mut NoObserver).unwrap_err();
        assert!(
            matches!(err, EngineError::SecureAggregation { .. }),
            "{err}"
        );
        assert_eq!(e.global().as_flat(), initial(DIM).as_flat());
    }
}

#[test]
fn sites_refuse_a_round_over_too_few_sites() {
    // Only two sites take part: unmasking would hand each the other's update, so they refuse.
    let sites: Vec<Arc<dyn Site>> = secure_sites(plain_sites(2), &settings(), &[], true);
    let mut e = RoundEngine::new(
        sites,
        build(&Strategy::FedAvg).unwrap(),
        None,
        rules(1),
        initial(DIM),
    )
    .with_secure_aggregation(Box::new(SecAggCoordinator::new(settings(), &names(2))));
    let err = e.run_round(1, &mut NoObserver).unwrap_err();
    assert!(
        matches!(err, EngineError::SecureAggregation { .. }),
        "{err}"
    );
    assert_eq!(e.global().as_flat(), initial(DIM).as_flat());
}

#[test]
fn settings_that_would_overflow_are_caught_before_any_round() {
    assert!(settings().check(DIM).is_ok());
    let mut huge = settings();
    huge.max_examples = u64::MAX / 2;
    let err = huge.check(DIM).unwrap_err();
    assert!(err.contains("secure aggregation cannot run"), "{err}");
}

/// Passes everything on, noting the longest secure-aggregation reply.
struct Measured {
    inner: Arc<dyn Site>,
    longest: Arc<AtomicUsize>,
}

impl Site for Measured {
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
        let reply = self.inner.secure_exchange(round, message, turn)?;
        self.longest.fetch_max(reply.0.len(), Ordering::SeqCst);
        Ok(reply)
    }
}

#[test]
fn a_masked_input_takes_four_bytes_a_value_within_the_bound_a_transport_enforces() {
    let dim = 20_000;
    let longest = Arc::new(AtomicUsize::new(0));
    let sites = secure_sites(plain_sites(6), &settings(), &[], true)
        .into_iter()
        .map(|inner| {
            Arc::new(Measured {
                inner,
                longest: Arc::clone(&longest),
            }) as Arc<dyn Site>
        })
        .collect();
    let mut e = RoundEngine::new(
        sites,
        build(&Strategy::FedAvg).unwrap(),
        None,
        rules(3),
        initial(dim),
    )
    .with_secure_aggregation(Box::new(SecAggCoordinator::new(settings(), &names(6))));
    assert_eq!(e.run_round(1, &mut NoObserver).unwrap().accepted.len(), 6);
    // The masked input is the longest reply: one 4-byte word per value and one for the
    // weight, and a few bytes of framing (a variable-length encoding would take 5 a word).
    let longest = longest.load(Ordering::SeqCst) as u64;
    let words = 4 * (dim as u64 + 1);
    assert!(
        (words..words + 64).contains(&longest),
        "longest reply {longest} bytes for {words} bytes of words"
    );
    assert!(longest <= settings().max_masked_bytes(dim));
}
