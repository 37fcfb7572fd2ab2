//! The coordinator's mutual-TLS listener. It runs the TLS handshake itself (rather than inside
//! the gRPC server) so that a node refused during the handshake - a certificate from another
//! CA, or none - is recorded in the audit log, not just dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use entente_proto::v1::coordinator_server::CoordinatorServer;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::connections::Tracked;
use super::hub::Hub;
use super::service::CoordinatorService;
use super::warnings::WINDOW;
use crate::audit::{AuditEvent, kind};
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
    store: Store,
    run: i64,
    hub: Arc<Hub>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let acceptor = TlsAcceptor::from(tls);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Connection, std::io::Error>>(64);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let refusals = Arc::new(RefusalLog::new(store, run, Arc::clone(&hub)));
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
            // Handshakes in progress are bounded, so a flood of connections cannot exhaust
            // the coordinator; the excess waits in the kernel's accept queue.
            let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                break;
            };
            let (acceptor, tx, refusals) = (acceptor.clone(), tx.clone(), Arc::clone(&refusals));
            let connections = Arc::clone(&connections);
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(connections.track(peer, tls))).await;
                    }
                    Ok(Err(e)) => refusals.record(peer, e.to_string()).await,
                    Err(_) => {
                        refusals
                            .record(peer, "TLS handshake timed out".into())
                            .await
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
    hub.warnings().flush(Instant::now(), true);
    result
}

/// One audit entry per address per this long: a peer that connects and fails the handshake
/// in a loop cannot grow the audit log without bound.
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// Addresses remembered at most; past that, those outside the window are forgotten.
const REFUSAL_ADDRESSES: usize = 4096;

/// Writes handshake refusals to the audit log, at most one entry per address per
/// [`REFUSAL_WINDOW`]; an entry counts the refusals of that address left out since the last.
struct RefusalLog {
    store: Store,
    run: i64,
    /// Whose bounded warning log gets the refusals.
    hub: Arc<Hub>,
    /// Per address: when its last entry was written, and refusals since then.
    recent: std::sync::Mutex<HashMap<IpAddr, (Instant, u64)>>,
}

impl RefusalLog {
    fn new(store: Store, run: i64, hub: Arc<Hub>) -> Self {
        Self {
            store,
            run,
            hub,
            recent: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The number of refusals of `ip` left out of the log since its last entry, if one is due
    /// now; `None` if this refusal falls inside the window and is only counted.
    fn due(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= REFUSAL_ADDRESSES {
            recent.retain(|_, (at, _)| now.duration_since(*at) < REFUSAL_WINDOW);
        }
        let full = recent.len() >= REFUSAL_ADDRESSES;
        match recent.get_mut(&ip) {
            Some((at, left_out)) if now.duration_since(*at) < REFUSAL_WINDOW => {
                *left_out += 1;
                None
            }
            Some((at, left_out)) => {
                *at = now;
                Some(std::mem::take(left_out))
            }
            // Every remembered address is inside its window: a flood from many addresses,
            // counted in the tracing log only.
            None if full => None,
            None => {
                recent.insert(ip, (now, 0));
                Some(0)
            }
        }
    }

    /// Records a connection refused during the TLS handshake.
    async fn record(&self, peer: SocketAddr, reason: String) {
        self.hub
            .warnings()
            .refused(peer.ip(), &peer.to_string(), "tls handshake", &reason);
        let Some(left_out) = self.due(peer.ip(), Instant::now()) else {
            return;
        };
        let event = AuditEvent {
            kind: kind::REFUSAL.into(),
            run: Some(self.run),
            round: None,
            site: None,
            detail: serde_json::json!({
                "peer": peer.to_string(),
                "stage": "tls handshake",
                "reason": reason,
                "earlier_refusals_not_logged": left_out,
            })
            .to_string(),
        };
        if let Err(e) = self.store.audit(event).await {
            tracing::error!(error = %e, "could not write to the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_entry_per_address_per_window_counting_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let hub = Arc::new(Hub::new(&["a".into()], Duration::from_secs(1)));
        let log = RefusalLog::new(Store::open(&url).await.unwrap(), 1, hub);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        assert_eq!(log.due(a, t0), Some(0));
        assert_eq!(log.due(a, t0 + Duration::from_secs(1)), None);
        assert_eq!(log.due(a, t0 + Duration::from_secs(2)), None);
        assert_eq!(log.due(b, t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(log.due(a, t0 + REFUSAL_WINDOW), Some(2));
        assert_eq!(log.due(a, t0 + REFUSAL_WINDOW), None);
    }
}
