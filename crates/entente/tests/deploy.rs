//! Real deployments on loopback: `entente serve` and one `entente join` per site as separate
//! processes, with certificates from `entente keys`, checked against `entente simulate` and
//! through the store's audit log.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use entente_core::params::ParamSet;
use entente_privacy::dp::rdp::epsilon;

const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";
const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];

/// A federation's folder: keys, manifest, store; removed when dropped.
struct Federation {
    dir: PathBuf,
    port: u16,
    database: Option<String>,
}

/// A child process that is killed when the test ends, whatever happens.
struct Process {
    child: Child,
    lines: Receiver<String>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Waits for a line of stdout containing `needle`.
    fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line containing `{needle}` within {limit:?}; output so far:\n{}",
                    self.seen.lock().unwrap().join("\n")
                ),
            }
        }
    }

    /// Waits for the process to end and returns its exit status and all its output.
    fn finish(mut self, limit: Duration) -> (bool, String) {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads drain.
                std::thread::sleep(Duration::from_millis(100));
                return (status.success(), self.seen.lock().unwrap().join("\n"));
            }
            assert!(
                Instant::now() < until,
                "process did not end within {limit:?}; output so far:\n{}",
                self.seen.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn entente() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_entente"));
    c.env_remove("RUST_LOG");
    c
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("could not start entente");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn spawn(cmd: &mut Command) -> Process {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("could not start entente");
    let (tx, rx) = channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let (tx, seen) = (tx.clone(), Arc::clone(&seen));
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                seen.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
    }
    Process {
        child,
        lines: rx,
        seen,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Federation {
    /// Keys for the CA, the three sites and the coordinator, and a manifest.
    fn new(name: &str, manifest: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "entente-deploy-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("federation.toml"), manifest).unwrap();
        let keys = dir.join("keys");
        let keys = keys.to_str().unwrap();
        run_ok(entente().args(["keys", "init", "--federation", name, "--dir", keys]));
        for site in SITES {
            run_ok(entente().args(["keys", "issue", site, "--dir", keys]));
        }
        run_ok(entente().args(["keys", "issue", "--coordinator", "127.0.0.1", "--dir", keys]));
        // Each node trains on its own records: the shares `simulate` divides the data into.
        run_ok(
            entente()
                .arg("split")
                .arg(dir.join("federation.toml"))
                .arg("--out")
                .arg(dir.join("sites")),
        );
        Self {
            dir,
            port: free_port(),
            database: None,
        }
    }

    fn manifest(&self) -> PathBuf {
        self.dir.join("federation.toml")
    }

    fn keys(&self) -> PathBuf {
        self.dir.join("keys")
    }

    fn database_args(&self) -> Vec<String> {
        match &self.database {
            Some(url) => vec!["--database".into(), url.clone()],
            None => vec![],
        }
    }

    fn serve(&self) -> Process {
        self.serve_on(self.port)
    }

    fn serve_on(&self, port: u16) -> Process {
        spawn(
            entente()
                .arg("serve")
                .arg(self.manifest())
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .arg("--keys")
                .arg(self.keys())
                .arg("--out")
                .arg(self.dir.join("model.safetensors"))
                .args(["--heartbeat-secs", "0.5", "--wait-secs", "60"])
                .args(self.database_args()),
        )
    }

    fn join(&self, site: &str, extra: &[&str]) -> Process {
        self.join_with_keys(site, &self.keys(), extra)
    }

    fn join_with_keys(&self, site: &str, keys: &Path, extra: &[&str]) -> Process {
        spawn(
            entente()
                .arg("join")
                .arg(self.manifest())
                .args(["--coordinator", &format!("https://127.0.0.1:{}", self.port)])
                .args(["--site", site])
                .arg("--keys")
                .arg(keys)
                .args(extra),
        )
    }

    fn audit(&self, verb: &str) -> Output {
        entente()
            .args(["audit", verb])
            .arg(self.manifest())
            .args(self.database_args())
            .output()
            .unwrap()
    }

    /// The default store: the SQLite file beside the manifest.
    fn database_file(&self) -> PathBuf {
        self.dir.join("federation.entente.db")
    }

    /// The audit log as lines of `entente audit show`.
    fn audit_lines(&self) -> Vec<String> {
        let out = self.audit("show");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn assert_audit_intact(&self) {
        let out = self.audit("verify");
        assert!(
            out.status.success(),
            "audit verify failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The audit log's `privacy_charged` entries.
    fn privacy_charges(&self) -> Vec<String> {
        self.audit_lines()
            .into_iter()
            .filter(|l| l.contains("privacy_charged"))
            .collect()
    }

    /// The charges in `site`'s ledger of its own records, `sites/SITE` (the manifests keep
    /// their ledgers in `ledgers/`).
    fn ledger_charges(&self, site: &str) -> Vec<serde_json::Value> {
        let path = self
            .dir
            .join("ledgers")
            .join(format!("{site}--{site}.json"));
        let ledger: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        ledger["charges"].as_array().unwrap().clone()
    }

    /// Every site's ledger holds `rounds` charges, and `entente privacy` reports every site.
    fn assert_ledgers_charged(&self, rounds: usize) {
        let out = run_ok(entente().arg("privacy").arg(self.manifest()));
        let report = String::from_utf8_lossy(&out.stdout);
        for site in SITES {
            assert_eq!(self.ledger_charges(site).len(), rounds, "{site}");
            assert!(report.contains(site), "{report}");
        }
    }

    /// Rounds with a `round_finished` entry, in log order.
    fn finished_rounds(&self) -> Vec<u32> {
        self.audit_lines()
            .iter()
            .filter(|l| l.contains("round_finished"))
            .map(|l| {
                let after = l.split(" round ").nth(1).unwrap().trim_start();
                after.split_whitespace().next().unwrap().parse().unwrap()
            })
            .collect()
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The tests run one at a time: each starts four processes, and the timing of the fault tests
/// should not depend on how many others share the machine.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn have_fashion_mnist() -> bool {
    let present = Path::new(FASHION_MNIST)
        .join("train-images-idx3-ubyte.gz")
        .exists();
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "Fashion-MNIST is missing; .ci/run installs dataset-fashion-mnist"
        );
        eprintln!("skipped: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)");
    }
    present
}

/// Three sites with label skew on a slice of Fashion-MNIST.
fn manifest(name: &str, rounds: u32, limit: usize, min_sites: usize) -> String {
    manifest_with_epochs(name, rounds, limit, min_sites, 1)
}

/// [`manifest`] with `epochs` local epochs per round.
fn manifest_with_epochs(
    name: &str,
    rounds: u32,
    limit: usize,
    min_sites: usize,
    epochs: usize,
) -> String {
    format!(
        r#"
[federation]
name = "{name}"
seed = 7

[data]
format = "idx"
path = "{FASHION_MNIST}"
partition = "dirichlet"
alpha = 0.5
limit = {limit}
shape = [1, 28, 28]
classes = 10

[[sites]]
name = "site-a"
data = "sites/site-a"

[[sites]]
name = "site-b"
data = "sites/site-b"

[[sites]]
name = "site-c"
data = "sites/site-c"

[model]
kind = "mlp"
hidden = [64]

[training]
rounds = {rounds}
local_epochs = {epochs}
batch_size = 32
learning_rate = 0.05

[selection]
min_sites = {min_sites}
deadline_secs = 120
"#
    )
}

/// Runs a whole federation with every node present and returns the final model.
fn run_federation(fed: &Federation) -> ParamSet {
    let mut serve = fed.serve();
    serve.wait_for("listening on", Duration::from_secs(60));
    let nodes: Vec<Process> = SITES.iter().map(|s| fed.join(s, &[])).collect();
    let (ok, log) = serve.finish(Duration::from_secs(300));
    assert!(ok, "serve failed:\n{log}");
    for node in nodes {
        let (ok, log) = node.finish(Duration::from_secs(30));
        assert!(ok, "a node failed:\n{log}");
    }
    ParamSet::load(&fed.dir.join("model.safetensors")).unwrap()
}

/// The final model `entente simulate` trains from the same manifest.
fn simulated_model(fed: &Federation) -> ParamSet {
    let out = fed.dir.join("simulated");
    run_ok(
        entente()
            .arg("simulate")
            .arg(fed.manifest())
            .arg("--out")
            .arg(&out)
            .arg("-q"),
    );
    ParamSet::load(&out.join("model.safetensors")).unwrap()
}

#[test]
fn three_nodes_train_the_model_simulate_trains() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    let fed = Federation::new("loopback", &manifest("loopback", 3, 3000, 2));
    let deployed = run_federation(&fed);
    let simulated = simulated_model(&fed);
    // Same engine, same seeds, same order of aggregation: the same model, bit for bit.
    assert!(deployed.same_layout(&simulated));
    assert_eq!(deployed.as_flat(), simulated.as_flat());
    assert_eq!(fed.finished_rounds(), vec![1, 2, 3]);
    fed.assert_audit_intact();
    let log = fed.audit_lines();
    for site in SITES {
        assert!(
            log.iter()
                .any(|l| l.contains("admission") && l.contains(site)),
            "no admission of {site}: {log:?}"
        );
    }
}

#[test]
fn secure_aggregation_over_the_network_gives_the_simulated_model() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    let text =
        manifest("secagg", 2, 3000, 3) + "\n[secure_aggregation]\nthreshold = 0.67\nclip = 1.0\n";
    let fed = Federation::new("secagg", &text);
    let deployed = run_federation(&fed);
    let simulated = simulated_model(&fed);
    // The masks cancel exactly, whatever randomness each node draws, so the unmasked sum is
    // the one simulation computes.
    assert_eq!(deployed.as_flat(), simulated.as_flat());
    let audit = fed.audit_lines();
    let finished: Vec<_> = audit
        .iter()
        .filter(|l| l.contains("round_finished"))
        .collect();
    assert_eq!(finished.len(), 2);
    assert!(
        finished
            .iter()
            .all(|l| l.contains("\"secure_aggregation\":\"secagg\"")),
        "{finished:?}"
    );
    fed.assert_audit_intact();
}

/// Runs two rounds over three nodes under `privacy` (TOML after the base manifest) and checks
/// that every node charged its own ledger for both rounds and the audit log holds each charge
/// under `mechanism`. Returns the federation and the audit log's charges.
fn run_charged(
    name: &str,
    min_sites: usize,
    privacy: &str,
    mechanism: &str,
) -> (Federation, Vec<String>) {
    let fed = Federation::new(name, &(manifest(name, 2, 3000, min_sites) + privacy));
    run_federation(&fed);
    let charged = fed.privacy_charges();
    assert_eq!(charged.len(), 6, "{charged:?}");
    let tag = format!("\"mechanism\":\"{mechanism}\"");
    assert!(charged.iter().all(|l| l.contains(&tag)), "{charged:?}");
    // Every node kept its own ledger beside its manifest, charged for both rounds.
    fed.assert_ledgers_charged(2);
    fed.assert_audit_intact();
    (fed, charged)
}

#[test]
fn dp_sgd_nodes_charge_their_own_ledgers_and_the_audit_log_records_it() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    let privacy = "\n[privacy]\nmechanism = \"dp-sgd\"\nclip = 1.0\nnoise_multiplier = 1.0\n\
                   epsilon_budget = 50.0\nledger = \"ledgers\"\n";
    let (_fed, charged) = run_charged("private", 2, privacy, "dp-sgd");
    assert!(
        charged
            .iter()
            .all(|l| l.contains("\"noise_multiplier\":1.0"))
    );
}

#[test]
fn distributed_dp_nodes_charge_one_unamplified_step_per_round() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    // The nodes clip and noise their updates under secure aggregation.
    let privacy = "\n[secure_aggregation]\nthreshold = 0.67\nclip = 8.0\n\
                   \n[privacy]\nmechanism = \"distributed\"\nclip = 1.0\n\
                   noise_multiplier = 1.0\nepsilon_budget = 50.0\nledger = \"ledgers\"\n";
    let (fed, charged) = run_charged("distributed", 3, privacy, "distributed");
    assert!(
        charged
            .iter()
            .all(|l| l.contains("\"sampling_rate\":1.0") && l.contains("\"steps\":1")),
        "{charged:?}"
    );
    // What each node wrote to its own ledger: one step at rate 1 and sigma 1 per round.
    for site in SITES {
        let charges = fed.ledger_charges(site);
        assert!(
            charges
                .iter()
                .all(|c| c["q"] == 1.0 && c["steps"] == 1 && c["noise_multiplier"] == 1.0),
            "{site}: {charges:?}"
        );
    }
}

#[test]
fn central_dp_nodes_spend_their_budget_then_refuse_the_next_run() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    // Central DP: the coordinator adds the noise, each node charges one unamplified step per
    // round. The budget buys two rounds, not three.
    let step = |n| epsilon(1.0, 1.0, n, 1e-5).unwrap().epsilon;
    let budget = f64::midpoint(step(2), step(3));
    let text = manifest("central", 2, 3000, 2)
        + &format!(
            "\n[privacy]\nmechanism = \"client\"\nclip = 1.0\nnoise_multiplier = 1.0\n\
             epsilon_budget = {budget}\nledger = \"ledgers\"\n"
        );
    let fed = Federation::new("central", &text);
    let first = run_federation(&fed);
    assert!(first.as_flat().iter().all(|v| v.is_finite()));
    assert_eq!(fed.finished_rounds(), vec![1, 2]);

    // A second run of the same manifest: every node refuses its first round, naming the
    // numbers, and the run stops without a round.
    let mut serve = fed.serve();
    serve.wait_for("listening on", Duration::from_secs(60));
    let nodes: Vec<Process> = SITES.iter().map(|s| fed.join(s, &[])).collect();
    let (ok, log) = serve.finish(Duration::from_secs(300));
    assert!(!ok, "the second run should have stopped:\n{log}");
    assert!(log.contains("refuses round 1"), "{log}");
    assert!(
        log.contains(&format!("over its budget of {budget}")),
        "{log}"
    );
    drop(nodes);
    assert_eq!(fed.finished_rounds(), vec![1, 2]);
    // Nothing was charged for the refused round: two charges per ledger.
    fed.assert_ledgers_charged(2);
    fed.assert_audit_intact();
}

#[test]
fn an_edited_audit_entry_is_named_by_verify() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    let fed = Federation::new("tamper", &manifest("tamper", 1, 1500, 2));
    run_federation(&fed);
    fed.assert_audit_intact();
    let db = fed.dir.join("federation.entente.db");
    assert!(db.exists(), "the default store is beside the manifest");
    // Whoever can write the database can drop the append-only trigger; the chain still tells.
    let status = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute('DROP TRIGGER audit_log_no_update'); \
             c.execute(\"UPDATE audit_log SET detail = '{\\\"forged\\\": true}' WHERE seq = 3\"); \
             c.commit()",
        )
        .arg(&db)
        .status()
        .unwrap();
    assert!(status.success());
    let out = fed.audit("verify");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("entry 3"), "{err}");
}

#[test]
fn a_second_serve_on_a_live_store_is_refused() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    let fed = Federation::new("twice", &manifest("twice", 1, 1500, 3));
    let mut first = fed.serve();
    first.wait_for("listening on", Duration::from_secs(60));
    let before = fed.audit_lines();
    let (ok, log) = fed.serve_on(free_port()).finish(Duration::from_secs(60));
    assert!(
        !ok && log.contains("in use by another coordinator") && log.contains("pid "),
        "{log}"
    );
    assert_eq!(
        fed.audit_lines(),
        before,
        "the second serve wrote to the store"
    );
    drop(first);
}

#[test]
fn deleting_the_store_mid_run_stops_serve() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    let fed = Federation::new("deleted", &manifest("deleted", 30, 3000, 2));
    let mut serve = fed.serve();
    serve.wait_for("listening on", Duration::from_secs(60));
    let _nodes: Vec<Process> = SITES.iter().map(|s| fed.join(s, &[])).collect();
    serve.wait_for("round   1/30", Duration::from_secs(120));
    let db = fed.database_file();
    std::fs::remove_file(&db).unwrap();
    let (ok, log) = serve.finish(Duration::from_secs(60));
    assert!(!ok, "serve went on without its store:\n{log}");
    assert!(log.contains("federation.entente.db was deleted"), "{log}");
    assert!(!log.contains("round  30/30"), "{log}");
    assert!(!db.exists(), "an empty store was made in its place");
}

#[test]
fn reading_a_missing_store_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("missing.db");
    for verb in ["verify", "show"] {
        let out = entente()
            .args(["audit", verb, "--database"])
            .arg(format!("sqlite://{}", db.display()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(err.contains("there is no store at"), "{err}");
        assert!(!db.exists(), "`audit {verb}` created {}", db.display());
    }
}

#[test]
fn bad_updates_are_rejected_with_the_site_named() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    let fed = Federation::new("faulty", &manifest("faulty", 2, 1500, 1));
    let mut serve = fed.serve();
    serve.wait_for("listening on", Duration::from_secs(60));
    let _a = fed.join("site-a", &[]);
    let _b = fed.join("site-b", &["--corrupt-updates", "nan"]);
    let _c = fed.join("site-c", &["--corrupt-updates", "shape"]);
    let (ok, log) = serve.finish(Duration::from_secs(300));
    assert!(ok, "serve failed:\n{log}");
    for round in [
        "round   1/2: 1 of 3 sites accepted",
        "round   2/2: 1 of 3 sites accepted",
    ] {
        assert!(log.contains(round), "{log}");
    }
    assert!(
        log.contains("left out site-b") && log.contains("NaN"),
        "{log}"
    );
    assert!(
        log.contains("left out site-c") && log.contains("shape"),
        "{log}"
    );
    let audit = fed.audit_lines().join("\n");
    assert!(
        audit.contains("update_rejected") && audit.contains("site-b"),
        "{audit}"
    );
}

#[test]
fn strangers_are_refused_before_any_parameters() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    let fed = Federation::new("strangers", &manifest("strangers", 1, 1500, 1));
    // A second CA with a site of the same name, and a certificate from the right CA for a
    // site the manifest does not list.
    let other = fed.dir.join("other-keys");
    let other_s = other.to_str().unwrap();
    run_ok(entente().args(["keys", "init", "--federation", "other", "--dir", other_s]));
    run_ok(entente().args(["keys", "issue", "site-a", "--dir", other_s]));
    run_ok(
        entente()
            .args(["keys", "issue", "mallory", "--dir"])
            .arg(fed.keys()),
    );
    let mut serve = fed.serve();
    serve.wait_for("listening on", Duration::from_secs(60));

    let foreign = fed.join_with_keys("site-a", &other, &["--max-retries", "1"]);
    let (ok, log) = foreign.finish(Duration::from_secs(60));
    assert!(!ok, "a node with a foreign certificate was let in:\n{log}");
    // Mallory's own manifest lists her (the node would not start otherwise); the
    // coordinator's does not.
    let theirs = fed.dir.join("mallory.toml");
    let text = std::fs::read_to_string(fed.manifest()).unwrap();
    std::fs::write(
        &theirs,
        text.replace("[model]", "[[sites]]\nname = \"mallory\"\n\n[model]"),
    )
    .unwrap();
    let mallory = spawn(
        entente()
            .arg("join")
            .arg(&theirs)
            .args(["--coordinator", &format!("https://127.0.0.1:{}", fed.port)])
            .args(["--site", "mallory"])
            .arg("--keys")
            .arg(fed.keys()),
    );
    let (ok, log) = mallory.finish(Duration::from_secs(60));
    assert!(
        !ok && log.contains("refused") && log.contains("mallory"),
        "{log}"
    );

    // A site of the federation whose copy of the manifest has other terms is refused too.
    let changed = fed.dir.join("changed.toml");
    let text = std::fs::read_to_string(fed.manifest()).unwrap();
    std::fs::write(
        &changed,
        text.replace("learning_rate = 0.05", "learning_rate = 0.5"),
    )
    .unwrap();
    let other_terms = spawn(
        entente()
            .arg("join")
            .arg(&changed)
            .args(["--coordinator", &format!("https://127.0.0.1:{}", fed.port)])
            .args(["--site", "site-b"])
            .arg("--keys")
            .arg(fed.keys()),
    );
    let (ok, log) = other_terms.finish(Duration::from_secs(60));
    assert!(!ok && log.contains("same manifest"), "{log}");

    let audit = fed.audit_lines().join("\n");
    assert!(audit.contains("tls handshake"), "{audit}");
    assert!(audit.contains("not a site of this federation"), "{audit}");
    assert!(!audit.contains("admission"), "{audit}");
    drop(serve);
}

#[test]
fn a_node_killed_mid_round_is_left_out_and_rejoins() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    // Rounds long enough (a wider model, three epochs, twelve rounds) that the restarted node,
    // which needs a second or two to load its data, is back before the run ends.
    let text = manifest_with_epochs("dropout", 12, 30000, 2, 3).replace("[64]", "[512]");
    let fed = Federation::new("dropout", &text);
    let mut serve = fed.serve();
    serve.wait_for("listening on", Duration::from_secs(60));
    let _a = fed.join("site-a", &[]);
    let _b = fed.join("site-b", &[]);
    let c = fed.join("site-c", &[]);
    serve.wait_for("round   1/12", Duration::from_secs(120));
    c.kill9();
    let line = serve.wait_for("left out site-c", Duration::from_secs(120));
    assert!(line.contains("left out"), "{line}");
    let _c = fed.join("site-c", &[]);
    let (ok, log) = serve.finish(Duration::from_secs(300));
    assert!(ok, "serve failed:\n{log}");
    // Some round after the dropout accepted all three sites again.
    let dropped = log
        .lines()
        .position(|l| l.contains("left out site-c"))
        .unwrap();
    assert!(
        log.lines()
            .skip(dropped)
            .any(|l| l.contains("3 of 3 sites accepted")),
        "{log}"
    );
    assert_eq!(fed.finished_rounds(), (1..=12).collect::<Vec<u32>>());
    fed.assert_audit_intact();
}

#[test]
fn a_coordinator_killed_with_sigkill_resumes() {
    let _serial = serial();
    if !have_fashion_mnist() {
        return;
    }
    let fed = Federation::new("restart", &manifest("restart", 5, 12000, 2));
    check_restart(&fed);
}

/// Kills the coordinator after round 2, restarts it, and checks the run finishes with every
/// round recorded once.
fn check_restart(fed: &Federation) {
    let mut serve = fed.serve();
    serve.wait_for("listening on", Duration::from_secs(60));
    let nodes: Vec<Process> = SITES.iter().map(|s| fed.join(s, &[])).collect();
    serve.wait_for("round   2/5", Duration::from_secs(120));
    serve.kill9();
    let mut serve = fed.serve();
    serve.wait_for("resuming run", Duration::from_secs(60));
    let (ok, log) = serve.finish(Duration::from_secs(300));
    assert!(ok, "the restarted coordinator failed:\n{log}");
    for node in nodes {
        let (ok, log) = node.finish(Duration::from_secs(30));
        assert!(ok, "a node failed:\n{log}");
    }
    let rounds = fed.finished_rounds();
    assert!(
        rounds.len() == 5 && rounds.windows(2).all(|w| w[1] == w[0] + 1),
        "{rounds:?}"
    );
    assert_eq!(rounds, vec![1, 2, 3, 4, 5]);
    fed.assert_audit_intact();
}

/// The same end-to-end run against PostgreSQL, when a server is there (`.ci/run` starts one).
#[test]
fn postgres_store_runs_and_resumes() {
    let _serial = serial();
    let Ok(admin) = std::env::var("ENTENTE_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set ENTENTE_TEST_POSTGRES_URL (.ci/run starts PostgreSQL)"
        );
        eprintln!("skipped: ENTENTE_TEST_POSTGRES_URL not set");
        return;
    };
    if !have_fashion_mnist() {
        return;
    }
    // A fresh database per run of this test.
    let db = format!("entente_deploy_{}", std::process::id());
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .arg(&admin)
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql is needed for the PostgreSQL test");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    psql(&format!("DROP DATABASE IF EXISTS {db}"));
    psql(&format!("CREATE DATABASE {db}"));
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    let mut fed = Federation::new("postgres", &manifest("postgres", 5, 12000, 2));
    fed.database = Some(format!("{base}/{db}"));
    check_restart(&fed);
    drop(fed);
    psql(&format!("DROP DATABASE IF EXISTS {db}"));
}
