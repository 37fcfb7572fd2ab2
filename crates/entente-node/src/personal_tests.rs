//! A node under FedPer (`[personalization] personal`): it refuses a task that carries a
//! personal tensor, and what it puts on the wire for a training task it accepts (the result
//! frames, as `submit` streams them) holds neither the name nor the bytes of any personal
//! tensor, round after round, while its personal tensors train and are kept on disk.

use std::path::Path;
use std::sync::Arc;

use entente_core::manifest::Manifest;
use entente_core::params::ParamSet;
use entente_core::personal;
use entente_learn::personal_head::PERSONAL_MODEL_FILE;
use entente_proto::convert::{layout_to_wire, training_to_wire};
use entente_proto::upload;
use entente_proto::v1::{TaskHeader, TrainSpec, result_header, task_header};
use prost::Message;

use super::{Outcome, execute};
use crate::checks::Agreement;
use crate::local::{LocalParticipant, Trainer, participant};

const HEAD: [&str; 2] = ["layers.1.weight", "layers.1.bias"];

fn manifest(dir: &Path) -> Manifest {
    let text = format!(
        "{}\n[personalization]\nmethod = \"fedrep\"\npersonal = [\"{}\", \"{}\"]\ndir = \"{}\"\n",
        include_str!("../../../examples/digits.toml"),
        HEAD[0],
        HEAD[1],
        dir.join("kept").display()
    );
    Manifest::parse(&text, "digits.toml", dir).unwrap()
}

fn node(dir: &Path) -> (Agreement, LocalParticipant) {
    let manifest = manifest(dir);
    let site = manifest.sites[0].clone();
    let local = participant(&manifest, &site, &Trainer::Builtin { data: None }, None).unwrap();
    let agreement = Agreement {
        digest: manifest.agreement_digest(),
        site,
        layout: local.layout.clone(),
        train_layout: local.train_layout.clone(),
        manifest,
    };
    (agreement, local)
}

fn train_header(a: &Agreement, round: u32, params: &ParamSet) -> TaskHeader {
    TaskHeader {
        manifest_sha256: a.digest.clone(),
        round,
        layout: layout_to_wire(params.layout()),
        kind: Some(task_header::Kind::Train(TrainSpec {
            seed: u64::from(round),
            training: Some(training_to_wire(&a.manifest.training)),
            selected: a.manifest.sites.clone(),
        })),
        ..Default::default()
    }
}

/// Every byte of the frames a trained result goes out as.
fn wire_bytes(outcome: Outcome) -> Vec<u8> {
    let Outcome::Trained {
        examples,
        loss,
        params,
    } = outcome
    else {
        panic!("the node did not train");
    };
    let result = result_header::Outcome::Train(entente_proto::v1::TrainResult {
        num_examples: examples,
        train_loss: loss,
    });
    let (head, chunks) = upload::result_frames(1, result, None, Some(params));
    let mut bytes = head.encode_to_vec();
    for c in chunks {
        bytes.extend(c.encode_to_vec());
    }
    bytes
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_task_carrying_a_personal_tensor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = node(dir.path());
    let whole = entente_learn::simulation::federation_model(&a.manifest, None)
        .unwrap()
        .initial;
    let err = a.check_layout(&train_header(&a, 1, &whole)).unwrap_err();
    assert!(
        err.contains("`layers.1.weight`, a personal tensor"),
        "{err}"
    );
}

#[test]
fn nothing_personal_goes_on_the_wire_and_the_head_is_kept_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (a, local) = node(dir.path());
    let personal_names: Vec<String> = HEAD.map(String::from).to_vec();
    let whole = entente_learn::simulation::federation_model(&a.manifest, None)
        .unwrap()
        .initial;
    let mut shared = personal::split(&whole, &personal_names).unwrap().0;
    let kept = dir.path().join("kept").join(&a.manifest.name).join(&a.site);
    for round in 1..=3 {
        let header = train_header(&a, round, &shared);
        a.check_header(&header).unwrap();
        a.check_layout(&header).unwrap();
        let outcome = execute(&a, &local, header, Some(Arc::new(shared.clone())), None);
        if let Outcome::Trained { params, .. } = &outcome {
            shared = params.clone();
        }
        let bytes = wire_bytes(outcome);
        // What the node keeps: the personal model it wrote after this round.
        let own = ParamSet::load(&kept.join(PERSONAL_MODEL_FILE)).unwrap();
        for name in HEAD {
            assert!(
                !contains(&bytes, name.as_bytes()),
                "round {round}: `{name}` on the wire"
            );
            let values = own.get(name).unwrap();
            let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            // Any 16 bytes in a row of a personal tensor would betray it.
            for window in raw.chunks(16).filter(|w| w.len() == 16) {
                assert!(
                    !contains(&bytes, window),
                    "round {round}: `{name}`'s values on the wire"
                );
            }
        }
        assert!(
            contains(&bytes, b"layers.0.weight"),
            "the shared tensors are sent"
        );
    }
    // The personal tensors trained, and a restarted node takes them up.
    let own = ParamSet::load(&kept.join(PERSONAL_MODEL_FILE)).unwrap();
    assert_ne!(own.get(HEAD[0]), whole.get(HEAD[0]));
    let (_, restarted) = node(dir.path());
    let header = train_header(&a, 4, &shared);
    assert!(matches!(
        execute(&a, &restarted, header, Some(Arc::new(shared)), None),
        Outcome::Trained { .. }
    ));
}
