//! Secure-aggregation identities from the federation PKI: under
//! `secure_aggregation.security = "active"` a site signs its advertised keys and its view of
//! the survivors with its certificate key, and checks its peers' signatures against their
//! certificates, which must chain to the federation CA and name the claimed site.
//!
//! The same primitives as manifest signatures ([`super::signatures`]): the site key is ECDSA
//! P-256 (rcgen over ring), signatures are ASN.1 DER over SHA-256, verified by webpki with the
//! certificate's public key; the chain is checked by rustls' webpki client verifier, built once.
//! The protocol (`entente-privacy`) knows nothing of certificates: the node adapts these two
//! types to its `Signer` and `Verifier` traits.

use std::path::Path;
use std::sync::Arc;

use rcgen::{KeyPair, SigningKey};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;

use super::config::provider;
use super::error::TlsError;
use super::signatures::{SignatureError, verify_signature};
use super::{files, peer};

/// This site's certificate key and certificate (DER), which its peers verify.
pub struct SiteKey {
    key: KeyPair,
    certificate: Vec<u8>,
}

impl SiteKey {
    /// Reads the site key `key_pem` and its certificate chain `cert_pem` (the site's first),
    /// checking that the key is ECDSA P-256 and belongs to the certificate.
    pub fn load(cert_pem: &Path, key_pem: &Path) -> Result<Self, SignatureError> {
        let signer = |path: &Path, reason: String| SignatureError::Signer {
            path: path.to_owned(),
            reason,
        };
        let key = KeyPair::from_pem(&files::read_text(key_pem)?)
            .map_err(|e| signer(key_pem, format!("it is not a usable private key ({e})")))?;
        if key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(signer(
                key_pem,
                "secure aggregation signs with ECDSA P-256 site keys, as `entente keys issue` \
                 writes them"
                    .into(),
            ));
        }
        let chain = files::load_certs(cert_pem)?;
        let leaf = chain
            .first()
            .ok_or_else(|| signer(cert_pem, "it holds no certificate".into()))?;
        let site = Self {
            key,
            certificate: leaf.as_ref().to_vec(),
        };
        let probe = b"entente secure-aggregation key check";
        let signature = site.sign(probe).map_err(|e| signer(key_pem, e))?;
        verify_signature(leaf, probe, &signature).map_err(|_| {
            signer(
                key_pem,
                format!(
                    "the key does not belong to the certificate {}",
                    cert_pem.display()
                ),
            )
        })?;
        Ok(site)
    }

    /// The site certificate (DER).
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    /// Signs `message` (ECDSA P-256 SHA-256, DER).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.key
            .sign(message)
            .map_err(|e| format!("signing with the site key failed: {e}"))
    }
}

/// Checks peers' signatures: the certificate must chain to the federation CA, be valid now and
/// name the site the manifest lists at the claimed position.
pub struct SiteCertificates {
    verifier: Arc<dyn ClientCertVerifier>,
    sites: Vec<String>,
}

impl SiteCertificates {
    /// A checker trusting the CA in `ca_pem`, for the manifest's `sites` (in manifest order:
    /// a site's position is its secure-aggregation id).
    pub fn new(ca_pem: &Path, sites: Vec<String>) -> Result<Self, TlsError> {
        let roots = Arc::new(files::load_roots(ca_pem)?);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|source| TlsError::Verifier {
                path: ca_pem.to_owned(),
                source,
            })?;
        Ok(Self { verifier, sites })
    }

    /// Succeeds only if `certificate` (DER) is the certificate of site number `index` issued
    /// by the CA and valid now, and `signature` over `message` verifies with its key.
    pub fn verify(
        &self,
        index: usize,
        certificate: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), String> {
        let expected = self
            .sites
            .get(index)
            .ok_or_else(|| format!("site number {index} is not in the manifest"))?;
        let leaf = CertificateDer::from(certificate);
        let named = peer::site_name(&leaf).map_err(|e| e.to_string())?;
        if &named != expected {
            return Err(format!(
                "the certificate names site `{named}`, not `{expected}`"
            ));
        }
        self.verifier
            .verify_client_cert(&leaf, &[], UnixTime::now())
            .map_err(|e| format!("the certificate of `{named}` is not valid: {e}"))?;
        verify_signature(&leaf, message, signature)
            .map_err(|_| format!("the signature does not verify with `{named}`'s certificate"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{KeyDir, init_ca, issue_site};

    fn federation(name: &str) -> (tempfile::TempDir, KeyDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = KeyDir::new(tmp.path());
        init_ca(&dir, name).unwrap();
        for site in ["site-a", "site-b"] {
            issue_site(&dir, site, false).unwrap();
        }
        (tmp, dir)
    }

    #[test]
    fn a_site_signature_verifies_only_as_that_site_under_that_ca() {
        let (_tmp, dir) = federation("fed");
        let (_other_tmp, other) = federation("other");
        let sites = vec!["site-a".to_string(), "site-b".to_string()];
        let a = SiteKey::load(&dir.site_cert("site-a"), &dir.site_key("site-a")).unwrap();
        let check = SiteCertificates::new(&dir.ca_cert(), sites.clone()).unwrap();
        let msg = b"keys of round 3";
        let sig = a.sign(msg).unwrap();
        check.verify(0, a.certificate(), msg, &sig).unwrap();
        // Claimed as another site, over other bytes, or out of the manifest: refused.
        let err = check.verify(1, a.certificate(), msg, &sig).unwrap_err();
        assert!(err.contains("names site `site-a`, not `site-b`"), "{err}");
        assert!(check.verify(0, a.certificate(), b"other", &sig).is_err());
        assert!(check.verify(2, a.certificate(), msg, &sig).is_err());
        assert!(check.verify(0, b"not a certificate", msg, &sig).is_err());
        // The same site name from another federation's CA is not trusted.
        let forged = SiteKey::load(&other.site_cert("site-a"), &other.site_key("site-a")).unwrap();
        let sig = forged.sign(msg).unwrap();
        let err = check
            .verify(0, forged.certificate(), msg, &sig)
            .unwrap_err();
        assert!(err.contains("not valid"), "{err}");
        // A key that is not the certificate's is refused at load.
        assert!(SiteKey::load(&dir.site_cert("site-a"), &dir.site_key("site-b")).is_err());
    }
}
