//! `entente serve`: the coordinator of a real deployment. The same round engine as
//! `simulate`, with every site a node reached over gRPC and mutual TLS, its state in a durable
//! store (SQLite beside the manifest by default, PostgreSQL with --database), and every
//! admission, refusal, round, update and checkpoint in the hash-chained audit log. After a
//! crash, the same command resumes from the last completed round.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use entente_coordinator::audit::{AuditEvent, kind};
use entente_coordinator::store::{FinishedRound, Participant, Store};
use entente_coordinator::transport::hub::Hub;
use entente_coordinator::transport::listener;
use entente_coordinator::transport::remote_site::RemoteSite;
use entente_coordinator::transport::service::CoordinatorService;
use entente_core::aggregators::{self, Aggregator};
use entente_core::engine::{Evaluator, RoundEngine, RoundObserver, RoundRecord, Site, selection};
use entente_core::manifest::{Manifest, PrivacyMechanism, PrivacySpec};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_learn::simulation;
use entente_privacy::budget::{CLIENT_ROUND_COST, RoundPrice, round_cost};
use entente_privacy::dp::client::DpFedAvg;
use entente_privacy::dp::os_noise_rng;
use entente_privacy::secure_round::{SecAggCoordinator, SecAggSettings};
use entente_proto::tls::{self, KeyDir};
use tokio::runtime::Handle;

use crate::simulate::CentralTest;

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
    /// The coordinator's held-out test set (and the model's input shape): this file or folder
    /// instead of the manifest's data.path.
    #[arg(long)]
    data: Option<PathBuf>,
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
    let url = args
        .database
        .clone()
        .unwrap_or_else(|| Store::sqlite_url_beside(&args.manifest));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(serve(args, manifest, url))
}

async fn serve(args: ServeArgs, manifest: Manifest, url: String) -> Result<()> {
    let digest = manifest.agreement_digest();
    let store = Store::open(&url)
        .await
        .with_context(|| format!("could not open the store {url}"))?;
    let state = store
        .open_run(&manifest.name, &digest, manifest.rounds)
        .await?;
    let run = state.run;

    // The model's shape and the coordinator's held-out test set come from the data.
    let (spec, test) = {
        let (m, data) = (manifest.clone(), args.data.clone());
        tokio::task::spawn_blocking(move || simulation::prepare_central(&m, data.as_deref()))
            .await?
            .context("could not read the coordinator's test data (give --data)")?
    };
    let initial = match &state.checkpoint {
        Some(sha) => ParamSet::from_safetensors(&store.checkpoint(sha).await?)
            .context("the stored checkpoint is not a valid model")?,
        None => spec.init_params(manifest.seed)?,
    };
    let server_state = match &state.optimizer_state {
        Some(sha) => Some(
            ParamSet::from_safetensors(&store.checkpoint(sha).await?)
                .context("the stored server-optimizer state is not valid")?,
        ),
        None => None,
    };
    if state.resumed {
        println!(
            "entente serve: resuming run {run} of `{}` after round {} of {}",
            manifest.name, state.completed, manifest.rounds
        );
    } else {
        println!(
            "entente serve: run {run} of `{}`, {} sites, {} rounds, store {url}",
            manifest.name,
            manifest.sites.len(),
            manifest.rounds
        );
    }

    let keys = KeyDir::new(&args.keys);
    let tls = tls::server_config(
        &keys.ca_cert(),
        &keys.coordinator_cert(),
        &keys.coordinator_key(),
    )?;
    let hub = Arc::new(Hub::new(
        &manifest.sites,
        Duration::from_secs_f64(args.heartbeat_secs),
    ));
    let service = CoordinatorService::new(
        Arc::clone(&hub),
        store.clone(),
        run,
        manifest.name.clone(),
        digest,
    );
    let socket = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    println!("listening on {} (mutual TLS)", socket.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listener::serve(
        socket,
        tls,
        service,
        store.clone(),
        run,
        async {
            let _ = stopped.await;
        },
    ));

    wait_for_sites(&hub, &manifest, Duration::from_secs_f64(args.wait_secs)).await?;

    let sites = remote_sites(&manifest, &hub);
    let mut rule = aggregation_rule(&manifest)?;
    if let Some(s) = &server_state {
        rule.restore(s)?;
    }
    let evaluator = Arc::new(CoreBoundEvaluator {
        test: CentralTest { spec, data: test },
        pool: rayon::ThreadPoolBuilder::new()
            .build()
            .context("could not start the evaluation threads")?,
    });
    let mut engine = RoundEngine::new(
        sites,
        rule,
        Some(evaluator),
        manifest.round_rules(),
        initial,
    );
    if let Some(settings) = SecAggSettings::from_manifest(&manifest) {
        settings
            .check(engine.global().num_values())
            .map_err(|e| anyhow::anyhow!("[secure_aggregation]: {e}"))?;
        engine = engine
            .with_secure_aggregation(Box::new(SecAggCoordinator::new(settings, &manifest.sites)));
    }

    // The engine blocks while it waits for sites, so it runs on its own threads: one per site,
    // so that every selected site's call is in flight at once.
    let first = state.completed + 1;
    let threads = manifest.sites.len() + 2;
    let mut observer = StoreObserver {
        store: store.clone(),
        run,
        handle: Handle::current(),
        rounds: manifest.rounds,
        privacy: manifest.privacy.clone(),
        batch_size: manifest.training.batch_size,
        epochs: manifest.training.epochs,
    };
    let outcome = tokio::task::spawn_blocking(move || {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let result = pool.install(|| engine.run_from(first, &mut observer));
        Ok::<_, anyhow::Error>((result, engine))
    })
    .await??;
    let (result, engine) = outcome;
    if let Err(e) = result {
        let _ = store
            .audit(AuditEvent {
                kind: kind::RUN_STOPPED.into(),
                run: Some(run),
                round: None,
                site: None,
                detail: serde_json::json!({ "reason": e.to_string() }).to_string(),
            })
            .await;
        let _ = stop.send(());
        let _ = server.await;
        return Err(anyhow::Error::new(e).context(
            "the run stopped; completed rounds are in the store, and `entente serve` with the same \
             manifest resumes after the last one",
        ));
    }
    store.finish_run(run).await?;
    let out = args.out.unwrap_or_else(|| {
        args.manifest
            .with_file_name(format!("{}.model.safetensors", manifest.name))
    });
    engine
        .global()
        .save(&out)
        .with_context(|| format!("could not write {}", out.display()))?;
    println!("run {run} finished; final model {}", out.display());

    // Tell the nodes, then stop once they have heard it (or after a few seconds).
    hub.finish(manifest.rounds);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until && !hub.alive().is_empty() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

/// The manifest's aggregation rule; under central client-level DP, DP-FedAvg with noise from
/// the operating system. (Distributed DP needs no rule of its own: the sites add the noise
/// before secure aggregation masks their updates.)
fn aggregation_rule(manifest: &Manifest) -> Result<Box<dyn Aggregator>> {
    match &manifest.privacy {
        Some(p) if p.mechanism == PrivacyMechanism::ClientLevel => Ok(Box::new(DpFedAvg::new(
            p.clip,
            p.noise_multiplier,
            os_noise_rng().map_err(anyhow::Error::msg)?,
        ))),
        _ => Ok(aggregators::build(&manifest.strategy)),
    }
}

/// The coordinator's test-set evaluation on a pool of one thread per core. The engine's pool
/// has a thread per site (each waits on a node), and the matrix library keeps a scratch buffer
/// the size of a core's L2 cache in every thread it runs on: evaluating there would cost that
/// much memory per site.
struct CoreBoundEvaluator {
    test: CentralTest,
    pool: rayon::ThreadPool,
}

impl Evaluator for CoreBoundEvaluator {
    fn evaluate(&self, params: &ParamSet) -> Result<EvalMetrics, String> {
        self.pool.install(|| self.test.evaluate(params))
    }
}

/// Keeps model-sized buffers out of glibc's heap: above 2 MiB an allocation gets its own
/// mapping, returned to the system when freed. Otherwise glibc raises that threshold after the
/// first large free, and every freed model copy stays resident in one of its arenas.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tuning parameter of the allocator; called once, before
    // the runtime starts any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 2 << 20);
    }
}

/// One remote site per manifest site, in manifest order (each site's seed is its position).
fn remote_sites(manifest: &Manifest, hub: &Arc<Hub>) -> Vec<Arc<dyn Site>> {
    let names = manifest.sites.clone();
    let (fraction, min_sites, seed) = (
        manifest.selection.fraction,
        manifest.selection.min_sites,
        manifest.seed,
    );
    let selected: Arc<dyn Fn(u32) -> Vec<String> + Send + Sync> = Arc::new(move |round| {
        selection::select(names.len(), fraction, min_sites, seed, round)
            .into_iter()
            .map(|i| names[i].clone())
            .collect()
    });
    manifest
        .sites
        .iter()
        .map(|name| -> Arc<dyn Site> {
            Arc::new(RemoteSite::new(
                name.clone(),
                Arc::clone(hub),
                manifest.selection.deadline,
                Arc::clone(&selected),
            ))
        })
        .collect()
}

/// Waits until every site is connected, or until `patience` has passed with the quorum there.
async fn wait_for_sites(hub: &Hub, manifest: &Manifest, patience: Duration) -> Result<()> {
    let started = Instant::now();
    let mut last = usize::MAX;
    loop {
        let alive = hub.alive().len();
        if alive != last {
            println!(
                "{alive} of {} sites connected (quorum {})",
                manifest.sites.len(),
                manifest.selection.min_sites
            );
            last = alive;
        }
        if alive == manifest.sites.len() {
            return Ok(());
        }
        // Past the patience, start with the quorum; without it no round can complete, so wait.
        if started.elapsed() >= patience && alive >= manifest.selection.min_sites {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Records every round in the store: started, then finished with its checkpoint, in one
/// transaction, so a round is either wholly recorded or repeated after a restart.
struct StoreObserver {
    store: Store,
    run: i64,
    handle: Handle,
    rounds: u32,
    /// The manifest's privacy terms: what each site's ledger is charged per round.
    privacy: Option<PrivacySpec>,
    /// Local batch size and epochs (the DP-SGD steps of a round).
    batch_size: usize,
    epochs: usize,
}

impl StoreObserver {
    /// Records in the audit log what each accepted site charged its ledger this round: the
    /// sampled Gaussian mechanism's rate, noise multiplier and steps, from which anyone can
    /// recompute the epsilon (the sites' own ledgers hold the running totals).
    fn audit_privacy(&self, record: &RoundRecord) {
        let Some(p) = &self.privacy else {
            return;
        };
        for (site, &examples) in record.accepted.iter().zip(&record.accepted_examples) {
            let (q, steps) = match RoundPrice::of(p, examples as usize) {
                RoundPrice::DpSgd { examples } => {
                    round_cost(examples, self.batch_size, self.epochs)
                }
                RoundPrice::ClientLevel { .. } => CLIENT_ROUND_COST,
            };
            let event = AuditEvent {
                kind: kind::PRIVACY_CHARGED.into(),
                run: Some(self.run),
                round: Some(record.round),
                site: Some(site.clone()),
                detail: serde_json::json!({
                    "mechanism": p.mechanism.as_str(),
                    "sampling_rate": q,
                    "noise_multiplier": p.noise_multiplier,
                    "steps": steps,
                    "delta": p.delta,
                })
                .to_string(),
            };
            if let Err(e) = self.handle.block_on(self.store.audit(event)) {
                tracing::error!(error = %e, "could not record the privacy charge");
            }
        }
    }
}

impl RoundObserver for StoreObserver {
    fn round_started(&mut self, round: u32, sites: &[String]) {
        if let Err(e) = self
            .handle
            .block_on(self.store.round_started(self.run, round, sites))
        {
            tracing::error!(error = %e, round, "could not record the round's start");
        }
    }

    fn commit(
        &mut self,
        record: &RoundRecord,
        global: &ParamSet,
        aggregator: &dyn Aggregator,
    ) -> Result<(), String> {
        let checkpoint = global.to_safetensors().map_err(|e| e.to_string())?;
        let state = aggregator
            .state()
            .as_ref()
            .map(ParamSet::to_safetensors)
            .transpose()
            .map_err(|e| e.to_string())?;
        let mut participants: Vec<Participant> = record
            .accepted
            .iter()
            .enumerate()
            .map(|(i, site)| Participant {
                site: site.clone(),
                accepted: true,
                reason: None,
                examples: record.accepted_examples.get(i).copied().unwrap_or(0),
                loss: record.accepted_losses.get(i).copied().unwrap_or(f64::NAN),
            })
            .collect();
        participants.extend(record.excluded.iter().map(|e| Participant {
            site: e.site.clone(),
            accepted: false,
            reason: Some(e.reason.clone()),
            examples: 0,
            loss: f64::NAN,
        }));
        let metrics = serde_json::to_string(record).map_err(|e| e.to_string())?;
        self.handle
            .block_on(self.store.round_finished(
                self.run,
                &FinishedRound {
                    round: record.round,
                    participants: &participants,
                    metrics_json: &metrics,
                    checkpoint: &checkpoint,
                    optimizer_state: state.as_deref(),
                },
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn round_finished(&mut self, record: &RoundRecord) {
        self.audit_privacy(record);
        let test = record
            .test
            .as_ref()
            .map_or("-".into(), |m| format!("{:.2}%", 100.0 * m.accuracy));
        println!(
            "round {:>3}/{}: {} of {} sites accepted, test accuracy {test}, {:.1} s{}",
            record.round,
            self.rounds,
            record.accepted.len(),
            record.selected.len(),
            record.seconds,
            record
                .excluded
                .iter()
                .map(|e| format!("\n  left out {}: {}", e.site, e.reason))
                .collect::<String>()
        );
    }
}
