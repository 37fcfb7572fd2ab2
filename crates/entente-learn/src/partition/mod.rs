//! Partitioners: how one data set's examples are split among federated sites.
//!
//! [`partition`] takes the labels only and returns, for each site, the indices of its examples;
//! [`Dataset::subset`](crate::data::Dataset::subset) then builds the site's data. Schemes:
//!
//! - [`Partition::Iid`]: a seeded shuffle cut into near-equal parts.
//! - [`Partition::Dirichlet`]: label skew (Hsu, Qi, Brown 2019, "Measuring the effects of
//!   non-identical data distribution"): each class is split among sites by proportions drawn from
//!   a symmetric Dirichlet(alpha). Small alpha gives few classes per site; large alpha is near IID.
//!   Like Flower's `DirichletPartitioner` and FedLab, the draw is repeated a bounded number of
//!   times until every site has a minimum number of examples ([`PartitionOptions`]).
//! - [`Partition::Shards`]: the pathological non-IID split of McMahan et al. 2017
//!   ("Communication-efficient learning of deep networks from decentralized data", section 3):
//!   sort by label, cut into equal shards, deal each site a few random shards.
//! - [`Partition::Explicit`]: lists given by the user, e.g. from [`load_split_json`].
//!
//! All randomness comes from `ChaCha8Rng::seed_from_u64(seed)`, so a seed fixes the split.
//! Each site's indices are returned in ascending order (explicit lists are kept as given).

mod dirichlet;
mod split_file;

use std::path::PathBuf;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

pub use self::split_file::{load_split_json, save_split_json};

/// How to split examples among sites.
#[derive(Clone, Debug, PartialEq)]
pub enum Partition {
    /// Uniformly at random, near-equal sizes.
    Iid,
    /// Label skew: each class split among sites by Dirichlet(alpha) proportions.
    Dirichlet {
        /// Concentration, finite and > 0; 0.1 is strongly skewed, 100 is close to IID.
        alpha: f64,
    },
    /// Sorted-by-label shards, `shards_per_site` random shards per site (McMahan et al. 2017).
    Shards {
        /// Number of shards each site receives (2 in the paper).
        shards_per_site: usize,
    },
    /// Given index lists, one per site.
    Explicit(Vec<Vec<usize>>),
}

/// Knobs of the Dirichlet partitioner; the other schemes ignore them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOptions {
    /// Every site must receive at least this many examples (Flower's `min_partition_size`, 10).
    pub min_per_site: usize,
    /// How many draws to try before giving up (Flower gives up after 10).
    pub max_attempts: usize,
    /// Stop giving a class to sites that already hold `n / num_sites` examples (FedLab's `balance`).
    pub self_balancing: bool,
}

impl Default for PartitionOptions {
    fn default() -> Self {
        Self {
            min_per_site: 10,
            max_attempts: 10,
            self_balancing: false,
        }
    }
}

/// Splits example indices `0..labels.len()` among `num_sites` sites with default options.
///
/// Every label must be below `num_classes`. Returns one index list per site.
pub fn partition(
    labels: &[u32],
    num_classes: usize,
    num_sites: usize,
    scheme: &Partition,
    seed: u64,
) -> Result<Vec<Vec<usize>>, PartitionError> {
    partition_with(
        labels,
        num_classes,
        num_sites,
        scheme,
        seed,
        &PartitionOptions::default(),
    )
}

/// Like [`partition`], with explicit [`PartitionOptions`] for the Dirichlet scheme.
pub fn partition_with(
    labels: &[u32],
    num_classes: usize,
    num_sites: usize,
    scheme: &Partition,
    seed: u64,
    options: &PartitionOptions,
) -> Result<Vec<Vec<usize>>, PartitionError> {
    if num_sites == 0 {
        return Err(PartitionError::NoSites);
    }
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= num_classes)
    {
        return Err(PartitionError::LabelOutOfRange {
            index,
            label,
            num_classes,
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match scheme {
        Partition::Iid => iid(labels.len(), num_sites, &mut rng),
        Partition::Dirichlet { alpha } => {
            dirichlet::split(labels, num_classes, num_sites, *alpha, options, &mut rng)
        }
        Partition::Shards { shards_per_site } => {
            shards(labels, num_sites, *shards_per_site, &mut rng)
        }
        Partition::Explicit(lists) => {
            validate_split(lists, labels.len(), num_sites)?;
            Ok(lists.clone())
        }
    }
}

/// Checks an explicit split: one list per site, none empty, indices in range, none twice.
///
/// Indices left out of every list are allowed (they are simply unused).
pub fn validate_split(
    split: &[Vec<usize>],
    num_examples: usize,
    num_sites: usize,
) -> Result<(), PartitionError> {
    if split.len() != num_sites {
        return Err(PartitionError::SiteCountMismatch {
            lists: split.len(),
            sites: num_sites,
        });
    }
    let mut owner: Vec<Option<usize>> = vec![None; num_examples];
    for (site, list) in split.iter().enumerate() {
        if list.is_empty() {
            return Err(PartitionError::EmptySite { site });
        }
        for (position, &index) in list.iter().enumerate() {
            let Some(slot) = owner.get_mut(index) else {
                return Err(PartitionError::IndexOutOfRange {
                    site,
                    position,
                    index,
                    num_examples,
                });
            };
            if let Some(first_site) = *slot {
                return Err(PartitionError::DuplicateIndex {
                    index,
                    first_site,
                    second_site: site,
                });
            }
            *slot = Some(site);
        }
    }
    Ok(())
}

/// IID: shuffle, then cut into `num_sites` parts whose sizes differ by at most one.
fn iid(
    n: usize,
    num_sites: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>, PartitionError> {
    if n < num_sites {
        return Err(PartitionError::TooFewExamples {
            needed: num_sites,
            available: n,
            reason: format!(
                "an IID split over {num_sites} sites gives each site at least one example"
            ),
        });
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut sites = cut(&order, num_sites);
    sort_each(&mut sites);
    Ok(sites)
}

/// Shards: shuffle, stable-sort by label, cut into `num_sites * shards_per_site` near-equal
/// shards, and deal each site `shards_per_site` shards at random.
fn shards(
    labels: &[u32],
    num_sites: usize,
    shards_per_site: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>, PartitionError> {
    if shards_per_site == 0 {
        return Err(PartitionError::ZeroShards);
    }
    let Some(total) = num_sites.checked_mul(shards_per_site) else {
        return Err(PartitionError::TooFewExamples {
            needed: usize::MAX,
            available: labels.len(),
            reason: format!("{num_sites} sites times {shards_per_site} shards overflows"),
        });
    };
    if labels.len() < total {
        return Err(PartitionError::TooFewExamples {
            needed: total,
            available: labels.len(),
            reason: format!(
                "{num_sites} sites x {shards_per_site} shards per site = {total} shards of at least one example"
            ),
        });
    }
    let mut order: Vec<usize> = (0..labels.len()).collect();
    // Shuffle first so that the examples of one class are in random order within the sort.
    order.shuffle(rng);
    order.sort_by_key(|&i| labels[i]);
    let pieces = cut(&order, total);
    let mut deal: Vec<usize> = (0..total).collect();
    deal.shuffle(rng);
    let mut sites: Vec<Vec<usize>> = deal
        .chunks(shards_per_site)
        .map(|ids| {
            ids.iter()
                .flat_map(|&s| pieces[s].iter().copied())
                .collect()
        })
        .collect();
    sort_each(&mut sites);
    Ok(sites)
}

/// Cuts `items` into `parts` consecutive pieces whose sizes differ by at most one.
fn cut(items: &[usize], parts: usize) -> Vec<Vec<usize>> {
    let base = items.len() / parts;
    let extra = items.len() % parts;
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 0..parts {
        let len = base + usize::from(p < extra);
        out.push(items[start..start + len].to_vec());
        start += len;
    }
    out
}

fn sort_each(sites: &mut [Vec<usize>]) {
    for s in sites {
        s.sort_unstable();
    }
}

/// Why examples could not be partitioned or a split file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// `num_sites` was 0.
    #[error("cannot partition among 0 sites; ask for at least one site")]
    NoSites,
    /// A label is not below `num_classes`.
    #[error(
        "example {index} has label {label}, but num_classes is {num_classes}; \
         pass num_classes = largest label + 1 (at least {})",
        *label as usize + 1
    )]
    LabelOutOfRange {
        /// The example.
        index: usize,
        /// Its label.
        label: u32,
        /// The number of classes given.
        num_classes: usize,
    },
    /// The Dirichlet concentration is not a finite positive number.
    #[error(
        "Dirichlet alpha must be a finite number above 0, got {alpha}; \
         typical values run from 0.1 (strong label skew) to 100 (close to IID)"
    )]
    InvalidAlpha {
        /// The value given.
        alpha: f64,
    },
    /// `shards_per_site` was 0.
    #[error("shards_per_site must be at least 1 (McMahan et al. use 2)")]
    ZeroShards,
    /// The data set is too small for the requested split.
    #[error(
        "too few examples: {reason}, which needs at least {needed} examples, but there are {available}; \
         use fewer sites or a larger data set"
    )]
    TooFewExamples {
        /// Examples needed.
        needed: usize,
        /// Examples present.
        available: usize,
        /// Why that many are needed.
        reason: String,
    },
    /// No Dirichlet draw gave every site the minimum number of examples.
    #[error(
        "Dirichlet(alpha = {alpha}) split over {num_sites} sites: in the best of {attempts} attempts the \
         smallest site got {smallest} examples, below the minimum of {min_per_site}; raise data.alpha, \
         use fewer sites, or use more examples (data.limit)"
    )]
    DirichletMinSize {
        /// The concentration.
        alpha: f64,
        /// Number of sites.
        num_sites: usize,
        /// Draws tried.
        attempts: usize,
        /// Required minimum per site.
        min_per_site: usize,
        /// Smallest site in the best draw.
        smallest: usize,
    },
    /// An explicit split has a different number of lists than there are sites.
    #[error(
        "explicit split has {lists} index lists but there are {sites} sites; \
         give exactly one list per site"
    )]
    SiteCountMismatch {
        /// Lists in the split.
        lists: usize,
        /// Sites asked for.
        sites: usize,
    },
    /// An explicit split gives a site no examples.
    #[error(
        "explicit split gives site {site} (0-based) no examples; give every site at least one index"
    )]
    EmptySite {
        /// The site.
        site: usize,
    },
    /// An explicit split names an example that does not exist.
    #[error(
        "explicit split: site {site} (0-based), entry {position}, is index {index}, but the data set has \
         {num_examples} examples (valid indices 0..={}); check that the split belongs to this data set",
        num_examples.saturating_sub(1)
    )]
    IndexOutOfRange {
        /// The site.
        site: usize,
        /// Position of the index within the site's list.
        position: usize,
        /// The bad index.
        index: usize,
        /// Examples in the data set.
        num_examples: usize,
    },
    /// An explicit split gives one example to two sites, or twice to one.
    #[error(
        "explicit split: index {index} appears in site {first_site} and again in site {second_site} \
         (0-based); every example may belong to at most one site, so remove one of them"
    )]
    DuplicateIndex {
        /// The repeated index.
        index: usize,
        /// Site where it first appeared.
        first_site: usize,
        /// Site where it appeared again.
        second_site: usize,
    },
    /// A split file could not be written.
    #[error("cannot write split file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A split file is not a regular file, or is larger than any split file.
    #[error(transparent)]
    File(#[from] entente_core::files::FileError),
    /// A split file is not a JSON list of index lists.
    #[error(
        "{}:{line}:{column}: not a valid split file: {message}; a split file is a JSON list \
         with one list of example indices per site, e.g. [[0, 3], [1, 2]]",
        path.display()
    )]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message.
        message: String,
    },
}

#[cfg(test)]
mod tests;
