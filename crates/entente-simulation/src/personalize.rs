//! Personal models (`[personalization]`): what each site takes home besides the global model.
//! Nothing of a personal model leaves its site, so it releases nothing and spends no privacy
//! budget. Each is written to the run folder (`personal/SITE.safetensors`) and evaluated on
//! the site's own test split.
//!
//! - `method = "finetune"` (FedAvg+FT): after the last round a site trains the final global
//!   model for `epochs` epochs of the manifest's local training on its own records.
//! - `method = "ditto"` (Li et al., ICML 2021): every round it is selected, a site also trains
//!   a personal model from where it left it, for the round's local epochs and in the round's
//!   batch order, with `lambda / 2 * ||v - w||^2` pulling it toward the round's global model
//!   `w` ([`Ditto`]). With `lambda = 0` that is training alone; as `lambda` grows the personal
//!   model stays with the global one.
//! - `method = "fedper"` / `"fedrep"`: every site keeps the manifest's personal tensors in a
//!   [`PersonalHeadSite`] across rounds; its personal model is the final shared tensors with
//!   its own personal ones ([`crate::shared_body`]).

use std::path::Path;
use std::sync::{Arc, Mutex};

use entente_core::engine::{LocalTraining, Site, SiteError, TrainTask};
use entente_core::manifest::{Manifest, Personalization};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::seeds::{self, Stream};
use entente_core::update::SiteUpdate;
use entente_learn::data::Dataset;
use entente_learn::model::ModelSpec;
use entente_learn::personal_head::PersonalHeadSite;
use entente_learn::site::LocalSite;
use entente_learn::trainer;
use rayon::prelude::*;

use crate::progress::Progress;

/// A site of entente's own trainer that keeps a Ditto personal model beside its normal
/// update (the first round starts it from the global model).
pub(crate) struct Ditto {
    local: Arc<LocalSite>,
    lambda: f64,
    personal: Mutex<Option<ParamSet>>,
}

impl Ditto {
    /// Wraps `local`, pulling its personal model toward the global one with weight `lambda`.
    pub(crate) fn new(local: Arc<LocalSite>, lambda: f64) -> Self {
        Self {
            local,
            lambda,
            personal: Mutex::new(None),
        }
    }

    /// The personal model as the last round it took part in left it.
    pub(crate) fn personal(&self) -> Option<ParamSet> {
        self.personal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Site for Ditto {
    fn name(&self) -> &str {
        self.local.name()
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let update = self.local.train(task)?;
        let mut personal = self.personal.lock().unwrap_or_else(|e| e.into_inner());
        let start = personal.take().unwrap_or_else(|| (*task.global).clone());
        // The personal model never leaves the site: no DP-SGD noise, and its own pull
        // instead of FedProx's.
        let training = LocalTraining {
            dp_sgd: None,
            fedprox_mu: 0.0,
            ..task.training.clone()
        };
        let pull = trainer::Objective {
            proximal: Some((&task.global, self.lambda)),
            correction: None,
            frozen: &[],
        };
        match trainer::train_with(
            self.local.spec(),
            &start,
            pull,
            self.local.train_data(),
            &training,
            task.seed,
        ) {
            Ok(outcome) => *personal = Some(outcome.params),
            // The round's update stands; the personal model stays as it was.
            Err(e) => {
                eprintln!(
                    "warning: site `{}`: Ditto's personal update in round {} failed, the \
                     personal model is kept as it was: {e}",
                    self.name(),
                    task.round
                );
                *personal = Some(start);
            }
        }
        Ok(update)
    }

    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        self.local.evaluate(params)
    }
}

/// One site as personalization sees it.
pub(crate) struct Member<'a> {
    /// The site, before the privacy and progress layers.
    pub site: &'a Arc<dyn Site>,
    /// Its own test split and the model spec to evaluate on it, when entente holds it
    /// (otherwise the site evaluates itself).
    pub own_test: Option<&'a (ModelSpec, Dataset)>,
    /// Under Ditto, the site's personal-model keeper.
    pub ditto: Option<&'a Arc<Ditto>>,
    /// Under FedPer and FedRep, the keeper of the site's personal tensors.
    pub head: Option<&'a Arc<PersonalHeadSite>>,
}

/// The final global model, whole and as the round engine holds it (under FedPer and FedRep the
/// shared tensors only; otherwise the same model).
#[derive(Clone, Copy)]
pub(crate) struct Models<'a> {
    /// The whole model (under FedPer and FedRep with the initial personal tensors).
    pub global: &'a Arc<ParamSet>,
    /// What the sites share of it.
    pub shared: &'a ParamSet,
}

/// Each member's personal model on its own test split, in order: `None` where the site has no
/// test split, or no personal model (a warning then says which and why). The models are written
/// under `dir/personal/`.
pub(crate) fn run(
    members: &[Member<'_>],
    manifest: &Manifest,
    choice: &Personalization,
    models: Models<'_>,
    dir: &Path,
    progress: &Progress,
) -> anyhow::Result<Vec<Option<EvalMetrics>>> {
    let folder = dir.join("personal");
    std::fs::create_dir_all(&folder).map_err(|e| {
        anyhow::anyhow!(
            "could not create {} for the personal models: {e}",
            folder.display()
        )
    })?;
    progress.start("personal models", members.len());
    let results = members
        .par_iter()
        .enumerate()
        .map(|(i, m)| {
            let name = m.site.name().to_string();
            let outcome = personal_model(m, i as u32, manifest, choice, models).and_then(|p| {
                let path = folder.join(format!("{name}.safetensors"));
                p.save(&path)
                    .map_err(|e| format!("could not write {}: {e}", path.display()))?;
                evaluate(m, p)
            });
            progress.tick(&name);
            outcome.unwrap_or_else(|why| {
                eprintln!("warning: site `{name}` has no personal model: {why}");
                None
            })
        })
        .collect();
    progress.clear();
    Ok(results)
}

/// Member `index`'s personal model: the global one fine-tuned, the one Ditto kept (the
/// global model if the site never took part), or the final shared tensors with the site's own
/// personal ones (FedPer, FedRep).
fn personal_model(
    m: &Member<'_>,
    index: u32,
    manifest: &Manifest,
    choice: &Personalization,
    models: Models<'_>,
) -> Result<ParamSet, String> {
    let global = models.global;
    let personal = match choice {
        Personalization::FineTune { epochs } => {
            let round = manifest.rounds + 1;
            let task = TrainTask {
                round,
                global: Arc::clone(global),
                training: LocalTraining {
                    epochs: *epochs,
                    ..manifest.training.clone()
                },
                seed: seeds::derive(
                    manifest.seed,
                    round,
                    Stream::Personalization { site: index },
                ),
                turn: None,
            };
            m.site.train(&task).map_err(|e| e.reason())?.params
        }
        Personalization::Ditto { .. } => m
            .ditto
            .and_then(|d| d.personal())
            .unwrap_or_else(|| (**global).clone()),
        Personalization::FedPer { .. } | Personalization::FedRep { .. } => m
            .head
            .ok_or("it keeps no personal tensors")?
            .personal_model(models.shared)
            .map_err(|e| e.reason())?,
    };
    if personal.same_layout(global) {
        Ok(personal)
    } else {
        Err("it does not have the global model's tensors".into())
    }
}

/// `personal` on the member's own test split.
fn evaluate(m: &Member<'_>, personal: ParamSet) -> Result<Option<EvalMetrics>, String> {
    match m.own_test {
        Some((_, test)) if test.is_empty() => Ok(None),
        Some((spec, test)) => trainer::evaluate(spec, &personal, test, trainer::EVAL_BATCH)
            .map(Some)
            .map_err(|e| format!("could not evaluate it: {e}")),
        None => m
            .site
            .evaluate(&Arc::new(personal))
            .map(Some)
            .map_err(|e| e.reason()),
    }
}

/// Under Ditto, wraps every base site in its keeper; each must train with entente's own
/// trainer (`local`), since the personal update is entente's.
pub(crate) fn ditto_sites(
    locals: &[(String, Option<Arc<LocalSite>>)],
    lambda: f64,
) -> anyhow::Result<Vec<Arc<Ditto>>> {
    locals
        .iter()
        .map(|(name, local)| match local {
            Some(l) => Ok(Arc::new(Ditto::new(Arc::clone(l), lambda))),
            None => anyhow::bail!(
                "[personalization] method = \"ditto\" trains each personal model with entente's \
                 own trainer, but site `{name}` trains with its own client; use method = \
                 \"finetune\", which works with any client"
            ),
        })
        .collect()
}
