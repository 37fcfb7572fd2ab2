//! A shared body and personal tensors (FedPer, FedRep) for entente's own trainer: the site
//! half. A task carries only the shared tensors; the site joins them with the personal tensors
//! it keeps, trains, keeps the personal part and answers the shared part only.
//!
//! - FedPer (Arivazhagan et al. 2019): the whole model trains together for the round's local
//!   epochs.
//! - FedRep (Collins et al., ICML 2021): first the personal tensors train for `head_epochs`
//!   with the shared ones frozen, then the shared ones for the round's local epochs with the
//!   personal ones frozen.
//!
//! The personal tensors start from the initial model's and persist across rounds like
//! SCAFFOLD's control variates ([`crate::kept`]): in memory and, with a folder, on disk, so a
//! restarted node goes on from them. With a folder the site also writes its latest personal
//! model there, whole, as `model.safetensors`. Nothing personal is ever part of an answer.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use entente_core::engine::{Evaluator, Failure, LocalTraining, Site, SiteError, TrainTask};
use entente_core::manifest::Personalization;
use entente_core::metrics::EvalMetrics;
use entente_core::params::{Layout, ParamError, ParamSet};
use entente_core::personal::{self, carried};
use entente_core::seeds::{self, Stream};
use entente_core::update::SiteUpdate;

use crate::kept::{KeptError, PerRound};
use crate::site::LocalSite;
use crate::trainer::{self, Objective, TrainOutcome};

/// The file a site with a folder writes its latest personal model to.
pub const PERSONAL_MODEL_FILE: &str = "model.safetensors";

/// Why a site with personal tensors could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PersonalHeadError {
    /// The manifest's personalization keeps no tensor at the site.
    #[error("the manifest's [personalization] keeps no personal tensor")]
    NotSharedBody,
    /// The initial model could not be split.
    #[error(transparent)]
    Split(#[from] ParamError),
    /// The kept personal tensors could not be read.
    #[error(transparent)]
    Kept(#[from] KeptError),
}

/// How the site trains each round.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Method {
    FedPer,
    FedRep { head_epochs: usize },
}

/// A site of entente's own trainer that keeps some of the model's tensors to itself.
pub struct PersonalHeadSite {
    local: Arc<LocalSite>,
    method: Method,
    personal: Vec<String>,
    shared: Vec<String>,
    full: Arc<Layout>,
    initial: ParamSet,
    folder: Option<PathBuf>,
    kept: Mutex<PerRound>,
}

impl PersonalHeadSite {
    /// Wraps `local` under `choice` (FedPer or FedRep); its personal tensors start from
    /// `initial`'s (the whole initial model). With `folder` they are kept there across
    /// restarts (and those already there are taken up), beside the latest personal model.
    pub fn new(
        local: Arc<LocalSite>,
        choice: &Personalization,
        initial: &ParamSet,
        folder: Option<PathBuf>,
    ) -> Result<Self, PersonalHeadError> {
        let method = match choice {
            Personalization::FedPer { .. } => Method::FedPer,
            Personalization::FedRep { head_epochs, .. } => Method::FedRep {
                head_epochs: *head_epochs,
            },
            Personalization::FineTune { .. } | Personalization::Ditto { .. } => {
                return Err(PersonalHeadError::NotSharedBody);
            }
        };
        let personal = choice.personal_tensors().to_vec();
        let (shared, own) = personal::split(initial, &personal)?;
        Ok(Self {
            local,
            method,
            shared: shared
                .layout()
                .specs()
                .iter()
                .map(|s| s.name.clone())
                .collect(),
            personal,
            full: Arc::clone(initial.layout()),
            initial: own,
            kept: Mutex::new(PerRound::open(folder.clone())?),
            folder,
        })
    }

    /// The personal tensors as the latest round this site trained left them (the initial
    /// model's before its first).
    pub fn personal(&self) -> ParamSet {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.latest()
            .cloned()
            .unwrap_or_else(|| self.initial.clone())
    }

    /// The site's personal model under the shared tensors `shared` (a global model): those,
    /// with the site's own personal tensors.
    pub fn personal_model(&self, shared: &ParamSet) -> Result<ParamSet, SiteError> {
        self.refuse_personal(shared, "model")?;
        personal::join(&self.full, shared, &self.personal()).map_err(|e| {
            SiteError::refused(
                self.name(),
                format!("the shared model does not fit this site's model: {e}"),
            )
        })
    }

    /// Refuses parameters sent to this site that hold a personal tensor.
    fn refuse_personal(&self, params: &ParamSet, what: &str) -> Result<(), SiteError> {
        match carried(params.layout(), &self.personal) {
            Some(name) => Err(SiteError::refused(
                self.name(),
                format!(
                    "the {what} carries `{name}`, a personal tensor ([personalization] \
                     personal): personal tensors never travel, and this site does not take one"
                ),
            )),
            None => Ok(()),
        }
    }

    /// Trains `start` with `frozen` left as it is.
    fn train_part(
        &self,
        start: &ParamSet,
        frozen: &[String],
        training: &LocalTraining,
        seed: u64,
    ) -> Result<TrainOutcome, SiteError> {
        let mu = training.fedprox_mu;
        let objective = Objective {
            proximal: (mu > 0.0).then_some((start, mu)),
            correction: None,
            frozen,
        };
        trainer::train_with(
            self.local.spec(),
            start,
            objective,
            self.local.train_data(),
            training,
            seed,
        )
        .map_err(|e| SiteError::internal(self.name(), "local training failed").with_source(e))
    }
}

impl Site for PersonalHeadSite {
    fn name(&self) -> &str {
        self.local.name()
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let name = self.local.name();
        self.refuse_personal(&task.global, "task")?;
        if task.training.dp_sgd.is_some() {
            return Err(SiteError::refused(
                name,
                "a shared body with personal tensors does not train with DP-SGD",
            ));
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let own = match kept
            .before(task.round)
            .map_err(|m| SiteError::refused(name, m))?
        {
            Some(own) if own.layout().specs() == self.initial.layout().specs() => own.clone(),
            Some(_) => {
                return Err(SiteError::refused(
                    name,
                    "the personal tensors this site keeps do not fit the manifest's model",
                ));
            }
            None => self.initial.clone(),
        };
        let start = personal::join(&self.full, &task.global, &own).map_err(|e| {
            SiteError::refused(
                name,
                format!("the task's shared model does not fit this site's model: {e}"),
            )
        })?;
        let outcome = match self.method {
            Method::FedPer => self.train_part(&start, &[], &task.training, task.seed)?,
            Method::FedRep { head_epochs } => {
                let head = LocalTraining {
                    epochs: head_epochs,
                    ..task.training.clone()
                };
                let seed = seeds::derive(task.seed, task.round, Stream::PersonalHead);
                let headed = self.train_part(&start, &self.shared, &head, seed)?;
                self.train_part(&headed.params, &self.personal, &task.training, task.seed)?
            }
        };
        if outcome.params.as_flat().iter().any(|v| !v.is_finite()) {
            return Err(SiteError::internal(
                name,
                "local training diverged: the model is not finite; the personal tensors kept \
                 are unchanged (try a lower training.learning_rate)",
            ));
        }
        let (shared, own) = personal::split(&outcome.params, &self.personal)
            .map_err(|e| SiteError::internal(name, e.to_string()))?;
        kept.keep(task.round, own).map_err(|e| {
            SiteError::internal(name, "could not keep the personal tensors").with_source(e)
        })?;
        if let Some(dir) = &self.folder {
            let path = dir.join(PERSONAL_MODEL_FILE);
            outcome.params.save(&path).map_err(|e| {
                SiteError::internal(
                    name,
                    format!("could not write the personal model {}", path.display()),
                )
                .with_source(e)
            })?;
        }
        Ok(SiteUpdate {
            site: name.to_string(),
            num_examples: outcome.num_examples as u64,
            params: shared,
            train_loss: outcome.mean_loss,
        })
    }

    /// Evaluates the site's personal model under the shared tensors `params`.
    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        let model = self.personal_model(params)?;
        self.local.evaluate(&Arc::new(model))
    }
}

/// A central evaluator of global models that hold the shared tensors only: each is evaluated
/// whole, with the initial model's personal tensors (a coordinator never holds a site's).
pub struct WithInitialHead {
    central: Arc<dyn Evaluator>,
    full: Arc<Layout>,
    initial: ParamSet,
}

impl WithInitialHead {
    /// `central` evaluating shared tensors joined with the tensors of `initial` (the whole
    /// initial model) named in `personal`.
    pub fn new(
        central: Arc<dyn Evaluator>,
        initial: &ParamSet,
        personal: &[String],
    ) -> Result<Self, ParamError> {
        Ok(Self {
            central,
            full: Arc::clone(initial.layout()),
            initial: personal::split(initial, personal)?.1,
        })
    }
}

impl Evaluator for WithInitialHead {
    fn evaluate(&self, params: &ParamSet) -> Result<EvalMetrics, Failure> {
        let whole = personal::join(&self.full, params, &self.initial).map_err(|e| {
            Failure::internal(format!("the global model does not fit the manifest's: {e}"))
        })?;
        self.central.evaluate(&whole)
    }
}
