//! A site that trains on data it holds in memory: the simulation's participant, and the
//! training half of a real node.

use std::sync::Arc;

use entente_core::engine::{Site, SiteError, TrainTask};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::SiteUpdate;

use crate::data::Dataset;
use crate::model::ModelSpec;
use crate::trainer::{self, TrainError};

/// A site with its own training data and test split.
#[derive(Debug, Clone)]
pub struct LocalSite {
    name: String,
    spec: ModelSpec,
    train: Dataset,
    test: Dataset,
}

impl LocalSite {
    /// A site called `name` training `spec` on `train` and evaluating on `test`.
    pub fn new(name: impl Into<String>, spec: ModelSpec, train: Dataset, test: Dataset) -> Self {
        Self {
            name: name.into(),
            spec,
            train,
            test,
        }
    }

    /// The model it trains.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The site's training data.
    pub fn train_data(&self) -> &Dataset {
        &self.train
    }

    /// The site's own test split.
    pub fn test_data(&self) -> &Dataset {
        &self.test
    }

    /// Training or evaluation failed inside the site.
    fn fail(&self, what: &str, e: TrainError) -> SiteError {
        SiteError::internal(self.name.clone(), what).with_source(e)
    }
}

impl Site for LocalSite {
    fn name(&self) -> &str {
        &self.name
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let outcome = trainer::train(
            &self.spec,
            &task.global,
            &self.train,
            &task.training,
            task.seed,
        )
        .map_err(|e| self.fail("local training failed", e))?;
        // Under DP-SGD the loss is a function of the records that the accountant does not
        // cover, so it does not leave the site.
        let train_loss = if task.training.dp_sgd.is_some() {
            0.0
        } else {
            outcome.mean_loss
        };
        Ok(SiteUpdate {
            site: self.name.clone(),
            num_examples: outcome.num_examples as u64,
            params: outcome.params,
            train_loss,
        })
    }

    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        trainer::evaluate(&self.spec, params, &self.test, trainer::EVAL_BATCH)
            .map_err(|e| self.fail("evaluation failed", e))
    }
}
