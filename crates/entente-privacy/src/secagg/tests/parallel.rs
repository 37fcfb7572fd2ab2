//! Parallel mask expansion: chunked, seeking expansion equals the
//! sequential ChaCha20 keystream, and whole rounds are bit-identical whatever the rayon thread count.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};

use super::{config, inputs, with_drops};
use crate::secagg::prg::{CHUNK_BYTES, MaskKey, Sign, apply_masks};
use crate::secagg::sim::{DropPoint, run_round};
use crate::secagg::{GraphSpec, Modulus};

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// The straightforward sequential definition: the whole keystream of each key, from block 0,
/// read as little-endian words and added or subtracted in turn.
fn reference<W: crate::secagg::encoding::Word>(acc: &mut [W], masks: &[(&MaskKey, Sign)]) {
    for &(key, sign) in masks {
        let mut bytes = vec![0u8; acc.len() * W::BYTES];
        ChaCha20::new(&key.0.into(), &[0u8; 12].into()).apply_keystream(&mut bytes);
        for (a, w) in acc.iter_mut().zip(bytes.chunks_exact(W::BYTES)) {
            let w = W::from_le_slice(w);
            *a = match sign {
                Sign::Plus => a.wrapping_add(w),
                Sign::Minus => a.wrapping_sub(w),
            };
        }
    }
}

fn check_len<W: crate::secagg::encoding::Word>(len: usize, from: impl Fn(u64) -> W) {
    let keys: Vec<MaskKey> = (1..=5u8).map(|i| MaskKey::from_bytes([i; 32])).collect();
    let masks: Vec<(&MaskKey, Sign)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k, if i % 3 == 1 { Sign::Minus } else { Sign::Plus }))
        .collect();
    let start: Vec<W> = (0..len as u64).map(|i| from(i * 2_654_435_761)).collect();
    let mut want = start.clone();
    reference(&mut want, &masks);
    for threads in [1, 2, 3] {
        let mut got = start.clone();
        in_pool(threads, || apply_masks(&mut got, &masks));
        assert_eq!(got, want, "len {len}, {threads} threads");
    }
}

#[test]
fn chunked_expansion_equals_the_sequential_keystream() {
    let c32 = CHUNK_BYTES / 4;
    let big = (1 << 20) + 3;
    for len in [
        0,
        1,
        15,
        16,
        17,
        1023,
        c32 - 1,
        c32,
        c32 + 1,
        3 * c32 + 7,
        big,
    ] {
        check_len::<u32>(len, |x| x as u32);
    }
    let c64 = CHUNK_BYTES / 8;
    for len in [0, 1, 7, 9, c64 - 1, c64, c64 + 3, 2 * c64 + 5] {
        check_len::<u64>(len, |x| x);
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
    for modulus in [Modulus::Pow32, Modulus::Pow64] {
        let mut cfg = config(12, 4, GraphSpec::Harary { degree: 6, seed: 3 }, dim);
        cfg.encoding.modulus = modulus;
        let sites = with_drops(inputs(12, dim, 21), &drops);
        let one = in_pool(1, || run_round(&cfg, &sites)).unwrap();
        let two = in_pool(2, || run_round(&cfg, &sites)).unwrap();
        assert_eq!(one, two, "{modulus:?}");
        assert_eq!(one.dropped, vec![2, 9]);
    }
}
