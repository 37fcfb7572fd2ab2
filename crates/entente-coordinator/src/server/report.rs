//! [`Report`]: what a running coordinator tells its operator. The library prints nothing; the
//! command line implements this trait with its own lines, a test can collect what it needs.

use std::net::SocketAddr;
use std::path::Path;

use entente_core::engine::RoundRecord;

use crate::audit::{AuditEntry, AuditReport};
use crate::transport::traffic::SiteTraffic;

/// The run a coordinator is about to drive, as [`Report::started`] and [`Report::resumed`]
/// see it.
#[derive(Debug, Clone, Copy)]
pub struct RunStart<'a> {
    /// The run's id in the store.
    pub run: i64,
    /// The federation's name (the manifest's `name`).
    pub federation: &'a str,
    /// Sites in the manifest.
    pub sites: usize,
    /// Rounds of the whole run.
    pub rounds: u32,
    /// Rounds already completed (and committed) before this coordinator started: 0 for a new
    /// run.
    pub completed: u32,
    /// The store's URL, password masked.
    pub store: &'a str,
    /// The hosts the coordinator's certificate is valid for: nodes must connect to one of them.
    pub hosts: &'a [String],
}

/// One site as the coordinator sees it now ([`Report::status`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SiteStatus {
    /// The manifest's name of the site.
    pub site: String,
    /// Whether its node is registered and was heard from within three heartbeats.
    pub connected: bool,
    /// Seconds since its node was last heard from, if it ever was.
    pub heard_secs_ago: Option<f64>,
    /// The bytes of tasks and results moved with its node since the coordinator started.
    pub traffic: SiteTraffic,
}

/// The federation's connections now ([`Report::status`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FederationStatus {
    /// Every site of the manifest, in its order.
    pub sites: Vec<SiteStatus>,
    /// Connections refused during the TLS handshake since the coordinator started.
    pub refused_handshakes: u64,
}

/// What a walk of the audit log found ([`Report::audit_checked`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditCheck {
    /// Whether the hash chain is intact, or where it breaks.
    pub chain: AuditReport,
    /// Entries in the log.
    pub entries: u64,
    /// The newest entries, newest first (at most [`LATEST_AUDIT_ENTRIES`]).
    pub latest: Vec<AuditEntry>,
    /// The privacy this run charged each site, from the log's `privacy_charged` entries,
    /// against its budget (empty without `[privacy]`).
    pub privacy: Vec<SitePrivacy>,
}

/// How many of the newest audit entries an [`AuditCheck`] carries.
pub const LATEST_AUDIT_ENTRIES: usize = 10;

/// One site's privacy spent in this run against its budget.
#[derive(Debug, Clone, PartialEq)]
pub struct SitePrivacy {
    /// The site.
    pub site: String,
    /// Epsilon charged in this run (at the manifest's delta).
    pub epsilon: f64,
    /// The site's budget in the manifest.
    pub budget: f64,
}

/// Hooks for a coordinator's progress, called in this order: [`Report::started`] or
/// [`Report::resumed`], [`Report::listening`], [`Report::sites_connected`] (each time the
/// count changes while waiting), [`Report::round_finished`] per round, [`Report::finished`].
/// Every method has a no-op default.
pub trait Report: Send {
    /// A new run was opened in the store.
    fn started(&mut self, _run: &RunStart<'_>) {}
    /// An unfinished run was found in the store: it goes on after `run.completed` rounds.
    fn resumed(&mut self, _run: &RunStart<'_>) {}
    /// The coordinator accepts nodes (mutual TLS) at `addr`.
    fn listening(&mut self, _addr: SocketAddr) {}
    /// Before the first round: `alive` of `total` sites are connected; rounds need `quorum`.
    fn sites_connected(&mut self, _alive: usize, _total: usize, _quorum: usize) {}
    /// Every site's connection and traffic, about once a second from the first wait for
    /// sites to the end of the last round.
    fn status(&mut self, _status: &FederationStatus) {}
    /// Whether [`Report::audit_checked`] is wanted: walking the log costs a read of it.
    fn watches_audit(&self) -> bool {
        false
    }
    /// The audit log was walked: once listening, after every round and at the end (only if
    /// [`Report::watches_audit`]).
    fn audit_checked(&mut self, _check: &AuditCheck) {}
    /// A round of `rounds` completed and was committed to the store.
    fn round_finished(&mut self, _record: &RoundRecord, _rounds: u32) {}
    /// The run finished and its final model was written to `model`.
    fn finished(&mut self, _run: i64, _model: &Path) {}
}

/// A [`Report`] that says nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReport;

impl Report for NoReport {}
