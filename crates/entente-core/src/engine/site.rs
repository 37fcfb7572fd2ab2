//! The participant interface the round engine drives. In simulation a site lives in the same
//! process; over the network it is a proxy for a remote node. The engine cannot tell.

use std::sync::Arc;

pub use crate::engine::error::SiteError;
use crate::engine::secure::Envelope;
use crate::engine::task::TrainTask;
use crate::engine::turn::Turn;
use crate::metrics::EvalMetrics;
use crate::params::ParamSet;
use crate::update::SiteUpdate;

/// One institution taking part in the federation.
pub trait Site: Send + Sync {
    /// The site's name as the manifest lists it.
    fn name(&self) -> &str;
    /// Trains on local data from the task's global model and returns the local model.
    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError>;
    /// Evaluates `params` on the site's own test split (federated evaluation). Shared, so that
    /// a transport can send one model to every site without copying it per site.
    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError>;
    /// Answers one phase of secure aggregation for `round` (see [`crate::engine::secure`]).
    /// `turn` is the reply's place in the order the engine receives a phase's replies in: a
    /// site reached over a network takes its reply in only in its turn (a masked input is as
    /// large as the model), as with a training task's [`TrainTask::turn`]. Sites that do not
    /// take part in secure aggregation refuse.
    fn secure_exchange(
        &self,
        round: u32,
        message: &Envelope,
        turn: Option<&Turn>,
    ) -> Result<Envelope, SiteError> {
        let _ = (round, message, turn);
        Err(SiteError::refused(
            self.name(),
            "this site does not take part in secure aggregation",
        ))
    }
}
