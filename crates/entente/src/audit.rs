//! `entente audit`: check the coordinator's hash-chained audit log, or list it. Both only read
//! the store: neither creates, migrates nor changes one.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use entente_coordinator::audit::AuditReport;
use entente_coordinator::store::Store;

/// Arguments of `entente audit`.
#[derive(Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the chain: every entry must hash to its recorded hash and name the one before.
    Verify(Target),
    /// Print every entry.
    Show(Target),
}

/// Which store to read.
#[derive(Args)]
struct Target {
    /// The manifest whose default store (beside it) to read.
    manifest: Option<PathBuf>,
    /// The store: sqlite://PATH or postgres://...
    #[arg(long)]
    database: Option<String>,
}

impl Target {
    /// Opens the store for reading; a missing SQLite file is an error, never a new store.
    async fn open(&self) -> Result<Store> {
        match (&self.database, &self.manifest) {
            (Some(url), _) => Ok(Store::open_read_only(url).await?),
            (None, Some(m)) => Store::open_read_only(&Store::sqlite_url_beside(m))
                .await
                .with_context(|| {
                    format!(
                        "the default store of {} (run `entente serve` with it first, or give \
                         --database URL)",
                        m.display()
                    )
                }),
            (None, None) => bail!("give the manifest or --database URL"),
        }
    }
}

/// Runs `entente audit`.
pub fn run(args: AuditArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async {
        match args.command {
            AuditCommand::Verify(target) => {
                let store = target.open().await?;
                match store.verify_audit().await? {
                    AuditReport::Intact { entries } => {
                        println!("audit log intact: {entries} entries, every hash matches");
                        Ok(())
                    }
                    AuditReport::Broken { seq, reason } => {
                        bail!("audit log broken at entry {seq}: {reason}")
                    }
                }
            }
            AuditCommand::Show(target) => {
                let store = target.open().await?;
                for e in store.audit_entries().await? {
                    println!(
                        "{:>6}  {}  {:<16} run {:<4} round {:<4} site {:<12} {}",
                        e.seq,
                        e.at_unix_ms,
                        e.kind,
                        e.run.map_or("-".into(), |r| r.to_string()),
                        e.round.map_or("-".into(), |r| r.to_string()),
                        e.site.as_deref().unwrap_or("-"),
                        e.detail
                    );
                }
                Ok(())
            }
        }
    })
}
