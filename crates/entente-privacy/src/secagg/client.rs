//! The site half of the protocol.

use std::collections::{BTreeMap, BTreeSet};

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

use super::auth::{self, Identity};
use super::encoding::{Modulus, Word, check_update, encode};
use super::error::{AbortReason, Phase, SecAggError};
use super::keys::{self, KeyPair, SharePair};
use super::messages::{
    AdvertiseKeys, Attestation, ConsistencyRequest, ConsistencyResponse, EncryptedShares,
    MaskedInput, MaskedVector, PeerKeys, RevealedShare, RoutedShares, ShareKeys, SitePublicKeys,
    UnmaskRequest, UnmaskResponse,
};
use super::prg::{MaskKey, MaskPrg, Sign, apply_masks};
use super::shamir::{self, SECRET_CHUNKS};
use super::{SecAggConfig, Security, SiteId};

#[derive(Clone)]
enum State {
    Start,
    Advertised,
    Shared {
        peers: BTreeMap<SiteId, SitePublicKeys>,
        own_seed_share: [u64; SECRET_CHUNKS],
    },
    Masked {
        held: BTreeMap<SiteId, SharePair>,
        own_seed_share: [u64; SECRET_CHUNKS],
    },
    /// Active security: the site signed this survivor list, the only one it will ever sign
    /// or unmask for in this round.
    Checked {
        held: BTreeMap<SiteId, SharePair>,
        own_seed_share: [u64; SECRET_CHUNKS],
        survivors: Vec<SiteId>,
    },
    Done,
    Aborted,
}

/// One site's half of a secure aggregation round.
///
/// Drive it with [`advertise_keys`](Self::advertise_keys), [`share_keys`](Self::share_keys),
/// [`masked_input`](Self::masked_input) and [`unmask`](Self::unmask), feeding in the
/// coordinator's messages (under [`Security::Active`], with [`consistency`](Self::consistency)
/// before `unmask`). A rejected message leaves the state unchanged, except that under active
/// security a message that fails its signature or consistency check aborts the site for the
/// round. After `unmask` the site refuses any further request, so it can never reveal both
/// secrets of one peer.
#[derive(Clone)]
pub struct SecAggClient {
    config: SecAggConfig,
    id: SiteId,
    neighbours: Vec<SiteId>,
    complete: bool,
    c_key: KeyPair,
    s_key: KeyPair,
    seed: Zeroizing<[u8; 32]>,
    rng: ChaCha20Rng,
    state: State,
    identity: Option<Identity>,
}

impl SecAggClient {
    /// A site for the round `config`, drawing its keys, mask seed and share polynomials from
    /// ChaCha20 seeded with `rng_seed` (use fresh OS randomness in production; a fixed seed
    /// makes tests deterministic).
    pub fn new(config: SecAggConfig, id: SiteId, rng_seed: [u8; 32]) -> Result<Self, SecAggError> {
        let graph = config.validate()?;
        if !graph.contains(id) {
            return Err(SecAggError::Config(format!(
                "site {id} is not among the round's sites"
            )));
        }
        let neighbours = graph.neighbours(id).to_vec();
        let complete = neighbours.len() + 1 == graph.len();
        let mut rng = ChaCha20Rng::from_seed(rng_seed);
        let c_key = KeyPair::generate(&mut rng);
        let s_key = KeyPair::generate(&mut rng);
        let mut seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(seed.as_mut());
        Ok(SecAggClient {
            config,
            id,
            neighbours,
            complete,
            c_key,
            s_key,
            seed,
            rng,
            state: State::Start,
            identity: None,
        })
    }

    /// The same site with the identity it signs and checks signatures with (required under
    /// [`Security::Active`]).
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// This site's id.
    pub fn id(&self) -> SiteId {
        self.id
    }

    /// The phase whose coordinator message (or, first, whose own message) the site expects.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Start => Phase::AdvertiseKeys,
            State::Advertised => Phase::ShareKeys,
            State::Shared { .. } => Phase::MaskedInput,
            State::Masked { .. } if self.active() => Phase::ConsistencyCheck,
            State::Masked { .. } | State::Checked { .. } => Phase::Unmasking,
            State::Done => Phase::Done,
            State::Aborted => Phase::Aborted,
        }
    }

    /// The site's two public keys for this round (unsigned).
    pub fn public_keys(&self) -> SitePublicKeys {
        SitePublicKeys {
            site: self.id,
            c_pk: self.c_key.public,
            s_pk: self.s_key.public,
            signature: None,
        }
    }

    fn active(&self) -> bool {
        self.config.security == Security::Active
    }

    /// The identity, which active security requires.
    fn identity(&self) -> Result<&Identity, SecAggError> {
        self.identity.as_ref().ok_or_else(|| {
            SecAggError::Config(
                "active security needs the site's identity to sign and verify with".into(),
            )
        })
    }

    /// Signs `message` with this site's identity.
    fn attest(&self, message: &[u8]) -> Result<Attestation, SecAggError> {
        let signer = &self.identity()?.signer;
        Ok(Attestation {
            credential: signer.credential(),
            signature: signer.sign(message)?,
        })
    }

    /// Ends the round for this site: it answers nothing more.
    fn abort(&mut self, reason: AbortReason) -> SecAggError {
        self.state = State::Aborted;
        SecAggError::Aborted(reason)
    }

    /// Checks a peer's signed key bundle; `Err` holds why it does not verify.
    fn check_peer_keys(&self, p: &SitePublicKeys) -> Result<(), String> {
        let a = p.signature.as_ref().ok_or("it is not signed")?;
        let message = auth::keys_message(
            &self.config.context,
            self.config.round,
            p.site,
            &p.c_pk,
            &p.s_pk,
        );
        let verifier = &self.identity().map_err(|e| e.to_string())?.verifier;
        verifier
            .verify(p.site, &a.credential, &message, &a.signature)
            .map_err(|e| e.to_string())
    }

    fn expect_phase(&self, phase: Phase) -> Result<(), SecAggError> {
        if self.phase() == phase {
            Ok(())
        } else {
            Err(SecAggError::WrongPhase {
                current: self.phase(),
                got: phase,
            })
        }
    }

    fn check_header(&self, phase: Phase, round: u64, recipient: SiteId) -> Result<(), SecAggError> {
        self.expect_phase(phase)?;
        if round != self.config.round {
            return Err(SecAggError::WrongRound {
                expected: self.config.round,
                got: round,
            });
        }
        if recipient != self.id {
            return Err(SecAggError::WrongRecipient {
                expected: self.id,
                got: recipient,
            });
        }
        Ok(())
    }

    fn required_holders(&self) -> usize {
        if self.complete {
            self.config.threshold.max(self.config.min_survivors)
        } else {
            self.config.threshold
        }
    }

    fn malformed(&self, reason: impl Into<String>) -> SecAggError {
        SecAggError::Malformed {
            sender: self.id,
            reason: reason.into(),
        }
    }

    /// Round 0: the site's public keys.
    /// Under active security the keys are signed, bound to the round's context, round id and
    /// site.
    pub fn advertise_keys(&mut self) -> Result<AdvertiseKeys, SecAggError> {
        self.expect_phase(Phase::AdvertiseKeys)?;
        let mut keys = self.public_keys();
        if self.active() {
            let message = auth::keys_message(
                &self.config.context,
                self.config.round,
                self.id,
                &keys.c_pk,
                &keys.s_pk,
            );
            keys.signature = Some(self.attest(&message)?);
        }
        self.state = State::Advertised;
        Ok(AdvertiseKeys {
            round: self.config.round,
            keys,
        })
    }

    /// Round 1: checks the neighbours' keys, Shamir-shares `b_u` and `s_sk` among them (and
    /// itself) and encrypts each neighbour's pair of shares. Under active security every
    /// peer's keys must carry a valid signature of that peer, or the site aborts.
    pub fn share_keys(&mut self, msg: &PeerKeys) -> Result<ShareKeys, SecAggError> {
        self.check_header(Phase::ShareKeys, msg.round, msg.recipient)?;
        let mut peers = BTreeMap::new();
        let mut seen_keys = BTreeSet::from([self.c_key.public, self.s_key.public]);
        for p in &msg.peers {
            if self.neighbours.binary_search(&p.site).is_err() {
                return Err(self.malformed(format!("site {} is not a neighbour", p.site)));
            }
            if peers.insert(p.site, p.clone()).is_some() {
                return Err(self.malformed(format!("site {} is listed twice", p.site)));
            }
            if !seen_keys.insert(p.c_pk) || !seen_keys.insert(p.s_pk) {
                return Err(self.malformed(format!("site {} reuses a public key", p.site)));
            }
        }
        if self.active() {
            for p in peers.values() {
                if let Err(reason) = self.check_peer_keys(p) {
                    return Err(self.abort(AbortReason::BadSignature {
                        site: p.site,
                        what: "public keys".into(),
                        reason,
                    }));
                }
            }
        }
        let required = self.required_holders();
        if peers.len() + 1 < required {
            return Err(SecAggError::Aborted(AbortReason::TooFewSites {
                phase: Phase::ShareKeys,
                remaining: peers.len() + 1,
                required,
            }));
        }
        let mut enc_keys = Vec::with_capacity(peers.len());
        for p in peers.values() {
            let shared = keys::agree(&self.c_key.secret, &p.c_pk, p.site)?;
            keys::agree(&self.s_key.secret, &p.s_pk, p.site)?;
            enc_keys.push((
                p.site,
                keys::share_encryption_key(&shared, self.config.round, self.id, p.site),
            ));
        }
        let mut holders: Vec<SiteId> = peers.keys().copied().collect();
        holders.push(self.id);
        let xs: Vec<u64> = holders.iter().map(|&h| u64::from(h) + 1).collect();
        let t = self.config.threshold;
        let seed_shares = shamir::split_secret(&self.seed, t, &xs, &mut self.rng)?;
        let secret_bytes = Zeroizing::new(self.s_key.secret.to_bytes());
        let key_shares = shamir::split_secret(&secret_bytes, t, &xs, &mut self.rng)?;
        let mut own_seed_share = [0; SECRET_CHUNKS];
        let mut out = Vec::with_capacity(enc_keys.len());
        for ((holder, seed_share), key_share) in holders.iter().zip(&seed_shares).zip(&key_shares) {
            if *holder == self.id {
                own_seed_share = seed_share.y;
                continue;
            }
            let Some((_, key)) = enc_keys.iter().find(|(s, _)| s == holder) else {
                continue;
            };
            let pair = SharePair {
                seed_share: seed_share.y,
                key_share: key_share.y,
            };
            out.push(EncryptedShares {
                sender: self.id,
                recipient: *holder,
                ciphertext: keys::seal(key, self.config.round, self.id, *holder, &pair),
            });
        }
        self.state = State::Shared {
            peers,
            own_seed_share,
        };
        Ok(ShareKeys {
            round: self.config.round,
            sender: self.id,
            shares: out,
        })
    }

    /// Round 2: decrypts the routed shares, checks the update (length, finite values, weight
    /// in range), encodes it and masks it with the self mask and one pairwise mask per
    /// neighbour that shared.
    pub fn masked_input(
        &mut self,
        msg: &RoutedShares,
        update: &[f32],
        weight: u64,
    ) -> Result<MaskedInput, SecAggError> {
        self.check_header(Phase::MaskedInput, msg.round, msg.recipient)?;
        let State::Shared {
            peers,
            own_seed_share,
        } = &self.state
        else {
            return Err(self.malformed("internal: no shared state"));
        };
        check_update(update, weight, self.config.dimension, &self.config.encoding)?;
        let mut held = BTreeMap::new();
        for es in &msg.shares {
            let Some(peer) = peers.get(&es.sender) else {
                return Err(self.malformed(format!(
                    "shares from site {}, which is not a neighbour in the round",
                    es.sender
                )));
            };
            if es.recipient != self.id {
                return Err(SecAggError::WrongRecipient {
                    expected: self.id,
                    got: es.recipient,
                });
            }
            if held.contains_key(&es.sender) {
                return Err(SecAggError::Replay {
                    sender: es.sender,
                    phase: Phase::ShareKeys,
                });
            }
            let shared = keys::agree(&self.c_key.secret, &peer.c_pk, peer.site)?;
            let key = keys::share_encryption_key(&shared, self.config.round, es.sender, self.id);
            let pair = keys::open(&key, self.config.round, es.sender, self.id, &es.ciphertext)?;
            held.insert(es.sender, pair);
        }
        let required = self.required_holders();
        if held.len() + 1 < required {
            return Err(SecAggError::Aborted(AbortReason::TooFewSites {
                phase: Phase::MaskedInput,
                remaining: held.len() + 1,
                required,
            }));
        }
        let mut pair_keys = Vec::with_capacity(held.len());
        for &v in held.keys() {
            let Some(peer) = peers.get(&v) else {
                return Err(self.malformed("internal: peer vanished"));
            };
            let shared = keys::agree(&self.s_key.secret, &peer.s_pk, v)?;
            let sign = if self.id < v { Sign::Plus } else { Sign::Minus };
            pair_keys.push((
                keys::pairwise_mask_key(&shared, self.config.round, self.id, v),
                sign,
            ));
        }
        let self_key = keys::self_mask_key(&self.seed, self.config.round, self.id);
        let settings = &self.config.encoding;
        let prg = self.config.prg;
        fn masked<W: Word>(
            prg: MaskPrg,
            update: &[f32],
            weight: u64,
            settings: &super::EncodingSettings,
            self_key: &MaskKey,
            pair_keys: &[(MaskKey, Sign)],
        ) -> Vec<W> {
            let mut y = encode::<W>(update, weight, settings);
            // The self mask and every pairwise mask, expanded in parallel chunks into `y`.
            let masks: Vec<(&MaskKey, Sign)> = std::iter::once((self_key, Sign::Plus))
                .chain(pair_keys.iter().map(|(k, s)| (k, *s)))
                .collect();
            apply_masks(prg, &mut y, &masks);
            y
        }
        let vector = match settings.modulus {
            Modulus::Pow32 => {
                MaskedVector::U32(masked(prg, update, weight, settings, &self_key, &pair_keys))
            }
            Modulus::Pow64 => {
                MaskedVector::U64(masked(prg, update, weight, settings, &self_key, &pair_keys))
            }
        };
        let own_seed_share = *own_seed_share;
        self.state = State::Masked {
            held,
            own_seed_share,
        };
        Ok(MaskedInput {
            round: self.config.round,
            sender: self.id,
            vector,
        })
    }

    /// Checks a survivor list (U3) against what this site knows: sorted and distinct, itself
    /// in it, only sites of the round, every surviving neighbour one that shared with it, and
    /// enough survivors and holders of its shares left.
    fn check_survivors(
        &self,
        survivors: &[SiteId],
        held: &BTreeMap<SiteId, SharePair>,
    ) -> Result<(), SecAggError> {
        if survivors.windows(2).any(|w| w[0] >= w[1]) {
            return Err(self.malformed("survivor list is not sorted and distinct"));
        }
        let survivors: BTreeSet<SiteId> = survivors.iter().copied().collect();
        if !survivors.contains(&self.id) {
            return Err(self.malformed("this site is not listed among the survivors"));
        }
        if let Some(s) = survivors.iter().find(|s| !self.config.sites.contains(s)) {
            return Err(self.malformed(format!("survivor {s} is not in the round")));
        }
        if let Some(v) = survivors.iter().find(|&&v| {
            v != self.id && self.neighbours.binary_search(&v).is_ok() && !held.contains_key(&v)
        }) {
            return Err(self.malformed(format!("survivor {v} never shared with this site")));
        }
        if survivors.len() < self.config.min_survivors {
            return Err(SecAggError::Aborted(AbortReason::TooFewSites {
                phase: Phase::Unmasking,
                remaining: survivors.len(),
                required: self.config.min_survivors,
            }));
        }
        let alive_holders = 1 + held.keys().filter(|v| survivors.contains(v)).count();
        if alive_holders < self.config.threshold {
            return Err(SecAggError::Aborted(AbortReason::TooFewSites {
                phase: Phase::Unmasking,
                remaining: alive_holders,
                required: self.config.threshold,
            }));
        }
        Ok(())
    }

    /// Consistency check (active security): signs the survivor list U3 the coordinator sent,
    /// after checking it. The site signs one list per round and will unmask for no other.
    pub fn consistency(
        &mut self,
        msg: &ConsistencyRequest,
    ) -> Result<ConsistencyResponse, SecAggError> {
        self.check_header(Phase::ConsistencyCheck, msg.round, msg.recipient)?;
        let State::Masked {
            held,
            own_seed_share,
        } = &self.state
        else {
            return Err(self.malformed("internal: no masked state"));
        };
        self.check_survivors(&msg.survivors, held)?;
        let message =
            auth::survivors_message(&self.config.context, self.config.round, &msg.survivors);
        let attestation = self.attest(&message)?;
        self.state = State::Checked {
            held: held.clone(),
            own_seed_share: *own_seed_share,
            survivors: msg.survivors.clone(),
        };
        Ok(ConsistencyResponse {
            round: self.config.round,
            sender: self.id,
            attestation,
        })
    }

    /// Counts the distinct members of `survivors` whose signature over them verifies, up to
    /// the threshold.
    fn valid_signatures(&self, msg: &UnmaskRequest) -> Result<usize, SecAggError> {
        let verifier = &self.identity()?.verifier;
        let message =
            auth::survivors_message(&self.config.context, self.config.round, &msg.survivors);
        let mut valid = BTreeSet::new();
        for s in &msg.signatures {
            if valid.len() >= self.config.threshold {
                break;
            }
            if valid.contains(&s.site) || msg.survivors.binary_search(&s.site).is_err() {
                continue;
            }
            let a = &s.attestation;
            if verifier
                .verify(s.site, &a.credential, &message, &a.signature)
                .is_ok()
            {
                valid.insert(s.site);
            }
        }
        Ok(valid.len())
    }

    /// Round 3: given the sites whose masked input arrived, reveals the self-mask seed shares
    /// of those (and of itself) and the mask-key shares of neighbours that dropped, so never
    /// the mask-key share of a survivor. Under active security the list must be the one this
    /// site signed and carry at least `t` valid signatures of distinct survivors over it, or
    /// the site aborts. Answers once; every later request is refused.
    pub fn unmask(&mut self, msg: &UnmaskRequest) -> Result<UnmaskResponse, SecAggError> {
        self.check_header(Phase::Unmasking, msg.round, msg.recipient)?;
        if let State::Checked { survivors, .. } = &self.state {
            if *survivors != msg.survivors {
                return Err(self.abort(AbortReason::InconsistentSurvivors));
            }
            let valid = self.valid_signatures(msg)?;
            if valid < self.config.threshold {
                let required = self.config.threshold;
                return Err(self.abort(AbortReason::TooFewSignatures { valid, required }));
            }
        }
        let (State::Masked {
            held,
            own_seed_share,
        }
        | State::Checked {
            held,
            own_seed_share,
            ..
        }) = &self.state
        else {
            return Err(self.malformed("internal: no masked state"));
        };
        self.check_survivors(&msg.survivors, held)?;
        let survivors: BTreeSet<SiteId> = msg.survivors.iter().copied().collect();
        let mut seed_shares = vec![RevealedShare {
            owner: self.id,
            values: *own_seed_share,
        }];
        let mut key_shares = Vec::new();
        for (&owner, pair) in held {
            if survivors.contains(&owner) {
                seed_shares.push(RevealedShare {
                    owner,
                    values: pair.seed_share,
                });
            } else {
                key_shares.push(RevealedShare {
                    owner,
                    values: pair.key_share,
                });
            }
        }
        seed_shares.sort_by_key(|s| s.owner);
        self.state = State::Done;
        Ok(UnmaskResponse {
            round: self.config.round,
            sender: self.id,
            seed_shares,
            key_shares,
        })
    }
}
