//! Hostile and broken messages: tampering, wrong rounds, replays, share-kind violations,
//! missing shares. Each must be rejected with a typed error and change nothing.

use super::{config, inputs, max_abs_diff, plaintext_mean, unmask_requests};
use crate::secagg::messages::RevealedShare;
use crate::secagg::sim::SiteInput;
use crate::secagg::{
    AbortReason, GraphSpec, MaskedInput, MaskedVector, PeerKeys, Phase, RoutedShares, SecAggClient,
    SecAggConfig, SecAggError, SecAggServer, ShareKind, SiteId, UnmaskRequest, UnmaskResponse,
    quantization_bound,
};

/// A round driven step by step, so tests can intercept any message.
struct Round {
    cfg: SecAggConfig,
    ins: Vec<SiteInput>,
    server: SecAggServer,
    clients: Vec<SecAggClient>,
}

impl Round {
    fn new(cfg: SecAggConfig, salt: u64) -> Self {
        let n = cfg.sites.len() as u32;
        let ins = inputs(n, cfg.dimension, salt);
        let server = SecAggServer::new(cfg.clone()).unwrap();
        let clients = ins
            .iter()
            .map(|i| SecAggClient::new(cfg.clone(), i.id, i.rng_seed).unwrap())
            .collect();
        Round {
            cfg,
            ins,
            server,
            clients,
        }
    }

    fn advertise(&mut self) -> Vec<PeerKeys> {
        for c in &mut self.clients {
            self.server
                .receive_advertise(&c.advertise_keys().unwrap())
                .unwrap();
        }
        self.server.close_advertise().unwrap()
    }

    fn share(&mut self) -> Vec<RoutedShares> {
        for m in self.advertise() {
            let msg = self.clients[m.recipient as usize].share_keys(&m).unwrap();
            self.server.receive_shares(&msg).unwrap();
        }
        self.server.close_shares().unwrap()
    }

    fn masked(&mut self, routed: &[RoutedShares]) -> Vec<MaskedInput> {
        routed
            .iter()
            .map(|m| {
                let i = m.recipient as usize;
                self.clients[i]
                    .masked_input(m, &self.ins[i].update, self.ins[i].weight)
                    .unwrap()
            })
            .collect()
    }

    /// Runs to the unmasking requests with the given sites' masked inputs withheld.
    fn run_to_unmask(&mut self, withheld: &[SiteId]) -> Vec<UnmaskRequest> {
        let routed = self.share();
        for m in self.masked(&routed) {
            if !withheld.contains(&m.sender) {
                self.server.receive_masked(&m).unwrap();
            }
        }
        unmask_requests(self.server.close_masked().unwrap())
    }

    fn check_result(&mut self) {
        let agg = self.server.finish().unwrap();
        let want = plaintext_mean(&self.ins, &agg.contributors, self.cfg.encoding.clip);
        let bound = quantization_bound(&self.cfg.encoding, agg.contributors.len());
        assert!(max_abs_diff(&agg.mean, &want) <= bound);
    }
}

fn ten() -> SecAggConfig {
    config(10, 6, GraphSpec::Complete, 64)
}

#[test]
fn tampered_ciphertext_is_rejected_and_changes_nothing() {
    let mut r = Round::new(ten(), 20);
    let routed = r.share();
    let mut bad = routed[2].clone();
    let sender = bad.shares[3].sender;
    bad.shares[3].ciphertext[40] ^= 0x80;
    let (u, w) = (r.ins[2].update.clone(), r.ins[2].weight);
    assert_eq!(
        r.clients[2].masked_input(&bad, &u, w).unwrap_err(),
        SecAggError::Decryption {
            sender,
            recipient: 2
        }
    );
    assert_eq!(r.clients[2].phase(), Phase::MaskedInput);
    // A ciphertext moved to another recipient fails too (AD and key bind the pair).
    let mut moved = routed[2].clone();
    assert_eq!((moved.shares[0].sender, routed[4].shares[0].sender), (0, 0));
    moved.shares[0] = routed[4].shares[0].clone(); // site 0's ciphertext for site 4
    moved.shares[0].recipient = 2;
    assert_eq!(
        r.clients[2].masked_input(&moved, &u, w).unwrap_err(),
        SecAggError::Decryption {
            sender: 0,
            recipient: 2
        }
    );
    // The untouched message still works and the round completes correctly.
    for m in r.masked(&routed) {
        r.server.receive_masked(&m).unwrap();
    }
    for m in unmask_requests(r.server.close_masked().unwrap()) {
        let resp = r.clients[m.recipient as usize].unmask(&m).unwrap();
        r.server.receive_unmask(&resp).unwrap();
    }
    r.check_result();
}

#[test]
fn shares_from_another_round_are_rejected() {
    // Same site seeds in rounds 7 and 8: identical X25519 keys, so only the round id bound
    // into the key derivation and the associated data tells the ciphertexts apart.
    let mut r7 = Round::new(ten(), 21);
    let mut cfg8 = ten();
    cfg8.round = 8;
    let mut r8 = Round::new(cfg8, 21);
    let routed7 = r7.share();
    let routed8 = r8.share();
    let mut replayed = routed8[1].clone();
    replayed.shares = routed7[1].shares.clone();
    let (u, w) = (r8.ins[1].update.clone(), r8.ins[1].weight);
    assert!(matches!(
        r8.clients[1].masked_input(&replayed, &u, w),
        Err(SecAggError::Decryption { .. })
    ));
    // A message labelled with the old round is refused before anything is decrypted.
    assert_eq!(
        r8.clients[1].masked_input(&routed7[1], &u, w).unwrap_err(),
        SecAggError::WrongRound {
            expected: 8,
            got: 7
        }
    );
    // The coordinator refuses old-round messages too.
    let old = r7.masked(&routed7);
    assert_eq!(
        r8.server.receive_masked(&old[0]).unwrap_err(),
        SecAggError::WrongRound {
            expected: 8,
            got: 7
        }
    );
}

#[test]
fn replayed_messages_are_rejected_and_not_counted_twice() {
    let mut r = Round::new(ten(), 22);
    let ads: Vec<_> = r
        .clients
        .iter_mut()
        .map(|c| c.advertise_keys().unwrap())
        .collect();
    for a in &ads {
        r.server.receive_advertise(a).unwrap();
    }
    assert_eq!(
        r.server.receive_advertise(&ads[3]).unwrap_err(),
        SecAggError::Replay {
            sender: 3,
            phase: Phase::AdvertiseKeys
        }
    );
    // A site advertising twice is refused by the site itself.
    assert!(matches!(
        r.clients[3].advertise_keys(),
        Err(SecAggError::WrongPhase { .. })
    ));
    let peer_keys = r.server.close_advertise().unwrap();
    let mut shares = Vec::new();
    for m in &peer_keys {
        let s = r.clients[m.recipient as usize].share_keys(m).unwrap();
        r.server.receive_shares(&s).unwrap();
        shares.push(s);
    }
    assert!(matches!(
        r.server.receive_shares(&shares[0]),
        Err(SecAggError::Replay { sender: 0, .. })
    ));
    let routed = r.server.close_shares().unwrap();
    // A routed ciphertext repeated within one message is a replay.
    let mut dup = routed[5].clone();
    dup.shares.push(dup.shares[0].clone());
    let (u, w) = (r.ins[5].update.clone(), r.ins[5].weight);
    assert!(matches!(
        r.clients[5].masked_input(&dup, &u, w),
        Err(SecAggError::Replay { .. })
    ));
    let masked = r.masked(&routed);
    for m in &masked {
        r.server.receive_masked(m).unwrap();
    }
    assert_eq!(
        r.server.receive_masked(&masked[7]).unwrap_err(),
        SecAggError::Replay {
            sender: 7,
            phase: Phase::MaskedInput
        }
    );
    let reqs = unmask_requests(r.server.close_masked().unwrap());
    let resps: Vec<_> = reqs
        .iter()
        .map(|m| r.clients[m.recipient as usize].unmask(m).unwrap())
        .collect();
    for resp in &resps {
        r.server.receive_unmask(resp).unwrap();
    }
    assert!(matches!(
        r.server.receive_unmask(&resps[2]),
        Err(SecAggError::Replay { sender: 2, .. })
    ));
    // The replayed masked input was not added twice: the result is still right.
    r.check_result();
}

#[test]
fn a_site_never_reveals_both_shares_of_a_peer() {
    let mut r = Round::new(ten(), 23);
    let reqs = r.run_to_unmask(&[9]); // site 9 sent shares but no masked input
    let resp0 = r.clients[0].unmask(&reqs[0]).unwrap();
    let seed_owners: Vec<_> = resp0.seed_shares.iter().map(|s| s.owner).collect();
    let key_owners: Vec<_> = resp0.key_shares.iter().map(|s| s.owner).collect();
    assert_eq!(seed_owners, (0..9).collect::<Vec<_>>());
    assert_eq!(key_owners, vec![9]);
    // A second request (say, now claiming 9 survived) is refused: the site answered once.
    let mut again = reqs[0].clone();
    again.survivors = (0..10).collect();
    assert_eq!(
        r.clients[0].unmask(&again).unwrap_err(),
        SecAggError::WrongPhase {
            current: Phase::Done,
            got: Phase::Unmasking
        }
    );
    // The coordinator refuses a response that reveals both kinds for one owner...
    let mut both = resp0.clone();
    both.seed_shares.push(RevealedShare {
        owner: 9,
        values: both.key_shares[0].values,
    });
    assert_eq!(
        r.server.receive_unmask(&both).unwrap_err(),
        SecAggError::BothShareKinds { peer: 9 }
    );
    // ... or the wrong kind for an owner's status.
    let mut wrong = resp0.clone();
    wrong.seed_shares.push(wrong.key_shares.remove(0));
    assert_eq!(
        r.server.receive_unmask(&wrong).unwrap_err(),
        SecAggError::ShareKindMismatch {
            sender: 0,
            owner: 9,
            kind: ShareKind::SelfMaskSeed
        }
    );
    let mut missing = resp0.clone();
    missing.seed_shares.pop();
    assert!(matches!(
        r.server.receive_unmask(&missing),
        Err(SecAggError::Malformed { .. })
    ));
    // The honest response is accepted and the round completes.
    r.server.receive_unmask(&resp0).unwrap();
    for m in &reqs[1..] {
        let resp = r.clients[m.recipient as usize].unmask(m).unwrap();
        r.server.receive_unmask(&resp).unwrap();
    }
    r.check_result();
}

#[test]
fn unmasking_with_fewer_than_t_shares_fails() {
    // SecAgg+ (30 sites, 8 neighbours, t = 5): enough sites overall, but five of one site's
    // eight neighbours do not answer the unmasking request, leaving 4 < 5 holders.
    let cfg = config(30, 5, GraphSpec::Harary { degree: 8, seed: 3 }, 32);
    let victim = 12;
    let silent: Vec<SiteId> = SecAggServer::new(cfg.clone())
        .unwrap()
        .graph()
        .neighbours(victim)[..5]
        .to_vec();
    let mut r = Round::new(cfg, 24);
    for m in r.run_to_unmask(&[]) {
        if !silent.contains(&m.recipient) {
            let resp = r.clients[m.recipient as usize].unmask(&m).unwrap();
            r.server.receive_unmask(&resp).unwrap();
        }
    }
    let err = r.server.finish().unwrap_err();
    assert!(
        matches!(
            err,
            SecAggError::Aborted(AbortReason::TooFewShares {
                kind: ShareKind::SelfMaskSeed,
                available: 4,
                threshold: 5,
                ..
            })
        ),
        "{err}"
    );
    assert!(r.server.finish().is_err());
}

#[test]
fn corrupted_revealed_share_aborts_instead_of_releasing_garbage() {
    let mut r = Round::new(ten(), 25);
    let reqs = r.run_to_unmask(&[4]);
    for m in &reqs {
        let mut resp = r.clients[m.recipient as usize].unmask(m).unwrap();
        if m.recipient == 0 {
            // Corrupt site 0's share of dropped site 4's mask key.
            resp.key_shares[0].values[1] =
                (resp.key_shares[0].values[1] + 1) % crate::secagg::shamir::P;
        }
        r.server.receive_unmask(&resp).unwrap();
    }
    let err = r.server.finish().unwrap_err();
    assert!(
        matches!(
            err,
            SecAggError::Aborted(
                AbortReason::InconsistentShares { site: 4, .. }
                    | AbortReason::KeyMismatch { site: 4 }
            )
        ),
        "{err}"
    );
}

#[test]
fn malformed_and_misaddressed_messages_are_rejected() {
    let mut r = Round::new(ten(), 26);
    let routed = r.share();
    let masked = r.masked(&routed);
    // Wrong length and wrong ring.
    let mut short = masked[0].clone();
    if let MaskedVector::U32(v) = &mut short.vector {
        v.pop();
    }
    assert!(matches!(
        r.server.receive_masked(&short),
        Err(SecAggError::Malformed { sender: 0, .. })
    ));
    let wide = MaskedInput {
        vector: MaskedVector::U64(vec![0; 65]),
        ..masked[0].clone()
    };
    assert!(matches!(
        r.server.receive_masked(&wide),
        Err(SecAggError::Malformed { .. })
    ));
    // Unknown sender.
    let stranger = MaskedInput {
        sender: 99,
        ..masked[0].clone()
    };
    assert_eq!(
        r.server.receive_masked(&stranger).unwrap_err(),
        SecAggError::UnexpectedSender {
            sender: 99,
            phase: Phase::MaskedInput
        }
    );
    // A message of another phase.
    assert!(matches!(
        r.server.close_advertise(),
        Err(SecAggError::WrongPhase { .. })
    ));
    for m in &masked {
        r.server.receive_masked(m).unwrap();
    }
    let reqs = unmask_requests(r.server.close_masked().unwrap());
    // A request for another site.
    assert_eq!(
        r.clients[1].unmask(&reqs[2]).unwrap_err(),
        SecAggError::WrongRecipient {
            expected: 1,
            got: 2
        }
    );
    // A response forged by a non-survivor name is refused.
    let forged = UnmaskResponse {
        round: 7,
        sender: 42,
        seed_shares: vec![],
        key_shares: vec![],
    };
    assert!(matches!(
        r.server.receive_unmask(&forged),
        Err(SecAggError::UnexpectedSender { .. })
    ));
}

#[test]
fn sites_check_their_own_update_and_peer_keys() {
    let mut r = Round::new(ten(), 27);
    let peer_keys = r.advertise();
    // Peer keys: a non-neighbour, a repeated key, a weak (low-order) key.
    let mut stranger = peer_keys[0].clone();
    stranger.peers[0].site = 77;
    assert!(matches!(
        r.clients[0].share_keys(&stranger),
        Err(SecAggError::Malformed { .. })
    ));
    let mut reused = peer_keys[0].clone();
    reused.peers[1].c_pk = reused.peers[0].c_pk;
    assert!(matches!(
        r.clients[0].share_keys(&reused),
        Err(SecAggError::Malformed { .. })
    ));
    let mut weak = peer_keys[0].clone();
    weak.peers[2].s_pk = [0; 32];
    assert_eq!(
        r.clients[0].share_keys(&weak).unwrap_err(),
        SecAggError::WeakKey {
            peer: weak.peers[2].site
        }
    );
    let mut few = peer_keys[0].clone();
    few.peers.truncate(4);
    assert_eq!(
        r.clients[0].share_keys(&few).unwrap_err(),
        SecAggError::Aborted(AbortReason::TooFewSites {
            phase: Phase::ShareKeys,
            remaining: 5,
            required: 6
        })
    );
    for m in &peer_keys {
        let s = r.clients[m.recipient as usize].share_keys(m).unwrap();
        r.server.receive_shares(&s).unwrap();
    }
    let routed = r.server.close_shares().unwrap();
    let mut bad = r.ins[0].update.clone();
    bad[5] = f32::NAN;
    assert!(matches!(
        r.clients[0].masked_input(&routed[0], &bad, 10),
        Err(SecAggError::InvalidUpdate(_))
    ));
    let good = r.ins[0].update.clone();
    assert!(matches!(
        r.clients[0].masked_input(&routed[0], &good, 0),
        Err(SecAggError::InvalidUpdate(_))
    ));
    assert!(matches!(
        r.clients[0].masked_input(&routed[0], &good, 1001),
        Err(SecAggError::InvalidUpdate(_))
    ));
    assert!(matches!(
        r.clients[0].masked_input(&routed[0], &good[..10], 10),
        Err(SecAggError::InvalidUpdate(_))
    ));
    // Nothing changed: the valid call still works.
    assert_eq!(r.clients[0].phase(), Phase::MaskedInput);
    r.clients[0].masked_input(&routed[0], &good, 10).unwrap();
}
