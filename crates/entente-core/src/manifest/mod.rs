//! The manifest: one TOML file, held by every site, that says who takes part, what is trained,
//! how, and by which rules. [`Manifest::parse`] turns it into checked, typed settings; every
//! error names the file, the key, its line and what is allowed.

mod personal_layers;
mod schema;
mod site_name;
mod syntax;
mod terms;
mod validate;

use std::path::{Path, PathBuf};

use crate::aggregators::Strategy;
use crate::engine::LocalTraining;
use crate::update::UpdatePolicy;

pub use personal_layers::model_tensor_names;
pub use site_name::{MAX_SITE_NAME_LEN, site_name_problem};
pub use terms::{TermDifference, compare_terms};

/// A manifest could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The manifest path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema (unknown key, wrong type).
    #[error("{path}: {message}")]
    Syntax {
        /// The manifest path.
        path: String,
        /// Line and column, what is wrong there, and the offending line (long text cut short).
        message: String,
    },
    /// The file is not a regular file, or is larger than any manifest.
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    /// A value is out of its allowed range or inconsistent with another.
    #[error("{path}{}: `{key}`: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The manifest path.
        path: String,
        /// 1-based line of the key, when it appears in the file.
        line: Option<usize>,
        /// Dotted key, for example `training.learning_rate`.
        key: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// How site data is read.
#[derive(Debug, Clone, PartialEq)]
pub enum DataFormat {
    /// A folder with MNIST-layout IDX files (train and t10k).
    Idx,
    /// A numeric CSV table.
    Csv {
        /// Label column (negative counts from the end); `None` means the last column.
        label_column: Option<i64>,
        /// Lines to skip before the data (a header).
        skip_rows: usize,
        /// Z-score features by training-set statistics.
        standardize: bool,
        /// Fraction of rows held out as the global test set.
        test_fraction: f64,
    },
}

/// How the training data is divided among sites.
#[derive(Debug, Clone, PartialEq)]
pub enum PartitionChoice {
    /// Uniformly at random.
    Iid,
    /// Label skew: class proportions per site drawn from Dirichlet(alpha).
    Dirichlet {
        /// Concentration; smaller is more skewed.
        alpha: f64,
    },
    /// McMahan et al.'s pathological split: label-sorted shards.
    Shards {
        /// Shards per site.
        shards_per_site: usize,
    },
    /// An explicit split read from a JSON list of index lists.
    File(PathBuf),
}

/// Where the data is and how it is split.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    /// Format and its options.
    pub format: DataFormat,
    /// File or folder, resolved against the manifest's folder (`embedded:` names are kept).
    pub path: PathBuf,
    /// Fraction of each site's examples kept as its own test split.
    pub site_test_fraction: f64,
    /// How training examples are divided among sites.
    pub partition: PartitionChoice,
    /// Use only the first `limit` training examples (quick runs and tests).
    pub limit: Option<usize>,
    /// What every site's records look like, when the manifest states it (`data.shape` or
    /// `data.features`, and `data.classes`). Deployments need it: the coordinator learns the
    /// model's shapes from it and every node checks its own file against it.
    pub schema: Option<DataSchema>,
    /// Most examples one data file may hold (`data.max_rows`, a local limit); with the schema
    /// it bounds how many bytes a data file may hold, on disk and decompressed.
    pub max_rows: usize,
}

/// The shape of one example and the number of classes, as the manifest states them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSchema {
    /// Shape of one example: `[features]` for tables, `[channels, height, width]` for images.
    pub shape: Vec<usize>,
    /// Number of classes; every label is below it.
    pub classes: usize,
}

impl DataSchema {
    /// Number of features of one example (the product of the shape).
    pub fn features(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Most classes a manifest may declare (`data.classes`).
pub const MAX_CLASSES: usize = 10_000;
/// Most features one example may have (the product of `data.shape`).
pub const MAX_FEATURES: usize = 1 << 24;
/// Most rounds a run may have (`training.rounds`): far beyond any federation's schedule
/// (a round a second for eleven days), and few enough that every round's record fits the store.
pub const MAX_ROUNDS: u32 = 1_000_000;
/// Most examples one data file may hold unless the manifest says otherwise (`data.max_rows`).
pub const DEFAULT_MAX_ROWS: usize = 1_000_000;
/// Largest `data.max_rows` a manifest may set (2^32 examples).
pub const MAX_MAX_ROWS: usize = 1 << 32;
/// Largest manifest file read (16 MiB): a manifest of 10,000 sites is well under 1 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The model to train.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChoice {
    /// MLP with these hidden widths.
    Mlp {
        /// Hidden layer widths.
        hidden: Vec<usize>,
    },
    /// McMahan et al.'s CNN (image data only).
    Cnn,
    /// A model defined outside entente (PyTorch, Keras, ...): its tensors' names, shapes and
    /// initial values are those of a safetensors file in PyTorch's layout.
    External {
        /// The file, resolved against the manifest's folder.
        init: PathBuf,
        /// SHA-256 (hex) of the file: part of the agreement, so every site starts from the same
        /// model whatever path its copy names.
        sha256: String,
    },
}

/// Which sites take part in each round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// Fraction of sites sampled per round.
    pub fraction: f64,
    /// Minimum number of valid updates for a round to complete.
    pub min_sites: usize,
    /// How long the coordinator waits for a site's answer before leaving it out of the round
    /// (network deployments; in simulation every site answers).
    pub deadline: std::time::Duration,
}

/// How each site turns the federation's final model into a model of its own
/// (`[personalization]`). A personal model never leaves its site.
#[derive(Debug, Clone, PartialEq)]
pub enum Personalization {
    /// FedAvg+FT: after the last round each site trains the final global model for `epochs`
    /// epochs of the manifest's local training on its own records.
    FineTune {
        /// Epochs of fine-tuning.
        epochs: usize,
    },
    /// Ditto (Li et al., ICML 2021): every round a selected site also trains a personal model
    /// of its own, from where it left it, with `lambda / 2 * ||v - w||^2` pulling it toward
    /// the round's global model `w`; the personal model is never sent.
    Ditto {
        /// Weight of the pull toward the global model (0: the site trains alone).
        lambda: f64,
    },
    /// FedPer (Arivazhagan et al. 2019): a shared body and personal tensors. Every round a
    /// selected site trains its whole model (the round's shared tensors and its own personal
    /// ones) and sends only the shared tensors back; the personal ones never leave it.
    FedPer {
        /// The personal tensors, by name (for example the last layer's weight and bias).
        personal: Vec<String>,
    },
    /// FedRep (Collins et al., ICML 2021): like FedPer, but each round a site first trains its
    /// personal tensors for `head_epochs` with the shared ones frozen, then the shared ones for
    /// the round's local epochs with its personal ones frozen.
    FedRep {
        /// The personal tensors, by name.
        personal: Vec<String>,
        /// Epochs of training the personal tensors each round, before the shared ones.
        head_epochs: usize,
    },
}

impl Personalization {
    /// The tensors a site keeps to itself (FedPer, FedRep); empty for the other methods, whose
    /// sites send the whole model.
    pub fn personal_tensors(&self) -> &[String] {
        match self {
            Self::FedPer { personal } | Self::FedRep { personal, .. } => personal,
            Self::FineTune { .. } | Self::Ditto { .. } => &[],
        }
    }
}

/// Secure aggregation as every site agreed to it (`[secure_aggregation]`).
#[derive(Debug, Clone, PartialEq)]
pub struct SecureAggregationSpec {
    /// Share of a site's holders needed to rebuild its secrets, above one half.
    pub threshold: f64,
    /// SecAgg+ neighbourhood size; `None` pairs every site with every other.
    pub neighbours: Option<usize>,
    /// Each coordinate of an update (local minus global model) is clipped to `[-clip, clip]`.
    pub clip: f64,
    /// Largest number of examples a site may declare.
    pub max_examples: u64,
    /// Ring of the fixed-point encoding: 32 or 64 bits.
    pub bits: u32,
    /// Generator that stretches each mask key into a mask (`prg`).
    pub prg: SecAggPrg,
    /// What the protocol defends against (`security`).
    pub security: SecAggSecurity,
}

/// The threat model of secure aggregation (`secure_aggregation.security`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecAggSecurity {
    /// `"active"`: sites sign their keys with their certificate keys and run the consistency
    /// check, so a coordinator that deviates from the protocol gets an abort, not a secret.
    #[default]
    Active,
    /// `"honest-but-curious"`: no signatures and no consistency check; safe only against a
    /// coordinator that follows the protocol.
    HonestButCurious,
}

/// The pseudorandom generator of secure aggregation's masks (`secure_aggregation.prg`); the
/// key layout of each is documented in `entente_privacy::secagg::prg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecAggPrg {
    /// AES-128-CTR (NIST SP 800-38A), `"aes128-ctr"`: the PRG of Bonawitz et al.
    #[default]
    Aes128Ctr,
    /// The ChaCha20 keystream (RFC 8439), `"chacha20"`.
    ChaCha20,
}

impl SecAggPrg {
    /// The generator as the manifest spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aes128Ctr => "aes128-ctr",
            Self::ChaCha20 => "chacha20",
        }
    }
}

/// Which differential-privacy mechanism protects the sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivacyMechanism {
    /// Record-level DP-SGD in every site's trainer.
    DpSgd,
    /// Client-level DP for FedAvg: updates clipped, noise added by the coordinator.
    ClientLevel,
    /// Client-level DP for FedAvg under secure aggregation: each site clips its update and adds
    /// its share of the noise before masking it, so the coordinator sees only the noisy sum.
    Distributed,
}

impl PrivacyMechanism {
    /// The mechanism as the manifest spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DpSgd => "dp-sgd",
            Self::ClientLevel => "client",
            Self::Distributed => "distributed",
        }
    }
}

/// Standard deviations of a site's noise share that SecAgg's fixed-point range must hold
/// under distributed DP, beyond the clipped value: a coordinate then leaves the range with
/// probability below `2 Phi(-10) = 1.5e-23`.
pub const DISTRIBUTED_DP_TAIL_STDS: f64 = 10.0;

/// The smallest `secure_aggregation.clip` under `privacy.mechanism = "distributed"`: a
/// coordinate of an update clipped to L2 norm `clip` is at most `clip`, and its noise share has
/// standard deviation `noise_multiplier * clip / sqrt(expected_sites)`, so the range must reach
/// `clip * (1 + DISTRIBUTED_DP_TAIL_STDS * noise_multiplier / sqrt(expected_sites))`. Clipping
/// to SecAgg's range happens at each site, before the sum, so it is not post-processing of the
/// noisy sum; it must (almost) never act.
pub fn distributed_dp_range(clip: f64, noise_multiplier: f64, expected_sites: usize) -> f64 {
    clip * (1.0
        + DISTRIBUTED_DP_TAIL_STDS * noise_multiplier / (expected_sites.max(1) as f64).sqrt())
}

/// Differential privacy and every site's budget (`[privacy]`).
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacySpec {
    /// The mechanism.
    pub mechanism: PrivacyMechanism,
    /// Norm bound: of each per-example gradient (DP-SGD) or of each site's update (client,
    /// distributed).
    pub clip: f64,
    /// Noise multiplier sigma.
    pub noise_multiplier: f64,
    /// The delta of every (epsilon, delta) statement.
    pub delta: f64,
    /// Each site's epsilon budget, in manifest site order.
    pub budgets: Vec<f64>,
    /// Folder of the sites' ledgers (each site keeps its own file).
    pub ledger: PathBuf,
}

/// The name of a data file or folder, as ledgers record it.
pub fn file_label(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Federation name.
    pub name: String,
    /// Seed of every random choice in a run.
    pub seed: u64,
    /// Data and partition.
    pub data: DataSpec,
    /// Site names, in manifest order.
    pub sites: Vec<String>,
    /// Each site's own data file or folder (`[[sites]] data`), in manifest order; a node reads
    /// its records from there unless told otherwise. A local path, outside the agreement.
    pub site_data: Vec<Option<PathBuf>>,
    /// The model.
    pub model: ModelChoice,
    /// Number of rounds.
    pub rounds: u32,
    /// Local training settings.
    pub training: LocalTraining,
    /// Aggregation rule.
    pub strategy: Strategy,
    /// Site sampling and quorum.
    pub selection: Selection,
    /// Under SCAFFOLD, the folder where each site keeps its control variate
    /// (`strategy.control_dir`, a local path outside the agreement).
    pub control_dir: Option<PathBuf>,
    /// Update checks.
    pub policy: UpdatePolicy,
    /// Secure aggregation, when the manifest turns it on.
    pub secure_aggregation: Option<SecureAggregationSpec>,
    /// Differential privacy and budgets, when the manifest turns them on.
    pub privacy: Option<PrivacySpec>,
    /// `[personalization]`: how each site makes the final model its own, if at all.
    pub personalization: Option<Personalization>,
    /// Under FedPer or FedRep, the folder where each node keeps its personal tensors and
    /// writes its personal model (`personalization.dir`, a local path outside the agreement).
    pub personal_dir: Option<PathBuf>,
    /// `[agreement] require_signatures`: the sites whose signature over the agreement digest
    /// must accompany the manifest before a run starts or a node trains, in manifest order
    /// (every site for `"all"`; empty when none is required).
    pub required_signatures: Vec<String>,
    /// The manifest text as read (with any override written in), kept for run records.
    pub source: String,
    /// What every site agrees to ([`Manifest::agreement_terms`]), from the validated text.
    terms: String,
}

impl Manifest {
    /// The tensors each site keeps to itself and never sends (FedPer, FedRep); empty when
    /// every site sends the whole model.
    pub fn personal_tensors(&self) -> &[String] {
        self.personalization
            .as_ref()
            .map_or(&[], Personalization::personal_tensors)
    }

    /// Reads and checks a manifest file; relative data paths resolve against its folder.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let origin = path.display().to_string();
        let bytes = crate::files::read_bounded(
            path,
            MAX_MANIFEST_BYTES,
            "a manifest (fixed: a manifest of 10,000 sites needs less than 1 MiB)",
        )?;
        let text = String::from_utf8(bytes).map_err(|e| ManifestError::Syntax {
            path: origin.clone(),
            message: syntax::not_utf8(e.as_bytes(), e.utf8_error().valid_up_to()),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &origin, base)
    }

    /// Names the data set a site's records come from, for its privacy ledger: the data file.
    /// Every split of one file shares a site's ledger, so re-splitting (another seed,
    /// partition or limit) cannot buy a fresh budget; it can only over-count, which errs on the
    /// side of privacy.
    pub fn data_label(&self) -> String {
        file_label(&self.data.path)
    }

    /// The data set site `index`'s own records come from, for its ledger: the file or folder
    /// name of its `[[sites]] data` (else of `data.path`).
    pub fn site_data_label(&self, index: usize) -> String {
        file_label(self.site_data_path(index))
    }

    /// Where site `index`'s node reads its own records: its `[[sites]] data`, else `data.path`.
    pub fn site_data_path(&self, index: usize) -> &Path {
        self.site_data
            .get(index)
            .and_then(Option::as_deref)
            .unwrap_or(&self.data.path)
    }

    /// The initial model of `kind = "external"`, read from its file and checked against the
    /// digest the manifest was validated with; `None` for entente's own models.
    pub fn external_init(&self) -> Option<Result<crate::params::ParamSet, ManifestError>> {
        let ModelChoice::External { init, sha256 } = &self.model else {
            return None;
        };
        Some(
            validate::read_external_init(init).and_then(|(params, sha)| {
                if &sha == sha256 {
                    Ok(params)
                } else {
                    Err(ManifestError::Invalid {
                        path: init.display().to_string(),
                        line: None,
                        key: "model.init".into(),
                        message: "the file changed after the manifest was read; load the manifest \
                              again"
                            .into(),
                    })
                }
            }),
        )
    }

    /// The round engine's rules for this federation.
    pub fn round_rules(&self) -> crate::engine::RoundRules {
        crate::engine::RoundRules {
            rounds: self.rounds,
            fraction: self.selection.fraction,
            min_sites: self.selection.min_sites,
            seed: self.seed,
            policy: self.policy,
            training: self.training.clone(),
            // Not under a privacy budget, and not when the sites keep no test split.
            federated_evaluation: self.privacy.is_none() && self.data.site_test_fraction > 0.0,
        }
    }

    /// Checks manifest text; `origin` names it in errors, `base` resolves relative paths.
    pub fn parse(text: &str, origin: &str, base: &Path) -> Result<Self, ManifestError> {
        let raw: schema::RawManifest = toml::from_str(text).map_err(|e| ManifestError::Syntax {
            path: origin.to_string(),
            message: syntax::describe(text, &e),
        })?;
        validate::check(raw, text, origin, base)
    }
}

mod digest;
mod overrides;

#[cfg(test)]
mod tests;
