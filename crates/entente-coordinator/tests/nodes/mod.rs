//! What the hostile-node suites share: keys for a federation, the coordinator's settings, a
//! node's connection made with a site's certificate, its registration and heartbeats, a plain
//! node's task loop, and what the store recorded.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use entente_coordinator::CoordinatorConfig;
use entente_coordinator::audit::AuditEntry;
use entente_coordinator::store::Store;
use entente_core::engine::ErrorKind;
use entente_core::manifest::Manifest;
use entente_core::params::ParamSet;
use entente_proto::chunks::Assembler;
use entente_proto::convert::layout_from_wire;
use entente_proto::tls::{self, KeyDir};
use entente_proto::upload;
use entente_proto::v1::coordinator_client::CoordinatorClient;
use entente_proto::v1::{
    self, HeartbeatRequest, PollRequest, RegisterRequest, result_header, task_frame, task_header,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Keys for the coordinator and each of `sites`.
pub fn with_keys(dir: &Path, sites: &[&str]) -> KeyDir {
    let keys = KeyDir::new(dir.join("keys"));
    tls::init_ca(&keys, "library-run").unwrap();
    tls::issue_coordinator(&keys, &["127.0.0.1".into()], false).unwrap();
    for site in sites {
        tls::issue_site(&keys, site, false).unwrap();
    }
    keys
}

/// A node's connection, made with `site`'s own certificate.
pub async fn connect(
    keys: &KeyDir,
    addr: std::net::SocketAddr,
    site: &str,
) -> Result<CoordinatorClient<Channel>, String> {
    let read = |p: std::path::PathBuf| std::fs::read(p).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(keys.ca_cert())))
        .identity(Identity::from_pem(
            read(keys.site_cert(site)),
            read(keys.site_key(site)),
        ))
        .domain_name("127.0.0.1");
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| format!("{site} could not connect: {e}"))?;
    Ok(CoordinatorClient::new(channel))
}

/// A registration for `manifest`'s terms, as a node of `version` sends it.
pub fn register_request(manifest: &Manifest, version: &str) -> RegisterRequest {
    RegisterRequest {
        manifest_sha256: manifest.agreement_digest(),
        version: version.into(),
        manifest_terms: manifest.agreement_terms(),
        previous_session: 0,
    }
}

/// Keeps `session` alive with a heartbeat every 200 ms until the returned task is aborted.
pub fn heartbeats(
    client: &CoordinatorClient<Channel>,
    session: u64,
) -> tokio::task::JoinHandle<()> {
    let mut client = client.clone();
    tokio::spawn(async move {
        loop {
            let _ = client.heartbeat(HeartbeatRequest { session }).await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
}

/// The kinds the store's participant rows give site-a, round by round.
pub async fn site_a_kinds(dir: &Path) -> Vec<Option<String>> {
    let pool = sqlx::AnyPool::connect(&store_url(dir)).await.unwrap();
    let rows = sqlx::query("SELECT kind FROM participants WHERE site = 'site-a' ORDER BY round")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.iter()
        .map(|r| sqlx::Row::try_get(r, 0).unwrap())
        .collect()
}

/// The store of a run in `dir` (`run.db`).
fn store_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("run.db").display())
}

/// A coordinator for `manifest` in `dir` (store `run.db`, final model `model.safetensors`),
/// starting from `initial`, heartbeats every 500 ms, waiting 30 s for the sites.
pub fn coordinator_config(
    dir: &Path,
    keys: &KeyDir,
    manifest: Manifest,
    initial: ParamSet,
) -> CoordinatorConfig {
    CoordinatorConfig {
        manifest,
        store_url: store_url(dir),
        ca: keys.ca_cert(),
        cert: keys.coordinator_cert(),
        key: keys.coordinator_key(),
        initial,
        evaluator: None,
        out: dir.join("model.safetensors"),
        heartbeat: Duration::from_millis(500),
        wait_for_sites: Duration::from_secs(30),
        signatures: None,
        revocations: None,
    }
}

/// The audit log of the run in `dir`.
#[allow(dead_code)] // Not every suite reads it.
pub async fn audit_entries(dir: &Path) -> Vec<AuditEntry> {
    Store::open_read_only(&store_url(dir))
        .await
        .unwrap()
        .audit_entries()
        .await
        .unwrap()
}

/// How a plain (not secure-aggregation) fake node answers one training task.
#[allow(dead_code)] // The secure suite's nodes answer through their SecureSite.
pub enum Reply {
    /// Trained: these parameters, claiming this many examples.
    Train(u64, ParamSet),
    /// Refused, with this kind (`None` names no kind, as nodes older than kinds do).
    Refuse(Option<ErrorKind>),
}

/// Answers `session`'s tasks until the run is finished, keeping it alive meanwhile: every
/// training task with `train` of the parameters it carries, every evaluation with a fixed
/// result. Returns the rounds the coordinator says the run completed.
#[allow(dead_code)] // The secure suite's nodes answer through their SecureSite.
pub async fn answer_tasks(
    mut client: CoordinatorClient<Channel>,
    session: u64,
    mut train: impl FnMut(ParamSet) -> Reply,
) -> u32 {
    let beating = heartbeats(&client, session);
    loop {
        let mut stream = client
            .poll_task(PollRequest {
                session,
                wait_ms: 1000,
            })
            .await
            .unwrap()
            .into_inner();
        let Some(v1::TaskFrame {
            frame: Some(task_frame::Frame::Header(header)),
        }) = stream.message().await.unwrap()
        else {
            continue;
        };
        let (head, kind, params) = match header.kind {
            Some(task_header::Kind::Finished(f)) => {
                beating.abort();
                return f.rounds;
            }
            Some(task_header::Kind::Train(_)) => {
                let layout = Arc::new(layout_from_wire(&header.layout).unwrap());
                let mut assembler = Assembler::new(layout.total());
                while let Some(v1::TaskFrame {
                    frame: Some(task_frame::Frame::Chunk(c)),
                }) = stream.message().await.unwrap()
                {
                    assembler.push(&c).unwrap();
                }
                let task = ParamSet::from_flat(layout, assembler.finish().unwrap()).unwrap();
                match train(task) {
                    Reply::Train(claim, params) => (
                        result_header::Outcome::Train(v1::TrainResult {
                            num_examples: claim,
                            train_loss: 0.5,
                        }),
                        None,
                        Some(params),
                    ),
                    Reply::Refuse(kind) => (
                        result_header::Outcome::Refused("refuses round: over its budget".into()),
                        kind,
                        None,
                    ),
                }
            }
            _ => (
                result_header::Outcome::Evaluate(v1::EvalResult {
                    loss: 1.0,
                    accuracy: 0.5,
                    num_examples: 10,
                }),
                None,
                None,
            ),
        };
        let (frame, chunks) = upload::result_frames(header.task_id, head, kind, params);
        // A result the coordinator no longer waits for is not this test's concern.
        let _ = upload::submit(&mut client, frame, chunks).await;
    }
}
