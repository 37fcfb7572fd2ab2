//! Store tests, each written once over a [`TestDb`] and run per backend
//! (`sqlite::*` and `postgres::*`, like ripgrep's `rgtest!`).
//!
//! SQLite runs in a fresh temp dir. PostgreSQL runs when
//! `ENTENTE_TEST_POSTGRES_URL` names a server the user may create databases on
//! (e.g. `postgres://postgres:postgres@127.0.0.1:5432/postgres`); each test gets
//! a new database with a unique name, dropped when the test passes. Without the
//! variable the PostgreSQL tests print "skipped" and pass, unless `CI` is set,
//! where they fail.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use entente_coordinator::audit::{
    AuditEntry, AuditEvent, AuditReport, GENESIS_PREV_HASH, entry_hash, kind,
};
use entente_coordinator::store::{FinishedRound, Participant, Store, StoreError};
use entente_core::engine::ErrorKind;
use sha2::{Digest, Sha256};
use sqlx::{AnyPool, Row};
use tempfile::TempDir;

// ---------------------------------------------------------------- harness

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One empty database for one test.
struct TestDb {
    backend: Backend,
    url: String,
    /// SQLite: the database file (not yet created).
    sqlite_file: Option<PathBuf>,
    _dir: Option<TempDir>,
    /// PostgreSQL: the admin URL and the database to drop afterwards.
    pg_drop: Option<(String, String)>,
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("store.entente.db");
        TestDb {
            backend: Backend::Sqlite,
            url: format!("sqlite://{}", file.display()),
            sqlite_file: Some(file),
            _dir: Some(dir),
            pg_drop: None,
        }
    }

    /// A fresh database on the server named by `ENTENTE_TEST_POSTGRES_URL`.
    async fn postgres(test: &str) -> Option<TestDb> {
        let admin = match std::env::var("ENTENTE_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI is set but ENTENTE_TEST_POSTGRES_URL is not; set it to a PostgreSQL \
                     URL whose user may CREATE DATABASE"
                );
                println!("skipped: ENTENTE_TEST_POSTGRES_URL not set");
                return None;
            }
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let short: String = test.chars().take(24).collect();
        let name = format!(
            "et_{short}_{}_{nanos}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let name: String = name.chars().take(63).collect();
        let pool = raw_pool(&admin).await;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&pool)
            .await
            .expect("CREATE DATABASE (does the user have CREATEDB?)");
        pool.close().await;
        Some(TestDb {
            backend: Backend::Postgres,
            url: with_database(&admin, &name),
            sqlite_file: None,
            _dir: None,
            pg_drop: Some((admin, name)),
        })
    }

    /// A separate connection pool, for looking at and tampering with rows.
    async fn raw(&self) -> AnyPool {
        raw_pool(&self.url).await
    }

    /// Lets raw SQL edit and delete audit rows, as an attacker with database
    /// access could.
    async fn drop_audit_triggers(&self, raw: &AnyPool) {
        let sql = match self.backend {
            Backend::Sqlite => {
                "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;"
            }
            Backend::Postgres => {
                "DROP TRIGGER audit_log_no_update ON audit_log; \
                 DROP TRIGGER audit_log_no_delete ON audit_log;"
            }
        };
        sqlx::raw_sql(sql)
            .execute(raw)
            .await
            .expect("drop triggers");
    }

    async fn cleanup(self) {
        if let Some((admin, name)) = &self.pg_drop {
            let pool = raw_pool(admin).await;
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&pool)
                .await
                .expect("DROP DATABASE");
            pool.close().await;
        }
    }
}

async fn raw_pool(url: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    AnyPool::connect(url).await.expect("raw connection")
}

/// `admin` with its database path replaced by `name`.
fn with_database(admin: &str, name: &str) -> String {
    let (base, query) = match admin.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin, None),
    };
    let authority_start = base.find("://").expect("URL has a scheme") + 3;
    let prefix = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    match query {
        Some(query) => format!("{prefix}/{name}?{query}"),
        None => format!("{prefix}/{name}"),
    }
}

/// Runs each named `async fn(&TestDb)` once per backend.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::TestDb::sqlite();
                    crate::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(db) = crate::TestDb::postgres(stringify!($name)).await {
                        crate::$name(&db).await;
                        db.cleanup().await;
                    }
                }
            )*
        }
    };
}

both!(
    open_migrates_once_and_keeps_data,
    open_run_resumes_only_unfinished_runs_with_the_same_digest,
    rounds_are_applied_once_and_in_order,
    failed_round_commit_leaves_nothing_behind,
    checkpoints_are_content_addressed_and_verified,
    large_checkpoints_are_stored_in_pieces,
    audit_chain_names_edited_and_deleted_entries,
    concurrent_appends_keep_one_chain,
    one_owner_at_a_time,
    reading_creates_migrates_and_writes_nothing,
    a_store_written_before_kinds_migrates_and_its_chain_verifies,
);

// ---------------------------------------------------------------- helpers

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn participant(site: &str, accepted: bool, reason: Option<&str>) -> Participant {
    Participant {
        site: site.into(),
        accepted,
        reason: reason.map(str::to_string),
        kind: (!accepted).then_some(ErrorKind::Internal),
        examples: 100,
        loss: 0.5,
    }
}

fn sites(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Starts and finishes `round` with two accepted sites and the given checkpoint.
async fn run_round(store: &Store, run: i64, round: u32, checkpoint: &[u8]) -> String {
    store
        .round_started(run, round, &sites(&["a", "b"]))
        .await
        .expect("round_started");
    let participants = [participant("a", true, None), participant("b", true, None)];
    store
        .round_finished(
            run,
            &FinishedRound {
                round,
                participants: &participants,
                metrics_json: r#"{"loss":0.5}"#,
                checkpoint,
                optimizer_state: None,
            },
        )
        .await
        .expect("round_finished")
}

async fn count(raw: &AnyPool, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(raw)
        .await
        .expect(sql)
        .try_get(0)
        .expect("count")
}

// ---------------------------------------------------------------- tests

async fn open_migrates_once_and_keeps_data(db: &TestDb) {
    if let Some(file) = &db.sqlite_file {
        assert!(!file.exists());
    }
    let store = Store::open(&db.url).await.expect("first open");
    if let Some(file) = &db.sqlite_file {
        assert!(file.exists(), "open must create the SQLite file");
    }
    let run = store.open_run("fed", "digest-1", 5).await.unwrap();
    let sha = run_round(&store, run.run, 1, b"weights-1").await;
    let entries_before = store.audit_entries().await.unwrap();
    drop(store);

    // Reopen (for SQLite by bare path, which must mean the same file).
    let again = match &db.sqlite_file {
        Some(file) => file.to_str().expect("utf-8 temp path").to_string(),
        None => db.url.clone(),
    };
    let store = Store::open(&again).await.expect("reopen");
    assert_eq!(store.audit_entries().await.unwrap(), entries_before);
    assert_eq!(store.completed_rounds(run.run).await.unwrap(), vec![1]);
    assert_eq!(store.checkpoint(&sha).await.unwrap(), b"weights-1");

    let raw = db.raw().await;
    let versions: Vec<i64> = sqlx::query("SELECT version FROM _sqlx_migrations ORDER BY version")
        .fetch_all(&raw)
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("version").unwrap())
        .collect();
    assert_eq!(
        versions,
        vec![1, 2, 3],
        "each migration is recorded exactly once"
    );
    if db.backend == Backend::Sqlite {
        let mode: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&raw)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(mode, "wal");
    }
    raw.close().await;
}

async fn open_run_resumes_only_unfinished_runs_with_the_same_digest(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let first = store.open_run("fed", "digest-1", 3).await.unwrap();
    assert!(!first.resumed);
    assert_eq!(first.completed, 0);
    assert_eq!(first.checkpoint, None);

    store
        .round_started(first.run, 1, &sites(&["a"]))
        .await
        .unwrap();
    let ckpt_sha = store
        .round_finished(
            first.run,
            &FinishedRound {
                round: 1,
                participants: &[participant("a", true, None)],
                metrics_json: "{}",
                checkpoint: b"model after round 1",
                optimizer_state: Some(b"adam moments"),
            },
        )
        .await
        .unwrap();

    let resumed = store.open_run("fed", "digest-1", 3).await.unwrap();
    assert_eq!(
        resumed,
        entente_coordinator::store::RunState {
            run: first.run,
            completed: 1,
            checkpoint: Some(ckpt_sha.clone()),
            optimizer_state: Some(sha256_hex(b"adam moments")),
            resumed: true,
        }
    );

    let other_digest = store.open_run("fed", "digest-2", 3).await.unwrap();
    assert!(!other_digest.resumed);
    assert_ne!(other_digest.run, first.run);
    let other_federation = store.open_run("fed-b", "digest-1", 3).await.unwrap();
    assert!(!other_federation.resumed);
    assert_ne!(other_federation.run, first.run);

    let err = store.open_run("fed", "digest-1", 4).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TotalRoundsChanged {
                stored: 3,
                requested: 4,
                ..
            }
        ),
        "{err}"
    );

    store.finish_run(first.run).await.unwrap();
    let fresh = store.open_run("fed", "digest-1", 3).await.unwrap();
    assert!(!fresh.resumed, "a finished run is never resumed");
    assert_ne!(fresh.run, first.run);
    assert_eq!(fresh.completed, 0);
    let err = store.round_started(first.run, 2, &[]).await.unwrap_err();
    assert!(matches!(err, StoreError::RunFinished { .. }), "{err}");
    assert!(matches!(
        store.finish_run(first.run).await.unwrap_err(),
        StoreError::RunFinished { .. }
    ));
    assert!(matches!(
        store.completed_rounds(999_999).await.unwrap_err(),
        StoreError::UnknownRun { run: 999_999 }
    ));

    let kinds: Vec<String> = store
        .audit_entries()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.run == Some(first.run))
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some(kind::RUN_STARTED));
    assert!(kinds.iter().any(|k| k == kind::RUN_RESUMED));
    assert_eq!(kinds.last().map(String::as_str), Some(kind::RUN_FINISHED));
}

async fn rounds_are_applied_once_and_in_order(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let run = store.open_run("fed", "d", 3).await.unwrap().run;
    let participants = [
        participant("a", true, None),
        Participant {
            site: "b".into(),
            accepted: false,
            reason: Some("update norm 9.1 above clip 5".into()),
            kind: Some(ErrorKind::MalformedReply),
            examples: 40,
            loss: f64::NAN,
        },
    ];
    let round1 = FinishedRound {
        round: 1,
        participants: &participants,
        metrics_json: r#"{"loss":0.42}"#,
        checkpoint: b"w1",
        optimizer_state: None,
    };

    assert!(matches!(
        store.round_finished(run, &round1).await.unwrap_err(),
        StoreError::RoundNotStarted { round: 1, .. }
    ));
    assert!(matches!(
        store.round_started(run, 2, &[]).await.unwrap_err(),
        StoreError::RoundOutOfOrder {
            round: 2,
            next: 1,
            ..
        }
    ));
    assert!(matches!(
        store.round_started(run, 0, &[]).await.unwrap_err(),
        StoreError::RoundOutOfRange { round: 0, .. }
    ));

    store
        .round_started(run, 1, &sites(&["a", "b"]))
        .await
        .unwrap();
    let sha = store.round_finished(run, &round1).await.unwrap();
    assert_eq!(sha, sha256_hex(b"w1"));

    let raw = db.raw().await;
    let audit_len = store.audit_entries().await.unwrap().len();
    let participant_rows = count(&raw, "SELECT COUNT(*) FROM participants").await;
    assert_eq!(participant_rows, 2);

    let again = store.round_finished(run, &round1).await.unwrap_err();
    assert!(
        matches!(again, StoreError::RoundAlreadyFinished { round: 1, .. }),
        "{again}"
    );
    assert!(again.to_string().contains("already finished"), "{again}");
    assert!(matches!(
        store.round_started(run, 1, &[]).await.unwrap_err(),
        StoreError::RoundAlreadyFinished { round: 1, .. }
    ));
    assert_eq!(store.audit_entries().await.unwrap().len(), audit_len);
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM participants").await, 2);

    // What was recorded for round 1.
    let row = sqlx::query(
        "SELECT accepted, reason, examples, loss FROM participants \
         WHERE run_id = $1 AND round = 1 AND site = 'b'",
    )
    .bind(run)
    .fetch_one(&raw)
    .await
    .unwrap();
    assert_eq!(row.try_get::<i64, _>("accepted").unwrap(), 0);
    assert_eq!(
        row.try_get::<Option<String>, _>("reason")
            .unwrap()
            .as_deref(),
        Some("update norm 9.1 above clip 5")
    );
    assert_eq!(row.try_get::<i64, _>("examples").unwrap(), 40);
    assert_eq!(row.try_get::<Option<f64>, _>("loss").unwrap(), None);
    let metrics: String = sqlx::query("SELECT metrics FROM rounds WHERE run_id = $1 AND round = 1")
        .bind(run)
        .fetch_one(&raw)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(metrics, r#"{"loss":0.42}"#);
    let round1_audit: Vec<(String, Option<String>)> = store
        .audit_entries()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.round == Some(1))
        .map(|e| (e.kind, e.site))
        .collect();
    assert_eq!(
        round1_audit,
        vec![
            (kind::ROUND_STARTED.to_string(), None),
            (kind::UPDATE_ACCEPTED.to_string(), Some("a".to_string())),
            (kind::UPDATE_REJECTED.to_string(), Some("b".to_string())),
            (kind::CHECKPOINT.to_string(), None),
            (kind::ROUND_FINISHED.to_string(), None),
        ]
    );

    // A restarted round may be started again before it finishes.
    store.round_started(run, 2, &sites(&["a"])).await.unwrap();
    store
        .round_started(run, 2, &sites(&["a", "b"]))
        .await
        .unwrap();
    assert!(matches!(
        store.round_started(run, 3, &[]).await.unwrap_err(),
        StoreError::RoundOutOfOrder {
            round: 3,
            next: 2,
            ..
        }
    ));
    run_round(&store, run, 2, b"w2").await;
    run_round(&store, run, 3, b"w3").await;
    assert!(matches!(
        store.round_started(run, 4, &[]).await.unwrap_err(),
        StoreError::RoundOutOfRange {
            round: 4,
            total_rounds: 3,
            ..
        }
    ));
    assert_eq!(store.completed_rounds(run).await.unwrap(), vec![1, 2, 3]);

    let bad = FinishedRound {
        round: 3,
        participants: &[participant("a", true, None), participant("a", true, None)],
        metrics_json: "{}",
        checkpoint: b"",
        optimizer_state: None,
    };
    assert!(matches!(
        store.round_finished(run, &bad).await.unwrap_err(),
        StoreError::DuplicateParticipant { .. }
    ));
    let bad = FinishedRound {
        metrics_json: "not json",
        participants: &[],
        ..bad
    };
    assert!(matches!(
        store.round_finished(run, &bad).await.unwrap_err(),
        StoreError::InvalidMetrics { .. }
    ));
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditReport::Intact {
            entries: store.audit_entries().await.unwrap().len() as u64
        }
    );
    raw.close().await;
}

/// An error after the checkpoint and round rows were written rolls all of it back.
async fn failed_round_commit_leaves_nothing_behind(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let run = store.open_run("fed", "d", 2).await.unwrap().run;
    store
        .round_started(run, 1, &sites(&["a", "b"]))
        .await
        .unwrap();
    let audit_len = store.audit_entries().await.unwrap().len();
    let participants = [
        participant("a", true, None),
        Participant {
            examples: u64::MAX, // does not fit the database; fails mid-transaction
            ..participant("b", true, None)
        },
    ];
    let err = store
        .round_finished(
            run,
            &FinishedRound {
                round: 1,
                participants: &participants,
                metrics_json: "{}",
                checkpoint: b"half-written",
                optimizer_state: Some(b"state"),
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");

    assert_eq!(
        store.completed_rounds(run).await.unwrap(),
        Vec::<u32>::new()
    );
    assert!(matches!(
        store
            .checkpoint(&sha256_hex(b"half-written"))
            .await
            .unwrap_err(),
        StoreError::CheckpointMissing { .. }
    ));
    assert_eq!(store.audit_entries().await.unwrap().len(), audit_len);
    let raw = db.raw().await;
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM participants").await, 0);
    raw.close().await;

    // The round can still be finished properly.
    run_round(&store, run, 1, b"whole").await;
    assert_eq!(store.completed_rounds(run).await.unwrap(), vec![1]);
}

async fn large_checkpoints_are_stored_in_pieces(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let run = store.open_run("fed", "d", 1).await.unwrap().run;
    // Two and a half pieces of 1 MiB.
    let weights: Vec<u8> = (0..5usize << 19).map(|i| (i * 31 % 251) as u8).collect();
    let sha = run_round(&store, run, 1, &weights).await;
    let raw = db.raw().await;
    assert_eq!(
        count(&raw, "SELECT COUNT(*) FROM checkpoint_pieces").await,
        3
    );
    assert_eq!(store.checkpoint(&sha).await.unwrap(), weights);

    // A checkpoint written by schema version 1 holds its bytes in its own row.
    let old = b"version 1 bytes".as_slice();
    sqlx::query(
        "INSERT INTO checkpoints (sha256, size_bytes, bytes, created_unix_ms) \
         VALUES ($1, $2, $3, 0)",
    )
    .bind(sha256_hex(old))
    .bind(old.len() as i64)
    .bind(old)
    .execute(&raw)
    .await
    .unwrap();
    assert_eq!(store.checkpoint(&sha256_hex(old)).await.unwrap(), old);

    // A changed piece is caught by the digest.
    sqlx::query("UPDATE checkpoint_pieces SET bytes = $1 WHERE sha256 = $2 AND seq = 1")
        .bind(b"tampered".as_slice())
        .bind(&sha)
        .execute(&raw)
        .await
        .unwrap();
    assert!(matches!(
        store.checkpoint(&sha).await.unwrap_err(),
        StoreError::CheckpointCorrupt { sha256, .. } if sha256 == sha
    ));
    raw.close().await;
}

async fn checkpoints_are_content_addressed_and_verified(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let run_a = store.open_run("fed", "d1", 2).await.unwrap().run;
    let run_b = store.open_run("fed", "d2", 2).await.unwrap().run;
    let weights = b"safetensors bytes".as_slice();

    let sha_a = run_round(&store, run_a, 1, weights).await;
    let sha_b = run_round(&store, run_b, 1, weights).await;
    assert_eq!(sha_a, sha256_hex(weights));
    assert_eq!(sha_a, sha_b);

    // An optimizer state shares the table and its addressing.
    store.round_started(run_a, 2, &sites(&["a"])).await.unwrap();
    store
        .round_finished(
            run_a,
            &FinishedRound {
                round: 2,
                participants: &[participant("a", true, None)],
                metrics_json: "{}",
                checkpoint: weights,
                optimizer_state: Some(b"momentum"),
            },
        )
        .await
        .unwrap();

    let raw = db.raw().await;
    assert_eq!(count(&raw, "SELECT COUNT(*) FROM checkpoints").await, 2);
    assert_eq!(store.checkpoint(&sha_a).await.unwrap(), weights);
    assert_eq!(
        store.checkpoint(&sha256_hex(b"momentum")).await.unwrap(),
        b"momentum"
    );
    let missing = "0".repeat(64);
    assert!(matches!(
        store.checkpoint(&missing).await.unwrap_err(),
        StoreError::CheckpointMissing { sha256 } if sha256 == missing
    ));

    sqlx::query("UPDATE checkpoints SET bytes = $1 WHERE sha256 = $2")
        .bind(b"tampered".as_slice())
        .bind(&sha_a)
        .execute(&raw)
        .await
        .unwrap();
    let err = store.checkpoint(&sha_a).await.unwrap_err();
    match &err {
        StoreError::CheckpointCorrupt { sha256, actual } => {
            assert_eq!(sha256, &sha_a);
            assert_eq!(actual, &sha256_hex(b"tampered"));
        }
        other => panic!("expected CheckpointCorrupt, got {other}"),
    }
    assert!(
        err.to_string().contains("restore it from a backup"),
        "{err}"
    );
    raw.close().await;
}

async fn audit_chain_names_edited_and_deleted_entries(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let mut seqs = Vec::new();
    for i in 0..5u32 {
        let seq = store
            .audit(AuditEvent {
                kind: if i % 2 == 0 {
                    kind::ADMISSION
                } else {
                    kind::REFUSAL
                }
                .into(),
                run: None,
                round: None,
                site: Some(format!("site-{i}")),
                detail: format!(r#"{{"i":{i}}}"#),
            })
            .await
            .unwrap();
        seqs.push(seq);
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let entries = store.audit_entries().await.unwrap();
    assert_eq!(entries[0].prev_hash, GENESIS_PREV_HASH);
    for pair in entries.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditReport::Intact { entries: 5 }
    );

    for bad in [
        AuditEvent {
            kind: String::new(),
            run: None,
            round: None,
            site: None,
            detail: "{}".into(),
        },
        AuditEvent {
            kind: kind::ADMISSION.into(),
            run: None,
            round: None,
            site: None,
            detail: "{not json".into(),
        },
    ] {
        assert!(matches!(
            store.audit(bad).await.unwrap_err(),
            StoreError::InvalidAuditEvent { .. }
        ));
    }

    let raw = db.raw().await;
    let edit = sqlx::query("UPDATE audit_log SET detail = $1 WHERE seq = 3")
        .bind(r#"{"i":99}"#)
        .execute(&raw)
        .await;
    assert!(edit.is_err(), "the append-only triggers refuse edits");

    db.drop_audit_triggers(&raw).await;
    sqlx::query("UPDATE audit_log SET detail = $1 WHERE seq = 3")
        .bind(r#"{"i":99}"#)
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditReport::Broken {
            seq: 3,
            reason: "hash does not match its contents".into()
        }
    );

    sqlx::query("UPDATE audit_log SET detail = $1 WHERE seq = 3")
        .bind(r#"{"i":2}"#)
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditReport::Intact { entries: 5 }
    );

    sqlx::query("DELETE FROM audit_log WHERE seq = 3")
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditReport::Broken {
            seq: 4,
            reason: "sequence gap after 2".into()
        }
    );
    raw.close().await;
}

async fn concurrent_appends_keep_one_chain(db: &TestDb) {
    let store = Store::open(&db.url).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .audit(AuditEvent {
                        kind: kind::ADMISSION.into(),
                        run: None,
                        round: None,
                        site: Some(format!("site-{i}")),
                        detail: "{}".into(),
                    })
                    .await
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for task in tasks {
        seqs.push(task.await.unwrap().expect("clones share the writer lock"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=16).collect::<Vec<u64>>());

    // A second Store on the same database has its own lock: it may lose races
    // (an error), but it must never fork the chain.
    let other = Store::open(&db.url).await.unwrap();
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let store = if i % 2 == 0 {
                store.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move {
                store
                    .audit(AuditEvent {
                        kind: kind::REFUSAL.into(),
                        run: None,
                        round: None,
                        site: None,
                        detail: "{}".into(),
                    })
                    .await
            })
        })
        .collect();
    let mut won = 0u64;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::AuditConflict { .. } | StoreError::Busy { .. }) => {}
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditReport::Intact { entries: 16 + won }
    );
}

/// An admission of `site`, for filling the log.
fn admission(site: &str) -> AuditEvent {
    AuditEvent {
        kind: kind::ADMISSION.into(),
        run: None,
        round: None,
        site: Some(site.into()),
        detail: "{}".into(),
    }
}

async fn one_owner_at_a_time(db: &TestDb) {
    let (store, owner) = Store::open_owned(&db.url).await.expect("the first owner");
    store.audit(admission("a")).await.unwrap();
    let err = Store::open_owned(&db.url).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::InUse { .. }), "{msg}");
    assert!(msg.contains("in use by another coordinator"), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "the holder is named: {msg}"
    );
    owner.check().await.expect("still the owner");
    owner.release().await;
    let (again, owner) = Store::open_owned(&db.url).await.expect("free again");
    assert_eq!(again.audit_entries().await.unwrap().len(), 1);
    owner.release().await;
}

async fn reading_creates_migrates_and_writes_nothing(db: &TestDb) {
    // An empty database (or no file at all) is not a store, and reading it leaves it so.
    let err = Store::open_read_only(&db.url).await.unwrap_err();
    match &db.sqlite_file {
        Some(file) => {
            assert!(matches!(err, StoreError::Missing { .. }), "{err}");
            assert!(err.to_string().contains("never creates one"), "{err}");
            assert!(!file.exists(), "reading created {}", file.display());
        }
        None => {
            assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
            let raw = db.raw().await;
            let tables = count(
                &raw,
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .await;
            assert_eq!(tables, 0, "reading created tables");
            raw.close().await;
        }
    }
    let store = Store::open(&db.url).await.unwrap();
    store.audit(admission("a")).await.unwrap();
    let reader = Store::open_read_only(&db.url).await.unwrap();
    assert_eq!(reader.audit_entries().await.unwrap().len(), 1);
    assert!(matches!(
        reader.audit(admission("b")).await.unwrap_err(),
        StoreError::ReadOnly
    ));
    assert_eq!(store.audit_entries().await.unwrap().len(), 1);
}

// ---------------------------------------------------------------- SQLite only

#[tokio::test]
async fn a_deleted_or_replaced_database_file_is_noticed_and_never_written() {
    let db = TestDb::sqlite();
    let file = db.sqlite_file.clone().unwrap();
    let store = Store::open(&db.url).await.unwrap();
    store.audit(admission("a")).await.unwrap();
    store.check_file().unwrap();

    std::fs::remove_file(&file).unwrap();
    let err = store.check_file().unwrap_err();
    assert!(matches!(err, StoreError::Lost { .. }), "{err}");
    assert!(err.to_string().contains("was deleted"), "{err}");
    let err = store.audit(admission("b")).await.unwrap_err();
    assert!(matches!(err, StoreError::Lost { .. }), "{err}");
    assert!(!file.exists(), "a write recreated {}", file.display());

    // Another file in its place is not the store either.
    std::fs::write(&file, b"").unwrap();
    let err = store.check_file().unwrap_err();
    assert!(err.to_string().contains("replaced"), "{err}");
}

#[tokio::test]
async fn a_checkpoint_leaves_the_whole_store_in_the_database_file() {
    let db = TestDb::sqlite();
    let file = db.sqlite_file.clone().unwrap();
    let store = Store::open(&db.url).await.unwrap();
    let run = store.open_run("fed", "digest-1", 1).await.unwrap().run;
    run_round(&store, run, 1, b"weights-1").await;
    store.finish_run(run).await.unwrap();
    let entries = store.audit_entries().await.unwrap();

    // A copy of the database file alone, as a backup would take it.
    let copy_of_file = |name: &str| {
        let copy = file.with_file_name(name);
        std::fs::copy(&file, &copy).unwrap();
        format!("sqlite://{}", copy.display())
    };
    // While the store is open, its last transactions are in the write-ahead log only.
    let before = match Store::open_read_only(&copy_of_file("before.db")).await {
        Ok(copy) => copy.audit_entries().await.map_or(0, |e| e.len()),
        Err(_) => 0,
    };
    assert!(
        before < entries.len(),
        "the test needs the log to hold transactions"
    );
    store.checkpoint_wal().await.unwrap();
    let after = Store::open_read_only(&copy_of_file("after.db"))
        .await
        .unwrap();
    assert_eq!(after.audit_entries().await.unwrap(), entries);
}

// ---------------------------------------------------------------- backend-free

#[tokio::test]
async fn unsupported_scheme_says_what_to_use() {
    let err = Store::open("mysql://root:hunter2@db/entente")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }));
    assert!(msg.contains("use sqlite://PATH or postgres://"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn unreachable_postgres_names_the_fix_without_the_password() {
    // A listener that hangs up at once. (A refused connection would do too, but
    // sqlx retries those until its 30 s acquire timeout.)
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let err = Store::open(&format!(
        "postgres://entente:hunter2@127.0.0.1:{port}/entente"
    ))
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Connect { .. }), "{msg}");
    assert!(msg.contains("server is running"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn default_database_sits_beside_the_manifest() {
    assert_eq!(
        Store::sqlite_url_beside(Path::new("/srv/fed/hospital.toml")),
        "sqlite:///srv/fed/hospital.entente.db"
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("trial.toml");
    let url = Store::sqlite_url_beside(&manifest);
    Store::open(&url).await.unwrap();
    assert!(dir.path().join("trial.entente.db").exists());
}

/// Schema version 2, as a coordinator before error kinds left it: migrations 1 and 2 only.
async fn open_schema_version_2(db: &TestDb) -> AnyPool {
    let dir = tempfile::tempdir().unwrap();
    let backend = match db.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for file in ["0001_initial.sql", "0002_checkpoint_pieces.sql"] {
        std::fs::copy(source.join(file), dir.path().join(file)).unwrap();
    }
    let url = match db.backend {
        Backend::Sqlite => format!("{}?mode=rwc", db.url),
        Backend::Postgres => db.url.clone(),
    };
    let raw = raw_pool(&url).await;
    sqlx::migrate::Migrator::new(dir.path())
        .await
        .unwrap()
        .run(&raw)
        .await
        .unwrap();
    raw
}

/// Appends `(kind, site, detail)` entries to the audit log as the old code did: hashed
/// over the detail as written, with no `kind` of failure in it.
async fn append_old_entries(raw: &AnyPool, run: i64, entries: &[(&str, Option<&str>, &str)]) {
    let mut prev = GENESIS_PREV_HASH.to_string();
    for (i, (what, site, detail)) in entries.iter().enumerate() {
        let mut entry = AuditEntry {
            seq: i as u64 + 1,
            at_unix_ms: 1_700_000_000_000 + i as i64,
            kind: what.to_string(),
            run: Some(run),
            round: site.map(|_| 1),
            site: site.map(str::to_string),
            detail: detail.to_string(),
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        entry.hash = entry_hash(&entry);
        sqlx::query(
            "INSERT INTO audit_log (seq, at_unix_ms, kind, run_id, round, site, detail, \
             prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(entry.seq as i64)
        .bind(entry.at_unix_ms)
        .bind(&entry.kind)
        .bind(entry.run)
        .bind(entry.round.map(i64::from))
        .bind(&entry.site)
        .bind(&entry.detail)
        .bind(&entry.prev_hash)
        .bind(&entry.hash)
        .execute(raw)
        .await
        .unwrap();
        prev = entry.hash;
    }
}

async fn a_store_written_before_kinds_migrates_and_its_chain_verifies(db: &TestDb) {
    // A round of schema version 2: a rejected participant with a reason and no kind, and the
    // audit entries of the time.
    let raw = open_schema_version_2(db).await;
    let old: i64 = sqlx::query(
        "INSERT INTO runs (federation, manifest_sha256, total_rounds, started_unix_ms, \
         finished_unix_ms) VALUES ('fed', 'old', 1, 0, 1) RETURNING id",
    )
    .fetch_one(&raw)
    .await
    .unwrap()
    .try_get(0)
    .unwrap();
    for sql in [
        "INSERT INTO rounds (run_id, round, selected, started_unix_ms, completed_unix_ms) \
         VALUES ($1, 1, '[\"a\",\"b\"]', 0, 1)",
        "INSERT INTO participants (run_id, round, site, accepted, reason, examples, loss) \
         VALUES ($1, 1, 'b', 0, 'missed the deadline', 0, NULL)",
    ] {
        sqlx::query(sql).bind(old).execute(&raw).await.unwrap();
    }
    append_old_entries(
        &raw,
        old,
        &[
            (kind::RUN_STARTED, None, r#"{"rounds":1}"#),
            (
                kind::UPDATE_REJECTED,
                Some("b"),
                r#"{"examples":0,"loss":null,"reason":"missed the deadline"}"#,
            ),
        ],
    )
    .await;
    raw.close().await;

    // Opened by this version: migrated, the old chain intact, the old row without a kind.
    let store = Store::open(&db.url).await.expect("an old store opens");
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditReport::Intact { entries: 2 }
    );
    let raw = db.raw().await;
    let old_kind: Option<String> = sqlx::query("SELECT kind FROM participants WHERE run_id = $1")
        .bind(old)
        .fetch_one(&raw)
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(old_kind, None);

    // A new round records the kind in its row and in its audit entry, on the same chain.
    let run = store.open_run("fed", "new", 1).await.unwrap().run;
    store
        .round_started(run, 1, &sites(&["a", "b"]))
        .await
        .unwrap();
    let participants = [
        participant("a", true, None),
        Participant {
            kind: Some(ErrorKind::OverBudget),
            ..participant("b", false, Some("refuses round 1: over its budget"))
        },
    ];
    store
        .round_finished(
            run,
            &FinishedRound {
                round: 1,
                participants: &participants,
                metrics_json: "{}",
                checkpoint: b"w",
                optimizer_state: None,
            },
        )
        .await
        .unwrap();
    let kinds: Vec<(String, Option<String>)> =
        sqlx::query("SELECT site, kind FROM participants WHERE run_id = $1 ORDER BY site")
            .bind(run)
            .fetch_all(&raw)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get(0).unwrap(), r.try_get(1).unwrap()))
            .collect();
    assert_eq!(
        kinds,
        [
            ("a".to_string(), None),
            ("b".to_string(), Some("over_budget".to_string()))
        ]
    );
    let entries = store.audit_entries().await.unwrap();
    let details: Vec<serde_json::Value> = entries
        .iter()
        .filter(|e| e.kind == kind::UPDATE_REJECTED)
        .map(|e| serde_json::from_str(&e.detail).unwrap())
        .collect();
    assert_eq!(details.len(), 2);
    assert_eq!(details[0].get("kind"), None, "the old entry is as it was");
    assert_eq!(details[1]["kind"], "over_budget");
    assert_eq!(
        store.verify_audit().await.unwrap(),
        AuditReport::Intact {
            entries: entries.len() as u64
        }
    );
    raw.close().await;
}
