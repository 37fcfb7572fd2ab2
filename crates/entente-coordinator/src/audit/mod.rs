//! The append-only, hash-chained audit log.
//!
//! Every entry carries the SHA-256 of the entry before it (`prev_hash`) and its
//! own SHA-256 over all its fields (`hash`, see [`entry_hash`]). Editing an entry
//! breaks its own hash; editing it *and* recomputing its hash breaks the next
//! entry's `prev_hash`; deleting an entry leaves a gap in `seq`. [`verify_chain`]
//! finds the first such break. Rewriting an entry and re-hashing every later one,
//! or deleting the newest entries, is not detectable from the chain alone: nodes
//! record the head they were shown with every task, and [`check_heads`] compares a
//! log with such a record.
//!
//! This module owns the entry types and the chain rules; the SQL lives in
//! `log.rs` and is reached through [`crate::store::Store`].

mod anchor;
mod hash;
pub(crate) mod log;
pub mod privacy;
mod watch;

pub use anchor::{AnchorReport, check_heads};

pub(crate) use hash::sha256_hex;
pub use hash::{GENESIS_PREV_HASH, entry_hash};
pub use watch::ChainWatch;

/// Entry kinds that the store writes itself, and the ones the service is
/// expected to use. Any non-empty string is accepted.
pub mod kind {
    /// A site was admitted to the federation (written by the service).
    pub const ADMISSION: &str = "admission";
    /// A site was refused (written by the service).
    pub const REFUSAL: &str = "refusal";
    /// A new run began ([`crate::store::Store::open_run`]).
    pub const RUN_STARTED: &str = "run_started";
    /// An unfinished run was picked up again ([`crate::store::Store::open_run`]).
    pub const RUN_RESUMED: &str = "run_resumed";
    /// A round began with its selected sites ([`crate::store::Store::round_started`]).
    pub const ROUND_STARTED: &str = "round_started";
    /// A site's update was aggregated ([`crate::store::Store::round_finished`]).
    pub const UPDATE_ACCEPTED: &str = "update_accepted";
    /// A site's update was excluded, with the reason in `detail`.
    pub const UPDATE_REJECTED: &str = "update_rejected";
    /// A round's global-model checkpoint was stored.
    pub const CHECKPOINT: &str = "checkpoint";
    /// A round's result was committed.
    pub const ROUND_FINISHED: &str = "round_finished";
    /// A run was closed ([`crate::store::Store::finish_run`]).
    pub const RUN_FINISHED: &str = "run_finished";
    /// The run stopped before its last round (the reason is in the detail).
    pub const RUN_STOPPED: &str = "run_stopped";
    /// A site's ledger was charged for a round (mechanism, rate, noise multiplier, steps).
    pub const PRIVACY_CHARGED: &str = "privacy_charged";
    /// The coordinator went by a new revocation list (its number, what it newly revokes).
    pub const REVOCATIONS_LOADED: &str = "revocations_loaded";
    /// A revocation list file was refused (forged, older, removed); the one in force stays.
    pub const REVOCATIONS_REFUSED: &str = "revocations_refused";
    /// A connected site's certificate was revoked: its session ended.
    pub const SITE_REVOKED: &str = "site_revoked";
}

/// Something to record in the audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// What happened, e.g. [`kind::ADMISSION`]; must not be empty.
    pub kind: String,
    /// The run it concerns, if any.
    pub run: Option<i64>,
    /// The round it concerns, if any.
    pub round: Option<u32>,
    /// The site it concerns, if any.
    pub site: Option<String>,
    /// Particulars as JSON text; must parse as JSON.
    pub detail: String,
}

/// One stored audit entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the log: 1, 2, 3, … without gaps.
    pub seq: u64,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
    /// What happened.
    pub kind: String,
    /// The run it concerns, if any.
    pub run: Option<i64>,
    /// The round it concerns, if any.
    pub round: Option<u32>,
    /// The site it concerns, if any.
    pub site: Option<String>,
    /// Particulars as JSON text.
    pub detail: String,
    /// `hash` of entry `seq - 1`, or [`GENESIS_PREV_HASH`] for entry 1.
    pub prev_hash: String,
    /// [`entry_hash`] of this entry.
    pub hash: String,
}

/// The outcome of walking the audit chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditReport {
    /// Every entry hashes to its `hash` and links to the one before.
    Intact {
        /// How many entries were checked.
        entries: u64,
    },
    /// The first entry at which the chain fails.
    Broken {
        /// The failing entry's `seq`.
        seq: u64,
        /// Why: "hash does not match its contents", "prev_hash does not match
        /// entry N", or "sequence gap after N".
        reason: String,
    },
}

/// Walks `entries` in order and reports the first break (see the module docs).
pub fn verify_chain<'a>(entries: impl IntoIterator<Item = &'a AuditEntry>) -> AuditReport {
    let mut checked = 0u64;
    let mut prev: Option<&AuditEntry> = None;
    for entry in entries {
        if let Err(broken) = check_link(prev, entry) {
            return broken;
        }
        checked += 1;
        prev = Some(entry);
    }
    AuditReport::Intact { entries: checked }
}

/// Checks that `entry` hashes to its `hash` and follows `prev` (the entry before it, `None`
/// for the first): the one step of [`verify_chain`].
fn check_link(prev: Option<&AuditEntry>, entry: &AuditEntry) -> Result<(), AuditReport> {
    let prev_seq = prev.map_or(0, |p| p.seq);
    let broken = |reason: String| AuditReport::Broken {
        seq: entry.seq,
        reason,
    };
    if entry.seq != prev_seq + 1 {
        return Err(broken(format!("sequence gap after {prev_seq}")));
    }
    if entry_hash(entry) != entry.hash {
        return Err(broken("hash does not match its contents".into()));
    }
    let expected_prev = prev.map_or(GENESIS_PREV_HASH, |p| p.hash.as_str());
    if entry.prev_hash != expected_prev {
        return Err(broken(format!("prev_hash does not match entry {prev_seq}")));
    }
    Ok(())
}

/// An intact chain of `n` admissions (tests).
#[cfg(test)]
pub(crate) fn test_chain(n: u64) -> Vec<AuditEntry> {
    let mut entries: Vec<AuditEntry> = Vec::new();
    for seq in 1..=n {
        let mut entry = AuditEntry {
            seq,
            at_unix_ms: 1_000 + seq as i64,
            kind: kind::ADMISSION.into(),
            run: None,
            round: None,
            site: Some(format!("site-{seq}")),
            detail: "{}".into(),
            prev_hash: entries
                .last()
                .map_or(GENESIS_PREV_HASH.to_string(), |p| p.hash.clone()),
            hash: String::new(),
        };
        entry.hash = entry_hash(&entry);
        entries.push(entry);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        test_chain(n)
    }

    #[test]
    fn empty_and_whole_chains_are_intact() {
        assert_eq!(verify_chain(&[]), AuditReport::Intact { entries: 0 });
        assert_eq!(verify_chain(&chain(4)), AuditReport::Intact { entries: 4 });
    }

    #[test]
    fn edited_entry_is_named() {
        let mut entries = chain(4);
        entries[1].detail = r#"{"forged":true}"#.into();
        assert_eq!(
            verify_chain(&entries),
            AuditReport::Broken {
                seq: 2,
                reason: "hash does not match its contents".into()
            }
        );
    }

    #[test]
    fn rehashed_edit_is_caught_by_the_next_link() {
        let mut entries = chain(4);
        entries[1].detail = r#"{"forged":true}"#.into();
        entries[1].hash = entry_hash(&entries[1]);
        assert_eq!(
            verify_chain(&entries),
            AuditReport::Broken {
                seq: 3,
                reason: "prev_hash does not match entry 2".into()
            }
        );
    }

    #[test]
    fn deleted_entry_names_the_next_one() {
        let mut entries = chain(4);
        entries.remove(1);
        assert_eq!(
            verify_chain(&entries),
            AuditReport::Broken {
                seq: 3,
                reason: "sequence gap after 1".into()
            }
        );
        let mut headless = chain(2);
        headless.remove(0);
        assert_eq!(
            verify_chain(&headless),
            AuditReport::Broken {
                seq: 2,
                reason: "sequence gap after 0".into()
            }
        );
    }

    #[test]
    fn first_entry_must_start_from_genesis() {
        let mut entries = chain(1);
        entries[0].prev_hash = "11".repeat(32);
        entries[0].hash = entry_hash(&entries[0]);
        assert_eq!(
            verify_chain(&entries),
            AuditReport::Broken {
                seq: 1,
                reason: "prev_hash does not match entry 0".into()
            }
        );
    }
}
