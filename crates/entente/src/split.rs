//! `entente split`: gives each site of a manifest its own records, divided as `simulate`
//! divides the data set, so that a deployment can be tried on one machine with the shares a
//! simulation trains on. Real institutions already hold their own records.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use entente_core::manifest::{DataFormat, Manifest};
use entente_learn::data::write;
use entente_learn::simulation;

/// Arguments of `entente split`.
#[derive(Args)]
pub struct SplitArgs {
    /// The manifest whose data set and partition to use.
    manifest: PathBuf,
    /// Folder to write into: SITE/ (IDX training files) or SITE.csv per site; an existing
    /// folder must be empty, unless --overwrite.
    #[arg(long)]
    out: PathBuf,
    /// Write into --out even if it already holds files (a site's files are replaced).
    #[arg(long)]
    overwrite: bool,
    /// Read the data from this file or folder instead of the manifest's data.path.
    #[arg(long)]
    data: Option<PathBuf>,
}

/// Runs `entente split`.
pub fn run(args: SplitArgs) -> Result<()> {
    entente_simulation::out_dir::check(
        &args.out,
        args.overwrite,
        entente_simulation::out_dir::CLI,
    )?;
    let manifest = Manifest::load(&args.manifest)?;
    if let DataFormat::Csv {
        label_column,
        skip_rows,
        ..
    } = manifest.data.format
        && (skip_rows > 0 || !matches!(label_column, None | Some(-1)))
    {
        bail!(
            "entente split writes tables with the label last and no header; a manifest with \
             data.label_column or data.skip_rows would read its sites' files wrongly: split a copy \
             of it without those keys"
        );
    }
    let source = args.data.as_deref().unwrap_or(&manifest.data.path);
    let shares = simulation::site_shares(&manifest, args.data.as_deref())
        .context("could not divide the data set")?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("could not create {}", args.out.display()))?;
    let same_file = |p: &std::path::Path| matches!((p.canonicalize(), source.canonicalize()), (Ok(a), Ok(b)) if a == b || b.starts_with(&a));
    for site in &manifest.sites {
        let target = match manifest.data.format {
            DataFormat::Idx => args.out.join(site),
            DataFormat::Csv { .. } => args.out.join(format!("{site}.csv")),
        };
        if same_file(&target) {
            bail!(
                "{} is the data set being divided; choose another --out",
                target.display()
            );
        }
    }
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
