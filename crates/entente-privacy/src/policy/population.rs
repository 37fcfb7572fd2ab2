//! [`Population`]: the ledgers of every site of a federation whose sampling is verified, each
//! charged every round whether its site was selected or not.

use std::sync::Mutex;

use entente_core::engine::SiteError;
use entente_core::manifest::{Manifest, PrivacySpec};

use super::{Member, PolicyError, budget_of};
use crate::budget::{Ledger, LedgerError, refusal};

/// One site's ledger in the population.
struct Account {
    site: String,
    budget: f64,
    ledger: Ledger,
    /// The last round charged to it.
    charged: u32,
}

/// Every site's ledger under [`super::SamplingRule::Verified`]: the first site to train in a
/// round has that round charged to every ledger, once, before it trains. A charge that fails
/// (another run spent the budget meanwhile) refuses the round for every site; the ledgers
/// charged before it keep their charge, which can only over-count.
pub struct Population {
    federation: String,
    rate: f64,
    noise_multiplier: f64,
    accounts: Mutex<Vec<Account>>,
}

impl Population {
    /// Opens the ledger of every member under `p`, charged at `rate`, and checks that
    /// `manifest.rounds` rounds fit every site's budget; returns the population and the largest
    /// epsilon any site will have spent after them. `variant` names the mechanism in the
    /// refusal.
    pub(super) fn open(
        manifest: &Manifest,
        p: &PrivacySpec,
        rate: f64,
        members: &[Member],
        variant: &'static str,
    ) -> Result<(Self, f64), PolicyError> {
        let mut accounts = Vec::with_capacity(members.len());
        let mut worst: f64 = 0.0;
        for m in members {
            let site = m.site.name().to_string();
            let ledger_error = |source| PolicyError::Ledger {
                site: site.clone(),
                source,
            };
            let ledger =
                Ledger::open(&p.ledger, &site, &m.dataset, p.delta).map_err(ledger_error)?;
            let budget = budget_of(p, m.index)?;
            let spent = ledger.spent().map_err(ledger_error)?;
            let after = ledger
                .spent_after(rate, p.noise_multiplier, u64::from(manifest.rounds))
                .map_err(ledger_error)?;
            if after > budget {
                return Err(PolicyError::OverBudget {
                    rounds: manifest.rounds,
                    variant,
                    rate,
                    noise_multiplier: p.noise_multiplier,
                    site,
                    spent,
                    after,
                    delta: p.delta,
                    budget,
                });
            }
            worst = worst.max(after);
            accounts.push((
                m.index,
                Account {
                    site,
                    budget,
                    ledger,
                    charged: 0,
                },
            ));
        }
        accounts.sort_by_key(|(index, _)| *index);
        let population = Self {
            federation: manifest.name.clone(),
            rate,
            noise_multiplier: p.noise_multiplier,
            accounts: Mutex::new(accounts.into_iter().map(|(_, a)| a).collect()),
        };
        Ok((population, worst))
    }

    /// The federation charged.
    pub fn federation(&self) -> &str {
        &self.federation
    }

    /// Charges `round` to every ledger not charged for it yet; `site` is the member about to
    /// train, named in the refusal.
    pub(crate) fn charge(&self, site: &str, round: u32) -> Result<(), SiteError> {
        // Every ledger counts as charged for round 0: a task of round 0 would train for free.
        if round == 0 {
            return Err(SiteError::internal(
                site,
                "a training task of round 0: rounds count from 1",
            ));
        }
        let mut accounts = self
            .accounts
            .lock()
            .map_err(|_| SiteError::internal(site, "ledger lock poisoned"))?;
        for a in accounts.iter_mut().filter(|a| a.charged < round) {
            a.ledger
                .charge_within(
                    a.budget,
                    &self.federation,
                    round,
                    self.rate,
                    self.noise_multiplier,
                    1,
                )
                .map_err(|e| match e {
                    LedgerError::OverBudget { .. } if a.site != site => SiteError::over_budget(
                        site,
                        format!("refuses round {round}: site `{}`'s ledger: {e}", a.site),
                    ),
                    e => refusal(site, round, e),
                })?;
            a.charged = round;
        }
        Ok(())
    }

    /// Epsilon member `index` (its position in the manifest) has spent after its latest charge;
    /// `None` if the lock was poisoned or there is no such member.
    pub(crate) fn spent(&self, index: usize) -> Option<f64> {
        let accounts = self.accounts.lock().ok()?;
        let ledger = &accounts.get(index)?.ledger;
        Some(ledger.charges().last().map_or(0.0, |c| c.epsilon_after))
    }
}
