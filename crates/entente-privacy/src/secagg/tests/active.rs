//! The dishonest coordinator against honest sites under active security: substituted keys,
//! inconsistent dropout stories, replays from an earlier round, and requests to unmask a site
//! that is alive. Each ends in an abort, and the test then checks what the coordinator holds:
//! never `t` shares of both secrets of a site whose masked input it has (and, where every site
//! aborts, fewer than `t` shares of any secret at all).

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;

use super::{config, inputs, max_abs_diff, plaintext_mean, with_drops};
use crate::secagg::auth::{self, InProcessPki};
use crate::secagg::keys::{self, KeyPair};
use crate::secagg::sim::{DropPoint, SiteInput, run_round};
use crate::secagg::{
    AbortReason, Attestation, ConsistencyRequest, ConsistencyResponse, GraphSpec, PeerKeys, Phase,
    SecAggClient, SecAggConfig, SecAggError, SecAggServer, ShareKind, SiteId, SurvivorRequests,
    SurvivorSignature, UnmaskRequest, UnmaskResponse, quantization_bound,
};

const N: u32 = 10;
const T: usize = 6;

fn context() -> [u8; 32] {
    auth::context_of(b"test federation, agreement digest")
}

fn active_config(round: u64) -> SecAggConfig {
    let mut cfg = config(N, T, GraphSpec::Complete, 32).with_active_security(context());
    cfg.round = round;
    cfg
}

fn pki() -> InProcessPki {
    InProcessPki::new(&[5; 32], &(0..N).collect::<Vec<_>>()).unwrap()
}

/// A round under active security driven step by step; the test is the coordinator.
struct Round {
    round: u64,
    ins: Vec<SiteInput>,
    server: SecAggServer,
    clients: Vec<SecAggClient>,
}

impl Round {
    fn new(cfg: SecAggConfig, salt: u64) -> Self {
        let pki = pki();
        let ins = inputs(N, cfg.dimension, salt);
        let clients = ins
            .iter()
            .map(|i| {
                SecAggClient::new(cfg.clone(), i.id, i.rng_seed)
                    .unwrap()
                    .with_identity(pki.identity(i.id).unwrap())
            })
            .collect();
        Round {
            round: cfg.round,
            ins,
            server: SecAggServer::new(cfg).unwrap(),
            clients,
        }
    }

    fn peer_keys(&mut self) -> Vec<PeerKeys> {
        for c in &mut self.clients {
            self.server
                .receive_advertise(&c.advertise_keys().unwrap())
                .unwrap();
        }
        self.server.close_advertise().unwrap()
    }

    /// Every site shares and sends its masked input; the consistency requests for all.
    fn run_to_consistency(&mut self) -> Vec<ConsistencyRequest> {
        for m in self.peer_keys() {
            let msg = self.clients[m.recipient as usize].share_keys(&m).unwrap();
            self.server.receive_shares(&msg).unwrap();
        }
        for m in self.server.close_shares().unwrap() {
            let i = m.recipient as usize;
            let msg = self.clients[i]
                .masked_input(&m, &self.ins[i].update, self.ins[i].weight)
                .unwrap();
            self.server.receive_masked(&msg).unwrap();
        }
        match self.server.close_masked().unwrap() {
            SurvivorRequests::Consistency(requests) => requests,
            SurvivorRequests::Unmask(_) => panic!("active security has a consistency check"),
        }
    }

    /// Site `i` signs `survivors`.
    fn sign(&mut self, i: SiteId, survivors: &[SiteId]) -> ConsistencyResponse {
        self.clients[i as usize]
            .consistency(&ConsistencyRequest {
                round: self.round,
                recipient: i,
                survivors: survivors.to_vec(),
            })
            .unwrap()
    }
}

/// The unmasking request for site `i` in `round`.
fn request(
    round: u64,
    i: SiteId,
    survivors: &[SiteId],
    signatures: &[ConsistencyResponse],
) -> UnmaskRequest {
    UnmaskRequest {
        round,
        recipient: i,
        survivors: survivors.to_vec(),
        signatures: signatures
            .iter()
            .map(|r| SurvivorSignature {
                site: r.sender,
                attestation: r.attestation.clone(),
            })
            .collect(),
    }
}

/// For each secret, the holders whose share of it the coordinator has seen in the clear.
type Holdings = BTreeMap<(SiteId, ShareKind), BTreeSet<SiteId>>;

fn holdings(responses: &[UnmaskResponse]) -> Holdings {
    let mut h = Holdings::new();
    for r in responses {
        for s in &r.seed_shares {
            h.entry((s.owner, ShareKind::SelfMaskSeed))
                .or_default()
                .insert(r.sender);
        }
        for s in &r.key_shares {
            h.entry((s.owner, ShareKind::MaskKey))
                .or_default()
                .insert(r.sender);
        }
    }
    h
}

/// Fewer than `T` shares of every secret.
fn assert_no_secret(h: &Holdings) {
    for ((owner, kind), holders) in h {
        assert!(
            holders.len() < T,
            "the coordinator holds {} shares of site {owner}'s {kind}",
            holders.len()
        );
    }
}

/// No site's two secrets both reach `T` shares: no masked input can be opened alone.
fn assert_no_site_unmasked(h: &Holdings) {
    let count = |u: SiteId, kind| h.get(&(u, kind)).map_or(0, BTreeSet::len);
    for u in 0..N {
        assert!(
            count(u, ShareKind::SelfMaskSeed) < T || count(u, ShareKind::MaskKey) < T,
            "the coordinator could unmask site {u}"
        );
    }
}

fn bad_signature(err: SecAggError) -> (SiteId, String) {
    match err {
        SecAggError::Aborted(AbortReason::BadSignature { site, what, .. }) => (site, what),
        other => panic!("expected a bad-signature abort, got {other:?}"),
    }
}

#[test]
fn honest_path_gives_the_exact_sum_of_the_honest_but_curious_round() {
    let drops = [
        (2, DropPoint::BeforeMaskedInput),
        (7, DropPoint::BeforeUnmasking),
    ];
    let ins = with_drops(inputs(N, 64, 40), &drops);
    let hbc = config(N, T, GraphSpec::Complete, 64);
    let active = hbc.clone().with_active_security(context());
    let a = run_round(&active, &ins).unwrap();
    let b = run_round(&hbc, &ins).unwrap();
    // Same keys, masks and shares: the active round releases bit for bit the same sum.
    assert_eq!(a, b);
    assert_eq!(a.dropped, vec![2]);
    let want = plaintext_mean(&ins, &a.contributors, active.encoding.clip);
    let bound = quantization_bound(&active.encoding, a.contributors.len());
    assert!(max_abs_diff(&a.mean, &want) <= bound);
    // SecAgg+ under active security too.
    let plus = config(N, 4, GraphSpec::Harary { degree: 6, seed: 3 }, 64);
    let plus_active = plus.clone().with_active_security(context());
    assert_eq!(
        run_round(&plus_active, &ins).unwrap(),
        run_round(&plus, &ins).unwrap()
    );
}

#[test]
fn a_site_without_an_identity_refuses_active_security() {
    let mut c = SecAggClient::new(active_config(7), 0, [1; 32]).unwrap();
    assert!(matches!(c.advertise_keys(), Err(SecAggError::Config(_))));
    assert_eq!(c.phase(), Phase::AdvertiseKeys);
    // And the coordinator refuses unsigned keys.
    let mut server = SecAggServer::new(active_config(7)).unwrap();
    let mut hbc = SecAggClient::new(config(N, T, GraphSpec::Complete, 32), 0, [1; 32]).unwrap();
    assert!(matches!(
        server.receive_advertise(&hbc.advertise_keys().unwrap()),
        Err(SecAggError::Malformed { sender: 0, .. })
    ));
}

#[test]
fn substituted_public_keys_abort_before_any_share_leaves() {
    let mut r = Round::new(active_config(7), 41);
    let honest = r.peer_keys();
    let rogue = KeyPair::generate(&mut rand_chacha::ChaCha20Rng::from_seed([9; 32]));
    let mut sent = Vec::new();
    // (a) Site 3's keys replaced by the coordinator's, site 3's signature kept.
    let mut m = honest[0].clone();
    m.peers[2].c_pk = rogue.public;
    assert_eq!(m.peers[2].site, 3);
    let err = r.clients[0].share_keys(&m).unwrap_err();
    assert_eq!(bad_signature(err), (3, "public keys".into()));
    assert_eq!(r.clients[0].phase(), Phase::Aborted);
    // Aborted for the round: even the genuine message is refused now.
    assert!(r.clients[0].share_keys(&honest[0]).is_err());
    // (b) Keys signed by a key the federation never issued to site 3.
    let other_pki = InProcessPki::new(&[6; 32], &[3]).unwrap();
    let forger = other_pki.identity(3).unwrap().signer;
    let mut m = honest[1].clone();
    let p = &mut m.peers[2];
    p.c_pk = rogue.public;
    let msg = auth::keys_message(&context(), 7, 3, &p.c_pk, &p.s_pk);
    p.signature = Some(Attestation {
        credential: forger.credential(),
        signature: forger.sign(&msg).unwrap(),
    });
    assert_eq!(bad_signature(r.clients[1].share_keys(&m).unwrap_err()).0, 3);
    // (c) Site 5's genuine signed bundle passed off as site 3's (and 5 said to be gone).
    let mut m = honest[4].clone();
    let five = honest[0]
        .peers
        .iter()
        .find(|p| p.site == 5)
        .unwrap()
        .clone();
    m.peers.retain(|p| p.site != 5);
    let three = m.peers.iter_mut().find(|p| p.site == 3).unwrap();
    *three = auth_swap(five, 3);
    assert_eq!(bad_signature(r.clients[4].share_keys(&m).unwrap_err()).0, 3);
    // (d) The signature removed.
    let mut m = honest[6].clone();
    m.peers[0].signature = None;
    assert_eq!(bad_signature(r.clients[6].share_keys(&m).unwrap_err()).0, 0);
    // The sites given honest keys share; the coordinator knows only the rogue secret, and no
    // ciphertext for site 3 opens with it. It holds no share in the clear.
    for m in &honest[7..] {
        sent.push(r.clients[m.recipient as usize].share_keys(m).unwrap());
    }
    for s in sent
        .iter()
        .flat_map(|m| &m.shares)
        .filter(|s| s.recipient == 3)
    {
        let sender_pk = r.clients[s.sender as usize].public_keys().c_pk;
        let shared = keys::agree(&rogue.secret, &sender_pk, s.sender).unwrap();
        let key = keys::share_encryption_key(&shared, 7, s.sender, s.recipient);
        assert!(keys::open(&key, 7, s.sender, s.recipient, &s.ciphertext).is_err());
    }
    assert_no_secret(&holdings(&[]));
}

/// `keys` relabelled as site `site`'s, as a coordinator substituting them would.
fn auth_swap(
    mut keys: crate::secagg::SitePublicKeys,
    site: SiteId,
) -> crate::secagg::SitePublicKeys {
    keys.site = site;
    keys
}

#[test]
fn without_active_security_the_same_substitution_hands_the_coordinator_a_share() {
    // The contrast that shows the attack above is real: honest-but-curious sites encrypt to
    // whatever key the coordinator relays.
    let cfg = config(N, T, GraphSpec::Complete, 32);
    let ins = inputs(N, 32, 42);
    let mut server = SecAggServer::new(cfg.clone()).unwrap();
    let mut clients: Vec<_> = ins
        .iter()
        .map(|i| SecAggClient::new(cfg.clone(), i.id, i.rng_seed).unwrap())
        .collect();
    for c in &mut clients {
        server
            .receive_advertise(&c.advertise_keys().unwrap())
            .unwrap();
    }
    let mut m = server.close_advertise().unwrap().remove(0);
    let rogue = KeyPair::generate(&mut rand_chacha::ChaCha20Rng::from_seed([9; 32]));
    m.peers[2].c_pk = rogue.public;
    let sent = clients[0].share_keys(&m).unwrap();
    let to3 = sent.shares.iter().find(|s| s.recipient == 3).unwrap();
    let shared = keys::agree(&rogue.secret, &clients[0].public_keys().c_pk, 0).unwrap();
    let key = keys::share_encryption_key(&shared, 7, 0, 3);
    assert!(keys::open(&key, 7, 0, 3, &to3.ciphertext).is_ok());
}

#[test]
fn inconsistent_dropout_stories_abort_and_reveal_nothing() {
    let mut r = Round::new(active_config(7), 43);
    let requests = r.run_to_consistency();
    let all: Vec<SiteId> = requests[0].survivors.clone();
    assert_eq!(all.len(), N as usize);
    let without9: Vec<SiteId> = all.iter().copied().filter(|&s| s != 9).collect();
    // Sites 0..5 are told 9 dropped, sites 5..10 that everyone is in: five signatures each.
    let told_a: Vec<_> = (0..5).map(|i| r.sign(i, &without9)).collect();
    let told_b: Vec<_> = (5..10).map(|i| r.sign(i, &all)).collect();
    // A site signs one list per round.
    assert!(
        r.clients[0]
            .consistency(&ConsistencyRequest {
                round: 7,
                recipient: 0,
                survivors: all.clone()
            })
            .is_err()
    );
    let mut responses = Vec::new();
    let mut aborts = 0;
    for i in 0..N {
        let (view, own) = if i < 5 {
            (&without9, &told_a)
        } else {
            (&all, &told_b)
        };
        // The coordinator forwards every signature it has, both stories mixed.
        let every: Vec<_> = told_a.iter().chain(&told_b).cloned().collect();
        for sigs in [own.clone(), every] {
            if r.clients[i as usize].phase() != Phase::Unmasking {
                break;
            }
            match r.clients[i as usize].unmask(&request(r.round, i, view, &sigs)) {
                Ok(resp) => responses.push(resp),
                Err(SecAggError::Aborted(AbortReason::TooFewSignatures {
                    valid: 5,
                    required: T,
                })) => aborts += 1,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(aborts, N as usize);
    assert!(responses.is_empty());
    // A site told to unmask for the other story than the one it signed aborts too.
    let mut r = Round::new(active_config(7), 44);
    r.run_to_consistency();
    let sigs: Vec<_> = (0..9).map(|i| r.sign(i, &without9_of(N))).collect();
    let err = r.clients[0]
        .unmask(&request(r.round, 0, &(0..N).collect::<Vec<_>>(), &sigs))
        .unwrap_err();
    assert_eq!(
        err,
        SecAggError::Aborted(AbortReason::InconsistentSurvivors)
    );
    assert_no_secret(&holdings(&responses));
}

fn without9_of(n: u32) -> Vec<SiteId> {
    (0..n).filter(|&s| s != 9).collect()
}

#[test]
fn a_majority_story_still_never_opens_a_live_site() {
    // Six sites (the threshold) are told that live site 9 dropped and four that it did not:
    // the six reveal shares of 9's mask key, but none of its self-mask seed, and the four
    // abort, so 9's masked input stays masked.
    let mut r = Round::new(active_config(7), 45);
    r.run_to_consistency();
    let all: Vec<SiteId> = (0..N).collect();
    let without9 = without9_of(N);
    let a: Vec<_> = (0..6).map(|i| r.sign(i, &without9)).collect();
    let b: Vec<_> = (6..10).map(|i| r.sign(i, &all)).collect();
    let mut responses = Vec::new();
    for i in 0..6 {
        responses.push(
            r.clients[i as usize]
                .unmask(&request(r.round, i, &without9, &a))
                .unwrap(),
        );
    }
    for i in 6..10 {
        let every: Vec<_> = a.iter().chain(&b).cloned().collect();
        let err = r.clients[i as usize]
            .unmask(&request(r.round, i, &all, &every))
            .unwrap_err();
        assert!(matches!(
            err,
            SecAggError::Aborted(AbortReason::TooFewSignatures { valid: 4, .. })
        ));
    }
    // Asking the six again, now with 9 alive, gets nothing: they answered once.
    for i in 0..6 {
        assert!(
            r.clients[i as usize]
                .unmask(&request(r.round, i, &all, &b))
                .is_err()
        );
    }
    let h = holdings(&responses);
    assert_eq!(h[&(9, ShareKind::MaskKey)].len(), 6);
    assert!(!h.contains_key(&(9, ShareKind::SelfMaskSeed)));
    assert_no_site_unmasked(&h);
}

#[test]
fn messages_replayed_from_an_earlier_round_abort() {
    // Round 6 ran to its end; its signed keys and survivor signatures are on record.
    let mut r6 = Round::new(active_config(6), 46);
    let keys6 = r6.peer_keys();
    let mut r6 = Round::new(active_config(6), 46);
    r6.run_to_consistency();
    let all: Vec<SiteId> = (0..N).collect();
    let sigs6: Vec<_> = (0..N).map(|i| r6.sign(i, &all)).collect();
    // Round 7 (fresh keys): the coordinator relays round 6's signed key bundle of site 1.
    let mut r7 = Round::new(active_config(7), 47);
    let mut m = r7.peer_keys().remove(0);
    m.peers[0] = keys6[0].peers[0].clone();
    assert_eq!(
        bad_signature(r7.clients[0].share_keys(&m).unwrap_err()).0,
        1
    );
    // A whole message of round 6 is refused (and, not being forged, aborts nothing).
    assert!(matches!(
        r7.clients[2].share_keys(&keys6[2]),
        Err(SecAggError::WrongRound {
            expected: 7,
            got: 6
        })
    ));
    // Round 6's survivor signatures, over the very same list, do not count in round 7.
    let mut r7 = Round::new(active_config(7), 48);
    r7.run_to_consistency();
    for i in 0..N {
        r7.sign(i, &all);
    }
    let err = r7.clients[3]
        .unmask(&request(r7.round, 3, &all, &sigs6))
        .unwrap_err();
    assert_eq!(
        err,
        SecAggError::Aborted(AbortReason::TooFewSignatures {
            valid: 0,
            required: T
        })
    );
    // Nor do signatures of another federation with the same round.
    let mut other = Round::new(
        config(N, T, GraphSpec::Complete, 32).with_active_security(auth::context_of(b"other")),
        49,
    );
    other.run_to_consistency();
    let foreign: Vec<_> = (0..N).map(|i| other.sign(i, &all)).collect();
    let err = r7.clients[4]
        .unmask(&request(r7.round, 4, &all, &foreign))
        .unwrap_err();
    assert!(matches!(
        err,
        SecAggError::Aborted(AbortReason::TooFewSignatures { valid: 0, .. })
    ));
    assert_no_secret(&holdings(&[]));
}

#[test]
fn a_request_to_unmask_a_live_site_is_refused() {
    let mut r = Round::new(active_config(7), 50);
    r.run_to_consistency();
    let all: Vec<SiteId> = (0..N).collect();
    let sigs: Vec<_> = (0..N).map(|i| r.sign(i, &all)).collect();
    // Every site signed that 9 is alive; the coordinator asks site 0 to treat 9 as dropped
    // (which would reveal 9's mask-key share), with the genuine signatures attached.
    let err = r.clients[0]
        .unmask(&request(r.round, 0, &without9_of(N), &sigs))
        .unwrap_err();
    assert_eq!(
        err,
        SecAggError::Aborted(AbortReason::InconsistentSurvivors)
    );
    // Signatures forged by the coordinator or duplicated from one site do not reach t.
    let one = vec![sigs[1].clone(); N as usize];
    let err = r.clients[1]
        .unmask(&request(r.round, 1, &all, &one))
        .unwrap_err();
    assert!(matches!(
        err,
        SecAggError::Aborted(AbortReason::TooFewSignatures { valid: 1, .. })
    ));
    // An honest request to the others reveals only self-mask seeds: 9 is alive.
    let responses: Vec<_> = (2..N)
        .map(|i| {
            r.clients[i as usize]
                .unmask(&request(r.round, i, &all, &sigs))
                .unwrap()
        })
        .collect();
    assert!(responses.iter().all(|r| r.key_shares.is_empty()));
    let h = holdings(&responses);
    assert!(h.keys().all(|(_, kind)| *kind == ShareKind::SelfMaskSeed));
    assert_no_site_unmasked(&h);
}
