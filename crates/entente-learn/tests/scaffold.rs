//! SCAFFOLD's site half on the repository's digits: the drift correction against the plain
//! SGD step it shifts, the control-variate update against its formula, and a site that keeps
//! its control variate across restarts.

mod common;

use std::sync::Arc;

use common::{digits, mlp};
use entente_core::aggregators::scaffold::{split_control, with_control};
use entente_core::engine::{ErrorKind, LocalOptimizer, LocalTraining, Site, TrainTask};
use entente_core::params::ParamSet;
use entente_learn::scaffold::ScaffoldSite;
use entente_learn::site::LocalSite;
use entente_learn::trainer::{self, Objective};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const LR: f64 = 0.1;

fn training(epochs: usize, batch_size: usize) -> LocalTraining {
    LocalTraining {
        epochs,
        batch_size,
        learning_rate: LR,
        optimizer: LocalOptimizer::Sgd { momentum: 0.0 },
        fedprox_mu: 0.0,
        dp_sgd: None,
    }
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// `model`'s layout filled with seeded values in [-scale, scale].
fn noise(model: &ParamSet, seed: u64, scale: f32) -> ParamSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = model.zeros_like();
    for v in out.as_flat_mut() {
        *v = rng.random_range(-scale..=scale);
    }
    out
}

/// The first 32 digits: one full batch, so one epoch is one step.
fn one_batch_site(name: &str) -> Arc<LocalSite> {
    let (train, test) = digits();
    let first: Vec<usize> = (0..32).collect();
    Arc::new(LocalSite::new(
        name,
        mlp(),
        train.subset(&first),
        test.clone(),
    ))
}

fn task(round: u32, model: &ParamSet, control: &ParamSet, cfg: &LocalTraining) -> TrainTask {
    TrainTask {
        round,
        global: Arc::new(with_control(model, control.as_flat()).unwrap()),
        training: cfg.clone(),
        seed: 7 + u64::from(round),
        turn: None,
    }
}

/// One full-batch SGD step on `loss + <w, d>` is the plain step moved by `-eta * d`.
#[test]
fn the_correction_moves_an_sgd_step_by_minus_eta_times_d() {
    let site = one_batch_site("a");
    let x = mlp().init_params(1).unwrap();
    let d = noise(&x, 3, 0.5);
    let cfg = training(1, 32);
    let plain = trainer::train(site.spec(), &x, site.train_data(), &cfg, 9).unwrap();
    let corrected = trainer::train_with(
        site.spec(),
        &x,
        Objective {
            proximal: None,
            correction: Some(&d),
            frozen: &[],
        },
        site.train_data(),
        &cfg,
        9,
    )
    .unwrap();
    assert_eq!((plain.steps, corrected.steps), (1, 1));
    let mut worst = 0.0f64;
    for ((&p, &c), &dv) in plain
        .params
        .as_flat()
        .iter()
        .zip(corrected.params.as_flat())
        .zip(d.as_flat())
    {
        let want = f64::from(p) - LR * f64::from(dv);
        worst = worst.max((f64::from(c) - want).abs());
    }
    assert!(
        worst < 1e-6,
        "largest difference from the hand-computed step: {worst}"
    );
}

/// With c = c_i = 0 a site trains exactly as FedAvg's does and answers (x - y) / (K * eta);
/// its next control variate is c_i - c + that answer.
#[test]
fn a_site_answers_its_model_and_the_formula_s_control_variate() {
    let local = one_batch_site("a");
    let site = ScaffoldSite::new(Arc::clone(&local), None).unwrap();
    let x = mlp().init_params(1).unwrap();
    let cfg = training(2, 16);
    let zero = x.zeros_like();
    let first = task(1, &x, &zero, &cfg);
    let reply = site.train(&first).unwrap();
    let (y, answer) = split_control(&reply.params).unwrap();
    let plain = trainer::train(local.spec(), &x, local.train_data(), &cfg, first.seed).unwrap();
    assert_eq!(bits(y.as_flat()), bits(plain.params.as_flat()));
    let k = plain.steps as f64;
    assert_eq!(k, 4.0);
    for ((&a, &xv), &yv) in answer.as_flat().iter().zip(x.as_flat()).zip(y.as_flat()) {
        let want = ((f64::from(xv) - f64::from(yv)) / (k * LR)) as f32;
        assert_eq!(a.to_bits(), want.to_bits());
    }
    assert_eq!(
        bits(site.control().unwrap().as_flat()),
        bits(answer.as_flat())
    );

    // Round 2 with a server control variate c: c_i+ = c_i - c + answer.
    let c = noise(&x, 5, 0.05);
    let before = site.control().unwrap();
    let reply = site.train(&task(2, &y, &c, &cfg)).unwrap();
    let (_, answer) = split_control(&reply.params).unwrap();
    let after = site.control().unwrap();
    for (((&n, &b), &s), &a) in after
        .as_flat()
        .iter()
        .zip(before.as_flat())
        .zip(c.as_flat())
        .zip(answer.as_flat())
    {
        assert_eq!(n.to_bits(), (b - s + a).to_bits());
    }
}

/// A node restarted mid-run takes up the control variate it kept; one that lost it would
/// answer differently, so the comparison can fail.
#[test]
fn a_restarted_site_keeps_its_control_variate() {
    let x = mlp().init_params(1).unwrap();
    let cfg = training(1, 8);
    let c = noise(&x, 11, 0.01);
    let dirs = tempfile::tempdir().unwrap();
    let (kept, restarted) = (dirs.path().join("kept"), dirs.path().join("restarted"));
    let running = ScaffoldSite::new(one_batch_site("a"), Some(kept)).unwrap();
    let first = ScaffoldSite::new(one_batch_site("a"), Some(restarted.clone())).unwrap();
    let forgetful = ScaffoldSite::new(one_batch_site("a"), None).unwrap();
    for site in [&running, &first, &forgetful] {
        site.train(&task(1, &x, &c, &cfg)).unwrap();
    }
    drop(first);
    let again = ScaffoldSite::new(one_batch_site("a"), Some(restarted.clone())).unwrap();
    let forgotten = ScaffoldSite::new(one_batch_site("a"), None).unwrap();
    let round2 = task(2, &x, &c, &cfg);
    let want = running.train(&round2).unwrap().params;
    assert_eq!(again.train(&round2).unwrap().params, want);
    assert_ne!(forgotten.train(&round2).unwrap().params, want);
    drop(forgetful);

    // A round asked for again trains from the control variate before it, as the first
    // attempt did; only two rounds' files stay on disk.
    assert_eq!(again.train(&round2).unwrap().params, want);
    again.train(&task(3, &x, &c, &cfg)).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&restarted)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "round-0000000002.safetensors",
            "round-0000000003.safetensors"
        ]
    );
    // Round 2 again needs round 1's, which is gone (round 1 itself starts from zero, see
    // `round_one_asked_for_again_trains_from_zero`); the refusal names the folder.
    let err = again.train(&task(2, &x, &c, &cfg)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(err.reason().contains("cannot go back"), "{}", err.reason());
    assert!(
        err.reason().contains(&restarted.display().to_string()),
        "{}",
        err.reason()
    );
}

#[test]
fn a_task_without_a_control_variate_or_a_broken_kept_file_is_refused_clearly() {
    let x = mlp().init_params(1).unwrap();
    let site = ScaffoldSite::new(one_batch_site("a"), None).unwrap();
    let plain = TrainTask {
        global: Arc::new(x.clone()),
        ..task(1, &x, &x.zeros_like(), &training(1, 8))
    };
    let err = site.train(&plain).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(
        err.reason().contains("scaffold.control.NAME"),
        "{}",
        err.reason()
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("round-0000000004.safetensors"),
        b"not a model",
    )
    .unwrap();
    let err = ScaffoldSite::new(one_batch_site("a"), Some(dir.path().to_path_buf()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("round-0000000004.safetensors"), "{err}");
    assert!(err.contains("start over"), "{err}");
}

/// Round 1 always starts from a zero control variate: asked for again (a coordinator killed
/// during round 1 and restarted, or a new run of the same manifest finding an earlier run's
/// files), a site trains it again from zero instead of refusing every round 1 from then on.
#[test]
fn round_one_asked_for_again_trains_from_zero() {
    let x = mlp().init_params(1).unwrap();
    let cfg = training(1, 8);
    let c = noise(&x, 13, 0.01);
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("controls");
    let site = ScaffoldSite::new(one_batch_site("a"), Some(folder.clone())).unwrap();
    let first = site.train(&task(1, &x, &c, &cfg)).unwrap().params;
    // The same process asked again, as after a coordinator restart during round 1.
    assert_eq!(site.train(&task(1, &x, &c, &cfg)).unwrap().params, first);
    drop(site);
    // A restarted node, and a later run of the same manifest that starts over.
    let restarted = ScaffoldSite::new(one_batch_site("a"), Some(folder.clone())).unwrap();
    restarted.train(&task(2, &x, &c, &cfg)).unwrap();
    restarted.train(&task(3, &x, &c, &cfg)).unwrap();
    drop(restarted);
    let again = ScaffoldSite::new(one_batch_site("a"), Some(folder.clone())).unwrap();
    assert_eq!(again.train(&task(1, &x, &c, &cfg)).unwrap().params, first);
    let files: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, ["round-0000000001.safetensors"]);
}

/// Training that ends in infinities (a server control variate pushed to the edge of f32 by
/// another site, or a learning rate too large) is an error, and the site keeps no
/// non-finite control variate: the next round trains from the one it had, and succeeds.
#[test]
fn a_non_finite_outcome_is_not_kept() {
    let x = mlp().init_params(1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("controls");
    let site = ScaffoldSite::new(one_batch_site("a"), Some(folder.clone())).unwrap();
    let mut huge = x.zeros_like();
    huge.as_flat_mut().fill(f32::MAX);
    let cfg = LocalTraining {
        learning_rate: 4.0,
        ..training(1, 32)
    };
    let err = site.train(&task(1, &x, &huge, &cfg)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(
        site.control().is_none(),
        "a non-finite control variate was kept"
    );
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0);
    let reply = site
        .train(&task(2, &x, &x.zeros_like(), &training(1, 32)))
        .unwrap();
    assert!(reply.params.as_flat().iter().all(|v| v.is_finite()));
    assert!(
        site.control()
            .unwrap()
            .as_flat()
            .iter()
            .all(|v| v.is_finite())
    );
}

/// A kept file that is empty, cut short or holds a non-finite value stops the site at once,
/// naming the file, instead of training every later round from it.
#[test]
fn an_empty_truncated_or_non_finite_kept_file_is_refused_clearly() {
    let x = mlp().init_params(1).unwrap();
    let mut bytes = Vec::new();
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("good.safetensors");
        x.save(&path).unwrap();
        bytes.extend(std::fs::read(&path).unwrap());
    }
    let mut non_finite = x.clone();
    non_finite.as_flat_mut()[3] = f32::NAN;
    let cases: [(&str, Option<&[u8]>); 3] = [
        ("empty", Some(b"")),
        ("truncated", Some(&bytes[..bytes.len() / 2])),
        ("non-finite", None),
    ];
    for (what, content) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("round-0000000002.safetensors");
        match content {
            Some(b) => std::fs::write(&path, b).unwrap(),
            None => non_finite.save(&path).unwrap(),
        }
        let err = ScaffoldSite::new(one_batch_site("a"), Some(dir.path().to_path_buf()))
            .err()
            .unwrap_or_else(|| panic!("a kept file {what} was taken up"))
            .to_string();
        assert!(
            err.contains("round-0000000002.safetensors"),
            "{what}: {err}"
        );
    }
}
