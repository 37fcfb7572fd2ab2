//! The federation's mutual-TLS identities.
//!
//! A federation has one certificate authority (CA). It issues each site a client certificate
//! whose CN and SAN dNSName are the site's name, and issues the coordinator a server
//! certificate for the hosts nodes connect to. The coordinator requires every connection to
//! present a site certificate chaining to the CA and learns the site from it with
//! [`site_name`]; nodes trust only the CA. This module owns the key folder layout (see
//! [`KeyDir`]), certificate issuance (`entente keys …`) and the rustls configurations. It
//! does no network I/O.
//!
//! Private keys are written with mode 0600 from creation, and existing keys are never
//! overwritten unless asked; the CA is never overwritten at all.

mod config;
mod error;
mod files;
mod identity;
mod issue;
mod peer;
mod revocation;
mod revoke;
pub mod secagg_identity;
pub mod signatures;
mod verifiers;

use std::path::PathBuf;

pub use config::{client_config, server_config};
pub use error::{SiteCertError, TlsError};
pub use files::read_pem;
pub use identity::{check_coordinator_certificate, check_site_certificate};
pub use issue::{
    COORDINATOR_COMMON_NAME, MAX_FEDERATION_NAME_LEN, MAX_SITE_NAME_LEN, Validity, init_ca,
    init_ca_valid_for, issue_coordinator, issue_coordinator_valid_for, issue_site,
    issue_site_valid_for, validate_site_name,
};
pub use peer::site_name;
pub use revocation::{Reloaded, RevocationList, Revocations, RevokedCert, serial_hex, serial_of};
pub use revoke::{Revoked, Revokee, revoke};

/// The paths of a federation's key folder.
///
/// ```text
/// ca.pem, ca.key                      the federation CA
/// sites/<NAME>.pem, sites/<NAME>.key  a site's certificate chain and key
/// coordinator.pem, coordinator.key    the coordinator's certificate chain and key
/// revoked.crl                         the certificates the CA revoked (`entente keys revoke`)
/// ```
///
/// The paths are only joined, not checked; pass names through [`validate_site_name`] first
/// ([`issue_site`] does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDir {
    /// The folder itself.
    pub root: PathBuf,
}

impl KeyDir {
    /// A key folder rooted at `root` (which need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The CA certificate: `ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    /// The CA private key: `ca.key`.
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }

    /// A site's certificate chain (site certificate, then CA): `sites/<site>.pem`.
    pub fn site_cert(&self, site: &str) -> PathBuf {
        self.root.join("sites").join(format!("{site}.pem"))
    }

    /// A site's private key: `sites/<site>.key`.
    pub fn site_key(&self, site: &str) -> PathBuf {
        self.root.join("sites").join(format!("{site}.key"))
    }

    /// The coordinator's certificate chain (its certificate, then CA): `coordinator.pem`.
    pub fn coordinator_cert(&self) -> PathBuf {
        self.root.join("coordinator.pem")
    }

    /// The coordinator's private key: `coordinator.key`.
    pub fn coordinator_key(&self) -> PathBuf {
        self.root.join("coordinator.key")
    }

    /// The federation's revocation list (a CRL the CA signed): `revoked.crl`.
    pub fn revocation_list(&self) -> PathBuf {
        self.root.join("revoked.crl")
    }
}
