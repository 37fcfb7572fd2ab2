//! The baselines that show what cooperating bought: every site training alone, and one model
//! trained on the pooled data. Each trains as a one-site federation of its data would: every
//! round the manifest's local training from the last round's model, with that round's batch
//! order and a fresh optimizer: the training each site does in the federation. What the
//! federation adds on top (the server's rule and learning rate, sampling of sites, update
//! checks, privacy noise) is what the comparison measures. (Trained instead as one call of `rounds x local_epochs` epochs, the pooled model
//! kept one batch order's stream and, with momentum or Adam, one optimizer state over the whole
//! run: a different training from the federation's, and one draw of its last-epoch noise.)

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
    progress.start("baselines", fed.sites.len() + 1);

    let local_only = fed
        .sites
        .par_iter()
        .enumerate()
        .map(|(i, site)| -> Result<LocalOnly> {
            let name = entente_core::engine::Site::name(site).to_string();
            let alone = as_one_site(fed, manifest, initial, site.train_data(), i as u32)
                .with_context(|| format!("local-only training of site `{name}`"))?;
            let global_test = trainer::evaluate(&fed.spec, &alone, &fed.test, trainer::EVAL_BATCH)?;
            let own_test = (!site.test_data().is_empty())
                .then(|| {
                    trainer::evaluate(&fed.spec, &alone, site.test_data(), trainer::EVAL_BATCH)
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
    // The batch orders of site 0: those a one-site federation of the pooled data would use.
    let pooled_model = as_one_site(fed, manifest, initial, &pooled, 0)
        .context("centralized training on the pooled data")?;
    let centralized = trainer::evaluate(&fed.spec, &pooled_model, &fed.test, trainer::EVAL_BATCH)?;
    progress.tick("centralized");
    progress.clear();
    Ok(Baselines {
        local_only,
        centralized,
        epochs: manifest.training.epochs * manifest.rounds as usize,
    })
}

/// Trains `data` from `initial` as a federation whose only site is `site` (its index in the
/// manifest, for its seed stream) would: `manifest.rounds` rounds of the manifest's local
/// training, each from the model the last one gave.
fn as_one_site(
    fed: &Federation,
    manifest: &Manifest,
    initial: &ParamSet,
    data: &Dataset,
    site: u32,
) -> Result<ParamSet, trainer::TrainError> {
    let mut params = initial.clone();
    for round in 1..=manifest.rounds {
        let seed = seeds::derive(manifest.seed, round, Stream::Training { site });
        params = trainer::train(&fed.spec, &params, data, &manifest.training, seed)?.params;
    }
    Ok(params)
}
