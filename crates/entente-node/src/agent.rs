//! The node's connection loop: connect out, register, send heartbeats, poll for tasks, run
//! them, stream results back; after a network fault, reconnect with backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use entente_core::audit_heads::{AuditHead, HeadLog, HeadRecord, HeadRecordError};
use entente_core::engine::{Envelope, ErrorKind, SiteError, TrainTask};
use entente_core::manifest::{Manifest, SecAggSecurity};
use entente_core::params::ParamSet;
use entente_core::personal::carried;
use entente_proto::MAX_MESSAGE;
use entente_proto::chunks::Assembler;
use entente_proto::convert::{metrics_to_wire, training_from_wire};
use entente_proto::tls;
use entente_proto::tls::signatures::{self, SignatureError};
use entente_proto::upload;
use entente_proto::v1::coordinator_client::CoordinatorClient;
use entente_proto::v1::{
    self, HeartbeatRequest, PollRequest, RegisterRequest, TaskHeader, result_header, task_frame,
    task_header,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::checks::Agreement;
use crate::connector::{CoordinatorConnector, revoked_reason};
use crate::local::{LocalParticipant, Trainer, participant};
use crate::report::{NodeReport, Quiet};

/// How long one poll waits for a task.
const POLL_WAIT_MS: u32 = 20_000;
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest a TCP connection may take to open.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection (TCP, TLS handshake, HTTP/2) may take before the attempt counts as
/// failed: a listener that accepts and never speaks TLS must not hold the node forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest the coordinator may take to answer a registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Deliberately broken updates, for fault-injection tests of the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The first value of every update is NaN.
    Nan,
    /// The last tensor of every update is sent with a wrong shape.
    Shape,
}

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The coordinator, as `https://HOST:PORT`.
    pub coordinator: String,
    /// The federation CA certificate (PEM).
    pub ca: PathBuf,
    /// This site's certificate (PEM).
    pub cert: PathBuf,
    /// This site's private key (PEM).
    pub key: PathBuf,
    /// The manifest this site agreed to.
    pub manifest: Manifest,
    /// What trains: entente's own trainer on the site's own records, or the site's own.
    pub trainer: Trainer,
    /// Give up after this many failed connection attempts in a row (`None`: never).
    pub max_retries: Option<u32>,
    /// Corrupt every update (tests only).
    pub corrupt: Option<Corruption>,
    /// Where to keep the audit heads the coordinator shows with every task, one JSON line
    /// each ([`entente_core::audit_heads`]); `None`: not kept.
    pub audit_record: Option<PathBuf>,
    /// The manifest's signature file (`entente_proto::tls::signatures::signatures_path`
    /// beside it); `None`, or a path with no file, means no signatures. Before the node
    /// connects (and so before it trains), every signature the manifest requires
    /// (`[agreement] require_signatures`) must verify against `ca`.
    pub signatures: Option<PathBuf>,
    /// The federation's revocation list (`revoked.crl`, from the CA): a coordinator whose
    /// certificate it revokes is refused, and a node whose own certificate it revokes does not
    /// start. Read again before every connection; no file means nothing is revoked. `None`: no
    /// revocation list is used.
    pub revocations: Option<PathBuf>,
}

/// Why a node stopped.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node could not be set up (keys, data, manifest).
    #[error("{0}")]
    Setup(String),
    /// The manifest lacks a signature it requires (or its signature file is malformed): the
    /// node does not take part.
    #[error("this node will not train: {0}")]
    Signatures(SignatureError),
    /// The coordinator refused this node; retrying would not help.
    #[error("the coordinator refused this node: {0}")]
    Refused(String),
    /// A certificate is revoked (this site's, or the coordinator's): retrying cannot help.
    #[error("{0}")]
    Revoked(String),
    /// The node was asked to stop before the run ended.
    #[error("the node was stopped before the run ended")]
    ShutDown,
    /// The coordinator could not be reached, again and again.
    #[error("gave up after {attempts} failed attempts to reach the coordinator: {last}")]
    Unreachable {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
}

/// How a session with the coordinator ended.
enum SessionEnd {
    /// The run is over.
    Finished(u32),
    /// The connection failed; try again.
    Lost(String),
    /// The coordinator speaks another version of the protocol; trying again cannot help.
    Incompatible(String),
}

/// Runs the node until the coordinator says the run is finished (the number of rounds), or
/// until `shutdown` completes ([`NodeError::ShutDown`]).
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<u32, NodeError> {
    run_reporting(config, shutdown, &Quiet).await
}

/// [`run`], telling `report` what happens.
pub async fn run_reporting(
    config: NodeConfig,
    shutdown: impl Future<Output = ()>,
    report: &dyn NodeReport,
) -> Result<u32, NodeError> {
    tokio::select! {
        result = run_until_finished(config, report) => result,
        () = shutdown => Err(NodeError::ShutDown),
    }
}

async fn run_until_finished(config: NodeConfig, report: &dyn NodeReport) -> Result<u32, NodeError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| NodeError::Setup(format!("cannot read {}: {e}", p.display())))
    };
    for path in [&config.ca, &config.cert, &config.key] {
        read(path)?;
    }
    // The identity is checked now, not at the first handshake: the key must belong to the
    // certificate, the certificate must be a site's, issued by the federation CA, and not
    // revoked.
    let setup = |e: tls::TlsError| NodeError::Setup(e.to_string());
    let revocations =
        Arc::new(tls::Revocations::load(&config.ca, config.revocations.as_deref()).map_err(setup)?);
    revocations
        .check_own(&config.cert)
        .map_err(|e| NodeError::Revoked(e.to_string()))?;
    let tls_config =
        tls::client_config(&config.ca, &config.cert, &config.key, &revocations).map_err(setup)?;
    let site = tls::check_site_certificate(&config.ca, &config.cert).map_err(setup)?;
    // The manifest's required signatures, before any data is read or any task taken.
    signatures::check_before_run(&config.manifest, config.signatures.as_deref(), &config.ca)
        .map_err(NodeError::Signatures)?;
    // Under active secure aggregation the site signs its keys with its certificate key.
    let identity = match &config.manifest.secure_aggregation {
        Some(sa) if sa.security == SecAggSecurity::Active => Some(crate::identity::load(
            &config.ca,
            &config.cert,
            &config.key,
            &config.manifest.sites,
        )?),
        _ => None,
    };
    let local = {
        let (manifest, site, trainer) = (
            config.manifest.clone(),
            site.clone(),
            config.trainer.clone(),
        );
        tokio::task::spawn_blocking(move || participant(&manifest, &site, &trainer, identity))
            .await
            .map_err(|e| NodeError::Setup(e.to_string()))??
    };
    let agreement = Arc::new(Agreement {
        digest: config.manifest.agreement_digest(),
        site: site.clone(),
        layout: local.layout.clone(),
        train_layout: local.train_layout.clone(),
        manifest: config.manifest.clone(),
    });
    tracing::info!(%site, examples = ?local.examples, "node ready");
    report.ready(&site, local.examples);
    let local = Arc::new(local);
    let (host, port) = coordinator_address(&config.coordinator)?;
    let connector =
        CoordinatorConnector::new(tls_config, &host, port, TCP_TIMEOUT).map_err(|e| {
            NodeError::Setup(format!(
                "bad coordinator address `{}`: {e}",
                config.coordinator
            ))
        })?;
    // The connector speaks TLS itself, so the channel's own address is plain.
    let endpoint = Endpoint::from_shared(format!("http://{}", connector.address()))
        .map_err(|e| {
            NodeError::Setup(format!(
                "bad coordinator address `{}`: {e}",
                config.coordinator
            ))
        })?
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));

    let heads = match &config.audit_record {
        Some(path) => Some(HeadLog::open(path).map_err(|e| NodeError::Setup(e.to_string()))?),
        None => None,
    };
    let link = Link {
        endpoint,
        connector,
        revocations,
        coordinator: config.coordinator.clone(),
        agreement,
        terms: config.manifest.agreement_terms(),
        heads: std::sync::Mutex::new(heads),
    };
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    let mut previous = None;
    loop {
        let end = session(
            &link,
            &local,
            config.corrupt,
            report,
            &mut previous,
            &mut failures,
        );
        match end.await? {
            SessionEnd::Finished(rounds) => return Ok(rounds),
            SessionEnd::Incompatible(reason) => return Err(NodeError::Refused(reason)),
            SessionEnd::Lost(reason) => {
                if failures > 0 {
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                } else {
                    backoff = BACKOFF_MIN;
                }
                failures += 1;
                if config.max_retries.is_some_and(|m| failures > m) {
                    return Err(NodeError::Unreachable {
                        attempts: failures,
                        last: reason,
                    });
                }
                tracing::warn!(%reason, retry_in_ms = backoff.as_millis() as u64, "connection lost");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

/// Where a node keeps its audit record unless told otherwise: beside the manifest, as
/// `<manifest stem>.<site>.audit-heads.jsonl`.
pub fn default_audit_record(manifest: &std::path::Path, site: &str) -> PathBuf {
    let dir = manifest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let stem = manifest
        .file_stem()
        .map_or("entente".into(), |s| s.to_string_lossy());
    dir.join(format!("{stem}.{site}.audit-heads.jsonl"))
}

/// The site name in a node's own certificate (the first PEM block of `pem`).
pub fn leaf_site_name(pem: &[u8]) -> Result<String, NodeError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_slice(pem)
        .map_err(|e| NodeError::Setup(format!("the site certificate: {e}")))?;
    entente_proto::tls::site_name(&der)
        .map_err(|e| NodeError::Setup(format!("the site certificate: {e}")))
}

/// The host and port of `https://HOST:PORT` (443 when no port is given); the host is the name
/// the coordinator's certificate must carry. The address is parsed as a URI (`http::Uri`), so
/// a bracketed IPv6 literal, a path and a missing port are all read as a URI reader would.
fn coordinator_address(url: &str) -> Result<(String, u16), NodeError> {
    let bad = |why: &str| NodeError::Setup(format!("the coordinator address `{url}` {why}"));
    let uri: http::Uri = url.parse().map_err(|e| {
        bad(&format!(
            "is not a URL ({e}); write it as https://HOST:PORT"
        ))
    })?;
    if uri.scheme_str() != Some("https") {
        return Err(bad(
            "must start with https:// (nodes speak only mutual TLS)",
        ));
    }
    let host = uri.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(bad("has no host; write it as https://HOST:PORT"));
    }
    Ok((host.to_string(), uri.port_u16().unwrap_or(443)))
}

/// Whether a status from `register` means this node is not welcome (rather than a fault):
/// not a site, another manifest, or another node holding the site's session.
fn is_refusal(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::Unauthenticated
            | Code::AlreadyExists
    )
}

/// What every connection to the coordinator needs.
struct Link {
    endpoint: Endpoint,
    /// Opens the TLS connections the channel runs on.
    connector: CoordinatorConnector,
    /// The revocation list the coordinator's certificate is checked against.
    revocations: Arc<tls::Revocations>,
    /// The coordinator's address, as given.
    coordinator: String,
    agreement: Arc<Agreement>,
    /// The manifest's terms, sent with their digest so that a refusal can name what differs.
    terms: String,
    /// The record of the audit heads this node was shown, if it keeps one.
    heads: std::sync::Mutex<Option<HeadLog>>,
}

impl Link {
    /// Appends the audit head `wire` that came with round `round`'s task (or with the
    /// admission, round 0) to the node's record, if it keeps one.
    /// A head that is malformed or cannot be written is logged and skipped: the record loses
    /// one anchor, the task goes on. A head that shows the log went back (rolled back,
    /// replaced, rewritten) is the reason to stop, returned.
    fn keep_head(&self, wire: Option<&v1::AuditHead>, round: u32) -> Option<String> {
        let mut heads = self.heads.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(log), Some(wire)) = (heads.as_mut(), wire) else {
            return None;
        };
        let head = match AuditHead::new(wire.seq, &wire.hash) {
            Ok(head) => head,
            Err(problem) => {
                tracing::warn!(%problem, "the coordinator sent a malformed audit head");
                return None;
            }
        };
        let record = HeadRecord {
            federation: self.agreement.manifest.name.clone(),
            round,
            received_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            head,
        };
        match log.append(&record) {
            Ok(_) => None,
            Err(e @ HeadRecordError::WentBack { .. }) => Some(e.to_string()),
            Err(e) => {
                tracing::warn!(error = %e, "could not keep the audit head");
                None
            }
        }
    }
}

/// One connection: register, then serve tasks until the run ends or the connection fails.
/// `previous` is the session this node held last, taken over on registering again.
async fn session(
    link: &Link,
    local: &Arc<LocalParticipant>,
    corrupt: Option<Corruption>,
    report: &dyn NodeReport,
    previous: &mut Option<u64>,
    failures: &mut u32,
) -> Result<SessionEnd, NodeError> {
    // A newer revocation list applies from this connection on; a bad one leaves the last.
    if let Err(e) = link.revocations.reload() {
        tracing::warn!(error = %e, "revocation list not reloaded");
    }
    let connect = link.endpoint.connect_with_connector(link.connector.clone());
    let channel: Channel = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            if let Some(reason) = revoked_reason(&e) {
                return Err(NodeError::Revoked(reason.to_string()));
            }
            return Ok(SessionEnd::Lost(describe_transport(&e)));
        }
        Err(_) => {
            return Ok(SessionEnd::Lost(format!(
                "{} did not complete a TLS handshake within {} s: something accepts connections \
                 there but does not answer as an entente coordinator; check --coordinator's host \
                 and port",
                link.coordinator,
                CONNECT_TIMEOUT.as_secs()
            )));
        }
    };
    let mut client = CoordinatorClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let mut request = Request::new(RegisterRequest {
        manifest_sha256: link.agreement.digest.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        manifest_terms: link.terms.clone(),
        previous_session: previous.unwrap_or(0),
    });
    request.set_timeout(REGISTER_TIMEOUT);
    let reply = match client.register(request).await {
        Ok(r) => r.into_inner(),
        Err(s) if is_refusal(&s) => return Err(NodeError::Refused(s.message().to_string())),
        // In TLS 1.3 the coordinator refuses a revoked certificate after the node's half of
        // the handshake, so the refusal can surface at the first call.
        Err(s) => match revoked_reason(&s) {
            Some(reason) => return Err(NodeError::Revoked(reason.to_string())),
            None => return Ok(SessionEnd::Lost(s.to_string())),
        },
    };
    *failures = 0;
    if let Some(reason) = link.keep_head(reply.audit_head.as_ref(), 0) {
        return Ok(SessionEnd::Incompatible(reason));
    }
    let session = reply.session;
    *previous = Some(session);
    tracing::info!(federation = %reply.federation, session, "registered");
    report.connected(&link.coordinator, &reply.federation);
    let beat = Duration::from_millis(u64::from(reply.heartbeat_ms.max(100)));
    let heartbeat = {
        let mut client = client.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(beat);
            loop {
                tick.tick().await;
                if let Err(s) = client.heartbeat(HeartbeatRequest { session }).await {
                    tracing::debug!(status = %s, "heartbeat failed");
                }
            }
        })
    };
    let end = serve_tasks(&mut client, session, link, local, corrupt, report).await;
    heartbeat.abort();
    Ok(end)
}

/// Polls for tasks and answers them until the run ends or the connection fails.
async fn serve_tasks(
    client: &mut CoordinatorClient<Channel>,
    session: u64,
    link: &Link,
    local: &Arc<LocalParticipant>,
    corrupt: Option<Corruption>,
    report: &dyn NodeReport,
) -> SessionEnd {
    let agreement = &link.agreement;
    // Evaluation tasks carry no round of their own: they follow the round last trained.
    let mut last_round = 0;
    loop {
        let mut stream = match client
            .poll_task(PollRequest {
                session,
                wait_ms: POLL_WAIT_MS,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return SessionEnd::Lost(s.to_string()),
        };
        let header = match stream.message().await {
            Ok(Some(v1::TaskFrame {
                frame: Some(task_frame::Frame::Header(h)),
            })) => h,
            Ok(None) => continue,
            Ok(Some(_)) => return SessionEnd::Lost("a task began without its header".into()),
            Err(s) => return SessionEnd::Lost(s.to_string()),
        };
        if let Some(reason) = link.keep_head(header.audit_head.as_ref(), header.round) {
            return SessionEnd::Incompatible(reason);
        }
        if let Some(task_header::Kind::Finished(f)) = &header.kind {
            tracing::info!(rounds = f.rounds, "the run is finished");
            report.finished(f.rounds);
            return SessionEnd::Finished(f.rounds);
        }
        // Receive the task's parameters, if its layout is the manifest's model.
        let check = agreement.check_header(&header).and_then(|()| {
            if header.layout.is_empty() {
                Ok(())
            } else {
                agreement.check_layout(&header)
            }
        });
        let mut params = None;
        if check.is_ok() && !header.layout.is_empty() {
            let layout = agreement.layout_for(&header).clone();
            let mut assembler = Assembler::new(layout.total());
            loop {
                match stream.message().await {
                    Ok(Some(v1::TaskFrame {
                        frame: Some(task_frame::Frame::Chunk(c)),
                    })) => {
                        if let Err(e) = assembler.push(&c) {
                            return SessionEnd::Lost(format!("bad parameter stream: {e}"));
                        }
                    }
                    Ok(None) => break,
                    Ok(Some(_)) => return SessionEnd::Lost("unexpected frame in a task".into()),
                    Err(s) => return SessionEnd::Lost(s.to_string()),
                }
            }
            match assembler
                .finish()
                .map_err(|e| e.to_string())
                .and_then(|v| ParamSet::from_flat(Arc::new(layout), v).map_err(|e| e.to_string()))
            {
                Ok(p) => params = Some(Arc::new(p)),
                Err(e) => return SessionEnd::Lost(format!("bad parameter stream: {e}")),
            }
        }
        let task_id = header.task_id;
        if header.round > 0 {
            last_round = header.round;
        }
        let round = last_round;
        let outcome = match check {
            Err(reason) => {
                tracing::warn!(%reason, "task refused");
                Outcome::Refused(ErrorKind::Refused, reason)
            }
            Ok(()) => {
                let (agreement, local) = (Arc::clone(agreement), Arc::clone(local));
                tokio::task::spawn_blocking(move || {
                    execute(&agreement, &local, header, params, corrupt)
                })
                .await
                .unwrap_or_else(|e| {
                    Outcome::Refused(ErrorKind::Internal, format!("the task failed: {e}"))
                })
            }
        };
        let done = Done::of(&outcome);
        match submit(client, task_id, outcome).await {
            Ok(()) => done.tell(report, round),
            Err(s) if s.code() == Code::NotFound => {
                // Too late (deadline passed, or the coordinator restarted): move on.
                tracing::warn!(status = %s, "result not taken");
            }
            Err(s) if s.code() == Code::Unimplemented => {
                return SessionEnd::Incompatible(format!(
                    "the coordinator does not take results the way this node sends them ({}); \
                     run the same entente version on the coordinator and the nodes",
                    s.message()
                ));
            }
            Err(s) => return SessionEnd::Lost(s.to_string()),
        }
    }
}

/// What a delivered result is worth telling the operator.
enum Done {
    Trained {
        examples: u64,
        loss: f64,
    },
    Evaluated {
        accuracy: f64,
    },
    Refused(String),
    /// A secure-aggregation step: part of a round, not a line of its own.
    Quiet,
}

impl Done {
    fn of(outcome: &Outcome) -> Self {
        match outcome {
            Outcome::Trained { examples, loss, .. } => Self::Trained {
                examples: *examples,
                loss: *loss,
            },
            Outcome::Evaluated(m) => Self::Evaluated {
                accuracy: m.accuracy,
            },
            Outcome::Refused(kind, reason) => Self::Refused(format!("({kind}) {reason}")),
            Outcome::Secure(_) => Self::Quiet,
        }
    }

    fn tell(self, report: &dyn NodeReport, round: u32) {
        match self {
            Self::Trained { examples, loss } => report.trained(round, examples, loss),
            Self::Evaluated { accuracy } => report.evaluated(round, accuracy),
            Self::Refused(reason) => report.refused(round, &reason),
            Self::Quiet => {}
        }
    }
}

/// A task's result before it is put on the wire.
enum Outcome {
    Trained {
        examples: u64,
        loss: f64,
        params: ParamSet,
    },
    Evaluated(v1::EvalResult),
    Secure(Vec<u8>),
    /// Not done, with the kind of failure the coordinator records.
    Refused(ErrorKind, String),
}

/// Runs one checked task on the local site.
fn execute(
    agreement: &Agreement,
    local: &LocalParticipant,
    header: TaskHeader,
    params: Option<Arc<ParamSet>>,
    corrupt: Option<Corruption>,
) -> Outcome {
    // The task breaks what the site agreed to: the site's policy refuses it.
    let refused = |e: String| Outcome::Refused(ErrorKind::Refused, e);
    // The site itself failed, with its own kind (over budget, internal, ...).
    let failed = |e: SiteError| Outcome::Refused(e.kind, e.reason());
    match header.kind {
        Some(task_header::Kind::Train(spec)) => {
            if let Err(e) = agreement.check_training(&spec) {
                return refused(e);
            }
            let (Some(global), Some(wire)) = (params, spec.training.as_ref()) else {
                return refused("a training task without parameters".into());
            };
            let training = match training_from_wire(wire) {
                Ok(t) => t,
                Err(e) => return refused(e.to_string()),
            };
            // DP-SGD's batch sampling and noise must be secret from everyone else, the
            // coordinator included: they come from the operating system, not from the task.
            let seed = if training.dp_sgd.is_some() {
                rand::random::<u64>()
            } else {
                spec.seed
            };
            let task = TrainTask {
                round: header.round,
                global,
                training,
                seed,
                turn: None,
            };
            match local.site.train(&task) {
                // A personal tensor never leaves the site, whatever its trainer answered.
                Ok(update)
                    if let Some(name) = carried(
                        update.params.layout(),
                        agreement.manifest.personal_tensors(),
                    ) =>
                {
                    Outcome::Refused(
                        ErrorKind::Internal,
                        format!(
                            "the site's update holds `{name}`, a personal tensor \
                             ([personalization] personal); it was not sent"
                        ),
                    )
                }
                Ok(update) => Outcome::Trained {
                    examples: update.num_examples,
                    loss: update.train_loss,
                    params: corrupted(update.params, corrupt),
                },
                Err(e) => failed(e),
            }
        }
        Some(task_header::Kind::Evaluate(_)) => match params {
            Some(p) => match local.site.evaluate(&p) {
                Ok(m) => Outcome::Evaluated(metrics_to_wire(&m)),
                Err(e) => failed(e),
            },
            None => refused("an evaluation task without parameters".into()),
        },
        Some(task_header::Kind::Secure(s)) => {
            match local
                .site
                .secure_exchange(header.round, &Envelope(s.envelope), None)
            {
                Ok(reply) => Outcome::Secure(reply.0),
                Err(e) => failed(e),
            }
        }
        Some(task_header::Kind::Finished(_)) | None => refused("a task of no known kind".into()),
    }
}

/// Applies a test corruption to an update.
fn corrupted(params: ParamSet, corrupt: Option<Corruption>) -> ParamSet {
    match corrupt {
        None => params,
        Some(Corruption::Nan) => {
            let mut p = params;
            if let Some(v) = p.as_flat_mut().first_mut() {
                *v = f32::NAN;
            }
            p
        }
        Some(Corruption::Shape) => {
            let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = params
                .iter()
                .map(|(s, v)| (s.name.clone(), s.shape.clone(), v.to_vec()))
                .collect();
            let n = tensors.len();
            let reshaped = tensors
                .into_iter()
                .enumerate()
                .map(|(i, (name, shape, v))| {
                    if i + 1 == n {
                        (name, vec![1, v.len()], v)
                    } else {
                        (name, shape, v)
                    }
                });
            ParamSet::from_tensors(reshaped).unwrap_or(params)
        }
    }
}

/// Streams a result: its header, then its parameters chunk by chunk (or a secure-aggregation
/// reply part by part).
async fn submit(
    client: &mut CoordinatorClient<Channel>,
    task_id: u64,
    outcome: Outcome,
) -> Result<(), Status> {
    let (outcome, kind, params) = match outcome {
        Outcome::Trained {
            examples,
            loss,
            params,
        } => (
            result_header::Outcome::Train(v1::TrainResult {
                num_examples: examples,
                train_loss: loss,
            }),
            None,
            Some(params),
        ),
        Outcome::Evaluated(m) => (result_header::Outcome::Evaluate(m), None, None),
        Outcome::Secure(bytes) => {
            // A masked input is as large as the model: it follows the header in parts.
            let (head, parts) = upload::secure_reply_frames(task_id, bytes);
            return upload::submit(client, head, parts).await;
        }
        Outcome::Refused(kind, reason) => {
            (result_header::Outcome::Refused(reason), Some(kind), None)
        }
    };
    let (head, chunks) = upload::result_frames(task_id, outcome, kind, params);
    upload::submit(client, head, chunks).await
}

/// A transport error with its causes, for logs.
fn describe_transport(e: &tonic::transport::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
#[path = "personal_tests.rs"]
mod personal_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_hosts_are_read_from_urls() {
        let address = |url| coordinator_address(url).unwrap();
        assert_eq!(
            address("https://127.0.0.1:7443"),
            ("127.0.0.1".into(), 7443)
        );
        assert_eq!(
            address("https://coord.example.org:443/"),
            ("coord.example.org".into(), 443)
        );
        assert_eq!(address("https://[::1]:7443"), ("::1".into(), 7443));
        assert_eq!(
            address("https://coord.example.org"),
            ("coord.example.org".into(), 443)
        );
        assert_eq!(
            address("https://user@coord.example.org:7443/x?y"),
            ("coord.example.org".into(), 7443)
        );
        for (bad, names) in [
            ("http://127.0.0.1:7443", "https://"),
            ("ftp://127.0.0.1:7443", "https://"),
            ("127.0.0.1:7443", "https://"),
            ("https://:7443", "no host"),
            ("https://[::1:7443", "not a URL"),
            ("https://a b:7443", "not a URL"),
            ("", "not a URL"),
        ] {
            let err = coordinator_address(bad).unwrap_err().to_string();
            assert!(err.contains(names), "{bad}: {err}");
        }
    }
}
