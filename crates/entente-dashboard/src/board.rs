//! What the dashboard shows, kept up to date by whoever runs the federation: the run's state,
//! one line per finished round, and what is known of each site. Only figures a round record
//! already publishes are kept: never a site's update or records.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use entente_core::engine::RoundRecord;
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
    /// The last round it was left out of, and why.
    pub last_excluded: Option<(u32, String)>,
    /// Privacy spent and the budget, when the run keeps a ledger for it.
    pub privacy: Option<(f64, f64)>,
}

/// Counters the Prometheus endpoint exports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    /// Rounds completed.
    pub rounds_completed: u64,
    /// Updates left out, by reason's first words.
    pub excluded_by_reason: BTreeMap<String, u64>,
    /// Handshakes refused (deployments).
    pub refused_handshakes: u64,
    /// Bytes sent to nodes (deployments).
    pub bytes_out: u64,
    /// Bytes received from nodes (deployments).
    pub bytes_in: u64,
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
    /// Whether the audit log's hash chain verified when last checked, and its length.
    pub audit: Option<(bool, u64)>,
}

/// The shared, updatable state behind a dashboard.
#[derive(Clone, Debug)]
pub struct Board(Arc<Mutex<Snapshot>>);

impl Board {
    /// A board for `federation` with these sites, waiting for them.
    pub fn new(federation: &str, digest: &str, rounds_total: u32, sites: &[String]) -> Self {
        Board(Arc::new(Mutex::new(Snapshot {
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
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
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
                Some((r.round, e.reason.clone()));
            *s.counters
                .excluded_by_reason
                .entry(reason_kind(&e.reason))
                .or_default() += 1;
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

    /// Records a deployed site's connection: whether its node is connected, and how many
    /// seconds ago it was last heard from.
    pub fn site_status(&self, site: &str, connected: bool, heard_secs_ago: Option<f64>) {
        let mut s = self.lock();
        let view = s.sites.entry(site.to_string()).or_default();
        view.connected = connected;
        view.last_seen = heard_secs_ago.map(|ago| crate::now() - ago);
    }

    /// Records a site's privacy spent against its budget.
    pub fn privacy(&self, site: &str, spent: f64, budget: f64) {
        self.lock()
            .sites
            .entry(site.to_string())
            .or_default()
            .privacy = Some((spent, budget));
    }

    /// Records the result of verifying the audit chain.
    pub fn audit(&self, intact: bool, entries: u64) {
        self.lock().audit = Some((intact, entries));
    }

    /// Adds refused handshakes and moved bytes to the counters.
    pub fn traffic(&self, refused: u64, bytes_in: u64, bytes_out: u64) {
        let mut s = self.lock();
        s.counters.refused_handshakes += refused;
        s.counters.bytes_in += bytes_in;
        s.counters.bytes_out += bytes_out;
    }
}

/// A label for an exclusion reason: its first three words, lower case, letters only, so that
/// the metric has few label values however the reasons vary.
fn reason_kind(reason: &str) -> String {
    let words: Vec<String> = reason
        .split_whitespace()
        .take(3)
        .map(|w| {
            w.chars()
                .filter(char::is_ascii_alphabetic)
                .collect::<String>()
                .to_ascii_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        "other".to_string()
    } else {
        words.join("_")
    }
}
