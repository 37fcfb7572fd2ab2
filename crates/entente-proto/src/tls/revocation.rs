//! The federation's revocation list: certificates the CA has withdrawn.
//!
//! `entente keys revoke` ([`super::revoke_site`]) writes `revoked.crl`, an X.509 CRL
//! (RFC 5280) signed by the federation CA. [`Revocations`] holds the list a coordinator or node
//! goes by: it is read only if the CA's signature on it verifies, a newer list replaces it when
//! [`Revocations::reload`] finds the file changed, and it never goes back to an older list (a
//! lower CRL number) or to none, so an attacker who can only swap or delete the file cannot
//! re-admit a revoked certificate. A list stays in force until a newer one replaces it (its
//! `nextUpdate` is not enforced).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateRevocationListDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use super::error::TlsError;
use super::files;

/// The largest revocation list read (a list of 100,000 serials takes about 4 MB).
const MAX_LIST_BYTES: u64 = 16 << 20;

/// One revoked certificate: its serial number and when it was revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCert {
    /// The serial number, big-endian without leading zero bytes.
    pub serial: Vec<u8>,
    /// When the CA revoked it.
    pub since: SystemTime,
}

/// A verified revocation list: its number and the certificates it revokes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    /// The CRL number: each list the CA writes has a higher one (0: no list yet).
    pub number: u64,
    /// The revoked certificates, by serial.
    revoked: BTreeMap<Vec<u8>, SystemTime>,
}

impl RevocationList {
    /// Whether the certificate with `serial` (as [`serial_of`] gives it) is revoked.
    pub fn revokes(&self, serial: &[u8]) -> bool {
        self.revoked.contains_key(serial)
    }

    /// Every revoked certificate, by serial.
    pub fn entries(&self) -> impl Iterator<Item = RevokedCert> + '_ {
        self.revoked.iter().map(|(serial, since)| RevokedCert {
            serial: serial.clone(),
            since: *since,
        })
    }

    /// How many certificates the list revokes.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// Whether the list revokes nothing.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// Reads the list in `path` (PEM `X509 CRL` or DER), checking that the CA whose
    /// certificate is `ca_der` issued and signed it; `Ok(None)` if there is no file.
    pub fn read(path: &Path, ca_der: &[u8]) -> Result<Option<Self>, TlsError> {
        Ok(Self::read_with_digest(path, ca_der)?.map(|(list, _)| list))
    }

    /// [`RevocationList::read`], with the SHA-256 of the file's bytes.
    fn read_with_digest(path: &Path, ca_der: &[u8]) -> Result<Option<(Self, String)>, TlsError> {
        if !files::exists(path) {
            return Ok(None);
        }
        let bad = |problem: String| TlsError::BadRevocationList {
            path: path.to_owned(),
            problem,
        };
        // Only a regular file, never a pipe or a device, and never more than the limit.
        let bytes = entente_core::files::read_bounded(path, MAX_LIST_BYTES, "a revocation list")
            .map_err(|e| bad(e.to_string()))?;
        let list = Self::parse(&bytes, ca_der).map_err(bad)?;
        Ok(Some((list, entente_core::digest::sha256_hex(&bytes))))
    }

    fn parse(bytes: &[u8], ca_der: &[u8]) -> Result<Self, String> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err("the file is empty".to_owned());
        }
        let der = match CertificateRevocationListDer::from_pem_slice(bytes) {
            Ok(der) => der.as_ref().to_vec(),
            Err(rustls::pki_types::pem::Error::NoItemsFound) => bytes.to_vec(),
            Err(e) => return Err(format!("its PEM cannot be read ({e})")),
        };
        let (rest, crl) = CertificateRevocationList::from_der(&der)
            .map_err(|_| "it is not an X.509 revocation list (PEM `X509 CRL` or DER)".to_owned())?;
        if !rest.is_empty() {
            return Err("it has bytes after the revocation list".to_owned());
        }
        let (_, ca) = X509Certificate::from_der(ca_der)
            .map_err(|e| format!("the CA certificate cannot be parsed ({e})"))?;
        if crl.issuer().as_raw() != ca.subject().as_raw() {
            return Err(format!(
                "it was issued by {}, not by this federation's CA ({})",
                crl.issuer(),
                ca.subject()
            ));
        }
        crl.verify_signature(ca.public_key())
            .map_err(|_| "its signature does not verify with the federation CA's key".to_owned())?;
        let number = match crl.crl_number() {
            Some(n) => u64::try_from(n).map_err(|_| "its CRL number exceeds 2^64".to_owned())?,
            None => return Err("it has no CRL number".to_owned()),
        };
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| {
                let since = u64::try_from(r.revocation_date.timestamp())
                    .map_or(SystemTime::UNIX_EPOCH, |secs| {
                        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
                    });
                (normalized(r.raw_serial()), since)
            })
            .collect();
        Ok(Self { number, revoked })
    }

    /// The list that revokes what `self` does and `cert` too (at `now`), numbered one higher.
    pub(crate) fn with(&self, serial: Vec<u8>, now: SystemTime) -> Self {
        let mut next = self.clone();
        next.number = self.number.saturating_add(1);
        next.revoked.insert(serial, now);
        next
    }
}

/// The serial number of the certificate `cert_der`, big-endian without leading zero bytes (the
/// form [`RevocationList`] keeps).
pub fn serial_of(cert_der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| format!("the certificate cannot be parsed ({e})"))?;
    Ok(normalized(cert.raw_serial()))
}

/// A serial number as hex (`3f:a0:…`), as `openssl x509 -serial` and rcgen show it.
pub fn serial_hex(serial: &[u8]) -> String {
    serial
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn normalized(raw: &[u8]) -> Vec<u8> {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let digits = &raw[start..];
    if digits.is_empty() {
        vec![0]
    } else {
        digits.to_vec()
    }
}

/// What [`Revocations::reload`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The new list's number.
    pub number: u64,
    /// Certificates it revokes that the list before it did not.
    pub newly_revoked: Vec<Vec<u8>>,
}

/// The file as last looked at: changed when its size or modification time differ (`None`:
/// no file).
type Stamp = Option<(u64, Option<SystemTime>)>;

/// What a [`Revocations`] holds: the list in force, the digest of the file it came from, and
/// the file as last looked at (`None` before the first look), whether it was taken or refused.
#[derive(Debug, Default)]
struct State {
    list: Arc<RevocationList>,
    digest: Option<String>,
    looked_at: Option<Stamp>,
}

/// The revocation list a coordinator or node goes by, reloaded from its file on demand.
#[derive(Debug)]
pub struct Revocations {
    path: Option<PathBuf>,
    ca_der: Vec<u8>,
    state: RwLock<State>,
}

impl Revocations {
    /// The list in `path` (no file yet: nothing is revoked until one appears), checked against
    /// the CA in `ca_pem`. `path: None` means revocation is not used.
    pub fn load(ca_pem: &Path, path: Option<&Path>) -> Result<Self, TlsError> {
        let ca_der = files::first_cert(ca_pem)?;
        let revocations = Self {
            path: path.map(Path::to_owned),
            ca_der,
            state: RwLock::new(State::default()),
        };
        revocations.reload()?;
        Ok(revocations)
    }

    /// A list that revokes nothing and reads no file.
    pub fn none() -> Self {
        Self {
            path: None,
            ca_der: Vec::new(),
            state: RwLock::new(State::default()),
        }
    }

    /// The file the list is read from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The list in force now.
    pub fn current(&self) -> Arc<RevocationList> {
        Arc::clone(&self.state.read().unwrap_or_else(|e| e.into_inner()).list)
    }

    /// Whether the certificate `cert_der` is revoked; its serial if so. A certificate that
    /// cannot be parsed is not this list's business (the TLS verifier refuses it).
    pub fn revoked_serial(&self, cert_der: &[u8]) -> Option<Vec<u8>> {
        let serial = serial_of(cert_der).ok()?;
        self.current().revokes(&serial).then_some(serial)
    }

    /// Refuses the identity whose certificate chain is in `cert_pem` if the list in force
    /// revokes its certificate: a revoked coordinator or node must not start.
    pub fn check_own(&self, cert_pem: &Path) -> Result<(), TlsError> {
        let Some(leaf) = files::load_certs(cert_pem)?.into_iter().next() else {
            return Ok(());
        };
        match (self.revoked_serial(leaf.as_ref()), &self.path) {
            (Some(serial), Some(list)) => Err(TlsError::OwnCertificateRevoked {
                cert: cert_pem.to_owned(),
                serial: serial_hex(&serial),
                list: list.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Reads the file again if it changed since it was last looked at. `Ok(None)`: unchanged
    /// (or no file, and none before). The list in force stays, and an error says why, when the
    /// new file does not verify, is older than the list in force (a lower number), differs
    /// from it under the same number, drops a certificate it revokes, or was removed: so
    /// swapping or deleting the file cannot re-admit a revoked certificate while this runs. A
    /// refused file is not read again until it changes.
    pub fn reload(&self) -> Result<Option<Reloaded>, TlsError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let stamp = std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        let (old, old_digest) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if state.looked_at == Some(stamp) {
                return Ok(None);
            }
            (Arc::clone(&state.list), state.digest.clone())
        };
        let result = self.judge(path, &old, old_digest.as_deref());
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        state.looked_at = Some(stamp);
        let Some((list, digest)) = result? else {
            return Ok(None);
        };
        let newly_revoked = list
            .revoked
            .keys()
            .filter(|s| !old.revokes(s))
            .cloned()
            .collect();
        let number = list.number;
        state.list = Arc::new(list);
        state.digest = Some(digest);
        Ok(Some(Reloaded {
            number,
            newly_revoked,
        }))
    }

    /// The list in `path` if it may replace `old` (read from a file whose digest was
    /// `old_digest`); `Ok(None)` if there is nothing to take (no file, none before, or the same
    /// file again).
    fn judge(
        &self,
        path: &Path,
        old: &RevocationList,
        old_digest: Option<&str>,
    ) -> Result<Option<(RevocationList, String)>, TlsError> {
        let Some((list, digest)) = RevocationList::read_with_digest(path, &self.ca_der)? else {
            if old.number > 0 {
                return Err(TlsError::RevocationListRemoved {
                    path: path.to_owned(),
                    number: old.number,
                });
            }
            return Ok(None);
        };
        if old_digest == Some(digest.as_str()) {
            return Ok(None);
        }
        let refused = |problem: String| TlsError::RevocationRollback {
            path: path.to_owned(),
            problem,
        };
        if list.number < old.number {
            return Err(refused(format!(
                "it is revocation list number {}, older than number {} already in force",
                list.number, old.number
            )));
        }
        if list.number == old.number && old_digest.is_some() {
            return Err(refused(format!(
                "it is another revocation list under number {}, the number of the one in force",
                list.number
            )));
        }
        if let Some(dropped) = old.revoked.keys().find(|s| !list.revokes(s)) {
            return Err(refused(format!(
                "it no longer revokes serial {}, which the list in force revokes",
                serial_hex(dropped)
            )));
        }
        Ok(Some((list, digest)))
    }
}
