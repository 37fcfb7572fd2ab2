//! SCAFFOLD's site half for entente's own trainer (the server half and the task layout are
//! [`entente_core::aggregators::scaffold`]).
//!
//! A task carries the global model `x` and the server control variate `c`. The site trains
//! from `x` with every gradient corrected by `c - c_i`, reaching `y` after `K` steps of
//! learning rate `eta`, then keeps `c_i+ = c_i - c + (x - y) / (K * eta)` and answers `y` with
//! `(x - y) / (K * eta)`. Its control variate `c_i` starts at zero and persists across rounds:
//! in memory, and with a folder (a node's `strategy.control_dir`) on disk, so a restarted node
//! goes on from the one it had. Only the control variates of the last two rounds it trained are
//! kept: a round asked for again (a retry, or a coordinator resuming from its checkpoint)
//! trains from the control variate before that round, as the first attempt did.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use entente_core::aggregators::scaffold::{split_control, with_control};
use entente_core::engine::{ErrorKind, Site, SiteError, TrainTask};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::SiteUpdate;

use crate::kept::{KeptError, PerRound};
use crate::site::LocalSite;
use crate::trainer::{self, Objective};

/// A SCAFFOLD site: entente's own trainer with a control variate it keeps.
pub struct ScaffoldSite {
    local: Arc<LocalSite>,
    controls: Mutex<PerRound>,
}

impl ScaffoldSite {
    /// Wraps `local`; with `folder`, its control variates are kept there across restarts
    /// (and the ones already there are taken up).
    pub fn new(local: Arc<LocalSite>, folder: Option<PathBuf>) -> Result<Self, KeptError> {
        Ok(Self {
            local,
            controls: Mutex::new(PerRound::open(folder)?),
        })
    }

    /// The control variate the site trained its latest round with, in the model's layout.
    pub fn control(&self) -> Option<ParamSet> {
        let controls = self.controls.lock().unwrap_or_else(|e| e.into_inner());
        controls.latest().cloned()
    }

    fn refuse(&self, message: impl Into<String>) -> SiteError {
        SiteError::refused(self.local.name(), message)
    }
}

impl Site for ScaffoldSite {
    fn name(&self) -> &str {
        self.local.name()
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let name = self.local.name();
        if task.training.dp_sgd.is_some() {
            return Err(self.refuse("SCAFFOLD does not train with DP-SGD"));
        }
        let (x, c) = split_control(&task.global).map_err(|reason| {
            SiteError::new(
                name,
                ErrorKind::Refused,
                format!("the SCAFFOLD task is malformed: {reason}"),
            )
        })?;
        let mut controls = self.controls.lock().unwrap_or_else(|e| e.into_inner());
        let ci = match controls.before(task.round).map_err(|m| self.refuse(m))? {
            Some(ci) if ci.layout().specs() == x.layout().specs() => {
                ParamSet::from_flat(Arc::clone(x.layout()), ci.as_flat().to_vec())
                    .map_err(|e| SiteError::internal(name, e.to_string()))?
            }
            Some(_) => {
                return Err(self
                    .refuse("the control variate this site keeps does not fit the task's model"));
            }
            None => x.zeros_like(),
        };
        let mut correction = c.clone();
        for (d, &own) in correction.as_flat_mut().iter_mut().zip(ci.as_flat()) {
            *d -= own;
        }
        let mu = task.training.fedprox_mu;
        let objective = Objective {
            proximal: (mu > 0.0).then_some((&x, mu)),
            correction: Some(&correction),
            frozen: &[],
        };
        let outcome = trainer::train_with(
            self.local.spec(),
            &x,
            objective,
            self.local.train_data(),
            &task.training,
            task.seed,
        )
        .map_err(|e| SiteError::internal(name, "local training failed").with_source(e))?;
        let y = outcome.params;
        // (x - y) / (K * eta): the mean step direction along the way, correction included.
        let scale = 1.0 / (outcome.steps.max(1) as f64 * task.training.learning_rate);
        let answer: Vec<f32> = x
            .as_flat()
            .iter()
            .zip(y.as_flat())
            .map(|(&a, &b)| ((f64::from(a) - f64::from(b)) * scale) as f32)
            .collect();
        let mut next = ci;
        for ((own, &server), &a) in next.as_flat_mut().iter_mut().zip(c.as_flat()).zip(&answer) {
            *own = *own - server + a;
        }
        // Training that ends beyond f32 (a learning rate too large, or a server control
        // variate at the edge of f32) is not kept: a non-finite control variate would spoil
        // every later round of this site, and the coordinator refuses such an answer anyway.
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        if !(finite(y.as_flat()) && finite(&answer) && finite(next.as_flat())) {
            return Err(SiteError::internal(
                name,
                "local training diverged: its model or control variate is not finite; the \
                 control variate kept is unchanged (try a lower training.learning_rate)",
            ));
        }
        controls.keep(task.round, next).map_err(|e| {
            SiteError::internal(name, "could not keep the control variate").with_source(e)
        })?;
        let params =
            with_control(&y, &answer).map_err(|e| SiteError::internal(name, e.to_string()))?;
        Ok(SiteUpdate {
            site: name.to_string(),
            num_examples: outcome.num_examples as u64,
            params,
            train_loss: outcome.mean_loss,
        })
    }

    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        self.local.evaluate(params)
    }
}
