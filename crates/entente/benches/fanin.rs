//! Fan-in benchmark: one `entente serve` process and 200 node connections on loopback, a
//! 1M-parameter model, a few rounds. Reports the median round latency, the coordinator's
//! resident memory (before the first round and at its peak during the rounds) against the
//! model's size, and, as the baseline measured in the same run, an in-process FedAvg of the
//! same number of updates of the same size.
//!
//! The nodes are lightweight clients in this process that speak the real protocol over mutual
//! TLS (register, heartbeats, poll, chunked download and upload) but return the model they
//! receive plus a small change instead of training, so the figures are the coordinator's.
//!
//! Run: `cargo bench -p entente --bench fanin` (needs Fashion-MNIST for the coordinator's test
//! set; `ENTENTE_FANIN_SITES`, `ENTENTE_FANIN_ROUNDS` and `ENTENTE_FANIN_HIDDEN` change the
//! defaults of 200 sites, 3 rounds and a hidden layer of 1262 units, 1M parameters;
//! `ENTENTE_FANIN_BIN` runs another build of `entente` as the coordinator, to compare two
//! builds in one run).
//!
//! With `ENTENTE_FANIN_SECURE=K` the run is under secure aggregation (SecAgg+ with K
//! neighbours per site, every site with every other when K is at least the sites less one):
//! each node wraps its update in entente's own [`SecureSite`], the client half of the
//! protocol, and streams its masked input; the coordinator's test-set evaluation is left out
//! (a 4M-parameter model over 10,000 images would dominate the round).
//!
//! With `ENTENTE_FANIN_DASHBOARD=N` it runs N pairs of runs instead, alternating one without
//! and one with the dashboard (`--http`) whose page (`/panel`) and `/api/state` are fetched
//! every 100 ms, and reports the median round latency of each and their ratio.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use entente_core::aggregators::{self, Strategy};
use entente_core::engine::{Envelope, Site, SiteError, TrainTask};
use entente_core::manifest::Manifest;
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::{SiteUpdate, ValidUpdate};
use entente_privacy::secure_round::{SecAggSettings, SecureSite};
use entente_proto::chunks::{Assembler, chunk_at, chunk_count};
use entente_proto::convert::{layout_from_wire, training_from_wire};
use entente_proto::tls::{self, KeyDir};
use entente_proto::upload;
use entente_proto::v1::coordinator_client::CoordinatorClient;
use entente_proto::v1::{
    self, HeartbeatRequest, PollRequest, RegisterRequest, ResultFrame, result_frame, result_header,
    task_frame, task_header,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// Default hidden width: 784-1262-10 has 1,003,300 parameters.
const HIDDEN: usize = 1262;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn manifest(sites: usize, rounds: usize, hidden: usize, secure: Option<usize>) -> String {
    let mut text = String::from(
        "[federation]\nname = \"fanin\"\nseed = 1\n\n[data]\nformat = \"idx\"\n\
         path = \"/usr/share/datasets/fashion-mnist\"\nshape = [1, 28, 28]\nclasses = 10\n\n",
    );
    for i in 0..sites {
        text.push_str(&format!("[[sites]]\nname = \"node-{i:03}\"\n\n"));
    }
    text.push_str(&format!(
        "[model]\nkind = \"mlp\"\nhidden = [{hidden}]\n\n[training]\nrounds = {rounds}\n\
         learning_rate = 0.1\n\n[strategy]\nkind = \"fedavg\"\nmax_examples = 100000\n\n[selection]\nmin_sites = {sites}\ndeadline_secs = 600\n"
    ));
    if let Some(k) = secure {
        text.push_str("\n[secure_aggregation]\nthreshold = 0.67\nclip = 1.0\n");
        if k + 1 < sites {
            text.push_str(&format!("neighbours = {k}\n"));
        }
    }
    text
}

/// A stand-in for local training under secure aggregation: the received model plus 0.001.
struct Nudge {
    name: String,
}

impl Site for Nudge {
    fn name(&self) -> &str {
        &self.name
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let mut params = (*task.global).clone();
        params.as_flat_mut().iter_mut().for_each(|v| *v += 0.001);
        Ok(SiteUpdate {
            site: self.name.clone(),
            num_examples: 100,
            params,
            train_loss: 0.5,
        })
    }

    fn evaluate(&self, _params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        Err(SiteError::refused(
            self.name.clone(),
            "the bench answers evaluation itself",
        ))
    }
}

/// Node `index`'s client half of secure aggregation, as `entente join` stacks it.
fn secure_site(manifest: &Manifest, index: usize) -> Arc<SecureSite> {
    let settings = SecAggSettings::from_manifest(manifest).expect("the manifest asks for it");
    let inner = Arc::new(Nudge {
        name: manifest.sites[index].clone(),
    });
    Arc::new(SecureSite::new(
        inner,
        index as u32,
        manifest.policy,
        settings,
        false,
    ))
}

/// Resident set size of `pid` in bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A step of a round as a node saw it, for the phase breakdown.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// A training task's header arrived.
    TaskIn,
    /// The update was uploaded.
    UpdateOut,
    /// An evaluation task's header arrived.
    EvalIn,
    /// The evaluation was answered.
    EvalOut,
}

/// Every node's steps: (round, step, when). Evaluation counts to the round last trained.
static STEPS: std::sync::Mutex<Vec<(u32, Step, Instant)>> = std::sync::Mutex::new(Vec::new());

fn step(round: u32, step: Step) {
    STEPS.lock().unwrap().push((round, step, Instant::now()));
}

/// The last round's phases, in seconds from its first training task reaching a node.
fn phases() -> Option<String> {
    let steps = STEPS.lock().unwrap();
    let round = steps.iter().map(|s| s.0).max()?;
    let of = |which: Step| {
        let mut t: Vec<Instant> = steps
            .iter()
            .filter(|s| s.0 == round && s.1 == which)
            .map(|s| s.2)
            .collect();
        t.sort();
        Some((*t.first()?, *t.last()?))
    };
    let (start, tasks_end) = of(Step::TaskIn)?;
    let at = |t: Instant| t.duration_since(start).as_secs_f64();
    let (_, updates_end) = of(Step::UpdateOut)?;
    let mut line = format!(
        "round {round}: training tasks reached the nodes over {:.2} s, the last update left at {:.2} s",
        at(tasks_end),
        at(updates_end)
    );
    if let (Some((eval_start, eval_in_end)), Some((_, eval_end))) =
        (of(Step::EvalIn), of(Step::EvalOut))
    {
        line.push_str(&format!(
            "; evaluation tasks reached them from {:.2} s to {:.2} s, the last answer left at {:.2} s",
            at(eval_start),
            at(eval_in_end),
            at(eval_end)
        ));
    }
    Some(line)
}

/// One lightweight node: answers training with the received model plus 0.001, evaluation with
/// fixed metrics, until the run is finished; with `secure`, it masks its update through it.
async fn node(
    endpoint: Endpoint,
    traffic: Arc<AtomicU64>,
    secure: Option<Arc<SecureSite>>,
) -> Result<(), String> {
    let channel = loop {
        match endpoint.connect().await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut client = CoordinatorClient::new(channel);
    let reply = client
        .register(RegisterRequest {
            manifest_sha256: std::env::var("FANIN_DIGEST").unwrap_or_default(),
            version: "bench".into(),
            ..RegisterRequest::default()
        })
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    let session = reply.session;
    let mut round = 0;
    let mut beat = client.clone();
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(u64::from(reply.heartbeat_ms))).await;
            let _ = beat.heartbeat(HeartbeatRequest { session }).await;
        }
    });
    loop {
        let mut stream = client
            .poll_task(PollRequest {
                session,
                wait_ms: 2000,
            })
            .await
            .map_err(|s| s.to_string())?
            .into_inner();
        let Some(v1::TaskFrame {
            frame: Some(task_frame::Frame::Header(header)),
        }) = stream.message().await.map_err(|s| s.to_string())?
        else {
            continue;
        };
        let outcome = match &header.kind {
            Some(task_header::Kind::Finished(_)) => break,
            Some(task_header::Kind::Train(spec)) => {
                round = header.round;
                step(round, Step::TaskIn);
                let layout = layout_from_wire(&header.layout).map_err(|e| e.to_string())?;
                let mut assembler = Assembler::new(layout.total());
                while let Some(f) = stream.message().await.map_err(|s| s.to_string())? {
                    if let Some(task_frame::Frame::Chunk(c)) = f.frame {
                        traffic.fetch_add(c.values.len() as u64, Ordering::Relaxed);
                        assembler.push(&c).map_err(|e| e.to_string())?;
                    }
                }
                let mut values = assembler.finish().map_err(|e| e.to_string())?;
                if let Some(secure) = &secure {
                    let task = TrainTask {
                        round,
                        global: Arc::new(
                            ParamSet::from_flat(Arc::new(layout), values)
                                .map_err(|e| e.to_string())?,
                        ),
                        training: training_from_wire(
                            spec.training
                                .as_ref()
                                .ok_or("a task without training settings")?,
                        )
                        .map_err(|e| e.to_string())?,
                        seed: spec.seed,
                        turn: None,
                    };
                    let site = Arc::clone(secure);
                    let update = tokio::task::spawn_blocking(move || site.train(&task))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                    let head = ResultFrame {
                        frame: Some(result_frame::Frame::Header(v1::ResultHeader {
                            task_id: header.task_id,
                            layout: Vec::new(),
                            outcome: Some(result_header::Outcome::Train(v1::TrainResult {
                                num_examples: update.num_examples,
                                train_loss: update.train_loss,
                            })),
                            kind: String::new(),
                        })),
                    };
                    upload::submit(&mut client, head, std::iter::empty())
                        .await
                        .map_err(|s| s.to_string())?;
                    step(round, Step::UpdateOut);
                    continue;
                }
                values.iter_mut().for_each(|v| *v += 0.001);
                Some((
                    result_header::Outcome::Train(v1::TrainResult {
                        num_examples: 100,
                        train_loss: 0.5,
                    }),
                    Some((header.layout.clone(), values)),
                ))
            }
            Some(task_header::Kind::Evaluate(_)) => {
                step(round, Step::EvalIn);
                while let Some(f) = stream.message().await.map_err(|s| s.to_string())? {
                    if let Some(task_frame::Frame::Chunk(c)) = f.frame {
                        traffic.fetch_add(c.values.len() as u64, Ordering::Relaxed);
                    }
                }
                Some((
                    result_header::Outcome::Evaluate(v1::EvalResult {
                        loss: 0.5,
                        accuracy: 0.5,
                        num_examples: 10,
                    }),
                    None,
                ))
            }
            Some(task_header::Kind::Secure(spec)) => {
                let site = Arc::clone(secure.as_ref().ok_or("a secure task without SecAgg")?);
                let (message, at) = (Envelope(spec.envelope.clone()), header.round);
                let reply =
                    tokio::task::spawn_blocking(move || site.secure_exchange(at, &message, None))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                let (head, parts) = upload::secure_reply_frames(header.task_id, reply.0);
                upload::submit(&mut client, head, parts)
                    .await
                    .map_err(|s| s.to_string())?;
                None
            }
            _ => None,
        };
        let Some((outcome, params)) = outcome else {
            continue;
        };
        let head = ResultFrame {
            frame: Some(result_frame::Frame::Header(v1::ResultHeader {
                task_id: header.task_id,
                layout: params.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
                outcome: Some(outcome),
                kind: String::new(),
            })),
        };
        let params_sent = params.is_some();
        let values = params.map(|p| p.1).unwrap_or_default();
        let chunks: Vec<ResultFrame> = (0..chunk_count(values.len()))
            .filter_map(|i| chunk_at(&values, i))
            .map(|c| ResultFrame {
                frame: Some(result_frame::Frame::Chunk(c)),
            })
            .collect();
        let trained = params_sent;
        upload::submit(&mut client, head, chunks.into_iter())
            .await
            .map_err(|s| s.to_string())?;
        step(
            round,
            if trained {
                Step::UpdateOut
            } else {
                Step::EvalOut
            },
        );
    }
    heartbeat.abort();
    Ok(())
}

/// In-process FedAvg of `n` updates of `dim` values: the baseline.
fn fedavg_baseline(n: usize, dim: usize) -> f64 {
    let global = ParamSet::from_tensors([("w".to_string(), vec![dim], vec![0.0; dim])]).unwrap();
    let updates: Vec<ValidUpdate> = (0..n)
        .map(|i| ValidUpdate {
            site: format!("s{i}"),
            num_examples: 100,
            params: ParamSet::from_flat(Arc::clone(global.layout()), vec![0.001 * i as f32; dim])
                .unwrap(),
            update_norm: 0.0,
            train_loss: 0.5,
        })
        .collect();
    let mut times = Vec::new();
    for _ in 0..3 {
        let mut agg = aggregators::build(&Strategy::FedAvg).expect("FedAvg has no parameters");
        let t = Instant::now();
        agg.begin(&global);
        for u in updates.iter().cloned() {
            agg.add(u).unwrap();
        }
        agg.finish().unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    median(&mut times)
}

/// The coordinator's output so far, for a failure message.
fn output(lines: &std::sync::Mutex<Vec<(Instant, String)>>) -> String {
    let lines = lines.lock().unwrap();
    lines
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What the bench sets up once: the manifest, its keys and the sizes.
struct Setup {
    dir: tempfile::TempDir,
    manifest: std::path::PathBuf,
    keys: KeyDir,
    sites: usize,
    /// Under secure aggregation: the manifest, for the nodes' client halves.
    secure: Option<Manifest>,
}

/// What one run of the coordinator measured.
struct Figures {
    /// Each round's latency as `serve` printed it (to 0.1 s).
    latencies: Vec<f64>,
    /// The time between consecutive round lines (from all sites connected for the first):
    /// the round latencies to the millisecond.
    gaps: Vec<f64>,
    /// Resident memory before the first round and at its peak during the rounds.
    before: u64,
    peak: u64,
    /// Parameter bytes the nodes received.
    traffic: u64,
    /// Dashboard requests answered (0 without one).
    polls: u64,
    wall: f64,
}

fn setup(sites: usize, rounds: usize, hidden: usize, secure: Option<usize>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let manifest_path = dir.path().join("fanin.toml");
    std::fs::write(&manifest_path, manifest(sites, rounds, hidden, secure)).unwrap();
    let loaded = Manifest::load(&manifest_path).unwrap();
    let digest = loaded.agreement_digest();
    // SAFETY of set_var: single-threaded at this point (no runtime yet).
    #[allow(unsafe_code)]
    unsafe {
        std::env::set_var("FANIN_DIGEST", &digest)
    };
    let keys = KeyDir::new(dir.path().join("keys"));
    tls::init_ca(&keys, "fanin").unwrap();
    tls::issue_coordinator(&keys, &["127.0.0.1".to_string()], false).unwrap();
    for i in 0..sites {
        tls::issue_site(&keys, &format!("node-{i:03}"), false).unwrap();
    }
    Setup {
        dir,
        manifest: manifest_path,
        keys,
        sites,
        secure: secure.map(|_| loaded),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fetches `path` from the dashboard on `port`; whether a 200 came back.
fn fetch(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    tcp.write_all(request.as_bytes()).is_ok()
        && tcp.read_to_end(&mut response).is_ok()
        && response.starts_with(b"HTTP/1.1 200")
}

/// One run of `entente serve` (its own store, `run` in the name) with the lightweight nodes;
/// with `dashboard`, `/panel` and `/api/state` are fetched every 100 ms meanwhile.
fn run_once(setup: &Setup, run: usize, dashboard: bool) -> Figures {
    STEPS.lock().unwrap().clear();
    let sites = setup.sites;
    let keys = &setup.keys;
    let port = free_port();
    let http = free_port();
    let store = format!(
        "sqlite://{}",
        setup.dir.path().join(format!("run-{run}.db")).display()
    );
    let binary = std::env::var_os("ENTENTE_FANIN_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_entente").into());
    let mut command = Command::new(binary);
    command
        .arg("serve")
        .arg(&setup.manifest)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--database", &store])
        .arg("--keys")
        .arg(&keys.root)
        .args(["--wait-secs", "600", "--heartbeat-secs", "5"])
        .arg("--out")
        .arg(setup.dir.path().join(format!("run-{run}.safetensors")));
    if setup.secure.is_none() {
        command.args(["--eval-data", "/usr/share/datasets/fashion-mnist"]);
    }
    if dashboard {
        command.args(["--http", &format!("127.0.0.1:{http}")]);
    }
    let mut serve = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = serve.id();
    let stdout = serve.stdout.take().unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::<(Instant, String)>::new()));
    {
        let lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push((Instant::now(), line));
            }
        });
    }
    // Memory sampler: resident size before the first round and the peak during the rounds.
    let rounds_started = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (rounds_started, done) = (Arc::clone(&rounds_started), Arc::clone(&done));
        std::thread::spawn(move || {
            let (mut before, mut peak) = (0u64, 0u64);
            while !done.load(Ordering::Relaxed) {
                if let Some(r) = rss(pid) {
                    if rounds_started.load(Ordering::Relaxed) {
                        peak = peak.max(r);
                    } else {
                        before = r;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (before, peak)
        })
    };
    let polls = Arc::new(AtomicU64::new(0));
    let poller = dashboard.then(|| {
        let (done, polls) = (Arc::clone(&done), Arc::clone(&polls));
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let tick = Instant::now();
                for path in ["/panel", "/api/state"] {
                    if fetch(http, path) {
                        polls.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
            }
        })
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let traffic = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    runtime.block_on(async {
        let ca = std::fs::read(keys.ca_cert()).unwrap();
        let mut handles = Vec::new();
        for i in 0..sites {
            let name = format!("node-{i:03}");
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(ca.clone()))
                .identity(Identity::from_pem(
                    std::fs::read(keys.site_cert(&name)).unwrap(),
                    std::fs::read(keys.site_key(&name)).unwrap(),
                ))
                .domain_name("127.0.0.1");
            let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
                .unwrap()
                .tls_config(tls)
                .unwrap();
            let secure = setup.secure.as_ref().map(|m| secure_site(m, i));
            handles.push(tokio::spawn(node(endpoint, Arc::clone(&traffic), secure)));
        }
        // The coordinator prints "N of N sites connected" once everyone is in.
        loop {
            let all_in = lines
                .lock()
                .unwrap()
                .iter()
                .any(|(_, l)| l.starts_with(&format!("{sites} of {sites} sites connected")));
            if all_in {
                rounds_started.store(true, Ordering::Relaxed);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for (i, h) in handles.into_iter().enumerate() {
            if let Err(e) = h.await.unwrap() {
                panic!(
                    "node {i} failed: {e}\ncoordinator output:\n{}",
                    output(&lines)
                );
            }
        }
    });
    let status = serve.wait().unwrap();
    done.store(true, Ordering::Relaxed);
    let (before, peak) = sampler.join().unwrap();
    if let Some(poller) = poller {
        poller.join().unwrap();
    }
    if !status.success() {
        panic!("entente serve failed ({status}):\n{}", output(&lines));
    }
    let lines = lines.lock().unwrap();
    let all_in = format!("{sites} of {sites} sites connected");
    let marks: Vec<Instant> = lines
        .iter()
        .filter(|(_, l)| l.starts_with("round ") || l.starts_with(&all_in))
        .map(|(t, _)| *t)
        .collect();
    let gaps = marks
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64())
        .collect();
    let latencies = lines
        .iter()
        .filter(|(_, l)| l.starts_with("round "))
        .filter_map(|(_, l)| {
            let secs = l.rsplit(", ").next()?.strip_suffix(" s")?;
            secs.parse().ok()
        })
        .collect();
    Figures {
        latencies,
        gaps,
        before,
        peak,
        traffic: traffic.load(Ordering::Relaxed),
        polls: polls.load(Ordering::Relaxed),
        wall: started.elapsed().as_secs_f64(),
    }
}

fn main() {
    if !Path::new("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists() {
        eprintln!("fanin needs Fashion-MNIST: apt-get install dataset-fashion-mnist");
        return;
    }
    let sites = env_or("ENTENTE_FANIN_SITES", 200);
    let rounds = env_or("ENTENTE_FANIN_ROUNDS", 3);
    let hidden = env_or("ENTENTE_FANIN_HIDDEN", HIDDEN);
    let params = 784 * hidden + hidden + hidden * 10 + 10;
    let secure = match env_or("ENTENTE_FANIN_SECURE", 0) {
        0 => None,
        k => Some(k),
    };
    let setup = setup(sites, rounds, hidden, secure);
    println!(
        "fan-in: {sites} node connections over mutual TLS, {params} parameters ({:.1} MB), {rounds} rounds{}",
        (params * 4) as f64 / 1e6,
        match secure {
            Some(k) if k + 1 < sites => format!(", SecAgg+ with {k} neighbours"),
            Some(_) => ", SecAgg".to_string(),
            None => String::new(),
        }
    );
    match env_or("ENTENTE_FANIN_DASHBOARD", 0) {
        0 => report(&run_once(&setup, 0, false), sites, params),
        pairs => compare_dashboard(&setup, pairs),
    }
}

/// The figures of one run against the in-process baseline.
fn report(figures: &Figures, sites: usize, params: usize) {
    let model_mb = (params * 4) as f64 / 1e6;
    let baseline = fedavg_baseline(sites, params);
    let mut latencies = figures.latencies.clone();
    let round = median(&mut latencies);
    println!(
        "  round latency, median of {}: {round:.2} s",
        latencies.len()
    );
    println!(
        "  baseline, in-process FedAvg of {sites} updates of the same size (median of 3): {baseline:.3} s; round / baseline = {:.1}x",
        round / baseline
    );
    let grown = figures.peak.saturating_sub(figures.before) as f64 / 1e6;
    println!(
        "  coordinator resident memory: {:.0} MB before round 1, peak {:.0} MB during the rounds: \
         +{grown:.0} MB = {:.1} models ({sites} updates would be {:.0} MB)",
        figures.before as f64 / 1e6,
        figures.peak as f64 / 1e6,
        grown / model_mb,
        sites as f64 * model_mb
    );
    println!(
        "  parameters received by the nodes: {:.0} MB; wall {:.1} s",
        figures.traffic as f64 / 1e6,
        figures.wall
    );
    if let Some(phases) = phases() {
        println!("  {phases}");
    }
}

/// `pairs` runs without and with the polled dashboard, alternating: the medians of all
/// rounds of each, and the median of the pairs' ratios (each pair's two runs are neighbours in
/// time, so a slow stretch of the machine weighs on both).
fn compare_dashboard(setup: &Setup, pairs: usize) {
    let (mut plain, mut watched, mut ratios, mut polls) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for pair in 0..pairs {
        let mut without = run_once(setup, 2 * pair, false).gaps;
        let with = run_once(setup, 2 * pair + 1, true);
        polls += with.polls;
        let mut with_gaps = with.gaps;
        let ratio = median(&mut with_gaps) / median(&mut without);
        println!(
            "  pair {} of {pairs}: with / without = {ratio:.3} ({:+.1}%)",
            pair + 1,
            100.0 * (ratio - 1.0)
        );
        ratios.push(ratio);
        plain.extend(without);
        watched.extend(with_gaps);
    }
    let (n_plain, n_watched) = (plain.len(), watched.len());
    let (plain, watched) = (median(&mut plain), median(&mut watched));
    println!("  round latency without the dashboard, median of {n_plain}: {plain:.3} s");
    println!(
        "  round latency with the dashboard polled every 100 ms ({polls} requests answered), \
         median of {n_watched}: {watched:.3} s"
    );
    println!(
        "  with / without, medians of all rounds = {:.3} ({:+.1}%)",
        watched / plain,
        100.0 * (watched / plain - 1.0)
    );
    let paired = median(&mut ratios);
    println!(
        "  with / without, median of the {pairs} pairs' ratios = {paired:.3} ({:+.1}%)",
        100.0 * (paired - 1.0)
    );
}
