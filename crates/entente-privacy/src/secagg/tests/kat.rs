//! Known-answer tests: Shamir over GF(2^61-1) (hand-computed), the ChaCha20 mask stream
//! (RFC 8439 vector and recorded words), the AES-128-CTR mask stream (NIST SP 800-38A F.5.1
//! and recorded words), X25519 (RFC 7748) and the key-derivation composition.

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::secagg::error::{SecAggError, ShamirError};
use crate::secagg::keys::{self, KeyPair, SharePair};
use crate::secagg::prg::{MaskKey, MaskPrg, Sign, apply_mask, expand};
use crate::secagg::shamir::{self, P, Share};

fn hex32(s: &str) -> [u8; 32] {
    hex(s).try_into().unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The bytes of a mask stream: its words, little-endian.
fn bytes_of_u32(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn bytes_of_u64(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

#[test]
fn field_arithmetic_known_answers() {
    assert_eq!(P, 2_305_843_009_213_693_951);
    assert_eq!(shamir::add(P - 1, 1), 0);
    assert_eq!(shamir::sub(0, 1), P - 1);
    assert_eq!(shamir::mul(P - 1, P - 1), 1); // (-1)^2
    assert_eq!(shamir::mul(1 << 60, 4), 2); // 2^62 = 2 * 2^61 = 2 (mod 2^61 - 1)
    assert_eq!(shamir::inv(2), Some(1 << 60)); // 2 * 2^60 = 2^61 = 1
    assert_eq!(shamir::inv(0), None);
    assert_eq!(
        shamir::mul(123_456_789, shamir::inv(123_456_789).unwrap()),
        1
    );
}

/// f(x) = 1234 + 166 x + 94 x^2, threshold 3: f(1..=5) = 1494, 1942, 2578, 3402, 4414.
#[test]
fn shamir_hand_computed_polynomial() {
    let coeffs = [1234, 166, 94];
    let shares = shamir::share_element(&coeffs, &[1, 2, 3, 4, 5]);
    assert_eq!(
        shares,
        vec![(1, 1494), (2, 1942), (3, 2578), (4, 3402), (5, 4414)]
    );
    // Any 3 of the 5 shares reconstruct 1234.
    for a in 0..5 {
        for b in a + 1..5 {
            for c in b + 1..5 {
                let pts = [shares[a], shares[b], shares[c]];
                assert_eq!(
                    shamir::interpolate_at_zero(&pts).unwrap(),
                    1234,
                    "{a}{b}{c}"
                );
            }
        }
    }
    // Two shares give the line through them, not the secret (hand-computed):
    // (1,1494),(2,1942): 2*1494 - 1942 = 1046; (1,1494),(3,2578): 1494 - 542 = 952;
    // (4,3402),(5,4414): 3402 - 4*1012 = -646, i.e. P - 646.
    assert_eq!(shamir::interpolate_at_zero(&shares[0..2]).unwrap(), 1046);
    assert_eq!(
        shamir::interpolate_at_zero(&[shares[0], shares[2]]).unwrap(),
        952
    );
    assert_eq!(shamir::interpolate_at_zero(&shares[3..5]).unwrap(), P - 646);
    // Repeated evaluation points are refused.
    assert_eq!(
        shamir::interpolate_at_zero(&[shares[0], shares[0]]),
        Err(ShamirError::BadPoint(1))
    );
}

#[test]
fn secret_chunking_known_answer() {
    let secret: [u8; 32] = std::array::from_fn(|i| i as u8);
    let chunks = shamir::secret_to_chunks(&secret);
    assert_eq!(
        chunks,
        [
            0x06_0504_0302_0100,
            0x0d_0c0b_0a09_0807,
            0x14_1312_1110_0f0e,
            0x1b_1a19_1817_1615,
            0x1f1e_1d1c
        ]
    );
    assert_eq!(shamir::chunks_to_secret(&chunks).unwrap(), secret);
    let mut too_big = chunks;
    too_big[4] = 1 << 32; // the last chunk holds only 4 bytes
    assert_eq!(
        shamir::chunks_to_secret(&too_big),
        Err(ShamirError::NotCanonical)
    );
}

#[test]
fn shamir_any_t_of_n_reconstructs_and_t_minus_1_does_not() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let secret: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(5));
    let xs = [3u64, 8, 11, 12, 20, 21, 40];
    let t = 4;
    let shares = shamir::split_secret(&secret, t, &xs, &mut rng).unwrap();
    let n = shares.len();
    let mut subsets = 0;
    for mask in 0u32..(1 << n) {
        let subset: Vec<Share> = (0..n)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| shares[i])
            .collect();
        match subset.len() {
            k if k >= t => {
                assert_eq!(shamir::reconstruct_secret(&subset, t).unwrap(), secret);
                subsets += 1;
            }
            k if k == t - 1 => {
                assert_eq!(
                    shamir::reconstruct_secret(&subset, t),
                    Err(ShamirError::NotEnoughShares {
                        got: t - 1,
                        need: t
                    })
                );
                // Interpolating t - 1 points yields garbage (or a non-secret), never the secret.
                let garbage = shamir::reconstruct_secret(&subset, t - 1);
                assert_ne!(garbage, Ok(secret));
            }
            _ => {}
        }
    }
    assert_eq!(subsets, 35 + 21 + 7 + 1);
    // A corrupted share among more than t is caught by the consistency check.
    let mut bad = shares.clone();
    bad[6].y[2] = shamir::add(bad[6].y[2], 1);
    assert_eq!(
        shamir::reconstruct_secret(&bad, t),
        Err(ShamirError::Inconsistent)
    );
    // Bad thresholds and points are refused.
    assert!(shamir::split_secret(&secret, 8, &xs, &mut rng).is_err());
    assert!(shamir::split_secret(&secret, 2, &[1, 0], &mut rng).is_err());
    assert!(shamir::split_secret(&secret, 2, &[5, 5], &mut rng).is_err());
}

/// RFC 8439 appendix A.1, test vector 1: all-zero key and nonce, block counter 0.
#[test]
fn mask_stream_matches_rfc8439_keystream() {
    let key = MaskKey::from_bytes([0; 32]);
    assert_eq!(
        expand::<u32>(MaskPrg::ChaCha20, &key, 4),
        vec![0xade0_b876, 0x903d_f1a0, 0xe56a_5d40, 0x28bd_8653]
    );
    assert_eq!(
        expand::<u64>(MaskPrg::ChaCha20, &key, 2),
        vec![0x903d_f1a0_ade0_b876, 0x28bd_8653_e56a_5d40]
    );
}

/// NIST SP 800-38A, F.5.1 CTR-AES128.Encrypt: the mask key is the AES key followed by the
/// initial counter block, and the stream is the four output blocks (plaintext XOR ciphertext of
/// the published vector), read as little-endian words.
#[test]
fn mask_stream_matches_sp800_38a_ctr_aes128() {
    let key = MaskKey::from_bytes(hex32(concat!(
        "2b7e151628aed2a6abf7158809cf4f3c", // Key
        "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", // Init. Counter
    )));
    let plaintext = hex(concat!(
        "6bc1bee22e409f96e93d7e117393172a",
        "ae2d8a571e03ac9c9eb76fac45af8e51",
        "30c81c46a35ce411e5fbc1191a0a52ef",
        "f69f2445df4f9b17ad2b417be66c3710",
    ));
    let ciphertext = hex(concat!(
        "874d6191b620e3261bef6864990db6ce",
        "9806f66b7970fdff8617187bb9fffdff",
        "5ae4df3edbd5d35e5b4f09020db03eab",
        "1e031dda2fbe03d1792170a0f3009cee",
    ));
    let output: Vec<u8> = plaintext
        .iter()
        .zip(&ciphertext)
        .map(|(p, c)| p ^ c)
        .collect();
    // The output blocks as the standard prints them (Block #1 to #4).
    assert_eq!(
        output,
        hex(concat!(
            "ec8cdf7398607cb0f2d21675ea9ea1e4",
            "362b7c3c6773516318a077d7fc5073ae",
            "6a2cc3787889374fbeb4c81b17ba6c44",
            "e89c399ff0f198c6d40a31db156cabfe",
        ))
    );
    assert_eq!(
        bytes_of_u32(&expand::<u32>(MaskPrg::Aes128Ctr, &key, 16)),
        output
    );
    assert_eq!(
        bytes_of_u64(&expand::<u64>(MaskPrg::Aes128Ctr, &key, 8)),
        output
    );
    assert_eq!(
        expand::<u32>(MaskPrg::Aes128Ctr, &key, 1),
        vec![0x73df_8cec]
    );
    // Odd lengths end inside a block, and every prefix is the same stream.
    for len in [1, 3, 5, 13] {
        assert_eq!(
            bytes_of_u32(&expand::<u32>(MaskPrg::Aes128Ctr, &key, len)),
            output[..4 * len]
        );
    }
}

/// The counter block is one 128-bit big-endian integer: it carries from the low 64 bits into
/// the high ones, and wraps to zero after all ones. Recorded with OpenSSL's AES-128-CTR
/// (Python `cryptography`, `modes.CTR`), key 000102..0f.
#[test]
fn aes_counter_block_carries_over_all_128_bits() {
    for (iv, want) in [
        (
            "0000000000000000ffffffffffffffff",
            concat!(
                "39a7ef0a0a5852a8bfd2032344bf9412",
                "13189a6ae4ab07ae70a3aabd30be99de",
                "8f9429444c8f4b3599421235b510df3d",
            ),
        ),
        (
            "ffffffffffffffffffffffffffffffff",
            concat!(
                "3c441f32ce07822364d7a2990e50bb13",
                "c6a13b37878f5b826f4f8162a1c8d879",
                "7346139595c0b41e497bbde365f42d0a",
            ),
        ),
    ] {
        let key = MaskKey::from_bytes(hex32(&format!("000102030405060708090a0b0c0d0e0f{iv}")));
        assert_eq!(
            bytes_of_u32(&expand::<u32>(MaskPrg::Aes128Ctr, &key, 12)),
            hex(want),
            "IV {iv}"
        );
        assert_eq!(
            bytes_of_u64(&expand::<u64>(MaskPrg::Aes128Ctr, &key, 6)),
            hex(want),
            "IV {iv}"
        );
    }
}

#[test]
fn mask_stream_is_stable_across_buffer_boundaries_and_signs_cancel() {
    for (prg, recorded) in [
        (MaskPrg::ChaCha20, RECORDED_KEY9),
        (MaskPrg::Aes128Ctr, RECORDED_KEY9_AES),
    ] {
        let key = MaskKey::from_bytes([9; 32]);
        let long = expand::<u32>(prg, &key, 5000);
        let short = expand::<u32>(prg, &key, 3000);
        assert_eq!(&long[..3000], &short[..], "{prg}");
        // Recorded first words for key [9; 32].
        assert_eq!(&long[..4], recorded, "{prg}");
        let mut v: Vec<u32> = (0..5000).collect();
        apply_mask(prg, &mut v, &key, Sign::Plus);
        assert_ne!(v, (0..5000).collect::<Vec<u32>>());
        apply_mask(prg, &mut v, &key, Sign::Minus);
        assert_eq!(v, (0..5000).collect::<Vec<u32>>(), "{prg}");
    }
    // The two generators give unrelated streams for the same key.
    let key = MaskKey::from_bytes([9; 32]);
    assert_ne!(
        expand::<u32>(MaskPrg::ChaCha20, &key, 4),
        expand::<u32>(MaskPrg::Aes128Ctr, &key, 4)
    );
}

/// First words for key [9; 32], computed independently with OpenSSL's ChaCha20 (Python
/// `cryptography`, 16-byte IV of zeros).
const RECORDED_KEY9: &[u32] = &[2_154_407_922, 2_460_272_607, 308_949_579, 2_122_096_286];
/// The same with OpenSSL's AES-128-CTR: key [9; 16], initial counter block [9; 16].
const RECORDED_KEY9_AES: &[u32] = &[3_890_013_995, 47_548_145, 1_875_276_682, 2_285_866_848];

/// RFC 7748 section 6.1.
const ALICE_SK: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const ALICE_PK: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
const BOB_SK: &str = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
const BOB_PK: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
const SHARED: &str = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

#[test]
fn x25519_matches_rfc7748() {
    let alice = KeyPair::from_secret_bytes(hex32(ALICE_SK));
    let bob = KeyPair::from_secret_bytes(hex32(BOB_SK));
    assert_eq!(alice.public, hex32(ALICE_PK));
    assert_eq!(bob.public, hex32(BOB_PK));
    assert_eq!(
        *keys::agree(&alice.secret, &bob.public, 2).unwrap(),
        hex32(SHARED)
    );
    assert_eq!(
        *keys::agree(&bob.secret, &alice.public, 1).unwrap(),
        hex32(SHARED)
    );
    // A low-order public key (here zero) makes the agreement non-contributory: refused.
    assert_eq!(
        keys::agree(&alice.secret, &[0; 32], 9).map(|_| ()),
        Err(SecAggError::WeakKey { peer: 9 })
    );
}

/// The full composition X25519 -> HKDF-SHA256 (label, round, ids) -> ChaCha20 or
/// AES-128-CTR, recorded.
#[test]
fn key_agreement_composition_known_answers() {
    let alice = KeyPair::from_secret_bytes(hex32(ALICE_SK));
    let bob = KeyPair::from_secret_bytes(hex32(BOB_SK));
    let ab = keys::agree(&alice.secret, &bob.public, 2).unwrap();
    let ba = keys::agree(&bob.secret, &alice.public, 1).unwrap();
    let k_ab = keys::pairwise_mask_key(&ab, 7, 1, 2);
    let k_ba = keys::pairwise_mask_key(&ba, 7, 2, 1);
    assert_eq!(k_ab, k_ba, "pairwise key must be symmetric");
    assert_eq!(
        k_ab.as_bytes()[..4],
        [0x21, 0xbd, 0xc0, 0xe2],
        "HKDF output changed"
    );
    assert_eq!(
        expand::<u32>(MaskPrg::ChaCha20, &k_ab, 4),
        RECORDED_PAIRWISE
    );
    assert_eq!(
        expand::<u32>(MaskPrg::Aes128Ctr, &k_ab, 4),
        RECORDED_PAIRWISE_AES
    );
    // Domain separation: round, pair and purpose all change the key.
    assert_ne!(keys::pairwise_mask_key(&ab, 8, 1, 2), k_ab);
    assert_ne!(keys::pairwise_mask_key(&ab, 7, 1, 3), k_ab);
    assert_ne!(keys::self_mask_key(&ab, 7, 1), k_ab);
    let e12 = keys::share_encryption_key(&ab, 7, 1, 2);
    let e21 = keys::share_encryption_key(&ab, 7, 2, 1);
    assert_ne!(*e12, *e21, "share encryption keys are directional");
    assert_ne!(*e12, *keys::share_encryption_key(&ab, 8, 1, 2));
    assert_eq!(e12[..4], RECORDED_ENC12);
    let seed = [42u8; 32];
    let self_key = keys::self_mask_key(&seed, 7, 1);
    assert_eq!(
        expand::<u32>(MaskPrg::ChaCha20, &self_key, 4),
        RECORDED_SELF
    );
    assert_eq!(
        expand::<u32>(MaskPrg::Aes128Ctr, &self_key, 4),
        RECORDED_SELF_AES
    );
}

// Computed independently (Python hashlib/hmac HKDF-SHA256 with salt "entente/secagg/v1" and
// info label || round (u64 BE) || ids (u32 BE); OpenSSL ChaCha20 and AES-128-CTR for the
// streams): pairwise key = 21bdc0e2..., self key (seed [42; 32], round 7, site 1) = 4c6557a2...
const RECORDED_PAIRWISE: [u32; 4] = [2_839_182_370, 2_053_952_294, 4_087_687_864, 4_271_719_839];
const RECORDED_ENC12: [u8; 4] = [193, 89, 132, 244];
const RECORDED_SELF: [u32; 4] = [1_528_042_141, 2_676_809_792, 4_188_307_931, 3_151_430_453];
const RECORDED_PAIRWISE_AES: [u32; 4] =
    [2_475_448_919, 1_980_064_538, 1_899_437_969, 2_855_889_041];
const RECORDED_SELF_AES: [u32; 4] = [3_208_983_884, 1_089_337_939, 1_365_356_001, 3_346_459_516];

#[test]
fn sealed_shares_round_trip_and_reject_tampering() {
    let key = [5u8; 32];
    let pair = SharePair {
        seed_share: [1, 2, 3, 4, 5],
        key_share: [P - 1, 7, 8, 9, 10],
    };
    let ct = keys::seal(&key, 7, 1, 2, &pair);
    assert_eq!(ct.len(), keys::SEALED_LEN);
    assert_eq!(keys::open(&key, 7, 1, 2, &ct).unwrap(), pair);
    for i in 0..ct.len() {
        let mut bad = ct.clone();
        bad[i] ^= 0x01;
        assert_eq!(
            keys::open(&key, 7, 1, 2, &bad),
            Err(SecAggError::Decryption {
                sender: 1,
                recipient: 2
            }),
            "flipped byte {i} accepted"
        );
    }
    // Associated data binds round, sender and recipient.
    assert!(matches!(
        keys::open(&key, 8, 1, 2, &ct),
        Err(SecAggError::Decryption { .. })
    ));
    assert!(matches!(
        keys::open(&key, 7, 2, 1, &ct),
        Err(SecAggError::Decryption { .. })
    ));
    assert!(matches!(
        keys::open(&key, 7, 1, 2, &ct[..ct.len() - 1]),
        Err(SecAggError::Decryption { .. })
    ));
}
