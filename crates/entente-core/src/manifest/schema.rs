//! The TOML layout of a manifest, as serde reads it. Every table rejects unknown keys.

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    pub federation: RawFederation,
    pub data: RawData,
    #[serde(rename = "sites", default)]
    pub sites: Vec<RawSite>,
    pub model: RawModel,
    pub training: RawTraining,
    #[serde(default)]
    pub strategy: RawStrategy,
    #[serde(default)]
    pub selection: RawSelection,
    #[serde(default)]
    pub secure_aggregation: Option<RawSecureAggregation>,
    #[serde(default)]
    pub privacy: Option<RawPrivacy>,
    #[serde(default)]
    pub personalization: Option<RawPersonalization>,
    #[serde(default)]
    pub agreement: Option<RawAgreement>,
}

/// `[agreement]`: what the sites require of the manifest itself.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgreement {
    #[serde(default)]
    pub require_signatures: Option<RawRequiredSignatures>,
}

/// `require_signatures = "all"` or a list of site names.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum RawRequiredSignatures {
    Word(String),
    Sites(Vec<String>),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPersonalization {
    pub method: String,
    pub epochs: Option<usize>,
    pub lambda: Option<f64>,
    pub personal: Option<Vec<String>>,
    pub head_epochs: Option<usize>,
    pub dir: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrivacy {
    pub mechanism: String,
    pub clip: f64,
    pub noise_multiplier: f64,
    #[serde(default = "default_delta")]
    pub delta: f64,
    pub epsilon_budget: f64,
    #[serde(default = "default_ledger")]
    pub ledger: String,
}

fn default_delta() -> f64 {
    1e-5
}

fn default_ledger() -> String {
    "privacy-ledger".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecureAggregation {
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    pub neighbours: Option<usize>,
    #[serde(default = "default_clip")]
    pub clip: f64,
    #[serde(default = "default_max_examples")]
    pub max_examples: u64,
    #[serde(default = "default_bits")]
    pub bits: u32,
    #[serde(default)]
    pub prg: Option<String>,
    #[serde(default)]
    pub security: Option<String>,
}

fn default_threshold() -> f64 {
    0.6
}

fn default_clip() -> f64 {
    1.0
}

fn default_max_examples() -> u64 {
    100_000
}

fn default_bits() -> u32 {
    32
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFederation {
    pub name: String,
    #[serde(default)]
    pub seed: u64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawData {
    pub format: String,
    pub path: String,
    #[serde(default)]
    pub label_column: Option<i64>,
    #[serde(default)]
    pub skip_rows: usize,
    #[serde(default)]
    pub standardize: Option<bool>,
    #[serde(default)]
    pub test_fraction: Option<f64>,
    #[serde(default = "default_site_test_fraction")]
    pub site_test_fraction: f64,
    #[serde(default = "default_partition")]
    pub partition: String,
    #[serde(default)]
    pub alpha: Option<f64>,
    #[serde(default)]
    pub shards_per_site: Option<usize>,
    #[serde(default)]
    pub split_file: Option<String>,
    #[serde(default)]
    pub limit: Option<usize>,
    #[serde(default)]
    pub shape: Option<Vec<usize>>,
    #[serde(default)]
    pub features: Option<usize>,
    #[serde(default)]
    pub classes: Option<usize>,
    #[serde(default)]
    pub max_rows: Option<usize>,
}

fn default_site_test_fraction() -> f64 {
    0.1
}

fn default_partition() -> String {
    "iid".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    pub name: String,
    #[serde(default)]
    pub epsilon_budget: Option<f64>,
    #[serde(default)]
    pub data: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub kind: String,
    #[serde(default)]
    pub hidden: Option<Vec<usize>>,
    #[serde(default)]
    pub init: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTraining {
    pub rounds: u32,
    #[serde(default = "one")]
    pub local_epochs: usize,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    pub learning_rate: f64,
    #[serde(default = "default_optimizer")]
    pub optimizer: String,
    #[serde(default)]
    pub momentum: f64,
    #[serde(default)]
    pub fedprox_mu: f64,
}

fn one() -> usize {
    1
}

fn default_batch() -> usize {
    32
}

fn default_optimizer() -> String {
    "sgd".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawStrategy {
    #[serde(default = "default_strategy")]
    pub kind: String,
    pub server_learning_rate: Option<f64>,
    pub server_momentum: Option<f64>,
    pub beta1: Option<f64>,
    pub beta2: Option<f64>,
    pub tau: Option<f64>,
    pub trim_fraction: Option<f64>,
    pub faulty: Option<usize>,
    pub select: Option<usize>,
    pub max_update_norm: Option<f64>,
    pub max_examples: Option<u64>,
    pub control_dir: Option<String>,
}

impl Default for RawStrategy {
    fn default() -> Self {
        Self {
            kind: default_strategy(),
            server_learning_rate: None,
            server_momentum: None,
            beta1: None,
            beta2: None,
            tau: None,
            trim_fraction: None,
            faulty: None,
            select: None,
            max_update_norm: None,
            max_examples: None,
            control_dir: None,
        }
    }
}

fn default_strategy() -> String {
    "fedavg".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelection {
    #[serde(default = "default_fraction")]
    pub fraction: f64,
    #[serde(default = "one")]
    pub min_sites: usize,
    #[serde(default = "default_deadline")]
    pub deadline_secs: f64,
}

impl Default for RawSelection {
    fn default() -> Self {
        Self {
            fraction: default_fraction(),
            min_sites: 1,
            deadline_secs: default_deadline(),
        }
    }
}

fn default_deadline() -> f64 {
    600.0
}

fn default_fraction() -> f64 {
    1.0
}
