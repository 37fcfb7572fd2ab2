//! A secure-aggregation reply as a stream of byte parts. A masked input is as large as the
//! model (4 or 8 bytes a value), so it cannot travel inline in a result header under
//! [`MAX_MESSAGE`](crate::MAX_MESSAGE): the header announces its length
//! (`SecureSpec.streamed_bytes`) and the bytes follow as `envelope_part` frames of at most
//! [`PART_BYTES`], once the coordinator asks for them, as parameters do.

use crate::WireError;

/// Bytes per part: 256 KiB, the size of a parameter chunk.
pub const PART_BYTES: usize = 256 * 1024;

/// The parts `bytes` is cut into, lazily: a sender holds one part at a time beyond the reply.
pub fn parts_of(bytes: Vec<u8>) -> impl Iterator<Item = Vec<u8>> + Send {
    let count = bytes.len().div_ceil(PART_BYTES);
    (0..count).map(move |i| {
        let start = i * PART_BYTES;
        bytes[start..(start + PART_BYTES).min(bytes.len())].to_vec()
    })
}

/// Reassembles a reply of an announced length from parts that arrive in order.
#[derive(Debug)]
pub struct EnvelopeAssembler {
    expected: usize,
    bytes: Vec<u8>,
}

impl EnvelopeAssembler {
    /// Expects exactly `expected` bytes, which the caller has checked against its own limit.
    /// Memory grows with what arrives, not with the announcement.
    pub fn new(expected: usize) -> Self {
        Self {
            expected,
            bytes: Vec::with_capacity(expected.min(PART_BYTES)),
        }
    }

    /// Appends one part: not empty, at most [`PART_BYTES`], and not past the announced length.
    pub fn push(&mut self, part: &[u8]) -> Result<(), WireError> {
        if part.is_empty() {
            return Err(WireError::EmptyPart);
        }
        if part.len() > PART_BYTES {
            return Err(WireError::PartTooLarge {
                len: part.len(),
                limit: PART_BYTES,
            });
        }
        let (have, need) = (self.bytes.len(), self.bytes.len() + part.len());
        if need > self.expected {
            return Err(WireError::EnvelopeOverrun {
                got: need as u64,
                expected: self.expected as u64,
            });
        }
        if need > self.bytes.capacity() {
            // Grow geometrically, but never past the announced length.
            let want = (have * 2).clamp(need, self.expected);
            self.bytes.reserve_exact(want - have);
        }
        self.bytes.extend_from_slice(part);
        Ok(())
    }

    /// The reply, once every announced byte has arrived.
    pub fn finish(self) -> Result<Vec<u8>, WireError> {
        if self.bytes.len() == self.expected {
            Ok(self.bytes)
        } else {
            Err(WireError::EnvelopeTruncated {
                got: self.bytes.len() as u64,
                expected: self.expected as u64,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_across_part_boundaries() {
        for len in [
            1,
            PART_BYTES - 1,
            PART_BYTES,
            PART_BYTES + 1,
            3 * PART_BYTES + 7,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let parts: Vec<Vec<u8>> = parts_of(bytes.clone()).collect();
            assert_eq!(parts.len(), len.div_ceil(PART_BYTES));
            assert!(parts.iter().all(|p| !p.is_empty() && p.len() <= PART_BYTES));
            let mut a = EnvelopeAssembler::new(len);
            for p in &parts {
                a.push(p).unwrap();
            }
            assert_eq!(a.finish().unwrap(), bytes);
        }
        assert_eq!(parts_of(Vec::new()).count(), 0);
    }

    #[test]
    fn empty_oversized_overrunning_and_short_replies_are_errors() {
        let mut a = EnvelopeAssembler::new(10);
        assert_eq!(a.push(&[]), Err(WireError::EmptyPart));
        assert_eq!(
            a.push(&vec![0; PART_BYTES + 1]),
            Err(WireError::PartTooLarge {
                len: PART_BYTES + 1,
                limit: PART_BYTES
            })
        );
        a.push(&[1; 6]).unwrap();
        assert_eq!(
            a.push(&[2; 5]),
            Err(WireError::EnvelopeOverrun {
                got: 11,
                expected: 10
            })
        );
        assert_eq!(
            a.finish(),
            Err(WireError::EnvelopeTruncated {
                got: 6,
                expected: 10
            })
        );
    }

    proptest! {
        /// Whatever parts arrive, the assembler returns an error or exactly the announced
        /// length, and never holds more than it announced.
        #[test]
        fn arbitrary_parts_never_panic(
            expected in 0usize..64,
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..6),
        ) {
            let mut a = EnvelopeAssembler::new(expected);
            for p in parts {
                if a.push(&p).is_err() {
                    break;
                }
                prop_assert!(a.bytes.len() <= expected);
            }
            if let Ok(v) = a.finish() {
                prop_assert_eq!(v.len(), expected);
            }
        }
    }
}
