//! The coordinator's mutual-TLS listener. It runs the TLS handshake itself (rather than inside
//! the gRPC server) so that a node refused during the handshake - a certificate from another
//! CA, or none - is recorded in the audit log, not just dropped ([`RefusalLog`]: at most one
//! entry per address per minute, and no refusal uncounted).
//!
//! [`RefusalLog`]: super::refusals

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use entente_proto::MAX_MESSAGE;
use entente_proto::v1::coordinator_server::CoordinatorServer;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::connections::Tracked;
use super::hub::Hub;
use super::refusals::{HANDSHAKE_STAGE, Refusal};
use super::service::CoordinatorService;
use super::warnings::WINDOW;

/// TLS handshakes in progress at once.
const MAX_HANDSHAKES: usize = 256;

/// TLS handshakes in progress at once from one address: a client that opens connections and
/// sends nothing holds at most this many slots, not all of them.
const MAX_HANDSHAKES_PER_ADDRESS: usize = 32;

/// Longest a new connection may stay silent: a node sends its TLS hello at once.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 receive windows: how much a node may send before the coordinator reads it. A node
/// sends parameters only when asked (`proceed`), so just the upload being folded uses them;
/// large enough for one upload to fill a long-distance link (1 MiB per round trip), small
/// enough that a node ignoring `proceed` can make the coordinator buffer little.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 2 << 20;

/// A connection that passed the handshake, counted as open while the server holds it.
type Connection = Tracked<TlsStream<TcpStream>>;

/// Accepts connections on `listener`, completes mutual TLS with `tls`, and serves `service`
/// on every connection that passes (counting it among `hub`'s open connections), until
/// `shutdown` resolves: then it stops accepting at once and returns when the open connections
/// have closed. Refused handshakes go to the audit log and to `hub`'s bounded warning log,
/// whose summary is written every [`WINDOW`] and at the end.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    service: CoordinatorService,
    hub: Arc<Hub>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let refusals = service.refusals();
    let acceptor = TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Connection, std::io::Error>>(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let summaries = {
        let hub = Arc::clone(&hub);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(WINDOW);
            loop {
                tick.tick().await;
                hub.warnings().flush(Instant::now(), false);
            }
        })
    };
    // The accept loop stops (and closes the socket) as soon as `shutdown` resolves, while the
    // server drains its connections.
    let (stop_accepting, mut stopped) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_accepting.send(true);
    };
    let connections = Arc::clone(hub.connections());
    // Refusals counted but not yet written go to the log when their window ends (one look
    // every REFUSAL_FLUSH), and all of them when the listener stops.
    let flusher = refusals.spawn_flusher();
    let (accept_handshakes, accept_refusals) = (Arc::clone(&handshakes), Arc::clone(&refusals));
    let per_address = Arc::new(PerAddress::default());
    let accept_loop = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = stopped.wait_for(|s| *s) => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            // One address may not hold more than its share of the handshake slots.
            let Some(pending) = per_address.enter(peer.ip()) else {
                let reason = format!(
                    "more than {MAX_HANDSHAKES_PER_ADDRESS} TLS handshakes in progress from this \
                     address"
                );
                accept_refusals
                    .record(peer.ip(), handshake(peer, reason))
                    .await;
                continue;
            };
            // Handshakes in progress are bounded, so a flood of connections cannot exhaust
            // the coordinator; the excess waits in the kernel's accept queue.
            let Ok(permit) = Arc::clone(&accept_handshakes).acquire_owned().await else {
                break;
            };
            let (acceptor, tx, refusals) =
                (acceptor.clone(), tx.clone(), Arc::clone(&accept_refusals));
            let connections = Arc::clone(&connections);
            tokio::spawn(async move {
                let _permit = permit;
                let _pending = pending;
                // A connection that sends nothing gives its slot back soon.
                if !matches!(
                    tokio::time::timeout(FIRST_BYTE_TIMEOUT, tcp.readable()).await,
                    Ok(Ok(()))
                ) {
                    let reason = format!(
                        "sent nothing within {} s of connecting",
                        FIRST_BYTE_TIMEOUT.as_secs()
                    );
                    refusals.record(peer.ip(), handshake(peer, reason)).await;
                    return;
                }
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(connections.track(peer, tls))).await;
                    }
                    Ok(Err(e)) => {
                        refusals
                            .record(peer.ip(), handshake(peer, e.to_string()))
                            .await
                    }
                    Err(_) => {
                        let reason = "TLS handshake timed out".to_string();
                        refusals.record(peer.ip(), handshake(peer, reason)).await;
                    }
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
    summaries.abort();
    flusher.abort();
    // Handshakes still under way finish (each within HANDSHAKE_TIMEOUT) and count their
    // refusal first: then every refusal is in the log.
    let permits = u32::try_from(MAX_HANDSHAKES).unwrap_or(u32::MAX);
    let _all = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshakes.acquire_many(permits)).await;
    refusals.flush(Instant::now(), true).await;
    hub.warnings().flush(Instant::now(), true);
    result
}

/// A refusal during the TLS handshake.
fn handshake(peer: SocketAddr, reason: String) -> Refusal {
    Refusal {
        peer: peer.to_string(),
        site: None,
        stage: HANDSHAKE_STAGE.into(),
        reason,
    }
}

/// Handshakes in progress per address.
#[derive(Default)]
struct PerAddress(std::sync::Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a handshake of `ip`, unless it already has [`MAX_HANDSHAKES_PER_ADDRESS`] in
    /// progress; the count goes down when the returned guard is dropped.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Pending> {
        let mut counts = self.lock();
        let count = counts.entry(ip).or_insert(0);
        if *count >= MAX_HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(Pending {
            of: Arc::clone(self),
            ip,
        })
    }
}

/// One handshake in progress, counted against its address until dropped.
struct Pending {
    of: Arc<PerAddress>,
    ip: IpAddr,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut counts = self.of.lock();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}
