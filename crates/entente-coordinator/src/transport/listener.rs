//! The coordinator's mutual-TLS listener. It runs the TLS handshake itself (rather than inside
//! the gRPC server) so that a node refused during the handshake - a certificate from another
//! CA, or none - is recorded in the audit log, not just dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use entente_proto::v1::coordinator_server::CoordinatorServer;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::service::CoordinatorService;
use crate::audit::AuditEvent;
use crate::store::Store;

/// TLS handshakes in progress at once.
const MAX_HANDSHAKES: usize = 64;

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest gRPC message accepted (a chunk is 256 KiB; headers are small).
const MAX_MESSAGE: usize = 8 << 20;

/// HTTP/2 receive windows: how much a node may send before the coordinator reads it. A node
/// sends parameters only when asked (`proceed`), so just the upload being folded uses them;
/// large enough for one upload to fill a long-distance link (1 MiB per round trip), small
/// enough that a node ignoring `proceed` can make the coordinator buffer little.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 2 << 20;

/// Accepts connections on `listener`, completes mutual TLS with `tls`, and serves `service`
/// on every connection that passes, until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: CoordinatorService,
    store: Store,
    run: i64,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let acceptor = TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<TlsStream<TcpStream>, std::io::Error>>(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let accept_loop = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // Handshakes in progress are bounded, so a flood of connections cannot exhaust
            // the coordinator; the excess waits in the kernel's accept queue.
            let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                break;
            };
            let (acceptor, tx, store) = (acceptor.clone(), tx.clone(), store.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => refuse(&store, run, peer, e.to_string()).await,
                    Err(_) => refuse(&store, run, peer, "TLS handshake timed out".into()).await,
                }
            });
        }
    });
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .add_service(
            CoordinatorServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
        .await;
    accept_loop.abort();
    result
}

/// Records a connection refused during the TLS handshake.
async fn refuse(store: &Store, run: i64, peer: SocketAddr, reason: String) {
    tracing::warn!(%peer, %reason, "TLS handshake refused");
    let event = AuditEvent {
        kind: "refusal".into(),
        run: Some(run),
        round: None,
        site: None,
        detail: serde_json::json!({ "peer": peer.to_string(), "stage": "tls handshake", "reason": reason })
            .to_string(),
    };
    if let Err(e) = store.audit(event).await {
        tracing::error!(error = %e, "could not write to the audit log");
    }
}
