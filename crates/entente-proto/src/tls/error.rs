//! The one error type of the `tls` module, and the reasons a peer certificate is not a site.
//!
//! Every variant that concerns a file names the file, and every message ends with what to do
//! about it, so that `entente keys …` and the services can print it as is.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why a key folder could not be written or read, or a TLS configuration could not be built.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {error}; check that the file exists and is readable", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said (in the message, so not repeated as a cause).
        error: io::Error,
    },

    /// A file or its folder could not be written.
    #[error("cannot write {}: {error}; check that its folder exists or can be created and is writable", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said (in the message, so not repeated as a cause).
        error: io::Error,
    },

    /// The federation CA, needed to issue a certificate, is not in the key folder.
    #[error("{} not found: run `entente keys init` first, or point at the key folder that holds the federation CA", path.display())]
    MissingCa {
        /// The missing `ca.pem` or `ca.key`.
        path: PathBuf,
    },

    /// The federation CA already exists; `init_ca` never replaces it.
    #[error("{} already exists: refusing to overwrite the federation CA, since every site and coordinator certificate depends on it; to start a new federation use an empty key folder, or delete the CA files by hand", path.display())]
    CaExists {
        /// The existing `ca.key` or `ca.pem`.
        path: PathBuf,
    },

    /// A private key already exists and `overwrite` was not set.
    #[error("{} already exists: refusing to overwrite it; pass --overwrite to replace the key and its certificate", path.display())]
    KeyExists {
        /// The existing key file.
        path: PathBuf,
    },

    /// A file holds no usable PEM item of the expected kind.
    #[error("{} holds no usable {expected}: {problem}; pass the PEM file written by `entente keys`", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was expected, e.g. "PEM certificate".
        expected: &'static str,
        /// What was wrong with it.
        problem: String,
    },

    /// A certificate given as the federation CA is not a CA certificate.
    #[error("{} holds a certificate that is not a CA (subject {subject:?}); pass the federation's ca.pem, not a site or coordinator certificate", path.display())]
    NotCa {
        /// The file.
        path: PathBuf,
        /// The subject of the offending certificate.
        subject: String,
    },

    /// A private key file could not be loaded.
    #[error("{} is not a usable private key: {source}; pass the .key file written by `entente keys`", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What rcgen said.
        source: rcgen::Error,
    },

    /// The CA certificate file could not be used to issue certificates.
    #[error("{} is not a usable CA certificate: {source}; pass the ca.pem written by `entente keys init`", path.display())]
    BadCaCert {
        /// The file.
        path: PathBuf,
        /// What rcgen said.
        source: rcgen::Error,
    },

    /// A key file does not belong to its certificate (`ca.key` and `ca.pem`, a site's or the
    /// coordinator's `.key` and `.pem`).
    #[error("the key {} does not belong to the certificate {}: use the .key and .pem that `entente keys` wrote together (or issue both again)", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },

    /// A certificate cannot do its job in this federation: issued by another CA, expired, or
    /// made for another role.
    #[error("{} cannot be used as the {role} certificate: {reason}", cert.display())]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// "coordinator" or "site".
        role: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },

    /// A site name is not acceptable.
    #[error(
        "invalid site name {name:?}: {reason}; use 1 to 63 letters, digits, '-', '_' or '.', not starting with '-'"
    )]
    InvalidSiteName {
        /// The rejected name (a long one cut short).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A federation name is not acceptable.
    #[error("invalid federation name {name:?}: {reason}; use 1 to 50 printable characters")]
    InvalidFederationName {
        /// The rejected name (a long one cut short).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A coordinator host is neither a DNS name nor an IP address.
    #[error(
        "invalid coordinator host {host:?}: use a DNS name such as coordinator.example.org or an IP address such as 10.0.0.5"
    )]
    InvalidHost {
        /// The rejected host (a long one cut short).
        host: String,
    },

    /// No coordinator host was given.
    #[error(
        "no coordinator host given: name at least one DNS name or IP address that nodes use to reach the coordinator"
    )]
    NoHosts,

    /// A certificate validity outside what is issued.
    #[error(
        "a certificate valid for {days} days is not issued; allowed: 1 to {} days",
        super::Validity::MAX_DAYS
    )]
    InvalidValidity {
        /// The days asked for.
        days: u32,
    },

    /// rcgen failed to generate a key or certificate (a bug, not a user error).
    #[error("cannot generate {what}: {source}; this is a bug in entente, please report it")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// What rcgen said.
        source: rcgen::Error,
    },

    /// rustls rejected the certificate, key or protocol settings.
    #[error("cannot build the TLS configuration from {}: {source}; check that the certificate and key files were written together by `entente keys`", path.display())]
    Rustls {
        /// The file (or, for a certificate/key pair, the certificate file) involved.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },

    /// The certificate verifier could not be built from the CA file.
    #[error("cannot verify certificates with {}: {source}; pass the federation's ca.pem", path.display())]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::server::VerifierBuilderError,
    },

    /// The system clock is before 1970 or after year 8900, so no validity period can be computed.
    #[error(
        "the system clock is set before 1970 or thousands of years ahead; set the clock and retry"
    )]
    Clock,

    /// A revocation list file is not one the federation CA wrote.
    #[error("{} is not a revocation list of this federation: {problem}; write it with `entente keys revoke` in the CA's key folder and copy that revoked.crl", path.display())]
    BadRevocationList {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },

    /// A revocation list that would re-admit revoked certificates: older than the one in
    /// force, another list under its number, or one that drops a serial it revokes.
    #[error("{}: {problem}; refusing to forget revocations: copy the newest revoked.crl from the CA's key folder", path.display())]
    RevocationRollback {
        /// The file.
        path: PathBuf,
        /// What is wrong with the list, against the one in force.
        problem: String,
    },

    /// The revocation list file disappeared after a list was read from it.
    #[error("{} was removed: revocation list number {number} stays in force; copy the newest revoked.crl back", path.display())]
    RevocationListRemoved {
        /// The file.
        path: PathBuf,
        /// The number of the list in force.
        number: u64,
    },

    /// `entente keys revoke` of a certificate the list already revokes.
    #[error("the certificate in {} (serial {serial}) is already revoked; to admit the site again, issue it a new certificate with `entente keys issue SITE --overwrite`", cert.display())]
    AlreadyRevoked {
        /// The certificate file.
        cert: PathBuf,
        /// Its serial number, as hex.
        serial: String,
    },

    /// A coordinator's or node's own certificate is revoked: it must not take part.
    #[error("the certificate in {} (serial {serial}) is revoked by {}: this identity may no longer take part; ask the federation's CA for a new certificate (`entente keys issue`)", cert.display(), list.display())]
    OwnCertificateRevoked {
        /// The certificate file.
        cert: PathBuf,
        /// Its serial number, as hex.
        serial: String,
        /// The revocation list that revokes it.
        list: PathBuf,
    },

    /// A peer certificate is not a site certificate.
    #[error(
        "the peer certificate is not a site certificate: {0}; issue one with `entente keys issue SITE`"
    )]
    NotASite(#[from] SiteCertError),
}

/// Why a certificate does not name a site (see [`super::site_name`]).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SiteCertError {
    /// The bytes are not a DER X.509 certificate.
    #[error("it cannot be parsed as an X.509 certificate ({0})")]
    Unparseable(String),
    /// The certificate lacks the clientAuth extended key usage (a coordinator certificate, say).
    #[error("it lacks the clientAuth extended key usage")]
    NoClientAuth,
    /// The subject has no common name.
    #[error("its subject has no common name (CN)")]
    NoCommonName,
    /// The subject has more than one common name.
    #[error("its subject has more than one common name (CN)")]
    ManyCommonNames,
    /// There is no subjectAltName dNSName.
    #[error("it has no subjectAltName dNSName")]
    NoDnsName,
    /// There is more than one subjectAltName dNSName.
    #[error("it has more than one subjectAltName dNSName")]
    ManyDnsNames,
    /// The common name and the dNSName differ.
    #[error("its common name {common_name:?} differs from its subjectAltName dNSName {dns_name:?}")]
    NameMismatch {
        /// The subject's CN.
        common_name: String,
        /// The SAN dNSName.
        dns_name: String,
    },
    /// The name is not a valid site name.
    #[error("its name {name:?} is not a valid site name ({reason})")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}
