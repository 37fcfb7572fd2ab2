//! A coordinator receiving a node's result: length-delimited `ResultFrame`s as they come off
//! the wire, a header and then chunks, converted to the engine's types as the coordinator
//! does (layout, at most twice the model's size buffered, parameters from the chunks,
//! evaluation metrics) and checked as the engine checks an update; or a secure-aggregation
//! reply announced in its header and streamed in parts. Any bytes are accepted or refused;
//! never a panic.
#![no_main]

use std::sync::Arc;

use entente_core::params::ParamSet;
use entente_core::update::{SiteUpdate, UpdatePolicy, validate};
use entente_fuzz::small_model;
use entente_proto::chunks::Assembler;
use entente_proto::convert::{layout_from_wire, metrics_from_wire};
use entente_proto::envelope::EnvelopeAssembler;
use entente_proto::v1::{ResultFrame, result_frame, result_header};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let Ok(first) = ResultFrame::decode_length_delimited(&mut rest) else {
        return;
    };
    let Some(result_frame::Frame::Header(header)) = first.frame else {
        return;
    };
    match header.outcome {
        Some(result_header::Outcome::Train(train)) => {
            let global = small_model();
            let Ok(layout) = layout_from_wire(&header.layout) else {
                return;
            };
            if layout.total() > 2 * global.num_values() {
                return;
            }
            let mut assembler = Assembler::new(layout.total());
            while !rest.is_empty() {
                let Ok(frame) = ResultFrame::decode_length_delimited(&mut rest) else {
                    return;
                };
                let Some(result_frame::Frame::Chunk(chunk)) = frame.frame else {
                    return;
                };
                if assembler.push(&chunk).is_err() {
                    return;
                }
            }
            let Ok(values) = assembler.finish() else {
                return;
            };
            let params = ParamSet::from_flat(Arc::new(layout), values)
                .expect("the assembler returns the layout's number of values");
            let update = SiteUpdate {
                site: "site-a".into(),
                num_examples: train.num_examples,
                params,
                train_loss: train.train_loss,
            };
            let policy = UpdatePolicy {
                max_update_norm: Some(10.0),
                max_examples: Some(1000),
            };
            if let Ok(valid) = validate(&global, update, &policy) {
                assert!(valid.num_examples <= 1000 && valid.update_norm <= 10.0);
            }
        }
        Some(result_header::Outcome::Evaluate(metrics)) => {
            if let Ok(m) = metrics_from_wire(&metrics) {
                assert!(m.loss.is_finite() && (0.0..=1.0).contains(&m.accuracy));
            }
        }
        Some(result_header::Outcome::Secure(spec)) if spec.streamed_bytes > 0 => {
            // As the coordinator takes a streamed reply in: the announcement checked against
            // its limit (here 1 MiB), then the parts in order.
            if !spec.envelope.is_empty() || spec.streamed_bytes > 1 << 20 {
                return;
            }
            let expected = spec.streamed_bytes as usize;
            let mut assembler = EnvelopeAssembler::new(expected);
            while !rest.is_empty() {
                let Ok(frame) = ResultFrame::decode_length_delimited(&mut rest) else {
                    return;
                };
                let Some(result_frame::Frame::EnvelopePart(part)) = frame.frame else {
                    return;
                };
                if assembler.push(&part).is_err() {
                    return;
                }
            }
            if let Ok(bytes) = assembler.finish() {
                assert_eq!(bytes.len(), expected);
            }
        }
        _ => {}
    }
});
