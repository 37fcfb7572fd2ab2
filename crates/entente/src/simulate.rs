//! `entente simulate`: a whole federation in one process (see `entente-simulation`), with
//! optional local-only and centralized baselines.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use entente_core::manifest::Manifest;
use entente_simulation::{Options, Trainers};

/// The manifest `simulate` runs when given none.
const DEFAULT_MANIFEST: &str = include_str!("../../../examples/digits.toml");

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
    /// Run folder for the manifest, split, metrics, model and summary [default: runs/NAME-TIME];
    /// an existing folder must be empty, unless --overwrite.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write into --out even if it already holds files (files of the same name are replaced).
    #[arg(long)]
    overwrite: bool,
    /// Override the number of rounds.
    #[arg(long)]
    rounds: Option<u32>,
    /// Worker threads (results do not depend on it) [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
    /// Also log the run to this MLflow tracking server (http://HOST:PORT): the manifest as
    /// parameters, each round's figures, the final model as an artifact.
    #[arg(long, value_name = "URI")]
    mlflow: Option<String>,
    /// Serve a live dashboard of the run here (for example 127.0.0.1:8080) while it goes on.
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    /// Bearer token the dashboard requires; needed when --http is not a loopback address.
    #[arg(long, value_name = "TOKEN")]
    http_token: Option<String>,
    /// Report the first round whose global model reaches this test accuracy (0.85 or 85%).
    #[arg(long, value_name = "A", value_parser = parse_accuracy)]
    target_accuracy: Option<f64>,
}

/// An accuracy as a share (`0.85`) or a percentage (`85%`), in [0, 1].
fn parse_accuracy(text: &str) -> Result<f64, String> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (text, 1.0),
    };
    let value = number
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("`{text}` is not a number; write 0.85 or 85%"))?
        / scale;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("`{text}` is outside 0 to 1 (0% to 100%)"))
    }
}

fn load_manifest(path: Option<&Path>) -> Result<Manifest> {
    Ok(match path {
        Some(p) => Manifest::load(p)?,
        None => Manifest::parse(DEFAULT_MANIFEST, "<embedded digits demo>", Path::new("."))?,
    })
}

/// Most worker threads `--threads` may ask for.
const MAX_THREADS: usize = 1024;

/// Runs `entente simulate`.
pub fn run(args: SimulateArgs) -> Result<()> {
    if let Some(n) = args.threads {
        if n == 0 || n > MAX_THREADS {
            bail!("--threads must be between 1 and {MAX_THREADS}");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("could not start the worker threads")?;
    }
    if let Some(out) = &args.out {
        entente_simulation::out_dir::check(out, args.overwrite, entente_simulation::out_dir::CLI)?;
    }
    let mut manifest = load_manifest(args.manifest.as_deref())?;
    if let Some(r) = args.rounds {
        manifest.override_rounds(r, "--rounds")?;
    }
    let options = Options {
        out: args.out,
        baselines: args.baselines,
        quiet: args.quiet,
        eval_data: None,
        threads: None,
        mlflow: args.mlflow,
        http: args.http,
        http_token: args.http_token,
        target_accuracy: args.target_accuracy,
    };
    entente_simulation::run(
        &manifest,
        Trainers::Partitioned { data: args.data },
        &options,
    )?;
    Ok(())
}
