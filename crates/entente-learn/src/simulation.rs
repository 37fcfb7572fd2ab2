//! Turns a manifest into an in-process federation: load the data, split it among the sites,
//! give each site a test split of its own, and keep a global test set for the coordinator.

use std::path::{Path, PathBuf};

use entente_core::engine::selection::derive_seed;
use entente_core::manifest::{DataFormat, Manifest, ModelChoice, PartitionChoice};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::{self, CsvOptions, DataError, Dataset, LabelColumn, Split};
use crate::model::ModelSpec;
use crate::partition::{self, Partition, PartitionError};
use crate::site::LocalSite;

/// The UCI handwritten digits (Alpaydin and Kaynak 1998, CC BY 4.0), shipped inside the binary
/// so that the default simulation needs no download.
const EMBEDDED_DIGITS: &[u8] = include_bytes!("../../../data/uci-digits.csv.gz");

/// Name of the embedded digits table in a manifest's `data.path`.
pub const EMBEDDED_DIGITS_PATH: &str = "embedded:uci-digits";

/// Why a federation could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Reading the data failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Splitting the data failed.
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// The data does not suit the model.
    #[error("{0}")]
    Mismatch(String),
    /// A `data.path` of the form `embedded:NAME` names nothing that is embedded.
    #[error("`{0}` is not an embedded data set; the only one is `{EMBEDDED_DIGITS_PATH}`")]
    UnknownEmbedded(String),
}

/// Everything a simulation needs, built from a manifest.
#[derive(Debug)]
pub struct Federation {
    /// The model every site trains.
    pub spec: ModelSpec,
    /// One participant per manifest site, in manifest order.
    pub sites: Vec<LocalSite>,
    /// The coordinator's held-out test set (benchmark view).
    pub test: Dataset,
    /// Indices into the training set that each site holds, in manifest order.
    pub split: Vec<Vec<usize>>,
}

/// Loads training and test sets as the manifest describes them.
fn load(manifest: &Manifest, path: &Path) -> Result<(Dataset, Dataset), PrepareError> {
    match &manifest.data.format {
        DataFormat::Idx => Ok((
            data::load_idx_dir(path, Split::Train)?,
            data::load_idx_dir(path, Split::Test)?,
        )),
        DataFormat::Csv {
            label_column,
            skip_rows,
            standardize,
            test_fraction,
        } => {
            let options = CsvOptions {
                label_column: match label_column {
                    None | Some(-1) => LabelColumn::Last,
                    Some(i) if *i >= 0 => LabelColumn::Index(*i as usize),
                    Some(i) => {
                        return Err(PrepareError::Mismatch(format!(
                            "data.label_column = {i}: use -1 for the last column or a 0-based index"
                        )));
                    }
                },
                skip_rows: *skip_rows,
                ..CsvOptions::default()
            };
            let table = match path.to_str().and_then(|p| p.strip_prefix("embedded:")) {
                Some("uci-digits") => data::parse_csv_bytes(path, EMBEDDED_DIGITS, &options)?,
                Some(other) => {
                    return Err(PrepareError::UnknownEmbedded(format!("embedded:{other}")));
                }
                None => data::load_csv(path, &options)?,
            };
            // Hold out a seeded random test set.
            let mut order: Vec<usize> = (0..table.len()).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
                manifest.seed,
                0,
                101,
            )));
            let n_test = ((table.len() as f64) * test_fraction).round() as usize;
            let (test_idx, train_idx) =
                order.split_at(n_test.clamp(1, table.len().saturating_sub(1)));
            let (mut train, mut test) = (table.subset(train_idx), table.subset(test_idx));
            if *standardize {
                data::standardize(&mut train, &mut test)?;
            }
            Ok((train, test))
        }
    }
}

/// The model spec for the manifest's model and the data's example shape.
pub fn model_spec(choice: &ModelChoice, data: &Dataset) -> Result<ModelSpec, PrepareError> {
    match choice {
        ModelChoice::Mlp { hidden } => Ok(ModelSpec::Mlp {
            input: data.dim,
            hidden: hidden.clone(),
            classes: data.num_classes,
        }),
        ModelChoice::Cnn => match data.shape.as_slice() {
            [c, h, w] if *h >= 4 && *w >= 4 => Ok(ModelSpec::Cnn {
                channels: *c,
                height: *h,
                width: *w,
                classes: data.num_classes,
            }),
            other => Err(PrepareError::Mismatch(format!(
                "model.kind = \"cnn\" needs images (channels x height x width, at least 4x4), \
                 but examples have shape {other:?}; use kind = \"mlp\" for tables"
            ))),
        },
    }
}

/// What a coordinator needs from the data: the model (its input shape and classes) and the
/// held-out test set. For IDX data only the test files are read, so a coordinator does not hold
/// the training set; CSV tables hold out their test set by a seeded split, so they are read
/// whole. `data_override` replaces the manifest's `data.path`.
pub fn prepare_central(
    manifest: &Manifest,
    data_override: Option<&Path>,
) -> Result<(ModelSpec, Dataset), PrepareError> {
    match manifest.data.format {
        DataFormat::Idx => {
            let path = data_override.unwrap_or(&manifest.data.path);
            let test = data::load_idx_dir(path, Split::Test)?;
            Ok((model_spec(&manifest.model, &test)?, test))
        }
        DataFormat::Csv { .. } => {
            let fed = prepare(manifest, data_override)?;
            Ok((fed.spec, fed.test))
        }
    }
}

/// Builds the federation. `data_override` replaces the manifest's `data.path`.
pub fn prepare(
    manifest: &Manifest,
    data_override: Option<&Path>,
) -> Result<Federation, PrepareError> {
    let path: PathBuf = data_override.map_or_else(|| manifest.data.path.clone(), Path::to_path_buf);
    let (mut train, test) = load(manifest, &path)?;
    if let Some(limit) = manifest.data.limit
        && limit < train.len()
    {
        let first: Vec<usize> = (0..limit).collect();
        train = train.subset(&first);
    }
    // Classes are counted over both sets, so a class missing from one still has an output.
    let classes = train.num_classes.max(test.num_classes);
    train.num_classes = classes;
    let mut test = test;
    test.num_classes = classes;

    let scheme = match &manifest.data.partition {
        PartitionChoice::Iid => Partition::Iid,
        PartitionChoice::Dirichlet { alpha } => Partition::Dirichlet { alpha: *alpha },
        PartitionChoice::Shards { shards_per_site } => Partition::Shards {
            shards_per_site: *shards_per_site,
        },
        PartitionChoice::File(f) => Partition::Explicit(partition::load_split_json(f)?),
    };
    let split = partition::partition(
        &train.labels,
        classes,
        manifest.sites.len(),
        &scheme,
        derive_seed(manifest.seed, 0, 102),
    )?;
    let spec = model_spec(&manifest.model, &train)?;

    let mut sites = Vec::with_capacity(split.len());
    for (i, (name, indices)) in manifest.sites.iter().zip(&split).enumerate() {
        let mut own = indices.clone();
        own.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
            manifest.seed,
            0,
            200 + i as u64,
        )));
        let n_test = ((own.len() as f64) * manifest.data.site_test_fraction).round() as usize;
        let n_test = n_test.min(own.len().saturating_sub(1));
        let (test_idx, train_idx) = own.split_at(n_test);
        if test_idx.is_empty() && manifest.data.site_test_fraction > 0.0 {
            return Err(PrepareError::Mismatch(format!(
                "site `{name}` has {} examples, too few for a test split of its own; \
                 raise data.site_test_fraction or use fewer sites",
                own.len()
            )));
        }
        sites.push(LocalSite::new(
            name.clone(),
            spec.clone(),
            train.subset(train_idx),
            train.subset(test_idx),
        ));
    }
    Ok(Federation {
        spec,
        sites,
        test,
        split,
    })
}
