//! Secure aggregation: Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving
//! Machine Learning" (CCS 2017, section 4, honest-but-curious variant), with the sparse-graph
//! option of SecAgg+ (Bell et al., CCS 2020).
//!
//! Both halves are pure state machines: [`SecAggClient`] (one per site) and [`SecAggServer`]
//! (the coordinator) consume and produce the plain structs of [`messages`]; they do no I/O
//! and read no clock, so the same code runs in simulation and over a network. The only
//! concurrency is data parallelism inside mask expansion and accumulation, on the caller's
//! rayon pool (run them inside `ThreadPool::install` to bound it); ring arithmetic is exact,
//! so every result is bit-identical whatever the thread count.
//!
//! A round has four phases:
//!
//! 0. **AdvertiseKeys**: each site sends two X25519 public keys (`c_pk` for share encryption,
//!    `s_pk` for pairwise masks); the coordinator hands each site its neighbours' keys.
//! 1. **ShareKeys**: each site Shamir-shares its self-mask seed `b_u` and its mask secret key
//!    `s_sk` (threshold `t` among its holders: neighbours plus itself), encrypts each pair of
//!    shares to its holder with ChaCha20-Poly1305, and the coordinator routes the ciphertexts.
//! 2. **MaskedInput**: each site sends `y_u = x_u + PRG(b_u) + sum_v ±PRG(s_uv) mod 2^32`,
//!    where `x_u` is its clipped, weighted, fixed-point update with the weight appended and
//!    `PRG` is the round's [`MaskPrg`] (AES-128-CTR by default, or ChaCha20; see [`prg`]).
//! 3. **Unmasking**: the coordinator names the sites whose masked input arrived; each survivor
//!    reveals `b` shares of those and `s_sk` shares of neighbours that dropped, never both for
//!    one peer; the coordinator reconstructs, removes the masks and decodes the weighted mean.
//!
//! Under active security ([`Security::Active`], Bonawitz et al.'s active variant) every site
//! signs its two public keys with its long-term identity ([`auth`]), and checks its peers'
//! signatures before it uses their keys; and between phases 2 and 3 a **consistency check**
//! runs: the coordinator sends each survivor the list U3, each signs it, and a site reveals
//! shares only when the unmasking request carries at least `t` valid signatures from distinct
//! members of U3 over exactly the list it signed. A coordinator that substitutes keys, replays
//! messages of another round, or tells different sites different stories about who dropped
//! out gets an abort, not a secret.
//!
//! The round aborts with an [`AbortReason`] whenever fewer than the required number of sites
//! (or holders of a needed secret) remain, and then releases nothing.

pub mod auth;
pub mod client;
pub mod encoding;
pub mod error;
pub mod graph;
pub mod keys;
pub mod messages;
pub mod prg;
pub mod server;
pub mod shamir;
pub mod sim;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

pub use auth::{AuthError, Identity, InProcessPki, Signer, Verifier};
pub use client::SecAggClient;
pub use encoding::{EncodingSettings, Modulus, quantization_bound, quantization_bound_for_weight};
pub use error::{AbortReason, Phase, SecAggError, ShamirError, ShareKind};
pub use graph::{GraphSpec, Neighbourhoods};
pub use messages::{
    AdvertiseKeys, Attestation, ConsistencyRequest, ConsistencyResponse, EncryptedShares,
    MaskedInput, MaskedVector, PeerKeys, RevealedShare, RoutedShares, ShareKeys, SitePublicKeys,
    SurvivorRequests, SurvivorSignature, UnmaskRequest, UnmaskResponse,
};
pub use prg::{MaskPrg, UnknownPrg};
pub use server::{Aggregate, SecAggServer};

/// Identifier of a site within a round. The Shamir evaluation point of site `u` is `u + 1`.
pub type SiteId = u32;

/// What the protocol defends against.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Security {
    /// A coordinator that follows the protocol but tries to learn from what it sees
    /// (Bonawitz et al.'s honest-but-curious variant: no signatures, no consistency check).
    #[default]
    HonestButCurious,
    /// A coordinator that may deviate: signed keys and the consistency check (the active
    /// variant). Every site needs an [`Identity`].
    Active,
}

/// The settings of one round, identical at every site and the coordinator (they come from the
/// signed manifest and the round's selection).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecAggConfig {
    /// Round id; bound into every derived key, ciphertext and message.
    pub round: u64,
    /// The sites selected for the round (distinct ids).
    pub sites: Vec<SiteId>,
    /// Shamir threshold `t`, counted among a site's holders (neighbours plus itself). Must be a
    /// strict majority of every neighbourhood, so that no two disjoint groups of holders can
    /// each reach it (a coordinator could otherwise collect both secrets of one site).
    pub threshold: usize,
    /// Fewest sites that may remain in any phase before the round aborts (at least `threshold`).
    pub min_survivors: usize,
    /// Pairing graph: complete (SecAgg) or sparse (SecAgg+).
    pub graph: GraphSpec,
    /// Number of coordinates of an update (the weight coordinate comes on top).
    pub dimension: usize,
    /// Clipping range, fixed-point scale, largest weight and ring.
    pub encoding: EncodingSettings,
    /// Generator that stretches mask keys into masks (the same at every site and the
    /// coordinator, or the masks would not cancel).
    #[serde(default)]
    pub prg: MaskPrg,
    /// Honest-but-curious or active security.
    #[serde(default)]
    pub security: Security,
    /// The federation and run this round belongs to (see [`auth::context_of`]): bound into
    /// every signature, so none verifies in another federation or run.
    #[serde(default)]
    pub context: [u8; 32],
}

impl SecAggConfig {
    /// Settings with `min_survivors` equal to `threshold` and the default mask generator
    /// ([`MaskPrg::default`]).
    pub fn new(
        round: u64,
        sites: Vec<SiteId>,
        threshold: usize,
        graph: GraphSpec,
        dimension: usize,
        encoding: EncodingSettings,
    ) -> Self {
        SecAggConfig {
            round,
            sites,
            threshold,
            min_survivors: threshold,
            graph,
            dimension,
            encoding,
            prg: MaskPrg::default(),
            security: Security::default(),
            context: [0; 32],
        }
    }

    /// The same settings under active security, with signatures bound to `context`.
    pub fn with_active_security(mut self, context: [u8; 32]) -> Self {
        self.security = Security::Active;
        self.context = context;
        self
    }

    /// The same settings with masks expanded by `prg`.
    pub fn with_prg(mut self, prg: MaskPrg) -> Self {
        self.prg = prg;
        self
    }

    /// Checks the settings and builds the pairing graph.
    pub fn validate(&self) -> Result<Neighbourhoods, SecAggError> {
        let bad = |m: String| Err(SecAggError::Config(m));
        if self.sites.len() < 2 {
            return bad(format!(
                "secure aggregation needs at least 2 sites, got {}",
                self.sites.len()
            ));
        }
        if self.dimension == 0 {
            return bad("dimension must be at least 1".into());
        }
        let graph = Neighbourhoods::build(&self.sites, &self.graph)?;
        let (lo, hi) = (graph.min_holders(), graph.max_holders());
        if self.threshold < 2 || self.threshold > lo {
            return bad(format!(
                "threshold {} must be between 2 and the smallest neighbourhood ({lo} holders)",
                self.threshold
            ));
        }
        if 2 * self.threshold <= hi {
            return bad(format!(
                "threshold {} must be a strict majority of every neighbourhood ({hi} holders): \
                 at least {}",
                self.threshold,
                hi / 2 + 1
            ));
        }
        if self.min_survivors < self.threshold || self.min_survivors > self.sites.len() {
            return bad(format!(
                "min_survivors {} must be between the threshold {} and the number of sites {}",
                self.min_survivors,
                self.threshold,
                self.sites.len()
            ));
        }
        self.encoding.validate(self.sites.len())?;
        Ok(graph)
    }
}
