//! `entente split`: gives each site of a manifest its own records, divided as `simulate`
//! divides the data set, so that a deployment can be tried on one machine with the shares a
//! simulation trains on. Real institutions already hold their own records.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use entente_core::manifest::{DataFormat, Manifest};
use entente_learn::data::write;
use entente_learn::simulation;

/// Arguments of `entente split`.
#[derive(Args)]
pub struct SplitArgs {
    /// The manifest whose data set and partition to use.
    manifest: PathBuf,
    /// Folder to write into: SITE/ (IDX training files) or SITE.csv per site.
    #[arg(long)]
    out: PathBuf,
    /// Read the data from this file or folder instead of the manifest's data.path.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// Runs `entente split`.
pub fn run(args: SplitArgs) -> Result<()> {
    let manifest = Manifest::load(&args.manifest)?;
    let shares = simulation::site_shares(&manifest, args.data.as_deref())
        .context("could not divide the data set")?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("could not create {}", args.out.display()))?;
    for (site, share) in manifest.sites.iter().zip(&shares) {
        let path = match manifest.data.format {
            DataFormat::Idx => {
                let dir = args.out.join(site);
                write::write_idx_train(&dir, share)?;
                dir
            }
            DataFormat::Csv { .. } => {
                let file = args.out.join(format!("{site}.csv"));
                write::write_csv(&file, share)?;
                file
            }
        };
        println!(
            "{site}: {} records -> {}   ([[sites]] data = \"{}\")",
            share.len(),
            path.display(),
            path.display()
        );
    }
    Ok(())
}
