//! The single-statement queries that the [`super::Store`] methods compose
//! inside their write transactions.

use sqlx::{AnyConnection, Row};

use super::db::{query_err, read_u32};
use super::{RunState, StoreError};
use crate::audit::{self, AuditEvent};

pub(super) type Tx = sqlx::Transaction<'static, sqlx::Any>;

pub(super) async fn commit(tx: Tx) -> Result<(), StoreError> {
    tx.commit()
        .await
        .map_err(query_err("committing a transaction"))
}

/// Appends an audit entry whose detail is `detail` serialized.
pub(super) async fn append(
    conn: &mut AnyConnection,
    kind: &str,
    run: i64,
    round: Option<u32>,
    site: Option<&str>,
    detail: &serde_json::Value,
    now: i64,
) -> Result<u64, StoreError> {
    let event = AuditEvent {
        kind: kind.to_string(),
        run: Some(run),
        round,
        site: site.map(str::to_string),
        detail: detail.to_string(),
    };
    audit::log::append(conn, &event, now).await
}

/// The run's `(total_rounds, finished)`, or [`StoreError::UnknownRun`].
pub(super) async fn run_row(conn: &mut AnyConnection, run: i64) -> Result<(u32, bool), StoreError> {
    let row = sqlx::query("SELECT total_rounds, finished_unix_ms FROM runs WHERE id = $1")
        .bind(run)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_err("reading the run"))?
        .ok_or(StoreError::UnknownRun { run })?;
    let finished: Option<i64> = row
        .try_get("finished_unix_ms")
        .map_err(query_err("reading the run"))?;
    Ok((read_u32(&row, "total_rounds")?, finished.is_some()))
}

/// The run's `total_rounds`, if it exists and is not finished.
pub(super) async fn open_run_rounds(conn: &mut AnyConnection, run: i64) -> Result<u32, StoreError> {
    match run_row(conn, run).await? {
        (_, true) => Err(StoreError::RunFinished { run }),
        (total_rounds, false) => Ok(total_rounds),
    }
}

/// `None` if the round was never started, `Some(None)` if started but not
/// completed, `Some(Some(ms))` if completed at `ms`.
pub(super) async fn round_completion(
    conn: &mut AnyConnection,
    run: i64,
    round: u32,
) -> Result<Option<Option<i64>>, StoreError> {
    let row = sqlx::query("SELECT completed_unix_ms FROM rounds WHERE run_id = $1 AND round = $2")
        .bind(run)
        .bind(i64::from(round))
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_err("reading the round"))?;
    row.map(|row| {
        row.try_get("completed_unix_ms")
            .map_err(query_err("reading the round"))
    })
    .transpose()
}

/// The run's state as of its last completed round (`resumed: true`).
pub(super) async fn last_completed(
    conn: &mut AnyConnection,
    run: i64,
) -> Result<RunState, StoreError> {
    let row = sqlx::query(
        "SELECT round, checkpoint_sha256, optimizer_sha256 FROM rounds \
         WHERE run_id = $1 AND completed_unix_ms IS NOT NULL ORDER BY round DESC LIMIT 1",
    )
    .bind(run)
    .fetch_optional(&mut *conn)
    .await
    .map_err(query_err("reading the last completed round"))?;
    let Some(row) = row else {
        return Ok(RunState {
            run,
            completed: 0,
            checkpoint: None,
            optimizer_state: None,
            resumed: true,
        });
    };
    Ok(RunState {
        run,
        completed: read_u32(&row, "round")?,
        checkpoint: row
            .try_get("checkpoint_sha256")
            .map_err(query_err("reading the last completed round"))?,
        optimizer_state: row
            .try_get("optimizer_sha256")
            .map_err(query_err("reading the last completed round"))?,
        resumed: true,
    })
}

/// Largest piece of a checkpoint in one row.
pub(super) const PIECE_BYTES: usize = 1 << 20;

/// Stores `bytes` under `sha256`, in pieces of at most [`PIECE_BYTES`], unless that digest is
/// already stored.
pub(super) async fn put_blob(
    conn: &mut AnyConnection,
    sha256: &str,
    bytes: &[u8],
    now: i64,
) -> Result<(), StoreError> {
    let size = i64::try_from(bytes.len()).map_err(|_| StoreError::TooLarge {
        what: "a checkpoint's size",
    })?;
    let inserted = sqlx::query(
        "INSERT INTO checkpoints (sha256, size_bytes, bytes, created_unix_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(sha256)
    .bind(size)
    .bind(&[][..])
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(query_err("storing a checkpoint"))?;
    if inserted.rows_affected() == 0 {
        return Ok(());
    }
    for (seq, piece) in (0i64..).zip(bytes.chunks(PIECE_BYTES)) {
        sqlx::query("INSERT INTO checkpoint_pieces (sha256, seq, bytes) VALUES ($1, $2, $3)")
            .bind(sha256)
            .bind(seq)
            .bind(piece)
            .execute(&mut *conn)
            .await
            .map_err(query_err("storing a checkpoint"))?;
    }
    Ok(())
}
