//! SecAgg plugged into entente's round engine: [`SecAggCoordinator`] drives the coordinator
//! half through the engine's [`SecureAggregation`] phases, and [`SecureSite`] wraps any site so
//! that it checks, clips and masks its own update and never hands it over in the clear.
//!
//! Messages travel as [`Envelope`]s holding bincode-encoded [`ToSite`] / [`FromSite`] values,
//! so the same exchange works in one process and over a network transport.
//!
//! With [`SecAggSettings::distributed_dp`] (`privacy.mechanism = "distributed"`) each site also
//! clips its update to an L2 norm and adds its share of the Gaussian noise before masking it,
//! and every site counts once (weight 1) in the mean: see [`crate::dp::distributed`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use entente_core::digest::sha256_hex;
use entente_core::engine::{
    Envelope, ErrorKind, SecureAggregation, SecureError, SecureResult, Site, SiteError, TrainTask,
    Turn,
};
use entente_core::manifest::{PrivacyMechanism, SecAggSecurity};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::seeds::{self, Stream};
use entente_core::update::{SiteUpdate, UpdatePolicy, validate};
use rand::RngCore;
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use crate::dp::DistributedDp;
use crate::dp::mechanisms::{noise_rng, os_noise_rng};
use crate::secagg::{
    AdvertiseKeys, ConsistencyRequest, ConsistencyResponse, EncodingSettings, GraphSpec, Identity,
    MaskPrg, MaskedInput, Modulus, PeerKeys, RoutedShares, SecAggClient, SecAggConfig,
    SecAggServer, Security, ShareKeys, SiteId, SurvivorRequests, UnmaskRequest, UnmaskResponse,
};

/// Secure-aggregation settings every site agreed to in the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct SecAggSettings {
    /// Share of a site's holders (itself and its neighbours) needed to rebuild its secrets;
    /// above one half.
    pub threshold: f64,
    /// SecAgg+ neighbourhood size (even); `None` pairs every site with every other (SecAgg).
    pub neighbours: Option<usize>,
    /// Every coordinate of an update (local model minus global model) is clipped to
    /// `[-clip, clip]` before masking.
    pub clip: f32,
    /// Largest number of examples a site may declare (its weight).
    pub max_examples: u64,
    /// Ring of the fixed-point encoding.
    pub modulus: Modulus,
    /// Federation seed (ring order of SecAgg+ graphs; simulation randomness).
    pub seed: u64,
    /// Sites in the manifest: ids are their positions, and no other id may take part.
    pub num_sites: usize,
    /// The manifest's quorum: fewer survivors abort the round before anything is released,
    /// and a site refuses a round that selects fewer sites than this (or than 3).
    pub min_sites: usize,
    /// Distributed DP (`privacy.mechanism = "distributed"`): each site clips its update to an
    /// L2 norm and adds its share of the noise before masking, and counts with weight 1.
    pub distributed_dp: Option<DistributedDp>,
    /// Generator of the masks (`secure_aggregation.prg`); part of every round's settings, which
    /// each site compares with its own manifest's.
    pub prg: MaskPrg,
    /// Honest-but-curious or active security (`secure_aggregation.security`).
    pub security: Security,
    /// The federation and run every signature is bound to under active security
    /// ([`crate::secagg::auth::context_of`] of the manifest's agreement digest).
    pub context: [u8; 32],
}

impl SecAggSettings {
    /// The settings of the manifest's `[secure_aggregation]` table, if it has one.
    pub fn from_manifest(manifest: &entente_core::manifest::Manifest) -> Option<Self> {
        let sa = manifest.secure_aggregation.as_ref()?;
        Some(Self {
            threshold: sa.threshold,
            neighbours: sa.neighbours,
            clip: sa.clip as f32,
            max_examples: sa.max_examples,
            modulus: if sa.bits == 64 {
                Modulus::Pow64
            } else {
                Modulus::Pow32
            },
            prg: sa.prg.into(),
            security: match sa.security {
                SecAggSecurity::Active => Security::Active,
                SecAggSecurity::HonestButCurious => Security::HonestButCurious,
            },
            context: crate::secagg::auth::context_of(manifest.agreement_digest().as_bytes()),
            seed: manifest.seed,
            num_sites: manifest.sites.len(),
            min_sites: manifest.selection.min_sites,
            distributed_dp: manifest
                .privacy
                .as_ref()
                .filter(|p| p.mechanism == PrivacyMechanism::Distributed)
                // The manifest checked the values; `check` and every site check them again.
                .map(|p| {
                    DistributedDp::new_unchecked(
                        p.clip,
                        p.noise_multiplier,
                        manifest.selection.min_sites,
                    )
                }),
        })
    }

    /// Checks, before any round, that the settings work for every site of the manifest taking
    /// part over `dimension` values (threshold, graph, fixed-point range without overflow).
    pub fn check(&self, dimension: usize) -> Result<(), String> {
        if let Some(dp) = &self.distributed_dp {
            self.check_dp(dp)?;
        }
        let all: Vec<SiteId> = (0..self.num_sites as SiteId).collect();
        self.config(1, all, dimension)
            .validate()
            .map(|_| ())
            .map_err(|e| format!("secure aggregation cannot run with these settings: {e}"))
    }

    /// Distributed DP needs valid settings, noise for at most `min_sites` sites (the fewest
    /// whose sum is ever released), and a fixed-point range that holds the noisy coordinates.
    fn check_dp(&self, dp: &DistributedDp) -> Result<(), String> {
        dp.check()
            .map_err(|e| format!("distributed DP cannot run with these settings: {e}"))?;
        if dp.expected_sites() > self.min_sites.max(1) {
            return Err(format!(
                "distributed DP splits the noise over {} sites, but a round may release the sum \
                 of only {} (selection.min_sites)",
                dp.expected_sites(),
                self.min_sites
            ));
        }
        let bound = dp.coordinate_bound();
        if f64::from(self.clip) < bound {
            return Err(format!(
                "secure_aggregation.clip is {} but a noisy update's coordinates reach {bound:.4} \
                 under distributed DP; raise it to at least that",
                self.clip
            ));
        }
        Ok(())
    }

    /// The round's protocol settings for `sites` (ids) over `dimension` values.
    fn config(&self, round: u32, sites: Vec<SiteId>, dimension: usize) -> SecAggConfig {
        let n = sites.len();
        let graph = match self.neighbours {
            Some(k) if k + 1 < n => GraphSpec::Harary {
                degree: k,
                seed: seeds::derive(self.seed, round, Stream::MaskGraph),
            },
            _ => GraphSpec::Complete,
        };
        let holders = match graph {
            GraphSpec::Harary { degree, .. } => degree + 1,
            GraphSpec::Complete => n,
        };
        let threshold = ((self.threshold * holders as f64).ceil() as usize)
            .max(holders / 2 + 1)
            .min(holders);
        let mut config = SecAggConfig::new(
            u64::from(round),
            sites,
            threshold,
            graph,
            dimension,
            self.encoding(n),
        );
        config.min_survivors = threshold.max(self.min_sites).min(n);
        let config = config.with_prg(self.prg);
        match self.security {
            Security::Active => config.with_active_security(self.context),
            Security::HonestButCurious => config,
        }
    }

    /// Largest masked input a site can send over `dimension` values, in bytes: one word of the
    /// ring per value and one for the weight, and a generous allowance for the framing. A
    /// transport that streams replies bounds what it takes in by this.
    pub fn max_masked_bytes(&self, dimension: usize) -> u64 {
        let word: u64 = match self.modulus {
            Modulus::Pow32 => 4,
            Modulus::Pow64 => 8,
        };
        word.saturating_mul(dimension as u64 + 1)
            .saturating_add(64 * 1024)
    }

    /// Fixed-point encoding with the largest scale that cannot overflow for `n` sites.
    /// Under distributed DP every weight is 1, which leaves a much finer grid.
    pub fn encoding(&self, n: usize) -> EncodingSettings {
        let bits = match self.modulus {
            Modulus::Pow32 => 31,
            Modulus::Pow64 => 63,
        };
        let max_weight = self.max_weight();
        let headroom = (n.max(1) as f64) * (max_weight as f64) * f64::from(self.clip) + n as f64;
        EncodingSettings {
            clip: self.clip,
            scale: (2f64.powi(bits) - 1.0) / headroom / 2.0,
            max_weight,
            modulus: self.modulus,
        }
    }

    /// Largest weight a site may mask: its example count, or 1 under distributed DP.
    fn max_weight(&self) -> u64 {
        if self.distributed_dp.is_some() {
            1
        } else {
            self.max_examples
        }
    }
}

/// What the coordinator sends a site in each phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToSite {
    /// Phase 0: the round's settings; answer with [`FromSite::Keys`].
    Start(SecAggConfig),
    /// Phase 1: the neighbours' public keys; answer with [`FromSite::Shares`].
    PeerKeys(PeerKeys),
    /// Phase 2: shares from the neighbours; answer with [`FromSite::Masked`].
    Shares(RoutedShares),
    /// Consistency check (active security): who survived, to sign; answer with
    /// [`FromSite::Consistency`].
    Consistency(ConsistencyRequest),
    /// Phase 3: who survived; answer with [`FromSite::Unmask`].
    Unmask(UnmaskRequest),
}

/// What a site answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromSite {
    /// Public keys.
    Keys(AdvertiseKeys),
    /// Encrypted shares for the neighbours.
    Shares(ShareKeys),
    /// The masked update.
    Masked(MaskedInput),
    /// The site's signature over the survivor list (active security).
    Consistency(ConsistencyResponse),
    /// Shares that let the coordinator remove the masks.
    Unmask(UnmaskResponse),
}

/// Integers at their fixed width: a masked coordinate is uniformly random, so a variable-length
/// encoding would make a `u32` five bytes and a `u64` nine.
fn wire_config() -> impl bincode::config::Config {
    bincode::config::standard().with_fixed_int_encoding()
}

fn encode<T: Serialize>(value: &T) -> Result<Envelope, String> {
    bincode::serde::encode_to_vec(value, wire_config())
        .map(Envelope)
        .map_err(|e| format!("could not encode a secure-aggregation message: {e}"))
}

fn decode<T: for<'de> Deserialize<'de>>(envelope: &Envelope) -> Result<T, String> {
    bincode::serde::decode_from_slice(&envelope.0, wire_config())
        .map(|(v, _)| v)
        .map_err(|e| format!("malformed secure-aggregation message: {e}"))
}

/// Where the coordinator is in a round.
enum Stage {
    Idle,
    Advertise,
    Share,
    Mask,
    Unmask,
    Consistency,
    Done,
}

/// The coordinator half of SecAgg as the engine drives it.
pub struct SecAggCoordinator {
    settings: SecAggSettings,
    ids: HashMap<String, SiteId>,
    names: HashMap<SiteId, String>,
    server: Option<SecAggServer>,
    config: Option<SecAggConfig>,
    stage: Stage,
}

impl SecAggCoordinator {
    /// A coordinator for the federation's sites (their manifest order fixes their ids).
    pub fn new(settings: SecAggSettings, sites: &[String]) -> Self {
        let ids: HashMap<String, SiteId> = sites
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as SiteId))
            .collect();
        let names = ids.iter().map(|(s, &i)| (i, s.clone())).collect();
        Self {
            settings,
            ids,
            names,
            server: None,
            config: None,
            stage: Stage::Idle,
        }
    }

    fn server(&mut self) -> Result<&mut SecAggServer, SecureError> {
        self.server
            .as_mut()
            .ok_or_else(|| SecureError::internal("no round in progress"))
    }

    fn name(&self, id: SiteId) -> Result<String, SecureError> {
        self.names
            .get(&id)
            .cloned()
            .ok_or_else(|| SecureError::internal(format!("unknown site id {id}")))
    }

    fn addressed<T: Serialize>(
        &self,
        messages: Vec<T>,
        recipient: impl Fn(&T) -> SiteId,
        wrap: impl Fn(T) -> ToSite,
    ) -> Result<Vec<(String, Envelope)>, SecureError> {
        messages
            .into_iter()
            .map(|m| {
                let name = self.name(recipient(&m))?;
                Ok((name, encode(&wrap(m)).map_err(SecureError::internal)?))
            })
            .collect()
    }
}

/// The protocol's own state failed (a phase could not close, for example below threshold).
fn fail(e: impl std::fmt::Display) -> SecureError {
    SecureError::internal(e.to_string())
}

/// A site's message that the protocol could not use.
fn malformed(e: impl std::fmt::Display) -> SecureError {
    SecureError::new(ErrorKind::MalformedReply, e.to_string())
}

impl SecureAggregation for SecAggCoordinator {
    fn name(&self) -> &'static str {
        if self.settings.neighbours.is_some() {
            "secagg+"
        } else {
            "secagg"
        }
    }

    fn begin(
        &mut self,
        round: u32,
        sites: &[String],
        num_values: usize,
    ) -> Result<(), SecureError> {
        let ids = sites
            .iter()
            .map(|s| {
                self.ids.get(s).copied().ok_or_else(|| {
                    SecureError::internal(format!("site `{s}` is not in the manifest"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = self.settings.config(round, ids, num_values);
        self.server = Some(SecAggServer::new(config.clone()).map_err(fail)?);
        self.config = Some(config);
        self.stage = Stage::Advertise;
        Ok(())
    }

    fn next_messages(&mut self) -> Result<Option<Vec<(String, Envelope)>>, SecureError> {
        let out = match self.stage {
            Stage::Idle | Stage::Done => return Ok(None),
            Stage::Advertise => {
                let config = self
                    .config
                    .clone()
                    .ok_or_else(|| SecureError::internal("no round in progress"))?;
                self.stage = Stage::Share;
                let envelope =
                    encode(&ToSite::Start(config.clone())).map_err(SecureError::internal)?;
                config
                    .sites
                    .iter()
                    .map(|&id| Ok((self.name(id)?, envelope.clone())))
                    .collect::<Result<Vec<_>, SecureError>>()?
            }
            Stage::Share => {
                let msgs = self.server()?.close_advertise().map_err(fail)?;
                self.stage = Stage::Mask;
                self.addressed(msgs, |m| m.recipient, ToSite::PeerKeys)?
            }
            Stage::Mask => {
                let msgs = self.server()?.close_shares().map_err(fail)?;
                self.stage = Stage::Unmask;
                self.addressed(msgs, |m| m.recipient, ToSite::Shares)?
            }
            Stage::Unmask => match self.server()?.close_masked().map_err(fail)? {
                SurvivorRequests::Unmask(msgs) => {
                    self.stage = Stage::Done;
                    self.addressed(msgs, |m| m.recipient, ToSite::Unmask)?
                }
                SurvivorRequests::Consistency(msgs) => {
                    self.stage = Stage::Consistency;
                    self.addressed(msgs, |m| m.recipient, ToSite::Consistency)?
                }
            },
            Stage::Consistency => {
                let msgs = self.server()?.close_consistency().map_err(fail)?;
                self.stage = Stage::Done;
                self.addressed(msgs, |m| m.recipient, ToSite::Unmask)?
            }
        };
        Ok(Some(out))
    }

    fn receive(&mut self, site: &str, reply: Envelope) -> Result<(), SecureError> {
        let expected = self
            .ids
            .get(site)
            .copied()
            .ok_or_else(|| malformed(format!("site `{site}` is not in the manifest")))?;
        let message: FromSite = decode(&reply).map_err(malformed)?;
        let sender = match &message {
            FromSite::Keys(m) => m.keys.site,
            FromSite::Shares(m) => m.sender,
            FromSite::Masked(m) => m.sender,
            FromSite::Consistency(m) => m.sender,
            FromSite::Unmask(m) => m.sender,
        };
        if sender != expected {
            return Err(malformed(format!(
                "site `{site}` sent a message signed as site id {sender}"
            )));
        }
        let server = self.server()?;
        match message {
            FromSite::Keys(m) => server.receive_advertise(&m),
            FromSite::Shares(m) => server.receive_shares(&m),
            FromSite::Masked(m) => server.receive_masked(&m),
            FromSite::Consistency(m) => server.receive_consistency(&m),
            FromSite::Unmask(m) => server.receive_unmask(&m),
        }
        .map_err(malformed)
    }

    fn finish(&mut self) -> Result<SecureResult, SecureError> {
        let aggregate = self.server()?.finish().map_err(fail)?;
        self.server = None;
        self.stage = Stage::Idle;
        let included = aggregate
            .contributors
            .iter()
            .map(|&id| self.name(id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SecureResult {
            mean_delta: aggregate.mean,
            included,
            total_examples: aggregate.total_weight,
        })
    }
}

/// A site's state between training and the end of secure aggregation.
#[derive(Default)]
struct Pending {
    delta: Option<(u32, Vec<f32>, u64)>,
    client: Option<SecAggClient>,
    /// The last message answered (round, SHA-256 of its bytes) and the reply.
    answered: Option<(u32, String, Envelope)>,
}

/// Wraps a site so that its update only ever leaves it masked.
///
/// After training, the site checks its own update against the rules every site agreed to
/// (shapes, finite values, the norm bound), clips it to the declared range and keeps it; the
/// coordinator receives only the example count and loss. The masked update goes out in the
/// protocol's third phase.
///
/// Under distributed DP the site first clips its update to the L2 norm `S` and adds its noise
/// share (from the operating system's randomness, or from the federation seed in simulation),
/// masks it with weight 1, and tells the coordinator neither its example count nor its loss
/// (it reports 1 example, the weight it counts with, and a loss of 0, as DP-SGD sites do).
pub struct SecureSite {
    inner: Arc<dyn Site>,
    id: SiteId,
    policy: UpdatePolicy,
    settings: SecAggSettings,
    deterministic: bool,
    identity: Option<Identity>,
    pending: Mutex<Pending>,
}

impl SecureSite {
    /// Wraps `inner`, whose id is its position in the manifest's site list. With
    /// `deterministic`, key material and distributed-DP noise derive from the federation seed
    /// (simulation only: real sites draw them from the operating system).
    pub fn new(
        inner: Arc<dyn Site>,
        id: SiteId,
        policy: UpdatePolicy,
        settings: SecAggSettings,
        deterministic: bool,
    ) -> Self {
        Self {
            inner,
            id,
            policy,
            settings,
            deterministic,
            identity: None,
            pending: Mutex::new(Pending::default()),
        }
    }

    /// The same site with the identity it signs its keys and survivor view with, and checks
    /// its peers' with (required under active security).
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    fn error(&self, kind: ErrorKind, reason: impl Into<String>) -> SiteError {
        SiteError::new(self.inner.name(), kind, reason)
    }

    fn key_seed(&self, round: u32) -> [u8; 32] {
        let mut seed = [0u8; 32];
        if self.deterministic {
            for (word, chunk) in (0..).zip(seed.chunks_mut(8)) {
                let word = seeds::derive(
                    self.settings.seed,
                    round,
                    Stream::KeySeed {
                        site: self.id,
                        word,
                    },
                );
                chunk.copy_from_slice(&word.to_le_bytes());
            }
        } else {
            rand::rng().fill_bytes(&mut seed);
        }
        seed
    }

    /// The generator of this site's noise share in `round`.
    fn noise_rng(&self, round: u32) -> Result<ChaCha20Rng, SiteError> {
        if self.deterministic {
            Ok(noise_rng(seeds::derive(
                self.settings.seed,
                round,
                Stream::NoiseShare { site: self.id },
            )))
        } else {
            os_noise_rng()
                .map_err(|e| self.error(ErrorKind::Internal, format!("distributed DP: {e}")))
        }
    }
}

impl Site for SecureSite {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let update = self.inner.train(task)?;
        let (site, examples, loss) = (update.site.clone(), update.num_examples, update.train_loss);
        if let Some(dp) = &self.settings.distributed_dp {
            self.settings
                .check_dp(dp)
                .map_err(|e| self.error(ErrorKind::Refused, e))?;
        } else if examples > self.settings.max_examples {
            return Err(self.error(
                ErrorKind::Refused,
                format!(
                    "holds {examples} examples, more than secure_aggregation.max_examples ({})",
                    self.settings.max_examples
                ),
            ));
        }
        let valid = validate(&task.global, update, &self.policy)
            .map_err(|e| self.error(ErrorKind::MalformedReply, e.to_string()))?;
        let clip = self.settings.clip;
        let mut delta: Vec<f32> = valid
            .params
            .as_flat()
            .iter()
            .zip(task.global.as_flat())
            .map(|(p, g)| p - g)
            .collect();
        let (weight, reported_loss) = match &self.settings.distributed_dp {
            Some(dp) => {
                dp.privatize(&mut delta, &mut self.noise_rng(task.round)?)
                    .map_err(|e| self.error(ErrorKind::Internal, format!("distributed DP: {e}")))?;
                (1, 0.0)
            }
            None => (examples, loss),
        };
        // Under distributed DP the range holds the noisy coordinates (`check_dp`), so this
        // clamp acts with negligible probability.
        delta.iter_mut().for_each(|d| *d = d.clamp(-clip, clip));
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| self.error(ErrorKind::Internal, "state lock poisoned"))?;
        *pending = Pending {
            delta: Some((task.round, delta, weight)),
            client: None,
            answered: None,
        };
        Ok(SiteUpdate {
            site,
            num_examples: weight,
            params: ParamSet::from_tensors(Vec::new())
                .map_err(|e| self.error(ErrorKind::Internal, e.to_string()))?,
            train_loss: reported_loss,
        })
    }

    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        self.inner.evaluate(params)
    }

    fn secure_exchange(
        &self,
        round: u32,
        message: &Envelope,
        _turn: Option<&Turn>,
    ) -> Result<Envelope, SiteError> {
        let digest = sha256_hex(&message.0);
        let message: ToSite = decode(message).map_err(|e| self.error(ErrorKind::Refused, e))?;
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| self.error(ErrorKind::Internal, "state lock poisoned"))?;
        // The same message again (its reply was lost on the way): the same reply, which
        // reveals nothing the first did not.
        if let Some((r, d, reply)) = &pending.answered
            && *r == round
            && *d == digest
        {
            return Ok(reply.clone());
        }
        let reply = match message {
            ToSite::Start(config) => {
                let floor = self.settings.min_sites.max(3);
                if config.sites.len() < floor
                    || config
                        .sites
                        .iter()
                        .any(|&id| id as usize >= self.settings.num_sites)
                    || !config.sites.contains(&self.id)
                {
                    return Err(self.error(ErrorKind::Refused, format!(
                        "refuses a secure-aggregation round over sites {:?}: it needs at least {floor} \
                         of the manifest's {} sites, itself included",
                        config.sites, self.settings.num_sites
                    )));
                }
                if config.round != u64::from(round) {
                    return Err(self.error(
                        ErrorKind::Refused,
                        format!(
                            "secure aggregation settings for round {} arrived in round {round}",
                            config.round
                        ),
                    ));
                }
                let expected = self
                    .settings
                    .config(round, config.sites.clone(), config.dimension);
                if config != expected {
                    return Err(self.error(
                        ErrorKind::Refused,
                        "the coordinator's secure-aggregation settings differ from the manifest's",
                    ));
                }
                let mut client = SecAggClient::new(config, self.id, self.key_seed(round))
                    .map_err(|e| self.error(ErrorKind::Refused, e.to_string()))?;
                if let Some(identity) = &self.identity {
                    client = client.with_identity(identity.clone());
                }
                let keys = client
                    .advertise_keys()
                    .map_err(|e| self.error(ErrorKind::Refused, e.to_string()))?;
                pending.client = Some(client);
                FromSite::Keys(keys)
            }
            ToSite::PeerKeys(m) => {
                let client = pending
                    .client
                    .as_mut()
                    .ok_or_else(|| self.error(ErrorKind::Refused, "no round started"))?;
                FromSite::Shares(
                    client
                        .share_keys(&m)
                        .map_err(|e| self.error(ErrorKind::Refused, e.to_string()))?,
                )
            }
            ToSite::Shares(m) => {
                let (trained_in, delta, weight) = pending
                    .delta
                    .take()
                    .ok_or_else(|| self.error(ErrorKind::Refused, "no trained update to send"))?;
                if trained_in != round {
                    return Err(self.error(
                        ErrorKind::Refused,
                        format!("its update is from round {trained_in}, not round {round}"),
                    ));
                }
                let client = pending
                    .client
                    .as_mut()
                    .ok_or_else(|| self.error(ErrorKind::Refused, "no round started"))?;
                FromSite::Masked(
                    client
                        .masked_input(&m, &delta, weight)
                        .map_err(|e| self.error(ErrorKind::Refused, e.to_string()))?,
                )
            }
            ToSite::Consistency(m) => {
                let client = pending
                    .client
                    .as_mut()
                    .ok_or_else(|| self.error(ErrorKind::Refused, "no round started"))?;
                FromSite::Consistency(
                    client
                        .consistency(&m)
                        .map_err(|e| self.error(ErrorKind::Refused, e.to_string()))?,
                )
            }
            ToSite::Unmask(m) => {
                let client = pending
                    .client
                    .as_mut()
                    .ok_or_else(|| self.error(ErrorKind::Refused, "no round started"))?;
                FromSite::Unmask(
                    client
                        .unmask(&m)
                        .map_err(|e| self.error(ErrorKind::Refused, e.to_string()))?,
                )
            }
        };
        let reply = encode(&reply).map_err(|e| self.error(ErrorKind::Internal, e))?;
        pending.answered = Some((round, digest, reply.clone()));
        Ok(reply)
    }
}
