//! What each site under a privacy budget has spent after each round, for the run folder's
//! `metrics.jsonl` (and so `entente report`): read from the sites' ledgers as their RDP
//! accountant counted it, never computed here.

use std::sync::Arc;

use entente_privacy::budget::BudgetedSite;
use entente_report::{RoundPrivacy, SitePrivacy};

/// Where a site's spent epsilon comes from.
enum Source {
    /// DP-SGD: the site charges its ledger before each round it trains in.
    Ledger(Arc<BudgetedSite>),
    /// Client-level DP: the whole run was charged up front; entry `r - 1` is what the site
    /// has spent by the end of round `r`.
    Schedule(Arc<Vec<f64>>),
}

/// Every budgeted site's spending, round by round.
pub struct PrivacyTrack {
    delta: f64,
    sites: Vec<(String, f64, Source)>,
}

impl PrivacyTrack {
    /// An empty track at `delta`.
    pub fn new(delta: f64) -> Self {
        Self {
            delta,
            sites: Vec::new(),
        }
    }

    /// Follows a DP-SGD site with `budget` through its ledger.
    pub fn ledger(&mut self, site: &str, budget: f64, ledger: Arc<BudgetedSite>) {
        self.sites
            .push((site.to_string(), budget, Source::Ledger(ledger)));
    }

    /// Follows a client-level DP site with `budget` whose epsilon after each round is
    /// `schedule`.
    pub fn schedule(&mut self, site: &str, budget: f64, schedule: Arc<Vec<f64>>) {
        self.sites
            .push((site.to_string(), budget, Source::Schedule(schedule)));
    }

    /// What every site has spent once round `round` has finished.
    pub fn after(&self, round: u32) -> RoundPrivacy {
        let sites = self
            .sites
            .iter()
            .filter_map(|(site, budget, source)| {
                let epsilon = match source {
                    Source::Ledger(l) => l.spent()?,
                    Source::Schedule(s) => {
                        let i = (round.max(1) - 1) as usize;
                        *s.get(i).or(s.last())?
                    }
                };
                Some(SitePrivacy {
                    site: site.clone(),
                    epsilon,
                    budget: *budget,
                })
            })
            .collect();
        RoundPrivacy {
            delta: self.delta,
            sites,
        }
    }
}
