//! What a user sees when something is wrong: secrets masked, logs that a flood cannot fill,
//! one node per site certificate, and errors that name what differs or what is wrong with a
//! key, a folder or an address. Each test runs the real binary on a small CSV federation
//! over loopback (mutual TLS, the real protocol).

mod common;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Process, TestDatabase, entente, free_port, run_ok, spawn};

const SITES: [&str; 2] = ["site-a", "site-b"];

/// A two-site federation of CSV tables (4 features, 2 classes) in a temporary folder.
struct Small {
    dir: tempfile::TempDir,
    port: u16,
}

impl Small {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (i, site) in SITES.iter().enumerate() {
            // Seeded rows: the label is whether the first feature is large.
            let rows: String = (0..60)
                .map(|r| {
                    let x = ((r * 7 + i * 3) % 10) as f32;
                    let y = (r * 3 + i) % 5;
                    format!("{x},{},{},{y},{}\n", r % 3, (r * 5) % 7, u8::from(x > 4.0))
                })
                .collect();
            std::fs::write(root.join(format!("{site}.csv")), rows).unwrap();
        }
        std::fs::write(root.join("federation.toml"), MANIFEST).unwrap();
        let keys = root.join("keys");
        let keys = keys.to_str().unwrap();
        run_ok(entente().args(["keys", "init", "--federation", "errors", "--dir", keys]));
        for site in SITES {
            run_ok(entente().args(["keys", "issue", site, "--dir", keys]));
        }
        run_ok(entente().args(["keys", "issue", "--coordinator", "127.0.0.1", "--dir", keys]));
        Self {
            dir,
            port: free_port(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn serve_with(&self, keys: &Path, extra: &[&str]) -> Process {
        spawn(
            entente()
                .arg("serve")
                .arg(self.path("federation.toml"))
                .args(["--listen", &format!("127.0.0.1:{}", self.port)])
                .arg("--keys")
                .arg(keys)
                .args(["--heartbeat-secs", "0.5", "--wait-secs", "120"])
                .args(extra),
        )
    }

    /// `entente serve` with the federation's keys, once it listens.
    fn serve_listening(&self) -> Process {
        let mut serve = self.serve_with(&self.path("keys"), &[]);
        serve.wait_for("listening on", Duration::from_secs(60));
        serve
    }

    /// `entente join MANIFEST --coordinator https://127.0.0.1:PORT --keys KEYS EXTRA...`.
    fn join_command(&self, manifest: &Path, port: u16, keys: &Path, extra: &[&str]) -> Command {
        let mut join = entente();
        join.arg("join")
            .arg(manifest)
            .args(["--coordinator", &format!("https://127.0.0.1:{port}")])
            .arg("--keys")
            .arg(keys)
            .args(extra);
        join
    }

    /// `entente join` run to its end with this federation's manifest.
    fn join_once(&self, port: u16, keys: &Path, extra: &[&str]) -> Output {
        self.join_command(&self.path("federation.toml"), port, keys, extra)
            .output()
            .unwrap()
    }

    fn join_manifest(&self, manifest: &Path, site: &str, extra: &[&str]) -> Process {
        let keys = self.path("keys");
        spawn(
            self.join_command(manifest, self.port, &keys, &["--site", site])
                .args(extra),
        )
    }

    fn join(&self, site: &str) -> Process {
        self.join_manifest(&self.path("federation.toml"), site, &[])
    }

    fn audit(&self) -> String {
        let out = run_ok(
            entente()
                .args(["audit", "show"])
                .arg(self.path("federation.toml")),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

const MANIFEST: &str = r#"
[federation]
name = "errors"
seed = 1

[data]
format = "csv"
path = "site-a.csv"
features = 4
classes = 2

[[sites]]
name = "site-a"
data = "site-a.csv"

[[sites]]
name = "site-b"
data = "site-b.csv"

[model]
kind = "mlp"
hidden = [4]

[training]
rounds = 2
learning_rate = 0.05

[strategy]
max_examples = 1000

[selection]
min_sites = 2
deadline_secs = 60
"#;

/// The tests run one at a time: each starts several processes.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The command failed, and its output says `needle`.
fn failed_saying(out: &Output, needle: &str) {
    let log = text(out);
    assert!(!out.status.success(), "it succeeded:\n{log}");
    assert!(log.contains(needle), "no `{needle}` in:\n{log}");
}

/// At most `limit` has passed since `started`.
fn within(started: Instant, limit: Duration) {
    let took = started.elapsed();
    assert!(took < limit, "took {took:?}, more than {limit:?}");
}

#[test]
fn join_reports_its_progress_and_writes_no_colour_codes_into_a_log() {
    let _serial = serial();
    let fed = Small::new();
    let serve = fed.serve_listening();
    let nodes: Vec<Process> = SITES.iter().map(|s| fed.join(s)).collect();
    let (ok, log) = serve.finish(Duration::from_secs(120));
    assert!(ok, "serve failed:\n{log}");
    assert!(log.contains("certificate for 127.0.0.1"), "{log}");
    for node in nodes {
        // At the default log level, with stdout and stderr redirected.
        let (ok, log) = node.finish(Duration::from_secs(30));
        assert!(ok, "a node failed:\n{log}");
        for line in [
            "training examples; connecting to https://127.0.0.1:",
            "admitted to federation `errors`",
            "round   1: trained on",
            "round   2: trained on",
            "update sent",
            "the run is finished after 2 rounds",
        ] {
            assert!(log.contains(line), "no `{line}` in:\n{log}");
        }
        assert!(
            !log.contains('\u{1b}'),
            "colour codes in a redirected log:\n{log}"
        );
    }
    // A warning on stderr, redirected: no colour codes either.
    let out = fed.join_once(
        free_port(),
        &fed.path("keys"),
        &["--site", "site-a", "--max-retries", "1"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("WARN"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn a_second_node_with_the_same_certificate_is_refused_while_the_first_is_connected() {
    let _serial = serial();
    let fed = Small::new();
    let serve = fed.serve_listening();
    let mut first = fed.join("site-a");
    first.wait_for("admitted to federation", Duration::from_secs(60));
    let (ok, log) = fed.join("site-a").finish(Duration::from_secs(60));
    assert!(!ok, "a second node took site-a's session:\n{log}");
    assert!(
        log.contains("another node holds site `site-a`'s session")
            && log.contains("two nodes cannot share one site's certificate"),
        "{log}"
    );
    // The first node kept its session all along.
    std::thread::sleep(Duration::from_secs(2));
    let first_log = first.output();
    assert!(!first_log.contains("not current"), "{first_log}");
    assert_eq!(
        first_log.matches("admitted to federation").count(),
        1,
        "{first_log}"
    );
    drop(first);
    serve.terminate();
    let _ = serve.finish(Duration::from_secs(30));
    let audit = fed.audit();
    assert!(
        audit.lines().any(|l| l.contains("refusal")
            && l.contains("site-a")
            && l.contains("another node holds")),
        "{audit}"
    );
}

#[test]
fn a_node_with_other_terms_is_told_the_first_key_that_differs() {
    let _serial = serial();
    let fed = Small::new();
    let changed = fed.path("changed.toml");
    std::fs::write(
        &changed,
        MANIFEST.replace("learning_rate = 0.05", "learning_rate = 0.5"),
    )
    .unwrap();
    let serve = fed.serve_listening();
    let (ok, log) = fed
        .join_manifest(&changed, "site-a", &[])
        .finish(Duration::from_secs(60));
    assert!(!ok, "{log}");
    assert!(
        log.contains(
            "`training.learning_rate` differs: the coordinator's manifest has 0.05, the node's 0.5"
        ),
        "{log}"
    );
    serve.terminate();
    let _ = serve.finish(Duration::from_secs(30));
    assert!(fed.audit().contains("`training.learning_rate` differs"));
}

#[test]
fn a_key_or_certificate_that_cannot_work_stops_serve_and_join_at_start() {
    let _serial = serial();
    let fed = Small::new();
    // Another federation's key folder: its coordinator certificate, and a key of another pair.
    let other = fed.path("other");
    let other_s = other.to_str().unwrap();
    run_ok(entente().args(["keys", "init", "--federation", "other", "--dir", other_s]));
    run_ok(entente().args([
        "keys",
        "issue",
        "--coordinator",
        "127.0.0.1",
        "--dir",
        other_s,
    ]));
    let mixed = fed.path("mixed");
    std::fs::create_dir_all(mixed.join("sites")).unwrap();
    let keys = fed.path("keys");
    for file in ["ca.pem", "coordinator.pem", "sites/site-a.pem"] {
        std::fs::copy(keys.join(file), mixed.join(file)).unwrap();
    }
    std::fs::copy(keys.join("sites/site-b.key"), mixed.join("coordinator.key")).unwrap();
    std::fs::copy(
        keys.join("sites/site-b.key"),
        mixed.join("sites/site-a.key"),
    )
    .unwrap();

    let started = Instant::now();
    let (ok, log) = fed.serve_with(&mixed, &[]).finish(Duration::from_secs(60));
    assert!(!ok, "{log}");
    assert!(
        log.contains("coordinator.key does not belong to the certificate"),
        "{log}"
    );
    // Refused before a run was opened: no banner, no store.
    assert!(!log.contains("entente serve: run"), "{log}");
    assert!(!fed.path("federation.entente.db").exists());

    std::fs::copy(other.join("coordinator.pem"), mixed.join("coordinator.pem")).unwrap();
    std::fs::copy(other.join("coordinator.key"), mixed.join("coordinator.key")).unwrap();
    let (ok, log) = fed.serve_with(&mixed, &[]).finish(Duration::from_secs(60));
    assert!(!ok, "{log}");
    assert!(log.contains("not issued by the federation CA"), "{log}");

    let out = fed.join_once(fed.port, &mixed, &["--site", "site-a"]);
    failed_saying(&out, "site-a.key does not belong to the certificate");
    within(started, Duration::from_secs(30));
}

#[test]
fn a_coordinator_address_that_never_speaks_tls_is_given_up_on() {
    let _serial = serial();
    let fed = Small::new();
    // Accepts connections and says nothing.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut open: Vec<TcpStream> = Vec::new();
        for stream in silent.incoming().take(4).flatten() {
            open.push(stream);
        }
        std::thread::sleep(Duration::from_secs(60));
    });
    let started = Instant::now();
    let out = fed.join_once(
        port,
        &fed.path("keys"),
        &["--site", "site-a", "--max-retries", "0"],
    );
    failed_saying(&out, "did not complete a TLS handshake within 15 s");
    within(started, Duration::from_secs(40));
    drop(held);
}

#[test]
fn a_handshake_flood_gets_a_bounded_log() {
    let _serial = serial();
    let fed = Small::new();
    let serve = fed.serve_listening();
    let flood = 300;
    for _ in 0..flood {
        // Not TLS: the handshake fails at once.
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", fed.port)) {
            let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
        }
    }
    // Let the coordinator get through them, then stop it: the summary comes at shutdown.
    std::thread::sleep(Duration::from_secs(3));
    serve.terminate();
    let (_, log) = serve.finish(Duration::from_secs(30));
    let lines = log.lines().filter(|l| l.contains("refused")).count();
    assert!(lines <= 12, "{lines} lines about refusals:\n{log}");
    assert!(
        log.contains("more refused connections or calls in the last"),
        "{log}"
    );
    // The audit log counts the rest under one entry per address.
    let audit = fed.audit();
    assert!(audit.contains("tls handshake"), "{audit}");
}

#[test]
fn a_postgres_password_never_shows() {
    let _serial = serial();
    let fed = Small::new();
    // An error: nothing listens on that port; the password holds a '/', which ends a URL's
    // host part.
    let url = format!(
        "postgres://entente:s3/cret@127.0.0.1:{}/entente",
        free_port()
    );
    let (ok, log) = fed
        .serve_with(&fed.path("keys"), &["--database", &url])
        .finish(Duration::from_secs(60));
    assert!(!ok, "{log}");
    assert!(!log.contains("s3/cret") && !log.contains("cret@"), "{log}");
    assert!(log.contains("postgres://entente:***@"), "{log}");

    // The banner, when a server is there (`.ci/run` starts one).
    let Some(db) = TestDatabase::create("entente_errors") else {
        return;
    };
    let password = db
        .url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(user, _)| user.split_once(':'))
        .map(|(_, p)| format!(":{p}@"))
        .expect("ENTENTE_TEST_POSTGRES_URL names a password");
    let mut serve = fed.serve_with(&fed.path("keys"), &["--database", &db.url]);
    let banner = serve.wait_for("entente serve: run", Duration::from_secs(60));
    assert!(
        banner.contains(":***@") && !banner.contains(&password),
        "{banner}"
    );
    serve.terminate();
    let (_, log) = serve.finish(Duration::from_secs(30));
    assert!(!log.contains(&password), "{log}");
}

#[test]
fn an_out_folder_that_holds_files_is_not_written_over_without_overwrite() {
    let _serial = serial();
    let fed = Small::new();
    let out = fed.path("run");
    let simulate = |extra: &[&str]| {
        entente()
            .arg("simulate")
            .arg("--out")
            .arg(&out)
            .args(["-q", "--rounds", "1"])
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(simulate(&[]).status.success());
    failed_saying(&simulate(&[]), "already holds files");
    failed_saying(
        &simulate(&[]),
        "pass --overwrite to write over what is there",
    );
    assert!(simulate(&["--overwrite"]).status.success());

    let sites = fed.path("sites");
    let split = |extra: &[&str]| {
        entente()
            .arg("split")
            .arg(fed.path("federation.toml"))
            .arg("--out")
            .arg(&sites)
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(split(&[]).status.success());
    failed_saying(&split(&[]), "already holds files");
    assert!(split(&["--overwrite"]).status.success());
}

#[test]
fn a_certificate_validity_outside_one_day_to_a_hundred_years_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let keys = keys.to_str().unwrap();
    // `entente keys WHAT... --dir KEYS --days DAYS`.
    let keys_cmd = |what: &[&str], days: &str| {
        entente()
            .arg("keys")
            .args(what)
            .args(["--dir", keys, "--days", days])
            .output()
            .unwrap()
    };
    let init = ["init", "--federation", "days"];
    failed_saying(&keys_cmd(&init, "0"), "allowed: 1 to 36500 days");
    failed_saying(&keys_cmd(&init, "36501"), "allowed: 1 to 36500 days");
    assert!(keys_cmd(&init, "1").status.success());
    let site = ["issue", "site-a"];
    failed_saying(&keys_cmd(&site, "0"), "valid for 0 days is not issued");
    assert!(!dir.path().join("keys/sites/site-a.pem").exists());
    assert!(keys_cmd(&site, "30").status.success());
    assert!(
        keys_cmd(&["issue", "--coordinator", "127.0.0.1"], "30")
            .status
            .success()
    );
}
