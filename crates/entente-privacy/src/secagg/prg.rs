//! Mask expansion: a 32-byte key is stretched into a vector of ring elements with the ChaCha20
//! keystream (RFC 8439 block function, all-zero nonce, block counter from 0). Each key is used
//! for exactly one stream, so the fixed nonce is safe.
//!
//! Masks are applied in coordinate chunks that run in parallel on the rayon thread pool: each
//! chunk seeks every key's stream to its own first block (ChaCha20 is a counter-mode cipher)
//! and adds or subtracts the keystream words directly into its slice of the vector. Ring
//! arithmetic modulo 2^32 / 2^64 is exact, so the result is bit-identical whatever the number
//! of threads, the chunking or the order in which the masks are applied.
//!
//! The keystream comes from the RustCrypto `chacha20` crate (0.10), whose backend is picked at
//! run time: AVX-512 (16 blocks at a time) when the crate is built with `--cfg chacha20_avx512`
//! (set for the workspace in `.cargo/config.toml`) and the CPU has AVX-512F/VL, else AVX2, SSE2
//! or portable code. Every backend computes the same RFC 8439 keystream.

use chacha20::cipher::consts::U64;
use chacha20::cipher::{
    BlockSizeUser, KeyIvInit, ParBlocks, StreamCipherBackend, StreamCipherClosure, StreamCipherCore,
};
use chacha20::variants::Ietf;
use chacha20::{ChaChaCore, R20};
use rayon::prelude::*;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::encoding::Word;

/// The ChaCha20 core (20 rounds, RFC 8439 layout: 32-bit block counter, 96-bit nonce).
type Core = ChaChaCore<R20, Ietf>;
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
/// Bytes of the vector each parallel task owns: every mask is applied to one chunk before
/// the next, so the chunk stays in cache however many masks there are. A multiple of the
/// block size, so every chunk starts on a block boundary.
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
/// of every stream.
fn apply_masks_to_chunk<W: Word>(chunk: &mut [W], first_block: u32, masks: &[(&MaskKey, Sign)]) {
    let nonce = [0u8; 12];
    for &(key, sign) in masks {
        let mut core = Core::new(&key.0.into(), &nonce.into());
        core.set_block_pos(first_block);
        core.process_with_backend(AddKeystream { dst: chunk, sign });
    }
}

/// Adds (or subtracts) the keystream, from the core's current block on, to `dst`.
///
/// Run through [`StreamCipherCore::process_with_backend`], like the crate's own
/// `write_keystream_blocks` and `apply_keystream_blocks`: the backend (AVX-512, AVX2, ...)
/// generates its natural batch of blocks (16 with AVX-512) into a small buffer that stays in
/// L1, and the words are folded into `dst` right away, without a separate staging pass.
struct AddKeystream<'a, W: Word> {
    dst: &'a mut [W],
    sign: Sign,
}

impl<W: Word> BlockSizeUser for AddKeystream<'_, W> {
    type BlockSize = U64;
}

impl<W: Word> StreamCipherClosure for AddKeystream<'_, W> {
    #[inline(always)]
    fn call<B: StreamCipherBackend<BlockSize = U64>>(self, backend: &mut B) {
        let words_per_block = BLOCK_BYTES / W::BYTES;
        let mut buf = ParBlocks::<B>::default();
        let batch_blocks = buf.len();
        let mut parts = self.dst.chunks_exact_mut(batch_blocks * words_per_block);
        for part in &mut parts {
            backend.gen_par_ks_blocks(&mut buf);
            add_keystream(part, Block::slice_as_flattened(&buf), self.sign);
        }
        let rest = parts.into_remainder();
        if !rest.is_empty() {
            // `gen_tail_blocks` takes fewer blocks than a full batch; a partial last block
            // can still need a full one.
            let blocks = rest.len().div_ceil(words_per_block);
            if blocks == batch_blocks {
                backend.gen_par_ks_blocks(&mut buf);
            } else {
                backend.gen_tail_blocks(&mut buf[..blocks]);
            }
            add_keystream(rest, Block::slice_as_flattened(&buf[..blocks]), self.sign);
        }
        Block::slice_as_flattened_mut(&mut buf).zeroize();
    }
}

/// `dst[i] ±= word i of ks` (little-endian words), modulo 2^BITS; `ks` may run past `dst`.
#[inline(always)]
fn add_keystream<W: Word>(dst: &mut [W], ks: &[u8], sign: Sign) {
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

#[cfg(test)]
mod tests {
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    use super::*;

    /// The mask stream equals the keystream of an independent ChaCha20 implementation
    /// (`rand_chacha`, on `ppv-lite86`): with a zero nonce and fewer than 2^32 blocks its
    /// 64-bit counter / 64-bit stream layout is the RFC 8439 state. Long enough to cover
    /// full batches of the widest backend, tails of every length and several chunks.
    #[test]
    fn mask_stream_matches_an_independent_chacha20() {
        for (i, len) in [1usize, 255, 256, 257, 1000, 3 * CHUNK_BYTES / 4 + 77]
            .into_iter()
            .enumerate()
        {
            let seed = [i as u8 + 17; 32];
            let mut rng = ChaCha20Rng::from_seed(seed);
            let want: Vec<u32> = (0..len).map(|_| rng.next_u32()).collect();
            assert_eq!(
                expand::<u32>(&MaskKey::from_bytes(seed), len),
                want,
                "u32 {len}"
            );
            let mut rng = ChaCha20Rng::from_seed(seed);
            let want: Vec<u64> = (0..len).map(|_| rng.next_u64()).collect();
            assert_eq!(
                expand::<u64>(&MaskKey::from_bytes(seed), len),
                want,
                "u64 {len}"
            );
        }
    }
}
