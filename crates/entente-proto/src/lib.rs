//! The entente wire: the protobuf schema (`proto/entente.proto`) and its generated gRPC code,
//! conversions between wire messages and the engine's types, chunked parameter streams, and
//! the federation's mutual-TLS identities.

pub mod chunks;
pub mod convert;
pub mod tls;
pub mod upload;

/// Largest gRPC message either side accepts or sends: a parameter chunk is 256 KiB and every
/// other message is small, so this bounds what one message can make the other side hold.
pub const MAX_MESSAGE: usize = 8 << 20;

/// Generated protobuf messages and gRPC client and server of `entente.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("entente.v1");
}

/// A wire message that does not make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A chunk does not continue where the previous one ended.
    #[error("chunk at value {got} out of order: expected value {expected} next")]
    OutOfOrder {
        /// Offset the chunk claims.
        got: u64,
        /// Offset that should come next.
        expected: u64,
    },
    /// A chunk's byte length is not a whole number of `f32` values.
    #[error("chunk of {0} bytes is not a whole number of 4-byte values")]
    Ragged(usize),
    /// A chunk holds no values.
    #[error("empty chunk: every chunk must carry at least one value")]
    Empty,
    /// More values arrived than the layout holds.
    #[error("{got} values sent, but the layout holds {expected}")]
    TooMany {
        /// Values received so far.
        got: u64,
        /// Values the layout holds.
        expected: u64,
    },
    /// The stream ended before every value arrived.
    #[error("the stream ended after {got} of {expected} values")]
    Truncated {
        /// Values received.
        got: u64,
        /// Values the layout holds.
        expected: u64,
    },
    /// A message lacks a field it needs, or has one it should not.
    #[error("malformed message: {0}")]
    Malformed(String),
}
