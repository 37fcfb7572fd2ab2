//! Privacy budgets that every site enforces for itself.
//!
//! A [`Ledger`] is one site's record of what it has spent on one data set, across runs, kept
//! in a JSON file the site owns. [`BudgetedSite`] wraps a site that trains under DP-SGD or
//! client-level DP: before each round it computes what the round would cost with the RDP
//! accountant and refuses, with the numbers, if that would exceed its budget. The charge is written before training starts,
//! so privacy fails closed: a crash after the charge can only over-count.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use entente_core::engine::{Envelope, Site, SiteError, TrainTask, Turn, dp_sgd_sampling};
use entente_core::files::read_bounded;
use entente_core::manifest::{PrivacyMechanism, PrivacySpec};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::SiteUpdate;
use serde::{Deserialize, Serialize};

use crate::dp::rdp::Accountant;
use crate::policy::{Population, SamplingRule};

/// Largest ledger file read (256 MiB).
pub const MAX_LEDGER_BYTES: u64 = 256 << 20;

/// Reading or writing a ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be read or written.
    #[error("privacy ledger {path}: {source}")]
    Io {
        /// The ledger file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a regular file, or is larger than any ledger.
    #[error("privacy ledger: {0}")]
    File(#[from] entente_core::files::FileError),
    /// The file is not a valid ledger.
    #[error(
        "privacy ledger {path} is damaged: {reason}; restore it from a backup (deleting it would forget spent budget)"
    )]
    Damaged {
        /// The ledger file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The accountant rejected a charge.
    #[error("privacy accounting failed: {0}")]
    Accounting(String),
    /// The charge would take the data set past its budget; nothing was recorded.
    #[error(
        "it would raise epsilon from {spent:.3} to {after:.3} (delta {delta}), over its budget of {budget}"
    )]
    OverBudget {
        /// Epsilon spent before.
        spent: f64,
        /// Epsilon after the charge.
        after: f64,
        /// The budget.
        budget: f64,
        /// The delta of both figures.
        delta: f64,
    },
}

/// One charge: the steps of one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// Federation that asked.
    pub federation: String,
    /// Round number.
    pub round: u32,
    /// Poisson sampling rate.
    pub q: f64,
    /// Noise multiplier.
    pub noise_multiplier: f64,
    /// Optimizer steps.
    pub steps: u64,
    /// Epsilon spent on this data set after the charge, at the ledger's delta.
    pub epsilon_after: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LedgerFile {
    site: String,
    dataset: String,
    delta: f64,
    charges: Vec<Charge>,
    accountant: Accountant,
}

/// A site's privacy ledger for one data set.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: LedgerFile,
}

impl Ledger {
    /// The ledger file of `site` for `dataset` in `dir`.
    pub fn path_for(dir: &Path, site: &str, dataset: &str) -> PathBuf {
        let safe: String = dataset
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        dir.join(format!("{site}--{safe}.json"))
    }

    /// Opens the ledger, or starts an empty one if the file does not exist yet.
    pub fn open(dir: &Path, site: &str, dataset: &str, delta: f64) -> Result<Self, LedgerError> {
        let path = Self::path_for(dir, site, dataset);
        if !path.exists() {
            let file = LedgerFile {
                site: site.to_string(),
                dataset: dataset.to_string(),
                delta,
                charges: Vec::new(),
                accountant: Accountant::new(),
            };
            return Ok(Self { path, file });
        }
        let ledger = Self::load(&path)?;
        ledger.check_identity(site, dataset, delta)?;
        Ok(ledger)
    }

    /// The file must belong to `site` and `dataset` and account at `delta`.
    fn check_identity(&self, site: &str, dataset: &str, delta: f64) -> Result<(), LedgerError> {
        let damaged = |reason| LedgerError::Damaged {
            path: self.path.display().to_string(),
            reason,
        };
        if self.file.site != site || self.file.dataset != dataset {
            return Err(damaged(format!(
                "it belongs to site `{}`, data set `{}`",
                self.file.site, self.file.dataset
            )));
        }
        if self.file.delta != delta {
            return Err(damaged(format!(
                "it accounts at delta {} but the manifest asks for {delta}; keep delta fixed for a data set",
                self.file.delta
            )));
        }
        Ok(())
    }

    /// Reads an existing ledger file of at most [`MAX_LEDGER_BYTES`].
    pub fn load(path: &Path) -> Result<Self, LedgerError> {
        let bytes = read_bounded(
            path,
            MAX_LEDGER_BYTES,
            "a privacy ledger (fixed: a million charges take about 200 MB)",
        )?;
        Self::parse(path, &bytes)
    }

    /// A ledger from the contents of its file, as [`Ledger::load`] reads them; `path` is
    /// where it is kept (and names it in errors). Every charge is accounted again.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, LedgerError> {
        let file: LedgerFile = serde_json::from_slice(bytes).map_err(|e| LedgerError::Damaged {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The site that keeps this ledger.
    pub fn site(&self) -> &str {
        &self.file.site
    }

    /// The data set it accounts for.
    pub fn dataset(&self) -> &str {
        &self.file.dataset
    }

    /// The delta of its (epsilon, delta) figures.
    pub fn delta(&self) -> f64 {
        self.file.delta
    }

    /// Epsilon spent so far at the ledger's delta.
    pub fn spent(&self) -> Result<f64, LedgerError> {
        if self.file.charges.is_empty() {
            return Ok(0.0);
        }
        self.file
            .accountant
            .epsilon(self.file.delta)
            .map(|p| p.epsilon)
            .map_err(|e| LedgerError::Accounting(e.to_string()))
    }

    /// Epsilon after a further charge, without recording it.
    pub fn spent_after(&self, q: f64, sigma: f64, steps: u64) -> Result<f64, LedgerError> {
        self.file
            .accountant
            .epsilon_after(q, sigma, steps, self.file.delta)
            .map(|p| p.epsilon)
            .map_err(|e| LedgerError::Accounting(e.to_string()))
    }

    /// Records a charge and writes the file, whatever the budget.
    pub fn charge(
        &mut self,
        federation: &str,
        round: u32,
        q: f64,
        sigma: f64,
        steps: u64,
    ) -> Result<f64, LedgerError> {
        self.charge_within(f64::INFINITY, federation, round, q, sigma, steps)
    }

    /// Records a charge unless it would take the data set past `budget`, and returns the
    /// epsilon after it. The check and the write happen under an exclusive lock on the ledger,
    /// after re-reading it, so two runs on the same data cannot both spend the same budget.
    pub fn charge_within(
        &mut self,
        budget: f64,
        federation: &str,
        round: u32,
        q: f64,
        sigma: f64,
        steps: u64,
    ) -> Result<f64, LedgerError> {
        let io = |source| LedgerError::Io {
            path: self.path.display().to_string(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path.with_extension("lock"))
            .map_err(io)?;
        lock.lock().map_err(io)?;
        if self.path.exists() {
            let on_disk = Self::load(&self.path)?;
            on_disk.check_identity(&self.file.site, &self.file.dataset, self.file.delta)?;
            self.file = on_disk.file;
        }
        let spent = self.spent()?;
        let after = self.spent_after(q, sigma, steps)?;
        if after > budget {
            return Err(LedgerError::OverBudget {
                spent,
                after,
                budget,
                delta: self.file.delta,
            });
        }
        let mut next = self.file.clone();
        next.accountant
            .compose(q, sigma, steps)
            .map_err(|e| LedgerError::Accounting(e.to_string()))?;
        next.charges.push(Charge {
            federation: federation.to_string(),
            round,
            q,
            noise_multiplier: sigma,
            steps,
            epsilon_after: after,
        });
        let text = serde_json::to_string_pretty(&next)
            .map_err(|e| LedgerError::Accounting(e.to_string()))?;
        let tmp = self.path.with_extension("json.tmp");
        fs::write(&tmp, text).map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        self.file = next;
        Ok(after)
    }

    /// Every charge so far.
    pub fn charges(&self) -> &[Charge] {
        &self.file.charges
    }
}

/// What one round costs a site under the manifest's privacy mechanism.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RoundPrice {
    /// Record-level DP-SGD on the site's `examples` records: the trainer's Poisson-sampled
    /// steps, at the noise multiplier the task carries.
    DpSgd {
        /// Training records the site holds.
        examples: usize,
    },
    /// Client-level DP (central or distributed): one Gaussian step at `noise_multiplier` and
    /// sampling rate `rate` per round charged, the rate that the [`SamplingRule`] gives.
    ClientLevel {
        /// Noise multiplier of the sum's Gaussian noise.
        noise_multiplier: f64,
        /// Sampling rate of the step: [`SamplingRule::rate`].
        rate: f64,
    },
}

impl RoundPrice {
    /// The price of a round under `privacy` and `rule` for a site with `examples` training
    /// records.
    pub fn of(privacy: &PrivacySpec, examples: usize, rule: SamplingRule) -> Self {
        match privacy.mechanism {
            PrivacyMechanism::DpSgd => Self::DpSgd { examples },
            PrivacyMechanism::ClientLevel | PrivacyMechanism::Distributed => Self::ClientLevel {
                noise_multiplier: privacy.noise_multiplier,
                rate: rule.rate(),
            },
        }
    }

    /// Sampling rate and steps one round charges, with `batch_size` and `epochs` of local
    /// training (which only DP-SGD's steps depend on).
    pub fn cost(&self, batch_size: usize, epochs: usize) -> (f64, u64) {
        match *self {
            Self::DpSgd { examples } => round_cost(examples, batch_size, epochs),
            Self::ClientLevel { rate, .. } => (rate, 1),
        }
    }
}

/// Where a budgeted site's rounds are charged.
enum Account {
    /// The site's own ledger, charged `price` before each round it trains in.
    Own {
        price: RoundPrice,
        budget: f64,
        ledger: Mutex<Ledger>,
    },
    /// Member `index` of a population whose every ledger is charged each round
    /// ([`SamplingRule::Verified`]).
    Shared {
        population: Arc<Population>,
        index: usize,
    },
}

/// A privacy-protected site that refuses any round that would exceed its budget: before it
/// trains, it charges the round to its own ledger (or, under [`SamplingRule::Verified`], has
/// every site's ledger charged for it), or refuses with the numbers.
pub struct BudgetedSite {
    inner: Arc<dyn Site>,
    federation: String,
    account: Account,
}

impl BudgetedSite {
    /// Wraps `inner`, whose rounds cost `price`, with `budget` epsilon and its ledger.
    pub fn new(
        inner: Arc<dyn Site>,
        federation: &str,
        price: RoundPrice,
        budget: f64,
        ledger: Ledger,
    ) -> Self {
        Self {
            inner,
            federation: federation.to_string(),
            account: Account::Own {
                price,
                budget,
                ledger: Mutex::new(ledger),
            },
        }
    }

    /// Wraps `inner`, member `index` of `population`: each round it trains in is first
    /// charged to every member's ledger, once.
    pub fn shared(inner: Arc<dyn Site>, population: Arc<Population>, index: usize) -> Self {
        Self {
            inner,
            federation: population.federation().to_string(),
            account: Account::Shared { population, index },
        }
    }

    /// Epsilon spent on the site's data after its latest charge (0 before any), as the
    /// ledger recorded it; `None` if the ledger's lock was poisoned.
    pub fn spent(&self) -> Option<f64> {
        match &self.account {
            Account::Own { ledger, .. } => {
                let ledger = ledger.lock().ok()?;
                Some(ledger.charges().last().map_or(0.0, |c| c.epsilon_after))
            }
            Account::Shared { population, index } => population.spent(*index),
        }
    }

    fn refuse(&self, reason: String) -> SiteError {
        SiteError::refused(self.inner.name(), reason)
    }

    /// Charges `task`'s round to the site's own ledger, within its budget.
    fn charge_own(
        &self,
        task: &TrainTask,
        price: RoundPrice,
        budget: f64,
        ledger: &Mutex<Ledger>,
    ) -> Result<(), SiteError> {
        let (q, sigma, steps) = self.price_of(task, price)?;
        let site = self.inner.name();
        let mut ledger = ledger
            .lock()
            .map_err(|_| SiteError::internal(site, "ledger lock poisoned"))?;
        ledger
            .charge_within(budget, &self.federation, task.round, q, sigma, steps)
            .map(|_| ())
            .map_err(|e| refusal(site, task.round, e))
    }

    /// Sampling rate, noise multiplier and steps that `task` would charge at `price`.
    fn price_of(&self, task: &TrainTask, price: RoundPrice) -> Result<(f64, f64, u64), SiteError> {
        match price {
            RoundPrice::DpSgd { .. } => {
                let Some(dp) = task.training.dp_sgd else {
                    return Err(self.refuse(
                        "refuses to train without DP-SGD: its manifest declares a privacy budget"
                            .to_string(),
                    ));
                };
                let (q, steps) = price.cost(task.training.batch_size, task.training.epochs);
                Ok((q, dp.noise_multiplier, steps))
            }
            RoundPrice::ClientLevel {
                noise_multiplier, ..
            } => {
                let (q, steps) = price.cost(task.training.batch_size, task.training.epochs);
                Ok((q, noise_multiplier, steps))
            }
        }
    }
}

/// `site`'s refusal of `round` because a ledger could not be charged: over budget, or not
/// written.
pub(crate) fn refusal(site: &str, round: u32, e: LedgerError) -> SiteError {
    match e {
        LedgerError::OverBudget { .. } => {
            SiteError::over_budget(site, format!("refuses round {round}: {e}"))
        }
        other => {
            SiteError::internal(site, "could not charge the privacy ledger").with_source(other)
        }
    }
}

/// Sampling rate and steps of one round of DP-SGD on `examples` records.
pub fn round_cost(examples: usize, batch_size: usize, epochs: usize) -> (f64, u64) {
    let (q, steps_per_epoch) = dp_sgd_sampling(examples, batch_size);
    (q, (steps_per_epoch * epochs) as u64)
}

impl Site for BudgetedSite {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        match &self.account {
            Account::Own {
                price,
                budget,
                ledger,
            } => self.charge_own(task, *price, *budget, ledger)?,
            Account::Shared { population, .. } => {
                population.charge(self.inner.name(), task.round)?;
            }
        }
        self.inner.train(task)
    }

    /// Refused: metrics of a model the coordinator chose, on the site's own records, would be
    /// a release that no budget accounts for.
    fn evaluate(&self, _params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        Err(self.refuse(
            "refuses federated evaluation: metrics on its records would be released outside its \
             privacy budget"
                .to_string(),
        ))
    }

    fn secure_exchange(
        &self,
        round: u32,
        message: &Envelope,
        turn: Option<&Turn>,
    ) -> Result<Envelope, SiteError> {
        self.inner.secure_exchange(round, message, turn)
    }
}
