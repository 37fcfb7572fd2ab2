//! [`StoreError`]: what went wrong in the store, and what to do about it.

/// An error from [`crate::store::Store`]. Each message names what failed and
/// how to fix it. Database URLs in messages have their password replaced by `***`.
///
/// Underlying sqlx errors are part of the message rather than the
/// [`std::error::Error::source`] chain, so that printing the chain does not
/// repeat them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    // --- Configuration: the caller passed something unusable.
    /// The database URL has a scheme other than `sqlite:` or `postgres://`.
    #[error(
        "unsupported database URL `{url}`: use sqlite://PATH or \
         postgres://USER:PASSWORD@HOST:PORT/DATABASE (a bare file path also means SQLite)"
    )]
    UnsupportedUrl {
        /// The URL as given, password redacted.
        url: String,
    },

    // --- Environment: the database could not be reached or set up.
    /// Connecting (or creating the SQLite file) failed.
    #[error(
        "could not open the database at {url}: {error}; for SQLite check that the directory \
         exists and is writable, for PostgreSQL that the server is running, the database \
         exists and the user and password are right"
    )]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What sqlx reported.
        error: sqlx::Error,
    },
    /// The database server gave no answer in time (a host that drops the connection).
    #[error(
        "could not reach the database at {url}: no answer within {seconds} s; check the host and \
         port, and that no firewall drops the connection"
    )]
    ConnectTimeout {
        /// The URL, password redacted.
        url: String,
        /// How long the coordinator waited.
        seconds: u64,
    },
    /// Another coordinator holds the store ([`crate::store::Store::open_owned`]).
    #[error(
        "the store {url} is in use by another coordinator ({holder}); one store belongs to one \
         coordinator at a time: stop the other one first, or give this one a store of its own \
         (--database)"
    )]
    InUse {
        /// The store, password redacted.
        url: String,
        /// Who holds it, as far as the store can tell.
        holder: String,
    },
    /// The SQLite lock file beside the database could not be created or locked.
    #[error(
        "could not take the lock file {}: {error}; the folder of a SQLite store must exist and \
         be writable", path.display()
    )]
    LockFile {
        /// The lock file (`<database>.lock`).
        path: std::path::PathBuf,
        /// What the operating system reported.
        error: std::io::Error,
    },
    /// The store is gone or no longer this coordinator's (its file was deleted, its lock
    /// connection dropped).
    #[error(
        "the store {url} was lost: {what}; nothing more is written to it. Put the store back \
         (restore it from a backup) and run the same command again to resume after the last \
         round it holds"
    )]
    Lost {
        /// The store, password redacted.
        url: String,
        /// What happened to it.
        what: String,
    },
    /// The SQLite database path names something other than a regular file (a pipe would
    /// block the reader).
    #[error(transparent)]
    NotAFile(#[from] entente_core::files::FileError),
    /// The SQLite database file has more than one name: a second coordinator could take it
    /// through another name, with a lock and a write-ahead log of its own.
    #[error(
        "the store {} has {links} names (hard links); one store must have one name, or two \
         coordinators could each take it under another name: remove the other links",
        path.display()
    )]
    HardLinked {
        /// The database file.
        path: std::path::PathBuf,
        /// How many names it has.
        links: u64,
    },
    /// A SQLite store that is only to be read does not exist.
    #[error(
        "there is no store at {}: check the path (a store is created by `entente serve`); \
         reading a store never creates one", path.display()
    )]
    Missing {
        /// The database file asked for.
        path: std::path::PathBuf,
    },
    /// The database holds no audit log: it is not an entente store.
    #[error(
        "{url} is not an entente store (its audit log cannot be read: {error}); check the path or URL"
    )]
    NotAStore {
        /// The database, password redacted.
        url: String,
        /// What reading the audit log reported.
        error: sqlx::Error,
    },
    /// Applying the schema migrations failed.
    #[error(
        "could not bring the database schema up to date: {error}; if another entente version \
         wrote this database use that version (or a newer one), and never edit an applied \
         migration file"
    )]
    Migrate {
        /// What sqlx reported.
        error: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("{what} failed: {error}; check that the database is reachable and not read-only")]
    Query {
        /// What the store was doing.
        what: &'static str,
        /// What sqlx reported.
        error: sqlx::Error,
    },
    /// SQLite stayed locked by another writer past the busy timeout (5 s).
    #[error(
        "{what} failed: another process holds the SQLite database's write lock; only one \
         coordinator may write to a database, stop the other one"
    )]
    Busy {
        /// What the store was doing.
        what: &'static str,
    },

    // --- API misuse: calls out of order or with bad arguments.
    /// A write to a store opened with [`crate::store::Store::open_read_only`].
    #[error(
        "this store was opened read-only and cannot be written; open it with Store::open to write"
    )]
    ReadOnly,
    /// No run has this id.
    #[error("run {run} does not exist in this database; use the id that open_run returned")]
    UnknownRun {
        /// The id asked for.
        run: i64,
    },
    /// The run was finished by [`crate::store::Store::finish_run`].
    #[error("run {run} is already finished; call open_run to start a new run")]
    RunFinished {
        /// The run.
        run: i64,
    },
    /// An unfinished run with the same manifest digest has a different length.
    #[error(
        "run {run} was started with {stored} rounds but {requested} were asked for with the \
         same manifest digest; the digest must cover the number of rounds"
    )]
    TotalRoundsChanged {
        /// The run.
        run: i64,
        /// Rounds recorded when the run started.
        stored: u32,
        /// Rounds asked for now.
        requested: u32,
    },
    /// The round number is 0 or past the run's last round.
    #[error("round {round} is outside run {run}, whose rounds are 1..={total_rounds}")]
    RoundOutOfRange {
        /// The run.
        run: i64,
        /// The round asked for.
        round: u32,
        /// The run's number of rounds.
        total_rounds: u32,
    },
    /// A round was started before the ones before it finished.
    #[error(
        "round {round} of run {run} cannot start: round {next} is next; rounds run in order \
         (resume from RunState.completed + 1)"
    )]
    RoundOutOfOrder {
        /// The run.
        run: i64,
        /// The round asked for.
        round: u32,
        /// The round that may start now.
        next: u32,
    },
    /// A round was finished without being started.
    #[error("round {round} of run {run} was never started; call round_started first")]
    RoundNotStarted {
        /// The run.
        run: i64,
        /// The round.
        round: u32,
    },
    /// The round's result is already recorded; it is never applied twice.
    #[error(
        "round {round} of run {run} is already finished and its result recorded; a round is \
         applied once (resume from RunState.completed + 1)"
    )]
    RoundAlreadyFinished {
        /// The run.
        run: i64,
        /// The round.
        round: u32,
    },
    /// The same site appears twice among a round's participants.
    #[error(
        "site `{site}` is listed twice among the participants of round {round} of run {run}; list each site once"
    )]
    DuplicateParticipant {
        /// The run.
        run: i64,
        /// The round.
        round: u32,
        /// The repeated site.
        site: String,
    },
    /// The round metrics are not JSON.
    #[error("the metrics of round {round} are not valid JSON ({error}); pass a JSON document")]
    InvalidMetrics {
        /// The round.
        round: u32,
        /// Where parsing failed.
        error: serde_json::Error,
    },
    /// An argument does not fit the database's signed 64-bit integers.
    #[error("{what} is too large to store (the limit is {})", i64::MAX)]
    TooLarge {
        /// Which value.
        what: &'static str,
    },
    /// An audit event was malformed.
    #[error("audit event rejected: {problem}; give a non-empty kind and JSON detail")]
    InvalidAuditEvent {
        /// What is wrong with it.
        problem: String,
    },

    // --- Integrity: the stored data is not what was written.
    /// No checkpoint has this digest.
    #[error(
        "no checkpoint with SHA-256 {sha256} is stored; use a digest from RunState or round_finished"
    )]
    CheckpointMissing {
        /// The digest asked for.
        sha256: String,
    },
    /// The stored checkpoint bytes no longer hash to their key.
    #[error(
        "checkpoint {sha256} is corrupt: its stored bytes hash to {actual}; the database was \
         damaged or edited, restore it from a backup"
    )]
    CheckpointCorrupt {
        /// The digest asked for.
        sha256: String,
        /// The digest of the bytes actually stored.
        actual: String,
    },
    /// Another writer appended the same audit entry first.
    #[error(
        "another writer appended audit entry {seq} at the same time; only one coordinator may \
         write to a database, stop the other one"
    )]
    AuditConflict {
        /// The contested sequence number.
        seq: u64,
    },
    /// A stored value is out of range or unreadable.
    #[error("the database holds data entente did not write: {what}; restore it from a backup")]
    Corrupt {
        /// What was found.
        what: String,
    },
}
