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
        crate::out_dir::check(out, args.overwrite)?;
    }
    let mut manifest = load_manifest(args.manifest.as_deref())?;
    if let Some(r) = args.rounds {
        if r == 0 {
            bail!("--rounds must be at least 1");
        }
        manifest.rounds = r;
    }
    let options = Options {
        out: args.out,
        baselines: args.baselines,
        quiet: args.quiet,
        eval_data: None,
        threads: None,
    };
    entente_simulation::run(
        &manifest,
        Trainers::Partitioned { data: args.data },
        &options,
    )?;
    Ok(())
}
