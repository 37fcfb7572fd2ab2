//! A simulation's run folder read back: the manifest as run, one record per round
//! (`metrics.jsonl`) and the summary (`summary.json`, absent while a run is still going).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest run-folder file read (`metrics.jsonl` of a million rounds of a hundred sites is
/// well below it): a bigger one is refused before it is read.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Why a run folder could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read.
    #[error("could not read {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A file is larger than [`MAX_FILE_BYTES`].
    #[error(
        "{path} holds {bytes} bytes, more than the {MAX_FILE_BYTES} a report reads; is it a run folder's file?"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// A file's contents are not what `entente simulate` writes.
    #[error("{path}, line {line}: {reason}; is this the run folder of `entente simulate`?")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line (1 for a whole-file JSON document).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A file or folder could not be written.
    #[error("could not write {path}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A chart could not be drawn as an image.
    #[error("could not draw the {chart} chart: {reason}")]
    Render {
        /// The chart's name.
        chart: String,
        /// What went wrong.
        reason: String,
    },
    /// The output would replace a file that is not an earlier report or chart (or is a link,
    /// a folder or a pipe).
    #[error(
        "{0} exists and is not a report or chart entente wrote; write to a new file or folder \
         (--out, --png), or remove this one"
    )]
    WouldReplace(PathBuf),
    /// The folder for the PNG files is a file.
    #[error("{0} is not a folder; give --png a folder (it is created if need be)")]
    NotAFolder(PathBuf),
    /// The run folder's `metrics.jsonl` is a folder, a device or a broken link.
    #[error("{0} is not a file; a run folder of `entente simulate` holds metrics.jsonl as one")]
    NotAFile(PathBuf),
    /// The folder holds no rounds.
    #[error("{0} holds no metrics.jsonl: give the run folder of `entente simulate` (its --out)")]
    NotARunFolder(PathBuf),
}

/// Loss and accuracy of one evaluation.
#[derive(Clone, Debug, Deserialize)]
pub struct Evaluation {
    /// Mean loss.
    pub loss: f64,
    /// Share of examples classified correctly.
    pub accuracy: f64,
}

/// A site left out of a round, and why.
#[derive(Clone, Debug, Deserialize)]
pub struct Excluded {
    /// The site.
    pub site: String,
    /// The reason the round record gives.
    pub reason: String,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Deserialize)]
pub struct Round {
    /// Round number, from 1.
    pub round: u32,
    /// Sites asked to train.
    pub selected: Vec<String>,
    /// Sites whose update was used.
    pub accepted: Vec<String>,
    /// Sites left out, with reasons.
    #[serde(default)]
    pub excluded: Vec<Excluded>,
    /// Mean training loss of the accepted updates.
    pub train_loss: f64,
    /// The global model on the held-out test set.
    pub test: Option<Evaluation>,
    /// The global model on the sites' own test splits.
    pub federated: Option<Evaluation>,
    /// Wall time of the round.
    pub seconds: f64,
    /// What each site under a privacy budget has spent after this round (absent without
    /// `[privacy]`, and in run folders written before it was recorded).
    #[serde(default)]
    pub privacy: Option<RoundPrivacy>,
}

/// The privacy spent by the sites after one round, as their ledgers' RDP accountant counts it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundPrivacy {
    /// The delta of every epsilon.
    pub delta: f64,
    /// Per site, in manifest order.
    pub sites: Vec<SitePrivacy>,
}

/// One site's privacy spent after a round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SitePrivacy {
    /// The site.
    pub site: String,
    /// Epsilon spent on its data so far (earlier runs on the same data included).
    pub epsilon: f64,
    /// Its epsilon budget.
    pub budget: f64,
}

/// One site's line of `summary.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct SiteSummary {
    /// The site.
    pub site: String,
    /// Its training examples.
    pub examples: u64,
    /// The federated model on its own test split.
    pub federated_own_test_accuracy: Option<f64>,
    /// Its local-only model on the global test set (with `--baselines`).
    pub local_only_accuracy: Option<f64>,
    /// Its local-only model on its own test split (with `--baselines`).
    pub local_only_own_test_accuracy: Option<f64>,
}

/// `summary.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct Summary {
    /// Federation name.
    pub federation: String,
    /// Aggregation rule.
    pub strategy: String,
    /// Rounds run.
    pub rounds: u32,
    /// Final global model on the global test set.
    pub federated_accuracy: Option<f64>,
    /// Pooled-data model on the global test set (with `--baselines`).
    pub centralized_accuracy: Option<f64>,
    /// Per site.
    pub sites: Vec<SiteSummary>,
    /// Seconds of the whole command.
    pub wall_seconds: f64,
}

/// What a report shows of one run folder.
#[derive(Clone, Debug)]
pub struct RunRecord {
    /// The folder.
    pub folder: PathBuf,
    /// `manifest.toml` as run (empty if the folder has none).
    pub manifest: String,
    /// The rounds, in order.
    pub rounds: Vec<Round>,
    /// The summary, once the run has ended.
    pub summary: Option<Summary>,
}

impl RunRecord {
    /// Reads `folder` as `entente simulate` left it.
    pub fn read(folder: &Path) -> Result<Self, ReportError> {
        let metrics = folder.join("metrics.jsonl");
        if !metrics.is_file() {
            return Err(match std::fs::symlink_metadata(&metrics) {
                Ok(_) => ReportError::NotAFile(metrics),
                Err(_) => ReportError::NotARunFolder(folder.to_path_buf()),
            });
        }
        let mut rounds = Vec::new();
        for (i, line) in read_text(&metrics)?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            rounds.push(parse(&metrics, i + 1, line)?);
        }
        let summary_path = folder.join("summary.json");
        let summary = if summary_path.is_file() {
            Some(parse(&summary_path, 1, &read_text(&summary_path)?)?)
        } else {
            None
        };
        let manifest_path = folder.join("manifest.toml");
        let manifest = if manifest_path.is_file() {
            read_text(&manifest_path)?
        } else {
            String::new()
        };
        Ok(Self {
            folder: folder.to_path_buf(),
            manifest,
            rounds,
            summary,
        })
    }
}

impl RunRecord {
    /// A deployment's run as its store holds it: `rounds` are the round engine's records (one
    /// JSON object each, as `metrics.jsonl` holds them), `source` names the store in errors
    /// and in the report, `manifest` is the manifest's text. A deployment has no summary.
    pub fn from_round_records(
        source: &str,
        manifest: String,
        rounds: &[String],
    ) -> Result<Self, ReportError> {
        let folder = PathBuf::from(source);
        let rounds = rounds
            .iter()
            .enumerate()
            .map(|(i, json)| parse(&folder, i + 1, json))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            folder,
            manifest,
            rounds,
            summary: None,
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    path: &Path,
    line: usize,
    text: &str,
) -> Result<T, ReportError> {
    serde_json::from_str(text).map_err(|e| ReportError::Malformed {
        path: path.to_path_buf(),
        line,
        reason: e.to_string(),
    })
}

fn read_text(path: &Path) -> Result<String, ReportError> {
    let io = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    if bytes > MAX_FILE_BYTES {
        return Err(ReportError::TooLarge {
            path: path.to_path_buf(),
            bytes,
        });
    }
    let raw = std::fs::read(path).map_err(io)?;
    String::from_utf8(raw).map_err(|e| ReportError::Malformed {
        path: path.to_path_buf(),
        line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        reason: "the file is not UTF-8 text".to_string(),
    })
}
