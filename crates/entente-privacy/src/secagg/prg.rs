//! Mask expansion: a 32-byte key is stretched into a vector of ring elements by a
//! pseudorandom generator, one of two keystreams ([`MaskPrg`], fixed for the whole round in
//! [`SecAggConfig::prg`](super::SecAggConfig::prg), so every site and the coordinator expand
//! the same masks):
//!
//! - [`MaskPrg::ChaCha20`]: the ChaCha20 keystream (RFC 8439 block function, the 32 bytes as
//!   the key, all-zero nonce, block counter from 0).
//! - [`MaskPrg::Aes128Ctr`]: AES-128 in counter mode (NIST SP 800-38A), the PRG of Bonawitz et
//!   al. Bytes 0..16 of the key are the AES-128 key, bytes 16..32 the initial counter block
//!   `T_0`; block `i` of the stream is `AES_k(T_0 + i mod 2^128)`, the 128-bit big-endian
//!   increment (SP 800-38A's standard incrementing function over the whole block).
//!
//! Each key is used for exactly one stream, so a fixed nonce (ChaCha20) or a counter block
//! taken from the key itself (AES) is safe: every key is an independent HKDF-SHA256 output,
//! and no (key, counter block) pair ever repeats, since a stream is far shorter than the 2^128
//! counter blocks (and the 2^32 ChaCha20 blocks, checked). Taking `T_0` from the second half
//! costs nothing and keeps the 32-byte key layout of ChaCha20; AES-128's security rests on its
//! 128-bit key alone. As a PRG, AES-CTR is distinguishable from random only through the absence
//! of repeated blocks within one stream, with advantage at most `q^2 / 2^129` for `q` blocks
//! (about 2^-93 for one 1M-word mask at 32 bits).
//!
//! Masks are applied in coordinate chunks that run in parallel on the rayon thread pool: each
//! chunk seeks every key's stream to its own first block (both are counter-mode ciphers) and
//! adds or subtracts the keystream words directly into its slice of the vector. Ring
//! arithmetic modulo 2^32 / 2^64 is exact, so the result is bit-identical whatever the number
//! of threads, the chunking or the order in which the masks are applied.
//!
//! Both keystreams come from audited RustCrypto crates on the same `cipher` 0.5 traits, with
//! backends picked at run time:
//! - `chacha20` 0.10: AVX-512 (16 blocks at a time) when the crate is built with
//!   `--cfg chacha20_avx512` (set for the workspace in `.cargo/config.toml`) and the CPU has
//!   AVX-512F/VL, else AVX2, SSE2 or portable code;
//! - `aes` 0.9 with `ctr` 0.10: VAES on 512-bit registers (64 blocks at a time) with AVX-512F,
//!   VAES on 256-bit registers, AES-NI, or a constant-time bitsliced software fallback.
//!
//! Every backend computes the same keystream.

use std::marker::PhantomData;

use aes::Aes128Enc;
use chacha20::cipher::array::{Array, ArraySize};
use chacha20::cipher::consts::{U16, U32};
use chacha20::cipher::typenum::Unsigned;
use chacha20::cipher::{
    BlockSizeUser, KeyIvInit, ParBlocks, StreamCipherBackend, StreamCipherClosure,
    StreamCipherCore, StreamCipherSeekCore,
};
use chacha20::variants::Ietf;
use chacha20::{ChaChaCore, R20};
use ctr::CtrCore;
use ctr::flavors::Ctr128BE;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::encoding::Word;

/// The ChaCha20 core (20 rounds, RFC 8439 layout: 32-bit block counter, 96-bit nonce).
type ChaCha = ChaChaCore<R20, Ietf>;
/// AES-128 in counter mode with a 128-bit big-endian counter (SP 800-38A).
type Aes128Ctr = CtrCore<Aes128Enc, Ctr128BE>;

/// The pseudorandom generator that stretches mask keys into masks. Part of the round's
/// settings: every site and the coordinator must use the same one (in a manifest,
/// `secure_aggregation.prg`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MaskPrg {
    /// ChaCha20 keystream (RFC 8439): the key as the ChaCha20 key, zero nonce, counter from 0.
    ChaCha20,
    /// AES-128-CTR (SP 800-38A): key bytes 0..16 as the AES key, bytes 16..32 as the initial
    /// counter block, incremented as one 128-bit big-endian integer.
    #[default]
    Aes128Ctr,
}

impl MaskPrg {
    /// Every generator, in the order the manifest documents them.
    pub const ALL: [MaskPrg; 2] = [MaskPrg::Aes128Ctr, MaskPrg::ChaCha20];

    /// The generator as a manifest spells it: `"chacha20"` or `"aes128-ctr"`.
    pub fn as_str(self) -> &'static str {
        match self {
            MaskPrg::ChaCha20 => "chacha20",
            MaskPrg::Aes128Ctr => "aes128-ctr",
        }
    }
}

impl std::fmt::Display for MaskPrg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<entente_core::manifest::SecAggPrg> for MaskPrg {
    fn from(prg: entente_core::manifest::SecAggPrg) -> Self {
        match prg {
            entente_core::manifest::SecAggPrg::ChaCha20 => MaskPrg::ChaCha20,
            entente_core::manifest::SecAggPrg::Aes128Ctr => MaskPrg::Aes128Ctr,
        }
    }
}

/// A name that is not one of the [`MaskPrg`] generators.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown mask generator `{0}`; allowed: \"aes128-ctr\", \"chacha20\"")]
pub struct UnknownPrg(pub String);

impl std::str::FromStr for MaskPrg {
    type Err = UnknownPrg;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MaskPrg::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownPrg(s.chars().take(40).collect()))
    }
}

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

/// Bytes of the vector each parallel task owns: every mask is applied to one chunk before
/// the next, so the chunk stays in cache however many masks there are. A multiple of both
/// block sizes (64 bytes for ChaCha20, 16 for AES), so every chunk starts on a block boundary.
pub(crate) const CHUNK_BYTES: usize = 32 * 1024;

/// Adds (or subtracts) the mask stream of `key` to `acc`, element-wise modulo 2^BITS.
pub(crate) fn apply_mask<W: Word>(prg: MaskPrg, acc: &mut [W], key: &MaskKey, sign: Sign) {
    apply_masks(prg, acc, &[(key, sign)]);
}

/// Applies every mask of `masks` to `acc`: element `i` of the result is
/// `acc[i] ± stream_k[i]` over all keys `k`, modulo 2^BITS, each stream from `prg`. Chunks of
/// the vector are processed in parallel on the current rayon pool; the result does not depend
/// on the thread count.
pub(crate) fn apply_masks<W: Word>(prg: MaskPrg, acc: &mut [W], masks: &[(&MaskKey, Sign)]) {
    if masks.is_empty() || acc.is_empty() {
        return;
    }
    match prg {
        MaskPrg::ChaCha20 => {
            let total_blocks = (acc.len() * W::BYTES).div_ceil(64);
            assert!(
                u32::try_from(total_blocks).is_ok(),
                "mask stream longer than the 2^32 blocks of the ChaCha20 counter"
            );
            apply_masks_with(acc, masks, |key, first_block| {
                let mut core = ChaCha::new(&key.0.into(), &[0u8; 12].into());
                // Exact: `first_block < total_blocks <= u32::MAX`.
                core.set_block_pos(first_block as u32);
                core
            });
        }
        MaskPrg::Aes128Ctr => apply_masks_with(acc, masks, |key, first_block| {
            let whole: &Array<u8, U32> = (&key.0).into();
            let (aes_key, counter_block) = whole.split_ref::<U16>();
            let mut core = Aes128Ctr::new(aes_key, counter_block);
            core.set_block_pos(first_block as u128);
            core
        }),
    }
}

/// The chunked, parallel expansion over any counter-mode core: `core_at(key, b)` is the core
/// of `key`'s stream positioned at block `b`.
fn apply_masks_with<W: Word, C: StreamCipherCore>(
    acc: &mut [W],
    masks: &[(&MaskKey, Sign)],
    core_at: impl Fn(&MaskKey, usize) -> C + Sync,
) {
    let block_bytes = C::BlockSize::USIZE;
    debug_assert_eq!(CHUNK_BYTES % block_bytes, 0);
    debug_assert_eq!(block_bytes % W::BYTES, 0);
    acc.par_chunks_mut(CHUNK_BYTES / W::BYTES)
        .enumerate()
        .for_each(|(i, chunk)| {
            // The chunk's first element is the first word of this block of every stream.
            let first_block = i * (CHUNK_BYTES / block_bytes);
            for &(key, sign) in masks {
                core_at(key, first_block).process_with_backend(AddKeystream {
                    dst: &mut *chunk,
                    sign,
                    block: PhantomData,
                });
            }
        });
}

/// Adds (or subtracts) the keystream, from the core's current block on, to `dst`.
///
/// Run through [`StreamCipherCore::process_with_backend`], like the crates' own
/// `write_keystream_blocks` and `apply_keystream_blocks`: the backend (AVX-512, AVX2, VAES,
/// AES-NI, ...) generates its natural batch of blocks (16 ChaCha20 blocks with AVX-512, 64 AES
/// blocks with VAES-512) into a small buffer that stays in L1, and the words are folded into
/// `dst` right away, without a separate staging pass.
struct AddKeystream<'a, W: Word, BS: ArraySize> {
    dst: &'a mut [W],
    sign: Sign,
    block: PhantomData<BS>,
}

impl<W: Word, BS: ArraySize> BlockSizeUser for AddKeystream<'_, W, BS> {
    type BlockSize = BS;
}

impl<W: Word, BS: ArraySize> StreamCipherClosure for AddKeystream<'_, W, BS> {
    #[inline(always)]
    fn call<B: StreamCipherBackend<BlockSize = BS>>(self, backend: &mut B) {
        let words_per_block = BS::USIZE / W::BYTES;
        let mut buf = ParBlocks::<B>::default();
        let batch_blocks = buf.len();
        let mut parts = self.dst.chunks_exact_mut(batch_blocks * words_per_block);
        for part in &mut parts {
            backend.gen_par_ks_blocks(&mut buf);
            add_keystream(part, Array::slice_as_flattened(&buf), self.sign);
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
            add_keystream(rest, Array::slice_as_flattened(&buf[..blocks]), self.sign);
        }
        Array::slice_as_flattened_mut(&mut buf).zeroize();
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

/// The first `len` words of the mask stream of `key` under `prg` (used by tests, known
/// answers and benchmarks).
pub fn expand<W: Word>(prg: MaskPrg, key: &MaskKey, len: usize) -> Vec<W> {
    let mut out = vec![W::default(); len];
    apply_mask(prg, &mut out, key, Sign::Plus);
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
                expand::<u32>(MaskPrg::ChaCha20, &MaskKey::from_bytes(seed), len),
                want,
                "u32 {len}"
            );
            let mut rng = ChaCha20Rng::from_seed(seed);
            let want: Vec<u64> = (0..len).map(|_| rng.next_u64()).collect();
            assert_eq!(
                expand::<u64>(MaskPrg::ChaCha20, &MaskKey::from_bytes(seed), len),
                want,
                "u64 {len}"
            );
        }
    }

    /// The manifest's default is the protocol's, the names are the manifest's, and a name that
    /// is neither is refused.
    #[test]
    fn generator_names_and_defaults_agree_with_the_manifest() {
        use entente_core::manifest::SecAggPrg;
        assert_eq!(MaskPrg::from(SecAggPrg::default()), MaskPrg::default());
        for core in [SecAggPrg::Aes128Ctr, SecAggPrg::ChaCha20] {
            let prg = MaskPrg::from(core);
            assert_eq!(prg.as_str(), core.as_str());
            assert_eq!(prg.as_str().parse::<MaskPrg>(), Ok(prg));
            assert_eq!(prg.to_string(), prg.as_str());
        }
        assert_eq!(
            "aes256".parse::<MaskPrg>(),
            Err(UnknownPrg("aes256".into()))
        );
    }

    /// ChaCha20's stream of the same key as AES-CTR's differs, and the generators are not
    /// interchangeable: masks of one are not removed by the other.
    #[test]
    fn masks_cancel_only_under_the_same_generator() {
        let key = MaskKey::from_bytes([3; 32]);
        let start: Vec<u32> = (0..777).collect();
        let mut v = start.clone();
        apply_mask(MaskPrg::Aes128Ctr, &mut v, &key, Sign::Plus);
        apply_mask(MaskPrg::ChaCha20, &mut v, &key, Sign::Minus);
        assert_ne!(v, start);
        apply_mask(MaskPrg::ChaCha20, &mut v, &key, Sign::Plus);
        apply_mask(MaskPrg::Aes128Ctr, &mut v, &key, Sign::Minus);
        assert_eq!(v, start);
    }
}
