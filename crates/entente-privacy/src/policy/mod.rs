//! One privacy policy and one stacking of a federation's sites, wherever the federation runs.
//!
//! [`stack_sites`] wraps every participant's trainer in the same layers, in the same order
//! ([`LAYERS`]): first the privacy budget (a [`BudgetedSite`] that charges its ledger before it
//! trains), then the site half of secure aggregation (a [`SecureSite`]). The simulator and the
//! node both build their sites here, so the same manifest is charged the same way, except for
//! the one difference that [`SamplingRule`] names.

mod population;

use std::sync::Arc;

use entente_core::engine::{Site, selection};
use entente_core::manifest::{Manifest, PrivacyMechanism, PrivacySpec};

use crate::budget::{BudgetedSite, Ledger, LedgerError, RoundPrice};
use crate::secagg::{AuthError, Identity, InProcessPki, Security, SiteId};
use crate::secure_round::{SecAggSettings, SecureSite};

pub use population::Population;

/// How client-level DP (`privacy.mechanism = "client"` or `"distributed"`) is charged: the one
/// accounting difference between a simulated and a deployed run of the same manifest.
///
/// Every round is one step of the sampled Gaussian mechanism over sites at noise multiplier
/// `privacy.noise_multiplier`, charged per round, before any site trains in it. The rule
/// decides the step's sampling rate and which sites pay for it:
///
/// - [`SamplingRule::Verified`]: the process samples the sites itself (`entente simulate`).
///   Each round is charged to **every** site at
///   rate `k/n` (the `k` sites of `n` selected each round), whether it was selected or not:
///   amplification by sampling. After `R` rounds each site has spent
///   `epsilon(k/n, sigma, R)`. The whole run is checked against every budget before round 1.
///   The figure is that of Poisson sampling and a draw nobody else knows; the engine draws
///   exactly `k` of `n` from a seed every site can derive (the README says what that means).
/// - [`SamplingRule::Unverified`]: a node cannot verify the coordinator's secret sampling, so it
///   does not count on amplification: it charges rate 1 for each round it trains in, and
///   nothing for the rounds it sits out. After training in `t` rounds it has spent
///   `epsilon(1, sigma, t)`, at least the verified figure's per-round cost.
///
/// Record-level DP-SGD is the same under both rules: each site charges the Poisson-sampled
/// steps over its own records for each round it trains in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplingRule {
    /// The sampling of sites is done here: rate `rate` (`k/n`), every site charged every
    /// round.
    Verified {
        /// Share of the sites selected each round.
        rate: f64,
    },
    /// The sampling cannot be checked: rate 1, charged only for the rounds a site trains in.
    Unverified,
}

impl SamplingRule {
    /// The rule of a process that samples `manifest`'s sites itself: rate `k/n` of its
    /// `[selection]`.
    pub fn verified(manifest: &Manifest) -> Self {
        let n = manifest.sites.len();
        let k =
            selection::sample_size(n, manifest.selection.fraction, manifest.selection.min_sites);
        Self::Verified {
            rate: if n == 0 { 1.0 } else { k as f64 / n as f64 },
        }
    }

    /// The sampling rate each round of client-level DP is charged at.
    pub fn rate(self) -> f64 {
        match self {
            Self::Verified { rate } => rate,
            Self::Unverified => 1.0,
        }
    }

    /// Whether every site pays for every round (else only the rounds it trains in).
    pub fn charges_every_site(self) -> bool {
        matches!(self, Self::Verified { .. })
    }
}

/// Where secure aggregation's key material and distributed-DP noise come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// From the federation seed: simulation only, so that runs repeat exactly.
    Seeded,
    /// From the operating system: a real site's secrets never derive from anything the
    /// coordinator knows.
    Fresh,
}

/// A wrapper around a site's trainer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// The privacy budget: charges the site's ledger before it trains, refuses evaluation.
    Budget,
    /// The site half of secure aggregation: masks the trained update.
    SecureAggregation,
}

/// The layers around every trainer, innermost first. The budget is charged before training
/// starts, and secure aggregation masks what the budgeted trainer produced.
pub const LAYERS: [Layer; 2] = [Layer::Budget, Layer::SecureAggregation];

/// One participant before the privacy layers.
pub struct Member {
    /// Its position in the manifest's site list.
    pub index: usize,
    /// What trains.
    pub site: Arc<dyn Site>,
    /// Training examples it holds, when entente's own trainer holds them (DP-SGD needs them).
    pub examples: Option<usize>,
    /// The data set its ledger accounts for (see [`Manifest::site_data_label`]).
    pub dataset: String,
    /// What it signs and checks secure-aggregation keys with under
    /// `secure_aggregation.security = "active"` (in a node: its certificate key). With
    /// [`Keys::Seeded`] and none given, an in-process identity is drawn from the federation
    /// seed ([`InProcessPki`]).
    pub identity: Option<Identity>,
}

/// One participant with its layers.
pub struct Stacked {
    /// What answers tasks.
    pub site: Arc<dyn Site>,
    /// Its budget layer, under `[privacy]`: what it has spent so far.
    pub budget: Option<Arc<BudgetedSite>>,
    /// The layers applied, innermost first (a subsequence of [`LAYERS`]).
    pub layers: Vec<Layer>,
}

/// Every participant stacked, and what the whole run will cost where that is known before
/// round 1.
pub struct Stack {
    /// The participants, in the order given.
    pub sites: Vec<Stacked>,
    /// Under [`SamplingRule::Verified`] and client-level DP: the largest epsilon any site will
    /// have spent once every round has been charged.
    pub forecast: Option<f64>,
}

/// Why the sites could not be stacked.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A member's index is not one of the manifest's sites.
    #[error("site index {index} is not in the manifest's {sites} sites")]
    NoSuchSite {
        /// The index given.
        index: usize,
        /// Sites the manifest lists.
        sites: usize,
    },
    /// Two members name the same site.
    #[error("site index {index} is given twice; each site is one member")]
    DuplicateSite {
        /// The index given twice.
        index: usize,
    },
    /// Active secure aggregation needs the site's identity, and none was given.
    #[error(
        "site index {index}: secure_aggregation.security = \"active\" signs the site's keys with \
         its certificate key, and none was given (set the node's key and certificate, or choose \
         \"honest-but-curious\")"
    )]
    NoIdentity {
        /// The member.
        index: usize,
    },
    /// The in-process identities of a simulation could not be drawn.
    #[error("in-process secure-aggregation identities: {0}")]
    Identities(#[from] AuthError),
    /// DP-SGD needs entente's own trainer, which knows the site's records.
    #[error(
        "site `{site}`: privacy.mechanism = \"dp-sgd\" is a feature of entente's own trainer; a \
         site's own training loop cannot be charged for it (use \"client\" or \"distributed\": \
         client-level DP, kept by the site's ledger)"
    )]
    DpSgdNeedsOwnTrainer {
        /// The site.
        site: String,
    },
    /// [`SamplingRule::Verified`] charges every site, so every site must be given.
    #[error(
        "the verified sampling rule charges every site: {given} of the manifest's {sites} given"
    )]
    PartialPopulation {
        /// Members given.
        given: usize,
        /// Sites the manifest lists.
        sites: usize,
    },
    /// A site's ledger could not be opened or read.
    #[error("site `{site}`: {source}")]
    Ledger {
        /// The site.
        site: String,
        /// Cause.
        #[source]
        source: LedgerError,
    },
    /// The whole run would take a site past its budget; nothing was charged.
    #[error(
        "refused before round 1: {rounds} rounds of {variant} client-level DP (sampling rate \
         {rate:.3}, noise multiplier {noise_multiplier}) would raise site `{site}`'s epsilon \
         from {spent:.3} to {after:.3} at delta {delta}, over its budget of {budget}; raise \
         privacy.noise_multiplier or lower training.rounds"
    )]
    OverBudget {
        /// Rounds of the run.
        rounds: u32,
        /// `central` or `distributed`.
        variant: &'static str,
        /// The rule's sampling rate.
        rate: f64,
        /// The noise multiplier.
        noise_multiplier: f64,
        /// The site.
        site: String,
        /// Epsilon spent before the run.
        spent: f64,
        /// Epsilon after it.
        after: f64,
        /// The ledger's delta.
        delta: f64,
        /// The site's budget.
        budget: f64,
    },
}

/// Wraps every member in the layers `manifest` asks for, in the order of [`LAYERS`], charging
/// privacy as `rule` says; `keys` seeds secure aggregation. Under [`SamplingRule::Verified`]
/// every manifest site must be a member, and the whole run is checked against every budget
/// (nothing is charged before round 1; each round is charged before any site trains in it).
pub fn stack_sites(
    manifest: &Manifest,
    rule: SamplingRule,
    keys: Keys,
    members: Vec<Member>,
) -> Result<Stack, PolicyError> {
    let sites = manifest.sites.len();
    if let Some(m) = members.iter().find(|m| m.index >= sites) {
        return Err(PolicyError::NoSuchSite {
            index: m.index,
            sites,
        });
    }
    // Two members of one index would charge one ledger twice and read each other's spending.
    let mut seen = std::collections::HashSet::new();
    if let Some(m) = members.iter().find(|m| !seen.insert(m.index)) {
        return Err(PolicyError::DuplicateSite { index: m.index });
    }
    let (population, forecast) = match &manifest.privacy {
        Some(p) if p.mechanism != PrivacyMechanism::DpSgd && rule.charges_every_site() => {
            if members.len() != sites {
                return Err(PolicyError::PartialPopulation {
                    given: members.len(),
                    sites,
                });
            }
            let (population, worst) =
                Population::open(manifest, p, rule.rate(), &members, variant(p.mechanism))?;
            (Some(Arc::new(population)), Some(worst))
        }
        _ => (None, None),
    };
    let secagg = SecAggSettings::from_manifest(manifest);
    let pki = match &secagg {
        Some(s) if s.security == Security::Active && keys == Keys::Seeded => {
            Some(simulated_pki(manifest, s)?)
        }
        _ => None,
    };
    let sites = members
        .into_iter()
        .map(|member| {
            // In the order of LAYERS: the budget innermost, then secure aggregation.
            let mut stacked = Stacked {
                site: Arc::clone(&member.site),
                budget: None,
                layers: Vec::new(),
            };
            if let Some(p) = &manifest.privacy {
                let inner = stacked.site;
                let budgeted = Arc::new(budgeted(
                    manifest,
                    p,
                    rule,
                    population.as_ref(),
                    &member,
                    inner,
                )?);
                stacked.budget = Some(Arc::clone(&budgeted));
                stacked.site = budgeted;
                stacked.layers.push(Layer::Budget);
            }
            if let Some(settings) = &secagg {
                let mut secure = SecureSite::new(
                    stacked.site,
                    member.index as u32,
                    manifest.policy,
                    settings.clone(),
                    keys == Keys::Seeded,
                );
                if settings.security == Security::Active {
                    let identity = member
                        .identity
                        .clone()
                        .or_else(|| pki.as_ref()?.identity(member.index as SiteId))
                        .ok_or(PolicyError::NoIdentity {
                            index: member.index,
                        })?;
                    secure = secure.with_identity(identity);
                }
                stacked.site = Arc::new(secure);
                stacked.layers.push(Layer::SecureAggregation);
            }
            Ok(stacked)
        })
        .collect::<Result<_, PolicyError>>()?;
    Ok(Stack { sites, forecast })
}

/// The in-process identities of a simulation's sites, drawn from the federation seed and the
/// round context (a simulation has no certificates).
fn simulated_pki(
    manifest: &Manifest,
    settings: &SecAggSettings,
) -> Result<InProcessPki, PolicyError> {
    let mut seed = settings.context;
    for (s, b) in seed.iter_mut().zip(manifest.seed.to_le_bytes()) {
        *s ^= b;
    }
    let sites: Vec<SiteId> = (0..manifest.sites.len() as SiteId).collect();
    Ok(InProcessPki::new(&seed, &sites)?)
}

/// `member`'s budget layer around `inner`: a share of `population` when it charges every site,
/// else the member's own ledger at the rule's price.
fn budgeted(
    manifest: &Manifest,
    p: &PrivacySpec,
    rule: SamplingRule,
    population: Option<&Arc<Population>>,
    member: &Member,
    inner: Arc<dyn Site>,
) -> Result<BudgetedSite, PolicyError> {
    if let Some(population) = population {
        return Ok(BudgetedSite::shared(
            inner,
            Arc::clone(population),
            member.index,
        ));
    }
    let site = inner.name().to_string();
    let examples = match (p.mechanism, member.examples) {
        (PrivacyMechanism::DpSgd, None) => return Err(PolicyError::DpSgdNeedsOwnTrainer { site }),
        (_, examples) => examples.unwrap_or(0),
    };
    let ledger = Ledger::open(&p.ledger, &site, &member.dataset, p.delta)
        .map_err(|source| PolicyError::Ledger { site, source })?;
    Ok(BudgetedSite::new(
        inner,
        &manifest.name,
        RoundPrice::of(p, examples, rule),
        budget_of(p, member.index)?,
        ledger,
    ))
}

/// Site `index`'s budget.
fn budget_of(p: &PrivacySpec, index: usize) -> Result<f64, PolicyError> {
    p.budgets
        .get(index)
        .copied()
        .ok_or(PolicyError::NoSuchSite {
            index,
            sites: p.budgets.len(),
        })
}

/// The name of a client-level mechanism in messages: `central` or `distributed`.
pub fn variant(mechanism: PrivacyMechanism) -> &'static str {
    match mechanism {
        PrivacyMechanism::Distributed => "distributed",
        _ => "central",
    }
}

#[cfg(test)]
mod tests;
