//! Revoking a certificate: `entente keys revoke` adds it to the federation's revocation list
//! (`revoked.crl`), which the CA signs anew each time with a higher CRL number.

use std::path::PathBuf;
use std::time::SystemTime;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};

use super::KeyDir;
use super::error::TlsError;
use super::files::{self, Existing, Secrecy};
use super::issue::{DAY, load_ca, x509_time};
use super::revocation::{RevocationList, serial_hex, serial_of};

/// Whose certificate to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revokee {
    /// A site's: `sites/<NAME>.pem`.
    Site(String),
    /// The coordinator's: `coordinator.pem`.
    Coordinator,
}

/// What [`revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// The certificate file whose certificate is now revoked.
    pub cert: PathBuf,
    /// Its serial number, as hex.
    pub serial: String,
    /// The revocation list written.
    pub list: PathBuf,
    /// Its CRL number.
    pub number: u64,
    /// How many certificates it revokes in all.
    pub revoked: usize,
}

/// Revokes the certificate of `whom` in the key folder `dir`: reads its serial number, adds it
/// to the list in `dir/revoked.crl` (whose CA signature is checked first), and writes the list
/// again, signed by the CA in `dir` with the next CRL number. A certificate already revoked is
/// refused with [`TlsError::AlreadyRevoked`]. Revocations of one folder run one at a time
/// (a lock file, `revoked.crl.lock`, beside the list). Issuing the site a new certificate
/// (`entente keys issue SITE --overwrite`) admits it again: the new one has another serial.
pub fn revoke(dir: &KeyDir, whom: &Revokee) -> Result<Revoked, TlsError> {
    let cert_path = match whom {
        Revokee::Site(site) => {
            super::validate_site_name(site)?;
            dir.site_cert(site)
        }
        Revokee::Coordinator => dir.coordinator_cert(),
    };
    let leaf = files::load_certs(&cert_path)?
        .into_iter()
        .next()
        .ok_or_else(|| TlsError::Pem {
            path: cert_path.clone(),
            expected: "PEM certificate",
            problem: "no certificate in it".to_owned(),
        })?;
    let serial = serial_of(leaf.as_ref()).map_err(|problem| TlsError::Pem {
        path: cert_path.clone(),
        expected: "X.509 certificate",
        problem,
    })?;
    let ca = load_ca(dir)?;
    // One revocation at a time: two at once would each add their serial to the same list and
    // the last write would drop the other's.
    let _lock = lock_list(dir)?;
    let ca_der = files::first_cert(&dir.ca_cert())?;
    let list_path = dir.revocation_list();
    let current = RevocationList::read(&list_path, &ca_der)?.unwrap_or_default();
    if current.revokes(&serial) {
        return Err(TlsError::AlreadyRevoked {
            cert: cert_path,
            serial: serial_hex(&serial),
        });
    }
    let now = SystemTime::now();
    let next = current.with(serial.clone(), now);
    let pem = sign(&next, &ca.issuer, now)?;
    files::write(
        &list_path,
        pem.as_bytes(),
        Secrecy::Public,
        Existing::Replace,
    )?;
    Ok(Revoked {
        cert: cert_path,
        serial: serial_hex(&serial),
        list: list_path,
        number: next.number,
        revoked: next.len(),
    })
}

/// Holds `revoked.crl.lock` in `dir` exclusively until dropped (waiting for another holder).
fn lock_list(dir: &KeyDir) -> Result<std::fs::File, TlsError> {
    let path = dir.root.join("revoked.crl.lock");
    let write_error = |error| TlsError::Write {
        path: path.clone(),
        error,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(write_error)?;
    file.lock().map_err(write_error)?;
    Ok(file)
}

/// `list` as a PEM CRL signed by `issuer`, issued at `now`.
fn sign(
    list: &RevocationList,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    now: SystemTime,
) -> Result<String, TlsError> {
    let this_update = x509_time(now)?;
    let revoked_certs = list
        .entries()
        .map(|r| {
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&r.serial),
                revocation_time: x509_time(r.since)?,
                reason_code: None,
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, TlsError>>()?;
    let params = CertificateRevocationListParams {
        this_update,
        next_update: this_update + DAY * 365,
        crl_number: SerialNumber::from_slice(&list.number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(issuer)
        .map_err(|source| TlsError::Generate {
            what: "the revocation list",
            source,
        })?;
    crl.pem().map_err(|source| TlsError::Generate {
        what: "the revocation list's PEM",
        source,
    })
}
