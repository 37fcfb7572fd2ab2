//! The entente wire: the protobuf schema (`proto/entente.proto`) and its generated gRPC code,
//! conversions between wire messages and the engine's types, chunked parameter streams, and
//! the federation's mutual-TLS identities.

pub mod chunks;
pub mod convert;
pub mod envelope;
pub mod tls;
pub mod upload;

/// Largest gRPC message either side accepts or sends: a parameter chunk or a part of a secure-aggregation
/// reply is 256 KiB and every other message is small, so this bounds what one message can make the other side hold.
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
    /// A part of a streamed secure-aggregation reply holds no bytes.
    #[error("empty reply part: every part must carry at least one byte")]
    EmptyPart,
    /// A part of a streamed secure-aggregation reply is larger than a part may be.
    #[error("a reply part of {len} bytes is larger than the {limit} bytes a part may hold")]
    PartTooLarge {
        /// The part's length.
        len: usize,
        /// The largest part allowed.
        limit: usize,
    },
    /// A streamed secure-aggregation reply runs past the length its header announced.
    #[error("the reply's parts come to {got} bytes, but its header announced {expected}")]
    EnvelopeOverrun {
        /// Bytes received, the offending part included.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// A streamed secure-aggregation reply ended before the length its header announced.
    #[error("the reply ended after {got} of the {expected} bytes its header announced")]
    EnvelopeTruncated {
        /// Bytes received.
        got: u64,
        /// Bytes announced.
        expected: u64,
    },
    /// A message lacks a field it needs, or has one it should not.
    #[error("malformed message: {0}")]
    Malformed(String),
}
