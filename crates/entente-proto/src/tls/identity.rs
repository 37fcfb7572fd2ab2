//! Checks that a certificate file can do its job in this federation, made when a coordinator
//! or a node starts instead of being found out at the first handshake: issued by the
//! federation CA, valid now, and for its purpose (serverAuth for the coordinator, clientAuth
//! and a site name for a node). The key is checked against the certificate by
//! [`super::server_config`] and [`super::client_config`].

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, Error};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::config::provider;
use super::error::TlsError;
use super::{files, peer};

/// Checks the coordinator's certificate chain `cert_pem` against the federation CA `ca_pem`
/// and returns the hosts it is valid for (nodes must connect to one of them).
pub fn check_coordinator_certificate(
    ca_pem: &Path,
    cert_pem: &Path,
) -> Result<Vec<String>, TlsError> {
    let c = Candidate::load(ca_pem, cert_pem, "coordinator")?;
    let hosts = host_names(&c.leaf);
    let Some(name) = hosts
        .iter()
        .find_map(|h| ServerName::try_from(h.clone()).ok())
    else {
        return Err(c.unusable(
            "it names no host nodes could connect to; issue it with `entente keys issue \
             --coordinator HOST`"
                .into(),
        ));
    };
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::clone(&c.roots), provider())
        .build()
        .map_err(|source| c.verifier_error(source))?;
    verifier
        .verify_server_cert(&c.leaf, &c.rest, &name, &[], UnixTime::now())
        .map_err(|e| c.refused(&e, "--coordinator HOST"))?;
    Ok(hosts)
}

/// Checks a site's certificate chain `cert_pem` against the federation CA `ca_pem` and
/// returns the site it names.
pub fn check_site_certificate(ca_pem: &Path, cert_pem: &Path) -> Result<String, TlsError> {
    let c = Candidate::load(ca_pem, cert_pem, "site")?;
    let site = peer::site_name(&c.leaf).map_err(|e| c.unusable(e.to_string()))?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(&c.roots), provider())
        .build()
        .map_err(|source| c.verifier_error(source))?;
    verifier
        .verify_client_cert(&c.leaf, &c.rest, UnixTime::now())
        .map_err(|e| c.refused(&e, &site))?;
    Ok(site)
}

/// A certificate chain to check in `role`, and the federation CA to check it against.
struct Candidate<'a> {
    ca_pem: &'a Path,
    cert_pem: &'a Path,
    role: &'static str,
    roots: Arc<rustls::RootCertStore>,
    leaf: CertificateDer<'static>,
    rest: Vec<CertificateDer<'static>>,
}

impl<'a> Candidate<'a> {
    fn load(ca_pem: &'a Path, cert_pem: &'a Path, role: &'static str) -> Result<Self, TlsError> {
        let roots = Arc::new(files::load_roots(ca_pem)?);
        let (leaf, rest) = load_chain(cert_pem)?;
        Ok(Self {
            ca_pem,
            cert_pem,
            role,
            roots,
            leaf,
            rest,
        })
    }

    fn unusable(&self, reason: String) -> TlsError {
        TlsError::Unusable {
            cert: self.cert_pem.to_owned(),
            role: self.role,
            reason,
        }
    }

    /// rustls refused the certificate; `issue_with` is what `entente keys issue` needs to
    /// issue it again.
    fn refused(&self, error: &Error, issue_with: &str) -> TlsError {
        self.unusable(reason(error, self.ca_pem, issue_with))
    }

    fn verifier_error(&self, source: rustls::server::VerifierBuilderError) -> TlsError {
        TlsError::Verifier {
            path: self.ca_pem.to_owned(),
            source,
        }
    }
}

/// The leaf certificate of `path` and the rest of its chain.
fn load_chain(
    path: &Path,
) -> Result<(CertificateDer<'static>, Vec<CertificateDer<'static>>), TlsError> {
    let mut chain = files::load_certs(path)?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            expected: "PEM certificate",
            problem: "no -----BEGIN CERTIFICATE----- section found".to_owned(),
        });
    }
    let leaf = chain.remove(0);
    Ok((leaf, chain))
}

/// The DNS names and IP addresses in a certificate's subjectAltName.
fn host_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_string()),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => <[u8; 4]>::try_from(*ip)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*ip)
                    .ok()
                    .map(|b| std::net::IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Why rustls refused a certificate, and what to do, for people.
fn reason(error: &Error, ca_pem: &Path, issue_with: &str) -> String {
    let again = format!(
        "issue it again with `entente keys issue {issue_with}` from this federation's key folder"
    );
    match error {
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => format!(
            "it was not issued by the federation CA in {} (it belongs to another key folder); \
             {again}, or give the ca.pem of the federation that issued it",
            ca_pem.display()
        ),
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => format!("it has expired; {again}"),
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "it is not valid yet: check this machine's clock".into(),
        Error::InvalidCertificate(
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
        ) => {
            format!("it is not made for this role (another kind of entente certificate?); {again}")
        }
        other => format!("{other}; {again}"),
    }
}
