//! The node's connections to the coordinator: TCP, then mutual TLS with entente's own rustls
//! configuration (`entente_proto::tls::client_config`), which checks the coordinator's
//! certificate against the federation CA and the revocation list. tonic's own TLS cannot
//! check a revocation list, so the channel is given this connector instead.
//!
//! The channel's address is `http://…` (the TLS is this connector's, not tonic's).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::codegen::Service;

/// Opens a TLS connection to one coordinator address for each call.
#[derive(Clone)]
pub(crate) struct CoordinatorConnector {
    tls: TlsConnector,
    /// The name the coordinator's certificate must carry.
    server_name: ServerName<'static>,
    /// `host:port` to connect to.
    address: String,
    /// Longest the TCP connection may take to open.
    tcp_timeout: Duration,
}

impl CoordinatorConnector {
    /// Connects to `host:port` with `tls`, expecting a certificate for `host`.
    pub(crate) fn new(
        tls: Arc<rustls::ClientConfig>,
        host: &str,
        port: u16,
        tcp_timeout: Duration,
    ) -> Result<Self, String> {
        let server_name = ServerName::try_from(host.to_string()).map_err(|e| {
            format!("`{host}` is neither a DNS name nor an IP address a certificate can name: {e}")
        })?;
        let address = match server_name {
            ServerName::IpAddress(_) if host.contains(':') => format!("[{host}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        Ok(Self {
            tls: TlsConnector::from(tls),
            server_name,
            address,
            tcp_timeout,
        })
    }

    /// The `host:port` connected to.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }
}

impl<U> Service<U> for CoordinatorConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: U) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp = tokio::time::timeout(this.tcp_timeout, TcpStream::connect(&this.address))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "TCP connection to {} timed out after {} s",
                            this.address,
                            this.tcp_timeout.as_secs_f64()
                        ),
                    )
                })??;
            let _ = tcp.set_nodelay(true);
            let tls = this.tls.connect(this.server_name.clone(), tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// Why a connection failed for good, if `e`'s chain of sources holds a TLS refusal of a
/// revoked certificate: this site's (the coordinator sent a `certificate_revoked` alert) or
/// the coordinator's (this node's revocation list revokes it). Trying again cannot help.
///
/// An error that went through HTTP/2 keeps only its text, so the chain is also read for the
/// text rustls gives those two errors.
pub(crate) fn revoked_reason(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let ours = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked);
    let theirs = rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked);
    let is = |err: &(dyn std::error::Error + 'static), wanted: &rustls::Error| {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        tls == Some(wanted) || err.to_string() == wanted.to_string()
    };
    let mut current = Some(e);
    while let Some(err) = current {
        if is(err, &ours) {
            return Some(
                "the coordinator refused this site's certificate: the federation revoked it; \
                 the site may rejoin only with a new certificate (`entente keys issue SITE \
                 --overwrite` at the federation's CA)",
            );
        }
        if is(err, &theirs) {
            return Some(
                "the coordinator's certificate is revoked by this node's revocation list: \
                 refusing to connect to it; ask the federation for the coordinator's new \
                 certificate",
            );
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revoked_certificate_is_found_in_a_chain_of_errors_or_in_its_text() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRevoked);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, alert.clone());
        assert!(
            revoked_reason(&wrapped)
                .unwrap()
                .contains("refused this site's")
        );
        // What HTTP/2 passes on: the kind and the text only.
        let text = io::Error::new(io::ErrorKind::InvalidData, alert.to_string());
        assert!(
            revoked_reason(&text)
                .unwrap()
                .contains("refused this site's")
        );
        let theirs = rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked);
        let wrapped = io::Error::new(io::ErrorKind::InvalidData, theirs);
        assert!(
            revoked_reason(&wrapped)
                .unwrap()
                .contains("coordinator's certificate")
        );
        let other = io::Error::new(
            io::ErrorKind::InvalidData,
            "received fatal alert: BadCertificate",
        );
        assert_eq!(revoked_reason(&other), None);
    }
}
