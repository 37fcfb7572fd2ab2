//! The coordinator of a real deployment: [`run`] drives one federated run from a manifest to
//! its final model. The same round engine as a simulation, with every site a node reached over
//! gRPC and mutual TLS, its state in the durable store and every admission, refusal, round,
//! update and checkpoint in the hash-chained audit log. A run that stops for any reason (a
//! crash, a failed round, [`run`]'s shutdown future) resumes after its last completed round
//! when a coordinator with the same manifest and store starts again.
//!
//! The library prints nothing: what happens goes to a [`Report`].

mod engine;
mod error;
mod observer;
mod report;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use entente_core::engine::{Dispatch, Evaluator, RoundEngine, RoundRecord};
use entente_core::manifest::Manifest;
use entente_core::params::ParamSet;
use entente_core::personal;
use entente_privacy::secure_round::{SecAggCoordinator, SecAggSettings};
use entente_proto::tls;
use entente_proto::tls::signatures::{self, Checked};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::CoordinatorError;
pub use report::{
    AuditCheck, FederationStatus, LATEST_AUDIT_ENTRIES, NoReport, Report, RunStart, SitePrivacy,
    SiteStatus,
};

use crate::audit::privacy::RunCharges;
use crate::audit::{AuditEvent, ChainWatch, kind};
use crate::store::{Store, StoreError, redact};
use crate::transport::hub::Hub;
use crate::transport::listener;
use crate::transport::revocation::RevocationGuard;
use crate::transport::service::CoordinatorService;
use observer::StoreObserver;

/// Longest heartbeat interval accepted (a node counts as gone after three missed ones).
const MAX_HEARTBEAT: Duration = Duration::from_secs(3600);

/// After the run, how long the coordinator waits for the nodes to hear that it is finished.
const FAREWELL: Duration = Duration::from_secs(5);

/// How often the report hears every site's connection ([`Report::sites_status`]).
pub(crate) const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Once told to stop, how long the listener may take to close its open connections before
/// the coordinator stops waiting for them.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Everything a coordinator needs besides its listener.
pub struct CoordinatorConfig {
    /// The federation's manifest: sites, model, rounds, rules, privacy.
    pub manifest: Manifest,
    /// The store: `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB` (see
    /// [`Store::open`]; [`Store::sqlite_url_beside`] gives the default beside a manifest).
    pub store_url: String,
    /// The federation CA's certificate (PEM): nodes must present a certificate it signed.
    pub ca: PathBuf,
    /// The coordinator's certificate chain (PEM).
    pub cert: PathBuf,
    /// The coordinator's private key (PEM).
    pub key: PathBuf,
    /// The model of round 1, used when the store holds no checkpoint of this run.
    pub initial: ParamSet,
    /// Evaluates every new global model on the coordinator's held-out test set, if it has one.
    pub evaluator: Option<Arc<dyn Evaluator>>,
    /// Where the final model is written (safetensors).
    pub out: PathBuf,
    /// Nodes send a heartbeat this often; three missed ones and a node counts as gone. Above
    /// zero and at most an hour.
    pub heartbeat: Duration,
    /// Before the first round, how long to wait for every site to connect; then the run starts
    /// as soon as the quorum (`selection.min_sites`) is connected.
    pub wait_for_sites: Duration,
    /// The manifest's signature file ([`signatures::signatures_path`] beside it); `None`, or a
    /// path with no file, means no signatures. Checked against `ca` before the run starts:
    /// every signature `[agreement] require_signatures` names must verify, and the valid ones
    /// are recorded with the run's start in the audit log.
    pub signatures: Option<PathBuf>,
    /// The federation's revocation list (`revoked.crl`, written by `entente keys revoke`):
    /// certificates it revokes are refused at the handshake and in every call. Read again
    /// whenever the file changes, without a restart; no file yet means nothing is revoked.
    /// `None`: no revocation list is used.
    pub revocations: Option<PathBuf>,
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run's id in the store.
    pub run: i64,
    /// Whether an unfinished run was resumed (rather than a new one started).
    pub resumed: bool,
    /// The rounds this coordinator ran, in order (a resumed run's earlier rounds are in the
    /// store only).
    pub rounds: Vec<RoundRecord>,
    /// Where the final model was written.
    pub model: PathBuf,
}

/// Runs the coordinator of `config.manifest` on `listener` (already bound: the caller chooses
/// the address, and can read [`TcpListener::local_addr`] first) until the run is finished.
///
/// It takes the store ([`Store::open_owned`]: a store another coordinator holds is refused,
/// [`StoreError::InUse`], before anything is written), opens (or resumes) the run in it,
/// accepts nodes over mutual TLS, waits for the sites, runs every remaining round (each
/// committed with its checkpoint in one transaction), writes the final model to `config.out`,
/// tells the nodes the run is finished and stops listening. Progress goes to `report`. If the
/// store is lost meanwhile (its SQLite file deleted or replaced, its PostgreSQL lock connection
/// gone), it stops within a second or so with [`CoordinatorError::StoreLost`]. However it ends,
/// SQLite's write-ahead log is moved into the database file before it returns.
///
/// When `shutdown` resolves before the run is finished, the coordinator stops taking
/// connections and work, lets the round in progress fail (it is repeated on resume) and
/// returns [`CoordinatorError::ShutDown`]; nodes are not told the run is over, so they wait
/// for the next coordinator. Completed rounds stay committed: the same configuration resumes.
pub async fn run(
    config: CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    report: &mut dyn Report,
) -> Result<RunSummary, CoordinatorError> {
    if config.heartbeat.is_zero() || config.heartbeat > MAX_HEARTBEAT {
        return Err(CoordinatorError::Config {
            reason: format!(
                "the heartbeat interval must be above zero and at most {} s, not {} s",
                MAX_HEARTBEAT.as_secs(),
                config.heartbeat.as_secs_f64()
            ),
        });
    }
    check_claim_bound(&config.manifest)?;
    let signed = check_signatures(&config)?;
    let (stop, stopped) = watch::channel(false);
    let signal = AbortOnDrop(tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    }));
    let result = drive(config, signed, listener, stopped, report).await;
    drop(signal);
    result
}

/// Refuses a manifest that lets a site claim any number of examples. A claim is the site's
/// FedAvg weight, so in a deployment, where the coordinator cannot check it, one site claiming
/// a million examples outweighs every honest one: `strategy.max_examples` (or, under secure
/// aggregation, `secure_aggregation.max_examples`) must bound it.
fn check_claim_bound(manifest: &Manifest) -> Result<(), CoordinatorError> {
    if manifest.policy.max_examples.is_some() {
        return Ok(());
    }
    Err(CoordinatorError::Config {
        reason: "the manifest does not bound the training examples a site may claim, and a \
                 claim is the site's weight in the average: one site claiming 10^9 would \
                 outweigh all the others. Add `max_examples = N` to [strategy], N at least the \
                 largest site's number of training examples (a site claiming more is left out \
                 of the round)"
            .to_string(),
    })
}

/// The manifest's valid signatures, after checking that every one it requires is there (see
/// [`CoordinatorConfig::signatures`]).
fn check_signatures(config: &CoordinatorConfig) -> Result<Vec<Checked>, CoordinatorError> {
    signatures::check_before_run(&config.manifest, config.signatures.as_deref(), &config.ca)
        .map_err(|source| CoordinatorError::Signatures { source })
}

/// Aborts a task when dropped (a [`run`] future dropped before it ends leaves nothing behind).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves once `stop` holds `true` (never if its sender goes without saying so).
async fn signalled(mut stop: watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn store_error(what: &'static str) -> impl FnOnce(StoreError) -> CoordinatorError {
    move |source| match source {
        StoreError::Lost { .. } => CoordinatorError::StoreLost { source },
        source => CoordinatorError::Store { what, source },
    }
}

/// Reads the checkpoint `sha256` from the store as a parameter set.
async fn read_checkpoint(
    store: &Store,
    sha256: &str,
    what: &'static str,
) -> Result<ParamSet, CoordinatorError> {
    let bytes = store
        .checkpoint(sha256)
        .await
        .map_err(store_error("read a checkpoint from the store"))?;
    ParamSet::from_safetensors(&bytes)
        .map_err(|source| CoordinatorError::Checkpoint { what, source })
}

/// Takes the store for the run ([`Store::open_owned`]: a second coordinator is refused before
/// it changes anything), runs, and then, whatever the outcome, moves SQLite's write-ahead log
/// into the database file and gives the store up.
async fn drive(
    config: CoordinatorConfig,
    signed: Vec<Checked>,
    socket: TcpListener,
    stop: watch::Receiver<bool>,
    report: &mut dyn Report,
) -> Result<RunSummary, CoordinatorError> {
    // The identity first: a certificate the nodes could not use, or a key that is not its own,
    // stops the coordinator before it touches the store.
    let tls_error = |source| CoordinatorError::Tls { source };
    let revocation_error = |source| CoordinatorError::Revocations { source };
    let revocations = Arc::new(
        tls::Revocations::load(&config.ca, config.revocations.as_deref())
            .map_err(revocation_error)?,
    );
    revocations
        .check_own(&config.cert)
        .map_err(revocation_error)?;
    let tls = tls::server_config(&config.ca, &config.cert, &config.key, &revocations)
        .map_err(tls_error)?;
    let hosts = tls::check_coordinator_certificate(&config.ca, &config.cert).map_err(tls_error)?;
    let credentials = Credentials {
        tls,
        revocations,
        hosts,
        signatures: run_signatures(&signed),
    };
    let (store, ownership) = Store::open_owned(&config.store_url)
        .await
        .map_err(|source| CoordinatorError::OpenStore {
            url: redact(&config.store_url),
            source,
        })?;
    let result = {
        let lost = ownership.lost(&store);
        tokio::pin!(lost);
        drive_owned(config, credentials, &store, lost, socket, stop, report).await
    };
    // A round that failed because the store went away is the store's loss, not the round's.
    let result = match (result, store.check_file()) {
        (Err(CoordinatorError::Engine { .. }), Err(source)) => {
            Err(CoordinatorError::StoreLost { source })
        }
        (result, _) => result,
    };
    if !matches!(result, Err(CoordinatorError::StoreLost { .. }))
        && let Err(e) = store.checkpoint_wal().await
    {
        tracing::warn!(
            error = %e,
            "could not move the write-ahead log into the database file; it stays beside it \
             (-wal) and is part of the store until a later run moves it"
        );
    }
    ownership.release().await;
    result
}

/// The verified signatures of the manifest, as the audit log records them.
fn run_signatures(signed: &[Checked]) -> Vec<crate::store::RunSignature> {
    signed
        .iter()
        .map(|c| crate::store::RunSignature {
            site: c.site.clone(),
            algorithm: c.algorithm.clone(),
            signature: c.signature.clone(),
        })
        .collect()
}

/// What the coordinator checked before opening the run: its TLS server configuration and the
/// revocation list it checks, the hosts its certificate is valid for, and the manifest's
/// verified signatures.
struct Credentials {
    tls: Arc<rustls::ServerConfig>,
    revocations: Arc<tls::Revocations>,
    hosts: Vec<String>,
    signatures: Vec<crate::store::RunSignature>,
}

/// The run, on a store this coordinator owns; `lost` resolves if the store goes away.
async fn drive_owned(
    config: CoordinatorConfig,
    credentials: Credentials,
    store: &Store,
    mut lost: std::pin::Pin<&mut impl Future<Output = StoreError>>,
    socket: TcpListener,
    stop: watch::Receiver<bool>,
    report: &mut dyn Report,
) -> Result<RunSummary, CoordinatorError> {
    let CoordinatorConfig {
        manifest,
        store_url,
        initial,
        evaluator,
        out,
        heartbeat,
        wait_for_sites,
        ..
    } = config;
    let Credentials {
        tls,
        revocations,
        hosts,
        signatures,
    } = credentials;
    let digest = manifest.agreement_digest();
    let state = store
        .open_run_signed(&manifest.name, &digest, manifest.rounds, &signatures)
        .await
        .map_err(store_error("open the run in the store"))?;
    let run = state.run;
    let initial = match &state.checkpoint {
        Some(sha) => read_checkpoint(store, sha, "checkpoint").await?,
        None => initial,
    };
    // Under FedPer and FedRep every task carries, and the model holds, the shared tensors
    // only: personal tensors never leave a site, and none starts here.
    let initial = personal::split(&initial, manifest.personal_tensors())
        .map_err(|e| CoordinatorError::Config {
            reason: format!("the initial model: {e}"),
        })?
        .0;
    let server_state = match &state.optimizer_state {
        Some(sha) => Some(read_checkpoint(store, sha, "server-optimizer state").await?),
        None => None,
    };
    let store_shown = redact(&store_url);
    let start = RunStart {
        run,
        federation: &manifest.name,
        sites: manifest.sites.len(),
        rounds: manifest.rounds,
        completed: state.completed,
        store: &store_shown,
        hosts: &hosts,
    };
    if state.resumed {
        report.resumed(&start);
    } else {
        report.started(&start);
    }

    let secure = SecAggSettings::from_manifest(&manifest);
    let mut hub = Hub::new(&manifest.sites, heartbeat);
    if let Some(settings) = &secure {
        hub = hub.with_secure_reply_limit(settings.max_masked_bytes(initial.num_values()));
    }
    let hub = Arc::new(hub);

    // Everything the manifest decides is checked before any node is let in.
    let mut rule = engine::aggregation_rule(&manifest)?;
    if let Some(s) = &server_state {
        rule.restore(s)
            .map_err(|source| CoordinatorError::Restore { source })?;
    }
    let mut engine = RoundEngine::new(
        engine::remote_sites(&manifest, &hub),
        rule,
        evaluator,
        manifest.round_rules(),
        initial,
    )
    .with_dispatch(Dispatch::ThreadPerCall);
    if let Some(settings) = secure {
        settings
            .check(engine.global().num_values())
            .map_err(|reason| CoordinatorError::SecureAggregation { reason })?;
        engine = engine
            .with_secure_aggregation(Box::new(SecAggCoordinator::new(settings, &manifest.sites)));
    }

    let addr = socket
        .local_addr()
        .map_err(|source| CoordinatorError::Listener { source })?;
    let revocations = Arc::new(RevocationGuard::new(revocations));
    let _revocation_watch =
        AbortOnDrop(revocations.spawn_watch(Arc::clone(&hub), store.clone(), run));
    let service = CoordinatorService::new(
        Arc::clone(&hub),
        store.clone(),
        run,
        manifest.name.clone(),
        manifest.agreement_terms(),
        revocations,
    );
    let serving = Serving::start(socket, tls, service, Arc::clone(&hub));
    report.listening(addr);
    let mut audit = AuditFollower::new(run);
    audit.check(store, &manifest, report, false).await;

    let ready = tokio::select! {
        () = engine::wait_for_sites(&hub, &manifest, wait_for_sites, report) => Ok(true),
        () = signalled(stop.clone()) => Ok(false),
        source = &mut lost => Err(source),
    };
    match ready {
        Ok(true) => {}
        Ok(false) => {
            serving.stopped(store, run, "shut down".into()).await;
            return Err(CoordinatorError::ShutDown);
        }
        Err(source) => {
            let lost = CoordinatorError::StoreLost { source };
            return Err(serving.end(store, run, lost).await);
        }
    }

    // The engine blocks while it waits for sites, so it runs on a thread of its own; each call
    // to a site gets one too (`Dispatch::ThreadPerCall`), and its computing shares the rayon
    // pool of one thread per core.
    let first = state.completed + 1;
    let (finished, mut records) = tokio::sync::mpsc::unbounded_channel();
    let mut observer = StoreObserver::new(store.clone(), run, &manifest, finished);
    let mut engine_thread = tokio::task::spawn_blocking(move || {
        let result = engine.run_from(first, &mut observer);
        (result, engine)
    });
    let mut stopping = false;
    let mut lost_store = None;
    let mut status = tokio::time::interval(STATUS_EVERY);
    let joined = loop {
        tokio::select! {
            joined = &mut engine_thread => break joined,
            _ = status.tick() => report.status(&engine::status(&hub, &manifest)),
            Some(record) = records.recv() => {
                report.round_finished(&record, manifest.rounds);
                // The first status after the round, so its traffic shows with it.
                report.status(&engine::status(&hub, &manifest));
                audit.check(store, &manifest, report, false).await;
            }
            () = signalled(stop.clone()), if !stopping => {
                // Sites fail their calls at once, so the round in progress ends now.
                stopping = true;
                hub.close();
            }
            source = &mut lost, if lost_store.is_none() => {
                lost_store = Some(source);
                hub.close();
            }
        }
    };
    while let Ok(record) = records.try_recv() {
        report.round_finished(&record, manifest.rounds);
    }
    report.status(&engine::status(&hub, &manifest));
    let joined = joined.map_err(|source| CoordinatorError::EngineThread { source });
    let (result, engine) = match (joined, lost_store) {
        (_, Some(source)) => {
            let lost = CoordinatorError::StoreLost { source };
            return Err(serving.end(store, run, lost).await);
        }
        (Err(e), None) => return Err(serving.end(store, run, e).await),
        (Ok(done), None) => done,
    };
    let rounds = match result {
        Ok(rounds) => rounds,
        Err(e) if stopping => {
            serving
                .stopped(store, run, format!("shut down ({e})"))
                .await;
            return Err(CoordinatorError::ShutDown);
        }
        Err(e) => {
            serving.stopped(store, run, e.to_string()).await;
            return Err(CoordinatorError::Engine { source: e });
        }
    };

    // The model first: if it cannot be written, the run stays open in the store, and the same
    // command resumes it (with no round left to train) and writes the model.
    let model = out.clone();
    let finished = async {
        tokio::task::spawn_blocking(move || engine.global().save(&model))
            .await
            .map_err(|source| CoordinatorError::EngineThread { source })?
            .map_err(|source| CoordinatorError::WriteModel {
                path: out.clone(),
                source,
            })?;
        store
            .finish_run(run)
            .await
            .map_err(store_error("record the end of the run"))
    };
    if let Err(e) = finished.await {
        return Err(serving.end(store, run, e).await);
    }
    audit.check(store, &manifest, report, true).await;
    report.finished(run, &out);

    // Tell the nodes, then stop once they have heard it (or after a few seconds, or at once
    // on shutdown).
    hub.finish(manifest.rounds);
    if !stopping {
        tokio::select! {
            () = farewell(&hub) => {}
            () = signalled(stop) => {}
        }
    }
    serving.stop().await;
    Ok(RunSummary {
        run,
        resumed: state.resumed,
        rounds,
        model: out,
    })
}

/// What the report is told of the audit log, kept up as the log grows: the chain, followed
/// a piece at a time, and the privacy this run charged each site.
struct AuditFollower {
    run: i64,
    chain: ChainWatch,
    charges: RunCharges,
}

impl AuditFollower {
    fn new(run: i64) -> Self {
        AuditFollower {
            run,
            chain: ChainWatch::new(LATEST_AUDIT_ENTRIES),
            charges: RunCharges::new(run),
        }
    }

    /// Reads the entries written since the last check, if the report wants them
    /// ([`Report::watches_audit`]), and tells it what they show. With `whole`, the log is walked
    /// again from its first entry, which also finds an edit to an entry verified before. A log
    /// that cannot be read is a warning here: the round's own writes fail loudly if the store
    /// is gone.
    async fn check(
        &mut self,
        store: &Store,
        manifest: &Manifest,
        report: &mut dyn Report,
        whole: bool,
    ) {
        if !report.watches_audit() {
            return;
        }
        if whole {
            *self = AuditFollower::new(self.run);
        }
        let entries = match store.audit_entries_from(self.chain.resume_at()).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the audit log for the dashboard");
                return;
            }
        };
        // The re-read newest entry was composed before: only what is new to the chain is.
        self.charges.add(self.chain.advance(&entries));
        let privacy = manifest.privacy.as_ref().map_or_else(Vec::new, |p| {
            let spent = self.charges.epsilons(p.delta);
            manifest
                .sites
                .iter()
                .zip(&p.budgets)
                .map(|(site, &budget)| SitePrivacy {
                    site: site.clone(),
                    epsilon: spent.get(site).copied().unwrap_or(0.0),
                    budget,
                })
                .collect()
        });
        report.audit_checked(&AuditCheck {
            chain: self.chain.report(),
            entries: self.chain.seen(),
            latest: self.chain.latest().cloned().collect(),
            privacy,
        });
    }
}

/// Waits until no node is connected, or [`FAREWELL`] has passed.
async fn farewell(hub: &Hub) {
    let until = Instant::now() + FAREWELL;
    while Instant::now() < until && !hub.alive().is_empty() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The gRPC service on its listener. Dropped without [`Serving::stop`] (an early error, a
/// dropped [`run`] future), it closes the hub and stops the server without waiting.
struct Serving {
    hub: Arc<Hub>,
    stop: watch::Sender<bool>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Serving {
    /// Starts serving `service` on `socket` with mutual TLS.
    fn start(
        socket: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        service: CoordinatorService,
        hub: Arc<Hub>,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let server = tokio::spawn(listener::serve(
            socket,
            tls,
            service,
            Arc::clone(&hub),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        Self {
            hub,
            stop,
            server: Some(server),
        }
    }

    /// Stops taking connections and waits (at most [`CLOSE_GRACE`]) for open ones to close.
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        let Some(mut server) = self.server.take() else {
            return;
        };
        match tokio::time::timeout(CLOSE_GRACE, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "the gRPC server failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the gRPC server's task failed"),
            Err(_) => {
                tracing::warn!(
                    "connections still open {} s after the listener closed; not waiting for them",
                    CLOSE_GRACE.as_secs()
                );
                server.abort();
            }
        }
    }

    /// Ends an unfinished run that failed with `error` and hands the error back: as
    /// [`Serving::stopped`] says, except that a store that was lost gets nothing more written
    /// to it.
    async fn end(self, store: &Store, run: i64, error: CoordinatorError) -> CoordinatorError {
        match &error {
            CoordinatorError::StoreLost { .. } => {
                self.hub.close();
                self.stop().await;
            }
            e => self.stopped(store, run, e.to_string()).await,
        }
        error
    }

    /// Ends an unfinished run: no more work for the nodes (they are not told the run is over),
    /// the reason in the audit log, then [`Serving::stop`].
    async fn stopped(self, store: &Store, run: i64, reason: String) {
        self.hub.close();
        let event = AuditEvent {
            kind: kind::RUN_STOPPED.into(),
            run: Some(run),
            round: None,
            site: None,
            detail: serde_json::json!({ "reason": reason }).to_string(),
        };
        if let Err(e) = store.audit(event).await {
            tracing::error!(error = %e, "could not record that the run stopped");
        }
        self.stop().await;
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            self.hub.close();
            server.abort();
        }
    }
}
