//! The audit log's record of refusals (handshakes, calls from certificates the manifest does
//! not name, registrations it refuses), bounded: a peer that is refused in a loop, whether it
//! fails the TLS handshake or holds a valid site certificate and calls again and again, gets
//! one entry at once and one count a minute per stage, never one entry per attempt. No refusal goes
//! uncounted: counts are written when their window ends (looked at on a timer) and at shutdown.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::hub::Hub;
use crate::audit::{AuditEvent, kind};
use crate::store::Store;

/// One audit entry per peer, site and stage per this long.
pub(crate) const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// How often counts of windows that have ended are written out.
const REFUSAL_FLUSH: Duration = Duration::from_secs(5);

/// Peers remembered at most; refusals of further peers are counted together.
pub(crate) const REFUSAL_PEERS: usize = 4096;

/// The stage of a refusal during the TLS handshake (counted apart, for the dashboard).
pub(crate) const HANDSHAKE_STAGE: &str = "tls handshake";

/// One refusal: who, at what stage, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The peer's address, as shown.
    pub peer: String,
    /// The site its certificate names, when the manifest knows it.
    pub site: Option<String>,
    /// Where it was refused: `tls handshake`, or the call (`register`, `poll_task`, ...).
    pub stage: String,
    /// Why.
    pub reason: String,
}

/// A window's key: the peer's address, the site for a site the manifest names, and the stage:
/// nodes behind one address (a NAT) refused for different things each get their entry.
type Key = (IpAddr, Option<String>, String);

struct Window {
    opened: Instant,
    /// Refusals after the first, not yet written.
    counted: u64,
    /// The latest of them.
    last: Refusal,
}

/// What is counted and not yet written.
#[derive(Default)]
struct Counts {
    windows: HashMap<Key, Window>,
    /// Refusals of peers not remembered (all [`REFUSAL_PEERS`] inside their window).
    others: u64,
}

/// An audit entry due: the refusal and how many refusals it stands for.
#[derive(Debug, PartialEq)]
pub(crate) struct Due {
    refusal: Refusal,
    refusals: u64,
}

/// Writes refusals to the audit log, bounded as the module says, and every one of them to the
/// hub's bounded warning log.
pub(crate) struct RefusalLog {
    store: Store,
    run: i64,
    hub: Arc<Hub>,
    counts: std::sync::Mutex<Counts>,
}

impl RefusalLog {
    /// The refusal log of run `run`.
    pub(crate) fn new(store: Store, run: i64, hub: Arc<Hub>) -> Self {
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

    /// Counts `refusal` of `ip` at `now`; the entry to write at once if it opens a window.
    fn count(&self, ip: IpAddr, refusal: Refusal, now: Instant) -> Option<Due> {
        let mut counts = self.counts();
        let key = (ip, refusal.site.clone(), refusal.stage.clone());
        if let Some(window) = counts.windows.get_mut(&key) {
            window.counted += 1;
            window.last = refusal;
            return None;
        }
        if counts.windows.len() >= REFUSAL_PEERS {
            // Only windows that are over and hold no count may be forgotten.
            counts
                .windows
                .retain(|_, w| w.counted > 0 || now.duration_since(w.opened) < REFUSAL_WINDOW);
        }
        if counts.windows.len() >= REFUSAL_PEERS {
            counts.others += 1;
            return None;
        }
        counts.windows.insert(
            key,
            Window {
                opened: now,
                counted: 0,
                last: refusal.clone(),
            },
        );
        Some(Due {
            refusal,
            refusals: 1,
        })
    }

    /// Takes the counts of windows over at `now` (all of them with `all`), forgetting those
    /// windows.
    fn take_due(&self, now: Instant, all: bool) -> Vec<Due> {
        let mut counts = self.counts();
        let mut due = Vec::new();
        counts.windows.retain(|_, w| {
            if !all && now.duration_since(w.opened) < REFUSAL_WINDOW {
                return true;
            }
            if w.counted > 0 {
                due.push(Due {
                    refusal: w.last.clone(),
                    refusals: w.counted,
                });
            }
            false
        });
        if counts.others > 0 {
            due.push(Due {
                refusal: Refusal {
                    peer: format!("more than {REFUSAL_PEERS} other peers"),
                    site: None,
                    stage: "any".into(),
                    reason: "refused".into(),
                },
                refusals: std::mem::take(&mut counts.others),
            });
        }
        due
    }

    /// Records a refusal of `ip`.
    pub(crate) async fn record(&self, ip: IpAddr, refusal: Refusal) {
        if refusal.stage == HANDSHAKE_STAGE {
            self.hub.traffic().handshake_refused();
        }
        self.hub
            .warnings()
            .refused(ip, &refusal.peer, &refusal.stage, &refusal.reason);
        if let Some(due) = self.count(ip, refusal, Instant::now()) {
            self.write(due).await;
        }
    }

    /// Writes the counts due at `now` (every count, with `all`: at shutdown).
    pub(crate) async fn flush(&self, now: Instant, all: bool) {
        for due in self.take_due(now, all) {
            self.write(due).await;
        }
    }

    /// Writes the counts of ended windows every few seconds, until the task is aborted.
    pub(crate) fn spawn_flusher(self: &Arc<Self>) -> JoinHandle<()> {
        let log = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFUSAL_FLUSH);
            loop {
                tick.tick().await;
                log.flush(Instant::now(), false).await;
            }
        })
    }

    async fn write(&self, due: Due) {
        let Due { refusal, refusals } = due;
        let event = AuditEvent {
            kind: kind::REFUSAL.into(),
            run: Some(self.run),
            round: None,
            site: refusal.site,
            detail: serde_json::json!({
                "peer": refusal.peer,
                "stage": refusal.stage,
                "reason": refusal.reason,
                "refusals": refusals,
            })
            .to_string(),
        };
        if let Err(e) = self.store.audit(event).await {
            tracing::error!(error = %e, refusals, "could not write to the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    async fn log() -> (tempfile::TempDir, RefusalLog) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let hub = Arc::new(Hub::new(&["a".into()], Duration::from_secs(1)));
        let log = RefusalLog::new(Store::open(&url).await.unwrap(), 1, hub);
        (dir, log)
    }

    fn refusal(peer: SocketAddr, site: Option<&str>, reason: &str) -> Refusal {
        Refusal {
            peer: peer.to_string(),
            site: site.map(str::to_string),
            stage: HANDSHAKE_STAGE.into(),
            reason: reason.into(),
        }
    }

    fn first(r: Refusal) -> Option<Due> {
        Some(Due {
            refusal: r,
            refusals: 1,
        })
    }

    #[tokio::test]
    async fn one_entry_per_window_and_every_count_flushed() {
        let (_dir, log) = log().await;
        let (a, b): (SocketAddr, SocketAddr) = (
            "10.0.0.1:1000".parse().unwrap(),
            "10.0.0.2:1000".parse().unwrap(),
        );
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let ra = |reason| refusal(a, None, reason);
        assert_eq!(log.count(a.ip(), ra("x"), t0), first(ra("x")));
        assert_eq!(log.count(a.ip(), ra("x"), at(1)), None);
        assert_eq!(log.count(a.ip(), ra("y"), at(2)), None);
        let rb = refusal(b, None, "z");
        assert_eq!(log.count(b.ip(), rb.clone(), at(2)), first(rb.clone()));
        // Nothing is due inside the window; when it ends, a's count is, with its last reason.
        assert_eq!(log.take_due(at(59), false), []);
        assert_eq!(
            log.take_due(t0 + REFUSAL_WINDOW, false),
            [Due {
                refusal: ra("y"),
                refusals: 2
            }]
        );
        // a's window is forgotten: its next refusal is written at once. b's count of one
        // more refusal is flushed at shutdown, inside its window.
        assert_eq!(log.count(a.ip(), ra("x"), at(61)), first(ra("x")));
        assert_eq!(log.count(b.ip(), rb.clone(), at(61)), None);
        let due = log.take_due(at(62), true);
        assert_eq!(
            due,
            [Due {
                refusal: rb,
                refusals: 1
            }]
        );
        assert_eq!(log.take_due(at(62), true), []);
    }

    #[tokio::test]
    async fn each_site_and_stage_of_one_address_gets_its_entry() {
        let (_dir, log) = log().await;
        let a: SocketAddr = "10.0.0.1:1000".parse().unwrap();
        let t0 = Instant::now();
        let site = refusal(a, Some("site-a"), "another manifest");
        let call = Refusal {
            stage: "register".into(),
            ..refusal(a, None, "not a site of this federation")
        };
        assert!(log.count(a.ip(), refusal(a, None, "x"), t0).is_some());
        assert_eq!(log.count(a.ip(), site.clone(), t0), first(site.clone()));
        assert_eq!(log.count(a.ip(), site.clone(), t0), None);
        assert_eq!(log.count(a.ip(), call.clone(), t0), first(call.clone()));
        assert_eq!(log.count(a.ip(), call, t0), None);
    }

    #[tokio::test]
    async fn refusals_beyond_the_remembered_peers_are_counted_together() {
        let (_dir, log) = log().await;
        let t0 = Instant::now();
        let peer = |i: usize| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 1));
        for i in 0..REFUSAL_PEERS {
            let p = peer(i);
            assert!(log.count(p.ip(), refusal(p, None, "x"), t0).is_some());
        }
        // Every remembered window is open: two more peers are counted, not remembered.
        let extra = SocketAddr::from(([10, 2, 0, 0], 1));
        assert_eq!(log.count(extra.ip(), refusal(extra, None, "x"), t0), None);
        assert_eq!(log.count(extra.ip(), refusal(extra, None, "x"), t0), None);
        let due = log.take_due(t0, false);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].refusals, 2);
        assert!(due[0].refusal.peer.contains("other peers"), "{:?}", due[0]);
    }
}
