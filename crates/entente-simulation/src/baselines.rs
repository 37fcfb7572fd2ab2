//! The baselines that show what cooperating bought: every site training alone, and one model
//! trained on the pooled data, each with the same number of epochs as the federation.

use anyhow::{Context, Result};
use entente_core::manifest::Manifest;
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::seeds::{self, Stream};
use entente_learn::data::Dataset;
use entente_learn::simulation::Federation;
use entente_learn::trainer;
use rayon::prelude::*;
use serde::Serialize;

use crate::progress::Progress;

/// One site trained alone.
#[derive(Debug, Clone, Serialize)]
pub struct LocalOnly {
    /// Site name.
    pub site: String,
    /// Training examples the site holds.
    pub examples: usize,
    /// The local-only model on the global test set.
    pub global_test: EvalMetrics,
    /// The local-only model on the site's own test split.
    pub own_test: Option<EvalMetrics>,
}

/// Results of both baselines.
#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    /// Per site, in manifest order.
    pub local_only: Vec<LocalOnly>,
    /// The pooled model on the global test set.
    pub centralized: EvalMetrics,
    /// Epochs each baseline trained for.
    pub epochs: usize,
}

/// Trains the baselines from the federation's initial parameters.
pub fn run(
    fed: &Federation,
    manifest: &Manifest,
    initial: &ParamSet,
    progress: &Progress,
) -> Result<Baselines> {
    let mut training = manifest.training.clone();
    training.epochs = manifest.training.epochs * manifest.rounds as usize;
    progress.start("baselines", fed.sites.len() + 1);
    let seed = |stream| seeds::derive(manifest.seed, 0, stream);

    let local_only = fed
        .sites
        .par_iter()
        .enumerate()
        .map(|(i, site)| -> Result<LocalOnly> {
            let name = entente_core::engine::Site::name(site).to_string();
            let outcome = trainer::train(
                &fed.spec,
                initial,
                site.train_data(),
                &training,
                seed(Stream::LocalBaseline { site: i as u32 }),
            )
            .with_context(|| format!("local-only training of site `{name}`"))?;
            let global_test =
                trainer::evaluate(&fed.spec, &outcome.params, &fed.test, trainer::EVAL_BATCH)?;
            let own_test = (!site.test_data().is_empty())
                .then(|| {
                    trainer::evaluate(
                        &fed.spec,
                        &outcome.params,
                        site.test_data(),
                        trainer::EVAL_BATCH,
                    )
                })
                .transpose()?;
            progress.tick(&format!("{name} alone"));
            Ok(LocalOnly {
                site: name,
                examples: site.train_data().len(),
                global_test,
                own_test,
            })
        })
        .collect::<Result<Vec<_>>>()?;

    let parts: Vec<Dataset> = fed.sites.iter().map(|s| s.train_data().clone()).collect();
    let pooled = Dataset::concat(&parts)?;
    let outcome = trainer::train(
        &fed.spec,
        initial,
        &pooled,
        &training,
        seed(Stream::PooledBaseline),
    )
    .context("centralized training on the pooled data")?;
    let centralized =
        trainer::evaluate(&fed.spec, &outcome.params, &fed.test, trainer::EVAL_BATCH)?;
    progress.tick("centralized");
    progress.clear();
    Ok(Baselines {
        local_only,
        centralized,
        epochs: training.epochs,
    })
}
