//! The audit log's head as the store last read it. Every task a node takes carries the head (a
//! round hands one to every site, two with federated evaluation), and a read of the store for
//! each queued a thousand sites behind one another. This store's own writes invalidate it, so a
//! node is shown every entry this coordinator appended; an entry another process appended to a
//! shared store shows within [`FRESH_FOR`]. Any entry of the log is a valid anchor for a node.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use entente_core::audit_heads::AuditHead;
use tokio::sync::Mutex;

use super::StoreError;

/// Longest a head read from the store is reused while this store writes nothing.
pub(super) const FRESH_FOR: Duration = Duration::from_millis(250);

/// The head last read, and which of this store's writes it reflects.
#[derive(Debug, Default)]
pub(super) struct HeadCache {
    /// Bumped after every write transaction this store commits.
    writes: AtomicU64,
    last: Mutex<Option<Read>>,
}

#[derive(Debug)]
struct Read {
    writes: u64,
    at: Instant,
    head: Option<AuditHead>,
}

impl HeadCache {
    /// This store committed (or tried to commit) a write: the next call reads again.
    pub(super) fn written(&self) {
        self.writes.fetch_add(1, Ordering::SeqCst);
    }

    /// The cached head if no write came since it was read and it is fresh, else `read()`'s.
    /// Calls during a read wait for it and share it.
    pub(super) async fn get<F>(&self, read: F) -> Result<Option<AuditHead>, StoreError>
    where
        F: Future<Output = Result<Option<AuditHead>, StoreError>>,
    {
        let mut last = self.last.lock().await;
        let writes = self.writes.load(Ordering::SeqCst);
        if let Some(cached) = last.as_ref()
            && cached.writes == writes
            && cached.at.elapsed() < FRESH_FOR
        {
            return Ok(cached.head.clone());
        }
        let head = read.await?;
        *last = Some(Read {
            writes,
            at: Instant::now(),
            head: head.clone(),
        });
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn head(seq: u64) -> Option<AuditHead> {
        Some(AuditHead::new(seq, &"ab".repeat(32)).unwrap())
    }

    #[tokio::test]
    async fn a_head_is_read_once_until_this_store_writes_or_it_ages() {
        let cache = HeadCache::default();
        let reads = AtomicUsize::new(0);
        let reads = &reads;
        let read = |seq| async move {
            reads.fetch_add(1, Ordering::SeqCst);
            Ok(head(seq))
        };
        assert_eq!(cache.get(read(1)).await.unwrap(), head(1));
        // Cached: the second read's answer is not used.
        assert_eq!(cache.get(read(2)).await.unwrap(), head(1));
        cache.written();
        assert_eq!(cache.get(read(3)).await.unwrap(), head(3));
        tokio::time::sleep(FRESH_FOR + Duration::from_millis(20)).await;
        assert_eq!(cache.get(read(4)).await.unwrap(), head(4));
        assert_eq!(reads.load(Ordering::SeqCst), 3, "the store was read again");
    }

    #[tokio::test]
    async fn a_failed_read_is_not_cached() {
        let cache = HeadCache::default();
        let failed = cache
            .get(async {
                Err(StoreError::Corrupt {
                    what: "test".into(),
                })
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(cache.get(async { Ok(head(5)) }).await.unwrap(), head(5));
    }
}
