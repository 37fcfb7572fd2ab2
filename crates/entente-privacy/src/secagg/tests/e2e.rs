//! End-to-end rounds: correctness against the plaintext weighted mean, dropouts at every
//! phase, clean aborts below the threshold, SecAgg+ neighbourhoods, the 2^64 ring.

use super::{config, inputs, max_abs_diff, plaintext_mean, with_drops};
use crate::secagg::sim::{DropPoint, SiteInput, run_round};
use crate::secagg::{
    AbortReason, EncodingSettings, GraphSpec, MaskPrg, Modulus, Phase, SecAggConfig, SecAggError,
    SecAggServer, SiteId, quantization_bound, quantization_bound_for_weight,
};

const ALL_POINTS: [DropPoint; 4] = [
    DropPoint::BeforeAdvertise,
    DropPoint::BeforeShareKeys,
    DropPoint::BeforeMaskedInput,
    DropPoint::BeforeUnmasking,
];

/// Runs the round and checks it against the plaintext weighted mean of the sites whose
/// masked input should be in the sum. Returns the number of contributors.
fn check_round(cfg: &SecAggConfig, inputs: &[SiteInput]) -> usize {
    let agg = run_round(cfg, inputs).unwrap_or_else(|e| panic!("round failed: {e}"));
    let expected: Vec<SiteId> = inputs
        .iter()
        .filter(|i| i.drop.is_none_or(|d| d == DropPoint::BeforeUnmasking))
        .map(|i| i.id)
        .collect();
    assert_eq!(agg.contributors, expected);
    let dropped: Vec<SiteId> = cfg
        .sites
        .iter()
        .copied()
        .filter(|s| !expected.contains(s))
        .collect();
    assert_eq!(agg.dropped, dropped);
    let total: u64 = inputs
        .iter()
        .filter(|i| expected.contains(&i.id))
        .map(|i| i.weight)
        .sum();
    assert_eq!(agg.total_weight, total);
    let want = plaintext_mean(inputs, &expected, cfg.encoding.clip);
    let bound = quantization_bound(&cfg.encoding, expected.len());
    let err = max_abs_diff(&agg.mean, &want);
    assert!(err <= bound, "error {err:e} exceeds the bound {bound:e}");
    // The weight-aware bound is much tighter (weights average ~500) and still holds.
    let tight = quantization_bound_for_weight(&cfg.encoding, expected.len(), total);
    assert!(
        err <= tight,
        "error {err:e} exceeds the weight-aware bound {tight:e}"
    );
    // The decoded weighted sum (f64, before the division) is within n/2 units of the ring of
    // the exact one: each site rounds to nearest once.
    let units = expected.len() as f64 * (0.5 + 1e-6) / cfg.encoding.scale + 1e-9;
    let err_sum = agg
        .weighted_sum
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a - b * total as f64).abs())
        .fold(0.0, f64::max);
    assert!(
        err_sum <= units,
        "weighted sum off by {err_sum:e} > {units:e}"
    );
    expected.len()
}

#[test]
fn ten_sites_thousand_coordinates_equal_plaintext_weighted_mean() {
    let cfg = config(10, 6, GraphSpec::Complete, 1000);
    let bound = quantization_bound(&cfg.encoding, 10);
    assert!(
        bound < 1e-5,
        "bound {bound:e} is too loose to mean anything"
    );
    assert_eq!(check_round(&cfg, &inputs(10, 1000, 1)), 10);
}

#[test]
fn aggregate_does_not_depend_on_the_masks() {
    // Different key/mask randomness, same updates: bit-identical result (exact ring sums).
    let cfg = config(10, 6, GraphSpec::Complete, 200);
    let a = inputs(10, 200, 3);
    let mut b = a.clone();
    for i in &mut b {
        i.rng_seed[31] ^= 0xff;
    }
    let ra = run_round(&cfg, &a).unwrap();
    let rb = run_round(&cfg, &b).unwrap();
    assert_eq!(ra, rb);
}

/// Either mask generator gives the same aggregate, bit for bit, in both rings, with SecAgg and
/// SecAgg+, with and without dropouts (the coordinator then expands the dropped sites'
/// pairwise masks with the round's generator), and each equals the plaintext mean.
#[test]
fn either_mask_generator_gives_the_same_aggregate() {
    let drops = [
        (3, DropPoint::BeforeMaskedInput),
        (6, DropPoint::BeforeUnmasking),
    ];
    for modulus in [Modulus::Pow32, Modulus::Pow64] {
        for graph in [
            GraphSpec::Complete,
            GraphSpec::Harary { degree: 8, seed: 5 },
        ] {
            for dropped in [&[][..], &drops[..]] {
                let sites = with_drops(inputs(10, 777, 13), dropped);
                let results: Vec<_> = MaskPrg::ALL
                    .into_iter()
                    .map(|prg| {
                        let mut cfg = config(10, 6, graph.clone(), 777).with_prg(prg);
                        cfg.encoding.modulus = modulus;
                        check_round(&cfg, &sites);
                        run_round(&cfg, &sites).unwrap()
                    })
                    .collect();
                assert_eq!(results[0], results[1], "{modulus:?} {graph:?} {dropped:?}");
            }
        }
    }
}

#[test]
fn dropouts_of_10_and_30_percent_at_every_phase_of_10_sites() {
    let cfg = config(10, 6, GraphSpec::Complete, 1000);
    for point in ALL_POINTS {
        for ids in [&[3u32][..], &[0, 4, 9][..]] {
            let drops: Vec<_> = ids.iter().map(|&i| (i, point)).collect();
            let n = check_round(&cfg, &with_drops(inputs(10, 1000, 2), &drops));
            let dropped_from_sum = if point == DropPoint::BeforeUnmasking {
                0
            } else {
                ids.len()
            };
            assert_eq!(n, 10 - dropped_from_sum, "{point:?} {ids:?}");
        }
    }
    // 30% spread over three phases in one round.
    let mixed = [
        (1, DropPoint::BeforeShareKeys),
        (5, DropPoint::BeforeMaskedInput),
        (8, DropPoint::BeforeUnmasking),
    ];
    assert_eq!(
        check_round(&cfg, &with_drops(inputs(10, 1000, 4), &mixed)),
        8
    );
}

#[test]
fn dropouts_of_10_and_30_percent_at_every_phase_of_20_sites() {
    let cfg = config(20, 11, GraphSpec::Complete, 300);
    for point in ALL_POINTS {
        for ids in [&[1u32, 7][..], &[2, 5, 11, 13, 17, 19][..]] {
            let drops: Vec<_> = ids.iter().map(|&i| (i, point)).collect();
            check_round(&cfg, &with_drops(inputs(20, 300, 5), &drops));
        }
    }
}

#[test]
fn below_threshold_every_phase_aborts_cleanly() {
    // 10 sites, t = 6: losing 4 still works, losing 5 aborts with the phase named.
    let cfg = config(10, 6, GraphSpec::Complete, 100);
    for point in ALL_POINTS {
        let ok: Vec<_> = [0, 2, 4, 6].iter().map(|&i| (i, point)).collect();
        check_round(&cfg, &with_drops(inputs(10, 100, 6), &ok));
        let bad: Vec<_> = [0, 2, 4, 6, 8].iter().map(|&i| (i, point)).collect();
        let err = run_round(&cfg, &with_drops(inputs(10, 100, 6), &bad)).unwrap_err();
        let phase = match point {
            DropPoint::BeforeAdvertise => Phase::AdvertiseKeys,
            DropPoint::BeforeShareKeys => Phase::ShareKeys,
            DropPoint::BeforeMaskedInput => Phase::MaskedInput,
            DropPoint::BeforeUnmasking => Phase::Unmasking,
        };
        assert_eq!(
            err,
            SecAggError::Aborted(AbortReason::TooFewSites {
                phase,
                remaining: 5,
                required: 6
            }),
            "{point:?}"
        );
        assert!(err.to_string().contains("only 5 sites left"), "{err}");
    }
}

#[test]
fn aborted_coordinator_releases_nothing_afterwards() {
    let cfg = config(10, 6, GraphSpec::Complete, 50);
    let ins = inputs(10, 50, 8);
    let mut server = SecAggServer::new(cfg.clone()).unwrap();
    let mut clients: Vec<_> = ins
        .iter()
        .map(|i| crate::secagg::SecAggClient::new(cfg.clone(), i.id, i.rng_seed).unwrap())
        .collect();
    for c in &mut clients {
        server
            .receive_advertise(&c.advertise_keys().unwrap())
            .unwrap();
    }
    for m in server.close_advertise().unwrap() {
        let c = &mut clients[m.recipient as usize];
        server.receive_shares(&c.share_keys(&m).unwrap()).unwrap();
    }
    let routed = server.close_shares().unwrap();
    // Only 5 of 10 masked inputs arrive.
    let mut masked = Vec::new();
    for m in &routed {
        let i = m.recipient as usize;
        masked.push(
            clients[i]
                .masked_input(m, &ins[i].update, ins[i].weight)
                .unwrap(),
        );
    }
    for m in &masked[..5] {
        server.receive_masked(m).unwrap();
    }
    let err = server.close_masked().unwrap_err();
    assert!(matches!(err, SecAggError::Aborted(_)));
    assert_eq!(server.phase(), Phase::Aborted);
    assert!(server.abort_reason().is_some());
    // Every later call fails with the same reason; no sum is ever produced.
    assert_eq!(server.finish().unwrap_err(), err);
    assert_eq!(server.receive_masked(&masked[5]).unwrap_err(), err);
    assert_eq!(server.close_masked().unwrap_err(), err);
    assert!(server.awaiting().is_empty());
}

fn secagg_plus(n: u32, degree: usize, t: usize, dim: usize) -> SecAggConfig {
    config(n, t, GraphSpec::Harary { degree, seed: 11 }, dim)
}

#[test]
fn secagg_plus_graph_is_regular_symmetric_and_seeded() {
    let sites: Vec<SiteId> = (0..30).collect();
    let spec = GraphSpec::Harary {
        degree: 8,
        seed: 11,
    };
    let g = crate::secagg::Neighbourhoods::build(&sites, &spec).unwrap();
    for &u in &sites {
        assert_eq!(g.neighbours(u).len(), 8);
        assert!(!g.neighbours(u).contains(&u));
        for &v in g.neighbours(u) {
            assert!(g.are_neighbours(v, u));
        }
    }
    assert_eq!(
        g,
        crate::secagg::Neighbourhoods::build(&sites, &spec).unwrap()
    );
    let other = GraphSpec::Harary {
        degree: 8,
        seed: 12,
    };
    assert_ne!(
        g,
        crate::secagg::Neighbourhoods::build(&sites, &other).unwrap()
    );
    // Degree >= n - 1 is the complete graph; odd degrees are refused.
    let big = GraphSpec::Harary {
        degree: 30,
        seed: 1,
    };
    assert_eq!(
        crate::secagg::Neighbourhoods::build(&sites, &big).unwrap(),
        crate::secagg::Neighbourhoods::build(&sites, &GraphSpec::Complete).unwrap()
    );
    let odd = GraphSpec::Harary { degree: 7, seed: 1 };
    assert!(crate::secagg::Neighbourhoods::build(&sites, &odd).is_err());
}

#[test]
fn secagg_plus_with_dropouts_at_every_phase() {
    // 40 sites, 12 neighbours each (13 holders), threshold 7: every site pairs with 12
    // others instead of 39.
    let cfg = secagg_plus(40, 12, 7, 500);
    assert_eq!(check_round(&cfg, &inputs(40, 500, 9)), 40);
    for point in ALL_POINTS {
        for ids in [
            &[4u32, 17, 25, 33][..],
            &[0, 3, 8, 12, 15, 21, 22, 26, 29, 31, 34, 39][..],
        ] {
            let drops: Vec<_> = ids.iter().map(|&i| (i, point)).collect();
            check_round(&cfg, &with_drops(inputs(40, 500, 10), &drops));
        }
    }
}

#[test]
fn secagg_plus_neighbourhood_below_threshold() {
    let cfg = secagg_plus(30, 8, 5, 100);
    let graph = crate::secagg::Neighbourhoods::build(&cfg.sites, &cfg.graph).unwrap();
    let victim = 10;
    let five: Vec<SiteId> = graph.neighbours(victim)[..5].to_vec();
    // Neighbours lost after sharing: the victim's self-mask seed can never be recovered.
    let drops: Vec<_> = five
        .iter()
        .map(|&i| (i, DropPoint::BeforeMaskedInput))
        .collect();
    let err = run_round(&cfg, &with_drops(inputs(30, 100, 12), &drops)).unwrap_err();
    assert!(
        matches!(
            err,
            SecAggError::Aborted(AbortReason::TooFewShares {
                available: 4,
                threshold: 5,
                ..
            })
        ),
        "{err}"
    );
    // Neighbours lost before sharing: the victim is left out before anyone masks with it,
    // and the round completes with the others.
    let drops: Vec<_> = five
        .iter()
        .map(|&i| (i, DropPoint::BeforeShareKeys))
        .collect();
    let ins = with_drops(inputs(30, 100, 12), &drops);
    let agg = run_round(&cfg, &ins).unwrap();
    assert!(agg.dropped.contains(&victim));
    let want = plaintext_mean(&ins, &agg.contributors, 1.0);
    assert!(
        max_abs_diff(&agg.mean, &want) <= quantization_bound(&cfg.encoding, agg.contributors.len())
    );
}

#[test]
fn ring_of_2_pow_64_with_a_fine_scale() {
    let mut cfg = config(10, 6, GraphSpec::Complete, 300);
    cfg.encoding = EncodingSettings {
        clip: 4.0,
        scale: 2f64.powi(40),
        max_weight: 100_000,
        modulus: Modulus::Pow64,
    };
    let mut ins = inputs(10, 300, 13);
    for i in &mut ins {
        i.update.iter_mut().for_each(|x| *x *= 3.0);
        i.weight *= 100;
    }
    check_round(&cfg, &ins);
    // The same scale is refused in the 2^32 ring.
    cfg.encoding.modulus = Modulus::Pow32;
    assert!(matches!(cfg.validate(), Err(SecAggError::Config(_))));
}

#[test]
fn encoding_settings_are_checked_for_overflow() {
    let enc = EncodingSettings {
        clip: 1.0,
        scale: 65_536.0,
        max_weight: 1000,
        modulus: Modulus::Pow32,
    };
    // 32 * 1000 * 65536 = 2.1e9 < 2^31 - 16, but 33 sites could overflow.
    assert!(enc.validate(32).is_ok());
    let err = enc.validate(33).unwrap_err();
    assert!(err.to_string().contains("overflows"), "{err}");
    let safe = EncodingSettings {
        scale: enc.max_safe_scale(33),
        ..enc.clone()
    };
    assert!(safe.validate(33).is_ok());
    assert!(
        EncodingSettings {
            clip: f32::NAN,
            ..enc.clone()
        }
        .validate(2)
        .is_err()
    );
    assert!(
        EncodingSettings {
            max_weight: 0,
            ..enc.clone()
        }
        .validate(2)
        .is_err()
    );
    // The bound: half a unit per site over total weight >= n, plus float rounding.
    let b = quantization_bound(&enc, 10);
    assert!((b - 0.5 / 65_536.0).abs() < 1e-7, "{b}");
}

#[test]
fn threshold_must_be_a_majority_of_every_neighbourhood() {
    let mk = |t| config(10, t, GraphSpec::Complete, 10);
    assert!(mk(6).validate().is_ok());
    assert!(matches!(mk(5).validate(), Err(SecAggError::Config(_))));
    assert!(matches!(mk(11).validate(), Err(SecAggError::Config(_))));
    let mut c = mk(6);
    c.min_survivors = 5;
    assert!(c.validate().is_err());
    let plus = config(30, 4, GraphSpec::Harary { degree: 8, seed: 1 }, 10);
    assert!(plus.validate().is_err());
}
