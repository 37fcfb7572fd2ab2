//! Test helpers shared by the secure-aggregation test suites.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use entente_core::engine::{Envelope, Site, SiteError, TrainTask};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::SiteUpdate;

/// Passes messages to a secure site but stops answering from phase `drop_at` on.
pub struct Dropping {
    /// The secure site.
    pub inner: Arc<dyn Site>,
    /// The first secure phase it does not answer.
    pub drop_at: usize,
    /// Phases seen this round.
    pub phase: AtomicUsize,
}

impl Site for Dropping {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        self.phase.store(0, Ordering::SeqCst);
        self.inner.train(task)
    }

    fn evaluate(&self, params: &ParamSet) -> Result<EvalMetrics, SiteError> {
        self.inner.evaluate(params)
    }

    fn secure_exchange(&self, round: u32, message: &Envelope) -> Result<Envelope, SiteError> {
        if self.phase.fetch_add(1, Ordering::SeqCst) >= self.drop_at {
            return Err(SiteError {
                site: self.name().to_string(),
                reason: "connection lost".into(),
            });
        }
        self.inner.secure_exchange(round, message)
    }
}
