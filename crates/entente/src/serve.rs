//! `entente serve`: the coordinator of a real deployment. The same round engine as
//! `simulate`, with every site a node reached over gRPC and mutual TLS, its state in a durable
//! store (SQLite beside the manifest by default, PostgreSQL with --database), and every
//! admission, refusal, round, update and checkpoint in the hash-chained audit log. After a
//! crash, the same command resumes from the last completed round. The coordinator itself is
//! [`entente_coordinator::run`]; this module reads the arguments, the model and the test set,
//! and prints what the run reports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use entente_coordinator::audit::AuditReport;
use entente_coordinator::store::Store;
use entente_coordinator::{AuditCheck, CoordinatorConfig, FederationStatus, Report, RunStart};
use entente_core::engine::{Evaluator, RoundRecord};
use entente_core::manifest::Manifest;
use entente_core::params::ParamSet;
use entente_core::text::printable;
use entente_dashboard::{AuditLine, AuditView, Board, Bytes, RunState};
use entente_learn::personal_head::WithInitialHead;
use entente_learn::simulation::{self, CentralTest};
use entente_proto::tls::KeyDir;
use entente_proto::tls::signatures;

use crate::tracking::Tracker;

/// Arguments of `entente serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// The federation's manifest.
    manifest: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:7443")]
    listen: SocketAddr,
    /// The store: sqlite://PATH or postgres://USER:PASSWORD@HOST/DB [default: a SQLite file
    /// beside the manifest].
    #[arg(long)]
    database: Option<String>,
    /// Folder holding ca.pem, coordinator.pem and coordinator.key.
    #[arg(long, default_value = "keys")]
    keys: PathBuf,
    /// The coordinator's held-out test set, evaluated after every round: an IDX folder (its
    /// t10k files) or a CSV table, in the manifest's data format [default: no test set; the
    /// model's shapes come from the manifest].
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Where to write the final model [default: beside the manifest, NAME.model.safetensors].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Nodes send a heartbeat this often; three missed ones and a node counts as gone.
    #[arg(long, default_value_t = 5.0)]
    heartbeat_secs: f64,
    /// Before the first round, wait this long for every site to connect (then start with the
    /// quorum, selection.min_sites, if it is there).
    #[arg(long, default_value_t = 300.0)]
    wait_secs: f64,
    /// Serve a live dashboard of the run here (for example 127.0.0.1:8080): its state, the
    /// rounds' charts, the sites, /api/state and Prometheus /metrics.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Bearer token the dashboard requires; needed when --http is not a loopback address.
    #[arg(long, value_name = "TOKEN")]
    http_token: Option<String>,
    /// The manifest's signature file, checked against the federation CA before the run
    /// starts (`entente manifest sign`) [default: beside the manifest, STEM.signatures.toml].
    #[arg(long, value_name = "FILE")]
    signatures: Option<PathBuf>,
    /// The federation's revocation list (default: revoked.crl in --keys): certificates it
    /// revokes are refused; the file is read again whenever it changes, without a restart.
    #[arg(long, value_name = "FILE")]
    revocations: Option<PathBuf>,
    /// Also log the run to this MLflow tracking server (http://HOST:PORT): the manifest as
    /// parameters, each round's figures as metrics, the final model as an artifact.
    #[arg(long, value_name = "URI")]
    mlflow: Option<String>,
}

/// Runs `entente serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    return_large_buffers_to_the_system();
    let manifest = Manifest::load(&args.manifest)?;
    // Bounded so that they convert to durations; a NaN fails every comparison.
    if !(args.heartbeat_secs > 0.0
        && args.heartbeat_secs <= 3600.0
        && args.wait_secs >= 0.0
        && args.wait_secs <= 1e9)
    {
        bail!("--heartbeat-secs must be in (0, 3600] and --wait-secs in [0, 1e9]");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(serve(args, manifest))
}

async fn serve(args: ServeArgs, manifest: Manifest) -> Result<()> {
    // The model comes from the manifest (its schema, or an external model's file); the
    // held-out test set, when there is one, from --eval-data.
    let (initial, evaluator) = {
        let (m, eval) = (manifest.clone(), args.eval_data.clone());
        tokio::task::spawn_blocking(move || central(&m, eval.as_deref()))
            .await
            .context("the model could not be prepared")??
    };
    let keys = KeyDir::new(&args.keys);
    let out = args.out.clone().unwrap_or_else(|| {
        args.manifest
            .with_file_name(format!("{}.model.safetensors", manifest.name))
    });
    // Found out now, not after the last round: the folder the final model goes to.
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("could not create {} for --out", dir.display()))?;
    }
    let config = CoordinatorConfig {
        store_url: args
            .database
            .clone()
            .unwrap_or_else(|| Store::sqlite_url_beside(&args.manifest)),
        ca: keys.ca_cert(),
        cert: keys.coordinator_cert(),
        key: keys.coordinator_key(),
        initial,
        evaluator,
        out,
        heartbeat: Duration::from_secs_f64(args.heartbeat_secs),
        wait_for_sites: Duration::from_secs_f64(args.wait_secs),
        signatures: Some(
            args.signatures
                .clone()
                .unwrap_or_else(|| signatures::signatures_path(&args.manifest)),
        ),
        revocations: Some(
            args.revocations
                .clone()
                .unwrap_or_else(|| keys.revocation_list()),
        ),
        manifest,
    };
    let board = match args.http {
        Some(addr) => Some(dashboard(&config.manifest, addr, args.http_token.clone()).await?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let tracker = match &args.mlflow {
        Some(uri) => {
            let (uri, m) = (uri.clone(), config.manifest.clone());
            Some(
                tokio::task::spawn_blocking(move || Tracker::start(&uri, &m))
                    .await
                    .context("the MLflow run could not be opened")??,
            )
        }
        None => None,
    };
    let mut printed = Printed {
        board: board.clone(),
        tracker,
    };
    let result = entente_coordinator::run(config, listener, interrupted(), &mut printed).await;
    if let Some(tracker) = printed.tracker.take() {
        let ok = result.is_ok();
        // Joining waits for the last uploads; off the runtime's threads.
        let _ = tokio::task::spawn_blocking(move || tracker.end(ok)).await;
    }
    if let (Some(board), Err(e)) = (&board, &result) {
        board.set_state(RunState::Stopped {
            reason: e.to_string(),
        });
    }
    result?;
    Ok(())
}

/// Starts the dashboard on `addr` (refused on a non-loopback address without a token).
async fn dashboard(manifest: &Manifest, addr: SocketAddr, token: Option<String>) -> Result<Board> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--http {addr}: could not listen there"))?;
    entente_dashboard::check_exposure(&listener, token.as_deref())?;
    let board = Board::new(
        &manifest.name,
        &manifest.agreement_digest(),
        manifest.rounds,
        &manifest.sites,
    );
    println!(
        "dashboard: http://{}/",
        listener.local_addr().unwrap_or(addr)
    );
    tokio::spawn(entente_dashboard::serve(listener, board.clone(), token));
    Ok(board)
}

/// The round-1 model and, with `eval`, the evaluator of the coordinator's held-out test set.
fn central(
    manifest: &Manifest,
    eval: Option<&Path>,
) -> Result<(ParamSet, Option<Arc<dyn Evaluator>>)> {
    let model = simulation::federation_model(manifest, None)
        .context("the coordinator builds the model from the manifest")?;
    let Some(path) = eval else {
        return Ok((model.initial, None));
    };
    let Some(spec) = model.spec else {
        bail!(
            "--eval-data: entente evaluates its own models and external MLPs on a test set; \
             this external model is evaluated by the sites only (leave --eval-data out)"
        );
    };
    let data = simulation::load_test_set(manifest, path)
        .with_context(|| format!("could not read the test set {}", path.display()))?;
    let test =
        CentralTest::new(spec, data).with_context(|| format!("--eval-data {}", path.display()))?;
    let personal = manifest.personal_tensors();
    if personal.is_empty() {
        return Ok((model.initial, Some(Arc::new(test))));
    }
    // Under FedPer and FedRep the global model is the shared tensors only.
    let whole = WithInitialHead::new(Arc::new(test), &model.initial, personal)
        .context("the manifest's personal tensors")?;
    Ok((model.initial, Some(Arc::new(whole))))
}

/// Resolves at the first Ctrl-C (or SIGTERM): the run stops, resumable. A second one ends the
/// process at once.
async fn interrupted() {
    signal().await;
    eprintln!("entente serve: stopping; interrupt again to quit at once");
    tokio::spawn(async {
        signal().await;
        std::process::exit(130);
    });
}

/// The next Ctrl-C or SIGTERM; never, if the handlers cannot be installed.
async fn signal() {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        r = tokio::signal::ctrl_c() => if r.is_err() { std::future::pending::<()>().await },
        () = terminate => {}
    }
}

/// What `entente serve` prints as the run goes, and shows on the dashboard if there is one.
struct Printed {
    board: Option<Board>,
    tracker: Option<Tracker>,
}

impl Printed {
    fn show(&self, update: impl FnOnce(&Board)) {
        if let Some(board) = &self.board {
            update(board);
        }
    }
}

impl Report for Printed {
    fn started(&mut self, run: &RunStart<'_>) {
        self.show(|b| b.set_state(RunState::Waiting));
        println!(
            "entente serve: run {} of `{}`, {} sites, {} rounds, store {}, certificate for {}",
            run.run,
            run.federation,
            run.sites,
            run.rounds,
            run.store,
            run.hosts.join(", ")
        );
    }

    fn resumed(&mut self, run: &RunStart<'_>) {
        self.show(|b| b.set_state(RunState::Waiting));
        println!(
            "entente serve: resuming run {} of `{}` after round {} of {}",
            run.run, run.federation, run.completed, run.rounds
        );
    }

    fn listening(&mut self, addr: SocketAddr) {
        println!("listening on {addr} (mutual TLS)");
    }

    fn status(&mut self, status: &FederationStatus) {
        self.show(|b| {
            for s in &status.sites {
                let bytes = Bytes {
                    received: s.traffic.received,
                    sent: s.traffic.sent,
                };
                b.site_status(&s.site, s.connected, s.heard_secs_ago, bytes);
            }
            b.refused_handshakes(status.refused_handshakes);
        });
    }

    fn watches_audit(&self) -> bool {
        self.board.is_some()
    }

    fn audit_checked(&mut self, check: &AuditCheck) {
        self.show(|b| {
            let (intact, broken) = match &check.chain {
                AuditReport::Intact { .. } => (true, None),
                AuditReport::Broken { seq, reason } => {
                    (false, Some(format!("entry {seq}: {reason}")))
                }
            };
            b.audit(AuditView {
                intact,
                entries: check.entries,
                broken,
                latest: check
                    .latest
                    .iter()
                    .map(|e| AuditLine {
                        seq: e.seq,
                        at_unix_ms: e.at_unix_ms,
                        kind: e.kind.clone(),
                        round: e.round,
                        site: e.site.clone(),
                        detail: e.detail.clone(),
                    })
                    .collect(),
            });
            for p in &check.privacy {
                b.privacy(&p.site, p.epsilon, p.budget);
            }
        });
    }

    fn sites_connected(&mut self, alive: usize, total: usize, quorum: usize) {
        println!("{alive} of {total} sites connected (quorum {quorum})");
    }

    fn round_finished(&mut self, record: &RoundRecord, rounds: u32) {
        self.show(|b| b.round_finished(record));
        if let Some(tracker) = &self.tracker {
            tracker.round(record);
        }
        let test = record
            .test
            .as_ref()
            .map_or("-".into(), |m| format!("{:.2}%", 100.0 * m.accuracy));
        println!(
            "round {:>3}/{rounds}: {} of {} sites accepted, test accuracy {test}, {:.1} s{}",
            record.round,
            record.accepted.len(),
            record.selected.len(),
            record.seconds,
            record
                .excluded
                .iter()
                .map(|e| {
                    format!(
                        "\n  left out {} ({}): {}",
                        e.site,
                        e.kind,
                        printable(&e.reason)
                    )
                })
                .collect::<String>()
        );
    }

    fn finished(&mut self, run: i64, model: &Path) {
        self.show(|b| b.set_state(RunState::Finished));
        if let Some(tracker) = &mut self.tracker {
            tracker.model(model.to_path_buf());
        }
        println!("run {run} finished; final model {}", model.display());
    }
}

/// Keeps model-sized buffers out of glibc's heap: above 2 MiB an allocation gets its own
/// mapping, returned to the system when freed. Otherwise glibc raises that threshold after the
/// first large free, and every freed model copy stays resident in one of its arenas.
#[allow(unsafe_code)] // one of the binary's two documented unsafe calls
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator; called once, before
    // the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 2 << 20);
    }
}
