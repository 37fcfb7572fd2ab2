//! What the fuzz targets share: turning fuzz input into tampered protocol messages, and a small
//! federation under secure aggregation whose honest parts are entente's own code.

use std::sync::Arc;

use entente_core::engine::{
    Envelope, LocalOptimizer, LocalTraining, SecureAggregation, Site, SiteError, TrainTask,
};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::{SiteUpdate, UpdatePolicy};
use entente_privacy::secagg::{InProcessPki, MaskPrg, Modulus, Security, auth};
use entente_privacy::secure_round::{SecAggCoordinator, SecAggSettings, SecureSite};

/// Reads the fuzz input front to back; past its end every read gives zeros.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps fuzz input.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// The next byte.
    pub fn byte(&mut self) -> u8 {
        let (first, rest) = self
            .data
            .split_first()
            .map_or((0, &[][..]), |(f, r)| (*f, r));
        self.data = rest;
        first
    }

    /// The next two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` next bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// What the input says to do with one honest message: send it, tamper with it, replace
    /// it, or send nothing.
    pub fn tamper(&mut self, honest: Vec<u8>) -> Option<Vec<u8>> {
        match self.byte() % 5 {
            0 => Some(honest),
            1 => {
                let mut message = honest;
                for _ in 0..self.byte() % 8 {
                    let (at, flip) = (usize::from(self.u16()), self.byte());
                    if !message.is_empty() {
                        let at = at % message.len();
                        message[at] ^= flip;
                    }
                }
                Some(message)
            }
            2 => {
                let n = usize::from(self.u16());
                Some(self.bytes(n).to_vec())
            }
            3 => None,
            _ => {
                let mut message = honest;
                message.truncate(usize::from(self.u16()));
                Some(message)
            }
        }
    }
}

/// The global model of the coordinator-side targets: one layer of 4 inputs and 3 outputs.
pub fn small_model() -> ParamSet {
    ParamSet::from_tensors([
        ("layers.0.weight".to_string(), vec![3, 4], vec![0.1; 12]),
        ("layers.0.bias".to_string(), vec![3], vec![0.0; 3]),
    ])
    .expect("a two-tensor model is well formed")
}

/// Sites of the federation; the last is the one whose messages the fuzzer controls.
pub const SITES: [&str; 3] = ["site-a", "site-b", "site-c"];
/// Values of the model (and of every update).
pub const DIM: usize = 6;

/// A site that trains by adding a fixed pattern to the global model.
struct PatternSite {
    name: String,
    shift: f32,
}

impl Site for PatternSite {
    fn name(&self) -> &str {
        &self.name
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let mut params = (*task.global).clone();
        params
            .as_flat_mut()
            .iter_mut()
            .for_each(|v| *v += self.shift);
        Ok(SiteUpdate {
            site: self.name.clone(),
            num_examples: 10,
            params,
            train_loss: 0.5,
        })
    }

    fn evaluate(&self, _params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        Err(SiteError::refused(
            self.name.clone(),
            "evaluation is not fuzzed",
        ))
    }
}

/// Three sites under secure aggregation (entente's own site and coordinator halves), each
/// trained on round 1, ready for the coordinator to begin.
pub struct SecureFederation {
    /// The coordinator half.
    pub coordinator: SecAggCoordinator,
    /// Every site, in [`SITES`] order.
    pub sites: Vec<SecureSite>,
}

impl SecureFederation {
    /// The federation, its sites' updates trained and kept for masking.
    pub fn trained() -> Self {
        let settings = SecAggSettings {
            threshold: 0.6,
            neighbours: None,
            clip: 1.0,
            max_examples: 1000,
            modulus: Modulus::Pow32,
            seed: 7,
            num_sites: SITES.len(),
            min_sites: 3,
            distributed_dp: None,
            prg: MaskPrg::default(),
            // Active security (the manifest's default): the targets also decode signed keys,
            // survivor lists and their signatures.
            security: Security::Active,
            context: auth::context_of(b"fuzz federation"),
        };
        let pki = InProcessPki::new(&[7; 32], &[0, 1, 2])
            .expect("in-process identities are drawn from a seed");
        let names: Vec<String> = SITES.iter().map(|s| s.to_string()).collect();
        let global = Arc::new(
            ParamSet::from_tensors([("w".to_string(), vec![DIM], vec![0.0; DIM])])
                .expect("a one-tensor model is well formed"),
        );
        let task = TrainTask {
            round: 1,
            global,
            training: LocalTraining {
                epochs: 1,
                batch_size: 1,
                learning_rate: 0.1,
                optimizer: LocalOptimizer::Sgd { momentum: 0.0 },
                fedprox_mu: 0.0,
                dp_sgd: None,
            },
            seed: 1,
            turn: None,
        };
        let sites = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let inner = Arc::new(PatternSite {
                    name: name.clone(),
                    shift: 0.1 * (i as f32 + 1.0),
                });
                let site = SecureSite::new(
                    inner,
                    i as u32,
                    UpdatePolicy::default(),
                    settings.clone(),
                    true,
                )
                .with_identity(pki.identity(i as u32).expect("every site has an identity"));
                site.train(&task).expect("an honest site trains");
                site
            })
            .collect();
        Self {
            coordinator: SecAggCoordinator::new(settings, &names),
            sites,
        }
    }

    /// Runs round 1's secure aggregation to the end. `deliver` sees every message with its
    /// recipient's index and returns what reaches the site (`None`: nothing); `reply` does
    /// the same for what the site answers. Whatever arrives, the coordinator must not panic.
    pub fn run(
        mut self,
        mut deliver: impl FnMut(usize, Vec<u8>) -> Option<Vec<u8>>,
        mut reply: impl FnMut(usize, Vec<u8>) -> Option<Vec<u8>>,
    ) {
        let names: Vec<String> = SITES.iter().map(|s| s.to_string()).collect();
        if self.coordinator.begin(1, &names, DIM).is_err() {
            return;
        }
        while let Ok(Some(messages)) = self.coordinator.next_messages() {
            for (name, envelope) in messages {
                let Some(index) = SITES.iter().position(|s| *s == name) else {
                    continue;
                };
                let Some(message) = deliver(index, envelope.0) else {
                    continue;
                };
                let Ok(answer) = self.sites[index].secure_exchange(1, &Envelope(message), None)
                else {
                    continue;
                };
                if let Some(answer) = reply(index, answer.0) {
                    // A refused message leaves the site out; the round goes on without it.
                    let _ = self.coordinator.receive(&name, Envelope(answer));
                }
            }
        }
        let _ = self.coordinator.finish();
    }
}
