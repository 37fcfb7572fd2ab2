//! Turns a manifest into an in-process federation: load the data, split it among the sites,
//! give each site a test split of its own, and keep a global test set for the coordinator.

use std::path::{Path, PathBuf};

use entente_core::engine::{Evaluator, Failure};
use entente_core::manifest::{DataFormat, DataSchema, Manifest, PartitionChoice};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::seeds::{self, Stream};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::data::{self, CsvOptions, DataError, DataLimits, Dataset, LabelColumn, Split};
use crate::model::ModelSpec;
use crate::partition::{self, Partition, PartitionError};
use crate::site::LocalSite;

/// The UCI handwritten digits (Alpaydin and Kaynak 1998, CC BY 4.0), shipped inside the binary
/// so that the default simulation needs no download.
const EMBEDDED_DIGITS: &[u8] = include_bytes!("../../../data/uci-digits.csv.gz");

/// Name of the embedded digits table in a manifest's `data.path`.
pub const EMBEDDED_DIGITS_PATH: &str = "embedded:uci-digits";

/// Evaluates a model on a held-out test set the coordinator holds (the global test set).
#[derive(Debug, Clone)]
pub struct CentralTest {
    spec: ModelSpec,
    data: Dataset,
}

impl CentralTest {
    /// The evaluator of `data` under the model `spec`; refused at once, before any round, when
    /// the examples are not the size the model takes or hold a label it has no output for.
    pub fn new(spec: ModelSpec, data: Dataset) -> Result<Self, PrepareError> {
        check_input(&spec, &data).map_err(|e| {
            PrepareError::Mismatch(format!("the held-out test set does not fit the model: {e}"))
        })?;
        Ok(Self { spec, data })
    }

    /// The model evaluated.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The held-out test set.
    pub fn data(&self) -> &Dataset {
        &self.data
    }
}

impl Evaluator for CentralTest {
    fn evaluate(&self, params: &ParamSet) -> Result<EvalMetrics, Failure> {
        crate::trainer::evaluate(&self.spec, params, &self.data, crate::trainer::EVAL_BATCH)
            .map_err(|e| Failure::internal("the held-out evaluation failed").with_source(e))
    }
}

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
    /// The round-1 model.
    pub initial: ParamSet,
    /// One participant per manifest site, in manifest order.
    pub sites: Vec<LocalSite>,
    /// The coordinator's held-out test set (benchmark view).
    pub test: Dataset,
    /// Indices into the training set that each site holds, in manifest order.
    pub split: Vec<Vec<usize>>,
}

/// The bounds on every data file the manifest's `[data]` sets: `data.max_rows` examples, of
/// the schema's size and classes when it states one.
pub fn data_limits(manifest: &Manifest) -> DataLimits {
    let schema = manifest.data.schema.as_ref();
    DataLimits {
        max_rows: manifest.data.max_rows,
        features: schema.map(DataSchema::features),
        classes: schema.map_or(DataLimits::default().classes, |s| s.classes),
    }
}

/// The CSV reader's options from the manifest's `[data]`.
pub(crate) fn csv_options(manifest: &Manifest) -> Result<CsvOptions, PrepareError> {
    let DataFormat::Csv {
        label_column,
        skip_rows,
        ..
    } = &manifest.data.format
    else {
        return Ok(CsvOptions::default());
    };
    Ok(CsvOptions {
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
    })
}

/// Reads the whole CSV table at `path` (or the embedded one) as the manifest describes it.
pub(crate) fn read_csv(manifest: &Manifest, path: &Path) -> Result<Dataset, PrepareError> {
    let options = csv_options(manifest)?;
    let limits = data_limits(manifest);
    Ok(
        match path.to_str().and_then(|p| p.strip_prefix("embedded:")) {
            Some("uci-digits") => data::parse_csv_bytes(path, EMBEDDED_DIGITS, &options, &limits)?,
            Some(other) => return Err(PrepareError::UnknownEmbedded(format!("embedded:{other}"))),
            None => data::load_csv(path, &options, &limits)?,
        },
    )
}

/// A held-out test set for the coordinator at `path`, read as the manifest's format says
/// (IDX: the folder's `t10k-*` files; CSV: the whole table) and checked against its schema.
pub fn load_test_set(manifest: &Manifest, path: &Path) -> Result<Dataset, PrepareError> {
    let mut test = match manifest.data.format {
        DataFormat::Idx => data::load_idx_dir(path, Split::Test, &data_limits(manifest))?,
        DataFormat::Csv { .. } => read_csv(manifest, path)?,
    };
    if let Some(schema) = &manifest.data.schema {
        fit_schema(&mut test, schema, path)?;
    }
    // Nodes z-score their own records with their own statistics; the test set likewise.
    if let DataFormat::Csv {
        standardize: true, ..
    } = manifest.data.format
    {
        data::Standardization::fit(&test)?.apply(&mut test)?;
    }
    Ok(test)
}

/// Loads training and test sets as the manifest describes them.
fn load(
    manifest: &Manifest,
    path: &Path,
    standardize_csv: bool,
) -> Result<(Dataset, Dataset), PrepareError> {
    match &manifest.data.format {
        DataFormat::Idx => {
            let limits = data_limits(manifest);
            Ok((
                data::load_idx_dir(path, Split::Train, &limits)?,
                data::load_idx_dir(path, Split::Test, &limits)?,
            ))
        }
        DataFormat::Csv {
            standardize,
            test_fraction,
            ..
        } => {
            let table = read_csv(manifest, path)?;
            if table.len() < 2 {
                return Err(PrepareError::Mismatch(format!(
                    "{}: holds {} row(s), but a simulation needs at least 2: one to train on and \
                     one for the global test set (data.test_fraction)",
                    path.display(),
                    table.len()
                )));
            }
            // Hold out a seeded random test set.
            let mut order: Vec<usize> = (0..table.len()).collect();
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seeds::derive(
                manifest.seed,
                0,
                Stream::TestHoldout,
            )));
            let n_test = ((table.len() as f64) * test_fraction).round() as usize;
            let (test_idx, train_idx) =
                order.split_at(n_test.clamp(1, table.len().saturating_sub(1)));
            let (mut train, mut test) = (table.subset(train_idx), table.subset(test_idx));
            if *standardize && standardize_csv {
                data::standardize(&mut train, &mut test)?;
            }
            Ok((train, test))
        }
    }
}

/// The model spec for the manifest's model and the data's example shape: entente's own
/// model, or an external model that is an MLP of `layers.{k}` tensors. An external model of
/// any other form cannot be trained by entente's trainer.
pub fn model_spec(manifest: &Manifest, data: &Dataset) -> Result<ModelSpec, PrepareError> {
    match ModelSpec::for_examples(&manifest.model, &data.shape, data.num_classes)
        .map_err(PrepareError::Mismatch)?
    {
        Some(spec) => Ok(spec),
        None => {
            let spec = federation_model(manifest, None)?
                .spec
                .ok_or_else(|| PrepareError::Mismatch(EXTERNAL_NOT_TRAINABLE.to_string()))?;
            check_input(&spec, data)?;
            Ok(spec)
        }
    }
}

/// Why entente's own trainer cannot train an external model.
const EXTERNAL_NOT_TRAINABLE: &str = "entente's own trainer trains an external model only when \
     it is an MLP (tensors layers.0.weight [out, in], layers.0.bias [out], layers.1.weight, ...); \
     train other models with a Python client (entente.simulate / entente.join)";

/// The federation's model: where it starts, and entente's own model for it when there is one.
#[derive(Debug, Clone)]
pub struct FederationModel {
    /// The round-1 model, in PyTorch's layout.
    pub initial: ParamSet,
    /// The built-in model entente's trainer trains; `None` for an external model that only
    /// a framework client can train.
    pub spec: Option<ModelSpec>,
}

/// The federation's model from the manifest alone: `kind = "external"` from its file, entente's
/// own models from `data.shape` / `data.features` and `data.classes` (or, when the manifest
/// states no schema, from `examples` = the shape and classes a simulation read from its data).
pub fn federation_model(
    manifest: &Manifest,
    examples: Option<(&[usize], usize)>,
) -> Result<FederationModel, PrepareError> {
    if let Some(init) = manifest.external_init() {
        let initial = init.map_err(|e| PrepareError::Mismatch(e.to_string()))?;
        let spec = ModelSpec::mlp_from_layout(initial.layout());
        if let (Some(ModelSpec::Mlp { input, classes, .. }), Some(schema)) =
            (&spec, &manifest.data.schema)
            && (*classes != schema.classes || *input != schema.features())
        {
            return Err(PrepareError::Mismatch(format!(
                "model.init is an MLP of {input} inputs and {classes} outputs, but the data \
                 schema is {} features and {} classes (data.shape / data.features, \
                 data.classes); make them agree",
                schema.features(),
                schema.classes
            )));
        }
        return Ok(FederationModel { initial, spec });
    }
    let (shape, classes) = match (&manifest.data.schema, examples) {
        (Some(schema), _) => (schema.shape.as_slice(), schema.classes),
        (None, Some(seen)) => seen,
        (None, None) => {
            return Err(PrepareError::Mismatch(
                "the manifest states no data schema; add data.shape (images: [channels, height, \
                 width]) or data.features (tables), and data.classes: the coordinator and every \
                 node build the model from them"
                    .into(),
            ));
        }
    };
    let spec = ModelSpec::for_examples(&manifest.model, shape, classes)
        .map_err(PrepareError::Mismatch)?
        .ok_or_else(|| PrepareError::Mismatch(EXTERNAL_NOT_TRAINABLE.to_string()))?;
    check_model_size(&spec)?;
    let initial = spec
        .init_params(manifest.seed)
        .map_err(|e| PrepareError::Mismatch(e.to_string()))?;
    Ok(FederationModel {
        initial,
        spec: Some(spec),
    })
}

/// Most parameters an entente model may have (2^30: 4 GiB of f32 per copy).
pub const MAX_MODEL_PARAMETERS: usize = 1 << 30;

/// Refuses a built-in model too large to hold, before anything is allocated.
fn check_model_size(spec: &ModelSpec) -> Result<(), PrepareError> {
    let total = spec
        .tensor_shapes()
        .iter()
        .try_fold(0usize, |acc, (_, shape, _)| {
            shape
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .and_then(|n| acc.checked_add(n))
        });
    match total {
        Some(n) if n <= MAX_MODEL_PARAMETERS => Ok(()),
        _ => Err(PrepareError::Mismatch(format!(
            "the model would have {} parameters, more than the limit of {MAX_MODEL_PARAMETERS}; \
             use narrower model.hidden layers or smaller examples (data.shape)",
            total.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
        ))),
    }
}

/// Checks `data` (read from `path`) against the manifest's schema and gives it the schema's
/// example shape and classes: a table of the right number of columns takes an image shape of
/// the same size.
pub fn fit_schema(
    data: &mut Dataset,
    schema: &DataSchema,
    path: &Path,
) -> Result<(), PrepareError> {
    let fits =
        data.shape == schema.shape || (data.shape.len() == 1 && data.dim == schema.features());
    if !fits {
        let found = if data.shape.len() == 1 {
            format!("{} feature columns", data.dim)
        } else {
            format!("examples of shape {:?}", data.shape)
        };
        return Err(PrepareError::Mismatch(format!(
            "{}: the manifest's data schema is examples of shape {:?} ({} features), but the file \
             holds {found}; check data.label_column and data.skip_rows, or the file",
            path.display(),
            schema.shape,
            schema.features(),
        )));
    }
    if let Some(max) = data.labels.iter().max()
        && *max as usize >= schema.classes
    {
        return Err(PrepareError::Mismatch(format!(
            "{}: holds label {max}, but the manifest's data.classes is {} (labels 0 to {})",
            path.display(),
            schema.classes,
            schema.classes - 1
        )));
    }
    data.shape = schema.shape.clone();
    data.num_classes = schema.classes;
    Ok(())
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
            let mut test = data::load_idx_dir(path, Split::Test, &data_limits(manifest))?;
            if let Some(schema) = &manifest.data.schema {
                fit_schema(&mut test, schema, path)?;
            }
            Ok((model_spec(manifest, &test)?, test))
        }
        DataFormat::Csv { .. } => {
            let fed = prepare(manifest, data_override)?;
            Ok((fed.spec, fed.test))
        }
    }
}

/// The manifest's data set, loaded, limited, checked against the schema and divided.
struct Partitioned {
    train: Dataset,
    test: Dataset,
    classes: usize,
    split: Vec<Vec<usize>>,
}

fn partitioned(
    manifest: &Manifest,
    data_override: Option<&Path>,
    standardize: bool,
) -> Result<Partitioned, PrepareError> {
    let path: PathBuf = data_override.map_or_else(|| manifest.data.path.clone(), Path::to_path_buf);
    let (mut train, mut test) = load(manifest, &path, standardize)?;
    if let Some(limit) = manifest.data.limit
        && limit < train.len()
    {
        let first: Vec<usize> = (0..limit).collect();
        train = train.subset(&first);
    }
    let classes = match &manifest.data.schema {
        Some(schema) => {
            fit_schema(&mut train, schema, &path)?;
            fit_schema(&mut test, schema, &path)?;
            schema.classes
        }
        // Classes are counted over both sets, so a class missing from one still has an output.
        None => train.num_classes.max(test.num_classes),
    };
    train.num_classes = classes;
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
        seeds::derive(manifest.seed, 0, Stream::Partition),
    )?;
    Ok(Partitioned {
        train,
        test,
        classes,
        split,
    })
}

/// Each site's share of the manifest's data set as `simulate` divides it, in manifest order:
/// its records in the order of the split, with their values as read (a CSV table is not
/// standardized). Written as the sites' own files, a deployment trains on exactly the shares
/// a simulation of the same manifest trains on.
pub fn site_shares(
    manifest: &Manifest,
    data_override: Option<&Path>,
) -> Result<Vec<Dataset>, PrepareError> {
    let p = partitioned(manifest, data_override, false)?;
    Ok(p.split.iter().map(|idx| p.train.subset(idx)).collect())
}

/// Builds the federation. `data_override` replaces the manifest's `data.path`.
pub fn prepare(
    manifest: &Manifest,
    data_override: Option<&Path>,
) -> Result<Federation, PrepareError> {
    let Partitioned {
        train,
        test,
        classes,
        split,
    } = partitioned(manifest, data_override, true)?;
    let model = federation_model(manifest, Some((&train.shape, classes)))?;
    let spec = model
        .spec
        .clone()
        .ok_or_else(|| PrepareError::Mismatch(EXTERNAL_NOT_TRAINABLE.to_string()))?;
    check_input(&spec, &train)?;
    let test = CentralTest::new(spec.clone(), test)?.data;

    let mut sites = Vec::with_capacity(split.len());
    for (i, (name, indices)) in manifest.sites.iter().zip(&split).enumerate() {
        let (test_idx, train_idx) = own_test_split(manifest, i, indices.clone());
        if test_idx.is_empty() && manifest.data.site_test_fraction > 0.0 {
            return Err(PrepareError::Mismatch(format!(
                "site `{name}` has {} examples, too few for a test split of its own; \
                 raise data.site_test_fraction or use fewer sites",
                indices.len()
            )));
        }
        sites.push(LocalSite::new(
            name.clone(),
            spec.clone(),
            train.subset(&train_idx),
            train.subset(&test_idx),
        ));
    }
    Ok(Federation {
        spec,
        initial: model.initial,
        sites,
        test,
        split,
    })
}

/// Checks that `data`'s examples are the size `spec` takes and its labels are among the
/// model's outputs (an external MLP's input and output widths).
fn check_input(spec: &ModelSpec, data: &Dataset) -> Result<(), PrepareError> {
    let outputs = match spec {
        ModelSpec::Mlp { classes, .. } | ModelSpec::Cnn { classes, .. } => *classes,
    };
    if spec.input_dim() != data.dim {
        return Err(PrepareError::Mismatch(format!(
            "the model takes {} input features, but the data's examples have {} (shape {:?})",
            spec.input_dim(),
            data.dim,
            data.shape
        )));
    }
    if let Some(max) = data.labels.iter().max()
        && *max as usize >= outputs
    {
        return Err(PrepareError::Mismatch(format!(
            "the model has {outputs} outputs, but the data holds label {max}; the model's last \
             layer needs one output per class (data.classes)"
        )));
    }
    Ok(())
}

/// Site `index`'s records `own` in its seeded order, split into its own test split (the first
/// `data.site_test_fraction` of them, leaving at least one to train on) and its training
/// examples. A simulated site and a node holding the same records in the same order split them
/// alike.
pub(crate) fn own_test_split(
    manifest: &Manifest,
    index: usize,
    mut own: Vec<usize>,
) -> (Vec<usize>, Vec<usize>) {
    own.shuffle(&mut ChaCha8Rng::seed_from_u64(seeds::derive(
        manifest.seed,
        0,
        Stream::SiteTestSplit { site: index as u32 },
    )));
    let n_test = ((own.len() as f64) * manifest.data.site_test_fraction).round() as usize;
    let train = own.split_off(n_test.min(own.len().saturating_sub(1)));
    (own, train)
}
