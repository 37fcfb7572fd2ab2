//! The node's secure-aggregation identity: its certificate key signs, and its peers'
//! certificates (relayed by the coordinator) are checked against the federation CA. Adapts
//! `entente-proto`'s PKI ([`SiteKey`], [`SiteCertificates`]) to `entente-privacy`'s
//! [`Signer`] and [`Verifier`], which keep the protocol free of certificate code.

use std::path::Path;
use std::sync::Arc;

use entente_privacy::secagg::{AuthError, Identity, Signer, SiteId, Verifier};
use entente_proto::tls::secagg_identity::{SiteCertificates, SiteKey};

use crate::agent::NodeError;

struct CertSigner(SiteKey);

impl Signer for CertSigner {
    fn credential(&self) -> Vec<u8> {
        self.0.certificate().to_vec()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        self.0.sign(message).map_err(AuthError::Signing)
    }
}

struct CertVerifier(SiteCertificates);

impl Verifier for CertVerifier {
    fn verify(
        &self,
        site: SiteId,
        credential: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), AuthError> {
        self.0
            .verify(site as usize, credential, message, signature)
            .map_err(|reason| AuthError::Credential { site, reason })
    }
}

/// The identity of the site whose certificate and key are `cert` and `key`, trusting the CA
/// `ca` for the manifest's `sites` (in manifest order: a site's position is its id).
pub fn load(ca: &Path, cert: &Path, key: &Path, sites: &[String]) -> Result<Identity, NodeError> {
    let signer = SiteKey::load(cert, key).map_err(|e| NodeError::Setup(e.to_string()))?;
    let verifier =
        SiteCertificates::new(ca, sites.to_vec()).map_err(|e| NodeError::Setup(e.to_string()))?;
    Ok(Identity {
        signer: Arc::new(CertSigner(signer)),
        verifier: Arc::new(CertVerifier(verifier)),
    })
}
