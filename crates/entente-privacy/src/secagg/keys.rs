//! Key agreement and key derivation: X25519, HKDF-SHA256 with domain-separation labels, and the
//! ChaCha20-Poly1305 sealing of share pairs.
//!
//! Every derived key binds the protocol label, the round id and the site ids, so a key (or a
//! ciphertext) from one round, pair of sites or purpose is useless in any other.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::SiteId;
use super::error::SecAggError;
use super::prg::MaskKey;
use super::shamir::{P, SECRET_CHUNKS};

/// HKDF salt shared by every derivation of this protocol version.
pub const HKDF_SALT: &[u8] = b"entente/secagg/v1";
/// Info label of pairwise mask keys.
pub const LABEL_PAIRWISE: &[u8] = b"pairwise-mask";
/// Info label of self-mask keys.
pub const LABEL_SELF: &[u8] = b"self-mask";
/// Info label of share-encryption keys.
pub const LABEL_SHARES: &[u8] = b"share-encryption";

/// Bytes of a sealed share pair: the plaintext plus the 16-byte Poly1305 tag.
pub const SEALED_LEN: usize = PLAINTEXT_LEN + 16;
const PLAINTEXT_LEN: usize = 8 + 4 + 4 + 2 * SECRET_CHUNKS * 8;

/// An X25519 key pair.
#[derive(Clone)]
pub(crate) struct KeyPair {
    pub(crate) secret: StaticSecret,
    pub(crate) public: [u8; 32],
}

impl KeyPair {
    /// Draws a key pair from a (seeded) random generator.
    pub(crate) fn generate(rng: &mut impl RngCore) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(bytes.as_mut());
        Self::from_secret_bytes(*bytes)
    }

    /// The key pair of a 32-byte secret (X25519 clamps when it multiplies).
    pub(crate) fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret).to_bytes();
        KeyPair { secret, public }
    }
}

/// X25519 agreement with a peer's public key; rejects non-contributory (low-order) keys.
pub(crate) fn agree(
    secret: &StaticSecret,
    peer_public: &[u8; 32],
    peer: SiteId,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*peer_public));
    if !shared.was_contributory() {
        return Err(SecAggError::WeakKey { peer });
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

fn hkdf32(ikm: &[u8], label: &[u8], round: u64, ids: &[SiteId]) -> [u8; 32] {
    let mut info = Vec::with_capacity(label.len() + 8 + 4 * ids.len());
    info.extend_from_slice(label);
    info.extend_from_slice(&round.to_be_bytes());
    for id in ids {
        info.extend_from_slice(&id.to_be_bytes());
    }
    let mut okm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(HKDF_SALT), ikm)
        .expand(&info, &mut okm)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    okm
}

/// Key of the pairwise mask between sites `a` and `b` (symmetric in `a`, `b`).
pub fn pairwise_mask_key(shared: &[u8; 32], round: u64, a: SiteId, b: SiteId) -> MaskKey {
    MaskKey(hkdf32(shared, LABEL_PAIRWISE, round, &[a.min(b), a.max(b)]))
}

/// Key of a site's self mask, from its seed `b_u`.
pub fn self_mask_key(seed: &[u8; 32], round: u64, site: SiteId) -> MaskKey {
    MaskKey(hkdf32(seed, LABEL_SELF, round, &[site]))
}

/// Directional key that encrypts the shares `sender` sends to `recipient`.
pub fn share_encryption_key(
    shared: &[u8; 32],
    round: u64,
    sender: SiteId,
    recipient: SiteId,
) -> Zeroizing<[u8; 32]> {
    Zeroizing::new(hkdf32(shared, LABEL_SHARES, round, &[sender, recipient]))
}

/// The AEAD associated data: round id || sender || recipient, big-endian.
pub fn associated_data(round: u64, sender: SiteId, recipient: SiteId) -> [u8; 16] {
    let mut ad = [0u8; 16];
    ad[..8].copy_from_slice(&round.to_be_bytes());
    ad[8..12].copy_from_slice(&sender.to_be_bytes());
    ad[12..].copy_from_slice(&recipient.to_be_bytes());
    ad
}

/// The pair of shares one site sends another: of the sender's self-mask seed and mask key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SharePair {
    pub(crate) seed_share: [u64; SECRET_CHUNKS],
    pub(crate) key_share: [u64; SECRET_CHUNKS],
}

/// Encrypts a share pair under the directional key; the nonce is fixed because every key
/// encrypts exactly one message (it binds round, sender and recipient).
pub(crate) fn seal(
    key: &[u8; 32],
    round: u64,
    sender: SiteId,
    recipient: SiteId,
    pair: &SharePair,
) -> Vec<u8> {
    let mut pt = Zeroizing::new(Vec::with_capacity(PLAINTEXT_LEN));
    pt.extend_from_slice(&round.to_be_bytes());
    pt.extend_from_slice(&sender.to_be_bytes());
    pt.extend_from_slice(&recipient.to_be_bytes());
    for v in pair.seed_share.iter().chain(&pair.key_share) {
        pt.extend_from_slice(&v.to_le_bytes());
    }
    let aead = ChaCha20Poly1305::new(Key::from_slice(key));
    let ad = associated_data(round, sender, recipient);
    aead.encrypt(
        Nonce::from_slice(&[0u8; 12]),
        Payload { msg: &pt, aad: &ad },
    )
    .expect("ChaCha20-Poly1305 encryption of a short message cannot fail")
}

/// Decrypts and checks a share pair; any failure is reported as [`SecAggError::Decryption`]
/// or [`SecAggError::Malformed`].
pub(crate) fn open(
    key: &[u8; 32],
    round: u64,
    sender: SiteId,
    recipient: SiteId,
    ciphertext: &[u8],
) -> Result<SharePair, SecAggError> {
    let aead = ChaCha20Poly1305::new(Key::from_slice(key));
    let ad = associated_data(round, sender, recipient);
    let pt = Zeroizing::new(
        aead.decrypt(
            Nonce::from_slice(&[0u8; 12]),
            Payload {
                msg: ciphertext,
                aad: &ad,
            },
        )
        .map_err(|_| SecAggError::Decryption { sender, recipient })?,
    );
    let malformed = |reason: &str| SecAggError::Malformed {
        sender,
        reason: reason.to_string(),
    };
    if pt.len() != PLAINTEXT_LEN {
        return Err(malformed("share plaintext has the wrong length"));
    }
    if pt[..8] != round.to_be_bytes()
        || pt[8..12] != sender.to_be_bytes()
        || pt[12..16] != recipient.to_be_bytes()
    {
        return Err(malformed(
            "share plaintext names another round or pair of sites",
        ));
    }
    let mut values = [0u64; 2 * SECRET_CHUNKS];
    for (v, bytes) in values.iter_mut().zip(pt[16..].chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        *v = u64::from_le_bytes(b);
        if *v >= P {
            return Err(malformed("share value is not a field element"));
        }
    }
    let mut pair = SharePair {
        seed_share: [0; SECRET_CHUNKS],
        key_share: [0; SECRET_CHUNKS],
    };
    pair.seed_share.copy_from_slice(&values[..SECRET_CHUNKS]);
    pair.key_share.copy_from_slice(&values[SECRET_CHUNKS..]);
    Ok(pair)
}
