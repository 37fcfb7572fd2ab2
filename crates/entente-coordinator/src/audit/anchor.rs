//! Checking an audit log against the chain heads a node was shown
//! ([`entente_core::audit_heads`]): the anchor that makes a rewritten or shortened log
//! detectable by someone other than the coordinator.

use entente_core::audit_heads::AuditHead;

use super::AuditEntry;

/// The outcome of checking a log against recorded heads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnchorReport {
    /// Every recorded head is in the log, with the hash the node was shown.
    Matches {
        /// How many heads were checked.
        heads: usize,
        /// The newest recorded entry, if any head was recorded.
        newest: Option<u64>,
    },
    /// A recorded entry is no longer in the log: entries were deleted.
    Missing {
        /// The recorded entry.
        seq: u64,
        /// How many entries the log holds now.
        entries: u64,
    },
    /// A recorded entry has another hash now: the log was rewritten at or before it.
    Rewritten {
        /// The recorded entry.
        seq: u64,
        /// The hash the node was shown.
        shown: String,
        /// The hash the log holds now.
        stored: String,
    },
}

/// Checks every head of `heads` against `entries` (in `seq` order, as the store returns them);
/// reports the first head that does not match, the oldest first.
pub fn check_heads<'a>(
    entries: &[AuditEntry],
    heads: impl IntoIterator<Item = &'a AuditHead>,
) -> AnchorReport {
    let mut heads: Vec<&AuditHead> = heads.into_iter().collect();
    heads.sort_by_key(|h| h.seq);
    let find = |seq: u64| {
        // Entries are numbered 1, 2, 3, ... in an intact log; look there first.
        usize::try_from(seq - 1)
            .ok()
            .and_then(|i| entries.get(i))
            .filter(|e| e.seq == seq)
            .or_else(|| entries.iter().find(|e| e.seq == seq))
    };
    for head in &heads {
        match find(head.seq) {
            None => {
                return AnchorReport::Missing {
                    seq: head.seq,
                    entries: entries.len() as u64,
                };
            }
            Some(entry) if entry.hash != head.hash => {
                return AnchorReport::Rewritten {
                    seq: head.seq,
                    shown: head.hash.clone(),
                    stored: entry.hash.clone(),
                };
            }
            Some(_) => {}
        }
    }
    AnchorReport::Matches {
        heads: heads.len(),
        newest: heads.last().map(|h| h.seq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::entry_hash;

    fn chain(n: u64) -> Vec<AuditEntry> {
        crate::audit::test_chain(n)
    }

    fn head(entries: &[AuditEntry], seq: u64) -> AuditHead {
        AuditHead::new(seq, &entries[seq as usize - 1].hash).unwrap()
    }

    /// Rewrites entry `seq` and re-hashes every later entry: the chain verifies again.
    fn rewrite(entries: &mut [AuditEntry], seq: u64) {
        entries[seq as usize - 1].detail = r#"{"forged":true}"#.into();
        for i in seq as usize - 1..entries.len() {
            if i > 0 {
                entries[i].prev_hash = entries[i - 1].hash.clone();
            }
            entries[i].hash = entry_hash(&entries[i]);
        }
    }

    #[test]
    fn a_log_that_holds_every_head_matches() {
        let entries = chain(10);
        let heads = [head(&entries, 3), head(&entries, 10), head(&entries, 7)];
        assert_eq!(
            check_heads(&entries, &heads),
            AnchorReport::Matches {
                heads: 3,
                newest: Some(10)
            }
        );
        assert_eq!(
            check_heads(&entries, &[]),
            AnchorReport::Matches {
                heads: 0,
                newest: None
            }
        );
    }

    #[test]
    fn a_rewritten_and_rehashed_log_is_caught_at_the_first_head_after_the_edit() {
        let mut entries = chain(10);
        let heads = [head(&entries, 3), head(&entries, 6), head(&entries, 9)];
        rewrite(&mut entries, 5);
        assert_eq!(
            super::super::verify_chain(&entries),
            super::super::AuditReport::Intact { entries: 10 },
            "the chain alone cannot tell"
        );
        let AnchorReport::Rewritten { seq, shown, stored } = check_heads(&entries, &heads) else {
            panic!("not caught");
        };
        assert_eq!((seq, shown.as_str()), (6, heads[1].hash.as_str()));
        assert_eq!(stored, entries[5].hash);
    }

    #[test]
    fn deleting_the_newest_entries_is_caught() {
        let mut entries = chain(10);
        let heads = [head(&entries, 4), head(&entries, 9)];
        entries.truncate(8);
        assert_eq!(
            check_heads(&entries, &heads),
            AnchorReport::Missing { seq: 9, entries: 8 }
        );
    }
}
