//! The audit chain followed as it grows, for a live view: each step verifies only the
//! entries written since the one before.

use std::collections::VecDeque;

use super::{AuditEntry, AuditReport, check_link};

/// The audit chain followed as it grows. [`ChainWatch::advance`] verifies the entries written
/// since its last call, and checks that the newest entry it verified before is still there,
/// unchanged. An edit further back is found by [`super::verify_chain`] over the whole log
/// (`entente audit verify`; the coordinator walks the whole log again at the end of a run).
/// A break, once found, is kept.
#[derive(Debug)]
pub struct ChainWatch {
    last: Option<AuditEntry>,
    seen: u64,
    broken: Option<AuditReport>,
    latest: VecDeque<AuditEntry>,
    keep: usize,
}

impl ChainWatch {
    /// A watch that has seen nothing and keeps the `keep` newest entries.
    pub fn new(keep: usize) -> Self {
        ChainWatch {
            last: None,
            seen: 0,
            broken: None,
            latest: VecDeque::with_capacity(keep),
            keep,
        }
    }

    /// Where the next read of the log starts: the newest entry seen (read again to check that
    /// it is unchanged), or entry 1.
    pub fn resume_at(&self) -> u64 {
        self.last.as_ref().map_or(1, |e| e.seq)
    }

    /// Takes the log's entries from [`ChainWatch::resume_at`] on, in `seq` order, and gives
    /// back those it had not seen.
    pub fn advance<'a>(&mut self, entries: &'a [AuditEntry]) -> &'a [AuditEntry] {
        let new = match (&self.last, entries.first()) {
            (None, _) => entries,
            (Some(last), Some(first)) if first == last => &entries[1..],
            (Some(last), first) => {
                let last = last.seq;
                let reason = if first.is_some_and(|f| f.seq == last) {
                    "changed after it was verified"
                } else {
                    "vanished after it was verified"
                };
                self.break_at(last, reason.to_string());
                // The kept copy is no longer what the log holds.
                self.latest.retain(|e| e.seq < last);
                // What follows it is still counted and shown, though no longer verified.
                let after = entries.partition_point(|e| e.seq <= last);
                &entries[after..]
            }
        };
        if self.broken.is_none() {
            let mut prev = self.last.as_ref();
            for entry in new {
                if let Err(broken) = check_link(prev, entry) {
                    self.broken = Some(broken);
                    break;
                }
                prev = Some(entry);
            }
        }
        self.seen += new.len() as u64;
        for entry in new.iter().skip(new.len().saturating_sub(self.keep)) {
            if self.latest.len() == self.keep {
                self.latest.pop_front();
            }
            self.latest.push_back(entry.clone());
        }
        if let Some(newest) = new.last() {
            self.last = Some(newest.clone());
        }
        new
    }

    fn break_at(&mut self, seq: u64, reason: String) {
        self.broken
            .get_or_insert(AuditReport::Broken { seq, reason });
    }

    /// Whether every entry seen is intact and linked, or the first break found.
    pub fn report(&self) -> AuditReport {
        self.broken
            .clone()
            .unwrap_or(AuditReport::Intact { entries: self.seen })
    }

    /// Entries seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The newest entries seen, newest first.
    pub fn latest(&self) -> impl Iterator<Item = &AuditEntry> {
        self.latest.iter().rev()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{test_chain, verify_chain};
    use super::*;

    /// Follows `log` in the pieces `cuts` gives (the entries up to each cut are written).
    fn follow(log: &[AuditEntry], cuts: &[usize]) -> ChainWatch {
        let mut watch = ChainWatch::new(3);
        for &cut in cuts {
            let from = watch.resume_at() as usize - 1;
            watch.advance(&log[from..cut]);
        }
        watch
    }

    #[test]
    fn piece_by_piece_it_agrees_with_a_walk_of_the_whole_log() {
        let log = test_chain(20);
        let watch = follow(&log, &[0, 1, 7, 7, 15, 20]);
        assert_eq!(watch.report(), verify_chain(&log));
        assert_eq!(watch.report(), AuditReport::Intact { entries: 20 });
        let latest: Vec<u64> = watch.latest().map(|e| e.seq).collect();
        assert_eq!(latest, [20, 19, 18]);
    }

    #[test]
    fn a_break_in_a_new_piece_is_found_where_the_whole_walk_finds_it() {
        let mut log = test_chain(12);
        log[9].detail = r#"{"edited":true}"#.into();
        let watch = follow(&log, &[5, 12]);
        assert_eq!(watch.report(), verify_chain(&log));
        assert!(matches!(
            watch.report(),
            AuditReport::Broken { seq: 10, .. }
        ));
        // Later entries are still counted and shown.
        assert_eq!(watch.seen(), 12);
        assert_eq!(watch.latest().next().map(|e| e.seq), Some(12));
    }

    #[test]
    fn the_newest_verified_entry_edited_or_removed_breaks_the_chain_and_the_break_stays() {
        let log = test_chain(8);
        let mut edited = log.clone();
        edited[4].detail = r#"{"edited":true}"#.into();
        let mut watch = follow(&log, &[5]);
        watch.advance(&edited[4..]);
        assert_eq!(
            watch.report(),
            AuditReport::Broken {
                seq: 5,
                reason: "changed after it was verified".into()
            }
        );
        assert!(
            watch.latest().all(|e| e.seq != 5),
            "the stale copy is still shown"
        );
        watch.advance(&log[watch.resume_at() as usize - 1..]);
        assert!(matches!(watch.report(), AuditReport::Broken { seq: 5, .. }));

        let mut watch = follow(&log, &[5]);
        watch.advance(&log[5..]);
        assert_eq!(
            watch.report(),
            AuditReport::Broken {
                seq: 5,
                reason: "vanished after it was verified".into()
            }
        );
        let mut watch = follow(&log, &[5]);
        watch.advance(&[]);
        assert!(matches!(watch.report(), AuditReport::Broken { seq: 5, .. }));
    }
}
