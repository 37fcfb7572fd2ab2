use super::*;
use crate::data::testutil::temp_dir;
use proptest::prelude::*;

/// Fashion-MNIST-like labels: `per_class` examples of each class, interleaved.
fn balanced(num_classes: u32, per_class: usize) -> Vec<u32> {
    (0..per_class).flat_map(|_| 0..num_classes).collect()
}

/// Panics unless every index in `0..n` appears in exactly one site.
fn assert_exact_cover(sites: &[Vec<usize>], n: usize) {
    let mut seen = vec![0u32; n];
    for site in sites {
        for &i in site {
            seen[i] += 1;
        }
    }
    let bad: Vec<usize> = (0..n).filter(|&i| seen[i] != 1).collect();
    assert!(bad.is_empty(), "indices not assigned exactly once: {bad:?}");
}

fn distinct_labels(site: &[usize], labels: &[u32]) -> usize {
    let mut ls: Vec<u32> = site.iter().map(|&i| labels[i]).collect();
    ls.sort_unstable();
    ls.dedup();
    ls.len()
}

/// Mean over sites of the total-variation distance between the site's and the global label mix.
fn mean_label_skew(sites: &[Vec<usize>], labels: &[u32], num_classes: usize) -> f64 {
    let mut global = vec![0f64; num_classes];
    for &l in labels {
        global[l as usize] += 1.0 / labels.len() as f64;
    }
    let tv: f64 = sites
        .iter()
        .map(|site| {
            let mut local = vec![0f64; num_classes];
            for &i in site {
                local[labels[i] as usize] += 1.0 / site.len() as f64;
            }
            0.5 * local
                .iter()
                .zip(&global)
                .map(|(a, b)| (a - b).abs())
                .sum::<f64>()
        })
        .sum();
    tv / sites.len() as f64
}

fn mean_classes_per_site(sites: &[Vec<usize>], labels: &[u32]) -> f64 {
    sites
        .iter()
        .map(|s| distinct_labels(s, labels))
        .sum::<usize>() as f64
        / sites.len() as f64
}

fn scheme_strategy() -> impl Strategy<Value = Partition> {
    prop_oneof![
        Just(Partition::Iid),
        (0.01f64..100.0).prop_map(|alpha| Partition::Dirichlet { alpha }),
        (1usize..4).prop_map(|shards_per_site| Partition::Shards { shards_per_site }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_index_assigned_exactly_once(
        labels in prop::collection::vec(0u32..6, 1..400),
        num_sites in 1usize..9,
        scheme in scheme_strategy(),
        seed in any::<u64>(),
        min_per_site in 0usize..12,
        self_balancing in any::<bool>(),
    ) {
        let options = PartitionOptions { min_per_site, max_attempts: 10, self_balancing };
        match partition_with(&labels, 6, num_sites, &scheme, seed, &options) {
            Ok(sites) => {
                prop_assert_eq!(sites.len(), num_sites);
                assert_exact_cover(&sites, labels.len());
                prop_assert!(sites.iter().all(|s| s.windows(2).all(|w| w[0] < w[1])));
                if let Partition::Dirichlet { .. } = scheme {
                    prop_assert!(sites.iter().all(|s| s.len() >= min_per_site.max(1)));
                }
                if scheme == Partition::Iid {
                    let (lo, hi) = (labels.len() / num_sites, labels.len().div_ceil(num_sites));
                    prop_assert!(sites.iter().all(|s| s.len() == lo || s.len() == hi));
                }
            }
            Err(PartitionError::TooFewExamples { available, needed, .. }) => {
                prop_assert!(available < needed);
            }
            Err(e @ PartitionError::DirichletMinSize { .. }) => {
                prop_assert!(matches!(scheme, Partition::Dirichlet { .. }), "{}", e);
            }
            Err(e) => prop_assert!(false, "unexpected error: {}", e),
        }
    }
}

#[test]
fn same_seed_same_split_other_seed_other_split() {
    let labels = balanced(10, 100);
    for scheme in [
        Partition::Iid,
        Partition::Dirichlet { alpha: 0.5 },
        Partition::Shards { shards_per_site: 2 },
    ] {
        let a = partition(&labels, 10, 7, &scheme, 42).unwrap();
        let b = partition(&labels, 10, 7, &scheme, 42).unwrap();
        let c = partition(&labels, 10, 7, &scheme, 43).unwrap();
        assert_eq!(a, b, "{scheme:?}");
        assert_ne!(a, c, "{scheme:?}");
    }
}

#[test]
fn iid_is_near_equal_and_mixed() {
    let labels = balanced(10, 1000);
    let sites = partition(&labels, 10, 7, &Partition::Iid, 3).unwrap();
    assert_exact_cover(&sites, labels.len());
    let sizes: Vec<usize> = sites.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![1429, 1429, 1429, 1429, 1428, 1428, 1428]);
    assert!(mean_label_skew(&sites, &labels, 10) < 0.05);
    assert!(sites.iter().all(|s| distinct_labels(s, &labels) == 10));
}

#[test]
fn small_alpha_is_more_skewed_than_large_alpha() {
    let labels = balanced(10, 600);
    let mut skew = Vec::new();
    let mut classes = Vec::new();
    for alpha in [0.1, 1.0, 100.0] {
        let sites = partition(&labels, 10, 10, &Partition::Dirichlet { alpha }, 11).unwrap();
        assert_exact_cover(&sites, labels.len());
        assert!(sites.iter().all(|s| s.len() >= 10));
        skew.push(mean_label_skew(&sites, &labels, 10));
        classes.push(mean_classes_per_site(&sites, &labels));
    }
    assert!(
        skew[0] > skew[1] && skew[1] > skew[2],
        "skew by alpha: {skew:?}"
    );
    assert!(
        skew[0] > 0.5,
        "alpha 0.1 should be strongly skewed: {skew:?}"
    );
    assert!(skew[2] < 0.1, "alpha 100 should be close to IID: {skew:?}");
    assert!(classes[0] < classes[2], "classes per site: {classes:?}");
    assert_eq!(classes[2], 10.0);
}

#[test]
fn self_balancing_keeps_sites_closer_to_equal() {
    let labels = balanced(10, 600);
    // Largest minus smallest site, summed over several seeds (one seed alone can go either way).
    let spread = |self_balancing: bool| -> usize {
        let options = PartitionOptions {
            self_balancing,
            ..PartitionOptions::default()
        };
        (0..10)
            .map(|seed| {
                let scheme = Partition::Dirichlet { alpha: 0.3 };
                let sites = partition_with(&labels, 10, 10, &scheme, seed, &options).unwrap();
                assert_exact_cover(&sites, labels.len());
                let max = sites.iter().map(Vec::len).max().unwrap();
                let min = sites.iter().map(Vec::len).min().unwrap();
                max - min
            })
            .sum()
    };
    let (with, without) = (spread(true), spread(false));
    assert!(
        with < without,
        "spread with balancing {with}, without {without}"
    );
}

#[test]
fn dirichlet_errors_are_clear() {
    let labels = balanced(2, 50);
    // Alpha near 0 sends each class to one site, so at most two of five sites get data.
    let err = partition(&labels, 2, 5, &Partition::Dirichlet { alpha: 1e-3 }, 0).unwrap_err();
    assert!(
        matches!(
            err,
            PartitionError::DirichletMinSize {
                attempts: 10,
                min_per_site: 10,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("raise data.alpha"), "{err}");

    let err = partition(&labels, 2, 11, &Partition::Dirichlet { alpha: 1.0 }, 0).unwrap_err();
    assert!(
        matches!(
            err,
            PartitionError::TooFewExamples {
                needed: 110,
                available: 100,
                ..
            }
        ),
        "{err:?}"
    );
    for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = partition(&labels, 2, 2, &Partition::Dirichlet { alpha }, 0).unwrap_err();
        assert!(
            matches!(err, PartitionError::InvalidAlpha { .. }),
            "{err:?}"
        );
    }
}

#[test]
fn shards_follow_mcmahan() {
    // 100 sites x 2 shards of 300 over 60,000 balanced labels, as in McMahan et al. 2017.
    let labels = balanced(10, 6000);
    let sites = partition(
        &labels,
        10,
        100,
        &Partition::Shards { shards_per_site: 2 },
        9,
    )
    .unwrap();
    assert_exact_cover(&sites, labels.len());
    assert!(sites.iter().all(|s| s.len() == 600));
    // Each shard lies within one class, so a site sees at most shards_per_site labels.
    assert!(sites.iter().all(|s| distinct_labels(s, &labels) <= 2));
    assert!(mean_classes_per_site(&sites, &labels) > 1.5);

    // Unequal class sizes: a shard no larger than the smallest class spans at most 2 labels.
    let mut labels: Vec<u32> = balanced(5, 97);
    labels.extend(std::iter::repeat_n(7, 31));
    for spp in 1..4 {
        let sites = partition(
            &labels,
            8,
            9,
            &Partition::Shards {
                shards_per_site: spp,
            },
            1,
        )
        .unwrap();
        assert_exact_cover(&sites, labels.len());
        assert!(sites.iter().all(|s| distinct_labels(s, &labels) <= 2 * spp));
    }
}

#[test]
fn shards_errors() {
    let labels = balanced(2, 5);
    let err = partition(&labels, 2, 2, &Partition::Shards { shards_per_site: 0 }, 0).unwrap_err();
    assert!(matches!(err, PartitionError::ZeroShards), "{err:?}");
    let err = partition(&labels, 2, 4, &Partition::Shards { shards_per_site: 3 }, 0).unwrap_err();
    assert!(
        matches!(err, PartitionError::TooFewExamples { needed: 12, .. }),
        "{err:?}"
    );
}

#[test]
fn general_errors() {
    let err = partition(&[0, 1], 2, 0, &Partition::Iid, 0).unwrap_err();
    assert!(matches!(err, PartitionError::NoSites), "{err:?}");
    let err = partition(&[0, 1, 3], 3, 1, &Partition::Iid, 0).unwrap_err();
    assert!(
        matches!(
            err,
            PartitionError::LabelOutOfRange {
                index: 2,
                label: 3,
                num_classes: 3
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("at least 4"), "{err}");
    let err = partition(&[0, 1], 2, 3, &Partition::Iid, 0).unwrap_err();
    assert!(
        matches!(
            err,
            PartitionError::TooFewExamples {
                needed: 3,
                available: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn explicit_split_is_validated() {
    let labels = balanced(2, 3);
    let ok = Partition::Explicit(vec![vec![5, 0], vec![2]]);
    assert_eq!(
        partition(&labels, 2, 2, &ok, 0).unwrap(),
        vec![vec![5, 0], vec![2]]
    );

    let err = partition(&labels, 2, 3, &ok, 0).unwrap_err();
    assert!(
        matches!(
            err,
            PartitionError::SiteCountMismatch { lists: 2, sites: 3 }
        ),
        "{err:?}"
    );

    let bad = Partition::Explicit(vec![vec![0, 6], vec![1]]);
    let err = partition(&labels, 2, 2, &bad, 0).unwrap_err();
    assert!(
        matches!(
            err,
            PartitionError::IndexOutOfRange {
                site: 0,
                position: 1,
                index: 6,
                num_examples: 6
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("0..=5"), "{err}");

    let dup = Partition::Explicit(vec![vec![0, 1], vec![2, 1]]);
    let err = partition(&labels, 2, 2, &dup, 0).unwrap_err();
    assert!(
        matches!(
            err,
            PartitionError::DuplicateIndex {
                index: 1,
                first_site: 0,
                second_site: 1
            }
        ),
        "{err:?}"
    );
    let twice = Partition::Explicit(vec![vec![3, 3], vec![2]]);
    let err = partition(&labels, 2, 2, &twice, 0).unwrap_err();
    assert!(
        matches!(err, PartitionError::DuplicateIndex { index: 3, .. }),
        "{err:?}"
    );

    let empty = Partition::Explicit(vec![vec![0], vec![]]);
    let err = partition(&labels, 2, 2, &empty, 0).unwrap_err();
    assert!(
        matches!(err, PartitionError::EmptySite { site: 1 }),
        "{err:?}"
    );
}

#[test]
fn split_json_roundtrip_and_errors() {
    let dir = temp_dir("split");
    let labels = balanced(3, 20);
    let sites = partition(&labels, 3, 4, &Partition::Dirichlet { alpha: 1.0 }, 8).unwrap();
    let path = dir.join("split.json");
    save_split_json(&path, &sites).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 4 + 2, "one line per site:\n{text}");
    let loaded = load_split_json(&path).unwrap();
    assert_eq!(loaded, sites);
    let again = partition(&labels, 3, 4, &Partition::Explicit(loaded), 0).unwrap();
    assert_eq!(again, sites);

    save_split_json(&path, &[]).unwrap();
    assert_eq!(load_split_json(&path).unwrap(), Vec::<Vec<usize>>::new());

    std::fs::write(&path, "[\n  [0, 1],\n  [2, -3]\n]\n").unwrap();
    let err = load_split_json(&path).unwrap_err();
    assert!(
        matches!(err, PartitionError::Json { line: 3, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("split.json:3:"), "{msg}");
    assert!(msg.contains("[[0, 3], [1, 2]]"), "{msg}");
    assert!(!msg.contains(" at line "), "position given once: {msg}");

    std::fs::write(&path, "{\"sites\": []}").unwrap();
    let err = load_split_json(&path).unwrap_err();
    assert!(
        matches!(err, PartitionError::Json { line: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("expected a sequence"), "{err}");

    let err = load_split_json(&dir.join("missing.json")).unwrap_err();
    assert!(matches!(err, PartitionError::File(_)), "{err:?}");
    assert!(err.to_string().contains("missing.json"), "{err}");
    #[cfg(unix)]
    {
        let err = load_split_json(std::path::Path::new("/dev/zero")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}
