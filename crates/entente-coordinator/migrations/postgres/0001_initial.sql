-- entente coordinator schema, version 1 (PostgreSQL).
-- Keep in step with ../sqlite/0001_initial.sql: same tables, same columns,
-- types chosen so that sqlx's Any driver decodes them identically
-- (INTEGER <-> BIGINT, REAL <-> DOUBLE PRECISION, BLOB <-> BYTEA).

-- One training run of a federation under one manifest.
CREATE TABLE runs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    federation       TEXT   NOT NULL,
    manifest_sha256  TEXT   NOT NULL,
    total_rounds     BIGINT NOT NULL CHECK (total_rounds >= 0),
    started_unix_ms  BIGINT NOT NULL,
    -- NULL while the run is unfinished (and may be resumed).
    finished_unix_ms BIGINT
);
CREATE INDEX runs_by_manifest ON runs (federation, manifest_sha256, finished_unix_ms);

-- Content-addressed bytes: global-model checkpoints (safetensors) and
-- server-optimizer states. Each distinct content is stored once.
CREATE TABLE checkpoints (
    sha256          TEXT   PRIMARY KEY,
    size_bytes      BIGINT NOT NULL,
    bytes           BYTEA  NOT NULL,
    created_unix_ms BIGINT NOT NULL
);

-- One row per round that was started; completed_unix_ms is set exactly once.
CREATE TABLE rounds (
    run_id            BIGINT NOT NULL REFERENCES runs (id),
    round             BIGINT NOT NULL CHECK (round >= 1),
    selected          TEXT   NOT NULL, -- JSON array of site ids
    started_unix_ms   BIGINT NOT NULL,
    completed_unix_ms BIGINT,
    metrics           TEXT,            -- JSON, set on completion
    checkpoint_sha256 TEXT REFERENCES checkpoints (sha256),
    optimizer_sha256  TEXT REFERENCES checkpoints (sha256),
    PRIMARY KEY (run_id, round)
);

-- Which sites took part in a completed round, and what happened to their update.
CREATE TABLE participants (
    run_id   BIGINT NOT NULL,
    round    BIGINT NOT NULL,
    site     TEXT   NOT NULL,
    accepted BIGINT NOT NULL CHECK (accepted IN (0, 1)),
    reason   TEXT,
    examples BIGINT NOT NULL CHECK (examples >= 0),
    loss     DOUBLE PRECISION,         -- NULL when the reported loss was not finite
    PRIMARY KEY (run_id, round, site),
    FOREIGN KEY (run_id, round) REFERENCES rounds (run_id, round)
);

-- Append-only, hash-chained audit log (see src/audit/hash.rs for the hash).
-- seq is the primary key so that two writers cannot both append entry N.
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY CHECK (seq >= 1),
    at_unix_ms BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    run_id     BIGINT,
    round      BIGINT,
    site       TEXT,
    detail     TEXT   NOT NULL,
    prev_hash  TEXT   NOT NULL,
    hash       TEXT   NOT NULL
);

-- Refuse edits through the database too; the hash chain detects what gets past this.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
