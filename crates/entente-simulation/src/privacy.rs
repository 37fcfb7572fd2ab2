//! What each site under a privacy budget has spent after each round, for the run folder's
//! `metrics.jsonl` (and so `entente report`): read from the sites' ledgers as their RDP
//! accountant counted it, never computed here.

use std::sync::Arc;

use entente_privacy::budget::BudgetedSite;
use entente_report::{RoundPrivacy, SitePrivacy};

/// Every budgeted site's spending, round by round.
pub struct PrivacyTrack {
    delta: f64,
    sites: Vec<(String, f64, Arc<BudgetedSite>)>,
}

impl PrivacyTrack {
    /// An empty track at `delta`.
    pub fn new(delta: f64) -> Self {
        Self {
            delta,
            sites: Vec::new(),
        }
    }

    /// Follows a site with `budget` through its ledger.
    pub fn ledger(&mut self, site: &str, budget: f64, ledger: Arc<BudgetedSite>) {
        self.sites.push((site.to_string(), budget, ledger));
    }

    /// What every site has spent once the latest round has been charged.
    pub fn after(&self) -> RoundPrivacy {
        let sites = self
            .sites
            .iter()
            .filter_map(|(site, budget, ledger)| {
                Some(SitePrivacy {
                    site: site.clone(),
                    epsilon: ledger.spent()?,
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
