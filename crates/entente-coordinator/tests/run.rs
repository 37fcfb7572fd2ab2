//! [`entente_coordinator::run`] as a library: a listener bound by the caller, a report instead
//! of printed lines, and a shutdown that leaves the run resumable.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use entente_coordinator::audit::{AuditReport, kind};
use entente_coordinator::store::Store;
use entente_coordinator::{CoordinatorConfig, CoordinatorError, Report, RunStart, run};
use entente_core::manifest::Manifest;
use entente_core::params::ParamSet;
use entente_proto::tls::{self, KeyDir};

const MANIFEST: &str = r#"
[federation]
name = "library-run"
seed = 7

[data]
format = "csv"
path = "embedded:uci-digits"

[[sites]]
name = "site-a"

[[sites]]
name = "site-b"

[[sites]]
name = "site-c"

[model]
kind = "mlp"
hidden = [8]

[training]
rounds = 3
local_epochs = 1
batch_size = 16
learning_rate = 0.05
optimizer = "sgd"

[strategy]
kind = "fedavg"
max_examples = 100000

[selection]
fraction = 1.0
min_sites = 2
"#;

/// What the run reported, in order.
#[derive(Default)]
struct Seen(Vec<String>);

impl Report for Seen {
    fn started(&mut self, run: &RunStart<'_>) {
        self.0.push(format!("started {}", run.run));
    }
    fn resumed(&mut self, run: &RunStart<'_>) {
        self.0
            .push(format!("resumed {} after {}", run.run, run.completed));
    }
    fn listening(&mut self, _addr: SocketAddr) {
        self.0.push("listening".into());
    }
    fn sites_connected(&mut self, alive: usize, total: usize, quorum: usize) {
        self.0.push(format!("{alive}/{total} (quorum {quorum})"));
    }
}

fn config(dir: &Path) -> CoordinatorConfig {
    let keys = KeyDir::new(dir.join("keys"));
    CoordinatorConfig {
        manifest: Manifest::parse(MANIFEST, "<test>", dir).unwrap(),
        store_url: format!("sqlite://{}", dir.join("run.db").display()),
        ca: keys.ca_cert(),
        cert: keys.coordinator_cert(),
        key: keys.coordinator_key(),
        initial: ParamSet::from_tensors([("w".to_string(), vec![2, 2], vec![0.0; 4])]).unwrap(),
        evaluator: None,
        out: dir.join("model.safetensors"),
        heartbeat: Duration::from_millis(500),
        wait_for_sites: Duration::from_secs(60),
    }
}

/// Runs the coordinator until `after`, with no node ever connecting.
async fn run_until(
    dir: &Path,
    after: Duration,
) -> (Result<(), CoordinatorError>, Seen, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut seen = Seen::default();
    let result = run(config(dir), listener, tokio::time::sleep(after), &mut seen).await;
    (result.map(|_| ()), seen, addr)
}

#[tokio::test]
async fn a_shut_down_run_stops_listening_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyDir::new(dir.path().join("keys"));
    tls::init_ca(&keys, "library-run").unwrap();
    tls::issue_coordinator(&keys, &["127.0.0.1".into()], false).unwrap();

    let (result, seen, addr) = run_until(dir.path(), Duration::from_millis(300)).await;
    assert!(
        matches!(result, Err(CoordinatorError::ShutDown)),
        "{result:?}"
    );
    assert_eq!(seen.0, ["started 1", "listening", "0/3 (quorum 2)"]);
    // The listening socket is closed: connections are refused.
    let mut refused = false;
    for _ in 0..40 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        refused,
        "{addr} still accepts connections after the shutdown"
    );

    // The same configuration resumes the same run, which is still unfinished.
    let (result, seen, _) = run_until(dir.path(), Duration::from_millis(300)).await;
    assert!(
        matches!(result, Err(CoordinatorError::ShutDown)),
        "{result:?}"
    );
    assert_eq!(seen.0[0], "resumed 1 after 0");

    let store = Store::open(&format!("sqlite://{}", dir.path().join("run.db").display()))
        .await
        .unwrap();
    let stopped = store
        .audit_entries()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind::RUN_STOPPED)
        .count();
    assert_eq!(stopped, 2);
    assert!(matches!(
        store.verify_audit().await.unwrap(),
        AuditReport::Intact { .. }
    ));
}

#[tokio::test]
async fn a_zero_heartbeat_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(dir.path());
    cfg.heartbeat = Duration::ZERO;
    let result = run(cfg, listener, std::future::pending(), &mut Seen::default()).await;
    assert!(
        matches!(result, Err(CoordinatorError::Config { .. })),
        "{result:?}"
    );
    assert!(!dir.path().join("run.db").exists());
}

#[tokio::test]
async fn a_manifest_that_does_not_bound_claims_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(dir.path());
    let unbounded = MANIFEST.replace("max_examples = 100000\n", "");
    cfg.manifest = Manifest::parse(&unbounded, "<test>", dir.path()).unwrap();
    let result = run(cfg, listener, std::future::pending(), &mut Seen::default()).await;
    let Err(CoordinatorError::Config { reason }) = result else {
        panic!("expected a configuration error, got {result:?}");
    };
    assert!(reason.contains("max_examples = N"), "{reason}");
    assert!(!dir.path().join("run.db").exists());

    // Under secure aggregation its own bound applies, and the coordinator enforces it.
    let secure = format!("{unbounded}\n[secure_aggregation]\nthreshold = 0.67\nclip = 1.0\n");
    let manifest = Manifest::parse(&secure, "<test>", dir.path()).unwrap();
    assert_eq!(manifest.policy.max_examples, Some(100_000));
}
