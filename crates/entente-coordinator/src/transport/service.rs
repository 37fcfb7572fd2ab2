//! The coordinator's gRPC service. Every call identifies the node by its client certificate
//! (already verified against the federation CA during the TLS handshake) and refuses a
//! certificate that names no manifest site before anything else happens. Refusals and
//! admissions go to the audit log, refusals also to the bounded warning log.

use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use entente_core::digest::sha256_hex;
use entente_core::engine::ErrorKind;
use entente_core::manifest::compare_terms;
use entente_core::params::ParamSet;
use entente_core::text::{excerpt, truncate};
use entente_proto::chunks::{Assembler, chunks_of};
use entente_proto::convert::{
    layout_from_wire, layout_to_wire, metrics_from_wire, training_to_wire,
};
use entente_proto::envelope::EnvelopeAssembler;
use entente_proto::tls::site_name;
use entente_proto::v1::coordinator_server::Coordinator;
use entente_proto::v1::{
    self, HeartbeatReply, HeartbeatRequest, PollRequest, RegisterReply, RegisterRequest,
    ResultFrame, ResultHeader, TaskFrame, UploadReply, result_frame, result_header, task_frame,
    task_header, upload_reply,
};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::hub::{Hub, RouteError, Task, TaskKind, TaskResult};
use super::refusals::{Refusal, RefusalLog};
use super::revocation::RevocationGuard;
use crate::audit::{AuditEvent, kind};
use crate::store::Store;

/// Longest a poll may wait for a task.
const MAX_POLL: Duration = Duration::from_secs(30);

/// Uploads taken in ahead of their turn: while the engine folds one update, the next ones
/// already stream in, so the coordinator holds at most this many more updates than it folds.
const TAKEN_AHEAD: usize = 2;

/// How often an upload waiting for its turn checks that its node and the run are still there
/// (its turn itself wakes it at once).
const GONE_CHECK: Duration = Duration::from_millis(200);

/// Parameter downloads in flight at once, whatever the number of nodes: enough to keep the
/// network and the cores busy, few enough that per-transfer buffers stay small in total.
const MAX_TRANSFERS: usize = 16;

/// Longest manifest terms a node may send with its registration (bytes); longer ones are not
/// compared, and the refusal names the two digests only.
const MAX_TERMS: usize = 1 << 20;

/// The gRPC service of one run.
pub struct CoordinatorService {
    hub: Arc<Hub>,
    store: Store,
    run: i64,
    federation: String,
    /// The manifest's terms ([`entente_core::manifest::Manifest::agreement_terms`]) and their
    /// digest, which every node's must match.
    terms: String,
    digest: String,
    transfers: Arc<Semaphore>,
    /// Refusals of calls, shared with the listener's refusals of handshakes.
    refusals: Arc<RefusalLog>,
    /// The revocation list every call is checked against.
    revocations: Arc<RevocationGuard>,
}

impl CoordinatorService {
    /// The service of run `run` of `federation`, whose manifest has the terms `terms`,
    /// refusing the calls of certificates `revocations` revokes.
    pub fn new(
        hub: Arc<Hub>,
        store: Store,
        run: i64,
        federation: String,
        terms: String,
        revocations: Arc<RevocationGuard>,
    ) -> Self {
        let refusals = Arc::new(RefusalLog::new(store.clone(), run, Arc::clone(&hub)));
        Self {
            hub,
            store,
            run,
            federation,
            digest: sha256_hex(terms.as_bytes()),
            terms,
            transfers: Arc::new(Semaphore::new(MAX_TRANSFERS)),
            refusals,
            revocations,
        }
    }

    /// The bounded record of refusals, for the listener to share.
    pub(crate) fn refusals(&self) -> Arc<RefusalLog> {
        Arc::clone(&self.refusals)
    }

    /// Why a node whose manifest terms are `theirs` (hashing to `their_digest`) is refused:
    /// the first key that differs, when the node sent its terms.
    fn manifest_mismatch(&self, theirs: &str, their_digest: &str) -> String {
        let difference = (!theirs.is_empty() && theirs.len() <= MAX_TERMS)
            .then(|| compare_terms(&self.terms, theirs).ok().flatten())
            .flatten();
        match difference {
            Some(d) => format!(
                "the node's manifest differs from the coordinator's: {}; both must hold the same \
                 manifest (paths aside)",
                d.describe("the coordinator's manifest", "the node's")
            ),
            None => format!(
                "the node holds a manifest whose terms hash to {}, the coordinator runs {}; \
                 both must hold the same manifest (paths aside)",
                excerpt(their_digest),
                self.digest
            ),
        }
    }

    async fn audit(&self, kind: &str, site: Option<&str>, detail: serde_json::Value) {
        let event = AuditEvent {
            kind: kind.to_string(),
            run: Some(self.run),
            round: None,
            site: site.map(str::to_string),
            detail: detail.to_string(),
        };
        if let Err(e) = self.store.audit(event).await {
            tracing::error!(error = %e, "could not write to the audit log");
        }
    }

    /// The audit log's newest entry, for the node to keep with its task; `None` (and a logged
    /// error) if the store cannot say, which costs the node one anchor, not the task.
    async fn audit_head(&self) -> Option<v1::AuditHead> {
        match self.store.audit_head().await {
            Ok(head) => head.map(|h| v1::AuditHead {
                seq: h.seq,
                hash: h.hash,
            }),
            Err(e) => {
                tracing::error!(error = %e, "could not read the audit log's head");
                None
            }
        }
    }

    /// The manifest site the caller's certificate names; anyone else, and a site whose
    /// certificate is revoked, is refused (and the refusal recorded) before the call does
    /// anything.
    async fn site_of<T>(&self, request: &Request<T>, call: &str) -> Result<String, Status> {
        let addr = request.remote_addr();
        let peer = addr.map_or_else(|| "unknown address".to_string(), |a| a.to_string());
        let leaf = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()));
        let named = leaf.as_deref().map(site_name);
        let mut site_refused = None;
        let refusal = match named {
            Some(Ok(site)) if self.hub.knows(&site) => {
                match leaf
                    .as_deref()
                    .and_then(|cert| self.revocations.refusal(&site, cert))
                {
                    None => return Ok(site),
                    Some(reason) => {
                        site_refused = Some(site);
                        reason
                    }
                }
            }
            Some(Ok(site)) => format!(
                "certificate names `{site}`, which is not a site of this federation's manifest"
            ),
            Some(Err(e)) => format!("certificate is not a site certificate: {e}"),
            None => "no client certificate".to_string(),
        };
        let ip = addr.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let refused = Refusal {
            peer,
            site: site_refused,
            stage: call.to_string(),
            reason: refusal.clone(),
        };
        self.refusals.record(ip, refused).await;
        Err(Status::permission_denied(refusal))
    }
}

fn route_status(e: RouteError) -> Status {
    match e {
        RouteError::SessionHeld { .. } => Status::already_exists(e.to_string()),
        RouteError::StaleSession(_) => Status::failed_precondition(e.to_string()),
        RouteError::UnknownSite(_) => Status::permission_denied(e.to_string()),
        RouteError::UnknownTask(_) => Status::not_found(e.to_string()),
    }
}

/// The header of `task`, as the node receives it.
fn header(task: &Task, digest: &str, audit_head: Option<v1::AuditHead>) -> v1::TaskHeader {
    let kind = match &task.kind {
        TaskKind::Train {
            seed,
            training,
            selected,
        } => task_header::Kind::Train(v1::TrainSpec {
            seed: *seed,
            training: Some(training_to_wire(training)),
            selected: selected.clone(),
        }),
        TaskKind::Evaluate => task_header::Kind::Evaluate(v1::EvaluateSpec {}),
        TaskKind::Secure(bytes) => task_header::Kind::Secure(v1::SecureSpec {
            envelope: bytes.clone(),
            streamed_bytes: 0,
        }),
    };
    v1::TaskHeader {
        task_id: task.id,
        round: task.round,
        manifest_sha256: digest.to_string(),
        deadline_unix_ms: task
            .deadline
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        layout: task
            .params
            .as_ref()
            .map(|p| layout_to_wire(p.layout()))
            .unwrap_or_default(),
        kind: Some(kind),
        audit_head,
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<TaskFrame, Status>> + Send>>;

/// The frames of a task: its header, then its parameters chunk by chunk, each chunk cut only
/// when the connection is ready for it. `permit` is held until the stream is done.
/// Every frame is counted in the hub's traffic as sent to `site`.
fn frames(
    header: v1::TaskHeader,
    params: Option<Arc<ParamSet>>,
    permit: Option<OwnedSemaphorePermit>,
    hub: Arc<Hub>,
    site: String,
) -> FrameStream {
    let first = TaskFrame {
        frame: Some(task_frame::Frame::Header(header)),
    };
    let chunks = params.into_iter().flat_map(chunks_of).map(|c| TaskFrame {
        frame: Some(task_frame::Frame::Chunk(c)),
    });
    let counted = std::iter::once(first).chain(chunks).map(move |frame| {
        let _held = &permit;
        hub.traffic().sent(&site, frame.encoded_len());
        Ok(frame)
    });
    Box::pin(tokio_stream::iter(counted))
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let site = self.site_of(&request, "register").await?;
        let peer = request.remote_addr();
        let body = request.into_inner();
        let refused = if body.manifest_sha256 == self.digest {
            let previous = (body.previous_session != 0).then_some(body.previous_session);
            self.hub.register(&site, peer, previous).map_err(|e| {
                let reason = e.to_string();
                (route_status(e), reason)
            })
        } else {
            let reason = self.manifest_mismatch(&body.manifest_terms, &body.manifest_sha256);
            Err((Status::failed_precondition(reason.clone()), reason))
        };
        let session = match refused {
            Ok(session) => session,
            Err((status, reason)) => {
                let refused = Refusal {
                    peer: peer.map_or_else(|| "unknown address".to_string(), |a| a.to_string()),
                    site: Some(site),
                    stage: "register".into(),
                    reason,
                };
                let ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
                self.refusals.record(ip, refused).await;
                return Err(status);
            }
        };
        let version = excerpt(&body.version);
        tracing::info!(%site, %version, "site admitted");
        self.audit(
            kind::ADMISSION,
            Some(&site),
            serde_json::json!({ "version": version }),
        )
        .await;
        Ok(Response::new(RegisterReply {
            federation: self.federation.clone(),
            session,
            heartbeat_ms: self.hub.heartbeat().as_millis() as u32,
            audit_head: self.audit_head().await,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let site = self.site_of(&request, "heartbeat").await?;
        self.hub
            .touch(&site, request.into_inner().session)
            .map_err(route_status)?;
        Ok(Response::new(HeartbeatReply {}))
    }

    type PollTaskStream = FrameStream;

    async fn poll_task(
        &self,
        request: Request<PollRequest>,
    ) -> Result<Response<Self::PollTaskStream>, Status> {
        let site = self.site_of(&request, "poll_task").await?;
        let body = request.into_inner();
        let wait = Duration::from_millis(u64::from(body.wait_ms)).min(MAX_POLL);
        let task = self
            .hub
            .next_task(&site, body.session, wait)
            .await
            .map_err(route_status)?;
        // Read from the store only for a poll that sends a header, not for an empty one.
        let stream: FrameStream = match (task, self.hub.finished()) {
            (Some(task), _) => {
                // Parameter downloads share a bounded number of slots, so the coordinator's
                // buffers do not grow with the number of connected nodes.
                let permit = match &task.params {
                    Some(_) => Some(
                        Arc::clone(&self.transfers)
                            .acquire_owned()
                            .await
                            .map_err(|e| Status::internal(e.to_string()))?,
                    ),
                    None => None,
                };
                frames(
                    header(&task, &self.digest, self.audit_head().await),
                    task.params.clone(),
                    permit,
                    Arc::clone(&self.hub),
                    site,
                )
            }
            (None, Some(rounds)) => {
                let done = v1::TaskHeader {
                    manifest_sha256: self.digest.clone(),
                    kind: Some(task_header::Kind::Finished(v1::Finished { rounds })),
                    audit_head: self.audit_head().await,
                    ..Default::default()
                };
                frames(done, None, None, Arc::clone(&self.hub), site)
            }
            (None, None) => Box::pin(tokio_stream::empty()),
        };
        Ok(Response::new(stream))
    }

    type UploadResultStream = ReplyStream;

    async fn upload_result(
        &self,
        request: Request<Streaming<ResultFrame>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let site = self.site_of(&request, "upload_result").await?;
        let mut stream = request.into_inner();
        let Some(ResultFrame {
            frame: Some(result_frame::Frame::Header(head)),
        }) = stream.message().await?
        else {
            return Err(Status::invalid_argument(
                "a result must start with its header",
            ));
        };
        self.hub.traffic().received(&site, head.encoded_len());
        // Claimed once: a second upload for the same task is refused before anything is read.
        let task = self.hub.claim(&site, head.task_id).map_err(route_status)?;
        let (replies, reply_stream) = tokio::sync::mpsc::channel(2);
        let claim = Claim {
            hub: Arc::clone(&self.hub),
            site,
            task,
            settled: false,
        };
        tokio::spawn(async move {
            let reply = match receive(&claim, head, stream, &replies).await {
                Ok(Some(result)) => claim
                    .settle(result)
                    .map(|()| reply(upload_reply::Reply::Done(v1::Done {}))),
                // The node went away before its turn: the claim's drop gives the task back.
                Ok(None) => return,
                Err(Failure::Invalid(status)) => {
                    let reason = format!("sent an invalid result: {}", status.message());
                    let _ = claim.settle(TaskResult::Refused {
                        kind: ErrorKind::MalformedReply,
                        reason,
                    });
                    Err(status)
                }
                Err(Failure::Stalled(status)) => {
                    // Not given back: a node that stalls after `proceed` and fetches the task
                    // again could hold the round (and every upload after it) up time after time.
                    let reason = format!("its upload stalled: {}", status.message());
                    let _ = claim.settle(TaskResult::Refused {
                        kind: ErrorKind::TimedOut,
                        reason,
                    });
                    Err(status)
                }
                Err(Failure::Transport(status)) => {
                    // Given back before the node hears of it, so its retry finds the task.
                    drop(claim);
                    Err(status)
                }
            };
            let _ = replies.send(reply).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(reply_stream))))
    }
}

/// Longest reason a node may give for refusing a task (bytes; longer ones are cut).
const MAX_REASON: usize = 1024;

/// Longest the coordinator waits for the next chunk of an update it asked for.
const CHUNK_IDLE: Duration = Duration::from_secs(60);

/// Slowest transfer accepted after `proceed`, in bytes per second: a whole update must arrive
/// within `CHUNK_IDLE` plus its size at this rate, so a node that trickles cannot hold the
/// round up (4 MB: about a minute; 4 GB: about an hour).
const MIN_TRANSFER_RATE: u64 = 1 << 20;

/// An upload's hold on its task. Unless the upload settles it with a result, dropping it gives
/// the task back ([`Hub::release`]): the node fetches it again, and the round's deadline
/// applies again. An upload that breaks the transfer limits ([`CHUNK_IDLE`],
/// [`MIN_TRANSFER_RATE`]) after `proceed` leaves its site out of the task as timed out, so a
/// stalling node cannot hold a round up more than once.
struct Claim {
    hub: Arc<Hub>,
    site: String,
    task: Arc<Task>,
    settled: bool,
}

impl Claim {
    /// Hands `result` to the engine.
    fn settle(mut self, result: TaskResult) -> Result<(), Status> {
        self.settled = true;
        self.hub
            .complete(&self.site, self.task.id, result)
            .map_err(route_status)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled {
            self.hub.release(&self.site, self.task.id);
        }
    }
}

/// Why an upload ended without a result.
enum Failure {
    /// The node sent something that is not a valid result: the site is left out.
    Invalid(Status),
    /// The stream broke: the task goes back to the node.
    Transport(Status),
    /// The transfer broke its time limits after `proceed`: the site is left out of the task.
    Stalled(Status),
}

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        Self::Transport(status)
    }
}

/// Replies to one upload.
type ReplyStream = Pin<Box<dyn Stream<Item = Result<UploadReply, Status>> + Send>>;

fn reply(r: upload_reply::Reply) -> UploadReply {
    UploadReply { reply: Some(r) }
}

/// Waits for the upload's turn, if its task has one, then asks the node for its parameters or
/// reply parts (`proceed`). Awaited, not blocked on: a waiting upload holds no thread, and the
/// engine's move wakes it at once; the next few take their data in while the current one
/// folds. `false`: the node or the run went away first.
async fn proceed(
    claim: &Claim,
    replies: &tokio::sync::mpsc::Sender<Result<UploadReply, Status>>,
) -> bool {
    if let Some(turn) = &claim.task.turn {
        let mut ready = std::pin::pin!(turn.within(TAKEN_AHEAD));
        loop {
            if replies.is_closed() || claim.hub.is_closed() {
                return false;
            }
            if tokio::time::timeout(GONE_CHECK, ready.as_mut())
                .await
                .is_ok()
            {
                break;
            }
        }
    }
    replies
        .send(Ok(reply(upload_reply::Reply::Proceed(v1::Proceed {}))))
        .await
        .is_ok()
}

/// The time limits of one transfer after `proceed`: a frame at least every [`CHUNK_IDLE`], and
/// the whole of it within `CHUNK_IDLE` plus its size at [`MIN_TRANSFER_RATE`].
struct Transfer {
    end: tokio::time::Instant,
}

impl Transfer {
    /// The limits for a transfer of `bytes`.
    fn new(bytes: u64) -> Self {
        Self {
            end: tokio::time::Instant::now()
                + CHUNK_IDLE
                + Duration::from_secs(bytes / MIN_TRANSFER_RATE),
        }
    }

    /// The next frame, `None` once the node ended its stream.
    async fn next(
        &mut self,
        stream: &mut Streaming<ResultFrame>,
    ) -> Result<Option<result_frame::Frame>, Failure> {
        let until = self.end.min(tokio::time::Instant::now() + CHUNK_IDLE);
        let frame = tokio::time::timeout_at(until, stream.message())
            .await
            .map_err(|_| {
                Failure::Stalled(Status::deadline_exceeded(format!(
                    "the upload did not arrive in time (a frame at least every {} s, at least \
                     {} KiB/s overall)",
                    CHUNK_IDLE.as_secs(),
                    MIN_TRANSFER_RATE >> 10
                )))
            })??;
        let Some(frame) = frame else {
            return Ok(None);
        };
        frame.frame.map(Some).ok_or_else(|| {
            Failure::Invalid(Status::invalid_argument(
                "a result frame with nothing in it",
            ))
        })
    }
}

/// Takes in a secure-aggregation reply that follows its header in parts (a masked input is as
/// large as the model), in its turn like an update, after checking the announced length
/// against what a reply for this model may hold. `None`: the node went away before its turn.
async fn receive_envelope(
    claim: &Claim,
    spec: v1::SecureSpec,
    stream: &mut Streaming<ResultFrame>,
    replies: &tokio::sync::mpsc::Sender<Result<UploadReply, Status>>,
) -> Result<Option<Vec<u8>>, Failure> {
    let bad = |m: String| Failure::Invalid(Status::invalid_argument(m));
    let limit = claim.hub.secure_reply_limit();
    if !spec.envelope.is_empty() {
        return Err(bad(
            "a streamed secure-aggregation reply must leave `envelope` empty".into(),
        ));
    }
    if spec.streamed_bytes > limit {
        return Err(bad(format!(
            "the secure-aggregation reply announces {} bytes; a reply for this model holds at \
             most {limit} (a masked input: one word of the ring a value, and framing)",
            spec.streamed_bytes
        )));
    }
    if !proceed(claim, replies).await {
        return Ok(None);
    }
    let mut assembler = EnvelopeAssembler::new(spec.streamed_bytes as usize);
    let mut transfer = Transfer::new(spec.streamed_bytes);
    while let Some(frame) = transfer.next(stream).await? {
        match frame {
            result_frame::Frame::EnvelopePart(part) => {
                claim.hub.traffic().received(&claim.site, part.len());
                assembler.push(&part).map_err(|e| bad(e.to_string()))?;
            }
            _ => return Err(bad("only reply parts may follow this header".into())),
        }
    }
    assembler.finish().map(Some).map_err(|e| bad(e.to_string()))
}

/// Takes in the result `head` announces for the claimed task. A training result's parameters
/// are asked for (`proceed`) only when the engine is ready to fold them, so waiting uploads
/// hold no parameters on either side (and the engine does not give up on a site whose upload
/// holds its claim: the transfer limits bound the wait). `None`: the node went away before its
/// turn.
async fn receive(
    claim: &Claim,
    head: ResultHeader,
    mut stream: Streaming<ResultFrame>,
    replies: &tokio::sync::mpsc::Sender<Result<UploadReply, Status>>,
) -> Result<Option<TaskResult>, Failure> {
    let task = &claim.task;
    let bad = |m: String| Failure::Invalid(Status::invalid_argument(m));
    let result = match head.outcome {
        Some(result_header::Outcome::Train(t)) => {
            let Some(global) = &task.params else {
                return Err(bad("a training result for a task without parameters".into()));
            };
            if !matches!(task.kind, TaskKind::Train { .. }) {
                return Err(bad(
                    "a training result for a task that is not training".into()
                ));
            }
            // The layout may differ from the global one (the engine's validation then
            // rejects the update, naming the site), but never by more than a factor 2 in
            // size: the coordinator does not buffer what it will not use.
            let layout = layout_from_wire(&head.layout).map_err(|e| bad(e.to_string()))?;
            if layout.total() > 2 * global.num_values().max(1) {
                return Err(bad(format!(
                    "the update holds {} values, the model {}",
                    layout.total(),
                    global.num_values()
                )));
            }
            if !proceed(claim, replies).await {
                return Ok(None);
            }
            let mut assembler = Assembler::new(layout.total());
            let mut transfer = Transfer::new(4 * layout.total() as u64);
            while let Some(frame) = transfer.next(&mut stream).await? {
                match frame {
                    result_frame::Frame::Chunk(c) => {
                        claim.hub.traffic().received(&claim.site, c.encoded_len());
                        assembler.push(&c).map_err(|e| bad(e.to_string()))?;
                    }
                    _ => return Err(bad("only chunks may follow the header".into())),
                }
            }
            let values = assembler.finish().map_err(|e| bad(e.to_string()))?;
            let params =
                ParamSet::from_flat(Arc::new(layout), values).map_err(|e| bad(e.to_string()))?;
            TaskResult::Trained {
                examples: t.num_examples,
                loss: t.train_loss,
                params,
            }
        }
        Some(result_header::Outcome::Evaluate(m)) => {
            if !matches!(task.kind, TaskKind::Evaluate) {
                return Err(bad(
                    "an evaluation result for a task that is not evaluation".into(),
                ));
            }
            TaskResult::Evaluated(metrics_from_wire(&m).map_err(|e| bad(e.to_string()))?)
        }
        Some(result_header::Outcome::Secure(s)) => {
            if !matches!(task.kind, TaskKind::Secure(_)) {
                return Err(bad(
                    "a secure-aggregation reply for a task that is not one".into()
                ));
            }
            // Always streamed, so that every reply waits for its turn: an inline one would
            // be held ahead of it.
            if s.streamed_bytes == 0 {
                return Err(bad(
                    "a secure-aggregation reply must follow its header in parts \
                     (SecureSpec.streamed_bytes): this node is older than the coordinator"
                        .into(),
                ));
            }
            match receive_envelope(claim, s, &mut stream, replies).await? {
                Some(bytes) => TaskResult::Secure(bytes),
                None => return Ok(None),
            }
        }
        Some(result_header::Outcome::Refused(reason)) => {
            // The reason goes to the audit log and the round's record: kept short.
            let reason = truncate(&reason, MAX_REASON);
            let kind = ErrorKind::claimed_by_site(&head.kind);
            tracing::warn!(site = %claim.site, round = task.round, %kind, %reason, "the site refused a task");
            TaskResult::Refused {
                kind,
                reason: format!("the site refused: {reason}"),
            }
        }
        None => return Err(bad("the result header has no outcome".into())),
    };
    Ok(Some(result))
}
