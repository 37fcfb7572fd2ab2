//! A coordinator resuming from its store: the checkpoint's bytes (safetensors) become the
//! server optimizer's state for every rule that keeps one, and a round runs on from it. Any
//! bytes are refused or resumed from; never a panic.
#![no_main]

use std::sync::Arc;

use entente_core::aggregators::{FedOptKind, Strategy, build};
use entente_core::params::ParamSet;
use entente_core::update::{SiteUpdate, UpdatePolicy, validate};
use entente_fuzz::small_model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(state) = ParamSet::from_safetensors(data) else {
        return;
    };
    let global = Arc::new(small_model());
    let fedopt = |kind| Strategy::FedOpt {
        kind,
        server_learning_rate: 0.1,
        beta1: 0.9,
        beta2: 0.99,
        tau: 0.001,
    };
    let strategies = [
        Strategy::FedAvgM {
            server_learning_rate: 1.0,
            momentum: 0.9,
        },
        fedopt(FedOptKind::Adam),
        fedopt(FedOptKind::Yogi),
        fedopt(FedOptKind::Adagrad),
    ];
    for strategy in &strategies {
        let mut rule = build(strategy).expect("the strategy's settings are valid");
        if rule.restore(&state).is_err() {
            continue;
        }
        rule.begin(&global);
        let update = SiteUpdate {
            site: "site-a".into(),
            num_examples: 5,
            params: (*global).clone(),
            train_loss: 0.3,
        };
        let valid = validate(&global, update, &UpdatePolicy::default())
            .expect("the global model is a valid update");
        if rule.add(valid).is_ok() {
            let _ = rule.finish();
        }
    }
});
