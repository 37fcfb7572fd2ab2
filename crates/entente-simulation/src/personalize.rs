//! Personal models (`[personalization]`): after the last round each site makes the
//! federation's final model its own. With `method = "finetune"` (FedAvg+FT) a site trains the
//! final global model for `epochs` epochs of the manifest's local training on its own records,
//! keeps the result in the run folder (`personal/SITE.safetensors`) and evaluates it on its
//! own test split. Nothing of it leaves the site, so it releases nothing and spends no privacy
//! budget.

use std::path::Path;
use std::sync::Arc;

use entente_core::engine::{LocalTraining, Site, TrainTask};
use entente_core::manifest::{Manifest, Personalization};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::seeds::{self, Stream};
use entente_learn::data::Dataset;
use entente_learn::model::ModelSpec;
use entente_learn::trainer;
use rayon::prelude::*;

use crate::progress::Progress;

/// One site as personalization sees it: what trains, and its own test split when entente
/// holds it (otherwise the site evaluates itself).
pub(crate) struct Member<'a> {
    /// The site, before the privacy and progress layers.
    pub site: &'a Arc<dyn Site>,
    /// Its own test split and the model spec to evaluate on it.
    pub own_test: Option<&'a (ModelSpec, Dataset)>,
}

/// Each member's personal model on its own test split, in order (`None` where the site has no
/// test split or could not train or evaluate: a warning says which and why). The models are
/// written under `dir/personal/`.
pub(crate) fn run(
    members: &[Member<'_>],
    manifest: &Manifest,
    choice: Personalization,
    global: &Arc<ParamSet>,
    dir: &Path,
    progress: &Progress,
) -> anyhow::Result<Vec<Option<EvalMetrics>>> {
    let Personalization::FineTune { epochs } = choice;
    let folder = dir.join("personal");
    std::fs::create_dir_all(&folder).map_err(|e| {
        anyhow::anyhow!(
            "could not create {} for the personal models: {e}",
            folder.display()
        )
    })?;
    let training = LocalTraining {
        epochs,
        ..manifest.training.clone()
    };
    progress.start("personal models", members.len());
    let results = members
        .par_iter()
        .enumerate()
        .map(|(i, m)| {
            let name = m.site.name().to_string();
            let task = TrainTask {
                round: manifest.rounds + 1,
                global: Arc::clone(global),
                training: training.clone(),
                seed: seeds::derive(
                    manifest.seed,
                    manifest.rounds + 1,
                    Stream::Personalization { site: i as u32 },
                ),
                turn: None,
            };
            let outcome = fine_tune(
                m,
                &task,
                global,
                &folder.join(format!("{name}.safetensors")),
            );
            progress.tick(&format!("{name} fine-tuned"));
            match outcome {
                Ok(metrics) => metrics,
                Err(why) => {
                    eprintln!("warning: site `{name}` has no personal model: {why}");
                    None
                }
            }
        })
        .collect();
    progress.clear();
    Ok(results)
}

/// Fine-tunes one member's copy of the global model, saves it at `path` and evaluates it.
fn fine_tune(
    m: &Member<'_>,
    task: &TrainTask,
    global: &ParamSet,
    path: &Path,
) -> Result<Option<EvalMetrics>, String> {
    let update = m.site.train(task).map_err(|e| e.reason())?;
    let personal = update.params;
    if !personal.same_layout(global) {
        return Err("its fine-tuned model does not have the global model's tensors".into());
    }
    personal
        .save(path)
        .map_err(|e| format!("could not write {}: {e}", path.display()))?;
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
