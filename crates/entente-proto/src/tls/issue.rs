//! Creating the federation CA and issuing site and coordinator certificates.
//!
//! All keys are ECDSA P-256 (rcgen's default). The CA may sign only end-entity certificates
//! (path length 0); site certificates are clientAuth-only and the coordinator's certificate is
//! serverAuth-only, so a site cannot pose as the coordinator nor the coordinator as a site.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use entente_core::text::excerpt;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::KeyDir;
pub use entente_core::manifest::{MAX_SITE_NAME_LEN, site_name_problem};

use super::error::TlsError;
use super::files::{self, Existing, Secrecy};

/// The common name of every coordinator certificate.
pub const COORDINATOR_COMMON_NAME: &str = "entente coordinator";

/// The longest federation name, so that "<name> federation CA" fits the 64-character CN bound
/// of RFC 5280 (ub-common-name).
pub const MAX_FEDERATION_NAME_LEN: usize = 50;

pub(super) const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a certificate is valid: from a day before it is issued (clocks differ) until
/// `days` days after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    days: u32,
}

impl Validity {
    /// The CA's default: ten years.
    pub const CA_DEFAULT: Validity = Validity { days: 10 * 365 };
    /// A site's or the coordinator's default: two years.
    pub const LEAF_DEFAULT: Validity = Validity { days: 2 * 365 };
    /// The longest validity issued: a hundred years.
    pub const MAX_DAYS: u32 = 36_500;

    /// A validity of `days` days, 1 to [`Validity::MAX_DAYS`].
    pub fn days(days: u32) -> Result<Self, TlsError> {
        if (1..=Self::MAX_DAYS).contains(&days) {
            Ok(Validity { days })
        } else {
            Err(TlsError::InvalidValidity { days })
        }
    }

    /// The validity in days.
    pub fn in_days(self) -> u32 {
        self.days
    }
}

/// Checks a site name: 1 to 63 characters of `[A-Za-z0-9-_.]`, not starting with '-'.
///
/// The name becomes the certificate's CN and dNSName and the file name `sites/<NAME>.pem`, so
/// it can hold no path separator.
pub fn validate_site_name(name: &str) -> Result<(), TlsError> {
    site_name_problem(name).map_or(Ok(()), |reason| {
        Err(TlsError::InvalidSiteName {
            name: excerpt(name).into_owned(),
            reason,
        })
    })
}

/// Creates the federation CA: `ca.key` (mode 0600) and the self-signed `ca.pem`.
///
/// The certificate is CA:true with path length 0 and CN "<federation> federation CA", valid
/// from a day ago for ten years. Refuses to overwrite an existing `ca.key` or `ca.pem`.
pub fn init_ca(dir: &KeyDir, federation: &str) -> Result<(), TlsError> {
    init_ca_valid_for(dir, federation, Validity::CA_DEFAULT)
}

/// [`init_ca`], with the CA valid for `validity` instead of ten years. Certificates it issues
/// stop being accepted when it expires, whatever their own validity.
pub fn init_ca_valid_for(
    dir: &KeyDir,
    federation: &str,
    validity: Validity,
) -> Result<(), TlsError> {
    validate_federation_name(federation)?;
    for path in [dir.ca_key(), dir.ca_cert()] {
        if files::exists(&path) {
            return Err(TlsError::CaExists { path });
        }
    }

    let key = generate_key("the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(&format!("{federation} federation CA"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, federation);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, SystemTime::now(), validity.days)?;
    let cert = params
        .self_signed(&key)
        .map_err(|source| TlsError::Generate {
            what: "the CA certificate",
            source,
        })?;

    // Key first: a CA certificate without its key is useless, and both are refused next time.
    let write = |path: &std::path::Path, contents: String, secrecy| {
        files::write(path, contents.as_bytes(), secrecy, Existing::Refuse).map_err(|e| match e {
            TlsError::KeyExists { path } => TlsError::CaExists { path },
            other => other,
        })
    };
    write(&dir.ca_key(), key.serialize_pem(), Secrecy::Private)?;
    write(&dir.ca_cert(), cert.pem(), Secrecy::Public)
}

/// Issues a site certificate signed by the federation CA.
///
/// Subject CN and SAN dNSName are `site` (see [`validate_site_name`]); the extended key usage
/// is clientAuth only. Writes `sites/<site>.key` (mode 0600) and `sites/<site>.pem` (the
/// site's certificate followed by the CA certificate). Refuses to overwrite an existing key
/// unless `overwrite` is true.
pub fn issue_site(dir: &KeyDir, site: &str, overwrite: bool) -> Result<(), TlsError> {
    issue_site_valid_for(dir, site, overwrite, Validity::LEAF_DEFAULT)
}

/// [`issue_site`], with the certificate valid for `validity` instead of two years.
pub fn issue_site_valid_for(
    dir: &KeyDir,
    site: &str,
    overwrite: bool,
    validity: Validity,
) -> Result<(), TlsError> {
    issue_site_at(dir, site, overwrite, SystemTime::now(), validity)
}

fn issue_site_at(
    dir: &KeyDir,
    site: &str,
    overwrite: bool,
    now: SystemTime,
    validity: Validity,
) -> Result<(), TlsError> {
    validate_site_name(site)?;
    let san = SanType::DnsName(site.try_into().map_err(|source| TlsError::Generate {
        what: "the site's subjectAltName",
        source,
    })?);
    let mut params = leaf_params(
        vec![san],
        ExtendedKeyUsagePurpose::ClientAuth,
        now,
        validity,
    )?;
    params.distinguished_name = common_name(site);
    issue_leaf(
        dir,
        &params,
        &dir.site_cert(site),
        &dir.site_key(site),
        overwrite,
    )
}

/// Issues the coordinator's server certificate, signed by the federation CA.
///
/// Each host is an IP address (SAN iPAddress) or a DNS name (SAN dNSName); the CN is
/// "entente coordinator" and the extended key usage serverAuth only. Writes
/// `coordinator.key` (mode 0600) and `coordinator.pem` (certificate then CA certificate).
/// Refuses to overwrite an existing key unless `overwrite` is true.
pub fn issue_coordinator(dir: &KeyDir, hosts: &[String], overwrite: bool) -> Result<(), TlsError> {
    issue_coordinator_valid_for(dir, hosts, overwrite, Validity::LEAF_DEFAULT)
}

/// [`issue_coordinator`], with the certificate valid for `validity` instead of two years.
pub fn issue_coordinator_valid_for(
    dir: &KeyDir,
    hosts: &[String],
    overwrite: bool,
    validity: Validity,
) -> Result<(), TlsError> {
    if hosts.is_empty() {
        return Err(TlsError::NoHosts);
    }
    let mut sans = Vec::with_capacity(hosts.len());
    for host in hosts {
        let san = host_san(host)?;
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    let mut params = leaf_params(
        sans,
        ExtendedKeyUsagePurpose::ServerAuth,
        SystemTime::now(),
        validity,
    )?;
    params.distinguished_name = common_name(COORDINATOR_COMMON_NAME);
    issue_leaf(
        dir,
        &params,
        &dir.coordinator_cert(),
        &dir.coordinator_key(),
        overwrite,
    )
}

fn validate_federation_name(name: &str) -> Result<(), TlsError> {
    let reason = if name.trim().is_empty() {
        Some("it is empty")
    } else if name.chars().count() > MAX_FEDERATION_NAME_LEN {
        Some("it is longer than 50 characters")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    reason.map_or(Ok(()), |reason| {
        Err(TlsError::InvalidFederationName {
            name: excerpt(name).into_owned(),
            reason,
        })
    })
}

/// The SAN for a coordinator host: an IP address, or a DNS name TLS clients can ask for.
fn host_san(host: &str) -> Result<SanType, TlsError> {
    let invalid = || TlsError::InvalidHost {
        host: excerpt(host).into_owned(),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    rustls::pki_types::DnsName::try_from(host).map_err(|_| invalid())?;
    Ok(SanType::DnsName(host.try_into().map_err(|_| invalid())?))
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name
}

fn leaf_params(
    subject_alt_names: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    now: SystemTime,
    validity: Validity,
) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = subject_alt_names;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, validity.days)?;
    Ok(params)
}

/// Signs `params` with the CA in `dir` and writes the key, then the certificate chain.
fn issue_leaf(
    dir: &KeyDir,
    params: &CertificateParams,
    cert_path: &std::path::Path,
    key_path: &std::path::Path,
    overwrite: bool,
) -> Result<(), TlsError> {
    // Refuse before doing any work; `files::write` checks again, atomically.
    if !overwrite && files::exists(key_path) {
        return Err(TlsError::KeyExists {
            path: key_path.to_owned(),
        });
    }
    let ca = load_ca(dir)?;
    let key = generate_key("a certificate key")?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| TlsError::Generate {
            what: "the certificate",
            source,
        })?;
    let mut chain = cert.pem();
    if !chain.ends_with('\n') {
        chain.push('\n');
    }
    chain.push_str(&ca.pem);

    let existing = if overwrite {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    // Key first: were the certificate written first and the key refused, the pair would differ.
    files::write(
        key_path,
        key.serialize_pem().as_bytes(),
        Secrecy::Private,
        existing,
    )?;
    files::write(
        cert_path,
        chain.as_bytes(),
        Secrecy::Public,
        Existing::Replace,
    )
}

/// The federation CA, loaded to sign.
pub(super) struct LoadedCa {
    pub(super) issuer: Issuer<'static, KeyPair>,
    /// `ca.pem` as read, to append to issued chains.
    pem: String,
}

pub(super) fn load_ca(dir: &KeyDir) -> Result<LoadedCa, TlsError> {
    let (cert_path, key_path) = (dir.ca_cert(), dir.ca_key());
    for path in [&cert_path, &key_path] {
        if !files::exists(path) {
            return Err(TlsError::MissingCa { path: path.clone() });
        }
    }
    let pem = files::read_text(&cert_path)?;
    let key_text = files::read_text(&key_path)?;
    let key = KeyPair::from_pem(&key_text).map_err(|source| TlsError::BadKey {
        path: key_path.clone(),
        source,
    })?;

    // The CA certificate must be a CA, and `ca.key` must be its key: otherwise every issued
    // certificate would fail verification later, far from the cause.
    let bad_cert = |source| TlsError::BadCaCert {
        path: cert_path.clone(),
        source,
    };
    // `load_certs` never returns an empty list; the error only keeps that local.
    let ca_der = files::load_certs(&cert_path)?
        .into_iter()
        .next()
        .ok_or_else(|| bad_cert(rcgen::Error::CouldNotParseCertificate))?;
    let (_, parsed) = X509Certificate::from_der(&ca_der)
        .map_err(|_| bad_cert(rcgen::Error::CouldNotParseCertificate))?;
    if !parsed.is_ca() {
        return Err(TlsError::NotCa {
            path: cert_path.clone(),
            subject: parsed.subject().to_string(),
        });
    }
    if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(TlsError::KeyMismatch {
            cert: cert_path,
            key: key_path,
        });
    }
    let issuer = Issuer::from_ca_cert_der(&ca_der, key).map_err(bad_cert)?;
    Ok(LoadedCa { issuer, pem })
}

fn generate_key(what: &'static str) -> Result<KeyPair, TlsError> {
    KeyPair::generate().map_err(|source| TlsError::Generate { what, source })
}

/// Makes `params` valid from a day before `now` until `days` days after it.
fn set_validity(
    params: &mut CertificateParams,
    now: SystemTime,
    days: u32,
) -> Result<(), TlsError> {
    let now = x509_time(now)?;
    params.not_before = now - DAY;
    params.not_after = now + DAY * days;
    Ok(())
}

/// `t` as the time an X.509 certificate or revocation list carries; a clock before 1970 or
/// past year 9000 is refused ([`TlsError::Clock`]).
pub(super) fn x509_time(t: SystemTime) -> Result<time::OffsetDateTime, TlsError> {
    let since_epoch = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| TlsError::Clock)?;
    // `time` panics past year 9999; a clock there is as wrong as one before 1970.
    if since_epoch > DAY * (365 * 7_000) {
        return Err(TlsError::Clock);
    }
    Ok(rcgen::date_time_ymd(1970, 1, 1) + since_epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names() {
        for good in ["a", "site-1", "Clinic_A.west", "_x", ".a", &"a".repeat(63)] {
            assert!(
                validate_site_name(good).is_ok(),
                "{good:?} should be accepted"
            );
        }
        for bad in [
            "",
            "-a",
            "a/b",
            "a b",
            "é",
            "a:b",
            "..\\x",
            ".",
            "..",
            &"a".repeat(64),
        ] {
            let err = validate_site_name(bad).expect_err(bad);
            assert!(matches!(err, TlsError::InvalidSiteName { .. }), "{err}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host_san("127.0.0.1").unwrap(),
            SanType::IpAddress([127, 0, 0, 1].into())
        );
        assert!(matches!(host_san("::1").unwrap(), SanType::IpAddress(ip) if ip.is_loopback()));
        assert!(matches!(
            host_san("coord.example.org").unwrap(),
            SanType::DnsName(_)
        ));
        for bad in ["", "a b", "exa mple.org", "http://x", "x/y", "ü.example"] {
            assert!(
                matches!(host_san(bad), Err(TlsError::InvalidHost { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn federation_names() {
        assert!(validate_federation_name("hospitals").is_ok());
        for bad in ["", "  ", "a\nb", &"f".repeat(51)] {
            assert!(matches!(
                validate_federation_name(bad),
                Err(TlsError::InvalidFederationName { .. })
            ));
        }
    }

    #[test]
    fn validity_spans_a_day_back_and_the_given_days_forward() {
        // 2024-03-01T12:00:00Z
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_294_400);
        let mut params = CertificateParams::default();
        set_validity(&mut params, now, 730).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (_, parsed) = X509Certificate::from_der(cert.der()).unwrap();
        assert_eq!(
            parsed.validity().not_before.timestamp(),
            1_709_294_400 - 86_400
        );
        assert_eq!(
            parsed.validity().not_after.timestamp(),
            1_709_294_400 + 730 * 86_400
        );
        assert!(set_validity(&mut params, SystemTime::UNIX_EPOCH - DAY, 1).is_err());
    }

    #[test]
    fn validity_is_one_day_to_a_hundred_years() {
        assert_eq!(Validity::days(1).unwrap(), Validity { days: 1 });
        assert!(Validity::days(Validity::MAX_DAYS).is_ok());
        for bad in [0, Validity::MAX_DAYS + 1, u32::MAX] {
            let e = Validity::days(bad).unwrap_err();
            assert!(
                matches!(e, TlsError::InvalidValidity { days } if days == bad),
                "{e}"
            );
        }
    }

    #[test]
    fn an_expired_site_certificate_is_refused_saying_it_expired() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path());
        init_ca(&keys, "expiry").unwrap();
        // Issued three days ago for one day: it expired yesterday.
        let then = SystemTime::now() - 3 * DAY;
        issue_site_at(&keys, "old", false, then, Validity::days(1).unwrap()).unwrap();
        let e = super::super::check_site_certificate(&keys.ca_cert(), &keys.site_cert("old"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expired"), "{e}");
        // The same site, issued now for a day, is accepted.
        issue_site_valid_for(&keys, "old", true, Validity::days(1).unwrap()).unwrap();
        let site = super::super::check_site_certificate(&keys.ca_cert(), &keys.site_cert("old"));
        assert_eq!(site.unwrap(), "old");
    }
}
