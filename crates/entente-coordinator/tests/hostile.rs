//! Hostile nodes with valid site certificates, speaking the real protocol to an in-process
//! coordinator: what they claim or repeat must never stop the run nor grow the audit log
//! without bound (issue 11, items 1 and 5).

use std::path::Path;
use std::time::Duration;

mod common;
mod nodes;

use common::MANIFEST;
use entente_coordinator::audit::kind;
use entente_coordinator::{CoordinatorError, NoReport, RunSummary, run};
use entente_core::engine::ErrorKind;
use entente_core::manifest::Manifest;
use entente_core::params::ParamSet;
use entente_proto::tls::KeyDir;
use nodes::{
    Reply, answer_tasks, audit_entries, connect, coordinator_config, register_request,
    site_a_kinds, with_keys,
};

const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

fn manifest(dir: &Path) -> Manifest {
    Manifest::parse(MANIFEST, "<test>", dir).unwrap()
}

async fn coordinator(
    dir: &Path,
    keys: &KeyDir,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunSummary, CoordinatorError> {
    let initial = ParamSet::from_tensors([("w".to_string(), vec![2, 3], vec![0.5; 6])]).unwrap();
    let config = coordinator_config(dir, keys, manifest(dir), initial);
    run(config, listener, shutdown, &mut NoReport).await
}

/// How a fake node answers a training task.
#[derive(Clone, Copy)]
enum Answer {
    /// With the parameters it was sent, claiming this many examples.
    Train(u64),
    /// With a refusal of this kind; `None` names no kind, as nodes older than kinds do.
    Refuse(Option<ErrorKind>),
}

/// Registers and answers every task until the run is finished (see [`answer_tasks`]):
/// training tasks as `answer` says. Returns the rounds the coordinator says the run completed.
async fn fake_node(
    dir: &Path,
    keys: &KeyDir,
    addr: std::net::SocketAddr,
    site: &str,
    answer: Answer,
) -> u32 {
    let mut client = connect(keys, addr, site).await.unwrap();
    let session = client
        .register(register_request(&manifest(dir), "hostile-test"))
        .await
        .unwrap()
        .into_inner()
        .session;
    answer_tasks(client, session, |task| match answer {
        Answer::Train(claim) => Reply::Train(claim, task),
        Answer::Refuse(kind) => Reply::Refuse(kind),
    })
    .await
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

/// Runs the three rounds with site-a answering as `a` and the others training honestly;
/// returns the rounds' records and the audit log.
async fn run_with_site_a(
    dir: &Path,
    a: Answer,
) -> (
    Vec<entente_core::engine::RoundRecord>,
    Vec<entente_coordinator::audit::AuditEntry>,
) {
    let keys = with_keys(dir, &SITES);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (summary, a, b, c) = tokio::join!(
        coordinator(dir, &keys, listener, std::future::pending()),
        fake_node(dir, &keys, addr, "site-a", a),
        fake_node(dir, &keys, addr, "site-b", Answer::Train(100)),
        fake_node(dir, &keys, addr, "site-c", Answer::Train(200)),
    );
    let summary = summary.expect("the run finishes");
    assert_eq!(summary.rounds.len(), 3);
    assert_eq!((a, b, c), (3, 3, 3));
    (summary.rounds, audit_entries(dir).await)
}

#[tokio::test]
async fn an_over_budget_refusal_is_recorded_as_over_budget_not_as_a_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (rounds, entries) = run_with_site_a(d, Answer::Refuse(Some(ErrorKind::OverBudget))).await;
    for r in &rounds {
        assert_eq!(r.accepted, ["site-b", "site-c"]);
        assert_eq!(r.excluded.len(), 1, "{:?}", r.excluded);
        assert_eq!(
            r.excluded[0].kind,
            ErrorKind::OverBudget,
            "{:?}",
            r.excluded
        );
        assert!(
            r.excluded[0].reason.contains("over its budget"),
            "{:?}",
            r.excluded
        );
    }
    assert_eq!(
        site_a_kinds(d).await,
        vec![Some("over_budget".to_string()); 3]
    );
    let rejected: Vec<serde_json::Value> = entries
        .iter()
        .filter(|e| e.kind == kind::UPDATE_REJECTED)
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect();
    assert_eq!(rejected.len(), 3);
    assert!(
        rejected.iter().all(|d| d["kind"] == "over_budget"),
        "{rejected:?}"
    );
}

#[tokio::test]
async fn a_refusal_from_a_node_that_names_no_kind_is_internal() {
    let dir = tempfile::tempdir().unwrap();
    let (rounds, _) = run_with_site_a(dir.path(), Answer::Refuse(None)).await;
    for r in &rounds {
        assert_eq!(r.excluded.len(), 1, "{:?}", r.excluded);
        assert_eq!(r.excluded[0].kind, ErrorKind::Internal);
    }
    assert_eq!(
        site_a_kinds(dir.path()).await,
        vec![Some("internal".to_string()); 3]
    );
}

#[tokio::test]
async fn a_site_claiming_two_to_the_63_examples_is_left_out_and_the_run_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (rounds, entries) = run_with_site_a(d, Answer::Train(1 << 63)).await;
    assert!(
        rounds
            .iter()
            .all(|r| r.excluded.len() == 1 && r.excluded[0].kind == ErrorKind::MalformedReply),
        "{rounds:?}"
    );
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
    let keys = with_keys(dir.path(), &SITES);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let d = dir.path();
    let hostile = async {
        let mut client = connect(&keys, addr, "site-a").await.unwrap();
        let mut request = register_request(&manifest(d), "hostile-test");
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
    let keys = with_keys(dir.path(), &SITES);
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
            let mut client = connect(&keys, addr, "site-b").await.unwrap();
            client
                .register(register_request(&manifest(d), "hostile-test"))
                .await
                .unwrap()
        })
        .await;
        assert!(admitted.is_ok(), "a site was kept out by idle connections");
    };
    serve_while(d, &keys, listener, node).await;
    attacker.abort();
}
