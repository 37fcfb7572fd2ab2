//! Who pairs with whom: the complete graph of Bonawitz et al. or the sparse random Harary graph
//! of SecAgg+ (Bell et al., CCS 2020).
//!
//! A site's *holders* are its neighbours plus itself: they receive the Shamir shares of its
//! secrets, and the threshold `t` counts among them.

use std::collections::BTreeMap;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use super::SiteId;
use super::error::SecAggError;

/// The pairing graph of a round.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GraphSpec {
    /// Every site pairs with every other site (Bonawitz et al. 2017).
    Complete,
    /// SecAgg+: sites are placed on a ring in a seeded random order and each pairs with the
    /// `degree / 2` nearest sites on either side (a Harary graph H(degree, n)). `degree` must be
    /// even; a degree of at least `n - 1` gives the complete graph.
    Harary {
        /// Number of neighbours of every site (even, at least 2).
        degree: usize,
        /// Seed of the ring order; public and agreed, like the rest of the round settings.
        seed: u64,
    },
}

/// The neighbourhoods of every site of a round, as built from a [`GraphSpec`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbourhoods {
    map: BTreeMap<SiteId, Vec<SiteId>>,
}

/// Uniform index in `0..bound` by rejection sampling (platform independent).
fn uniform_below(rng: &mut impl RngCore, bound: u64) -> u64 {
    let zone = u64::MAX - (u64::MAX % bound);
    loop {
        let v = rng.next_u64();
        if v < zone {
            return v % bound;
        }
    }
}

impl Neighbourhoods {
    /// Builds the neighbourhoods of `sites` (distinct ids) for the given graph.
    pub fn build(sites: &[SiteId], spec: &GraphSpec) -> Result<Self, SecAggError> {
        let mut sorted = sites.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != sites.len() {
            return Err(SecAggError::Config("site ids must be distinct".into()));
        }
        let n = sorted.len();
        let complete = |sorted: &[SiteId]| {
            sorted
                .iter()
                .map(|&u| (u, sorted.iter().copied().filter(|&v| v != u).collect()))
                .collect()
        };
        let map = match *spec {
            GraphSpec::Complete => complete(&sorted),
            GraphSpec::Harary { degree, seed } => {
                if degree < 2 || degree % 2 != 0 {
                    return Err(SecAggError::Config(format!(
                        "SecAgg+ degree must be even and at least 2, got {degree}"
                    )));
                }
                if degree + 1 >= n {
                    complete(&sorted)
                } else {
                    let mut ring = sorted.clone();
                    let mut rng = ChaCha20Rng::seed_from_u64(seed);
                    for i in (1..n).rev() {
                        let j = uniform_below(&mut rng, i as u64 + 1) as usize;
                        ring.swap(i, j);
                    }
                    let half = degree / 2;
                    let mut map = BTreeMap::new();
                    for (pos, &u) in ring.iter().enumerate() {
                        let mut nb: Vec<SiteId> = (1..=half)
                            .flat_map(|d| [ring[(pos + d) % n], ring[(pos + n - d) % n]])
                            .collect();
                        nb.sort_unstable();
                        map.insert(u, nb);
                    }
                    map
                }
            }
        };
        Ok(Neighbourhoods { map })
    }

    /// The neighbours of `site` (sorted, without `site`); empty for an unknown site.
    pub fn neighbours(&self, site: SiteId) -> &[SiteId] {
        self.map.get(&site).map_or(&[], Vec::as_slice)
    }

    /// Whether `site` belongs to the round.
    pub fn contains(&self, site: SiteId) -> bool {
        self.map.contains_key(&site)
    }

    /// Whether `a` and `b` pair with each other.
    pub fn are_neighbours(&self, a: SiteId, b: SiteId) -> bool {
        self.neighbours(a).binary_search(&b).is_ok()
    }

    /// Holders of `site`'s shares: its neighbours and itself, sorted.
    pub fn holders(&self, site: SiteId) -> Vec<SiteId> {
        let mut h = self.neighbours(site).to_vec();
        if self.contains(site) {
            let pos = h.binary_search(&site).unwrap_or_else(|p| p);
            h.insert(pos, site);
        }
        h
    }

    /// All sites, sorted.
    pub fn sites(&self) -> impl Iterator<Item = SiteId> + '_ {
        self.map.keys().copied()
    }

    /// Number of sites.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the graph has no site.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The smallest number of holders any site has.
    pub fn min_holders(&self) -> usize {
        self.map.values().map(|v| v.len() + 1).min().unwrap_or(0)
    }

    /// The largest number of holders any site has.
    pub fn max_holders(&self) -> usize {
        self.map.values().map(|v| v.len() + 1).max().unwrap_or(0)
    }
}
