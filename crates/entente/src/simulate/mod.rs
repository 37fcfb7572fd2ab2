//! `entente simulate`: a whole federation in one process, on the same round engine that a
//! network deployment uses, with optional local-only and centralized baselines.

mod baselines;
mod progress;
mod run_dir;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use entente_core::aggregators;
use entente_core::aggregators::Aggregator;
use entente_core::engine::selection;
use entente_core::engine::{Evaluator, RoundEngine, Site};
use entente_core::manifest::Manifest;
use entente_core::manifest::{PrivacyMechanism, PrivacySpec};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_learn::data::Dataset;
use entente_learn::model::ModelSpec;
use entente_learn::simulation;
use entente_learn::trainer;
use entente_privacy::budget::{BudgetedSite, Ledger, RoundPrice};
use entente_privacy::dp;
use entente_privacy::dp::client::DpFedAvg;
use entente_privacy::secure_round::{SecAggCoordinator, SecAggSettings, SecureSite};
use rayon::prelude::*;

/// The manifest `simulate` runs when given none.
const DEFAULT_MANIFEST: &str = include_str!("../../../../examples/digits.toml");

/// Arguments of `entente simulate`.
#[derive(Args)]
pub struct SimulateArgs {
    /// Manifest to run; without one, the embedded digits demo runs.
    manifest: Option<PathBuf>,
    /// Read the data from this file or folder instead of the manifest's `data.path`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Also train each site alone and one model on the pooled data, with the same epochs.
    #[arg(long)]
    baselines: bool,
    /// Run folder for the manifest, split, metrics, model and summary [default: runs/NAME-TIME].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the number of rounds.
    #[arg(long)]
    rounds: Option<u32>,
    /// Worker threads (results do not depend on it) [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// Evaluates the global model on the coordinator's held-out test set.
pub(crate) struct CentralTest {
    /// The model.
    pub(crate) spec: ModelSpec,
    /// The held-out test set.
    pub(crate) data: Dataset,
}

impl Evaluator for CentralTest {
    fn evaluate(&self, params: &ParamSet) -> Result<EvalMetrics, String> {
        trainer::evaluate(&self.spec, params, &self.data, 1000).map_err(|e| e.to_string())
    }
}

fn load_manifest(path: Option<&Path>) -> Result<Manifest> {
    Ok(match path {
        Some(p) => Manifest::load(p)?,
        None => Manifest::parse(DEFAULT_MANIFEST, "<embedded digits demo>", Path::new("."))?,
    })
}

/// Runs `entente simulate`.
pub fn run(args: SimulateArgs) -> Result<()> {
    if let Some(n) = args.threads {
        if n == 0 {
            bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("could not start the worker threads")?;
    }
    let started = Instant::now();
    let mut manifest = load_manifest(args.manifest.as_deref())?;
    if let Some(r) = args.rounds {
        if r == 0 {
            bail!("--rounds must be at least 1");
        }
        manifest.rounds = r;
    }
    let fed = simulation::prepare(&manifest, args.data.as_deref()).map_err(|e| {
        let hint = if matches!(manifest.data.format, entente_core::manifest::DataFormat::Idx) {
            "\n  Fashion-MNIST comes with Debian's package: apt-get install dataset-fashion-mnist\n  \
             or point --data at a folder holding train-/t10k- IDX files"
        } else {
            ""
        };
        anyhow::anyhow!("could not prepare the data: {e}{hint}")
    })?;
    let out = run_dir::RunDir::create(args.out.as_deref(), &manifest.name)?;
    out.write_setup(&manifest, &fed.split)?;

    println!(
        "entente simulate: federation `{}`, {} sites, {} rounds, strategy {}{}, model {} ({} parameters)",
        manifest.name,
        fed.sites.len(),
        manifest.rounds,
        aggregators::build(&manifest.strategy).name(),
        match &manifest.secure_aggregation {
            Some(sa) if sa.neighbours.is_some() => " with secure aggregation (SecAgg+)",
            Some(_) => " with secure aggregation (SecAgg)",
            None => "",
        },
        describe(&fed.spec),
        fed.spec
            .tensor_shapes()
            .iter()
            .map(|(_, s, _)| s.iter().product::<usize>())
            .sum::<usize>(),
    );
    println!(
        "data: {} training examples over the sites ({}), {} in the global test set; run folder {}",
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
        out.path().display(),
    );

    let initial = fed.spec.init_params(manifest.seed)?;
    let progress = progress::Progress::new(args.quiet, manifest.rounds);
    let secagg = SecAggSettings::from_manifest(&manifest);
    if let Some(settings) = &secagg {
        settings
            .check(initial.num_values())
            .map_err(|e| anyhow::anyhow!("[secure_aggregation]: {e}"))?;
    }
    let sites: Vec<Arc<dyn Site>> = fed
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| -> Result<Arc<dyn Site>> {
            let mut site: Arc<dyn Site> = Arc::new(s.clone());
            if let Some(p) = manifest
                .privacy
                .as_ref()
                .filter(|p| p.mechanism == PrivacyMechanism::DpSgd)
            {
                let dataset = manifest.data_label();
                let ledger = Ledger::open(&p.ledger, s.name(), &dataset, p.delta)?;
                site = Arc::new(BudgetedSite::new(
                    site,
                    &manifest.name,
                    RoundPrice::of(p, s.train_data().len()),
                    p.budgets[i],
                    ledger,
                ));
            }
            let site = match &secagg {
                // Simulation only: key material derives from the seed, so runs repeat exactly.
                Some(settings) => Arc::new(SecureSite::new(
                    site,
                    i as u32,
                    manifest.policy,
                    settings.clone(),
                    true,
                )),
                None => site,
            };
            Ok(progress.wrap(site))
        })
        .collect::<Result<_>>()?;
    let rules = manifest.round_rules();
    let federated_evaluation = rules.federated_evaluation;
    let evaluator = Arc::new(CentralTest {
        spec: fed.spec.clone(),
        data: fed.test.clone(),
    });
    let rule = aggregator(&manifest, fed.sites.len())?;
    let strategy = rule.name();
    let mut engine = RoundEngine::new(sites, rule, Some(evaluator), rules, initial.clone());
    if let Some(settings) = secagg {
        engine = engine
            .with_secure_aggregation(Box::new(SecAggCoordinator::new(settings, &manifest.sites)));
    }
    let mut observer = progress.observer(&out);
    // A run that stops (quorum lost, budgets spent) still leaves the model and summary of the
    // rounds it completed, then reports why it stopped.
    let stopped = engine.run(&mut observer).err();
    let records = observer.finish()?;
    let fed_seconds = started.elapsed().as_secs_f64();
    engine
        .global()
        .save(&out.path().join("model.safetensors"))
        .context("could not write the final model")?;
    if let Some(reason) = stopped {
        let summary = run_dir::Summary::new(
            &manifest,
            strategy,
            &records,
            &[],
            None,
            fed_seconds,
            started,
        );
        out.write_summary(&summary)?;
        println!(
            "\nthe federation stopped after {} completed rounds; their model and summary are in {}",
            records.len(),
            out.path().display()
        );
        return Err(anyhow::Error::new(reason).context("the federation stopped"));
    }

    let global = engine.global();
    let site_eval: Vec<(String, usize, Option<EvalMetrics>)> = fed
        .sites
        .par_iter()
        .map(|s| {
            // Not under a privacy budget: nothing is released about a site's own records.
            let own = (!s.test_data().is_empty() && federated_evaluation)
                .then(|| trainer::evaluate(&fed.spec, global, s.test_data(), 1000).ok())
                .flatten();
            (s.name().to_string(), s.train_data().len(), own)
        })
        .collect();
    let baseline = if args.baselines && manifest.privacy.is_some() {
        bail!(
            "--baselines would train on every site's records outside its privacy budget; \
             run the baselines on a copy of the manifest without [privacy]"
        );
    } else if args.baselines {
        Some(baselines::run(&fed, &manifest, &initial, &progress)?)
    } else {
        None
    };
    let summary = run_dir::Summary::new(
        &manifest,
        strategy,
        &records,
        &site_eval,
        baseline.as_ref(),
        fed_seconds,
        started,
    );
    out.write_summary(&summary)?;
    summary.print();
    println!("\nrun folder: {}", out.path().display());
    Ok(())
}

/// The aggregation rule: the manifest's strategy, or DP-FedAvg under central client-level DP.
/// Client-level DP, central or distributed, is checked against every site's budget before the
/// first round: a run that would exceed one does not start.
fn aggregator(manifest: &Manifest, num_sites: usize) -> Result<Box<dyn Aggregator>> {
    let Some(p) = manifest.privacy.as_ref() else {
        return Ok(aggregators::build(&manifest.strategy));
    };
    match p.mechanism {
        PrivacyMechanism::DpSgd => Ok(aggregators::build(&manifest.strategy)),
        // The sites add the noise before secure aggregation masks their updates; the strategy
        // only ever sees the noisy mean (post-processing). The accounting is the central one.
        PrivacyMechanism::Distributed => {
            charge_client_level(manifest, p, num_sites, "distributed")?;
            Ok(aggregators::build(&manifest.strategy))
        }
        PrivacyMechanism::ClientLevel => {
            charge_client_level(manifest, p, num_sites, "central")?;
            Ok(Box::new(DpFedAvg::new(
                p.clip,
                p.noise_multiplier,
                // Simulation only: the noise repeats with the seed. A real coordinator draws
                // it from the operating system.
                dp::noise_rng(selection::derive_seed(manifest.seed, 0, 600)),
            )))
        }
    }
}

/// Charges the whole run of client-level DP (`variant`: central or distributed) to every site's
/// ledger before round 1: each round is one step of the sampled Gaussian mechanism over sites,
/// with noise multiplier `privacy.noise_multiplier` and rate the share of sites selected.
fn charge_client_level(
    manifest: &Manifest,
    p: &PrivacySpec,
    num_sites: usize,
    variant: &str,
) -> Result<()> {
    let k = selection::sample_size(
        num_sites,
        manifest.selection.fraction,
        manifest.selection.min_sites,
    );
    let q = k as f64 / num_sites as f64;
    let rounds = u64::from(manifest.rounds);
    // Every site checks the whole run against its own ledger first, then all are charged
    // before the first round: privacy fails closed.
    let mut ledgers = Vec::with_capacity(num_sites);
    let mut worst: f64 = 0.0;
    for (site, budget) in manifest.sites.iter().zip(&p.budgets) {
        let ledger = Ledger::open(&p.ledger, site, &manifest.data_label(), p.delta)?;
        let spent = ledger.spent()?;
        let after = ledger.spent_after(q, p.noise_multiplier, rounds)?;
        if after > *budget {
            bail!(
                "refused before round 1: {} rounds of {variant} client-level DP (sampling rate \
                 {q:.3}, noise multiplier {}) would raise site `{site}`'s epsilon from {spent:.3} \
                 to {after:.3} at delta {}, over its budget of {budget}; raise \
                 privacy.noise_multiplier or lower training.rounds",
                manifest.rounds,
                p.noise_multiplier,
                p.delta
            );
        }
        worst = worst.max(after);
        ledgers.push(ledger);
    }
    for (ledger, budget) in ledgers.iter_mut().zip(&p.budgets) {
        // Re-checked under the ledger's lock, in case another run charged it meanwhile.
        ledger.charge_within(*budget, &manifest.name, 0, q, p.noise_multiplier, rounds)?;
    }
    println!(
        "{variant} client-level DP: after this run every site's data is protected at epsilon <= \
         {worst:.3}, delta {} ({} rounds charged to the sites' ledgers)",
        p.delta, manifest.rounds
    );
    Ok(())
}

fn describe(spec: &ModelSpec) -> String {
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
