//! [`CoordinatorError`]: why a coordinator run did not finish.

use std::path::PathBuf;

use entente_core::aggregators::AggregateError;
use entente_core::engine::EngineError;
use entente_core::params::ParamError;
use entente_proto::tls::TlsError;
use entente_proto::tls::signatures::SignatureError;

use crate::store::StoreError;

/// Why [`super::run`] ended without finishing the run. Each variant keeps its cause as
/// [`std::error::Error::source`], so printing the chain (`{:#}` with anyhow) gives the whole
/// story once. Whatever the error, the rounds completed before it stay committed in the store,
/// and the same configuration resumes after the last one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoordinatorError {
    /// The configuration cannot work (a zero heartbeat, for example).
    #[error("invalid coordinator configuration: {reason}")]
    Config {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The store could not be opened.
    #[error("could not open the store {url}")]
    OpenStore {
        /// The store's URL, password redacted.
        url: String,
        /// What the store reported.
        #[source]
        source: StoreError,
    },
    /// The store went away during the run: its SQLite file deleted or replaced, or the
    /// connection that holds its PostgreSQL lock lost. Nothing more was written to it.
    #[error("the run stopped because its store was lost")]
    StoreLost {
        /// What happened to the store.
        #[source]
        source: StoreError,
    },
    /// A store operation failed.
    #[error("could not {what}")]
    Store {
        /// What the coordinator was doing.
        what: &'static str,
        /// What the store reported.
        #[source]
        source: StoreError,
    },
    /// A checkpoint in the store could not be read as a parameter set.
    #[error("the stored {what} is not valid")]
    Checkpoint {
        /// Which checkpoint: the model or the server optimizer's state.
        what: &'static str,
        /// Why it could not be read.
        #[source]
        source: ParamError,
    },
    /// The manifest's strategy has a parameter out of range.
    #[error("the manifest's [strategy] cannot be built")]
    Strategy {
        /// Which parameter, and its range.
        #[source]
        source: AggregateError,
    },
    /// The server optimizer's stored state does not fit the manifest's aggregation rule.
    #[error("could not restore the server optimizer's state from the store")]
    Restore {
        /// What the aggregation rule reported.
        #[source]
        source: AggregateError,
    },
    /// The operating system gave no randomness for DP-FedAvg's noise.
    #[error("client-level DP needs noise: {reason}")]
    Noise {
        /// What went wrong.
        reason: String,
    },
    /// The coordinator's TLS identity (CA, certificate, key) could not be loaded.
    #[error("could not load the coordinator's TLS identity")]
    Tls {
        /// What failed.
        #[source]
        source: TlsError,
    },
    /// The federation's revocation list could not be taken, or it revokes the coordinator's
    /// own certificate.
    #[error("refusing to start with this revocation list")]
    Revocations {
        /// What is wrong.
        #[source]
        source: TlsError,
    },
    /// The manifest's signatures do not allow the run: a signature the manifest requires
    /// (`[agreement] require_signatures`) is missing or invalid, or the signature file is
    /// malformed. Nothing was written to the store.
    #[error("refusing to start the run")]
    Signatures {
        /// Whose signature is missing, or what is wrong with the file.
        #[source]
        source: SignatureError,
    },
    /// The listener given to [`super::run`] is not usable.
    #[error("the listener is not usable")]
    Listener {
        /// What the socket reported.
        #[source]
        source: std::io::Error,
    },
    /// The manifest's `[secure_aggregation]` settings cannot work for this model.
    #[error("[secure_aggregation]: {reason}")]
    SecureAggregation {
        /// Why, and what to change.
        reason: String,
    },
    /// A thread of the coordinator (the round engine's, or the one writing the model)
    /// panicked.
    #[error("a coordinator thread stopped unexpectedly")]
    EngineThread {
        /// The panic, as tokio reports it.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A round could not complete (quorum, secure aggregation, evaluation, recording).
    #[error(
        "the run stopped; completed rounds are in the store, and a coordinator with the same \
         manifest and store resumes after the last one"
    )]
    Engine {
        /// Why the round failed.
        #[source]
        source: EngineError,
    },
    /// Every round completed but the final model could not be written.
    #[error("could not write {}", path.display())]
    WriteModel {
        /// Where it was to go.
        path: PathBuf,
        /// What failed.
        #[source]
        source: ParamError,
    },
    /// The shutdown future resolved before the run finished.
    #[error(
        "shut down before the run finished; completed rounds are in the store, and a \
         coordinator with the same manifest and store resumes after the last one"
    )]
    ShutDown,
}
