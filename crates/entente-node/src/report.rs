//! [`NodeReport`]: what a running node tells its operator. The library prints nothing; `entente
//! join` prints a line for each event, a test can collect what it needs.

/// Hooks for a node's progress, called in this order: [`NodeReport::ready`], then
/// [`NodeReport::connected`] for every (re)registration, [`NodeReport::trained`],
/// [`NodeReport::evaluated`] or [`NodeReport::refused`] per task answered, and
/// [`NodeReport::finished`]. Every method has a no-op default.
pub trait NodeReport: Send + Sync {
    /// The node is set up: it is `site`, holding `examples` training examples (`None` when
    /// the site's own trainer holds them).
    fn ready(&self, _site: &str, _examples: Option<usize>) {}
    /// The coordinator at `coordinator` admitted the node to `federation`.
    fn connected(&self, _coordinator: &str, _federation: &str) {}
    /// The node trained round `round` on `examples` examples (mean loss `loss`) and sent its
    /// update.
    fn trained(&self, _round: u32, _examples: u64, _loss: f64) {}
    /// The node evaluated round `round`'s model on its own test split (`accuracy` in [0, 1]).
    fn evaluated(&self, _round: u32, _accuracy: f64) {}
    /// The node refused a task of round `round` and told the coordinator why.
    fn refused(&self, _round: u32, _reason: &str) {}
    /// The coordinator said the run is finished after `rounds` rounds.
    fn finished(&self, _rounds: u32) {}
}

/// A [`NodeReport`] that says nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl NodeReport for Quiet {}
