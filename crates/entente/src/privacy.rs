//! `entente privacy`: what each site has spent of its privacy budget, from the sites' ledgers.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use entente_core::manifest::Manifest;
use entente_privacy::budget::Ledger;

/// Arguments of `entente privacy`.
#[derive(Args)]
pub struct PrivacyArgs {
    /// Manifest whose `[privacy]` table names the budgets and the ledger folder.
    manifest: PathBuf,
}

/// Runs `entente privacy`.
pub fn run(args: PrivacyArgs) -> Result<()> {
    let manifest = Manifest::load(&args.manifest)?;
    let Some(privacy) = &manifest.privacy else {
        bail!(
            "{} has no [privacy] table, so its sites keep no privacy ledger",
            args.manifest.display()
        );
    };
    let mut ledgers = Vec::new();
    if privacy.ledger.is_dir() {
        for entry in std::fs::read_dir(&privacy.ledger)
            .with_context(|| format!("could not list {}", privacy.ledger.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                match Ledger::load(&path) {
                    Ok(ledger) => ledgers.push(ledger),
                    Err(e) => eprintln!("warning: skipping {}: {e}", path.display()),
                }
            }
        }
    }
    println!(
        "privacy budgets of `{}` (ledgers in {}):",
        manifest.name,
        privacy.ledger.display()
    );
    println!(
        "{:<20} {:>8} {:>10} {:>10} {:>8}  data set",
        "site", "budget", "spent", "remaining", "rounds"
    );
    for (site, budget) in manifest.sites.iter().zip(&privacy.budgets) {
        let own: Vec<&Ledger> = ledgers.iter().filter(|l| l.site() == site).collect();
        if own.is_empty() {
            println!(
                "{site:<20} {budget:>8.3} {:>10.3} {budget:>10.3} {:>8}  (nothing spent yet)",
                0.0, 0
            );
        }
        for l in own {
            // Recomputed from the accountant's events, not read from the file's figures.
            let spent = l.spent()?;
            println!(
                "{site:<20} {budget:>8.3} {spent:>10.3} {:>10.3} {:>8}  {} (delta {})",
                (budget - spent).max(0.0),
                l.charges().len(),
                l.dataset(),
                l.delta()
            );
        }
    }
    Ok(())
}
