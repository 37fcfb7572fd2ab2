-- entente coordinator schema, version 2 (PostgreSQL).
-- Keep in step with ../sqlite/0002_checkpoint_pieces.sql.

-- Checkpoint bytes in pieces of at most 1 MiB, in order: a model of any size is
-- stored without one value as large as the model (nor its copies in memory), and
-- past bytea's 1 GiB limit. Checkpoints stored this way keep an empty
-- checkpoints.bytes; rows written by version 1 keep their bytes there and have
-- no pieces.
CREATE TABLE checkpoint_pieces (
    sha256 TEXT   NOT NULL REFERENCES checkpoints (sha256),
    seq    BIGINT NOT NULL CHECK (seq >= 0),
    bytes  BYTEA  NOT NULL,
    PRIMARY KEY (sha256, seq)
);
