//! `entente join`: run an institution's node. It connects out to the coordinator, takes part
//! in every round the manifest allows, and stops when the run is finished.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use entente_core::manifest::Manifest;
use entente_node::NodeConfig;
use entente_node::agent::Corruption;

/// Arguments of `entente join`.
#[derive(Args)]
pub struct JoinArgs {
    /// The manifest this site agreed to (its own copy).
    manifest: PathBuf,
    /// The coordinator, as https://HOST:PORT.
    #[arg(long)]
    coordinator: String,
    /// The site's name; its certificate and key are read from DIR/sites/SITE.pem and .key.
    #[arg(long)]
    site: Option<String>,
    /// Folder holding ca.pem and sites/.
    #[arg(long, default_value = "keys")]
    keys: PathBuf,
    /// The federation CA certificate [default: KEYS/ca.pem].
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The site certificate [default: KEYS/sites/SITE.pem].
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The site key [default: KEYS/sites/SITE.key].
    #[arg(long)]
    key: Option<PathBuf>,
    /// Read the data from this file or folder instead of the manifest's data.path.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Stop after this many failed connection attempts in a row [default: keep trying].
    #[arg(long)]
    max_retries: Option<u32>,
    /// Fault injection for tests: corrupt every update.
    #[arg(long, hide = true, value_enum)]
    corrupt_updates: Option<CorruptArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum CorruptArg {
    Nan,
    Shape,
}

/// Runs `entente join`.
pub fn run(args: JoinArgs) -> Result<()> {
    let manifest = Manifest::load(&args.manifest)?;
    let pick = |given: Option<PathBuf>, default: PathBuf| given.unwrap_or(default);
    let site = args.site.clone().unwrap_or_default();
    if site.is_empty() && (args.cert.is_none() || args.key.is_none()) {
        anyhow::bail!("give --site NAME (keys under --keys), or --cert and --key");
    }
    let config = NodeConfig {
        coordinator: args.coordinator,
        ca: pick(args.ca, args.keys.join("ca.pem")),
        cert: pick(
            args.cert,
            args.keys.join("sites").join(format!("{site}.pem")),
        ),
        key: pick(
            args.key,
            args.keys.join("sites").join(format!("{site}.key")),
        ),
        manifest,
        data: args.data,
        max_retries: args.max_retries,
        corrupt: args.corrupt_updates.map(|c| match c {
            CorruptArg::Nan => Corruption::Nan,
            CorruptArg::Shape => Corruption::Shape,
        }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let rounds = runtime.block_on(entente_node::run(config))?;
    println!("the run is finished after {rounds} rounds");
    Ok(())
}
