//! The engine's view of secure aggregation: a multi-phase exchange of opaque messages between
//! the coordinator half of a protocol and the sites, after which the coordinator learns only
//! the weighted mean of the surviving sites' updates. The protocol itself (for example
//! Bonawitz et al.'s SecAgg in `entente-privacy`) decides what the messages mean; the engine
//! only routes them, so the same code runs in simulation and over a network.

use crate::engine::error::Failure;

/// One protocol message, serialized by the protocol; opaque to the engine and to transports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope(pub Vec<u8>);

/// Secure aggregation stopped, or a site's message was rejected; no partial result is
/// released. Its kind says why: for example [`MalformedReply`](crate::engine::ErrorKind::MalformedReply) for a site's
/// message the protocol could not use, [`Internal`](crate::engine::ErrorKind::Internal) for the protocol's own state.
pub type SecureError = Failure;

/// The result of a secure-aggregation round.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureResult {
    /// Example-weighted mean of the surviving sites' updates (deltas from the global model).
    pub mean_delta: Vec<f32>,
    /// Sites whose input is in the mean.
    pub included: Vec<String>,
    /// Total number of examples behind the mean.
    pub total_examples: u64,
}

/// The coordinator half of a secure-aggregation protocol, as the round engine drives it.
pub trait SecureAggregation: Send {
    /// Short name for records, for example `secagg` or `secagg+`.
    fn name(&self) -> &'static str;
    /// Starts a round for the sites that finished training, over `num_values` parameters.
    fn begin(&mut self, round: u32, sites: &[String], num_values: usize)
    -> Result<(), SecureError>;
    /// The next phase's message for each site still taking part; `None` once the result is
    /// ready. A site that does not answer a phase has dropped out.
    fn next_messages(&mut self) -> Result<Option<Vec<(String, Envelope)>>, SecureError>;
    /// A site's answer in the current phase.
    fn receive(&mut self, site: &str, reply: Envelope) -> Result<(), SecureError>;
    /// The unmasked weighted mean, after the last phase.
    fn finish(&mut self) -> Result<SecureResult, SecureError>;
}
