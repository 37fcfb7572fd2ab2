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

mod common;

use common::MANIFEST;

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
        signatures: None,
        revocations: None,
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

// ---------------------------------------------------------------- the store's owner

fn with_keys(dir: &Path) {
    let keys = KeyDir::new(dir.join("keys"));
    tls::init_ca(&keys, "library-run").unwrap();
    tls::issue_coordinator(&keys, &["127.0.0.1".into()], false).unwrap();
}

fn store_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("run.db").display())
}

async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Runs the coordinator of [`config`] on `listener` until `stop` fires, or with `None` until
/// it ends by itself; returns what it reported too.
async fn coordinator(
    dir: &Path,
    listener: tokio::net::TcpListener,
    stop: Option<tokio::sync::oneshot::Receiver<()>>,
) -> (
    Result<entente_coordinator::RunSummary, CoordinatorError>,
    Seen,
) {
    let shutdown = async move {
        match stop {
            Some(stop) => {
                let _ = stop.await;
            }
            None => std::future::pending().await,
        }
    };
    let mut seen = Seen::default();
    let result = run(config(dir), listener, shutdown, &mut seen).await;
    (result, seen)
}

/// Waits until the coordinator on `dir`'s store has opened its run, and returns the log then.
async fn started(dir: &Path) -> Vec<entente_coordinator::audit::AuditEntry> {
    for _ in 0..400 {
        if let Ok(store) = Store::open_read_only(&store_url(dir)).await
            && let Ok(entries) = store.audit_entries().await
            && entries.iter().any(|e| e.kind == kind::RUN_STARTED)
        {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the coordinator did not open its run within 20 s");
}

/// An error and its sources, as `entente` prints them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test]
async fn a_second_coordinator_on_a_live_store_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    with_keys(dir.path());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (first_listener, second_listener) = (bind().await, bind().await);
    let first = coordinator(dir.path(), first_listener, Some(stopped));
    let second = async {
        let before = started(dir.path()).await;
        // Refused at once; were it let in, it would wait for the sites.
        let (result, seen) = tokio::time::timeout(
            Duration::from_secs(20),
            coordinator(dir.path(), second_listener, None),
        )
        .await
        .expect("the second coordinator was let in");
        let after = started(dir.path()).await;
        let _ = stop.send(());
        (result, seen, before, after)
    };
    let ((first, _), (second, seen, before, after)) = tokio::join!(first, second);
    assert!(
        matches!(first, Err(CoordinatorError::ShutDown)),
        "{first:?}"
    );
    let Err(err) = second else {
        panic!("the second coordinator ran");
    };
    let text = chain(&err);
    assert!(matches!(err, CoordinatorError::OpenStore { .. }), "{text}");
    assert!(text.contains("in use by another coordinator"), "{text}");
    assert!(
        text.contains(&format!("pid {}", std::process::id())) && text.contains("run.db.lock"),
        "the holder is named: {text}"
    );
    assert!(seen.0.is_empty(), "the second one started: {:?}", seen.0);
    assert_eq!(before, after, "the second coordinator wrote to the store");
    // Once the first has stopped, the store is free for the next one.
    let (_store, owner) = Store::open_owned(&store_url(dir.path())).await.unwrap();
    owner.release().await;
}

#[tokio::test]
async fn a_deleted_database_file_stops_the_run() {
    let dir = tempfile::tempdir().unwrap();
    with_keys(dir.path());
    let db = dir.path().join("run.db");
    let running = tokio::time::timeout(
        Duration::from_secs(30),
        coordinator(dir.path(), bind().await, None),
    );
    let deleter = async {
        started(dir.path()).await;
        std::fs::remove_file(&db).unwrap();
    };
    let (result, ()) = tokio::join!(running, deleter);
    let err = match result {
        Ok((Err(err), _)) => err,
        Ok((Ok(_), _)) => panic!("the run finished without its store"),
        Err(_) => panic!("the run went on for 30 s without its store"),
    };
    let text = chain(&err);
    assert!(matches!(err, CoordinatorError::StoreLost { .. }), "{text}");
    assert!(text.contains("run.db was deleted"), "{text}");
    assert!(!db.exists(), "an empty store was made in its place");
}

#[tokio::test]
async fn a_shut_down_run_leaves_its_whole_store_in_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    with_keys(dir.path());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = coordinator(dir.path(), bind().await, Some(stopped));
    let watcher = async {
        started(dir.path()).await;
        // A reader keeps its connection open: closing the coordinator's is then not the last
        // close, which would fold the write-ahead log in by itself.
        let reader = Store::open_read_only(&store_url(dir.path())).await.unwrap();
        reader.audit_entries().await.unwrap();
        let _ = stop.send(());
        reader
    };
    let ((result, _), reader) = tokio::join!(running, watcher);
    assert!(
        matches!(result, Err(CoordinatorError::ShutDown)),
        "{result:?}"
    );
    let copy = dir.path().join("backup.db");
    std::fs::copy(dir.path().join("run.db"), &copy).unwrap();
    let backup = Store::open_read_only(&format!("sqlite://{}", copy.display()))
        .await
        .expect("the database file alone is a store");
    assert_eq!(
        backup.audit_entries().await.unwrap(),
        reader.audit_entries().await.unwrap()
    );
    assert!(
        backup
            .audit_entries()
            .await
            .unwrap()
            .iter()
            .any(|e| e.kind == kind::RUN_STOPPED)
    );
}

#[tokio::test]
async fn every_refused_handshake_of_a_flood_is_counted_in_the_log() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const FLOOD: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    with_keys(dir.path());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let running = coordinator(dir.path(), listener, Some(stopped));
    let flood = async {
        started(dir.path()).await;
        for _ in 0..FLOOD {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            // The coordinator refuses the handshake and hangs up.
            let mut buf = [0u8; 256];
            while matches!(
                tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await,
                Ok(Ok(n)) if n > 0
            ) {}
        }
        // No refusal comes after the flood: only the shutdown can write its count.
        let _ = stop.send(());
    };
    let ((result, _), ()) = tokio::join!(running, flood);
    assert!(
        matches!(result, Err(CoordinatorError::ShutDown)),
        "{result:?}"
    );
    let store = Store::open_read_only(&store_url(dir.path())).await.unwrap();
    let refusals: Vec<serde_json::Value> = store
        .audit_entries()
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind::REFUSAL)
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect();
    assert!(
        refusals.len() <= 2,
        "one entry per address per window: {refusals:?}"
    );
    let counted: u64 = refusals
        .iter()
        .map(|d| d["refusals"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, FLOOD, "{refusals:?}");
}

#[tokio::test]
async fn a_store_reached_by_another_name_is_still_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = store_url(dir.path());
    let (_store, owner) = Store::open_owned(&url).await.unwrap();
    // A symbolic link leads to the same lock.
    let link = dir.path().join("alias.db");
    std::os::unix::fs::symlink(dir.path().join("run.db"), &link).unwrap();
    let second = Store::open_owned(&format!("sqlite://{}", link.display())).await;
    let Err(err) = second else {
        panic!("a second coordinator took the store through a symbolic link");
    };
    assert!(
        chain(&err).contains("in use by another coordinator"),
        "{err}"
    );
    // A hard link would get a lock and a write-ahead log of its own: refused.
    let hard = dir.path().join("hard.db");
    std::fs::hard_link(dir.path().join("run.db"), &hard).unwrap();
    let Err(err) = Store::open_owned(&format!("sqlite://{}", hard.display())).await else {
        panic!("a second coordinator took the store through a hard link");
    };
    assert!(chain(&err).contains("2 names (hard links)"), "{err}");
    owner.release().await;
}

#[tokio::test]
async fn a_store_that_is_a_pipe_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe.db");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let url = format!("sqlite://{}", fifo.display());
    let read = tokio::time::timeout(Duration::from_secs(10), Store::open_read_only(&url))
        .await
        .expect("reading a pipe as a store hung");
    let Err(err) = read else {
        panic!("a pipe was read as a store");
    };
    assert!(chain(&err).contains("a named pipe (FIFO)"), "{err}");
    let owned = tokio::time::timeout(Duration::from_secs(10), Store::open_owned(&url))
        .await
        .expect("taking a pipe as a store hung");
    assert!(owned.is_err());
}
