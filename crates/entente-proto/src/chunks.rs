//! Parameters as streams of chunks: a sender cuts a flat `f32` buffer into chunks of at most
//! [`CHUNK_VALUES`] values; a receiver checks each chunk's position and reassembles the buffer.
//! No message grows with the model, so parameter sets of any size fit under gRPC's message
//! limit, and a sender holds one chunk at a time beyond the buffer itself.

use std::sync::Arc;

use entente_core::f32_bytes;
use entente_core::params::ParamSet;

use crate::WireError;
use crate::v1::Chunk;

/// Values per chunk: 64 Ki values, 256 KiB on the wire. Small enough that a coordinator
/// serving hundreds of nodes holds little per connection, large enough that framing costs
/// nothing measurable.
pub const CHUNK_VALUES: usize = 64 * 1024;

/// Chunk `index` of `values` (`None` past the end), for lazily built streams.
pub fn chunk_at(values: &[f32], index: usize) -> Option<Chunk> {
    let start = index.checked_mul(CHUNK_VALUES)?;
    if start >= values.len() {
        return None;
    }
    let end = (start + CHUNK_VALUES).min(values.len());
    Some(Chunk {
        offset: start as u64,
        values: f32_bytes::as_le_bytes(&values[start..end]).into_owned(),
    })
}

/// Every chunk of `params`, cut lazily: a sender holds one chunk at a time.
pub fn chunks_of(params: Arc<ParamSet>) -> impl Iterator<Item = Chunk> + Send {
    (0..).map_while(move |i| chunk_at(params.as_flat(), i))
}

/// Number of chunks `values` is cut into.
pub fn chunk_count(len: usize) -> usize {
    len.div_ceil(CHUNK_VALUES)
}

/// Reassembles a flat buffer of a known length from chunks that must arrive in order.
#[derive(Debug)]
pub struct Assembler {
    expected: usize,
    values: Vec<f32>,
}

impl Assembler {
    /// Expects exactly `expected` values. Memory grows with what arrives, not with the claim.
    pub fn new(expected: usize) -> Self {
        Self {
            expected,
            values: Vec::with_capacity(expected.min(CHUNK_VALUES)),
        }
    }

    /// Appends one chunk, checking its position, its length and that it does not overrun.
    pub fn push(&mut self, chunk: &Chunk) -> Result<(), WireError> {
        let have = self.values.len() as u64;
        if chunk.offset != have {
            return Err(WireError::OutOfOrder {
                got: chunk.offset,
                expected: have,
            });
        }
        if !chunk.values.len().is_multiple_of(4) {
            return Err(WireError::Ragged(chunk.values.len()));
        }
        let n = chunk.values.len() / 4;
        if n == 0 {
            // An empty chunk moves nothing forward: it could only keep a transfer alive.
            return Err(WireError::Empty);
        }
        if self.values.len() + n > self.expected {
            return Err(WireError::TooMany {
                got: have + n as u64,
                expected: self.expected as u64,
            });
        }
        let (len, need) = (self.values.len(), self.values.len() + n);
        if need > self.values.capacity() {
            // Grow geometrically, but never past what the layout holds.
            let want = (len * 2).clamp(need, self.expected);
            self.values.reserve_exact(want - len);
        }
        f32_bytes::extend_from_le_bytes(&mut self.values, &chunk.values);
        Ok(())
    }

    /// The buffer, once every value has arrived.
    pub fn finish(self) -> Result<Vec<f32>, WireError> {
        if self.values.len() == self.expected {
            Ok(self.values)
        } else {
            Err(WireError::Truncated {
                got: self.values.len() as u64,
                expected: self.expected as u64,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_chunks(values: &[f32]) -> Vec<Chunk> {
        (0..).map_while(|i| chunk_at(values, i)).collect()
    }

    #[test]
    fn round_trip_across_chunk_boundaries() {
        for len in [
            0,
            1,
            CHUNK_VALUES - 1,
            CHUNK_VALUES,
            CHUNK_VALUES + 1,
            3 * CHUNK_VALUES + 7,
        ] {
            let values: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let chunks = all_chunks(&values);
            assert_eq!(chunks.len(), chunk_count(len));
            let mut a = Assembler::new(len);
            for c in &chunks {
                a.push(c).unwrap();
            }
            assert_eq!(a.finish().unwrap(), values);
        }
    }

    #[test]
    fn out_of_order_overrun_ragged_empty_and_truncated_are_errors() {
        let values = vec![1.0f32; CHUNK_VALUES + 10];
        let chunks = all_chunks(&values);
        let mut a = Assembler::new(values.len());
        assert!(matches!(
            a.push(&chunks[1]),
            Err(WireError::OutOfOrder { .. })
        ));
        a.push(&chunks[0]).unwrap();
        let ragged = Chunk {
            offset: CHUNK_VALUES as u64,
            values: vec![0; 5],
        };
        assert_eq!(a.push(&ragged), Err(WireError::Ragged(5)));
        let empty = Chunk {
            offset: CHUNK_VALUES as u64,
            values: vec![],
        };
        assert_eq!(a.push(&empty), Err(WireError::Empty));
        let long = Chunk {
            offset: CHUNK_VALUES as u64,
            values: vec![0; 44],
        };
        assert!(matches!(a.push(&long), Err(WireError::TooMany { .. })));
        assert!(
            matches!(a.finish(), Err(WireError::Truncated { got, .. }) if got == CHUNK_VALUES as u64)
        );
    }

    proptest! {
        /// Whatever chunks arrive, the assembler returns an error or the exact buffer; it never
        /// panics and never holds more than it was told to expect.
        #[test]
        fn arbitrary_chunks_never_panic(
            expected in 0usize..64,
            chunks in proptest::collection::vec((0u64..80, proptest::collection::vec(any::<u8>(), 0..70)), 0..6),
        ) {
            let mut a = Assembler::new(expected);
            for (offset, values) in chunks {
                if a.push(&Chunk { offset, values }).is_err() {
                    break;
                }
            }
            if let Ok(v) = a.finish() {
                prop_assert_eq!(v.len(), expected);
            }
        }
    }
}
