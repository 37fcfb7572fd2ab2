//! A node receiving a task: length-delimited `TaskFrame`s as they come off the wire, checked
//! as the node checks them (its manifest's terms, round, model layout, training settings and
//! site list) and converted to the engine's types. Any bytes are accepted or refused with a
//! reason; never a panic. What converts, converts back to the same message.
#![no_main]

use std::path::Path;
use std::sync::LazyLock;

use entente_core::manifest::Manifest;
use entente_learn::simulation::federation_model;
use entente_node::checks::Agreement;
use entente_proto::convert::{
    layout_from_wire, layout_to_wire, training_from_wire, training_to_wire,
};
use entente_proto::v1::{TaskFrame, task_frame, task_header};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// The node's agreement: a two-site federation training a small MLP on 4-feature tables.
static AGREEMENT: LazyLock<Agreement> = LazyLock::new(|| {
    let text = include_str!("../corpus/manifest/tables.toml");
    let manifest = Manifest::parse(text, "tables.toml", Path::new("/nonexistent"))
        .expect("the fuzz manifest is valid");
    let model = federation_model(&manifest, None).expect("the fuzz manifest states its model");
    let layout = (**model.initial.layout()).clone();
    Agreement {
        digest: manifest.agreement_digest(),
        site: manifest.sites[0].clone(),
        // Not SCAFFOLD: a training task carries the model alone.
        train_layout: layout.clone(),
        layout,
        manifest,
    }
});

fuzz_target!(|data: &[u8]| {
    let agreement = &*AGREEMENT;
    let mut rest = data;
    while !rest.is_empty() {
        let Ok(frame) = TaskFrame::decode_length_delimited(&mut rest) else {
            return;
        };
        let Some(task_frame::Frame::Header(header)) = frame.frame else {
            continue;
        };
        let _ = agreement.check_header(&header);
        let _ = agreement.check_layout(&header);
        if let Ok(layout) = layout_from_wire(&header.layout) {
            let back = layout_from_wire(&layout_to_wire(&layout)).expect("a layout converts back");
            assert_eq!(back, layout);
        }
        if let Some(task_header::Kind::Train(spec)) = &header.kind {
            let _ = agreement.check_training(spec);
            if let Some(Ok(training)) = spec.training.as_ref().map(training_from_wire) {
                let back = training_from_wire(&training_to_wire(&training))
                    .expect("training settings convert back");
                assert_eq!(format!("{back:?}"), format!("{training:?}"));
            }
        }
    }
});
