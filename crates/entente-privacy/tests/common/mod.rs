//! Test helpers shared by the secure-aggregation test suites.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use entente_core::engine::{
    Envelope, LocalOptimizer, LocalTraining, RoundRules, Site, SiteError, TrainTask, Turn,
};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::{SiteUpdate, UpdatePolicy};
use entente_privacy::secagg::{InProcessPki, Security};
use entente_privacy::secure_round::{SecAggSettings, SecureSite};

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

    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        self.inner.evaluate(params)
    }

    fn secure_exchange(
        &self,
        round: u32,
        message: &Envelope,
        turn: Option<&Turn>,
    ) -> Result<Envelope, SiteError> {
        if self.phase.fetch_add(1, Ordering::SeqCst) >= self.drop_at {
            return Err(SiteError::transport(self.name(), "connection lost"));
        }
        self.inner.secure_exchange(round, message, turn)
    }
}

/// Wraps each plain site as a secure site (its position is its id); the sites named in
/// `drops` as `(position, phase)` stop answering from that secure phase on.
pub fn secure_sites(
    plain: Vec<Arc<dyn Site>>,
    settings: &SecAggSettings,
    drops: &[(usize, usize)],
    deterministic: bool,
) -> Vec<Arc<dyn Site>> {
    let ids: Vec<u32> = (0..plain.len() as u32).collect();
    let pki = InProcessPki::new(&settings.context, &ids).unwrap();
    plain
        .into_iter()
        .enumerate()
        .map(|(i, site)| {
            let mut secure = SecureSite::new(
                site,
                i as u32,
                UpdatePolicy::default(),
                settings.clone(),
                deterministic,
            );
            if settings.security == Security::Active {
                secure = secure.with_identity(pki.identity(i as u32).unwrap());
            }
            let secure: Arc<dyn Site> = Arc::new(secure);
            match drops.iter().find(|(s, _)| *s == i) {
                Some(&(_, drop_at)) => Arc::new(Dropping {
                    inner: secure,
                    drop_at,
                    phase: AtomicUsize::new(0),
                }) as Arc<dyn Site>,
                None => secure,
            }
        })
        .collect()
}

/// One round with quorum `min_sites`, default policy, plain SGD training.
pub fn rules(min_sites: usize) -> RoundRules {
    RoundRules {
        rounds: 1,
        fraction: 1.0,
        min_sites,
        seed: 9,
        policy: UpdatePolicy::default(),
        training: LocalTraining {
            epochs: 1,
            batch_size: 1,
            learning_rate: 0.1,
            optimizer: LocalOptimizer::Sgd { momentum: 0.0 },
            fedprox_mu: 0.0,
            dp_sgd: None,
        },
        federated_evaluation: true,
    }
}

/// A one-tensor model of `dim` values.
pub fn initial(dim: usize) -> ParamSet {
    let values = (0..dim).map(|j| (j as f32).sin()).collect();
    ParamSet::from_tensors([("w".to_string(), vec![dim], values)]).unwrap()
}

/// Trains by adding `pattern(index, j)` to every coordinate `j` of the global model.
pub struct PatternSite {
    /// The site's name.
    pub name: String,
    /// Its position (the pattern's first argument).
    pub index: usize,
    /// Examples it claims.
    pub examples: u64,
    /// The change it makes to coordinate `j`.
    pub pattern: fn(usize, usize) -> f32,
}

impl Site for PatternSite {
    fn name(&self) -> &str {
        &self.name
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let mut params = (*task.global).clone();
        for (j, v) in params.as_flat_mut().iter_mut().enumerate() {
            *v += (self.pattern)(self.index, j);
        }
        Ok(SiteUpdate {
            site: self.name.clone(),
            num_examples: self.examples,
            params,
            train_loss: 0.5,
        })
    }

    fn evaluate(&self, _params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        Err(SiteError::refused(self.name.clone(), "no test split"))
    }
}
