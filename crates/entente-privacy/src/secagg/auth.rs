//! Site identities for the active-security variant (Bonawitz et al. 2017, section 4, "active
//! security"): every site signs its advertised public keys and its view of the survivors with
//! its long-term identity key, and checks its peers' signatures before it trusts a key or
//! reveals a share.
//!
//! The protocol only needs two abilities, given as traits so that this crate stays free of
//! certificate and TLS code: [`Signer`] (this site signs bytes and names the credential that
//! verifies them) and [`Verifier`] (a peer's signature checks out with a credential that the
//! federation issued to that peer). Deployments implement them with the site certificates of the
//! federation CA (ECDSA P-256; `entente-proto`'s `tls::secagg_identity`, adapted in
//! `entente-node`); simulations and tests use [`InProcessPki`], a registry of Ed25519 keys drawn
//! from a seed, which plays the CA.
//!
//! What is signed is fixed here ([`keys_message`], [`survivors_message`]): a domain label, the
//! round's context (derived from the manifest's agreement digest), the round id and the
//! content. A signature from another federation, run, round or purpose never verifies.

use std::collections::BTreeMap;
use std::sync::Arc;

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use super::SiteId;

/// Label of the signed key bundle.
pub const KEYS_LABEL: &[u8] = b"entente/secagg/v1/advertised-keys\n";
/// Label of the signed survivor list.
pub const SURVIVORS_LABEL: &[u8] = b"entente/secagg/v1/survivors\n";
/// Longest credential a site may present, in bytes (a site certificate is about 600).
pub const MAX_CREDENTIAL_BYTES: usize = 16 * 1024;
/// Longest signature accepted, in bytes (ECDSA P-256 DER: at most 72; Ed25519: 64).
pub const MAX_SIGNATURE_BYTES: usize = 512;

/// Why signing or checking a signature failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credential is not one the federation issued to the claimed site (unknown, expired,
    /// not chained to the CA, or naming another site).
    #[error("credential of site {site} is not valid: {reason}")]
    Credential {
        /// The site the credential claims.
        site: SiteId,
        /// What is wrong.
        reason: String,
    },
    /// The signature does not verify with the credential's key.
    #[error("signature of site {site} does not verify")]
    Signature {
        /// The claimed signer.
        site: SiteId,
    },
    /// This site could not sign.
    #[error("cannot sign: {0}")]
    Signing(String),
}

/// This site's long-term identity: signs protocol messages.
pub trait Signer: Send + Sync {
    /// The credential a peer checks the signature with (in deployments: the site certificate,
    /// DER).
    fn credential(&self) -> Vec<u8>;
    /// Signs `message` with the identity key.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuthError>;
}

/// Checks peers' signatures against the federation's trust root.
pub trait Verifier: Send + Sync {
    /// Succeeds only if `credential` was issued by the federation to `site` (and is valid
    /// now) and `signature` over `message` verifies with its key.
    fn verify(
        &self,
        site: SiteId,
        credential: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError>;
}

/// What a site needs under active security: its own signer and a verifier of its peers.
#[derive(Clone)]
pub struct Identity {
    /// Signs this site's key bundle and survivor view.
    pub signer: Arc<dyn Signer>,
    /// Checks the peers' signatures.
    pub verifier: Arc<dyn Verifier>,
}

fn push_context(out: &mut Vec<u8>, label: &[u8], context: &[u8; 32], round: u64) {
    out.extend_from_slice(label);
    out.extend_from_slice(context);
    out.extend_from_slice(&round.to_be_bytes());
}

/// The bytes a site signs to vouch for its two public keys in a round.
pub fn keys_message(
    context: &[u8; 32],
    round: u64,
    site: SiteId,
    c_pk: &[u8; 32],
    s_pk: &[u8; 32],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(KEYS_LABEL.len() + 32 + 8 + 4 + 64);
    push_context(&mut out, KEYS_LABEL, context, round);
    out.extend_from_slice(&site.to_be_bytes());
    out.extend_from_slice(c_pk);
    out.extend_from_slice(s_pk);
    out
}

/// The bytes a site signs to state which sites' masked inputs it was told are in the sum.
pub fn survivors_message(context: &[u8; 32], round: u64, survivors: &[SiteId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SURVIVORS_LABEL.len() + 32 + 8 + 8 + 4 * survivors.len());
    push_context(&mut out, SURVIVORS_LABEL, context, round);
    out.extend_from_slice(&(survivors.len() as u64).to_be_bytes());
    for s in survivors {
        out.extend_from_slice(&s.to_be_bytes());
    }
    out
}

/// The round context for a federation whose manifest has agreement digest `digest` (any
/// bytes; entente passes the lowercase hex digest): SHA-256 under a domain label.
pub fn context_of(digest: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"entente/secagg/v1/context\n");
    h.update(digest);
    h.finalize().into()
}

/// An in-process stand-in for the federation CA: one Ed25519 key per site, drawn from a seed,
/// and a registry of their public keys. A credential is a site's 32-byte public key, and it is
/// valid for a site exactly when the registry holds it for that site.
pub struct InProcessPki {
    keys: BTreeMap<SiteId, Arc<Ed25519KeyPair>>,
}

impl InProcessPki {
    /// Keys for `sites`, each from SHA-256 of `seed` and the site id (deterministic).
    pub fn new(seed: &[u8; 32], sites: &[SiteId]) -> Result<Self, AuthError> {
        let mut keys = BTreeMap::new();
        for &site in sites {
            let mut h = Sha256::new();
            h.update(b"entente/secagg/v1/in-process-identity\n");
            h.update(seed);
            h.update(site.to_be_bytes());
            let key = Ed25519KeyPair::from_seed_unchecked(h.finalize().as_slice())
                .map_err(|e| AuthError::Signing(e.to_string()))?;
            keys.insert(site, Arc::new(key));
        }
        Ok(Self { keys })
    }

    /// The identity of `site` (its signer, and a verifier of the whole registry).
    pub fn identity(&self, site: SiteId) -> Option<Identity> {
        let key = self.keys.get(&site)?.clone();
        Some(Identity {
            signer: Arc::new(InProcessSigner { key }),
            verifier: Arc::new(self.verifier()),
        })
    }

    /// A verifier that trusts exactly this registry's keys.
    pub fn verifier(&self) -> InProcessVerifier {
        InProcessVerifier {
            public: self
                .keys
                .iter()
                .map(|(&s, k)| (s, k.public_key().as_ref().to_vec()))
                .collect(),
        }
    }
}

/// Signs with one site's in-process Ed25519 key.
pub struct InProcessSigner {
    key: Arc<Ed25519KeyPair>,
}

impl Signer for InProcessSigner {
    fn credential(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        Ok(self.key.sign(message).as_ref().to_vec())
    }
}

/// Checks signatures against an [`InProcessPki`]'s registry.
pub struct InProcessVerifier {
    public: BTreeMap<SiteId, Vec<u8>>,
}

impl Verifier for InProcessVerifier {
    fn verify(
        &self,
        site: SiteId,
        credential: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        match self.public.get(&site) {
            Some(pk) if pk.as_slice() == credential => {}
            _ => {
                return Err(AuthError::Credential {
                    site,
                    reason: "not the key the registry holds for this site".into(),
                });
            }
        }
        UnparsedPublicKey::new(&ED25519, credential)
            .verify(message, signature)
            .map_err(|_| AuthError::Signature { site })
    }
}
