//! Mask expansion: a 32-byte key is stretched into a vector of ring elements with the ChaCha20
//! keystream (RFC 8439 block function, all-zero nonce, block counter from 0). Each key is used
//! for exactly one stream, so the fixed nonce is safe.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::encoding::Word;

/// Key of one mask stream (pairwise or self mask), derived with HKDF-SHA256.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct MaskKey(pub(crate) [u8; 32]);

impl MaskKey {
    /// Wraps raw key bytes (for known-answer tests; the protocol derives keys with HKDF).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MaskKey(bytes)
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for MaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MaskKey(..)")
    }
}

/// Whether a mask stream is added to or subtracted from a vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sign {
    /// Add the stream (wrapping).
    Plus,
    /// Subtract the stream (wrapping).
    Minus,
}

/// Keystream bytes generated per step; a multiple of the 64-byte ChaCha block.
const BUF_BYTES: usize = 8192;

/// Adds (or subtracts) the mask stream of `key` to `acc`, element-wise modulo 2^BITS.
pub(crate) fn apply_mask<W: Word>(acc: &mut [W], key: &MaskKey, sign: Sign) {
    let mut cipher = ChaCha20::new(&key.0.into(), &[0u8; 12].into());
    let mut buf = [0u8; BUF_BYTES];
    let per_buf = BUF_BYTES / W::BYTES;
    for block in acc.chunks_mut(per_buf) {
        let bytes = &mut buf[..block.len() * W::BYTES];
        bytes.fill(0);
        cipher.apply_keystream(bytes);
        let words = bytes.chunks_exact(W::BYTES).map(W::from_le_slice);
        match sign {
            Sign::Plus => block
                .iter_mut()
                .zip(words)
                .for_each(|(a, w)| *a = a.wrapping_add(w)),
            Sign::Minus => block
                .iter_mut()
                .zip(words)
                .for_each(|(a, w)| *a = a.wrapping_sub(w)),
        }
    }
    buf.zeroize();
}

/// The first `len` words of the mask stream of `key` (used by tests and known answers).
pub fn expand<W: Word>(key: &MaskKey, len: usize) -> Vec<W> {
    let mut out = vec![W::default(); len];
    apply_mask(&mut out, key, Sign::Plus);
    out
}
