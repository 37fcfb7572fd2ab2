//! Learning which site a verified client certificate belongs to.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::error::{SiteCertError, TlsError};
use super::issue::site_name_problem;

/// The site named by a peer's leaf certificate (DER), as verified by rustls.
///
/// The certificate must carry the clientAuth extended key usage (so a coordinator certificate
/// is not a site), exactly one subject CN and exactly one SAN dNSName, both equal and a valid
/// site name. This does not verify the chain: call it on `peer_certificates()[0]` of a
/// connection whose handshake succeeded under [`super::server_config`].
pub fn site_name(cert_der: &[u8]) -> Result<String, TlsError> {
    site_name_inner(cert_der).map_err(TlsError::from)
}

fn site_name_inner(cert_der: &[u8]) -> Result<String, SiteCertError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| SiteCertError::Unparseable(e.to_string()))?;

    let client_auth = cert
        .extended_key_usage()
        .map_err(|e| SiteCertError::Unparseable(e.to_string()))?
        .is_some_and(|eku| eku.value.client_auth);
    if !client_auth {
        return Err(SiteCertError::NoClientAuth);
    }

    let mut common_names = cert.subject().iter_common_name();
    let common_name = common_names.next().ok_or(SiteCertError::NoCommonName)?;
    if common_names.next().is_some() {
        return Err(SiteCertError::ManyCommonNames);
    }
    let common_name = common_name
        .as_str()
        .map_err(|e| SiteCertError::Unparseable(format!("common name: {e}")))?;

    let san = cert
        .subject_alternative_name()
        .map_err(|e| SiteCertError::Unparseable(e.to_string()))?;
    let mut dns_names = san
        .iter()
        .flat_map(|san| &san.value.general_names)
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(*dns),
            _ => None,
        });
    let dns_name = dns_names.next().ok_or(SiteCertError::NoDnsName)?;
    if dns_names.next().is_some() {
        return Err(SiteCertError::ManyDnsNames);
    }

    if common_name != dns_name {
        return Err(SiteCertError::NameMismatch {
            common_name: common_name.to_owned(),
            dns_name: dns_name.to_owned(),
        });
    }
    if let Some(reason) = site_name_problem(common_name) {
        return Err(SiteCertError::InvalidName {
            name: common_name.to_owned(),
            reason,
        });
    }
    Ok(common_name.to_owned())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType};

    use super::*;

    fn cert(cn: Option<&str>, dns: &[&str], eku: &[ExtendedKeyUsagePurpose]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = dns
            .iter()
            .map(|d| SanType::DnsName((*d).try_into().unwrap()))
            .collect();
        params.extended_key_usages = eku.to_vec();
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn reason(der: &[u8]) -> SiteCertError {
        match site_name(der) {
            Err(TlsError::NotASite(reason)) => reason,
            other => panic!("expected NotASite, got {other:?}"),
        }
    }

    #[test]
    fn accepts_matching_names_with_client_auth() {
        let both = [
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        assert_eq!(site_name(&cert(Some("a"), &["a"], &both)).unwrap(), "a");
    }

    #[test]
    fn names_what_is_missing() {
        use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        assert!(matches!(
            reason(b"not a certificate"),
            SiteCertError::Unparseable(_)
        ));
        assert_eq!(
            reason(&cert(Some("a"), &["a"], &[])),
            SiteCertError::NoClientAuth
        );
        assert_eq!(
            reason(&cert(Some("a"), &["a"], &[ServerAuth])),
            SiteCertError::NoClientAuth
        );
        assert_eq!(
            reason(&cert(None, &["a"], &[ClientAuth])),
            SiteCertError::NoCommonName
        );
        assert_eq!(
            reason(&cert(Some("a"), &[], &[ClientAuth])),
            SiteCertError::NoDnsName
        );
        assert_eq!(
            reason(&cert(Some("a"), &["a", "b"], &[ClientAuth])),
            SiteCertError::ManyDnsNames
        );
        assert!(matches!(
            reason(&cert(Some("a"), &["b"], &[ClientAuth])),
            SiteCertError::NameMismatch { .. }
        ));
        assert!(matches!(
            reason(&cert(Some("-a"), &["-a"], &[ClientAuth])),
            SiteCertError::InvalidName { .. }
        ));
    }
}
