//! [`Traffic`]: what moved over the network, for the operator's dashboard: the bytes of task
//! and result messages per site (as encoded on the wire, before TLS and HTTP/2 framing) and the
//! connections refused during the TLS handshake.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes moved with one site's node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SiteTraffic {
    /// Bytes of results received from the node.
    pub received: u64,
    /// Bytes of tasks sent to the node.
    pub sent: u64,
}

/// Counters of the coordinator's traffic, shared by every connection.
#[derive(Debug, Default)]
pub struct Traffic {
    sites: Mutex<HashMap<String, SiteTraffic>>,
    refused_handshakes: AtomicU64,
}

impl Traffic {
    fn add(&self, site: &str, f: impl FnOnce(&mut SiteTraffic)) {
        let mut sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        match sites.get_mut(site) {
            Some(t) => f(t),
            None => f(sites.entry(site.to_string()).or_default()),
        }
    }

    /// Counts `bytes` received from `site`.
    pub fn received(&self, site: &str, bytes: usize) {
        self.add(site, |t| {
            t.received = t.received.saturating_add(bytes as u64)
        });
    }

    /// Counts `bytes` sent to `site`.
    pub fn sent(&self, site: &str, bytes: usize) {
        self.add(site, |t| t.sent = t.sent.saturating_add(bytes as u64));
    }

    /// Counts one connection refused during the TLS handshake.
    pub fn handshake_refused(&self) {
        self.refused_handshakes.fetch_add(1, Ordering::Relaxed);
    }

    /// What moved with `site` so far.
    pub fn site(&self, site: &str) -> SiteTraffic {
        let sites = self.sites.lock().unwrap_or_else(|e| e.into_inner());
        sites.get(site).copied().unwrap_or_default()
    }

    /// Connections refused during the TLS handshake so far.
    pub fn refused_handshakes(&self) -> u64 {
        self.refused_handshakes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_site_and_direction() {
        let t = Traffic::default();
        t.sent("a", 100);
        t.sent("a", 20);
        t.received("a", 7);
        t.received("b", 3);
        t.handshake_refused();
        t.handshake_refused();
        assert_eq!(
            t.site("a"),
            SiteTraffic {
                received: 7,
                sent: 120
            }
        );
        assert_eq!(
            t.site("b"),
            SiteTraffic {
                received: 3,
                sent: 0
            }
        );
        assert_eq!(t.site("c"), SiteTraffic::default());
        assert_eq!(t.refused_handshakes(), 2);
    }
}
