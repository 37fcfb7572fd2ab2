//! `entente join`: run an institution's node. It connects out to the coordinator, takes part
//! in every round the manifest allows, and stops when the run is finished. It prints a line
//! when it is ready, when the coordinator admits it, and for every task it answers.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use entente_core::manifest::Manifest;
use entente_node::agent::Corruption;
use entente_node::{NodeConfig, NodeReport, Trainer};
use entente_proto::tls::{self, KeyDir};

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
    /// The site's own records: this file or folder instead of its `[[sites]] data` or the
    /// manifest's data.path.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Stop after this many failed connection attempts in a row [default: keep trying].
    #[arg(long)]
    max_retries: Option<u32>,
    /// Where to keep the audit-log heads the coordinator shows with every task, for `entente
    /// audit verify --against` [default: beside the manifest, STEM.SITE.audit-heads.jsonl].
    #[arg(long)]
    audit_record: Option<PathBuf>,
    /// The manifest's signature file, checked against the federation CA before the node
    /// trains (`entente manifest sign`) [default: beside the manifest, STEM.signatures.toml].
    #[arg(long, value_name = "FILE")]
    signatures: Option<PathBuf>,
    /// The federation's revocation list: a coordinator whose certificate it revokes is
    /// refused [default: KEYS/revoked.crl; no file means nothing is revoked].
    #[arg(long, value_name = "FILE")]
    revocations: Option<PathBuf>,
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
    let site = args.site.clone().unwrap_or_default();
    if site.is_empty() && (args.cert.is_none() || args.key.is_none()) {
        anyhow::bail!("give --site NAME (keys under --keys), or --cert and --key");
    }
    if !site.is_empty() {
        // The name becomes part of a file path under --keys.
        tls::validate_site_name(&site)?;
    }
    let keys = KeyDir::new(&args.keys);
    let audit_record = match args.audit_record {
        Some(path) => path,
        None => {
            let named = match &args.cert {
                Some(cert) if site.is_empty() => {
                    let pem = std::fs::read(cert)
                        .with_context(|| format!("cannot read {}", cert.display()))?;
                    entente_node::leaf_site_name(&pem)?
                }
                _ => site.clone(),
            };
            entente_node::default_audit_record(&args.manifest, &named)
        }
    };
    let printed = Printed {
        coordinator: args.coordinator.clone(),
    };
    let config = NodeConfig {
        coordinator: args.coordinator,
        ca: args.ca.unwrap_or_else(|| keys.ca_cert()),
        cert: args.cert.unwrap_or_else(|| keys.site_cert(&site)),
        key: args.key.unwrap_or_else(|| keys.site_key(&site)),
        manifest,
        trainer: Trainer::Builtin { data: args.data },
        max_retries: args.max_retries,
        corrupt: args.corrupt_updates.map(|c| match c {
            CorruptArg::Nan => Corruption::Nan,
            CorruptArg::Shape => Corruption::Shape,
        }),
        audit_record: Some(audit_record),
        signatures: Some(
            args.signatures
                .unwrap_or_else(|| tls::signatures::signatures_path(&args.manifest)),
        ),
        revocations: Some(args.revocations.unwrap_or_else(|| keys.revocation_list())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let shutdown = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let rounds = runtime.block_on(entente_node::run_reporting(config, shutdown, &printed))?;
    println!("the run is finished after {rounds} rounds");
    Ok(())
}

/// What `entente join` prints as the run goes (the end is printed by [`run`]).
struct Printed {
    coordinator: String,
}

impl NodeReport for Printed {
    fn ready(&self, site: &str, examples: Option<usize>) {
        let held = examples.map_or_else(String::new, |n| format!(", {n} training examples"));
        println!(
            "entente join: site `{site}`{held}; connecting to {}",
            self.coordinator
        );
    }

    fn connected(&self, coordinator: &str, federation: &str) {
        println!("connected to {coordinator}: admitted to federation `{federation}`");
    }

    fn trained(&self, round: u32, examples: u64, loss: f64) {
        println!("round {round:>3}: trained on {examples} examples (loss {loss:.4}), update sent");
    }

    fn evaluated(&self, round: u32, accuracy: f64) {
        println!(
            "round {round:>3}: evaluated the model on this site's test split: {:.2}%",
            100.0 * accuracy
        );
    }

    fn refused(&self, round: u32, reason: &str) {
        println!("round {round:>3}: refused the task: {reason}");
    }
}
