//! [`Ownership`]: a store belongs to one coordinator at a time.
//!
//! SQLite: an exclusive lock (`flock`) on the file `<database>.lock` beside the database, which
//! the operating system drops when the process ends, however it ends. The file stays behind
//! and holds the last owner's process id and host; it is locked only while a coordinator runs.
//! PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) held by a connection of
//! its own for the whole run, which the server drops when that connection ends.
//!
//! Taking the lock comes before anything else touches the store, so a second coordinator
//! neither migrates nor writes a thing. While the run goes on, [`Ownership::lost`] watches that
//! the store is still there and still this coordinator's.

use std::fs::{File, Metadata, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::{AnyConnection, Connection, Row};
use tokio::sync::Mutex;

use super::location::{Backend, Location};
use super::{Store, StoreError};

/// The advisory lock's key: the ASCII bytes of `entente1`. Advisory locks are per database,
/// and a database holds one store.
const ADVISORY_KEY: i64 = 0x656e_7465_6e74_6531;

/// How often [`Ownership::lost`] looks.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long a PostgreSQL advisory lock is tried for: the server drops the lock of a
/// coordinator that just died (even `kill -9`) once it sees the connection close, which can
/// take a moment.
const LOCK_PATIENCE: Duration = Duration::from_secs(5);

/// Proof that this process owns a store, held until [`Ownership::release`] (or drop).
pub struct Ownership {
    held: Held,
    /// The store, password redacted, for messages.
    url: String,
}

enum Held {
    /// The locked `<database>.lock`: the lock lasts as long as the file is open.
    File { watched: WatchedFile, _locked: File },
    /// The connection that holds the advisory lock.
    Postgres(Mutex<AnyConnection>),
    /// An in-memory SQLite database: no other process can open it.
    Nothing,
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Ownership {
    /// Takes the store at `location`, or says who holds it ([`StoreError::InUse`]).
    pub(crate) async fn take(location: &Location) -> Result<Ownership, StoreError> {
        let url = location.redacted();
        let held = match (location.backend, &location.file) {
            (Backend::Sqlite, None) => Held::Nothing,
            (Backend::Sqlite, Some(db)) => lock_file(db, &url)?,
            (Backend::Postgres, _) => advisory_lock(location).await?,
        };
        Ok(Ownership { held, url })
    }

    /// Whether the store is still this coordinator's: its lock file is the one it locked (a
    /// deleted one would let a second coordinator in), or its lock connection still answers.
    pub async fn check(&self) -> Result<(), StoreError> {
        let lost = |what: String| StoreError::Lost {
            url: self.url.clone(),
            what,
        };
        match &self.held {
            Held::File { watched, .. } => watched.check().map_err(lost),
            Held::Postgres(conn) => conn.lock().await.ping().await.map_err(|e| {
                lost(format!(
                    "the connection that holds its advisory lock failed ({e}), so another \
                     coordinator could take it"
                ))
            }),
            Held::Nothing => Ok(()),
        }
    }

    /// Resolves with the reason once `store` is lost: its database file deleted or replaced
    /// ([`Store::check_file`]), or this ownership gone ([`Ownership::check`]). Looks every
    /// second; never resolves while both hold.
    pub async fn lost(&self, store: &Store) -> StoreError {
        loop {
            tokio::time::sleep(CHECK_EVERY).await;
            if let Err(e) = store.check_file() {
                return e;
            }
            if let Err(e) = self.check().await {
                return e;
            }
        }
    }

    /// Gives the store up, so that another coordinator may take it.
    pub async fn release(self) {
        if let Held::Postgres(conn) = self.held {
            // Ending the session drops the lock; a connection already broken has lost it.
            let _ = conn.into_inner().close().await;
        }
    }
}

/// Refuses a SQLite database path that names anything but a regular file with one name. A
/// path not there yet is fine (the store is created).
pub(crate) fn check_database_file(db: &Path) -> Result<(), StoreError> {
    let Ok(meta) = std::fs::metadata(db) else {
        return Ok(());
    };
    entente_core::files::check_regular(db, &meta)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.nlink() > 1 {
            return Err(StoreError::HardLinked {
                path: db.to_path_buf(),
                links: meta.nlink(),
            });
        }
    }
    Ok(())
}

/// The database file's own path, symbolic links resolved, so that every name of a store leads
/// to one lock file.
fn canonical(db: &Path) -> PathBuf {
    if let Ok(real) = db.canonicalize() {
        return real;
    }
    match (db.parent(), db.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.canonicalize()
                .map_or_else(|_| db.to_path_buf(), |d| d.join(name))
        }
        _ => db.to_path_buf(),
    }
}

/// Locks `<db>.lock` (beside the file a symbolic link leads to) and writes this process into
/// it.
fn lock_file(db: &Path, url: &str) -> Result<Held, StoreError> {
    check_database_file(db)?;
    let db = canonical(db);
    let mut path = db.as_os_str().to_owned();
    path.push(".lock");
    let path = PathBuf::from(path);
    let failed = |error: std::io::Error| StoreError::LockFile {
        path: path.clone(),
        error,
    };
    // Not truncated before it is locked: its text names the coordinator that holds it.
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = (&file).take(512).read_to_string(&mut text);
            let holder = match text.trim() {
                "" => format!("it holds the lock on {}", path.display()),
                who => format!("{who}, which holds the lock on {}", path.display()),
            };
            return Err(StoreError::InUse {
                url: url.to_string(),
                holder,
            });
        }
        Err(TryLockError::Error(error)) => return Err(failed(error)),
    }
    file.set_len(0).map_err(failed)?;
    writeln!(file, "{}", this_process()).map_err(failed)?;
    file.sync_data().map_err(failed)?;
    let watched = WatchedFile::of(&path, &file.metadata().map_err(failed)?);
    Ok(Held::File {
        watched,
        _locked: file,
    })
}

/// Connects a session of its own and takes the advisory lock with it.
async fn advisory_lock(location: &Location) -> Result<Held, StoreError> {
    sqlx::any::install_default_drivers();
    let url = location.redacted();
    let mut conn = AnyConnection::connect(&location.url)
        .await
        .map_err(|error| StoreError::Connect {
            url: url.clone(),
            error,
        })?;
    let failed = super::db::query_err("taking the store's advisory lock");
    sqlx::query("SELECT set_config('application_name', $1, false)")
        .bind(this_process())
        .execute(&mut conn)
        .await
        .map_err(failed)?;
    let until = tokio::time::Instant::now() + LOCK_PATIENCE;
    loop {
        let failed = super::db::query_err("taking the store's advisory lock");
        let locked: bool = sqlx::query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind(ADVISORY_KEY)
            .fetch_one(&mut conn)
            .await
            .and_then(|row| row.try_get("locked"))
            .map_err(failed)?;
        if locked {
            return Ok(Held::Postgres(Mutex::new(conn)));
        }
        if tokio::time::Instant::now() >= until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let holder = lock_holder(&mut conn).await;
    let _ = conn.close().await;
    Err(StoreError::InUse { url, holder })
}

/// Who holds the advisory lock, as far as this user may see (`pg_stat_activity`).
async fn lock_holder(conn: &mut AnyConnection) -> String {
    let holder: Result<Option<String>, sqlx::Error> = sqlx::query(
        "SELECT format('%s, server process %s, connected since %s', \
                COALESCE(NULLIF(a.application_name, ''), 'a client'), a.pid, \
                date_trunc('second', a.backend_start)) AS holder \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND ((l.classid::bigint << 32) | l.objid::bigint) = $1 \
         LIMIT 1",
    )
    .bind(ADVISORY_KEY)
    .fetch_optional(&mut *conn)
    .await
    .and_then(|row| row.map(|r| r.try_get("holder")).transpose());
    let holder = match holder {
        Ok(Some(holder)) => format!("{holder}, which holds its advisory lock"),
        _ => "another session holds its advisory lock".into(),
    };
    format!(
        "{holder}; if that coordinator is gone and its session lingers, end the session with \
         pg_terminate_backend(PID)"
    )
}

/// This process, as a lock's holder: `entente coordinator, pid N on host H`.
fn this_process() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".into());
    format!("entente coordinator, pid {} on {host}", std::process::id())
}

/// A file that must stay where it was: the same file (device and inode on Unix) at the same
/// path.
#[derive(Debug)]
pub(crate) struct WatchedFile {
    path: PathBuf,
    id: FileId,
}

impl WatchedFile {
    /// The file at `path`, whose metadata is `meta`.
    pub(crate) fn of(path: &Path, meta: &Metadata) -> WatchedFile {
        WatchedFile {
            path: path.to_path_buf(),
            id: FileId::of(meta),
        }
    }

    /// The file at `path` now.
    pub(crate) fn at(path: &Path) -> std::io::Result<WatchedFile> {
        Ok(Self::of(path, &std::fs::metadata(path)?))
    }

    /// `Err(what happened)` if the path is gone or names another file now.
    pub(crate) fn check(&self) -> Result<(), String> {
        match std::fs::metadata(&self.path) {
            Ok(meta) if FileId::of(&meta) == self.id => Ok(()),
            Ok(_) => Err(format!(
                "{} was replaced by another file",
                self.path.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{} was deleted", self.path.display()))
            }
            Err(e) => Err(format!("{} cannot be read ({e})", self.path.display())),
        }
    }
}

/// What identifies a file: device and inode on Unix; elsewhere only that it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64);

impl FileId {
    #[cfg(unix)]
    fn of(meta: &Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId(meta.dev(), meta.ino())
    }

    #[cfg(not(unix))]
    fn of(_meta: &Metadata) -> FileId {
        FileId(0, 0)
    }
}
