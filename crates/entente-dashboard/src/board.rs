//! What the dashboard shows, kept up to date by whoever runs the federation: the run's state,
//! one line per finished round, and what is known of each site. Only figures a round record
//! already publishes are kept: never a site's update or records.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};

use entente_core::engine::{ErrorKind, RoundRecord};
use serde::Serialize;

/// Where the run is.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for sites to connect.
    Waiting,
    /// Rounds are running.
    Running,
    /// Every round is done.
    Finished,
    /// The run stopped early, for this reason.
    Stopped {
        /// Why.
        reason: String,
    },
}

/// One finished round, as the charts and the JSON API show it.
#[derive(Clone, Debug, Serialize)]
pub struct RoundLine {
    /// Round number.
    pub round: u32,
    /// Sites selected.
    pub selected: usize,
    /// Sites whose update was used.
    pub accepted: usize,
    /// Mean training loss of the used updates.
    pub train_loss: f64,
    /// Held-out test accuracy, if the coordinator has a test set.
    pub test_accuracy: Option<f64>,
    /// Held-out test loss.
    pub test_loss: Option<f64>,
    /// Accuracy on the sites' own test splits.
    pub federated_accuracy: Option<f64>,
    /// Loss on the sites' own test splits.
    pub federated_loss: Option<f64>,
    /// Wall time of the round.
    pub seconds: f64,
}

/// What is known of one site.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteView {
    /// Whether it is connected now (deployments; a simulation's sites always are).
    pub connected: bool,
    /// Seconds since the Unix epoch of its last heartbeat, if any.
    pub last_seen: Option<f64>,
    /// Rounds its update was used in.
    pub rounds_used: u32,
    /// The last round it was left out of, why, and the kind of failure.
    pub last_excluded: Option<(u32, String, ErrorKind)>,
    /// Privacy spent and the budget, when the run keeps a ledger for it.
    pub privacy: Option<(f64, f64)>,
    /// Bytes received from its node (deployments).
    pub bytes_received: u64,
    /// Bytes sent to its node (deployments).
    pub bytes_sent: u64,
}

/// Bytes moved with one site's node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bytes {
    /// Received from the node.
    pub received: u64,
    /// Sent to the node.
    pub sent: u64,
}

/// What the last walk of the audit log found (deployments).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditView {
    /// Whether the hash chain verified.
    pub intact: bool,
    /// Entries in the log.
    pub entries: u64,
    /// Where and why the chain breaks, if it does.
    pub broken: Option<String>,
    /// The newest entries, newest first.
    pub latest: Vec<AuditLine>,
}

/// One audit entry as the dashboard shows it.
#[derive(Clone, Debug, Serialize)]
pub struct AuditLine {
    /// Position in the log.
    pub seq: u64,
    /// When it was written, in milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// What happened.
    pub kind: String,
    /// The round it concerns, if any.
    pub round: Option<u32>,
    /// The site it concerns, if any.
    pub site: Option<String>,
    /// Its particulars (JSON text).
    pub detail: String,
}

/// Counters the Prometheus endpoint exports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    /// Rounds completed.
    pub rounds_completed: u64,
    /// Updates left out, by the kind of failure.
    pub excluded_by_kind: BTreeMap<ErrorKind, u64>,
    /// Handshakes refused (deployments).
    pub refused_handshakes: u64,
}

/// Everything the dashboard shows, at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// Federation name.
    pub federation: String,
    /// The manifest's agreement digest.
    pub digest: String,
    /// Rounds the manifest asks for.
    pub rounds_total: u32,
    /// Where the run is.
    pub run: RunState,
    /// Finished rounds.
    pub rounds: Vec<RoundLine>,
    /// Sites by name.
    pub sites: BTreeMap<String, SiteView>,
    /// Counters.
    pub counters: Counters,
    /// The audit log when last checked (deployments; a simulation keeps none).
    pub audit: Option<AuditView>,
}

/// The shared, updatable state behind a dashboard.
#[derive(Clone, Debug)]
pub struct Board(Arc<Mutex<Versioned>>);

/// The state, and how many changes it has seen: a rendering of it stays current while the
/// count stays the same.
#[derive(Debug)]
struct Versioned {
    snapshot: Snapshot,
    version: u64,
}

impl Board {
    /// A board for `federation` with these sites, waiting for them.
    pub fn new(federation: &str, digest: &str, rounds_total: u32, sites: &[String]) -> Self {
        Board(Arc::new(Mutex::new(Versioned {
            version: 0,
            snapshot: Snapshot {
                federation: federation.to_string(),
                digest: digest.to_string(),
                rounds_total,
                run: RunState::Waiting,
                rounds: Vec::new(),
                sites: sites
                    .iter()
                    .map(|s| (s.clone(), SiteView::default()))
                    .collect(),
                counters: Counters::default(),
                audit: None,
            },
        })))
    }

    fn read(&self) -> MutexGuard<'_, Versioned> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, to be changed: every call counts as a change.
    fn lock(&self) -> Changing<'_> {
        let mut guard = self.read();
        guard.version += 1;
        Changing(guard)
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> Snapshot {
        self.read().snapshot.clone()
    }

    /// How many changes the state has seen; equal counts mean equal states.
    pub fn version(&self) -> u64 {
        self.read().version
    }

    /// Sets where the run is.
    pub fn set_state(&self, run: RunState) {
        self.lock().run = run;
    }

    /// Records a finished round.
    pub fn round_finished(&self, r: &RoundRecord) {
        let mut s = self.lock();
        s.run = RunState::Running;
        s.counters.rounds_completed += 1;
        for site in &r.accepted {
            s.sites.entry(site.clone()).or_default().rounds_used += 1;
        }
        for e in &r.excluded {
            s.sites.entry(e.site.clone()).or_default().last_excluded =
                Some((r.round, e.reason.clone(), e.kind));
            *s.counters.excluded_by_kind.entry(e.kind).or_default() += 1;
        }
        s.rounds.push(RoundLine {
            round: r.round,
            selected: r.selected.len(),
            accepted: r.accepted.len(),
            train_loss: r.train_loss,
            test_accuracy: r.test.as_ref().map(|m| m.accuracy),
            test_loss: r.test.as_ref().map(|m| m.loss),
            federated_accuracy: r.federated.as_ref().map(|m| m.accuracy),
            federated_loss: r.federated.as_ref().map(|m| m.loss),
            seconds: r.seconds,
        });
    }

    /// Records whether `site` is connected, and that it was seen now if it is.
    pub fn site_seen(&self, site: &str, connected: bool) {
        let mut s = self.lock();
        let view = s.sites.entry(site.to_string()).or_default();
        view.connected = connected;
        if connected {
            view.last_seen = Some(crate::now());
        }
    }

    /// Records a deployed site's connection: whether its node is connected, how many seconds
    /// ago it was last heard from, and the bytes moved with it so far.
    pub fn site_status(
        &self,
        site: &str,
        connected: bool,
        heard_secs_ago: Option<f64>,
        bytes: Bytes,
    ) {
        let mut s = self.lock();
        let view = s.sites.entry(site.to_string()).or_default();
        view.connected = connected;
        view.last_seen = heard_secs_ago.map(|ago| crate::now() - ago);
        view.bytes_received = bytes.received;
        view.bytes_sent = bytes.sent;
    }

    /// Records a site's privacy spent against its budget.
    pub fn privacy(&self, site: &str, spent: f64, budget: f64) {
        self.lock()
            .sites
            .entry(site.to_string())
            .or_default()
            .privacy = Some((spent, budget));
    }

    /// Records what the last walk of the audit log found.
    pub fn audit(&self, audit: AuditView) {
        self.lock().audit = Some(audit);
    }

    /// Records how many handshakes were refused since the coordinator started.
    pub fn refused_handshakes(&self, total: u64) {
        self.lock().counters.refused_handshakes = total;
    }
}

/// The state held for a change (see [`Board::lock`]).
struct Changing<'a>(MutexGuard<'a, Versioned>);

impl Deref for Changing<'_> {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.0.snapshot
    }
}

impl DerefMut for Changing<'_> {
    fn deref_mut(&mut self) -> &mut Snapshot {
        &mut self.0.snapshot
    }
}
