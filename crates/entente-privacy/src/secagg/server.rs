//! The coordinator half of the protocol.

use std::collections::{BTreeMap, BTreeSet};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::auth::{MAX_CREDENTIAL_BYTES, MAX_SIGNATURE_BYTES};
use super::encoding::{Modulus, Word, decode};
use super::error::{AbortReason, Phase, SecAggError, ShareKind};
use super::graph::Neighbourhoods;
use super::keys::{self, KeyPair, SEALED_LEN};
use super::messages::{
    AdvertiseKeys, Attestation, ConsistencyRequest, ConsistencyResponse, EncryptedShares,
    MaskedInput, MaskedVector, PeerKeys, RevealedShare, RoutedShares, ShareKeys, SitePublicKeys,
    SurvivorRequests, SurvivorSignature, UnmaskRequest, UnmaskResponse,
};
use super::prg::{CHUNK_BYTES, MaskKey, MaskPrg, Sign, apply_masks};
use super::shamir::{self, P, Share};
use super::{SecAggConfig, Security, SiteId};

/// The result of a completed round: the weighted FedAvg of the sites whose masked input
/// arrived, and nothing about any one of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// Round id.
    pub round: u64,
    /// Sites whose update is in the sum (U3), sorted.
    pub contributors: Vec<SiteId>,
    /// Selected sites whose update is not in the sum, sorted.
    pub dropped: Vec<SiteId>,
    /// Sum of the contributors' weights (decoded from the masked weight coordinate).
    pub total_weight: u64,
    /// `sum_u w_u * clip(x_u)`, decoded.
    pub weighted_sum: Vec<f64>,
    /// `weighted_sum / total_weight`: the weighted FedAvg of the clipped updates.
    pub mean: Vec<f32>,
}

/// The coordinator's half of a secure aggregation round.
///
/// For each phase, feed every arriving message to `receive_*`, then call `close_*` when all
/// expected sites answered or the deadline passed ([`awaiting`](Self::awaiting) lists who is
/// missing); `close_*` returns the messages to send on. [`finish`](Self::finish) unmasks.
/// Under [`Security::Active`] the coordinator only relays signatures (the sites check them),
/// and the consistency check ([`receive_consistency`](Self::receive_consistency),
/// [`close_consistency`](Self::close_consistency)) comes between masked inputs and unmasking.
/// Any shortfall below the threshold aborts the round for good and releases nothing.
#[derive(Clone)]
pub struct SecAggServer {
    config: SecAggConfig,
    graph: Neighbourhoods,
    phase: Phase,
    abort: Option<AbortReason>,
    keys: BTreeMap<SiteId, SitePublicKeys>,
    u1: BTreeSet<SiteId>,
    pending: BTreeMap<SiteId, Vec<EncryptedShares>>,
    u2: BTreeSet<SiteId>,
    sum: Option<MaskedVector>,
    u3: BTreeSet<SiteId>,
    signatures: BTreeMap<SiteId, Attestation>,
    u4: BTreeSet<SiteId>,
    responses: BTreeMap<SiteId, UnmaskResponse>,
}

/// Whether an attestation's fields are within the sizes a site may send.
fn bounded(a: &Attestation) -> bool {
    !a.credential.is_empty()
        && a.credential.len() <= MAX_CREDENTIAL_BYTES
        && !a.signature.is_empty()
        && a.signature.len() <= MAX_SIGNATURE_BYTES
}

/// `acc += v` modulo 2^BITS, in parallel chunks (exact, so independent of the thread count).
fn add_vectors<W: Word>(acc: &mut [W], v: &[W]) {
    let chunk = CHUNK_BYTES / W::BYTES;
    acc.par_chunks_mut(chunk)
        .zip(v.par_chunks(chunk))
        .for_each(|(a, b)| {
            a.iter_mut()
                .zip(b)
                .for_each(|(a, &b)| *a = a.wrapping_add(b))
        });
}

fn mask_vector(prg: MaskPrg, v: &mut MaskedVector, masks: &[(&MaskKey, Sign)]) {
    match v {
        MaskedVector::U32(x) => apply_masks(prg, x, masks),
        MaskedVector::U64(x) => apply_masks(prg, x, masks),
    }
}

impl SecAggServer {
    /// A coordinator for the round `config`.
    pub fn new(config: SecAggConfig) -> Result<Self, SecAggError> {
        let graph = config.validate()?;
        Ok(SecAggServer {
            config,
            graph,
            phase: Phase::AdvertiseKeys,
            abort: None,
            keys: BTreeMap::new(),
            u1: BTreeSet::new(),
            pending: BTreeMap::new(),
            u2: BTreeSet::new(),
            sum: None,
            u3: BTreeSet::new(),
            signatures: BTreeMap::new(),
            u4: BTreeSet::new(),
            responses: BTreeMap::new(),
        })
    }

    /// The phase whose site messages the coordinator accepts now.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Why the round was aborted, if it was.
    pub fn abort_reason(&self) -> Option<&AbortReason> {
        self.abort.as_ref()
    }

    /// The pairing graph of the round.
    pub fn graph(&self) -> &Neighbourhoods {
        &self.graph
    }

    /// Sites expected in the current phase that have not sent their message yet.
    pub fn awaiting(&self) -> Vec<SiteId> {
        match self.phase {
            Phase::AdvertiseKeys => self
                .graph
                .sites()
                .filter(|s| !self.keys.contains_key(s))
                .collect(),
            Phase::ShareKeys => self
                .u1
                .iter()
                .copied()
                .filter(|s| !self.pending.contains_key(s))
                .collect(),
            Phase::MaskedInput => self.u2.difference(&self.u3).copied().collect(),
            Phase::ConsistencyCheck => self
                .u3
                .iter()
                .copied()
                .filter(|s| !self.signatures.contains_key(s))
                .collect(),
            Phase::Unmasking => self
                .u4
                .iter()
                .copied()
                .filter(|s| !self.responses.contains_key(s))
                .collect(),
            Phase::Done | Phase::Aborted => Vec::new(),
        }
    }

    fn check(&self, phase: Phase, round: Option<u64>) -> Result<(), SecAggError> {
        if let Some(reason) = &self.abort {
            return Err(SecAggError::Aborted(reason.clone()));
        }
        if self.phase != phase {
            return Err(SecAggError::WrongPhase {
                current: self.phase,
                got: phase,
            });
        }
        match round {
            Some(r) if r != self.config.round => Err(SecAggError::WrongRound {
                expected: self.config.round,
                got: r,
            }),
            _ => Ok(()),
        }
    }

    fn fail(&mut self, reason: AbortReason) -> SecAggError {
        self.phase = Phase::Aborted;
        self.abort = Some(reason.clone());
        self.sum = None;
        self.pending.clear();
        self.signatures.clear();
        self.responses.clear();
        SecAggError::Aborted(reason)
    }

    fn sender_in(
        set: &BTreeSet<SiteId>,
        seen: bool,
        sender: SiteId,
        phase: Phase,
    ) -> Result<(), SecAggError> {
        if !set.contains(&sender) {
            return Err(SecAggError::UnexpectedSender { sender, phase });
        }
        if seen {
            return Err(SecAggError::Replay { sender, phase });
        }
        Ok(())
    }

    fn holders_in(&self, site: SiteId, set: &BTreeSet<SiteId>) -> usize {
        self.graph
            .holders(site)
            .iter()
            .filter(|h| set.contains(h))
            .count()
    }

    /// Removes, until none is left, every site fewer than `t` of whose holders are in the set:
    /// its secrets could never be recovered.
    fn prune(&self, mut set: BTreeSet<SiteId>) -> BTreeSet<SiteId> {
        loop {
            let weak: Vec<SiteId> = set
                .iter()
                .copied()
                .filter(|&u| self.holders_in(u, &set) < self.config.threshold)
                .collect();
            if weak.is_empty() {
                return set;
            }
            for u in weak {
                set.remove(&u);
            }
        }
    }

    fn require_sites(&mut self, phase: Phase, remaining: usize) -> Result<(), SecAggError> {
        if remaining < self.config.min_survivors {
            let required = self.config.min_survivors;
            return Err(self.fail(AbortReason::TooFewSites {
                phase,
                remaining,
                required,
            }));
        }
        Ok(())
    }

    /// Round 0: accepts a site's public keys.
    pub fn receive_advertise(&mut self, msg: &AdvertiseKeys) -> Result<(), SecAggError> {
        self.check(Phase::AdvertiseKeys, Some(msg.round))?;
        let k = &msg.keys;
        let sender = k.site;
        if !self.graph.contains(sender) {
            return Err(SecAggError::UnexpectedSender {
                sender,
                phase: Phase::AdvertiseKeys,
            });
        }
        if self.keys.contains_key(&sender) {
            return Err(SecAggError::Replay {
                sender,
                phase: Phase::AdvertiseKeys,
            });
        }
        let reused = k.c_pk == k.s_pk
            || self
                .keys
                .values()
                .any(|o| [o.c_pk, o.s_pk].contains(&k.c_pk) || [o.c_pk, o.s_pk].contains(&k.s_pk));
        if reused {
            return Err(SecAggError::Malformed {
                sender,
                reason: "public keys must be distinct from each other and from every site's".into(),
            });
        }
        let active = self.config.security == Security::Active;
        if active && !k.signature.as_ref().is_some_and(bounded) {
            return Err(SecAggError::Malformed {
                sender,
                reason: format!(
                    "under active security the keys must be signed (credential of 1 to \
                     {MAX_CREDENTIAL_BYTES} bytes, signature of 1 to {MAX_SIGNATURE_BYTES})"
                ),
            });
        }
        self.keys.insert(sender, k.clone());
        Ok(())
    }

    /// Ends round 0: fixes U1 and returns one [`PeerKeys`] per site in it.
    pub fn close_advertise(&mut self) -> Result<Vec<PeerKeys>, SecAggError> {
        self.check(Phase::AdvertiseKeys, None)?;
        self.require_sites(Phase::AdvertiseKeys, self.keys.len())?;
        let u1 = self.prune(self.keys.keys().copied().collect());
        self.require_sites(Phase::AdvertiseKeys, u1.len())?;
        self.keys.retain(|s, _| u1.contains(s));
        let out = u1
            .iter()
            .map(|&u| PeerKeys {
                round: self.config.round,
                recipient: u,
                peers: self
                    .graph
                    .neighbours(u)
                    .iter()
                    .filter_map(|v| self.keys.get(v).cloned())
                    .collect(),
            })
            .collect();
        self.u1 = u1;
        self.phase = Phase::ShareKeys;
        Ok(out)
    }

    /// Round 1: accepts a site's encrypted shares, one for each of its neighbours in U1.
    pub fn receive_shares(&mut self, msg: &ShareKeys) -> Result<(), SecAggError> {
        self.check(Phase::ShareKeys, Some(msg.round))?;
        let sender = msg.sender;
        Self::sender_in(
            &self.u1,
            self.pending.contains_key(&sender),
            sender,
            Phase::ShareKeys,
        )?;
        let expected: BTreeSet<SiteId> = self
            .graph
            .neighbours(sender)
            .iter()
            .copied()
            .filter(|v| self.u1.contains(v))
            .collect();
        let mut got = BTreeSet::new();
        for es in &msg.shares {
            let reason = if es.sender != sender {
                Some("a ciphertext names another sender".to_string())
            } else if !expected.contains(&es.recipient) {
                Some(format!("site {} is not a neighbour in U1", es.recipient))
            } else if !got.insert(es.recipient) {
                Some(format!("two ciphertexts for site {}", es.recipient))
            } else if es.ciphertext.len() != SEALED_LEN {
                Some(format!(
                    "ciphertext for site {} has the wrong length",
                    es.recipient
                ))
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(SecAggError::Malformed { sender, reason });
            }
        }
        if got.len() != expected.len() {
            return Err(SecAggError::Malformed {
                sender,
                reason: format!(
                    "{} ciphertexts for {} neighbours",
                    got.len(),
                    expected.len()
                ),
            });
        }
        self.pending.insert(sender, msg.shares.clone());
        Ok(())
    }

    /// Ends round 1: fixes U2 and returns each site in it the ciphertexts addressed to it.
    pub fn close_shares(&mut self) -> Result<Vec<RoutedShares>, SecAggError> {
        self.check(Phase::ShareKeys, None)?;
        self.require_sites(Phase::ShareKeys, self.pending.len())?;
        let u2 = self.prune(self.pending.keys().copied().collect());
        self.require_sites(Phase::ShareKeys, u2.len())?;
        let mut routed: BTreeMap<SiteId, Vec<EncryptedShares>> =
            u2.iter().map(|&v| (v, Vec::new())).collect();
        for (&u, list) in &self.pending {
            if !u2.contains(&u) {
                continue;
            }
            for es in list {
                if let Some(dst) = routed.get_mut(&es.recipient) {
                    dst.push(es.clone());
                }
            }
        }
        self.pending.clear();
        self.u2 = u2;
        self.phase = Phase::MaskedInput;
        Ok(routed
            .into_iter()
            .map(|(recipient, shares)| RoutedShares {
                round: self.config.round,
                recipient,
                shares,
            })
            .collect())
    }

    /// Round 2: adds a site's masked input to the running sum (one vector in memory, however
    /// many sites).
    pub fn receive_masked(&mut self, msg: &MaskedInput) -> Result<(), SecAggError> {
        self.check(Phase::MaskedInput, Some(msg.round))?;
        let sender = msg.sender;
        Self::sender_in(
            &self.u2,
            self.u3.contains(&sender),
            sender,
            Phase::MaskedInput,
        )?;
        let len = self.config.dimension + 1;
        let sum = self
            .sum
            .get_or_insert_with(|| match self.config.encoding.modulus {
                Modulus::Pow32 => MaskedVector::U32(vec![0; len]),
                Modulus::Pow64 => MaskedVector::U64(vec![0; len]),
            });
        match (sum, &msg.vector) {
            (MaskedVector::U32(acc), MaskedVector::U32(v)) if v.len() == len => add_vectors(acc, v),
            (MaskedVector::U64(acc), MaskedVector::U64(v)) if v.len() == len => add_vectors(acc, v),
            _ => {
                return Err(SecAggError::Malformed {
                    sender,
                    reason: format!(
                        "masked vector must have {len} elements of the round's modulus"
                    ),
                });
            }
        }
        self.u3.insert(sender);
        Ok(())
    }

    /// Ends round 2: fixes U3 and returns, for each site in it, the consistency check (active
    /// security) or the unmasking request (honest-but-curious).
    pub fn close_masked(&mut self) -> Result<SurvivorRequests, SecAggError> {
        self.check(Phase::MaskedInput, None)?;
        self.require_sites(Phase::MaskedInput, self.u3.len())?;
        let u2: Vec<SiteId> = self.u2.iter().copied().collect();
        for u in u2 {
            let available = self.holders_in(u, &self.u3);
            if available < self.config.threshold {
                let kind = if self.u3.contains(&u) {
                    ShareKind::SelfMaskSeed
                } else {
                    ShareKind::MaskKey
                };
                let threshold = self.config.threshold;
                return Err(self.fail(AbortReason::TooFewShares {
                    site: u,
                    kind,
                    available,
                    threshold,
                }));
            }
        }
        let survivors: Vec<SiteId> = self.u3.iter().copied().collect();
        if self.config.security == Security::Active {
            self.phase = Phase::ConsistencyCheck;
            return Ok(SurvivorRequests::Consistency(
                self.u3
                    .iter()
                    .map(|&v| ConsistencyRequest {
                        round: self.config.round,
                        recipient: v,
                        survivors: survivors.clone(),
                    })
                    .collect(),
            ));
        }
        self.u4 = self.u3.clone();
        self.phase = Phase::Unmasking;
        Ok(SurvivorRequests::Unmask(
            self.unmask_requests(survivors, Vec::new()),
        ))
    }

    fn unmask_requests(
        &self,
        survivors: Vec<SiteId>,
        signatures: Vec<SurvivorSignature>,
    ) -> Vec<UnmaskRequest> {
        self.u4
            .iter()
            .map(|&v| UnmaskRequest {
                round: self.config.round,
                recipient: v,
                survivors: survivors.clone(),
                signatures: signatures.clone(),
            })
            .collect()
    }

    /// Consistency check: accepts a survivor's signature over U3 (the sites check it; the
    /// coordinator only bounds its size).
    pub fn receive_consistency(&mut self, msg: &ConsistencyResponse) -> Result<(), SecAggError> {
        self.check(Phase::ConsistencyCheck, Some(msg.round))?;
        let sender = msg.sender;
        Self::sender_in(
            &self.u3,
            self.signatures.contains_key(&sender),
            sender,
            Phase::ConsistencyCheck,
        )?;
        if !bounded(&msg.attestation) {
            return Err(SecAggError::Malformed {
                sender,
                reason: "the survivor-list signature or its credential is empty or too long".into(),
            });
        }
        self.signatures.insert(sender, msg.attestation.clone());
        Ok(())
    }

    /// Ends the consistency check: the sites that signed (U4) get the unmasking request with
    /// every signature. Aborts if fewer than `min_survivors` signed.
    pub fn close_consistency(&mut self) -> Result<Vec<UnmaskRequest>, SecAggError> {
        self.check(Phase::ConsistencyCheck, None)?;
        self.require_sites(Phase::ConsistencyCheck, self.signatures.len())?;
        self.u4 = self.signatures.keys().copied().collect();
        let signatures = std::mem::take(&mut self.signatures)
            .into_iter()
            .map(|(site, attestation)| SurvivorSignature { site, attestation })
            .collect();
        self.phase = Phase::Unmasking;
        Ok(self.unmask_requests(self.u3.iter().copied().collect(), signatures))
    }

    /// Round 3: accepts a survivor's revealed shares after checking it revealed exactly what it
    /// owes: seed shares for its holder-relations in U3 and key shares for its neighbours in
    /// U2 \ U3, never both for one owner.
    pub fn receive_unmask(&mut self, msg: &UnmaskResponse) -> Result<(), SecAggError> {
        self.check(Phase::Unmasking, Some(msg.round))?;
        let sender = msg.sender;
        Self::sender_in(
            &self.u4,
            self.responses.contains_key(&sender),
            sender,
            Phase::Unmasking,
        )?;
        let seed_owners: BTreeSet<SiteId> = self
            .graph
            .holders(sender)
            .into_iter()
            .filter(|h| self.u3.contains(h))
            .collect();
        let key_owners: BTreeSet<SiteId> = self
            .graph
            .neighbours(sender)
            .iter()
            .copied()
            .filter(|v| self.u2.contains(v) && !self.u3.contains(v))
            .collect();
        let seed_got: BTreeSet<SiteId> = msg.seed_shares.iter().map(|s| s.owner).collect();
        let key_got: BTreeSet<SiteId> = msg.key_shares.iter().map(|s| s.owner).collect();
        if let Some(&peer) = seed_got.intersection(&key_got).next() {
            return Err(SecAggError::BothShareKinds { peer });
        }
        let check_list = |list: &[RevealedShare],
                          owed: &BTreeSet<SiteId>,
                          other: &BTreeSet<SiteId>,
                          kind: ShareKind|
         -> Result<(), SecAggError> {
            let mut seen = BTreeSet::new();
            for s in list {
                if other.contains(&s.owner) {
                    return Err(SecAggError::ShareKindMismatch {
                        sender,
                        owner: s.owner,
                        kind,
                    });
                }
                if !owed.contains(&s.owner) || !seen.insert(s.owner) {
                    return Err(SecAggError::Malformed {
                        sender,
                        reason: format!("unexpected or repeated {kind} share of site {}", s.owner),
                    });
                }
                if s.values.iter().any(|&v| v >= P) {
                    return Err(SecAggError::Malformed {
                        sender,
                        reason: "share value is not a field element".into(),
                    });
                }
            }
            if seen.len() != owed.len() {
                return Err(SecAggError::Malformed {
                    sender,
                    reason: format!("{} of {} {kind} shares revealed", seen.len(), owed.len()),
                });
            }
            Ok(())
        };
        check_list(
            &msg.seed_shares,
            &seed_owners,
            &key_owners,
            ShareKind::SelfMaskSeed,
        )?;
        check_list(
            &msg.key_shares,
            &key_owners,
            &seed_owners,
            ShareKind::MaskKey,
        )?;
        self.responses.insert(sender, msg.clone());
        Ok(())
    }

    fn collect_shares(&self, owner: SiteId, kind: ShareKind) -> Vec<Share> {
        let mut out = Vec::new();
        for h in self.graph.holders(owner) {
            let Some(resp) = self.responses.get(&h) else {
                continue;
            };
            let list = match kind {
                ShareKind::SelfMaskSeed => &resp.seed_shares,
                ShareKind::MaskKey => &resp.key_shares,
            };
            if let Some(s) = list.iter().find(|s| s.owner == owner) {
                out.push(Share {
                    x: u64::from(h) + 1,
                    y: s.values,
                });
            }
        }
        out
    }

    /// Reconstructs a secret of `owner` from the revealed shares, or says why it cannot.
    fn try_reconstruct(&self, owner: SiteId, kind: ShareKind) -> Result<[u8; 32], AbortReason> {
        let shares = self.collect_shares(owner, kind);
        let threshold = self.config.threshold;
        if shares.len() < threshold {
            return Err(AbortReason::TooFewShares {
                site: owner,
                kind,
                available: shares.len(),
                threshold,
            });
        }
        shamir::reconstruct_secret(&shares, threshold)
            .map_err(|_| AbortReason::InconsistentShares { site: owner, kind })
    }

    /// The self-mask key of contributor `u`, from its reconstructed seed.
    fn recover_self_mask(&self, u: SiteId) -> Result<MaskKey, AbortReason> {
        let seed = zeroize::Zeroizing::new(self.try_reconstruct(u, ShareKind::SelfMaskSeed)?);
        Ok(keys::self_mask_key(&seed, self.config.round, u))
    }

    /// The pairwise mask keys that site `u`, which dropped after sharing, has with its
    /// neighbours in U3, each with the sign that cancels it: reconstructs `u`'s mask secret,
    /// checks it against the advertised key, then redoes the key agreements.
    fn recover_pairwise_masks(&self, u: SiteId) -> Result<Vec<(MaskKey, Sign)>, AbortReason> {
        let bytes = zeroize::Zeroizing::new(self.try_reconstruct(u, ShareKind::MaskKey)?);
        let pair = KeyPair::from_secret_bytes(*bytes);
        let advertised = self.keys.get(&u).map(|k| k.s_pk);
        if advertised != Some(pair.public) {
            return Err(AbortReason::KeyMismatch { site: u });
        }
        let mut out = Vec::new();
        for &v in self.graph.neighbours(u) {
            if !self.u3.contains(&v) {
                continue;
            }
            let Some(pk) = self.keys.get(&v).map(|k| k.s_pk) else {
                return Err(AbortReason::KeyMismatch { site: v });
            };
            let Ok(shared) = keys::agree(&pair.secret, &pk, v) else {
                return Err(AbortReason::KeyMismatch { site: v });
            };
            // v added +PRG(s_uv) if v < u, -PRG(s_uv) otherwise; undo that.
            let sign = if v < u { Sign::Minus } else { Sign::Plus };
            out.push((
                keys::pairwise_mask_key(&shared, self.config.round, u, v),
                sign,
            ));
        }
        Ok(out)
    }

    /// Ends round 3: reconstructs the self-mask seeds of the contributors and the mask keys of
    /// the sites that dropped after sharing, removes every mask and decodes the weighted mean.
    /// Aborts (and releases nothing) if any secret lacks `t` shares.
    pub fn finish(&mut self) -> Result<Aggregate, SecAggError> {
        self.check(Phase::Unmasking, None)?;
        self.require_sites(Phase::Unmasking, self.responses.len())?;
        let round = self.config.round;
        let contributors: Vec<SiteId> = self.u3.iter().copied().collect();
        let dropped_after_sharing: Vec<SiteId> = self.u2.difference(&self.u3).copied().collect();
        // Secret recovery and X25519 agreements are independent per site: compute them in
        // parallel, then report the first failure in site order, as a sequential pass would.
        let self_masks: Vec<Result<MaskKey, AbortReason>> = contributors
            .par_iter()
            .map(|&u| self.recover_self_mask(u))
            .collect();
        let pairwise: Vec<Result<Vec<(MaskKey, Sign)>, AbortReason>> = dropped_after_sharing
            .par_iter()
            .map(|&u| self.recover_pairwise_masks(u))
            .collect();
        let mut removals: Vec<(MaskKey, Sign)> = Vec::new();
        for key in self_masks {
            match key {
                Ok(key) => removals.push((key, Sign::Minus)),
                Err(reason) => return Err(self.fail(reason)),
            }
        }
        for keys in pairwise {
            match keys {
                Ok(keys) => removals.extend(keys),
                Err(reason) => return Err(self.fail(reason)),
            }
        }
        let Some(mut sum) = self.sum.take() else {
            return Err(self.fail(AbortReason::TooFewSites {
                phase: Phase::Unmasking,
                remaining: 0,
                required: self.config.min_survivors,
            }));
        };
        // Every stream is expanded once, chunk by chunk in parallel, straight into the sum.
        let masks: Vec<(&MaskKey, Sign)> = removals.iter().map(|(k, s)| (k, *s)).collect();
        mask_vector(self.config.prg, &mut sum, &masks);
        let (total_weight, weighted_sum, mean) = match &sum {
            MaskedVector::U32(v) => decode(v, &self.config.encoding),
            MaskedVector::U64(v) => decode(v, &self.config.encoding),
        };
        self.phase = Phase::Done;
        self.responses.clear();
        Ok(Aggregate {
            round,
            dropped: self
                .graph
                .sites()
                .filter(|s| !self.u3.contains(s))
                .collect(),
            contributors,
            total_weight,
            weighted_sum,
            mean,
        })
    }
}
