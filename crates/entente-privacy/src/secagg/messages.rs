//! The messages of a round. Plain data with serde derives: any transport (in-process, gRPC,
//! Flower) carries them unchanged. Each names its round and its sender (site messages) or
//! recipient (coordinator messages).

use serde::{Deserialize, Serialize};

use super::SiteId;
use super::shamir::SECRET_CHUNKS;

/// A site's two X25519 public keys for one round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SitePublicKeys {
    /// The site.
    pub site: SiteId,
    /// Public key for share encryption (`c_pk`).
    pub c_pk: [u8; 32],
    /// Public key for pairwise masks (`s_pk`).
    pub s_pk: [u8; 32],
    /// Under active security: the site's signature over both keys
    /// ([`keys_message`](super::auth::keys_message)), with its credential. `None` otherwise.
    pub signature: Option<Attestation>,
}

/// A site's signature with the credential that verifies it (under active security).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// The signer's credential (in deployments: its site certificate, DER).
    pub credential: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
}

/// One site's signature over a survivor list, as the coordinator forwards it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SurvivorSignature {
    /// The signer.
    pub site: SiteId,
    /// Its signature over [`survivors_message`](super::auth::survivors_message).
    pub attestation: Attestation,
}

/// Round 0, site to coordinator: the site's public keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvertiseKeys {
    /// Round id.
    pub round: u64,
    /// The advertising site and its keys.
    pub keys: SitePublicKeys,
}

/// Round 0, coordinator to one site: the keys of its neighbours that advertised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerKeys {
    /// Round id.
    pub round: u64,
    /// The site this message is for.
    pub recipient: SiteId,
    /// Keys of the recipient's neighbours that are still in the round, sorted by site.
    pub peers: Vec<SitePublicKeys>,
}

/// One AEAD ciphertext holding the shares `sender` gives `recipient`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptedShares {
    /// Site whose secrets are shared.
    pub sender: SiteId,
    /// Holder the shares are for.
    pub recipient: SiteId,
    /// ChaCha20-Poly1305 ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// Round 1, site to coordinator: one ciphertext per neighbour named in [`PeerKeys`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareKeys {
    /// Round id.
    pub round: u64,
    /// Sending site.
    pub sender: SiteId,
    /// Ciphertexts, one per recipient.
    pub shares: Vec<EncryptedShares>,
}

/// Round 1, coordinator to one site: the ciphertexts addressed to it by neighbours that are
/// still in the round. Their senders are exactly the peers the site must mask with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutedShares {
    /// Round id.
    pub round: u64,
    /// The site this message is for.
    pub recipient: SiteId,
    /// Ciphertexts addressed to the recipient, sorted by sender.
    pub shares: Vec<EncryptedShares>,
}

/// A masked vector, in the ring the round declared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaskedVector {
    /// Elements of Z/2^32.
    U32(Vec<u32>),
    /// Elements of Z/2^64.
    U64(Vec<u64>),
}

impl MaskedVector {
    /// Number of coordinates (the update's dimension plus the weight coordinate).
    pub fn len(&self) -> usize {
        match self {
            MaskedVector::U32(v) => v.len(),
            MaskedVector::U64(v) => v.len(),
        }
    }

    /// Whether the vector has no coordinate.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Round 2, site to coordinator: `y_u = x_u + PRG(b_u) + sum_v ±PRG(s_uv)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskedInput {
    /// Round id.
    pub round: u64,
    /// Sending site.
    pub sender: SiteId,
    /// The masked, encoded update (last coordinate: the masked weight).
    pub vector: MaskedVector,
}

/// Consistency check (active security only), coordinator to one surviving site: who sent a
/// masked input, for the site to sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyRequest {
    /// Round id.
    pub round: u64,
    /// The site this message is for.
    pub recipient: SiteId,
    /// Sites whose masked input is in the sum (U3), sorted.
    pub survivors: Vec<SiteId>,
}

/// Consistency check, site to coordinator: the site's signature over the survivor list it was
/// sent. A site signs one list per round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyResponse {
    /// Round id.
    pub round: u64,
    /// Signing site.
    pub sender: SiteId,
    /// Its signature over [`survivors_message`](super::auth::survivors_message).
    pub attestation: Attestation,
}

/// What the coordinator sends the survivors once the masked inputs are in: the unmasking
/// requests (honest-but-curious), or first the consistency check (active security).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SurvivorRequests {
    /// Active security: each survivor signs the list before anyone reveals a share.
    Consistency(Vec<ConsistencyRequest>),
    /// Honest-but-curious: each survivor reveals its shares.
    Unmask(Vec<UnmaskRequest>),
}

/// Round 3, coordinator to one surviving site: who sent a masked input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskRequest {
    /// Round id.
    pub round: u64,
    /// The site this message is for.
    pub recipient: SiteId,
    /// Sites whose masked input is in the sum (U3), sorted.
    pub survivors: Vec<SiteId>,
    /// Under active security: the survivors' signatures over `survivors`, at least the
    /// threshold of them valid (the site checks). Empty otherwise.
    pub signatures: Vec<SurvivorSignature>,
}

/// One revealed Shamir share: the holder's share of `owner`'s secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedShare {
    /// Site whose secret this is a share of.
    pub owner: SiteId,
    /// The share's values (the evaluation point is the holder's: `sender + 1`).
    pub values: [u64; SECRET_CHUNKS],
}

/// Round 3, site to coordinator: self-mask seed shares of surviving neighbours (and of
/// itself) and mask key shares of neighbours that dropped after sharing. Never both for one
/// owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmaskResponse {
    /// Round id.
    pub round: u64,
    /// Revealing site.
    pub sender: SiteId,
    /// Shares of `b_v` for every holder-relation `v` in U3.
    pub seed_shares: Vec<RevealedShare>,
    /// Shares of `s_sk_v` for every neighbour `v` in U2 \ U3.
    pub key_shares: Vec<RevealedShare>,
}
