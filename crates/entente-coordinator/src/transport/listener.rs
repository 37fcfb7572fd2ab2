//! The coordinator's mutual-TLS listener. It runs the TLS handshake itself (rather than inside
//! the gRPC server) so that a node refused during the handshake - a certificate from another
//! CA, or none - is recorded in the audit log, not just dropped ([`RefusalLog`]: at most one
//! entry per address per minute, and no refusal uncounted).

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
    // Refusals counted but not yet written go to the log when their window ends (one look
    // every REFUSAL_FLUSH), and all of them when the listener stops.
    let flusher = {
        let refusals = Arc::clone(&refusals);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFUSAL_FLUSH);
            loop {
                tick.tick().await;
                refusals.flush(Instant::now(), false).await;
            }
        })
    };
    let (accept_handshakes, accept_refusals) = (Arc::clone(&handshakes), Arc::clone(&refusals));
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
            let Ok(permit) = Arc::clone(&accept_handshakes).acquire_owned().await else {
                break;
            };
            let (acceptor, tx, refusals) =
                (acceptor.clone(), tx.clone(), Arc::clone(&accept_refusals));
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
    flusher.abort();
    // Handshakes still under way finish (each within HANDSHAKE_TIMEOUT) and count their
    // refusal first: then every refusal is in the log.
    let permits = u32::try_from(MAX_HANDSHAKES).unwrap_or(u32::MAX);
    let _all = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshakes.acquire_many(permits)).await;
    refusals.flush(Instant::now(), true).await;
    hub.warnings().flush(Instant::now(), true);
    result
}

/// One audit entry per address per this long: a peer that connects and fails the handshake
/// in a loop cannot grow the audit log without bound.
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// How often refusals counted in a window that has ended are written out.
const REFUSAL_FLUSH: Duration = Duration::from_secs(5);

/// Addresses remembered at most; refusals from further addresses are counted together.
const REFUSAL_ADDRESSES: usize = 4096;

/// Writes handshake refusals to the audit log: an address's first refusal at once, with the
/// reason; the ones that follow inside [`REFUSAL_WINDOW`] are counted, and their count is
/// written when the window ends ([`RefusalLog::flush`], on a timer) or when the listener stops.
/// Every entry says how many refusals it stands for (`refusals`), so their sum is the number of
/// refused handshakes, whether or not a later refusal came.
struct RefusalLog {
    store: Store,
    run: i64,
    /// Whose bounded warning log gets the refusals.
    hub: Arc<Hub>,
    /// What is counted and not yet written.
    counts: std::sync::Mutex<Counts>,
}

/// What is counted and not yet written.
#[derive(Default)]
struct Counts {
    /// Per address: when its window opened, refusals since, and the last reason.
    windows: HashMap<IpAddr, Window>,
    /// Refusals from addresses not remembered (all [`REFUSAL_ADDRESSES`] inside their window).
    others: u64,
}

struct Window {
    opened: Instant,
    counted: u64,
    reason: String,
}

/// An audit entry due: who, why, and how many refusals it stands for.
#[derive(Debug, PartialEq)]
struct Due {
    peer: String,
    reason: String,
    refusals: u64,
}

impl RefusalLog {
    fn new(store: Store, run: i64, hub: Arc<Hub>) -> Self {
        Self {
            store,
            run,
            hub,
            counts: std::sync::Mutex::new(Counts::default()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a refusal of `peer` at `now`; the entry to write at once if it opens a window.
    fn count(&self, peer: SocketAddr, reason: &str, now: Instant) -> Option<Due> {
        let mut counts = self.counts();
        if let Some(window) = counts.windows.get_mut(&peer.ip()) {
            window.counted += 1;
            reason.clone_into(&mut window.reason);
            return None;
        }
        if counts.windows.len() >= REFUSAL_ADDRESSES {
            // Only windows that are over and hold no count may be forgotten.
            counts
                .windows
                .retain(|_, w| w.counted > 0 || now.duration_since(w.opened) < REFUSAL_WINDOW);
        }
        if counts.windows.len() >= REFUSAL_ADDRESSES {
            counts.others += 1;
            return None;
        }
        counts.windows.insert(
            peer.ip(),
            Window {
                opened: now,
                counted: 0,
                reason: reason.to_string(),
            },
        );
        Some(Due {
            peer: peer.to_string(),
            reason: reason.to_string(),
            refusals: 1,
        })
    }

    /// Takes the counts of windows over at `now` (all of them with `all`), forgetting those
    /// windows.
    fn take_due(&self, now: Instant, all: bool) -> Vec<Due> {
        let mut counts = self.counts();
        let mut due = Vec::new();
        counts.windows.retain(|ip, w| {
            if !all && now.duration_since(w.opened) < REFUSAL_WINDOW {
                return true;
            }
            if w.counted > 0 {
                due.push(Due {
                    peer: ip.to_string(),
                    reason: std::mem::take(&mut w.reason),
                    refusals: w.counted,
                });
            }
            false
        });
        if counts.others > 0 {
            due.push(Due {
                peer: format!("more than {REFUSAL_ADDRESSES} other addresses"),
                reason: "refused during the TLS handshake".into(),
                refusals: std::mem::take(&mut counts.others),
            });
        }
        due
    }

    /// Records a connection refused during the TLS handshake.
    async fn record(&self, peer: SocketAddr, reason: String) {
        self.hub
            .warnings()
            .refused(peer.ip(), &peer.to_string(), "tls handshake", &reason);
        if let Some(due) = self.count(peer, &reason, Instant::now()) {
            self.write(due).await;
        }
    }

    /// Writes the counts due at `now` (every count, with `all`).
    async fn flush(&self, now: Instant, all: bool) {
        for due in self.take_due(now, all) {
            self.write(due).await;
        }
    }

    async fn write(&self, due: Due) {
        let event = AuditEvent {
            kind: kind::REFUSAL.into(),
            run: Some(self.run),
            round: None,
            site: None,
            detail: serde_json::json!({
                "peer": due.peer,
                "stage": "tls handshake",
                "reason": due.reason,
                "refusals": due.refusals,
            })
            .to_string(),
        };
        if let Err(e) = self.store.audit(event).await {
            tracing::error!(error = %e, refusals = due.refusals, "could not write to the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_entry_per_window_and_every_count_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let hub = Arc::new(Hub::new(&["a".into()], Duration::from_secs(1)));
        let log = RefusalLog::new(Store::open(&url).await.unwrap(), 1, Arc::clone(&hub));
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:1000".parse().unwrap(),
            "10.0.0.2:1000".parse().unwrap(),
        );
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let first = |peer: SocketAddr, reason: &str| Due {
            peer: peer.to_string(),
            reason: reason.into(),
            refusals: 1,
        };
        assert_eq!(log.count(a, "x", t0), Some(first(a, "x")));
        assert_eq!(log.count(a, "x", at(1)), None);
        assert_eq!(log.count(a, "y", at(2)), None);
        assert_eq!(log.count(b, "z", at(2)), Some(first(b, "z")));
        // Nothing is due inside the window; when it ends, a's count is, with its last reason.
        assert_eq!(log.take_due(at(59), false), []);
        let due = log.take_due(t0 + REFUSAL_WINDOW, false);
        assert_eq!(
            due,
            [Due {
                peer: "10.0.0.1".into(),
                reason: "y".into(),
                refusals: 2
            }]
        );
        // a's window is forgotten: its next refusal is written at once. b's count of one
        // more refusal is flushed at shutdown, inside its window.
        assert_eq!(log.count(a, "x", at(61)), Some(first(a, "x")));
        assert_eq!(log.count(b, "z", at(61)), None);
        let due = log.take_due(at(62), true);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].peer.as_str(), due[0].refusals), ("10.0.0.2", 1));
        assert_eq!(log.take_due(at(62), true), []);
    }

    #[tokio::test]
    async fn refusals_beyond_the_remembered_addresses_are_counted_together() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let hub = Arc::new(Hub::new(&["a".into()], Duration::from_secs(1)));
        let log = RefusalLog::new(Store::open(&url).await.unwrap(), 1, hub);
        let t0 = Instant::now();
        let peer = |i: usize| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1));
        for i in 0..REFUSAL_ADDRESSES {
            assert!(log.count(peer(i), "x", t0).is_some());
        }
        // Every remembered window is open: two more addresses are counted, not remembered.
        let extra = SocketAddr::from(([10, 2, 0, 0], 1));
        assert_eq!(log.count(extra, "x", t0), None);
        assert_eq!(log.count(extra, "x", t0), None);
        let due = log.take_due(t0, false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].refusals, 2);
        assert!(due[0].peer.contains("other addresses"), "{:?}", due[0]);
    }
}
