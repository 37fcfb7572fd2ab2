//! The simulation driver: manifest -> sites -> round engine -> run folder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use entente_core::aggregators;
use entente_core::aggregators::{Aggregator, Strategy};
use entente_core::engine::{Evaluator, RoundEngine, RoundRecord, Site};
use entente_core::manifest::PrivacyMechanism;
use entente_core::manifest::{MAX_ROUNDS, Manifest, Personalization};
use entente_core::params::ParamSet;
use entente_core::seeds::{self, Stream};
use entente_dashboard::{Board, RunState};
use entente_learn::data::{DataError, Dataset};
use entente_learn::model::ModelSpec;
use entente_learn::scaffold::ScaffoldSite;
use entente_learn::simulation::{self, CentralTest, PrepareError};
use entente_learn::site::LocalSite;
use entente_learn::{site_data, trainer};
use entente_privacy::dp;
use entente_privacy::dp::client::DpFedAvg;
use entente_privacy::policy::{self, Keys, Member, SamplingRule};
use entente_privacy::secure_round::{SecAggCoordinator, SecAggSettings};
use entente_report::mlflow::{self, MlflowRun};
use rayon::prelude::*;

use crate::baselines;
use crate::personalize;
use crate::privacy::PrivacyTrack;
use crate::progress::Progress;
use crate::run_dir::{self, RunDir, SiteEval, Summary};
use crate::shared_body::SharedBody;

/// Most threads [`Options::threads`] may start.
const MAX_THREADS: usize = 1024;

/// Who trains at each site.
pub enum Trainers {
    /// The manifest's data set, partitioned among the sites, each trained by entente's own
    /// trainer (`entente simulate`); `data` replaces the manifest's `data.path`.
    Partitioned {
        /// Replaces `data.path`.
        data: Option<PathBuf>,
    },
    /// Each site brings its own records: a trainer per manifest site, in manifest order
    /// (`None`: entente's own trainer on the site's `[[sites]] data`). Nothing is
    /// partitioned; the manifest states the model (schema or external file).
    Own(Vec<Option<Arc<dyn Site>>>),
}

/// How to run a simulation.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run folder [default: runs/NAME-UNIXTIME].
    pub out: Option<PathBuf>,
    /// Also train each site alone and one model on the pooled data (partitioned runs only).
    pub baselines: bool,
    /// No progress bar.
    pub quiet: bool,
    /// Threads that train sites at once [default: the global pool, one per core]. Sites whose
    /// training happens elsewhere (worker processes) mostly wait, so one per site suits them.
    pub threads: Option<usize>,
    /// With [`Trainers::Own`]: the coordinator's held-out test set (IDX folder: its t10k
    /// files; CSV: the whole table), evaluated each round when entente can run the model.
    pub eval_data: Option<PathBuf>,
    /// An MLflow tracking server (`http://HOST:PORT`) that receives the manifest as
    /// parameters, each round's figures as metrics and the final model as an artifact, in
    /// experiment `federation.name` under the run folder's name.
    pub mlflow: Option<String>,
    /// Serve the live dashboard here while the run goes on (loopback unless `http_token`).
    pub http: Option<std::net::SocketAddr>,
    /// The dashboard's bearer token.
    pub http_token: Option<String>,
    /// Report the first round whose global model reaches this test accuracy (in `[0, 1]`).
    pub target_accuracy: Option<f64>,
}

/// What a finished simulation leaves.
#[derive(Debug)]
pub struct Outcome {
    /// The run folder.
    pub dir: PathBuf,
    /// Every completed round.
    pub records: Vec<RoundRecord>,
    /// What `summary.json` holds.
    pub summary: Summary,
    /// The final global model.
    pub model: ParamSet,
}

/// One participant before the privacy and progress layers: what trains, and how many examples
/// it holds when entente knows (its own trainer).
struct Base {
    site: Arc<dyn Site>,
    /// The same site when it is entente's own trainer.
    local: Option<Arc<LocalSite>>,
    examples: Option<usize>,
    /// Its own test split, when entente holds it (federated evaluation after the run).
    own_test: Option<(ModelSpec, Dataset)>,
}

/// The sites, the model and the central test set of a run.
struct Setup {
    bases: Vec<Base>,
    initial: ParamSet,
    central: Option<CentralTest>,
    /// The partitioned federation, for split.json and the baselines.
    federation: Option<simulation::Federation>,
    /// What to print about the data.
    data_line: String,
}

fn partitioned(manifest: &Manifest, data: Option<&Path>) -> Result<Setup> {
    // The IDX reader's own error says where Fashion-MNIST comes from when its folder is
    // missing; the command line can point elsewhere.
    let fed = simulation::prepare(manifest, data).map_err(|e| {
        let hint = match &e {
            PrepareError::Data(DataError::NotFound { .. }) => {
                "\n  or give --data PATH: a folder holding train-/t10k- IDX files, or a CSV file"
            }
            _ => "",
        };
        anyhow::anyhow!("could not prepare the federation: {e}{hint}")
    })?;
    let data_line = format!(
        "data: {} training examples over the sites ({}), {} in the global test set",
        fed.sites
            .iter()
            .map(|s| s.train_data().len())
            .sum::<usize>(),
        fed.sites
            .iter()
            .map(|s| s.train_data().len().to_string())
            .collect::<Vec<_>>()
            .join("/"),
        fed.test.len(),
    );
    let bases = fed
        .sites
        .iter()
        .map(|s| {
            let local = Arc::new(s.clone());
            Base {
                site: Arc::clone(&local) as Arc<dyn Site>,
                local: Some(local),
                examples: Some(s.train_data().len()),
                own_test: Some((fed.spec.clone(), s.test_data().clone())),
            }
        })
        .collect();
    Ok(Setup {
        bases,
        initial: fed.initial.clone(),
        central: Some(CentralTest::new(fed.spec.clone(), fed.test.clone())?),
        federation: Some(fed),
        data_line,
    })
}

fn own(
    manifest: &Manifest,
    trainers: Vec<Option<Arc<dyn Site>>>,
    eval: Option<&Path>,
) -> Result<Setup> {
    if trainers.len() != manifest.sites.len() {
        bail!(
            "{} trainers for the manifest's {} sites; give one per site, in manifest order",
            trainers.len(),
            manifest.sites.len()
        );
    }
    let model = simulation::federation_model(manifest, None)?;
    let mut bases = Vec::with_capacity(trainers.len());
    for (i, trainer) in trainers.into_iter().enumerate() {
        let name = &manifest.sites[i];
        bases.push(match trainer {
            Some(site) => {
                if site.name() != name {
                    bail!(
                        "the trainer of site {i} answers as `{}`, not `{name}`",
                        site.name()
                    );
                }
                Base {
                    site,
                    local: None,
                    examples: None,
                    own_test: None,
                }
            }
            None => {
                let local = site_data::local_site(manifest, i, None)
                    .with_context(|| format!("site `{name}` (entente's own trainer)"))?;
                let local = Arc::new(local);
                Base {
                    examples: Some(local.train_data().len()),
                    own_test: Some((
                        simulation::model_spec(manifest, local.train_data())?,
                        local.test_data().clone(),
                    )),
                    site: Arc::clone(&local) as Arc<dyn Site>,
                    local: Some(local),
                }
            }
        });
    }
    let central = match (eval, &model.spec) {
        (Some(path), Some(spec)) => Some(CentralTest::new(
            spec.clone(),
            simulation::load_test_set(manifest, path)?,
        )?),
        (Some(_), None) => bail!(
            "eval_data: entente evaluates only its own models and external MLPs on a central test \
             set; leave it out and rely on the sites' own evaluation"
        ),
        (None, _) => None,
    };
    let data_line = format!(
        "data: every site trains on its own records{}",
        central.as_ref().map_or(String::new(), |c| format!(
            ", {} in the global test set",
            c.data().len()
        ))
    );
    Ok(Setup {
        bases,
        initial: model.initial,
        central,
        federation: None,
        data_line,
    })
}

/// Runs a whole federation in this process, printing progress and one line per round, and
/// writes the run folder. A run that stops (the quorum is lost, budgets are spent) still
/// writes the model and summary of its completed rounds, then returns the reason.
pub fn run(manifest: &Manifest, trainers: Trainers, options: &Options) -> Result<Outcome> {
    let started = Instant::now();
    // The manifest checked training.rounds; an override (--rounds, rounds=) is checked here.
    if !(1..=MAX_ROUNDS).contains(&manifest.rounds) {
        bail!(
            "{} rounds asked for; a run has 1 to {MAX_ROUNDS} rounds",
            manifest.rounds
        );
    }
    let mut setup = match trainers {
        Trainers::Partitioned { data } => partitioned(manifest, data.as_deref())?,
        Trainers::Own(t) => own(manifest, t, options.eval_data.as_deref())?,
    };
    let dittos = match manifest.personalization {
        Some(Personalization::Ditto { lambda }) => {
            let dittos = personalize::ditto_sites(&locals(&setup.bases), lambda)?;
            for (b, d) in setup.bases.iter_mut().zip(&dittos) {
                b.site = Arc::clone(d) as Arc<dyn Site>;
            }
            Some(dittos)
        }
        _ => None,
    };
    let body = SharedBody::of(manifest, &setup.initial)?;
    let heads = match &body {
        Some(body) => {
            let heads = body.sites(manifest, &locals(&setup.bases))?;
            for (b, h) in setup.bases.iter_mut().zip(&heads) {
                b.site = Arc::clone(h) as Arc<dyn Site>;
            }
            Some(heads)
        }
        None => None,
    };
    if matches!(manifest.strategy, Strategy::Scaffold { .. }) {
        scaffold_sites(&mut setup.bases)?;
    }
    if options.baselines && setup.federation.is_none() {
        bail!(
            "baselines need one data set to partition; they are not available when every site brings its own records"
        );
    }
    if options.baselines && manifest.privacy.is_some() {
        bail!(
            "--baselines would train on every site's records outside its privacy budget; \
             run the baselines on a copy of the manifest without [privacy]"
        );
    }
    // Nothing is written until every check that can refuse the run has passed (below).
    let out_path = RunDir::path_for(options.out.as_deref(), &manifest.name);

    println!(
        "entente simulate: federation `{}`, {} sites, {} rounds, strategy {}{}, model {} ({} parameters)",
        manifest.name,
        setup.bases.len(),
        manifest.rounds,
        strategy(manifest)?.name(),
        match &manifest.secure_aggregation {
            Some(sa) if sa.neighbours.is_some() => " with secure aggregation (SecAgg+)",
            Some(_) => " with secure aggregation (SecAgg)",
            None => "",
        },
        setup
            .central
            .as_ref()
            .map_or_else(|| "external".to_string(), |c| describe(c.spec())),
        setup.initial.num_values(),
    );
    println!("{}; run folder {}", setup.data_line, out_path.display());

    let initial = setup.initial.clone();
    let progress = Progress::new(options.quiet, manifest.rounds);
    let secagg = SecAggSettings::from_manifest(manifest);
    if let Some(settings) = &secagg {
        settings
            .check(initial.num_values())
            .map_err(|e| anyhow::anyhow!("[secure_aggregation]: {e}"))?;
    }
    let partitioned_run = setup.federation.is_some();
    let members = setup
        .bases
        .iter()
        .enumerate()
        .map(|(index, base)| Member {
            index,
            site: Arc::clone(&base.site),
            examples: base.examples,
            // Shares of one data set, or each site's own records.
            dataset: if partitioned_run {
                manifest.data_label()
            } else {
                manifest.site_data_label(index)
            },
            // Under active secure aggregation: in-process identities from the seed.
            identity: None,
        })
        .collect();
    // This process samples the sites itself, so the sampling is verified (see SamplingRule);
    // key material derives from the seed, so runs repeat exactly (simulation only).
    let sampling = SamplingRule::verified(manifest);
    let stack = policy::stack_sites(manifest, sampling, Keys::Seeded, members)?;
    let track = manifest.privacy.as_ref().map(|p| {
        let mut track = PrivacyTrack::new(p.delta);
        for (stacked, budget) in stack.sites.iter().zip(&p.budgets) {
            if let Some(budgeted) = &stacked.budget {
                track.ledger(budgeted.name(), *budget, Arc::clone(budgeted));
            }
        }
        track
    });
    if let (Some(p), Some(worst)) = (&manifest.privacy, stack.forecast) {
        println!(
            "{} client-level DP at sampling rate {:.3}: after this run every site's data is \
             protected at epsilon <= {worst:.3}, delta {} (each round is charged to every site's \
             ledger before it starts)",
            policy::variant(p.mechanism),
            sampling.rate(),
            p.delta
        );
    }
    let sites: Vec<Arc<dyn Site>> = stack
        .sites
        .into_iter()
        .map(|stacked| progress.wrap(stacked.site))
        .collect();
    let rules = manifest.round_rules();
    let federated_evaluation = rules.federated_evaluation;
    let evaluator = match (setup.central, &body) {
        (Some(c), Some(body)) => Some(body.evaluator(Arc::new(c))?),
        (Some(c), None) => Some(Arc::new(c) as Arc<dyn Evaluator>),
        (None, _) => None,
    };
    let rule = aggregator(manifest)?;
    let strategy = rule.name();
    // Under FedPer and FedRep the global model is the shared tensors only.
    let start = match &body {
        Some(body) => body.shared(&initial)?,
        None => initial.clone(),
    };
    let mut engine = RoundEngine::new(sites, rule, evaluator, rules, start);
    if let Some(settings) = secagg {
        engine = engine
            .with_secure_aggregation(Box::new(SecAggCoordinator::new(settings, &manifest.sites)));
    }
    // A dashboard that may not listen where asked, or an MLflow server that does not answer,
    // refuses the run before its folder is written (a rerun may use the same --out), and the
    // MLflow run is opened only once the dashboard's address passed its check.
    let dashboard = options
        .http
        .map(|addr| bind_dashboard(addr, options.http_token.clone()))
        .transpose()?;
    let tracking = match &options.mlflow {
        Some(uri) => Some(start_tracking(uri, manifest, &out_path)?),
        None => None,
    };
    let opened = dashboard
        .map(|d| d.serve(manifest))
        .transpose()
        .and_then(|board| {
            let out = RunDir::create(&out_path)?;
            out.write_setup(
                manifest,
                setup.federation.as_ref().map(|f| f.split.as_slice()),
            )?;
            Ok((board, out))
        });
    let (board, out) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            if let Some(run) = tracking
                && let Err(failed) = run.finish(false)
            {
                eprintln!("warning: the MLflow run could not be marked failed: {failed}");
            }
            return Err(e);
        }
    };
    let mut observer = progress.observer(&out, tracking, board.clone(), track);
    let stopped = match options.threads {
        None => engine.run(&mut observer).err(),
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.clamp(1, MAX_THREADS))
            .build()
            .context("could not start the worker threads")?
            .install(|| engine.run(&mut observer))
            .err(),
    };
    let (records, tracking) = observer.finish()?;
    let fed_seconds = started.elapsed().as_secs_f64();
    let shared = engine.global().clone();
    let model = match &body {
        Some(body) => body.whole(&shared)?,
        None => shared.clone(),
    };
    model
        .save(&out.path().join("model.safetensors"))
        .context("could not write the final model")?;
    if let Some(run) = tracking {
        finish_tracking(run, out.path(), stopped.is_none());
    }
    if let Some(board) = &board {
        board.set_state(match &stopped {
            Some(reason) => RunState::Stopped {
                reason: reason.to_string(),
            },
            None => RunState::Finished,
        });
    }
    if let Some(reason) = stopped {
        let summary = Summary::new(
            manifest,
            strategy,
            &records,
            &[],
            None,
            fed_seconds,
            started,
        )
        .with_target(options.target_accuracy, &records);
        out.write_summary(&summary)?;
        println!(
            "\nthe federation stopped after {} completed rounds; their model and summary are in {}",
            records.len(),
            out.path().display()
        );
        return Err(anyhow::Error::new(reason).context("the federation stopped"));
    }

    let global = Arc::new(model.clone());
    let claimed = |name: &str| {
        records
            .iter()
            .rev()
            .find_map(|r| {
                r.accepted
                    .iter()
                    .position(|s| s == name)
                    .map(|i| r.accepted_examples[i] as usize)
            })
            .unwrap_or(0)
    };
    // Not under a privacy budget: nothing is released about a site's own records.
    let mut site_eval: Vec<SiteEval> = setup
        .bases
        .par_iter()
        .map(|b| {
            let name = b.site.name().to_string();
            let own = if !federated_evaluation {
                None
            } else {
                match &b.own_test {
                    Some((spec, test)) if !test.is_empty() => {
                        trainer::evaluate(spec, &global, test, trainer::EVAL_BATCH).ok()
                    }
                    Some(_) => None,
                    None => b.site.evaluate(&global).ok(),
                }
            };
            let examples = b.examples.unwrap_or_else(|| claimed(&name));
            SiteEval {
                site: name,
                examples,
                global: own,
                personal: None,
            }
        })
        .collect();
    if let Some(choice) = &manifest.personalization {
        let members: Vec<personalize::Member<'_>> = setup
            .bases
            .iter()
            .enumerate()
            .map(|(i, b)| personalize::Member {
                site: &b.site,
                own_test: b.own_test.as_ref(),
                ditto: dittos.as_ref().and_then(|d| d.get(i)),
                head: heads.as_ref().and_then(|h| h.get(i)),
            })
            .collect();
        let models = personalize::Models {
            global: &global,
            shared: &shared,
        };
        let personal = personalize::run(&members, manifest, choice, models, out.path(), &progress)?;
        for (e, p) in site_eval.iter_mut().zip(personal) {
            e.personal = p;
        }
    }
    let baseline = match (&setup.federation, options.baselines) {
        (Some(fed), true) => Some(baselines::run(fed, manifest, &initial, &progress)?),
        _ => None,
    };
    let summary = run_dir::Summary::new(
        manifest,
        strategy,
        &records,
        &site_eval,
        baseline.as_ref(),
        fed_seconds,
        started,
    )
    .with_target(options.target_accuracy, &records);
    out.write_summary(&summary)?;
    summary.print();
    println!("\nrun folder: {}", out.path().display());
    Ok(Outcome {
        dir: out.path().to_path_buf(),
        records,
        summary,
        model,
    })
}

/// The dashboard's listener, bound and checked against its token, not serving yet.
struct BoundDashboard {
    runtime: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    token: Option<String>,
}

/// Listens on `addr` for the dashboard, refused on a non-loopback address without a token.
fn bind_dashboard(addr: std::net::SocketAddr, token: Option<String>) -> Result<BoundDashboard> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the dashboard's runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("--http {addr}: could not listen there"))?;
    entente_dashboard::check_exposure(&listener, token.as_deref())?;
    Ok(BoundDashboard {
        runtime,
        listener,
        token,
    })
}

impl BoundDashboard {
    /// Serves the dashboard of this run on its own thread (it ends with the process), and
    /// says where.
    fn serve(self, manifest: &Manifest) -> Result<Board> {
        let board = Board::new(
            &manifest.name,
            &manifest.agreement_digest(),
            manifest.rounds,
            &manifest.sites,
        );
        // A simulation's sites live in this process: connected from start to end.
        for site in &manifest.sites {
            board.site_seen(site, true);
        }
        let url = self.listener.local_addr().context("--http")?;
        let (runtime, listener, token, shown) =
            (self.runtime, self.listener, self.token, board.clone());
        std::thread::Builder::new()
            .name("dashboard".into())
            .spawn(move || runtime.block_on(entente_dashboard::serve(listener, shown, token)))
            .context("could not start the dashboard's thread")?;
        board.set_state(RunState::Running);
        println!("dashboard: http://{url}/");
        Ok(board)
    }
}

/// Opens the run's MLflow run before round 1, so that a wrong address fails before any
/// training.
fn start_tracking(uri: &str, manifest: &Manifest, dir: &Path) -> Result<MlflowRun> {
    let name = dir.file_name().map_or_else(
        || manifest.name.clone(),
        |n| n.to_string_lossy().into_owned(),
    );
    open_mlflow_run(uri, manifest, &name)
}

/// Opens the MLflow run `name` for `manifest` at `uri`, in the experiment named after the
/// federation, with the manifest's settings (and the rounds actually run) as parameters, and
/// says so on stdout; `simulate --mlflow` and `serve --mlflow` both start here.
pub fn open_mlflow_run(uri: &str, manifest: &Manifest, name: &str) -> Result<MlflowRun> {
    let mut params = mlflow::manifest_params(&manifest.source);
    // The rounds actually run (a command-line override replaces the manifest's).
    params.retain(|(k, _)| k != "training.rounds");
    params.push(("training.rounds".to_string(), manifest.rounds.to_string()));
    let run = MlflowRun::start(uri, &manifest.name, name, &params)
        .with_context(|| format!("--mlflow {uri}: could not open a run"))?;
    println!(
        "mlflow: run {} in experiment `{}` at {uri}",
        run.run_id(),
        manifest.name
    );
    Ok(run)
}

/// Uploads the final model and marks the MLflow run finished; a failure is reported, not
/// raised: the run folder holds everything. A model that could not be read here still lets the
/// run be marked; after a failed call nothing more goes to the server.
fn finish_tracking(run: MlflowRun, dir: &Path, ok: bool) {
    if let Err(e) = run.log_artifact(&dir.join("model.safetensors"), "model.safetensors") {
        eprintln!("warning: MLflow did not get the model: {e}");
    }
    if !run.given_up()
        && let Err(e) = run.finish(ok)
    {
        eprintln!("warning: MLflow did not get the end of the run: {e}");
    }
}

/// Each base site's name, with the site itself when it is entente's own trainer.
fn locals(bases: &[Base]) -> Vec<(String, Option<Arc<LocalSite>>)> {
    bases
        .iter()
        .map(|b| (b.site.name().to_string(), b.local.clone()))
        .collect()
}

/// Under SCAFFOLD every site keeps a control variate and corrects its steps with it, which
/// only entente's own trainer does; in simulation the control variates live in memory.
fn scaffold_sites(bases: &mut [Base]) -> Result<()> {
    for base in bases {
        let Some(local) = &base.local else {
            bail!(
                "site `{}` trains with its own trainer, and strategy.kind = \"scaffold\" needs \
                 entente's: the site must keep a control variate and correct every step with it; \
                 use another strategy, or entente's trainer for that site",
                base.site.name()
            );
        };
        base.site = Arc::new(ScaffoldSite::new(Arc::clone(local), None)?);
    }
    Ok(())
}

/// The aggregator of the manifest's strategy.
fn strategy(manifest: &Manifest) -> Result<Box<dyn Aggregator>> {
    aggregators::build(&manifest.strategy).context("the manifest's [strategy]")
}

/// The aggregation rule: the manifest's strategy, or DP-FedAvg under central client-level DP.
/// (Distributed DP needs no rule of its own: the sites add the noise before secure aggregation
/// masks their updates, and the strategy only ever sees the noisy mean.)
fn aggregator(manifest: &Manifest) -> Result<Box<dyn Aggregator>> {
    match &manifest.privacy {
        Some(p) if p.mechanism == PrivacyMechanism::ClientLevel => Ok(Box::new(DpFedAvg::new(
            p.clip,
            p.noise_multiplier,
            // Simulation only: the noise repeats with the seed. A real coordinator draws
            // it from the operating system.
            dp::noise_rng(seeds::derive(manifest.seed, 0, Stream::CentralNoise)),
        ))),
        _ => strategy(manifest),
    }
}

/// The model in words, for the run's first line (`MLP 784-200-200-10`).
pub fn describe(spec: &ModelSpec) -> String {
    match spec {
        ModelSpec::Mlp {
            input,
            hidden,
            classes,
        } => {
            let mut widths = vec![input.to_string()];
            widths.extend(hidden.iter().map(ToString::to_string));
            widths.push(classes.to_string());
            format!("MLP {}", widths.join("-"))
        }
        ModelSpec::Cnn {
            channels,
            height,
            width,
            classes,
        } => format!("CNN {channels}x{height}x{width} -> {classes}"),
    }
}
