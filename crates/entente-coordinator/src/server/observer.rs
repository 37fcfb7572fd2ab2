//! [`StoreObserver`]: the round engine's observer that makes every round durable and audited.

use entente_core::aggregators::Aggregator;
use entente_core::engine::{Failure, RoundObserver, RoundRecord};
use entente_core::manifest::{Manifest, PrivacySpec};
use entente_core::params::ParamSet;
use entente_privacy::budget::RoundPrice;
use entente_privacy::policy::SamplingRule;
use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;

use crate::audit::{AuditEvent, kind};
use crate::store::{FinishedRound, Participant, Store};

/// Records every round in the store: started, then finished with its checkpoint, in one
/// transaction, so a round is either wholly recorded or repeated after a restart. Runs on the
/// engine's (blocking) threads and reaches the store through the runtime's `handle`; each
/// finished round goes to `finished`, for the report.
pub(crate) struct StoreObserver {
    store: Store,
    run: i64,
    handle: Handle,
    /// The manifest's privacy terms: what each site's ledger is charged per round.
    privacy: Option<PrivacySpec>,
    /// Local batch size and epochs (the DP-SGD steps of a round).
    batch_size: usize,
    epochs: usize,
    /// Where each committed round's record goes.
    finished: UnboundedSender<RoundRecord>,
}

impl StoreObserver {
    /// An observer for `run` of `manifest` in `store`.
    pub(crate) fn new(
        store: Store,
        run: i64,
        manifest: &Manifest,
        finished: UnboundedSender<RoundRecord>,
    ) -> Self {
        Self {
            store,
            run,
            handle: Handle::current(),
            privacy: manifest.privacy.clone(),
            batch_size: manifest.training.batch_size,
            epochs: manifest.training.epochs,
            finished,
        }
    }

    /// Records in the audit log what each accepted site charged its ledger this round: the
    /// sampled Gaussian mechanism's rate, noise multiplier and steps, from which anyone can
    /// recompute the epsilon (the sites' own ledgers hold the running totals).
    fn audit_privacy(&self, record: &RoundRecord) {
        let Some(p) = &self.privacy else {
            return;
        };
        for (site, &examples) in record.accepted.iter().zip(&record.accepted_examples) {
            // A node cannot verify the coordinator's sampling, so it charges as the
            // unverified rule says.
            let (q, steps) = RoundPrice::of(p, examples as usize, SamplingRule::Unverified)
                .cost(self.batch_size, self.epochs);
            let event = AuditEvent {
                kind: kind::PRIVACY_CHARGED.into(),
                run: Some(self.run),
                round: Some(record.round),
                site: Some(site.clone()),
                detail: serde_json::json!({
                    "mechanism": p.mechanism.as_str(),
                    "sampling_rate": q,
                    "noise_multiplier": p.noise_multiplier,
                    "steps": steps,
                    "delta": p.delta,
                })
                .to_string(),
            };
            if let Err(e) = self.handle.block_on(self.store.audit(event)) {
                tracing::error!(error = %e, "could not record the privacy charge");
            }
        }
    }
}

impl RoundObserver for StoreObserver {
    fn round_started(&mut self, round: u32, sites: &[String]) {
        if let Err(e) = self
            .handle
            .block_on(self.store.round_started(self.run, round, sites))
        {
            tracing::error!(error = %e, round, "could not record the round's start");
        }
    }

    fn commit(
        &mut self,
        record: &RoundRecord,
        global: &ParamSet,
        aggregator: &dyn Aggregator,
    ) -> Result<(), Failure> {
        let checkpoint = global
            .to_safetensors()
            .map_err(|e| Failure::internal("could not encode the checkpoint").with_source(e))?;
        let state = aggregator
            .state()
            .as_ref()
            .map(ParamSet::to_safetensors)
            .transpose()
            .map_err(|e| {
                Failure::internal("could not encode the aggregator's state").with_source(e)
            })?;
        let mut participants: Vec<Participant> = record
            .accepted
            .iter()
            .enumerate()
            .map(|(i, site)| Participant {
                site: site.clone(),
                accepted: true,
                reason: None,
                kind: None,
                examples: record.accepted_examples.get(i).copied().unwrap_or(0),
                loss: record.accepted_losses.get(i).copied().unwrap_or(f64::NAN),
            })
            .collect();
        participants.extend(record.excluded.iter().map(|e| Participant {
            site: e.site.clone(),
            accepted: false,
            reason: Some(e.reason.clone()),
            kind: Some(e.kind),
            examples: 0,
            loss: f64::NAN,
        }));
        let metrics = serde_json::to_string(record)
            .map_err(|e| Failure::internal("could not encode the round record").with_source(e))?;
        self.handle
            .block_on(self.store.round_finished(
                self.run,
                &FinishedRound {
                    round: record.round,
                    participants: &participants,
                    metrics_json: &metrics,
                    checkpoint: &checkpoint,
                    optimizer_state: state.as_deref(),
                },
            ))
            .map(|_| ())
            .map_err(|e| Failure::internal("the store did not take the round").with_source(e))
    }

    fn round_finished(&mut self, record: &RoundRecord) {
        self.audit_privacy(record);
        // The receiver goes only when the run is over; then nobody waits for the record.
        let _ = self.finished.send(record.clone());
    }
}
