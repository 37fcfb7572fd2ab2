//! [`CoreBoundEvaluator`]: the coordinator's held-out evaluation on threads of its own.

use entente_core::engine::{Evaluator, Failure};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;

/// Runs an [`Evaluator`] on a rayon pool of one thread per core. The round engine's pool has a
/// thread per site (each waits on a node), and a matrix library may keep a scratch buffer the
/// size of a core's L2 cache in every thread it runs on: evaluating there would cost that much
/// memory per site.
pub struct CoreBoundEvaluator<E> {
    inner: E,
    pool: rayon::ThreadPool,
}

impl<E: Evaluator> CoreBoundEvaluator<E> {
    /// `inner`, run on a new pool of one thread per core.
    pub fn new(inner: E) -> Result<Self, rayon::ThreadPoolBuildError> {
        Ok(Self {
            inner,
            pool: rayon::ThreadPoolBuilder::new().build()?,
        })
    }

    /// The wrapped evaluator.
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

impl<E: Evaluator> Evaluator for CoreBoundEvaluator<E> {
    fn evaluate(&self, params: &ParamSet) -> Result<EvalMetrics, Failure> {
        self.pool.install(|| self.inner.evaluate(params))
    }
}
