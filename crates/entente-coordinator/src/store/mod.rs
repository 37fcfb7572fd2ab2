//! The coordinator's durable state: runs, rounds, participants, checkpoints and
//! the audit log, in SQLite (the default; the file is created on first use) or
//! PostgreSQL (a `postgres://` URL).
//!
//! One code path serves both through sqlx's `Any` driver. Each backend has its
//! own versioned migrations (`migrations/sqlite`, `migrations/postgres`, embedded
//! at build time), applied on [`Store::open`]; their column types are chosen so
//! that `Any` decodes them the same way. Queries use `$1` placeholders, which
//! both backends accept.
//!
//! Writes are serialized by one lock per [`Store`] (clones share it). Each write
//! is one transaction that also appends its audit entries, so a round's result
//! and its audit trail are committed together or not at all. A store belongs to
//! one coordinator: [`Store::open_owned`] takes it (see [`Ownership`]) and
//! refuses a second one. Should a second writer get in anyway (through
//! [`Store::open`], which takes no lock), the audit chain still cannot fork: its
//! `seq` is the primary key, so a PostgreSQL writer that read the same tail fails
//! on the insert ([`StoreError::AuditConflict`]), and SQLite write transactions
//! take the file's write lock up front (waiting up to the 5 s busy timeout, then
//! [`StoreError::Busy`]). [`Store::open_read_only`] never creates, migrates or
//! writes a store.
//!
//! A SQLite store is the database file and, while it is open, its write-ahead log
//! (`-wal`) and shared-memory index (`-shm`) beside it; [`Store::checkpoint_wal`]
//! moves everything into the database file, so a copy of that file alone holds
//! the store. Every write first checks that the database file is still the one
//! that was opened ([`Store::check_file`]): nothing is written into a file that
//! was deleted or replaced.
//!
//! Checkpoints (safetensors bytes) and server-optimizer states share one
//! content-addressed table keyed by SHA-256 hex, their bytes in pieces of at most
//! 1 MiB (so no value, and no copy the drivers make, is as large as the model);
//! identical bytes are stored once and [`Store::checkpoint`] re-hashes what it
//! reads.

mod connect;
pub(crate) mod db;
mod error;
mod head_cache;
mod location;
mod ownership;
mod queries;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use entente_core::audit_heads::AuditHead;
use entente_core::engine::ErrorKind;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Connection, Row};
use tokio::sync::Mutex;
use tokio_stream::StreamExt;

use crate::audit::{self, AuditEntry, AuditEvent, AuditReport, kind, sha256_hex};
use db::{now_unix_ms, query_err, read_i64, read_u32};
pub use error::StoreError;
pub use location::redact;
use location::{Backend, Location, sqlite_url_for_path};
pub use ownership::Ownership;
use ownership::WatchedFile;
use queries::{
    Tx, append, commit, last_completed, open_run_rounds, put_blob, round_completion, run_row,
};

/// Most bytes reserved up front for reading a checkpoint back.
const MAX_RESERVE: usize = 1 << 30;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// A handle on the coordinator's database. Cheap to clone; clones share the
/// connection pool and the writer lock.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Which migrations apply, and how the URL is shown.
    location: Arc<Location>,
    /// Held for the whole of every write transaction, so that audit appends
    /// from this process never compete for the same `seq`.
    writer: Arc<Mutex<()>>,
    /// The audit log's head as last read, dropped at every write of this store.
    head: Arc<head_cache::HeadCache>,
    /// The SQLite database file as it was opened, checked before every write.
    file: Option<Arc<WatchedFile>>,
    /// Opened by [`Store::open_read_only`]: every write is refused.
    read_only: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.location.redacted())
            .finish_non_exhaustive()
    }
}

/// A site's verified signature of a run's manifest digest, as the run's first audit entry
/// records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSignature {
    /// The signing site.
    pub site: String,
    /// The signature algorithm (`ecdsa-p256-sha256`).
    pub algorithm: String,
    /// The signature, hex.
    pub signature: String,
}

/// Where a run stands, as returned by [`Store::open_run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunState {
    /// The run's id, for every later call.
    pub run: i64,
    /// The last completed round, 0 if none; the next round is `completed + 1`.
    pub completed: u32,
    /// SHA-256 of the global model after round `completed`, if any round completed.
    pub checkpoint: Option<String>,
    /// SHA-256 of the server-optimizer state after round `completed`, if one was stored.
    pub optimizer_state: Option<String>,
    /// True if an unfinished run was picked up, false if a new run began.
    pub resumed: bool,
}

/// The result of one round, for [`Store::round_finished`].
#[derive(Clone, Copy)]
pub struct FinishedRound<'a> {
    /// The round number (1-based).
    pub round: u32,
    /// Every site that sent an update, accepted or not; each site once.
    pub participants: &'a [Participant],
    /// Round metrics as a JSON document.
    pub metrics_json: &'a str,
    /// The new global model, as safetensors bytes.
    pub checkpoint: &'a [u8],
    /// The server optimizer's state after the round, if it has one.
    pub optimizer_state: Option<&'a [u8]>,
}

/// Shows the sizes of the model and optimizer bytes, not the bytes.
impl std::fmt::Debug for FinishedRound<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FinishedRound")
            .field("round", &self.round)
            .field("participants", &self.participants)
            .field("metrics_json", &self.metrics_json)
            .field("checkpoint_bytes", &self.checkpoint.len())
            .field(
                "optimizer_state_bytes",
                &self.optimizer_state.map(<[u8]>::len),
            )
            .finish()
    }
}

/// What happened to one site's update in a round.
#[derive(Clone, Debug, PartialEq)]
pub struct Participant {
    /// The site's id.
    pub site: String,
    /// Whether the update went into the aggregate.
    pub accepted: bool,
    /// Why it was excluded (or any note on acceptance).
    pub reason: Option<String>,
    /// Which kind of failure excluded it; `None` for an accepted update.
    pub kind: Option<ErrorKind>,
    /// Training examples the site reported.
    pub examples: u64,
    /// Training loss the site reported; a non-finite loss is stored as NULL.
    pub loss: f64,
}

impl Store {
    /// Opens (and migrates) the database at `url`: `sqlite://PATH` (created if
    /// missing, journal in WAL mode), `postgres://USER:PASSWORD@HOST:PORT/DB`,
    /// or a bare file path, which means SQLite. Migrations already applied are
    /// not applied again. Takes no lock: a coordinator opens its store with
    /// [`Store::open_owned`].
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Self::open_at(Location::parse(url)?).await
    }

    /// [`Store::open`], for the one coordinator that may write to the store: first takes it
    /// ([`Ownership`]), so that a second coordinator on the same store is refused
    /// ([`StoreError::InUse`], naming who holds it) before it changes anything.
    pub async fn open_owned(url: &str) -> Result<(Store, Ownership), StoreError> {
        let location = Location::parse(url)?;
        if location.backend == Backend::Postgres {
            // Says at once what the server answered, before the lock's own connection waits.
            connect::probe(&location).await?;
        }
        let ownership = Ownership::take(&location).await?;
        let store = Self::open_at(location).await?;
        Ok((store, ownership))
    }

    /// Opens an existing store for reading only: never creates a database (a missing SQLite
    /// file is [`StoreError::Missing`]), applies no migration and refuses every write. A
    /// database without an audit log is [`StoreError::NotAStore`].
    pub async fn open_read_only(url: &str) -> Result<Store, StoreError> {
        let location = Location::parse(url)?.read_only();
        if let Some(file) = &location.file
            && !file.exists()
        {
            return Err(StoreError::Missing { path: file.clone() });
        }
        if let Some(file) = &location.file {
            ownership::check_database_file(file)?;
        }
        let pool = Self::pool(&location, &location.url).await?;
        if let Err(error) = sqlx::query("SELECT COUNT(*) FROM audit_log")
            .fetch_one(&pool)
            .await
        {
            return Err(StoreError::NotAStore {
                url: location.redacted(),
                error,
            });
        }
        Ok(Store {
            pool,
            location: Arc::new(location),
            writer: Arc::new(Mutex::new(())),
            head: Arc::default(),
            file: None,
            read_only: true,
        })
    }

    async fn open_at(location: Location) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let connect_err = |error| StoreError::Connect {
            url: location.redacted(),
            error,
        };
        // SQLite: the file is created here, once; the pool's connections never create it.
        if location.file.is_some() {
            AnyConnection::connect(&location.url)
                .await
                .map_err(connect_err)?
                .close()
                .await
                .map_err(connect_err)?;
        }
        let pool = Self::pool(&location, &location.existing_url()).await?;
        let migrator = match location.backend {
            Backend::Sqlite => {
                // Persistent in the file; later connections inherit it.
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&pool)
                    .await
                    .map_err(query_err("switching SQLite to WAL mode"))?;
                &SQLITE_MIGRATIONS
            }
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|error| StoreError::Migrate { error })?;
        let file = match &location.file {
            Some(path) => Some(Arc::new(WatchedFile::at(path).map_err(|e| {
                StoreError::Lost {
                    url: location.redacted(),
                    what: format!("{} cannot be read ({e})", path.display()),
                }
            })?)),
            None => None,
        };
        tracing::debug!(url = %location.redacted(), "store opened");
        Ok(Store {
            pool,
            location: Arc::new(location),
            writer: Arc::new(Mutex::new(())),
            head: Arc::default(),
            file,
            read_only: false,
        })
    }

    /// A connection pool on `url` (a form of `location`'s).
    async fn pool(location: &Location, url: &str) -> Result<AnyPool, StoreError> {
        sqlx::any::install_default_drivers();
        if location.backend == Backend::Postgres {
            connect::probe(location).await?;
        }
        let max_connections = match location.backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 8,
        };
        AnyPoolOptions::new()
            .max_connections(max_connections)
            .connect(url)
            .await
            .map_err(|error| StoreError::Connect {
                url: location.redacted(),
                error,
            })
    }

    /// Checks that a SQLite store's database file is still the one that was opened (not
    /// deleted, not replaced): [`StoreError::Lost`] if not. Always `Ok` for PostgreSQL.
    pub fn check_file(&self) -> Result<(), StoreError> {
        match &self.file {
            Some(file) => file.check().map_err(|what| StoreError::Lost {
                url: self.location.redacted(),
                what,
            }),
            None => Ok(()),
        }
    }

    /// SQLite: copies every committed transaction from the write-ahead log into the database
    /// file and empties the log, so that the database file alone holds the whole store (a
    /// copy of it is a backup). PostgreSQL, or a store opened read-only: nothing to do.
    pub async fn checkpoint_wal(&self) -> Result<(), StoreError> {
        if self.location.backend != Backend::Sqlite || self.read_only {
            return Ok(());
        }
        let _writer = self.writer.lock().await;
        self.check_file()?;
        let what = "checkpointing the write-ahead log";
        let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await
            .map_err(query_err(what))?;
        // (busy, frames in the log, frames checkpointed); busy: a reader kept it from finishing.
        let busy: i64 = row.try_get(0).map_err(query_err(what))?;
        if busy != 0 {
            return Err(StoreError::Busy { what });
        }
        Ok(())
    }

    /// The default database for a federation manifest: the SQLite file
    /// `<manifest dir>/<manifest stem>.entente.db`, as a `sqlite://` URL with an
    /// absolute path.
    pub fn sqlite_url_beside(manifest: &Path) -> String {
        sqlite_url_for_path(&Self::sqlite_path_beside(manifest))
    }

    /// The file of [`Store::sqlite_url_beside`].
    pub fn sqlite_path_beside(manifest: &Path) -> PathBuf {
        let dir = manifest
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let stem = manifest
            .file_stem()
            .map_or("entente".into(), |s| s.to_string_lossy());
        dir.join(format!("{stem}.entente.db"))
    }

    /// The unfinished run of this federation with this manifest digest, or a
    /// new one. [`RunState`] says where to resume. Finished runs are never
    /// resumed. Appends `run_resumed` or `run_started` to the audit log.
    pub async fn open_run(
        &self,
        federation: &str,
        manifest_sha256: &str,
        total_rounds: u32,
    ) -> Result<RunState, StoreError> {
        self.open_run_signed(federation, manifest_sha256, total_rounds, &[])
            .await
    }

    /// [`Store::open_run`] for a manifest that sites signed: the `run_started` or
    /// `run_resumed` entry also records each verified signature of the digest
    /// `manifest_sha256` (`"signatures": [{"site", "algorithm", "signature"}]`, when
    /// there is any).
    pub async fn open_run_signed(
        &self,
        federation: &str,
        manifest_sha256: &str,
        total_rounds: u32,
        signatures: &[RunSignature],
    ) -> Result<RunState, StoreError> {
        let signed = (!signatures.is_empty()).then(|| {
            signatures
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "site": s.site,
                        "algorithm": s.algorithm,
                        "signature": s.signature,
                    })
                })
                .collect::<Vec<_>>()
        });
        let _writer = self.writer.lock().await;
        let now = now_unix_ms();
        let mut tx = self.begin().await?;
        let existing = sqlx::query(
            "SELECT id, total_rounds FROM runs \
             WHERE federation = $1 AND manifest_sha256 = $2 AND finished_unix_ms IS NULL \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(federation)
        .bind(manifest_sha256)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query_err("looking up an unfinished run"))?;

        let state = match existing {
            Some(row) => {
                let run = db::read_i64(&row, "id")?;
                let stored = read_u32(&row, "total_rounds")?;
                if stored != total_rounds {
                    return Err(StoreError::TotalRoundsChanged {
                        run,
                        stored,
                        requested: total_rounds,
                    });
                }
                let state = last_completed(&mut tx, run).await?;
                let mut detail = serde_json::json!({ "completed": state.completed });
                if let Some(signed) = &signed {
                    detail["manifest_sha256"] = manifest_sha256.into();
                    detail["signatures"] = signed.clone().into();
                }
                append(&mut tx, kind::RUN_RESUMED, run, None, None, &detail, now).await?;
                state
            }
            None => {
                let row = sqlx::query(
                    "INSERT INTO runs (federation, manifest_sha256, total_rounds, started_unix_ms) \
                     VALUES ($1, $2, $3, $4) RETURNING id",
                )
                .bind(federation)
                .bind(manifest_sha256)
                .bind(i64::from(total_rounds))
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(query_err("starting a run"))?;
                let run = db::read_i64(&row, "id")?;
                let mut detail = serde_json::json!({
                    "federation": federation,
                    "manifest_sha256": manifest_sha256,
                    "total_rounds": total_rounds,
                });
                if let Some(signed) = signed {
                    detail["signatures"] = signed.into();
                }
                append(&mut tx, kind::RUN_STARTED, run, None, None, &detail, now).await?;
                RunState {
                    run,
                    completed: 0,
                    checkpoint: None,
                    optimizer_state: None,
                    resumed: false,
                }
            }
        };
        self.commit(tx).await?;
        Ok(state)
    }

    /// Records that `round` began with the `selected` sites, and appends
    /// `round_started`. The round must be the next one (last completed + 1);
    /// starting it again before it finishes (after a restart) replaces the
    /// selection.
    pub async fn round_started(
        &self,
        run: i64,
        round: u32,
        selected: &[String],
    ) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let now = now_unix_ms();
        let mut tx = self.begin().await?;
        let total_rounds = open_run_rounds(&mut tx, run).await?;
        if round == 0 || round > total_rounds {
            return Err(StoreError::RoundOutOfRange {
                run,
                round,
                total_rounds,
            });
        }
        let next = last_completed(&mut tx, run).await?.completed + 1;
        let started = round_completion(&mut tx, run, round).await?;
        if round != next {
            return Err(match started {
                Some(Some(_)) => StoreError::RoundAlreadyFinished { run, round },
                _ => StoreError::RoundOutOfOrder { run, round, next },
            });
        }
        let selected_json = serde_json::json!(selected).to_string();
        let sql = if started.is_some() {
            "UPDATE rounds SET selected = $3, started_unix_ms = $4 WHERE run_id = $1 AND round = $2"
        } else {
            "INSERT INTO rounds (run_id, round, selected, started_unix_ms) VALUES ($1, $2, $3, $4)"
        };
        sqlx::query(sql)
            .bind(run)
            .bind(i64::from(round))
            .bind(&selected_json)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_err("recording the start of a round"))?;
        let detail = serde_json::json!({ "selected": selected });
        append(
            &mut tx,
            kind::ROUND_STARTED,
            run,
            Some(round),
            None,
            &detail,
            now,
        )
        .await?;
        self.commit(tx).await
    }

    /// Records a round's result in one transaction: the round row is marked
    /// completed with its metrics; one participant row per site; the
    /// checkpoint (stored if its bytes are new) and the optional optimizer
    /// state; and audit entries `update_accepted`/`update_rejected` per site,
    /// `checkpoint` and `round_finished`. Returns the checkpoint's SHA-256.
    ///
    /// A round is applied once: finishing an already finished round is
    /// [`StoreError::RoundAlreadyFinished`] and changes nothing.
    pub async fn round_finished(
        &self,
        run: i64,
        done: &FinishedRound<'_>,
    ) -> Result<String, StoreError> {
        let round = done.round;
        let metrics: serde_json::Value = serde_json::from_str(done.metrics_json)
            .map_err(|error| StoreError::InvalidMetrics { round, error })?;
        for (i, p) in done.participants.iter().enumerate() {
            if done.participants[..i].iter().any(|q| q.site == p.site) {
                return Err(StoreError::DuplicateParticipant {
                    run,
                    round,
                    site: p.site.clone(),
                });
            }
        }
        let checkpoint_sha = sha256_hex(done.checkpoint);
        let optimizer_sha = done.optimizer_state.map(sha256_hex);

        let _writer = self.writer.lock().await;
        let now = now_unix_ms();
        let mut tx = self.begin().await?;
        open_run_rounds(&mut tx, run).await?;
        match round_completion(&mut tx, run, round).await? {
            None => return Err(StoreError::RoundNotStarted { run, round }),
            Some(Some(_)) => return Err(StoreError::RoundAlreadyFinished { run, round }),
            Some(None) => {}
        }

        put_blob(&mut tx, &checkpoint_sha, done.checkpoint, now).await?;
        if let (Some(sha), Some(bytes)) = (&optimizer_sha, done.optimizer_state) {
            put_blob(&mut tx, sha, bytes, now).await?;
        }
        let updated = sqlx::query(
            "UPDATE rounds SET completed_unix_ms = $1, metrics = $2, checkpoint_sha256 = $3, \
             optimizer_sha256 = $4 \
             WHERE run_id = $5 AND round = $6 AND completed_unix_ms IS NULL",
        )
        .bind(now)
        .bind(done.metrics_json)
        .bind(&checkpoint_sha)
        .bind(&optimizer_sha)
        .bind(run)
        .bind(i64::from(round))
        .execute(&mut *tx)
        .await
        .map_err(query_err("marking the round completed"))?;
        if updated.rows_affected() != 1 {
            // Another process finished it between our check and the update.
            return Err(StoreError::RoundAlreadyFinished { run, round });
        }

        for p in done.participants {
            let examples = i64::try_from(p.examples).map_err(|_| StoreError::TooLarge {
                what: "a participant's example count",
            })?;
            let loss = p.loss.is_finite().then_some(p.loss);
            sqlx::query(
                "INSERT INTO participants \
                 (run_id, round, site, accepted, reason, examples, loss, kind) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(run)
            .bind(i64::from(round))
            .bind(&p.site)
            .bind(i64::from(p.accepted))
            .bind(&p.reason)
            .bind(examples)
            .bind(loss)
            .bind(p.kind.map(ErrorKind::as_str))
            .execute(&mut *tx)
            .await
            .map_err(query_err("recording a round participant"))?;
            let kind = if p.accepted {
                kind::UPDATE_ACCEPTED
            } else {
                kind::UPDATE_REJECTED
            };
            let mut detail = serde_json::json!({
                "examples": p.examples,
                "loss": loss,
                "reason": p.reason,
            });
            // Entries written before kinds were recorded have none; their hashes cover the
            // detail as it was written, so they verify as before.
            if let Some(kind) = p.kind {
                detail["kind"] = kind.as_str().into();
            }
            append(&mut tx, kind, run, Some(round), Some(&p.site), &detail, now).await?;
        }

        let detail = serde_json::json!({
            "sha256": checkpoint_sha,
            "size_bytes": done.checkpoint.len(),
            "optimizer_state_sha256": optimizer_sha,
        });
        append(
            &mut tx,
            kind::CHECKPOINT,
            run,
            Some(round),
            None,
            &detail,
            now,
        )
        .await?;
        let accepted = done.participants.iter().filter(|p| p.accepted).count();
        let detail = serde_json::json!({
            "checkpoint_sha256": checkpoint_sha,
            "accepted": accepted,
            "rejected": done.participants.len() - accepted,
            "metrics": metrics,
        });
        append(
            &mut tx,
            kind::ROUND_FINISHED,
            run,
            Some(round),
            None,
            &detail,
            now,
        )
        .await?;
        self.commit(tx).await?;
        Ok(checkpoint_sha)
    }

    /// Closes the run, so that [`Store::open_run`] starts a new one next time,
    /// and appends `run_finished`.
    pub async fn finish_run(&self, run: i64) -> Result<(), StoreError> {
        let _writer = self.writer.lock().await;
        let now = now_unix_ms();
        let mut tx = self.begin().await?;
        open_run_rounds(&mut tx, run).await?;
        let completed = last_completed(&mut tx, run).await?.completed;
        sqlx::query("UPDATE runs SET finished_unix_ms = $1 WHERE id = $2")
            .bind(now)
            .bind(run)
            .execute(&mut *tx)
            .await
            .map_err(query_err("finishing the run"))?;
        let detail = serde_json::json!({ "completed": completed });
        append(&mut tx, kind::RUN_FINISHED, run, None, None, &detail, now).await?;
        self.commit(tx).await
    }

    /// The run's completed rounds, ascending.
    pub async fn completed_rounds(&self, run: i64) -> Result<Vec<u32>, StoreError> {
        let mut conn = self.acquire().await?;
        run_row(&mut conn, run).await?;
        let rows = sqlx::query(
            "SELECT round FROM rounds WHERE run_id = $1 AND completed_unix_ms IS NOT NULL \
             ORDER BY round",
        )
        .bind(run)
        .fetch_all(&mut *conn)
        .await
        .map_err(query_err("listing completed rounds"))?;
        rows.iter().map(|row| read_u32(row, "round")).collect()
    }

    /// The newest run of `federation` under the manifest digest `manifest_sha256` (finished or
    /// not), with the record of each completed round as the round engine wrote it (JSON, one
    /// per round, ascending); `None` if the store holds no such run.
    pub async fn latest_run_rounds(
        &self,
        federation: &str,
        manifest_sha256: &str,
    ) -> Result<Option<(i64, Vec<String>)>, StoreError> {
        let mut conn = self.acquire().await?;
        let what = "reading the run's rounds";
        let run = sqlx::query(
            "SELECT id FROM runs WHERE federation = $1 AND manifest_sha256 = $2 \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(federation)
        .bind(manifest_sha256)
        .fetch_optional(&mut *conn)
        .await
        .map_err(query_err(what))?;
        let Some(run) = run else {
            return Ok(None);
        };
        let run = read_i64(&run, "id")?;
        let rows = sqlx::query(
            "SELECT metrics FROM rounds WHERE run_id = $1 AND completed_unix_ms IS NOT NULL \
             AND metrics IS NOT NULL ORDER BY round",
        )
        .bind(run)
        .fetch_all(&mut *conn)
        .await
        .map_err(query_err(what))?;
        let metrics = rows
            .iter()
            .map(|row| row.try_get::<String, _>("metrics").map_err(query_err(what)))
            .collect::<Result<_, _>>()?;
        Ok(Some((run, metrics)))
    }

    /// The checkpoint (or optimizer state) stored under `sha256`, after checking
    /// that its bytes still hash to it.
    pub async fn checkpoint(&self, sha256: &str) -> Result<Vec<u8>, StoreError> {
        let read = || query_err("reading a checkpoint");
        let row = sqlx::query("SELECT size_bytes, bytes FROM checkpoints WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await
            .map_err(read())?
            .ok_or_else(|| StoreError::CheckpointMissing {
                sha256: sha256.to_string(),
            })?;
        let mut bytes: Vec<u8> = row.try_get("bytes").map_err(read())?;
        if bytes.is_empty() {
            // Stored in pieces (schema version 2 and later).
            // The recorded size is only a hint (the digest decides): reserved up to a bound,
            // so a damaged row cannot make the coordinator allocate without limit.
            let size: i64 = row.try_get("size_bytes").map_err(read())?;
            bytes.reserve_exact(usize::try_from(size).unwrap_or(0).min(MAX_RESERVE));
            let mut pieces =
                sqlx::query("SELECT bytes FROM checkpoint_pieces WHERE sha256 = $1 ORDER BY seq")
                    .bind(sha256)
                    .fetch(&self.pool);
            while let Some(piece) = pieces.next().await {
                let piece: Vec<u8> = piece.map_err(read())?.try_get("bytes").map_err(read())?;
                bytes.extend_from_slice(&piece);
            }
        }
        let actual = sha256_hex(&bytes);
        if actual != sha256 {
            return Err(StoreError::CheckpointCorrupt {
                sha256: sha256.to_string(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Appends `event` to the audit log and returns its `seq`.
    pub async fn audit(&self, event: AuditEvent) -> Result<u64, StoreError> {
        let _writer = self.writer.lock().await;
        let mut tx = self.begin().await?;
        let seq = audit::log::append(&mut tx, &event, now_unix_ms()).await?;
        self.commit(tx).await?;
        Ok(seq)
    }

    /// Walks the whole audit chain and reports the first break, if any.
    pub async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        Ok(audit::verify_chain(&self.audit_entries().await?))
    }

    /// The newest audit entry, as the head a node records ([`AuditHead`]); `None` while the
    /// log is empty.
    /// Every entry this store appended shows at once; one another process appended to a
    /// shared store, within a quarter of a second (the head is read once for the many tasks
    /// that carry it).
    pub async fn audit_head(&self) -> Result<Option<AuditHead>, StoreError> {
        self.head
            .get(async {
                let Some((seq, hash)) = audit::log::tail(&self.pool).await? else {
                    return Ok(None);
                };
                AuditHead::new(seq, &hash)
                    .map(Some)
                    .map_err(|problem| StoreError::Corrupt {
                        what: format!("the audit log's newest entry {seq}: {problem}"),
                    })
            })
            .await
    }

    /// Every audit entry, in `seq` order.
    pub async fn audit_entries(&self) -> Result<Vec<AuditEntry>, StoreError> {
        audit::log::entries(&self.pool).await
    }

    /// The audit entries from `seq` on, in order (see [`crate::audit::ChainWatch`]).
    pub async fn audit_entries_from(&self, seq: u64) -> Result<Vec<AuditEntry>, StoreError> {
        audit::log::entries_from(&self.pool, seq).await
    }

    /// Commits a write transaction; the cached audit head is dropped either way.
    async fn commit(&self, tx: Tx) -> Result<(), StoreError> {
        let done = commit(tx).await;
        self.head.written();
        done
    }

    /// Begins a write transaction. SQLite takes its write lock up front
    /// (`BEGIN IMMEDIATE`), so a second writer waits out the busy timeout
    /// instead of failing when it first writes.
    async fn begin(&self) -> Result<Tx, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        self.check_file()?;
        let tx = match self.location.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        tx.map_err(query_err("beginning a transaction"))
    }

    async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, StoreError> {
        self.pool
            .acquire()
            .await
            .map_err(query_err("taking a database connection"))
    }
}
