//! The node's half of `UploadResult` against a stand-in coordinator on loopback: parameters
//! leave only after `proceed`, and the call returns when the coordinator says `done`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use entente_proto::chunks::{Assembler, chunk_at, chunk_count};
use entente_proto::upload;
use entente_proto::v1::coordinator_client::CoordinatorClient;
use entente_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use entente_proto::v1::{
    self, HeartbeatReply, HeartbeatRequest, PollRequest, RegisterReply, RegisterRequest,
    ResultFrame, TaskFrame, UploadReply, result_frame, result_header, upload_reply,
};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// What the stand-in saw of one upload.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seen {
    /// Frames that arrived after the header before `proceed` was sent.
    early_frames: usize,
    /// The reassembled parameters.
    values: Vec<f32>,
}

/// Answers uploads only; asks for parameters after a pause, as a coordinator does while an
/// earlier site's update is folded.
struct StandIn {
    seen: Arc<Mutex<Seen>>,
}

type Replies = Pin<Box<dyn Stream<Item = Result<UploadReply, Status>> + Send>>;
type Frames = Pin<Box<dyn Stream<Item = Result<TaskFrame, Status>> + Send>>;

fn reply(r: upload_reply::Reply) -> Result<UploadReply, Status> {
    Ok(UploadReply { reply: Some(r) })
}

#[tonic::async_trait]
impl Coordinator for StandIn {
    async fn register(
        &self,
        _: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    async fn heartbeat(
        &self,
        _: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    type PollTaskStream = Frames;

    async fn poll_task(&self, _: Request<PollRequest>) -> Result<Response<Frames>, Status> {
        Err(Status::unimplemented("stand-in"))
    }

    type UploadResultStream = Replies;

    async fn upload_result(
        &self,
        request: Request<Streaming<ResultFrame>>,
    ) -> Result<Response<Replies>, Status> {
        let mut frames = request.into_inner();
        let Some(ResultFrame {
            frame: Some(result_frame::Frame::Header(head)),
        }) = frames.message().await?
        else {
            return Err(Status::invalid_argument("no header"));
        };
        let total: usize = head
            .layout
            .iter()
            .map(|t| t.shape.iter().product::<u64>() as usize)
            .sum();
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let seen = Arc::clone(&self.seen);
        tokio::spawn(async move {
            let mut early = 0;
            while let Ok(Ok(Some(_))) =
                tokio::time::timeout(Duration::from_millis(300), frames.message()).await
            {
                early += 1;
            }
            let _ = tx
                .send(reply(upload_reply::Reply::Proceed(v1::Proceed {})))
                .await;
            let mut assembler = Assembler::new(total);
            while let Ok(Some(frame)) = frames.message().await {
                if let Some(result_frame::Frame::Chunk(c)) = frame.frame {
                    assembler.push(&c).unwrap();
                }
            }
            *seen.lock().unwrap() = Seen {
                early_frames: early,
                values: assembler.finish().unwrap(),
            };
            let _ = tx.send(reply(upload_reply::Reply::Done(v1::Done {}))).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_leave_only_after_proceed_and_arrive_whole() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = CoordinatorServer::new(StandIn {
        seen: Arc::clone(&seen),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let mut client = CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .unwrap();

    // Three and a bit chunks of distinct values.
    let values: Vec<f32> = (0..200_000).map(|i| i as f32 * 0.5).collect();
    let head = ResultFrame {
        frame: Some(result_frame::Frame::Header(v1::ResultHeader {
            task_id: 7,
            layout: vec![v1::TensorInfo {
                name: "w".into(),
                shape: vec![values.len() as u64],
            }],
            outcome: Some(result_header::Outcome::Train(v1::TrainResult {
                num_examples: 1,
                train_loss: 0.0,
            })),
            kind: String::new(),
        })),
    };
    let chunks = (0..chunk_count(values.len())).map(|i| ResultFrame {
        frame: Some(result_frame::Frame::Chunk(chunk_at(&values, i).unwrap())),
    });
    upload::submit(&mut client, head, chunks).await.unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.early_frames, 0, "chunks were sent before proceed");
    assert_eq!(seen.values, values);
}
