//! `entente audit`: check the coordinator's hash-chained audit log, or list it. Both only read
//! the store: neither creates, migrates nor changes one.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use entente_coordinator::audit::{AnchorReport, AuditReport, check_heads, kind, verify_chain};
use entente_coordinator::store::Store;
use entente_core::audit_heads::read_records;
use entente_core::text::excerpt;

/// Arguments of `entente audit`.
#[derive(Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Walk the chain: every entry must hash to its recorded hash and name the one before;
    /// prints the newest entry's hash (the head), and checks the store against nodes' records.
    Verify(VerifyArgs),
    /// Print every entry.
    Show(Target),
}

/// Arguments of `entente audit verify`.
#[derive(Args)]
struct VerifyArgs {
    #[command(flatten)]
    target: Target,
    /// A node's record of the heads it was shown (`STEM.SITE.audit-heads.jsonl` beside its
    /// manifest): every recorded entry must still be in the store, with the same hash.
    /// Repeat for several nodes.
    #[arg(long, value_name = "RECORD")]
    against: Vec<PathBuf>,
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

/// `entente audit verify`: the chain, its head, then each node's record.
async fn verify(args: VerifyArgs) -> Result<()> {
    // Records are read first: a mistyped path fails before the store is touched.
    let records = args
        .against
        .iter()
        .map(|path| Ok((path, read_records(path)?)))
        .collect::<Result<Vec<_>>>()?;
    let store = args.target.open().await?;
    let entries = store.audit_entries().await?;
    match verify_chain(&entries) {
        AuditReport::Intact { entries: n } => {
            println!("audit log intact: {n} entries, every hash matches");
        }
        AuditReport::Broken { seq, reason } => {
            bail!("audit log broken at entry {seq}: {reason}")
        }
    }
    match entries.last() {
        Some(head) => println!("head: entry {} sha256 {}", head.seq, head.hash),
        None => println!("head: none (the log is empty)"),
    }
    let federations: std::collections::BTreeSet<String> = entries
        .iter()
        .filter(|e| e.kind == kind::RUN_STARTED)
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.detail).ok())
        .filter_map(|d| d["federation"].as_str().map(str::to_string))
        .collect();
    for (path, records) in records {
        if records.is_empty() {
            bail!(
                "{}: no heads recorded, so there is nothing to check the store against; give \
                 the record of a site that took part in a run",
                path.display()
            );
        }
        if let Some(other) = records
            .iter()
            .find(|r| !federations.contains(&r.federation))
        {
            bail!(
                "{}: a record of federation `{}`, but the store holds runs of {}: give the \
                 record of a site of this store's federation",
                path.display(),
                excerpt(&other.federation),
                if federations.is_empty() {
                    "no federation".to_string()
                } else {
                    federations
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
        let heads = records.iter().map(|r| &r.head);
        match check_heads(&entries, heads) {
            AnchorReport::Matches { heads, newest } => println!(
                "{}: all {heads} heads match{}",
                path.display(),
                newest.map_or_else(String::new, |s| format!(" (the newest: entry {s})"))
            ),
            AnchorReport::Missing { seq, entries } => bail!(
                "{}: the node was shown entry {seq}, but the store holds only {entries} entries: \
                 entries were deleted from the audit log",
                path.display()
            ),
            AnchorReport::Rewritten { seq, shown, stored } => bail!(
                "{}: the node was shown entry {seq} with hash {shown}, the store now holds {stored}: \
                 the audit log was rewritten at or before entry {seq}",
                path.display()
            ),
        }
    }
    Ok(())
}

/// Runs `entente audit`.
pub fn run(args: AuditArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    runtime.block_on(async {
        match args.command {
            AuditCommand::Verify(args) => verify(args).await,
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
