//! Certificate verifiers that add the federation's revocation list to webpki's checks: the
//! chain is verified as rustls always does, then a certificate the list in force revokes is
//! refused with [`CertificateError::Revoked`] (the peer gets a `certificate_revoked` alert).
//! The list is looked up at each handshake, so a reloaded list applies to the next one.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};

use super::revocation::Revocations;

/// The handshake-signature methods of both verifier traits, left to the inner verifier.
macro_rules! handshake_signatures_of_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

fn refuse_revoked(revocations: &Revocations, end_entity: &CertificateDer<'_>) -> Result<(), Error> {
    match revocations.revoked_serial(end_entity.as_ref()) {
        Some(_) => Err(Error::InvalidCertificate(CertificateError::Revoked)),
        None => Ok(()),
    }
}

/// The coordinator's verifier of site certificates: webpki's, then the revocation list.
#[derive(Debug)]
pub(super) struct RevokingClientVerifier {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) revocations: Arc<Revocations>,
}

impl ClientCertVerifier for RevokingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        refuse_revoked(&self.revocations, end_entity)?;
        Ok(verified)
    }

    handshake_signatures_of_inner!();
}

/// A node's verifier of the coordinator's certificate: webpki's, then the revocation list.
#[derive(Debug)]
pub(super) struct RevokingServerVerifier {
    pub(super) inner: Arc<dyn ServerCertVerifier>,
    pub(super) revocations: Arc<Revocations>,
}

impl ServerCertVerifier for RevokingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        refuse_revoked(&self.revocations, end_entity)?;
        Ok(verified)
    }

    handshake_signatures_of_inner!();
}
