//! The node's half of `UploadResult`: the result's header first; parameters (or the parts of a
//! secure-aggregation reply) only once the coordinator says `proceed`, so an upload that waits
//! for its turn holds nothing but its header on either side.

use std::sync::Arc;

use entente_core::engine::ErrorKind;
use entente_core::params::ParamSet;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::transport::Channel;

use crate::chunks::chunks_of;
use crate::convert::layout_to_wire;
use crate::envelope::parts_of;
use crate::v1::coordinator_client::CoordinatorClient;
use crate::v1::{ResultFrame, ResultHeader, SecureSpec, result_frame, result_header, upload_reply};

/// The frames of a result to task `task_id`: its header (with the layout of `params`, if the
/// result has any, and the `kind` of a refusal), then the parameters' chunks.
pub fn result_frames(
    task_id: u64,
    outcome: result_header::Outcome,
    kind: Option<ErrorKind>,
    params: Option<ParamSet>,
) -> (ResultFrame, impl Iterator<Item = ResultFrame> + Send) {
    let header = ResultFrame {
        frame: Some(result_frame::Frame::Header(ResultHeader {
            task_id,
            layout: params
                .as_ref()
                .map(|p| layout_to_wire(p.layout()))
                .unwrap_or_default(),
            outcome: Some(outcome),
            kind: kind.map(|k| k.as_str().to_string()).unwrap_or_default(),
        })),
    };
    let chunks = params
        .map(Arc::new)
        .into_iter()
        .flat_map(chunks_of)
        .map(|c| ResultFrame {
            frame: Some(result_frame::Frame::Chunk(c)),
        });
    (header, chunks)
}

/// The frames of a secure-aggregation reply to task `task_id`: a header announcing its length,
/// then its bytes in parts ([`crate::envelope`]), however large the reply.
pub fn secure_reply_frames(
    task_id: u64,
    envelope: Vec<u8>,
) -> (ResultFrame, impl Iterator<Item = ResultFrame> + Send) {
    let header = ResultFrame {
        frame: Some(result_frame::Frame::Header(ResultHeader {
            task_id,
            layout: Vec::new(),
            outcome: Some(result_header::Outcome::Secure(SecureSpec {
                envelope: Vec::new(),
                streamed_bytes: envelope.len() as u64,
            })),
            kind: String::new(),
        })),
    };
    let parts = parts_of(envelope).map(|p| ResultFrame {
        frame: Some(result_frame::Frame::EnvelopePart(p)),
    });
    (header, parts)
}

/// Sends `header`, then `chunks` when the coordinator asks for them, and returns once it has
/// received the result.
pub async fn submit(
    client: &mut CoordinatorClient<Channel>,
    header: ResultFrame,
    chunks: impl Iterator<Item = ResultFrame>,
) -> Result<(), Status> {
    let (sender, frames) = mpsc::channel(2);
    let request = tokio_stream::once(header).chain(ReceiverStream::new(frames));
    let mut replies = client.upload_result(request).await?.into_inner();
    let mut pending = Some((sender, chunks));
    loop {
        let reply = replies.message().await?.and_then(|r| r.reply);
        match reply {
            Some(upload_reply::Reply::Proceed(_)) => {
                let Some((sender, chunks)) = pending.take() else {
                    return Err(Status::internal(
                        "the coordinator asked twice for parameters",
                    ));
                };
                for chunk in chunks {
                    if sender.send(chunk).await.is_err() {
                        break;
                    }
                }
                // Dropping the sender ends the request stream: the parameters are complete.
            }
            Some(upload_reply::Reply::Done(_)) => return Ok(()),
            None => {
                return Err(Status::unavailable(
                    "the coordinator ended the upload without receiving the result",
                ));
            }
        }
    }
}
