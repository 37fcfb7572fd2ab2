//! `entente report`: one self-contained HTML page of a simulation's run folder (charts of
//! accuracy and loss, what joining bought each site, who took part in which round, the
//! manifest), to open offline or archive with a paper.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// Arguments of `entente report`.
#[derive(Args)]
pub struct ReportArgs {
    /// The run folder of `entente simulate` (its --out).
    run_dir: PathBuf,
    /// File to write (default: RUN_DIR/report.html).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Runs `entente report`.
pub fn run(args: ReportArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let path = entente_report::write_report(&args.run_dir, args.out.as_deref())?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {} ({} KiB) in {:.2} s",
        path.display(),
        bytes.div_ceil(1024),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
