//! `entente simulate` end to end: the binary, its run folder and its error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use entente_core::params::ParamSet;
use serde_json::Value;

const DIGITS_MANIFEST: &str = include_str!("../../../examples/digits.toml");
const FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// A fresh, unique folder under the system temp dir, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "entente-simulate-{name}-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// Runs `entente` with `args` in `cwd`.
fn entente(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_entente"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .expect("could not start the entente binary")
}

/// Runs `entente simulate MANIFEST --out OUT -q`, whatever its outcome.
fn simulate(cwd: &Path, manifest: &Path, out: &Path) -> Output {
    entente(
        cwd,
        &[
            "simulate",
            manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "-q",
        ],
    )
}

/// Runs `entente simulate ARGS --out OUT -q` and insists that it succeeds.
fn simulate_ok(cwd: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["simulate"];
    args.extend_from_slice(extra);
    args.extend(["--out", out.to_str().unwrap(), "-q"]);
    let output = entente(cwd, &args);
    assert!(
        output.status.success(),
        "entente {args:?} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether an optional real part a test needs is here; under CI, where `.ci/run` installs
/// every one, a missing part fails the test.
fn available(present: bool, what: &str) -> bool {
    if !present {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is missing under CI"
        );
        println!("note: skipping a check: {what} is missing");
    }
    present
}

/// Runs the Python `script` with `args` and parses the JSON it prints.
fn python_json(script: &str, args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("could not start python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script printed no JSON")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_embedded_default_runs_and_writes_a_complete_run_folder() {
    let tmp = Scratch::new("default");
    let out = tmp.join("run");
    let output = simulate_ok(tmp.path(), &out, &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("digits-demo"), "{stdout}");
    // Nothing is written outside the run folder.
    assert!(!tmp.join("runs").exists());

    for file in [
        "manifest.toml",
        "split.json",
        "metrics.jsonl",
        "metrics.csv",
        "model.safetensors",
        "summary.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("manifest.toml")).unwrap(),
        DIGITS_MANIFEST
    );

    // The split: five sites, disjoint index lists.
    let split = read_json(&out.join("split.json"));
    let lists = split
        .as_array()
        .or_else(|| split["sites"].as_array())
        .unwrap_or_else(|| panic!("unexpected split.json: {split}"));
    assert_eq!(lists.len(), 5);
    let mut all: Vec<u64> = Vec::new();
    for list in lists {
        let list = list
            .as_array()
            .or_else(|| list["indices"].as_array())
            .unwrap_or_else(|| panic!("unexpected split entry: {list}"));
        assert!(!list.is_empty());
        all.extend(list.iter().map(|v| v.as_u64().unwrap()));
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a training example is held by two sites");

    // One JSON object per round.
    let jsonl = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let rounds: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rounds.len(), 20);
    for (i, r) in rounds.iter().enumerate() {
        assert_eq!(r["round"], i as u64 + 1);
        assert_eq!(r["selected"].as_array().unwrap().len(), 5);
        assert_eq!(r["accepted"].as_array().unwrap().len(), 5);
        assert!(r["excluded"].as_array().unwrap().is_empty());
        assert!(r["test"]["accuracy"].is_f64());
        assert!(r["federated"]["accuracy"].is_f64());
    }
    let first = rounds[0]["test"]["accuracy"].as_f64().unwrap();
    let last = rounds[19]["test"]["accuracy"].as_f64().unwrap();
    assert!(last > first, "accuracy did not improve: {first} -> {last}");

    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 21, "header + 20 rows");
    assert!(lines[0].starts_with("round,"), "{}", lines[0]);
    let columns = lines[0].split(',').count();
    for (i, row) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), columns, "row {row}");
        assert_eq!(cells[0], (i + 1).to_string());
    }

    let summary = read_json(&out.join("summary.json"));
    let accuracy = summary["federated_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.85, "federated accuracy {accuracy}");
    assert_eq!(accuracy, last, "summary and last round disagree");
    assert_eq!(summary["rounds"], 20);
    assert_eq!(summary["strategy"], "fedavg");
    assert!(summary["centralized_accuracy"].is_null());
    let sites = summary["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 5);
    for s in sites {
        assert!(s["local_only_accuracy"].is_null());
    }

    // The final model: the MLP 64-64-10 in PyTorch layout.
    let model = ParamSet::load(&out.join("model.safetensors")).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = model
        .iter()
        .map(|(s, _)| (s.name.clone(), s.shape.clone()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("layers.0.weight".to_string(), vec![64, 64]),
            ("layers.0.bias".to_string(), vec![64]),
            ("layers.1.weight".to_string(), vec![10, 64]),
            ("layers.1.bias".to_string(), vec![10]),
        ]
    );
    assert!(model.as_flat().iter().all(|v| v.is_finite()));
}

/// Reads a run folder's TensorBoard event file with the `tensorboard` package's own reader and
/// prints `{tag: [[step, value], ...]}`.
const READ_EVENTS: &str = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1])
acc.Reload()
print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;

#[test]
fn tensorboard_reads_the_rounds_of_a_run_folder() {
    let probe = Command::new("python3")
        .args(["-c", "import tensorboard"])
        .output();
    let present = matches!(&probe, Ok(o) if o.status.success());
    if !available(present, "python3's tensorboard package") {
        return;
    }
    let tmp = Scratch::new("tensorboard");
    let out = tmp.join("run");
    simulate_ok(tmp.path(), &out, &["--rounds", "3"]);
    let scalars = python_json(READ_EVENTS, &[out.to_str().unwrap()]);

    let jsonl = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let rounds: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let series = |tag: &str| -> Vec<(u64, f64)> {
        scalars[tag]
            .as_array()
            .unwrap_or_else(|| panic!("no {tag} in {scalars}"))
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
            .collect()
    };
    // The values TensorBoard shows are the rounds' (as f32), one per round, at its number.
    for (tag, field) in [
        ("test/accuracy", &["test", "accuracy"][..]),
        ("test/loss", &["test", "loss"]),
        ("federated/accuracy", &["federated", "accuracy"]),
        ("train/loss", &["train_loss"]),
        ("round/seconds", &["seconds"]),
    ] {
        let got = series(tag);
        assert_eq!(got.len(), 3, "{tag}: {got:?}");
        for ((step, value), r) in got.iter().zip(&rounds) {
            let want = field.iter().fold(r, |v, k| &v[*k]).as_f64().unwrap();
            assert_eq!(*step, r["round"].as_u64().unwrap());
            assert_eq!(*value as f32, want as f32, "{tag} round {step}");
        }
    }
    let site = series("site/hospital-north/examples");
    assert_eq!(site.len(), 3);
    assert_eq!(
        site[0].1,
        rounds[0]["accepted_examples"][0].as_f64().unwrap()
    );
}

/// Headless Chromium as the probe of this machine kind starts it (root, closed network).
fn chromium(args: &[&str], profile: &Path) -> Option<Output> {
    let mut all = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let profile = format!("--user-data-dir={}", profile.display());
    all.push(&profile);
    all.extend_from_slice(args);
    Command::new("chromium").args(&all).output().ok()
}

#[test]
fn the_report_renders_in_a_browser() {
    let tmp = Scratch::new("report");
    let out = tmp.join("run");
    simulate_ok(tmp.path(), &out, &["--rounds", "3", "--baselines"]);
    let report = entente(tmp.path(), &["report", out.to_str().unwrap()]);
    assert!(report.status.success(), "{}", stderr(&report));
    let page = out.join("report.html");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(!html.contains("http"), "the report refers to a URL");
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "accuracy, loss, sites, participation"
    );

    let url = format!("file://{}", page.display());
    let Some(dom) = chromium(&["--dump-dom", &url], &tmp.join("profile-dom")) else {
        available(false, "Debian's chromium");
        return;
    };
    assert!(dom.status.success(), "chromium failed: {}", stderr(&dom));
    let dom = String::from_utf8_lossy(&dom.stdout);
    for site in [
        "hospital-north",
        "hospital-south",
        "clinic-east",
        "clinic-west",
        "research-lab",
    ] {
        assert!(dom.contains(site), "{site} is not on the rendered page");
    }
    assert!(dom.contains("<polyline"), "no chart line was rendered");
    let png = tmp.join("report.png");
    let shot = format!("--screenshot={}", png.display());
    chromium(
        &["--window-size=1024,2000", &shot, &url],
        &tmp.join("profile-png"),
    )
    .unwrap();
    let bytes = std::fs::read(&png).expect("chromium wrote no screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000,
        "{} bytes",
        bytes.len()
    );
}

/// Reads back, with MLflow's own client, the run `simulate --mlflow` logged: its status, the
/// rounds parameter, the test-accuracy history and the artifacts.
const READ_MLFLOW: &str = r#"
import json, sys
from mlflow import MlflowClient
client = MlflowClient(sys.argv[1])
exp = client.get_experiment_by_name(sys.argv[2])
runs = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{sys.argv[3]}'")
run = runs[0]
history = client.get_metric_history(run.info.run_id, "test/accuracy")
print(json.dumps({
    "status": run.info.status,
    "rounds": run.data.params.get("training.rounds"),
    "test_accuracy": [[m.step, m.value] for m in sorted(history, key=lambda m: m.step)],
    "artifacts": [a.path for a in client.list_artifacts(run.info.run_id)],
}))
"#;

#[test]
fn a_run_logged_to_mlflow_reads_back_with_mlflows_client() {
    // .ci/run starts `mlflow server` and sets the variable.
    let Ok(url) = std::env::var("ENTENTE_TEST_MLFLOW_URL") else {
        available(false, "an MLflow server (ENTENTE_TEST_MLFLOW_URL)");
        return;
    };
    let tmp = Scratch::new("mlflow");
    let name = format!("mlflow-{}", std::process::id());
    let out = tmp.join(&name);
    simulate_ok(tmp.path(), &out, &["--rounds", "3", "--mlflow", &url]);
    let logged = python_json(READ_MLFLOW, &[&url, "digits-demo", &name]);
    assert_eq!(logged["status"], "FINISHED", "{logged}");
    assert_eq!(logged["rounds"], "3", "the override is what ran");
    assert_eq!(
        logged["artifacts"],
        serde_json::json!(["model.safetensors"])
    );
    let jsonl = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let want: Vec<(u64, f64)> = jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|r| {
            (
                r["round"].as_u64().unwrap(),
                r["test"]["accuracy"].as_f64().unwrap(),
            )
        })
        .collect();
    let got: Vec<(u64, f64)> = logged["test_accuracy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn an_unreachable_mlflow_server_fails_before_round_one() {
    let tmp = Scratch::new("mlflow-down");
    let out = tmp.join("run");
    refused(
        tmp.path(),
        &out,
        &["--mlflow", "http://127.0.0.1:9"],
        &["127.0.0.1:9", "mlflow server"],
    );
}

/// Runs `entente simulate ARGS --out OUT -q`, insists that it fails saying each of `saying`
/// before it writes anything in OUT, and returns what it said.
fn refused(cwd: &Path, out: &Path, args: &[&str], saying: &[&str]) -> Output {
    let mut all = vec!["simulate"];
    all.extend_from_slice(args);
    all.extend(["--out", out.to_str().unwrap(), "-q"]);
    let output = entente(cwd, &all);
    assert!(!output.status.success(), "entente {all:?} succeeded");
    let err = stderr(&output);
    for needle in saying {
        assert!(err.contains(needle), "no `{needle}` in:\n{err}");
    }
    let left = std::fs::read_dir(out).map_or(0, Iterator::count);
    assert_eq!(left, 0, "the refused run left files in {}", out.display());
    output
}

#[test]
fn a_web_server_that_is_not_mlflow_is_refused_before_round_one() {
    // Answers every request `200 OK` with a page, as many web servers do.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            use std::io::{BufRead, Write};
            let mut reader = std::io::BufReader::new(&stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let page = "<html>\x1b[2Jwelcome</html>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    let tmp = Scratch::new("mlflow-html");
    let get = format!("{url}/api/2.0/mlflow/experiments/get-by-name");
    let output = refused(
        tmp.path(),
        &tmp.join("run"),
        &["--mlflow", &url],
        &[&get, "not JSON", "<html>"],
    );
    let err = stderr(&output);
    assert!(
        !err.contains('\x1b'),
        "the page's escape reached the terminal: {err:?}"
    );
    assert!(!String::from_utf8_lossy(&output.stdout).contains("mlflow: run"));
}

#[test]
fn a_refused_dashboard_writes_nothing_and_opens_no_mlflow_run() {
    let tmp = Scratch::new("http-refused");
    let out = tmp.join("run");
    // Nothing answers here: a call the run made would wait in its queue, counted below.
    let mlflow = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mlflow_url = format!("http://{}", mlflow.local_addr().unwrap());
    refused(
        tmp.path(),
        &out,
        &[
            "--rounds",
            "1",
            "--http",
            "0.0.0.0:0",
            "--mlflow",
            &mlflow_url,
        ],
        &["reachable from other machines", "--http-token"],
    );
    // The process has ended: any connection it made is waiting to be accepted.
    mlflow.set_nonblocking(true).unwrap();
    assert!(
        matches!(mlflow.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the MLflow server was called before the dashboard's check"
    );
    // The same folder takes the corrected command.
    let output = simulate_ok(
        tmp.path(),
        &out,
        &["--rounds", "1", "--http", "127.0.0.1:0"],
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("dashboard: http://127.0.0.1:"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(out.join("summary.json").exists());
}

#[test]
fn target_accuracy_reports_the_first_round_that_reached_it() {
    let tmp = Scratch::new("target");
    let out = tmp.join("run");
    let output = simulate_ok(tmp.path(), &out, &["--target-accuracy", "90%"]);
    let summary = read_json(&out.join("summary.json"));
    let jsonl = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let first = jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["test"]["accuracy"].as_f64().unwrap() >= 0.9)
        .map(|r| r["round"].clone())
        .expect("the digits demo reaches 90%");
    assert_eq!(summary["rounds_to_target"], first);
    assert_eq!(summary["target_accuracy"], 0.9);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("reached 90.00% test accuracy in round {first}")),
        "{stdout}"
    );

    // Out of range, or not a number: refused before anything runs.
    for bad in ["101%", "1.5", "most"] {
        let refused = entente(tmp.path(), &["simulate", "--target-accuracy", bad, "-q"]);
        assert!(!refused.status.success(), "{bad} was accepted");
        assert!(stderr(&refused).contains(bad), "{}", stderr(&refused));
    }
}

#[test]
fn baselines_add_centralized_and_local_only_accuracies() {
    let tmp = Scratch::new("baselines");
    let out = tmp.join("run");
    let output = simulate_ok(tmp.path(), &out, &["--baselines", "--rounds", "5"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("centralized"), "{stdout}");
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["rounds"], 5);
    // The run folder's manifest is the one that ran: the override is written in.
    let ran = std::fs::read_to_string(out.join("manifest.toml")).unwrap();
    assert!(
        ran.contains("rounds = 5  # --rounds 5; the file said 20"),
        "{ran}"
    );
    let central = summary["centralized_accuracy"].as_f64().unwrap();
    assert!(central > 0.85, "centralized accuracy {central}");
    let sites = summary["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 5);
    for s in sites {
        let local = s["local_only_accuracy"]
            .as_f64()
            .unwrap_or_else(|| panic!("no local_only_accuracy: {s}"));
        assert!((0.0..=1.0).contains(&local), "{s}");
        assert!(s["local_only_own_test_accuracy"].is_f64(), "{s}");
        assert!(s["examples"].as_u64().unwrap() > 0);
    }
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        5
    );
}

/// FedAvg+FT: every site fine-tunes the final model on its own records and keeps it; on the
/// label-skewed digits the personal models serve the sites' own splits better on average.
#[test]
fn personalization_fine_tunes_a_model_per_site_and_reports_it_on_each_own_split() {
    let tmp = Scratch::new("personal");
    let manifest = tmp.join("personal.toml");
    std::fs::write(
        &manifest,
        format!("{DIGITS_MANIFEST}\n[personalization]\nmethod = \"finetune\"\nepochs = 2\n"),
    )
    .unwrap();
    let out = tmp.join("run");
    let output = simulate_ok(
        tmp.path(),
        &out,
        &[manifest.to_str().unwrap(), "--baselines", "--rounds", "8"],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("each site's own test split"), "{stdout}");
    assert!(stdout.contains("the federation helped"), "{stdout}");
    let global = ParamSet::load(&out.join("model.safetensors")).unwrap();
    let summary = read_json(&out.join("summary.json"));
    assert!(summary["sites_helped"].is_u64(), "{summary}");
    let sites = summary["sites"].as_array().unwrap();
    let (mut personal_sum, mut global_sum) = (0.0, 0.0);
    for s in sites {
        let name = s["site"].as_str().unwrap();
        let personal = ParamSet::load(&out.join("personal").join(format!("{name}.safetensors")))
            .unwrap_or_else(|e| panic!("no personal model for {name}: {e}"));
        assert!(personal.same_layout(&global));
        assert_ne!(
            personal.as_flat(),
            global.as_flat(),
            "{name} was not fine-tuned"
        );
        personal_sum += s["personalized_own_test_accuracy"]
            .as_f64()
            .unwrap_or_else(|| panic!("no personalized accuracy: {s}"));
        global_sum += s["federated_own_test_accuracy"].as_f64().unwrap();
    }
    assert!(
        personal_sum > global_sum,
        "personal {personal_sum} against global {global_sum} (sums over {} sites)",
        sites.len()
    );
}

/// The digits federation under Ditto with `lambda`, 8 rounds, with baselines: its summary and
/// run folder.
fn ditto_run(tmp: &Scratch, lambda: &str) -> (Value, PathBuf) {
    let manifest = tmp.join(&format!("ditto-{lambda}.toml"));
    std::fs::write(
        &manifest,
        format!("{DIGITS_MANIFEST}\n[personalization]\nmethod = \"ditto\"\nlambda = {lambda}\n"),
    )
    .unwrap();
    let out = tmp.join(&format!("ditto-{lambda}"));
    simulate_ok(
        tmp.path(),
        &out,
        &[manifest.to_str().unwrap(), "--baselines", "--rounds", "8"],
    );
    (read_json(&out.join("summary.json")), out)
}

/// Distance between a site's personal model and the final global model.
fn personal_distance(out: &Path, site: &str) -> f64 {
    let global = ParamSet::load(&out.join("model.safetensors")).unwrap();
    let personal =
        ParamSet::load(&out.join("personal").join(format!("{site}.safetensors"))).unwrap();
    personal.l2_distance(&global)
}

/// Ditto's two ends: with lambda 0 each personal model trains alone (the local-only baseline,
/// to the bit: same start, batches and steps); with a pull as strong as the step allows
/// (lambda * learning rate = 1) it stays with the global model.
#[test]
fn ditto_with_lambda_zero_is_training_alone_and_with_a_strong_pull_is_the_global_model() {
    let tmp = Scratch::new("ditto");
    let (alone, alone_dir) = ditto_run(&tmp, "0.0");
    for s in alone["sites"].as_array().unwrap() {
        let personal = s["personalized_own_test_accuracy"].as_f64().unwrap();
        let local = s["local_only_own_test_accuracy"].as_f64().unwrap();
        assert_eq!(personal.to_bits(), local.to_bits(), "{s}");
    }
    // The manifest's learning rate is 0.05.
    let (_, pulled_dir) = ditto_run(&tmp, "20.0");
    for s in alone["sites"].as_array().unwrap() {
        let name = s["site"].as_str().unwrap();
        let (far, near) = (
            personal_distance(&alone_dir, name),
            personal_distance(&pulled_dir, name),
        );
        assert!(
            near < 0.25 * far,
            "{name}: {near} from the global model pulled, {far} alone"
        );
    }
}

/// The digits' MLP has one hidden layer: its last layer is `layers.1`.
const DIGITS_HEAD: &str = "personal = [\"layers.1.weight\", \"layers.1.bias\"]";

/// The digits federation under FedPer or FedRep (`method`, and its other settings), 8 rounds,
/// with baselines: its summary and run folder.
fn shared_body_run(tmp: &Scratch, method: &str, settings: &str) -> (Value, PathBuf) {
    let manifest = tmp.join(&format!("{method}.toml"));
    std::fs::write(
        &manifest,
        format!(
            "{DIGITS_MANIFEST}\n[personalization]\nmethod = \"{method}\"\n{DIGITS_HEAD}\n{settings}\n"
        ),
    )
    .unwrap();
    let out = tmp.join(method);
    simulate_ok(
        tmp.path(),
        &out,
        &[manifest.to_str().unwrap(), "--baselines", "--rounds", "8"],
    );
    (read_json(&out.join("summary.json")), out)
}

/// FedPer and FedRep on the label-skewed digits: the global model the run writes carries the
/// initial personal tensors (the coordinator never holds a site's), every site's personal
/// model differs from it only in its personal tensors' trained values and the shared tensors
/// it was sent, and on the sites' own splits the personal models beat both the global model
/// and the local-only ones on average.
#[test]
fn fedper_and_fedrep_keep_each_site_s_head_and_serve_its_own_split_better() {
    let tmp = Scratch::new("shared-body");
    for (method, settings) in [("fedper", ""), ("fedrep", "head_epochs = 2")] {
        let (summary, out) = shared_body_run(&tmp, method, settings);
        let global = ParamSet::load(&out.join("model.safetensors")).unwrap();
        let (mut personal_sum, mut global_sum, mut alone_sum) = (0.0, 0.0, 0.0);
        for s in summary["sites"].as_array().unwrap() {
            let name = s["site"].as_str().unwrap();
            let personal =
                ParamSet::load(&out.join("personal").join(format!("{name}.safetensors")))
                    .unwrap_or_else(|e| panic!("{method}: no personal model for {name}: {e}"));
            assert!(personal.same_layout(&global));
            assert_eq!(
                personal.get("layers.0.weight"),
                global.get("layers.0.weight")
            );
            assert_ne!(
                personal.get("layers.1.weight"),
                global.get("layers.1.weight")
            );
            personal_sum += s["personalized_own_test_accuracy"].as_f64().unwrap();
            global_sum += s["federated_own_test_accuracy"].as_f64().unwrap();
            alone_sum += s["local_only_own_test_accuracy"].as_f64().unwrap();
        }
        assert!(
            personal_sum > global_sum && personal_sum > alone_sum,
            "{method}: personal {personal_sum} against global {global_sum} and alone \
             {alone_sum} (sums over the sites)\n{summary}"
        );
    }
}

/// A federation of one site is its pooled baseline and its local-only one: all three train the
/// same data the same way (round by round, with the same batch orders), so they agree exactly.
#[test]
fn a_one_site_federation_equals_its_pooled_and_local_only_baselines() {
    let tmp = Scratch::new("one-site");
    let start = DIGITS_MANIFEST.find("[[sites]]").unwrap();
    let end = DIGITS_MANIFEST.find("[model]").unwrap();
    let one_site = format!(
        "{}[[sites]]\nname = \"alone\"\n\n{}",
        &DIGITS_MANIFEST[..start],
        &DIGITS_MANIFEST[end..]
    )
    .replace("min_sites = 3", "min_sites = 1");
    let manifest = tmp.join("one.toml");
    std::fs::write(&manifest, one_site).unwrap();
    let out = tmp.join("run");
    simulate_ok(
        tmp.path(),
        &out,
        &[manifest.to_str().unwrap(), "--rounds", "6", "--baselines"],
    );
    let summary = read_json(&out.join("summary.json"));
    let federated = summary["federated_accuracy"].as_f64().unwrap();
    let pooled = summary["centralized_accuracy"].as_f64().unwrap();
    let alone = summary["sites"][0]["local_only_accuracy"].as_f64().unwrap();
    assert!(
        federated > 0.8,
        "the federation learned nothing: {federated}"
    );
    assert_eq!(federated.to_bits(), pooled.to_bits(), "{summary}");
    assert_eq!(federated.to_bits(), alone.to_bits(), "{summary}");
    // Equal losses: the same model, not only as many right answers.
    assert_eq!(
        summary["federated_loss"].as_f64().unwrap().to_bits(),
        summary["centralized_loss"].as_f64().unwrap().to_bits(),
        "{summary}"
    );
}

#[test]
fn runs_are_reproducible_and_independent_of_the_thread_count() {
    let tmp = Scratch::new("repro");
    let manifest = tmp.join("digits.toml");
    std::fs::write(&manifest, DIGITS_MANIFEST).unwrap();
    let manifest = manifest.to_str().unwrap();
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.join(name);
        let mut args = vec![manifest, "--rounds", "8"];
        args.extend_from_slice(extra);
        simulate_ok(tmp.path(), &out, &args);
        (
            std::fs::read(out.join("model.safetensors")).unwrap(),
            std::fs::read(out.join("split.json")).unwrap(),
        )
    };
    let a = run("a", &[]);
    let b = run("b", &[]);
    assert!(
        a.0 == b.0,
        "two runs of one manifest wrote different models"
    );
    assert_eq!(
        a.1, b.1,
        "two runs of one manifest split the data differently"
    );
    let one = run("t1", &["--threads", "1"]);
    let two = run("t2", &["--threads", "2"]);
    assert!(one.0 == two.0, "--threads 1 and --threads 2 differ");
    assert!(a.0 == one.0, "--threads 1 differs from the default");

    // And the seed matters: another seed gives another model.
    let reseeded = tmp.join("seed7.toml");
    std::fs::write(&reseeded, DIGITS_MANIFEST.replace("seed = 42", "seed = 7")).unwrap();
    let out = tmp.join("c");
    simulate_ok(
        tmp.path(),
        &out,
        &[reseeded.to_str().unwrap(), "--rounds", "8"],
    );
    assert!(std::fs::read(out.join("model.safetensors")).unwrap() != a.0);
}

#[test]
fn an_unknown_manifest_key_is_named_with_its_line() {
    let tmp = Scratch::new("unknown-key");
    let text = DIGITS_MANIFEST.replace("learning_rate = 0.05", "learning_rat = 0.05");
    assert_ne!(text, DIGITS_MANIFEST);
    let line = text
        .lines()
        .position(|l| l.starts_with("learning_rat "))
        .unwrap()
        + 1;
    let manifest = tmp.join("bad.toml");
    std::fs::write(&manifest, &text).unwrap();
    let out = tmp.join("run");
    let output = simulate(tmp.path(), &manifest, &out);
    assert!(!output.status.success());
    assert_ne!(output.status.code(), Some(0));
    let err = stderr(&output);
    assert!(err.contains("learning_rat"), "{err}");
    assert!(err.contains(&format!("line {line}")), "{err}");
    assert!(err.contains("bad.toml"), "{err}");
    assert!(
        !out.exists(),
        "a run folder was created for an invalid manifest"
    );
}

#[test]
fn a_missing_idx_folder_explains_how_to_get_the_data() {
    let tmp = Scratch::new("missing-idx");
    let missing = tmp.join("no-such-folder");
    let manifest = tmp.join("fashion.toml");
    std::fs::write(&manifest, fashion_manifest(missing.to_str().unwrap())).unwrap();
    let out = tmp.join("run");
    let output = simulate(tmp.path(), &manifest, &out);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("apt-get install dataset-fashion-mnist"),
        "{err}"
    );
    assert!(err.contains("--data"), "{err}");
    assert!(err.contains("no-such-folder"), "{err}");
}

/// A small Fashion-MNIST federation reading IDX files from `path`.
fn fashion_manifest(path: &str) -> String {
    format!(
        r#"
[federation]
name = "fashion-tiny"
seed = 3

[data]
format = "idx"
path = "{path}"
limit = 3000
partition = "iid"

[[sites]]
name = "a"

[[sites]]
name = "b"

[[sites]]
name = "c"

[model]
kind = "mlp"
hidden = [32]

[training]
rounds = 2
local_epochs = 2
batch_size = 32
learning_rate = 0.05
momentum = 0.9

[strategy]
kind = "fedavg"

[selection]
fraction = 1.0
min_sites = 3
"#
    )
}

#[test]
fn a_tiny_fashion_mnist_federation_learns() {
    if !Path::new(FASHION_MNIST)
        .join("train-images-idx3-ubyte.gz")
        .exists()
        && !Path::new(FASHION_MNIST)
            .join("train-images-idx3-ubyte")
            .exists()
    {
        // CI installs the data set (.ci/run), so there a missing folder is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "{FASHION_MNIST} is missing under CI"
        );
        println!(
            "note: skipping the Fashion-MNIST run: {FASHION_MNIST} is missing \
             (apt-get install dataset-fashion-mnist)"
        );
        return;
    }
    let tmp = Scratch::new("fashion");
    let manifest = tmp.join("fashion.toml");
    std::fs::write(&manifest, fashion_manifest(FASHION_MNIST)).unwrap();
    let out = tmp.join("run");
    simulate_ok(tmp.path(), &out, &[manifest.to_str().unwrap()]);
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["rounds"], 2);
    let accuracy = summary["federated_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.6, "Fashion-MNIST accuracy {accuracy}");
    let sites = summary["sites"].as_array().unwrap();
    assert_eq!(sites.len(), 3);
    // limit = 3000 training examples, minus each site's 10 % test split.
    let examples: u64 = sites.iter().map(|s| s["examples"].as_u64().unwrap()).sum();
    assert!((2600..=2800).contains(&examples), "{examples}");
    let model = ParamSet::load(&out.join("model.safetensors")).unwrap();
    assert_eq!(model.get("layers.0.weight").unwrap().len(), 32 * 784);
}

#[test]
fn bad_arguments_fail_cleanly() {
    let tmp = Scratch::new("args");
    let out = tmp.join("run");
    for args in [
        vec!["simulate", "--threads", "0"],
        vec!["simulate", "--rounds", "0"],
        vec!["simulate", "does-not-exist.toml"],
    ] {
        let mut args = args;
        args.extend(["--out", out.to_str().unwrap(), "-q"]);
        let output = entente(tmp.path(), &args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let err = stderr(&output);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
}

/// The digits demo with `[privacy]`, a budget of `budget` epsilon per site.
fn private_digits(dir: &Scratch, budget: f64) -> PathBuf {
    let manifest = dir.join("private.toml");
    let text = DIGITS_MANIFEST.to_string()
        + &format!(
            "\n[privacy]\nmechanism = \"dp-sgd\"\nclip = 1.0\nnoise_multiplier = 1.0\nepsilon_budget = {budget}\nledger = \"ledger\"\n"
        );
    std::fs::write(&manifest, text).unwrap();
    manifest
}

#[test]
fn sites_refuse_rounds_beyond_their_budget_and_the_ledger_persists() {
    let tmp = Scratch::new("privacy");
    // A budget below one round's cost: every site refuses round 1 and the run stops.
    let manifest = private_digits(&tmp, 1.0);
    let out = tmp.join("run");
    let output = simulate(tmp.path(), &manifest, &out);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("refuses round 1"), "{err}");
    assert!(err.contains("over its budget of 1"), "{err}");

    // A budget that lasts a few rounds: the run spends it and the ledger survives the process.
    let manifest = private_digits(&tmp, 8.0);
    let out = tmp.join("run-8");
    let output = simulate(tmp.path(), &manifest, &out);
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output);
    assert!(text.contains("refuses round"), "{text}");
    // The rounds completed before the budgets ran out keep their model and summary.
    let summary = read_json(&out.join("summary.json"));
    let rounds = summary["rounds"].as_u64().unwrap();
    assert!(rounds >= 1, "{summary}");
    assert!(out.join("model.safetensors").exists());
    let (report, spent) = spent_per_site(&tmp, &manifest);
    assert!(report.contains("hospital-north"), "{report}");
    assert_eq!(spent.len(), 5, "{report}");
    assert!(spent.iter().all(|&s| s > 0.0 && s <= 8.0), "{spent:?}");
}

/// `entente privacy MANIFEST`'s report and the epsilon it shows spent by each site of the
/// digits data set.
fn spent_per_site(tmp: &Scratch, manifest: &Path) -> (String, Vec<f64>) {
    let report = entente(tmp.path(), &["privacy", manifest.to_str().unwrap()]);
    assert!(report.status.success(), "{}", stderr(&report));
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    let spent = report
        .lines()
        .filter(|l| l.contains("uci-digits"))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    (report, spent)
}

#[test]
fn client_level_dp_is_checked_against_the_budget_before_the_first_round() {
    let tmp = Scratch::new("client-dp");
    let manifest = tmp.join("client.toml");
    let write = |budget: f64| {
        let text = DIGITS_MANIFEST.to_string()
            + &format!(
                "\n[privacy]\nmechanism = \"client\"\nclip = 0.5\nnoise_multiplier = 1.0\nepsilon_budget = {budget}\n"
            );
        std::fs::write(&manifest, text).unwrap();
    };
    write(5.0);
    let out = tmp.join("run");
    let output = simulate(tmp.path(), &manifest, &out);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(err.contains("refused before round 1"), "{err}");
    assert!(
        !out.join("metrics.jsonl").exists()
            || std::fs::read_to_string(out.join("metrics.jsonl"))
                .unwrap()
                .is_empty()
    );

    write(100.0);
    let out = tmp.join("run-100");
    let output = simulate_ok(tmp.path(), &out, &[manifest.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("client-level DP"), "{text}");
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["strategy"], "dp_fedavg");
    // The run was charged: the same run again would pass 100 only if nothing had been spent.
    let report = entente(tmp.path(), &["privacy", manifest.to_str().unwrap()]);
    let report = String::from_utf8_lossy(&report.stdout);
    assert!(!report.contains("nothing spent yet"), "{report}");
}

#[test]
fn distributed_dp_runs_under_secure_aggregation_and_charges_the_ledgers() {
    let tmp = Scratch::new("distributed-dp");
    let manifest = tmp.join("distributed.toml");
    let write = |secure_aggregation: &str| {
        let text = DIGITS_MANIFEST.to_string()
            + secure_aggregation
            + "\n[privacy]\nmechanism = \"distributed\"\nclip = 0.5\nnoise_multiplier = 1.0\nepsilon_budget = 100.0\nledger = \"ledger\"\n";
        std::fs::write(&manifest, text).unwrap();
    };
    let out = tmp.join("run");

    // Without [secure_aggregation] there is nothing to hide the sites' noise shares in.
    write("");
    let output = simulate(tmp.path(), &manifest, &out);
    assert!(!output.status.success());
    let err = stderr(&output);
    assert!(
        err.contains("privacy.mechanism") && err.contains("[secure_aggregation]"),
        "{err}"
    );
    // SecAgg's range must hold a noisy coordinate: 0.5 * (1 + 10 / sqrt(3)) = 3.3868.
    write("\n[secure_aggregation]\nclip = 1.0\n");
    let err = stderr(&simulate(tmp.path(), &manifest, &out));
    assert!(
        err.contains("secure_aggregation.clip") && err.contains("3.3868"),
        "{err}"
    );
    assert!(!tmp.join("ledger").exists(), "nothing may be charged");

    write("\n[secure_aggregation]\nclip = 3.5\n");
    let output = simulate_ok(
        tmp.path(),
        &out,
        &[manifest.to_str().unwrap(), "--rounds", "3"],
    );
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("distributed client-level DP"), "{text}");
    assert!(text.contains("with secure aggregation"), "{text}");
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["rounds"], 3, "{summary}");
    // Every site was charged for the three rounds before the first one.
    let (report, spent) = spent_per_site(&tmp, &manifest);
    assert_eq!(spent.len(), 5, "{report}");
    assert!(spent.iter().all(|&s| s > 0.0 && s <= 100.0), "{spent:?}");
}
