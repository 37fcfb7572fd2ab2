//! rustls configurations for the coordinator (server) and the nodes (clients).
//!
//! Both select the ring provider explicitly, so no process-wide default provider needs to be
//! installed, and both speak only HTTP/2 (ALPN "h2"), which is what gRPC needs.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;

use super::error::TlsError;
use super::files;
use super::revocation::Revocations;
use super::verifiers::{RevokingClientVerifier, RevokingServerVerifier};

/// The ALPN protocols offered and accepted: HTTP/2 only.
const ALPN: &[&[u8]] = &[b"h2"];

/// The coordinator's rustls configuration.
///
/// It presents the certificate chain in `cert_pem` with the key in `key_pem`, requires every
/// client to present a certificate chaining to the CA in `ca_pem` (handshakes without one
/// fail) that `revocations` does not revoke, and offers ALPN "h2". Use [`super::site_name`] on
/// the verified peer certificate to learn which site connected.
pub fn server_config(
    ca_pem: &Path,
    cert_pem: &Path,
    key_pem: &Path,
    revocations: &Arc<Revocations>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let roots = Arc::new(files::load_roots(ca_pem)?);
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|source| TlsError::Verifier {
            path: ca_pem.to_owned(),
            source,
        })?;
    let verifier = Arc::new(RevokingClientVerifier {
        inner,
        revocations: Arc::clone(revocations),
    });
    let chain = files::load_certs(cert_pem)?;
    let key = files::load_key(key_pem)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_error(cert_pem))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(pair_error(cert_pem, key_pem))?;
    // No session resumption: a resumed session skips the client-certificate check, so a site
    // revoked since its last handshake would get back in. Every connection verifies afresh.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = alpn();
    Ok(Arc::new(config))
}

/// A node's rustls configuration.
///
/// It trusts only the CA in `ca_pem` (the coordinator's certificate must chain to it, name
/// the host connected to, and not be revoked by `revocations`), presents the site certificate
/// chain in `cert_pem` with the key in `key_pem`, and offers ALPN "h2".
pub fn client_config(
    ca_pem: &Path,
    cert_pem: &Path,
    key_pem: &Path,
    revocations: &Arc<Revocations>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let roots = Arc::new(files::load_roots(ca_pem)?);
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|source| TlsError::Verifier {
            path: ca_pem.to_owned(),
            source,
        })?;
    let verifier = Arc::new(RevokingServerVerifier {
        inner,
        revocations: Arc::clone(revocations),
    });
    let chain = files::load_certs(cert_pem)?;
    let key = files::load_key(key_pem)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_error(cert_pem))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(pair_error(cert_pem, key_pem))?;
    config.alpn_protocols = alpn();
    Ok(Arc::new(config))
}

/// Maps rustls's refusal of a certificate and key pair: a key that does not belong to the
/// certificate is named as such.
fn pair_error<'a>(
    cert_pem: &'a Path,
    key_pem: &'a Path,
) -> impl Fn(rustls::Error) -> TlsError + 'a {
    move |source| match source {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert_pem.to_owned(),
            key: key_pem.to_owned(),
        },
        source => rustls_error(cert_pem)(source),
    }
}

/// Maps a rustls error to one that names the certificate file.
fn rustls_error(cert_pem: &Path) -> impl Fn(rustls::Error) -> TlsError + '_ {
    move |source| TlsError::Rustls {
        path: cert_pem.to_owned(),
        source,
    }
}

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn alpn() -> Vec<Vec<u8>> {
    ALPN.iter().map(|p| p.to_vec()).collect()
}
