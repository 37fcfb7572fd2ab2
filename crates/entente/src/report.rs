//! `entente report`: one self-contained HTML page of a run (charts of accuracy and loss, what
//! joining bought each site, who took part in which round, privacy spent against each budget,
//! the manifest), to open offline or archive with a paper: a simulation's run folder, or a
//! deployment's store; `--png DIR` also writes each chart as a PNG file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use entente_coordinator::audit::privacy;
use entente_coordinator::store::{Store, StoreError, redact};
use entente_core::manifest::Manifest;
use entente_report::{RoundPrivacy, RunRecord, SitePrivacy};

/// Arguments of `entente report`.
#[derive(Args)]
pub struct ReportArgs {
    /// A run folder of `entente simulate` (its --out), or a deployment's manifest: then the
    /// newest run of that manifest in its store (beside it, or --database).
    run: PathBuf,
    /// A deployment's store (sqlite://PATH or postgres://...), with the manifest as RUN.
    #[arg(long)]
    database: Option<String>,
    /// File to write [default: RUN_DIR/report.html, or NAME.report.html beside the manifest].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write each chart as a PNG file into this folder (accuracy.png, loss.png, ...),
    /// for a paper; created if need be.
    #[arg(long, value_name = "DIR")]
    png: Option<PathBuf>,
}

/// Runs `entente report`.
pub fn run(args: ReportArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let (path, record) = if args.run.is_dir() {
        if args.database.is_some() {
            bail!("--database goes with a deployment's manifest, not with a run folder");
        }
        let record = RunRecord::read(&args.run)?;
        let path = args.out.unwrap_or_else(|| args.run.join("report.html"));
        entente_report::write_record(&record, &path)?;
        (path, record)
    } else {
        deployment(&args.run, args.database.as_deref(), args.out)?
    };
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({} KiB) in {:.3} s",
        path.display(),
        bytes.div_ceil(1024),
        started.elapsed().as_secs_f64()
    );
    if let Some(dir) = &args.png {
        let started = std::time::Instant::now();
        let written = entente_report::write_pngs(&record, dir)?;
        for file in &written {
            let bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
            println!("wrote {} ({} KiB)", file.display(), bytes.div_ceil(1024));
        }
        println!(
            "{} charts as PNG in {:.3} s",
            written.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The report of the newest run of `manifest_path` in its store; returns the file written and
/// the run. Privacy spent is what the run's `privacy_charged` audit entries add up to (the
/// sites' ledgers, with earlier runs, are their own).
fn deployment(
    manifest_path: &Path,
    database: Option<&str>,
    out: Option<PathBuf>,
) -> Result<(PathBuf, RunRecord)> {
    let manifest = Manifest::load(manifest_path).with_context(|| {
        format!(
            "{} is neither a run folder nor a manifest",
            manifest_path.display()
        )
    })?;
    let url = database.map_or_else(|| Store::sqlite_url_beside(manifest_path), str::to_string);
    let (rounds, audit) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?
        .block_on(async {
            let store = Store::open_read_only(&url).await?;
            let rounds = store
                .latest_run_rounds(&manifest.name, &manifest.agreement_digest())
                .await?;
            Ok::<_, StoreError>((rounds, store.audit_entries().await?))
        })
        .with_context(|| format!("reading the store {}", redact(&url)))?;
    let Some((run, rounds)) = rounds else {
        bail!(
            "the store {} holds no run of `{}` under this manifest (digest {}); check that it \
             is the manifest `entente serve` ran",
            redact(&url),
            manifest.name,
            manifest.agreement_digest()
        );
    };
    let source = format!("run {run} in {}", redact(&url));
    let mut record = RunRecord::from_round_records(&source, manifest.source.clone(), &rounds)?;
    if let Some(policy) = &manifest.privacy {
        let after = privacy::charged_after_each_round(&audit, run, policy.delta);
        for round in &mut record.rounds {
            let spent = after
                .range(..=round.round)
                .next_back()
                .map(|(_, spent)| spent);
            let sites = manifest.sites.iter().zip(&policy.budgets);
            round.privacy = Some(RoundPrivacy {
                delta: policy.delta,
                sites: sites
                    .map(|(site, &budget)| SitePrivacy {
                        site: site.clone(),
                        epsilon: spent.and_then(|s| s.get(site)).copied().unwrap_or(0.0),
                        budget,
                    })
                    .collect(),
            });
        }
    }
    let path = out
        .unwrap_or_else(|| manifest_path.with_file_name(format!("{}.report.html", manifest.name)));
    entente_report::write_record(&record, &path)?;
    Ok((path, record))
}
