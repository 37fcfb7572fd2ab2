//! Small helpers shared by the store's queries: error mapping, checked integer
//! reads (the Any driver only has signed integers), and the clock.

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::any::AnyRow;

use super::StoreError;

/// Maps a sqlx error to [`StoreError::Query`] naming `what` was being done, or
/// to [`StoreError::Busy`] when SQLite reports another writer's lock.
pub(crate) fn query_err(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| {
        // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes. PostgreSQL
        // codes are five-character SQLSTATEs, so they never match.
        const SQLITE_BUSY: [&str; 6] = ["5", "261", "517", "773", "6", "262"];
        let busy = error
            .as_database_error()
            .and_then(|e| e.code())
            .is_some_and(|code| SQLITE_BUSY.contains(&code.as_ref()));
        if busy {
            StoreError::Busy { what }
        } else {
            StoreError::Query { what, error }
        }
    }
}

/// Reads a non-null integer column.
pub(crate) fn read_i64(row: &AnyRow, column: &str) -> Result<i64, StoreError> {
    row.try_get(column).map_err(|error| StoreError::Corrupt {
        what: format!("column `{column}` could not be read ({error})"),
    })
}

/// Reads a non-null, non-negative integer column.
pub(crate) fn read_u64(row: &AnyRow, column: &str) -> Result<u64, StoreError> {
    let value = read_i64(row, column)?;
    u64::try_from(value).map_err(|_| StoreError::Corrupt {
        what: format!("column `{column}` holds {value}, which is negative"),
    })
}

/// Reads a non-null integer column that must fit a `u32` (round numbers).
pub(crate) fn read_u32(row: &AnyRow, column: &str) -> Result<u32, StoreError> {
    let value = read_i64(row, column)?;
    u32::try_from(value).map_err(|_| StoreError::Corrupt {
        what: format!("column `{column}` holds {value}, which is not a round number"),
    })
}

/// Reads a nullable integer column that must fit a `u32` when present.
pub(crate) fn read_opt_u32(row: &AnyRow, column: &str) -> Result<Option<u32>, StoreError> {
    let value: Option<i64> = row.try_get(column).map_err(|error| StoreError::Corrupt {
        what: format!("column `{column}` could not be read ({error})"),
    })?;
    value
        .map(|v| {
            u32::try_from(v).map_err(|_| StoreError::Corrupt {
                what: format!("column `{column}` holds {v}, which is not a round number"),
            })
        })
        .transpose()
}

/// Milliseconds since the Unix epoch; 0 if the clock is set before 1970.
pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
