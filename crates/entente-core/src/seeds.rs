//! The seed streams of a run. Every random choice seeded from the manifest's `seed` draws from
//! a stream of its own, named here, so that no two purposes and no two sites ever share a
//! generator, however many sites a federation has.

/// What a seed is for: one stream of [`derive`] each, per site where a site's choices must not
/// depend on another's. A site is its index in the manifest (a manifest, at most 16 MiB, names
/// fewer than `u32::MAX` sites).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    /// The sites a round selects.
    Selection,
    /// A site's local training in a round (the order of its minibatches, DP-SGD's noise).
    Training {
        /// The site's index in the manifest.
        site: u32,
    },
    /// The global test set a simulation holds out of one table.
    TestHoldout,
    /// The partition of one data set over the sites.
    Partition,
    /// The rows a site keeps out of training as its own test split.
    SiteTestSplit {
        /// The site's index in the manifest.
        site: u32,
    },
    /// The SecAgg+ graph of which sites share masks in a round.
    MaskGraph,
    /// One 64-bit word of a simulated site's key seed in a round (secure aggregation).
    KeySeed {
        /// The site's id in the secure round.
        site: u32,
        /// Which word of the seed, from 0.
        word: u8,
    },
    /// A simulated site's share of the distributed DP noise in a round.
    NoiseShare {
        /// The site's id in the secure round.
        site: u32,
    },
    /// The central DP noise a simulated coordinator adds.
    CentralNoise,
    /// A site's fine-tuning of the final global model into its personal one.
    Personalization {
        /// The site's index in the manifest.
        site: u32,
    },
    /// FedRep's training of a site's personal tensors in a round, before its shared ones
    /// (derived from that round's training seed of the site, which is the site's own).
    PersonalHead,
}

impl Stream {
    /// The stream's number: the purpose in the bits from 40 up, the site (and a key seed's
    /// word, in the low 8 bits) below, so distinct streams have distinct numbers for every
    /// `u32` site.
    pub fn id(self) -> u64 {
        let (purpose, below): (u64, u64) = match self {
            Stream::Selection => (0, 0),
            Stream::Training { site } => (1, site.into()),
            Stream::TestHoldout => (2, 0),
            Stream::Partition => (3, 0),
            Stream::SiteTestSplit { site } => (4, site.into()),
            // 5 and 6 were the baselines' own streams; a baseline now trains with the streams
            // of the federation it stands for (`Training`). Not reused.
            Stream::MaskGraph => (7, 0),
            Stream::KeySeed { site, word } => (8, (u64::from(site) << 8) | u64::from(word)),
            Stream::NoiseShare { site } => (9, site.into()),
            Stream::CentralNoise => (10, 0),
            Stream::Personalization { site } => (11, site.into()),
            Stream::PersonalHead => (12, 0),
        };
        (purpose << 40) | below
    }
}

/// The seed of `stream` in `round` of a run seeded with `seed` (round 0 for what is drawn once
/// per run). Distinct streams of one round get distinct seeds.
pub fn derive(seed: u64, round: u32, stream: Stream) -> u64 {
    mix(seed, round, stream.id())
}

/// Mixes a run seed with a round number and a stream number (the SplitMix64 finalizer). For a
/// fixed seed and round it is a bijection of the stream number: the multiplier is odd and
/// every step of the finalizer is invertible.
fn mix(seed: u64, round: u32, stream: u64) -> u64 {
    let mut z = seed
        ^ u64::from(round).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Every stream a federation of `sites` sites draws from.
    fn streams(sites: u32) -> Vec<Stream> {
        let mut all = vec![
            Stream::Selection,
            Stream::TestHoldout,
            Stream::Partition,
            Stream::MaskGraph,
            Stream::CentralNoise,
            Stream::PersonalHead,
        ];
        for site in 0..sites {
            all.extend([
                Stream::Training { site },
                Stream::SiteTestSplit { site },
                Stream::NoiseShare { site },
                Stream::Personalization { site },
            ]);
            all.extend((0..4).map(|word| Stream::KeySeed { site, word }));
        }
        all
    }

    #[test]
    fn the_streams_of_ten_thousand_sites_never_collide() {
        let all = streams(10_000);
        let ids: HashSet<u64> = all.iter().map(|s| s.id()).collect();
        assert_eq!(ids.len(), all.len());
        // Nor do the seeds they give, within a round and across the first rounds.
        let mut seeds = HashSet::new();
        for round in 0..3 {
            for s in &all {
                assert!(seeds.insert(derive(7, round, *s)), "{s:?} in round {round}");
            }
        }
    }

    #[test]
    fn the_largest_site_ids_stay_in_their_purpose() {
        let last = u32::MAX;
        let ids: HashSet<u64> = [
            Stream::Training { site: last },
            Stream::SiteTestSplit { site: last },
            Stream::KeySeed {
                site: last,
                word: u8::MAX,
            },
            Stream::NoiseShare { site: last },
            Stream::Personalization { site: last },
            Stream::CentralNoise,
            Stream::TestHoldout,
        ]
        .iter()
        .map(|s| s.id())
        .collect();
        assert_eq!(ids.len(), 7);
    }

    #[test]
    fn seeds_repeat_and_depend_on_seed_round_and_stream() {
        let s = Stream::Training { site: 3 };
        assert_eq!(derive(9, 3, s), derive(9, 3, s));
        assert_ne!(derive(9, 3, s), derive(10, 3, s));
        assert_ne!(derive(9, 3, s), derive(9, 4, s));
        assert_ne!(derive(9, 3, s), derive(9, 3, Stream::Training { site: 4 }));
    }

    #[test]
    fn the_mixer_is_splitmix64() {
        // SplitMix64 seeded with 0 gives 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4 and
        // 0x06c45d188009454f first: the finalizer of 1, 2 and 3 times the golden ratio, which
        // is what rounds 1 to 3 of seed 0's selection stream mix in.
        let first = [
            0xe220_a839_7b1d_cdaf,
            0x6e78_9e6a_a1b9_65f4,
            0x06c4_5d18_8009_454f,
        ];
        for (round, want) in (1..).zip(first) {
            assert_eq!(derive(0, round, Stream::Selection), want, "round {round}");
        }
    }
}
