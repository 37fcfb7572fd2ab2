//! Reading and appending `audit_log` rows. Callers hold the store's writer lock
//! and pass an open transaction, so the tail read and the insert commit together.

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use super::{AuditEntry, AuditEvent, GENESIS_PREV_HASH, entry_hash};
use crate::store::StoreError;
use crate::store::db::{query_err, read_i64, read_opt_u32, read_u64};

/// Appends `event` as the entry after the current tail, inside the caller's
/// transaction, and returns its `seq`.
///
/// A concurrent writer that appended the same `seq` first makes the insert fail
/// on the primary key ([`StoreError::AuditConflict`]), so the chain never forks.
pub(crate) async fn append(
    conn: &mut AnyConnection,
    event: &AuditEvent,
    at_unix_ms: i64,
) -> Result<u64, StoreError> {
    if event.kind.is_empty() {
        return Err(StoreError::InvalidAuditEvent {
            problem: "its kind is empty".into(),
        });
    }
    if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(&event.detail) {
        return Err(StoreError::InvalidAuditEvent {
            problem: format!("its detail is not JSON ({error})"),
        });
    }

    let (seq, prev_hash) = match tail(&mut *conn).await? {
        None => (1, GENESIS_PREV_HASH.to_string()),
        Some((seq, hash)) => (seq + 1, hash),
    };

    let mut entry = AuditEntry {
        seq,
        at_unix_ms,
        kind: event.kind.clone(),
        run: event.run,
        round: event.round,
        site: event.site.clone(),
        detail: event.detail.clone(),
        prev_hash,
        hash: String::new(),
    };
    entry.hash = entry_hash(&entry);

    let seq_sql = i64::try_from(seq).map_err(|_| StoreError::Corrupt {
        what: "the audit log's sequence number overflowed".into(),
    })?;
    let inserted = sqlx::query(
        "INSERT INTO audit_log (seq, at_unix_ms, kind, run_id, round, site, detail, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(seq_sql)
    .bind(entry.at_unix_ms)
    .bind(&entry.kind)
    .bind(entry.run)
    .bind(entry.round.map(i64::from))
    .bind(&entry.site)
    .bind(&entry.detail)
    .bind(&entry.prev_hash)
    .bind(&entry.hash)
    .execute(&mut *conn)
    .await;
    match inserted {
        Ok(_) => Ok(seq),
        Err(error)
            if error
                .as_database_error()
                .is_some_and(|e| e.is_unique_violation()) =>
        {
            Err(StoreError::AuditConflict { seq })
        }
        Err(error) => Err(query_err("appending to the audit log")(error)),
    }
}

/// The newest entry's `seq` and `hash`, if the log has any.
pub(crate) async fn tail<'c, E>(executor: E) -> Result<Option<(u64, String)>, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row = sqlx::query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_optional(executor)
        .await
        .map_err(query_err("reading the audit log tail"))?;
    match row {
        None => Ok(None),
        Some(row) => {
            let hash: String = row
                .try_get("hash")
                .map_err(query_err("reading the audit log tail"))?;
            Ok(Some((read_u64(&row, "seq")?, hash)))
        }
    }
}

/// The columns of an entry, as [`entry_from_row`] reads them.
const SELECT_ENTRIES: &str =
    "SELECT seq, at_unix_ms, kind, run_id, round, site, detail, prev_hash, hash FROM audit_log";

/// Every entry, in `seq` order: unfiltered, so that a row with a `seq` below 1 (written past
/// the schema's check) breaks the walk instead of being skipped.
pub(crate) async fn entries(pool: &AnyPool) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = sqlx::query(&format!("{SELECT_ENTRIES} ORDER BY seq"))
        .fetch_all(pool)
        .await
        .map_err(query_err("reading the audit log"))?;
    rows.iter().map(entry_from_row).collect()
}

/// The entries from `seq` on, in `seq` order.
pub(crate) async fn entries_from(pool: &AnyPool, seq: u64) -> Result<Vec<AuditEntry>, StoreError> {
    // Past i64's range there is nothing to read.
    let from = i64::try_from(seq).unwrap_or(i64::MAX);
    let rows = sqlx::query(&format!("{SELECT_ENTRIES} WHERE seq >= $1 ORDER BY seq"))
        .bind(from)
        .fetch_all(pool)
        .await
        .map_err(query_err("reading the audit log"))?;
    rows.iter().map(entry_from_row).collect()
}

fn entry_from_row(row: &AnyRow) -> Result<AuditEntry, StoreError> {
    let text = |column: &str| -> Result<String, StoreError> {
        row.try_get(column)
            .map_err(query_err("reading the audit log"))
    };
    Ok(AuditEntry {
        seq: read_u64(row, "seq")?,
        at_unix_ms: read_i64(row, "at_unix_ms")?,
        kind: text("kind")?,
        run: row
            .try_get("run_id")
            .map_err(query_err("reading the audit log"))?,
        round: read_opt_u32(row, "round")?,
        site: row
            .try_get("site")
            .map_err(query_err("reading the audit log"))?,
        detail: text("detail")?,
        prev_hash: text("prev_hash")?,
        hash: text("hash")?,
    })
}
