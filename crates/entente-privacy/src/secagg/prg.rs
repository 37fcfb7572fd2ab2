//! Mask expansion: a 32-byte key is stretched into a vector of ring elements with the ChaCha20
//! keystream (RFC 8439 block function, all-zero nonce, block counter from 0). Each key is used
//! for exactly one stream, so the fixed nonce is safe.
//!
//! Masks are applied in coordinate chunks that run in parallel on the rayon thread pool: each
//! chunk seeks every key's stream to its own first block (ChaCha20 is a counter-mode cipher)
//! and adds or subtracts the keystream words directly into its slice of the vector. Ring
//! arithmetic modulo 2^32 / 2^64 is exact, so the result is bit-identical whatever the number
//! of threads, the chunking or the order in which the masks are applied.

use chacha20::ChaChaCore;
use chacha20::cipher::consts::U10;
use chacha20::cipher::{KeyIvInit, StreamCipherCore, StreamCipherSeekCore};
use rayon::prelude::*;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::encoding::Word;

/// The ChaCha20 core (20 rounds, RFC 8439 layout: 32-bit block counter, 96-bit nonce).
type Core = ChaChaCore<U10>;
/// One 64-byte keystream block.
type Block = chacha20::cipher::Block<Core>;

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

/// Bytes of one ChaCha20 block.
const BLOCK_BYTES: usize = 64;
/// Keystream bytes generated per step into a small staging buffer (stays in L1).
const STAGE_BYTES: usize = 4096;
/// Bytes of the vector each parallel task owns: every mask is applied to one chunk before
/// the next, so the chunk stays in cache however many masks there are. A multiple of the
/// staging buffer, hence of the block size, so every chunk starts on a block boundary.
pub(crate) const CHUNK_BYTES: usize = 32 * 1024;

/// Adds (or subtracts) the mask stream of `key` to `acc`, element-wise modulo 2^BITS.
pub(crate) fn apply_mask<W: Word>(acc: &mut [W], key: &MaskKey, sign: Sign) {
    apply_masks(acc, &[(key, sign)]);
}

/// Applies every mask of `masks` to `acc`: element `i` of the result is
/// `acc[i] ± stream_k[i]` over all keys `k`, modulo 2^BITS. Chunks of the vector are processed
/// in parallel on the current rayon pool; the result does not depend on the thread count.
pub(crate) fn apply_masks<W: Word>(acc: &mut [W], masks: &[(&MaskKey, Sign)]) {
    if masks.is_empty() || acc.is_empty() {
        return;
    }
    let total_blocks = (acc.len() * W::BYTES).div_ceil(BLOCK_BYTES);
    assert!(
        u32::try_from(total_blocks).is_ok(),
        "mask stream longer than the 2^32 blocks of the ChaCha20 counter"
    );
    acc.par_chunks_mut(CHUNK_BYTES / W::BYTES)
        .enumerate()
        .for_each(|(i, chunk)| {
            // Exact: `i * CHUNK_BYTES / BLOCK_BYTES < total_blocks <= u32::MAX`.
            let first_block = (i * (CHUNK_BYTES / BLOCK_BYTES)) as u32;
            apply_masks_to_chunk(chunk, first_block, masks);
        });
}

/// Applies the masks to `chunk`, whose first element is the first word of block `first_block`
/// of every stream, with the `chacha20` crate (its AVX2, SSE2 or portable backend).
fn apply_masks_to_chunk<W: Word>(chunk: &mut [W], first_block: u32, masks: &[(&MaskKey, Sign)]) {
    const STAGE_BLOCKS: usize = STAGE_BYTES / BLOCK_BYTES;
    let mut stage = [Block::default(); STAGE_BLOCKS];
    let words_per_block = BLOCK_BYTES / W::BYTES;
    let nonce = [0u8; 12];
    for &(key, sign) in masks {
        let mut core = Core::new(&key.0.into(), &nonce.into());
        core.set_block_pos(first_block);
        for part in chunk.chunks_mut(STAGE_BLOCKS * words_per_block) {
            let blocks = &mut stage[..part.len().div_ceil(words_per_block)];
            core.write_keystream_blocks(blocks);
            for (dst, ks) in part.chunks_mut(words_per_block).zip(blocks.iter()) {
                add_stage(dst, ks, sign);
            }
        }
    }
    for b in &mut stage {
        b.as_mut_slice().zeroize();
    }
}

/// `dst[i] ±= word i of ks` (little-endian words), modulo 2^BITS.
#[inline(always)]
fn add_stage<W: Word>(dst: &mut [W], ks: &[u8], sign: Sign) {
    let words = ks.chunks_exact(W::BYTES).map(W::from_le_slice);
    match sign {
        Sign::Plus => dst
            .iter_mut()
            .zip(words)
            .for_each(|(a, w)| *a = a.wrapping_add(w)),
        Sign::Minus => dst
            .iter_mut()
            .zip(words)
            .for_each(|(a, w)| *a = a.wrapping_sub(w)),
    }
}

/// The first `len` words of the mask stream of `key` (used by tests and known answers).
pub fn expand<W: Word>(key: &MaskKey, len: usize) -> Vec<W> {
    let mut out = vec![W::default(); len];
    apply_mask(&mut out, key, Sign::Plus);
    out
}
