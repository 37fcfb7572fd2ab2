//! A shared body with personal tensors (FedPer, FedRep) at a site of entente's own trainer, on
//! the repository's digits: the answer holds only shared tensors, a task that carries a
//! personal one is refused, FedRep's two phases each leave the other part as it was, and the
//! personal tensors outlive a restart.

mod common;

use std::sync::Arc;

use common::{digits, mlp};
use entente_core::engine::{ErrorKind, LocalOptimizer, LocalTraining, Site, TrainTask};
use entente_core::manifest::{ModelChoice, Personalization, model_tensor_names};
use entente_core::params::ParamSet;
use entente_core::personal;
use entente_learn::model::ModelSpec;
use entente_learn::personal_head::{PERSONAL_MODEL_FILE, PersonalHeadSite};
use entente_learn::site::LocalSite;

fn head() -> Vec<String> {
    vec!["layers.1.weight".into(), "layers.1.bias".into()]
}

fn site(choice: &Personalization, folder: Option<std::path::PathBuf>) -> PersonalHeadSite {
    let (train, test) = digits();
    let local = Arc::new(LocalSite::new(
        "a",
        mlp(),
        train.subset(&(0..200).collect::<Vec<_>>()),
        test.clone(),
    ));
    PersonalHeadSite::new(local, choice, &mlp().init_params(1).unwrap(), folder).unwrap()
}

fn task(round: u32, global: ParamSet) -> TrainTask {
    TrainTask {
        round,
        global: Arc::new(global),
        training: LocalTraining {
            epochs: 1,
            batch_size: 32,
            learning_rate: 0.1,
            optimizer: LocalOptimizer::Sgd { momentum: 0.0 },
            fedprox_mu: 0.0,
            dp_sgd: None,
        },
        seed: 11,
        turn: None,
    }
}

fn shared_initial() -> ParamSet {
    personal::split(&mlp().init_params(1).unwrap(), &head())
        .unwrap()
        .0
}

#[test]
fn core_names_the_tensors_entente_s_models_build() {
    let names = |spec: ModelSpec| -> Vec<String> {
        spec.tensor_shapes()
            .into_iter()
            .map(|(n, _, _)| n)
            .collect()
    };
    assert_eq!(
        model_tensor_names(&ModelChoice::Mlp {
            hidden: vec![64, 32]
        })
        .unwrap(),
        names(ModelSpec::Mlp {
            input: 64,
            hidden: vec![64, 32],
            classes: 10
        })
    );
    assert_eq!(
        model_tensor_names(&ModelChoice::Cnn).unwrap(),
        names(ModelSpec::Cnn {
            channels: 1,
            height: 28,
            width: 28,
            classes: 10
        })
    );
}

#[test]
fn fedper_answers_the_shared_tensors_only_and_keeps_its_head() {
    let s = site(&Personalization::FedPer { personal: head() }, None);
    let before = s.personal();
    let update = s.train(&task(1, shared_initial())).unwrap();
    assert_eq!(update.params.layout(), shared_initial().layout());
    assert_eq!(personal::carried(update.params.layout(), &head()), None);
    assert_ne!(update.params, shared_initial(), "the body trained");
    assert_ne!(s.personal(), before, "the head trained and was kept");

    // A task that carries a personal tensor is refused, and trains nothing.
    let kept = s.personal();
    let err = s
        .train(&task(2, mlp().init_params(1).unwrap()))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Refused);
    assert!(
        err.reason()
            .contains("`layers.1.weight`, a personal tensor"),
        "{}",
        err.reason()
    );
    assert_eq!(s.personal(), kept);
    assert!(
        s.evaluate(&Arc::new(mlp().init_params(1).unwrap()))
            .is_err()
    );
}

#[test]
fn fedrep_trains_the_head_with_the_body_frozen_then_the_body_with_the_head_frozen() {
    let body_only = site(
        &Personalization::FedRep {
            personal: head(),
            head_epochs: 2,
        },
        None,
    );
    let start = mlp().init_params(1).unwrap();
    let update = body_only.train(&task(1, shared_initial())).unwrap();
    let (_, initial_head) = personal::split(&start, &head()).unwrap();
    // The head moved in its own phase; the body moved only in the second one, from the
    // trained head: the update is not FedPer's joint training.
    assert_ne!(body_only.personal(), initial_head);
    assert_ne!(update.params, shared_initial());
    let fedper = site(&Personalization::FedPer { personal: head() }, None);
    assert_ne!(
        fedper.train(&task(1, shared_initial())).unwrap().params,
        update.params
    );
}

#[test]
fn the_personal_tensors_and_model_outlive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("a");
    let choice = Personalization::FedRep {
        personal: head(),
        head_epochs: 1,
    };
    let first = site(&choice, Some(folder.clone()));
    let update = first.train(&task(1, shared_initial())).unwrap();
    let kept = first.personal();
    drop(first);
    let written = ParamSet::load(&folder.join(PERSONAL_MODEL_FILE)).unwrap();
    assert_eq!(written.layout(), mlp().init_params(1).unwrap().layout());
    assert_eq!(personal::split(&written, &head()).unwrap().1, kept);
    let restarted = site(&choice, Some(folder));
    assert_eq!(restarted.personal(), kept);
    // Round 2 trains from the kept head, as an uninterrupted site would.
    let again = restarted.train(&task(2, update.params.clone())).unwrap();
    assert_eq!(personal::carried(again.params.layout(), &head()), None);
}

#[test]
fn frozen_tensors_leave_training_as_they_came() {
    let (train, _) = digits();
    let start = mlp().init_params(1).unwrap();
    let cfg = task(1, start.clone()).training;
    for frozen in [
        head(),
        vec!["layers.0.weight".into(), "layers.0.bias".into()],
    ] {
        let objective = entente_learn::trainer::Objective {
            frozen: &frozen,
            ..Default::default()
        };
        let out = entente_learn::trainer::train_with(&mlp(), &start, objective, train, &cfg, 3)
            .unwrap()
            .params;
        for (spec, values) in out.iter() {
            let moved = values != start.get(&spec.name).unwrap();
            assert_eq!(moved, !frozen.contains(&spec.name), "{}", spec.name);
        }
    }
}
