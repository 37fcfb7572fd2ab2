//! Parallel mask expansion: chunked, seeking expansion equals the sequential ChaCha20 and
//! AES-128-CTR keystreams, and whole rounds are bit-identical whatever the rayon thread count.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};

use super::{config, inputs, with_drops};
use crate::secagg::prg::{CHUNK_BYTES, MaskKey, MaskPrg, Sign, apply_masks};
use crate::secagg::sim::{DropPoint, run_round};
use crate::secagg::{GraphSpec, Modulus};

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// The straightforward sequential definition: the whole keystream of each key, from block 0
/// (through the crates' buffered stream-cipher wrappers, not the cores `apply_masks` drives),
/// read as little-endian words and added or subtracted in turn.
fn reference<W: crate::secagg::encoding::Word>(
    prg: MaskPrg,
    acc: &mut [W],
    masks: &[(&MaskKey, Sign)],
) {
    for &(key, sign) in masks {
        let mut bytes = vec![0u8; acc.len() * W::BYTES];
        match prg {
            MaskPrg::ChaCha20 => {
                ChaCha20::new(&key.0.into(), &[0u8; 12].into()).apply_keystream(&mut bytes)
            }
            MaskPrg::Aes128Ctr => {
                let (k, iv) = key.0.split_at(16);
                ctr::Ctr128BE::<aes::Aes128>::new(k.try_into().unwrap(), iv.try_into().unwrap())
                    .apply_keystream(&mut bytes)
            }
        }
        for (a, w) in acc.iter_mut().zip(bytes.chunks_exact(W::BYTES)) {
            let w = W::from_le_slice(w);
            *a = match sign {
                Sign::Plus => a.wrapping_add(w),
                Sign::Minus => a.wrapping_sub(w),
            };
        }
    }
}

fn check_len<W: crate::secagg::encoding::Word>(prg: MaskPrg, len: usize, from: impl Fn(u64) -> W) {
    // Keys [1; 32] .. [5; 32], and two whose AES counter block carries within the first chunks
    // (from the low 64 bits into the high ones, and from all ones to zero).
    let mut keys: Vec<MaskKey> = (1..=5u8).map(|i| MaskKey::from_bytes([i; 32])).collect();
    for (high, low) in [(0u64, u64::MAX - 3000), (u64::MAX, u64::MAX - 5000)] {
        let mut k = [7u8; 32];
        k[16..24].copy_from_slice(&high.to_be_bytes());
        k[24..].copy_from_slice(&low.to_be_bytes());
        keys.push(MaskKey::from_bytes(k));
    }
    let masks: Vec<(&MaskKey, Sign)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k, if i % 3 == 1 { Sign::Minus } else { Sign::Plus }))
        .collect();
    let start: Vec<W> = (0..len as u64).map(|i| from(i * 2_654_435_761)).collect();
    let mut want = start.clone();
    reference(prg, &mut want, &masks);
    for threads in [1, 2, 3] {
        let mut got = start.clone();
        in_pool(threads, || apply_masks(prg, &mut got, &masks));
        assert_eq!(got, want, "{prg}: len {len}, {threads} threads");
    }
    // Each mask on its own, and in the reverse order: the same result.
    let mut got = start.clone();
    for &m in masks.iter().rev() {
        apply_masks(prg, &mut got, &[m]);
    }
    assert_eq!(got, want, "{prg}: len {len}, one mask at a time");
}

/// Lengths around every boundary: a word inside a block (AES blocks hold 4 or 2 words,
/// ChaCha20 blocks 16 or 8), a backend batch (64 AES blocks = 1 KiB with VAES-512, 16 ChaCha20
/// blocks), a chunk, and several chunks with an odd tail.
#[test]
fn chunked_expansion_equals_the_sequential_keystream() {
    let c32 = CHUNK_BYTES / 4;
    let big = (1 << 20) + 3;
    for prg in MaskPrg::ALL {
        for len in [
            0,
            1,
            3,
            5,
            15,
            16,
            17,
            255,
            257,
            1023,
            c32 - 1,
            c32,
            c32 + 1,
            3 * c32 + 7,
            big,
        ] {
            check_len::<u32>(prg, len, |x| x as u32);
        }
        let c64 = CHUNK_BYTES / 8;
        for len in [0, 1, 3, 7, 9, 127, 129, c64 - 1, c64, c64 + 3, 2 * c64 + 5] {
            check_len::<u64>(prg, len, |x| x);
        }
    }
}

#[test]
fn aggregate_is_identical_under_one_and_two_threads() {
    // Several chunks per vector, SecAgg+ graph, dropouts before the masked input (pairwise
    // masks recovered and removed by the coordinator) and before unmasking.
    let dim = 3 * CHUNK_BYTES / 4 + 11;
    let drops = [
        (2, DropPoint::BeforeMaskedInput),
        (9, DropPoint::BeforeMaskedInput),
        (5, DropPoint::BeforeUnmasking),
    ];
    for prg in MaskPrg::ALL {
        for modulus in [Modulus::Pow32, Modulus::Pow64] {
            let mut cfg =
                config(12, 4, GraphSpec::Harary { degree: 6, seed: 3 }, dim).with_prg(prg);
            cfg.encoding.modulus = modulus;
            let sites = with_drops(inputs(12, dim, 21), &drops);
            let one = in_pool(1, || run_round(&cfg, &sites)).unwrap();
            let two = in_pool(2, || run_round(&cfg, &sites)).unwrap();
            assert_eq!(one, two, "{prg} {modulus:?}");
            assert_eq!(one.dropped, vec![2, 9]);
        }
    }
}
