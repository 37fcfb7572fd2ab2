//! Hostile nodes with valid site certificates, speaking the real protocol to an in-process
//! coordinator: what they claim or repeat must never stop the run nor grow the audit log
//! without bound (issue 11, items 1 and 5).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::MANIFEST;
use entente_coordinator::audit::kind;
use entente_coordinator::store::Store;
use entente_coordinator::{CoordinatorConfig, CoordinatorError, NoReport, RunSummary, run};
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

const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

fn manifest(dir: &Path) -> Manifest {
    Manifest::parse(MANIFEST, "<test>", dir).unwrap()
}

/// Keys for the coordinator and every site.
fn with_keys(dir: &Path) -> KeyDir {
    let keys = KeyDir::new(dir.join("keys"));
    tls::init_ca(&keys, "library-run").unwrap();
    tls::issue_coordinator(&keys, &["127.0.0.1".into()], false).unwrap();
    for site in SITES {
        tls::issue_site(&keys, site, false).unwrap();
    }
    keys
}

async fn coordinator(
    dir: &Path,
    keys: &KeyDir,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunSummary, CoordinatorError> {
    let config = CoordinatorConfig {
        manifest: manifest(dir),
        store_url: format!("sqlite://{}", dir.join("run.db").display()),
        ca: keys.ca_cert(),
        cert: keys.coordinator_cert(),
        key: keys.coordinator_key(),
        initial: ParamSet::from_tensors([("w".to_string(), vec![2, 3], vec![0.5; 6])]).unwrap(),
        evaluator: None,
        out: dir.join("model.safetensors"),
        heartbeat: Duration::from_millis(500),
        wait_for_sites: Duration::from_secs(30),
    };
    run(config, listener, shutdown, &mut NoReport).await
}

/// A node's connection, made with `site`'s own certificate.
async fn connect(
    keys: &KeyDir,
    addr: std::net::SocketAddr,
    site: &str,
) -> CoordinatorClient<Channel> {
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
        .unwrap();
    CoordinatorClient::new(channel)
}

fn register_request(dir: &Path) -> RegisterRequest {
    let m = manifest(dir);
    RegisterRequest {
        manifest_sha256: m.agreement_digest(),
        version: "hostile-test".into(),
        manifest_terms: m.agreement_terms(),
        previous_session: 0,
    }
}

/// Registers, keeps its session alive, and answers every task until the run is finished:
/// train tasks with the parameters it was sent and `claim` examples, evaluations with a fixed
/// result. Returns the rounds the coordinator says the run completed.
async fn fake_node(
    dir: &Path,
    keys: &KeyDir,
    addr: std::net::SocketAddr,
    site: &str,
    claim: u64,
) -> u32 {
    let mut client = connect(keys, addr, site).await;
    let session = client
        .register(register_request(dir))
        .await
        .unwrap()
        .into_inner()
        .session;
    let beating = {
        let mut client = client.clone();
        tokio::spawn(async move {
            loop {
                let _ = client.heartbeat(HeartbeatRequest { session }).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
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
        let outcome = match header.kind {
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
                let params = ParamSet::from_flat(layout, assembler.finish().unwrap()).unwrap();
                Some((claim, params))
            }
            _ => None,
        };
        let (head, params) = match outcome {
            Some((claim, params)) => (
                result_header::Outcome::Train(v1::TrainResult {
                    num_examples: claim,
                    train_loss: 0.5,
                }),
                Some(params),
            ),
            None => (
                result_header::Outcome::Evaluate(v1::EvalResult {
                    loss: 1.0,
                    accuracy: 0.5,
                    num_examples: 10,
                }),
                None,
            ),
        };
        let (frame, chunks) = upload::result_frames(header.task_id, head, params);
        // A result the coordinator no longer waits for is not this test's concern.
        let _ = upload::submit(&mut client, frame, chunks).await;
    }
}

/// Runs the coordinator while `client` runs, then shuts it down: it must end as shut down.
async fn serve_while(
    dir: &Path,
    keys: &KeyDir,
    listener: tokio::net::TcpListener,
    client: impl std::future::Future<Output = ()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = async {
        client.await;
        let _ = stop.send(());
    };
    let (result, ()) = tokio::join!(
        coordinator(dir, keys, listener, async {
            let _ = stopped.await;
        }),
        client
    );
    assert!(
        matches!(result, Err(CoordinatorError::ShutDown)),
        "{result:?}"
    );
}

async fn audit_entries(dir: &Path) -> Vec<entente_coordinator::audit::AuditEntry> {
    let url = format!("sqlite://{}", dir.join("run.db").display());
    Store::open_read_only(&url)
        .await
        .unwrap()
        .audit_entries()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_site_claiming_two_to_the_63_examples_is_left_out_and_the_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let keys = with_keys(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let d = dir.path();
    let (summary, a, b, c) = tokio::join!(
        coordinator(d, &keys, listener, std::future::pending()),
        fake_node(d, &keys, addr, "site-a", 1 << 63),
        fake_node(d, &keys, addr, "site-b", 100),
        fake_node(d, &keys, addr, "site-c", 200),
    );
    let summary = summary.expect("the run finishes");
    assert_eq!(summary.rounds.len(), 3);
    assert_eq!((a, b, c), (3, 3, 3));
    let entries = audit_entries(d).await;
    let rejected: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == kind::UPDATE_REJECTED)
        .collect();
    assert_eq!(rejected.len(), 3, "site-a is left out of every round");
    for e in &rejected {
        assert_eq!(e.site.as_deref(), Some("site-a"));
        assert!(
            e.detail.contains("more than the bound 100000"),
            "{}",
            e.detail
        );
    }
    let accepted = entries
        .iter()
        .filter(|e| e.kind == kind::UPDATE_ACCEPTED)
        .count();
    assert_eq!(accepted, 6, "site-b and site-c in each of 3 rounds");
}

#[tokio::test]
async fn a_site_that_registers_with_another_manifest_again_and_again_gets_a_bounded_log() {
    const TRIES: u64 = 60;
    let dir = tempfile::tempdir().unwrap();
    let keys = with_keys(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let d = dir.path();
    let hostile = async {
        let mut client = connect(&keys, addr, "site-a").await;
        let mut request = register_request(d);
        request.manifest_terms = request.manifest_terms.replace("0.05", "0.5");
        request.manifest_sha256 = "0".repeat(64);
        for _ in 0..TRIES {
            let refused = client.register(request.clone()).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        }
    };
    serve_while(d, &keys, listener, hostile).await;
    let refusals: Vec<serde_json::Value> = audit_entries(d)
        .await
        .iter()
        .filter(|e| e.kind == kind::REFUSAL)
        .map(|e| {
            assert_eq!(e.site.as_deref(), Some("site-a"));
            serde_json::from_str(&e.detail).unwrap()
        })
        .collect();
    assert!(refusals.len() <= 2, "one entry a minute: {refusals:?}");
    let counted: u64 = refusals
        .iter()
        .map(|r| r["refusals"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, TRIES, "{refusals:?}");
    assert!(
        refusals[0]["reason"]
            .as_str()
            .unwrap()
            .contains("training.learning_rate"),
        "{refusals:?}"
    );
}

#[tokio::test]
async fn idle_connections_from_one_address_do_not_keep_the_sites_out() {
    let dir = tempfile::tempdir().unwrap();
    let keys = with_keys(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let d = dir.path();
    // 400 connections from 127.0.0.2 that never send a byte, reopened as they are closed.
    let attacker = tokio::spawn(async move {
        let mut held = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
        while tokio::time::Instant::now() < deadline {
            held.retain(|s: &tokio::net::TcpStream| s.peer_addr().is_ok());
            while held.len() < 400 {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                match socket.connect(addr).await {
                    Ok(s) => held.push(s),
                    Err(_) => break,
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let node = async {
        // Let the idle connections fill what they can first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let admitted = tokio::time::timeout(Duration::from_secs(5), async {
            let mut client = connect(&keys, addr, "site-b").await;
            client.register(register_request(d)).await.unwrap()
        })
        .await;
        assert!(admitted.is_ok(), "a site was kept out by idle connections");
    };
    serve_while(d, &keys, listener, node).await;
    attacker.abort();
}
