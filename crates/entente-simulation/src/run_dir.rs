//! The run folder: what a simulation used and produced, for people and for scripts.
//!
//! `manifest.toml` (as run), `split.json` (each site's training-set indices),
//! `metrics.jsonl` and `metrics.csv` (one row per round; `metrics.jsonl` also holds what each
//! site under a privacy budget has spent), `model.safetensors` (final global
//! model, PyTorch layout), `summary.json` and a TensorBoard event file of the rounds
//! (`events.out.tfevents.*`: `tensorboard --logdir` on the folder, or on `runs/`, charts them).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use entente_core::engine::RoundRecord;
use entente_core::manifest::Manifest;
use entente_core::metrics::EvalMetrics;
use entente_learn::partition::save_split_json;
use entente_report::RoundPrivacy;
use entente_report::tensorboard::{EventWriter, round_scalars};
use serde::Serialize;

use crate::baselines::Baselines;

/// A folder holding one run's records.
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Where a run's folder goes: `out`, or `runs/NAME-UNIXTIME` when none is given.
    pub fn path_for(out: Option<&Path>, name: &str) -> PathBuf {
        match out {
            Some(p) => p.to_path_buf(),
            None => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                Path::new("runs").join(format!("{name}-{secs}"))
            }
        }
    }

    /// Creates the folder `path` (see [`RunDir::path_for`]).
    pub fn create(path: &Path) -> Result<Self> {
        fs::create_dir_all(path)
            .with_context(|| format!("could not create the run folder {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.path.join(name);
        fs::write(&p, bytes).with_context(|| format!("could not write {}", p.display()))
    }

    /// Writes the manifest as run and the split.
    pub fn write_setup(&self, manifest: &Manifest, split: Option<&[Vec<usize>]>) -> Result<()> {
        self.write("manifest.toml", manifest.source.as_bytes())?;
        let Some(split) = split else {
            return Ok(());
        };
        let p = self.path.join("split.json");
        save_split_json(&p, split).with_context(|| format!("could not write {}", p.display()))
    }

    /// Opens the per-round metrics files.
    pub fn metrics_writer(&self) -> Result<MetricsWriter> {
        let open = |name: &str| -> Result<BufWriter<File>> {
            let p = self.path.join(name);
            Ok(BufWriter::new(File::create(&p).with_context(|| {
                format!("could not create {}", p.display())
            })?))
        };
        let mut csv = open("metrics.csv")?;
        writeln!(
            csv,
            "round,selected,accepted,train_loss,test_loss,test_accuracy,federated_loss,federated_accuracy,seconds"
        )?;
        Ok(MetricsWriter {
            jsonl: open("metrics.jsonl")?,
            csv,
            events: EventWriter::create(&self.path)?,
        })
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &Summary) -> Result<()> {
        let mut text = serde_json::to_string_pretty(summary)?;
        text.push('\n');
        self.write("summary.json", text.as_bytes())
    }
}

/// Appends one row per round to `metrics.jsonl` and `metrics.csv`.
pub struct MetricsWriter {
    jsonl: BufWriter<File>,
    csv: BufWriter<File>,
    events: EventWriter,
}

impl MetricsWriter {
    /// Appends a round, with what the budgeted sites have spent after it, and flushes, so a
    /// stopped run keeps its finished rounds.
    pub fn append(&mut self, r: &RoundRecord, privacy: Option<&RoundPrivacy>) -> Result<()> {
        serde_json::to_writer(&mut self.jsonl, &Line { record: r, privacy })?;
        writeln!(self.jsonl)?;
        let opt = |m: &Option<EvalMetrics>, f: fn(&EvalMetrics) -> f64| {
            m.as_ref().map(|m| f(m).to_string()).unwrap_or_default()
        };
        writeln!(
            self.csv,
            "{},{},{},{},{},{},{},{},{:.3}",
            r.round,
            r.selected.len(),
            r.accepted.len(),
            r.train_loss,
            opt(&r.test, |m| m.loss),
            opt(&r.test, |m| m.accuracy),
            opt(&r.federated, |m| m.loss),
            opt(&r.federated, |m| m.accuracy),
            r.seconds
        )?;
        self.jsonl.flush()?;
        self.csv.flush()?;
        self.events.scalars(u64::from(r.round), &round_scalars(r))?;
        Ok(())
    }
}

/// One line of `metrics.jsonl`: the round engine's record, and the privacy spent.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    record: &'a RoundRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    privacy: Option<&'a RoundPrivacy>,
}

/// What a finished run measured of one site on its own test split.
#[derive(Debug, Clone)]
pub struct SiteEval {
    /// Site name.
    pub site: String,
    /// Training examples it holds (or last claimed).
    pub examples: usize,
    /// The final global model on its own test split.
    pub global: Option<EvalMetrics>,
    /// Its personal model on its own test split (`[personalization]`).
    pub personal: Option<EvalMetrics>,
}

/// One site's line of the collaboration table.
#[derive(Debug, Serialize)]
pub struct SiteSummary {
    /// Site name.
    pub site: String,
    /// Training examples it holds.
    pub examples: usize,
    /// The federated model on the site's own test split.
    pub federated_own_test_accuracy: Option<f64>,
    /// Its local-only model on the global test set (with `--baselines`).
    pub local_only_accuracy: Option<f64>,
    /// Its local-only model on its own test split (with `--baselines`).
    pub local_only_own_test_accuracy: Option<f64>,
    /// Its personal model on its own test split (with `[personalization]`).
    pub personalized_own_test_accuracy: Option<f64>,
}

/// `summary.json`: the figures scripts need.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Federation name.
    pub federation: String,
    /// Aggregation rule.
    pub strategy: String,
    /// Rounds run.
    pub rounds: u32,
    /// Final global model on the global test set.
    pub federated_accuracy: Option<f64>,
    /// Final global model's test loss.
    pub federated_loss: Option<f64>,
    /// Final global model, example-weighted over the sites' own test splits.
    pub federated_site_accuracy: Option<f64>,
    /// Pooled-data model on the global test set (with `--baselines`).
    pub centralized_accuracy: Option<f64>,
    /// Pooled-data model's test loss (with `--baselines`).
    pub centralized_loss: Option<f64>,
    /// Per site.
    pub sites: Vec<SiteSummary>,
    /// Sites whose own test split the global or their personal model served better than
    /// their local-only model (with `--baselines`).
    pub sites_helped: Option<usize>,
    /// The test accuracy `--target-accuracy` asked for.
    pub target_accuracy: Option<f64>,
    /// The first round whose global model reached `target_accuracy` on the global test set
    /// (McMahan et al.'s rounds-to-accuracy), if one did.
    pub rounds_to_target: Option<u32>,
    /// Seconds of the federated run (data loading included).
    pub federated_seconds: f64,
    /// Seconds of the whole command.
    pub wall_seconds: f64,
}

impl Summary {
    /// Collects the summary of a finished run.
    pub fn new(
        manifest: &Manifest,
        strategy: &str,
        records: &[RoundRecord],
        site_eval: &[SiteEval],
        baselines: Option<&Baselines>,
        federated_seconds: f64,
        started: Instant,
    ) -> Self {
        let last = records.last();
        let test = last.and_then(|r| r.test.as_ref());
        let mut summary = Self {
            federation: manifest.name.clone(),
            strategy: strategy.to_string(),
            rounds: records.len() as u32,
            federated_accuracy: test.map(|t| t.accuracy),
            federated_loss: test.map(|t| t.loss),
            federated_site_accuracy: last.and_then(|r| r.federated.as_ref()).map(|f| f.accuracy),
            centralized_accuracy: baselines.map(|b| b.centralized.accuracy),
            centralized_loss: baselines.map(|b| b.centralized.loss),
            sites: site_eval
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let local = baselines.and_then(|b| b.local_only.get(i));
                    SiteSummary {
                        site: e.site.clone(),
                        examples: e.examples,
                        federated_own_test_accuracy: e.global.as_ref().map(|m| m.accuracy),
                        personalized_own_test_accuracy: e.personal.as_ref().map(|m| m.accuracy),
                        local_only_accuracy: local.map(|l| l.global_test.accuracy),
                        local_only_own_test_accuracy: local
                            .and_then(|l| l.own_test.as_ref())
                            .map(|m| m.accuracy),
                    }
                })
                .collect(),
            sites_helped: None,
            target_accuracy: None,
            rounds_to_target: None,
            federated_seconds,
            wall_seconds: started.elapsed().as_secs_f64(),
        };
        summary.sites_helped = summary.count_sites_helped();
        summary
    }

    /// Sites whose own test split the federation served better than training alone did: its
    /// global model, or its personal one, beat the local-only model there (`None` without
    /// `--baselines`).
    fn count_sites_helped(&self) -> Option<usize> {
        self.centralized_accuracy?;
        Some(
            self.sites
                .iter()
                .filter(|s| {
                    let best = s
                        .federated_own_test_accuracy
                        .into_iter()
                        .chain(s.personalized_own_test_accuracy)
                        .fold(f64::NEG_INFINITY, f64::max);
                    s.local_only_own_test_accuracy
                        .is_some_and(|alone| best > alone)
                })
                .count(),
        )
    }

    /// With personal models: each site's own test split under its local-only model (with
    /// `--baselines`), the global model and its personal model, and how many sites gained.
    fn print_own_splits(&self) {
        if self
            .sites
            .iter()
            .all(|s| s.personalized_own_test_accuracy.is_none())
        {
            return;
        }
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0));
        println!();
        println!("each site's own test split (accuracy):");
        println!(
            "{:<20} {:>8}  {:>8}  {:>8}  {:>8}",
            "site", "examples", "alone", "global", "personal"
        );
        for s in &self.sites {
            println!(
                "{:<20} {:>8}  {:>8}  {:>8}  {:>8}",
                s.site,
                s.examples,
                pct(s.local_only_own_test_accuracy),
                pct(s.federated_own_test_accuracy),
                pct(s.personalized_own_test_accuracy),
            );
        }
        // Sites without an own test split have nothing to compare.
        let n = self
            .sites
            .iter()
            .filter(|s| s.personalized_own_test_accuracy.is_some())
            .count();
        let beats = |other: fn(&SiteSummary) -> Option<f64>| {
            self.sites
                .iter()
                .filter(|s| match (s.personalized_own_test_accuracy, other(s)) {
                    (Some(p), Some(o)) => p > o,
                    _ => false,
                })
                .count()
        };
        let global = beats(|s| s.federated_own_test_accuracy);
        match self.sites_helped {
            Some(helped) => println!(
                "the federation helped {helped} of {n} sites on their own data; the personal \
                 models beat training alone on {} and the global model on {global}",
                beats(|s| s.local_only_own_test_accuracy)
            ),
            None => println!("the personal models beat the global model on {global} of {n} sites"),
        }
    }

    /// Adds the first round of `records` whose test accuracy reached `target`.
    pub fn with_target(mut self, target: Option<f64>, records: &[RoundRecord]) -> Self {
        self.target_accuracy = target;
        self.rounds_to_target = target.and_then(|a| {
            records
                .iter()
                .find(|r| r.test.as_ref().is_some_and(|t| t.accuracy >= a))
                .map(|r| r.round)
        });
        self
    }

    /// Prints the closing summary and, with baselines, the collaboration table.
    pub fn print(&self) {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |a| format!("{:.2}%", a * 100.0));
        println!();
        println!(
            "federated model after {} rounds: {} on the global test set, {} on the sites' own test splits ({:.1} s)",
            self.rounds,
            pct(self.federated_accuracy),
            pct(self.federated_site_accuracy),
            self.federated_seconds
        );
        if let Some(target) = self.target_accuracy {
            match self.rounds_to_target {
                Some(round) => println!(
                    "reached {} test accuracy in round {round}",
                    pct(Some(target))
                ),
                None => println!(
                    "did not reach {} test accuracy in {} rounds",
                    pct(Some(target)),
                    self.rounds
                ),
            }
        }
        self.print_own_splits();
        if self.centralized_accuracy.is_none() {
            return;
        }
        println!();
        println!(
            "what collaboration bought (accuracy; global test set / the site's own test split):"
        );
        println!(
            "{:<20} {:>8}  {:>18}  {:>18}",
            "site", "examples", "alone", "federated"
        );
        for s in &self.sites {
            println!(
                "{:<20} {:>8}  {:>8} / {:>7}  {:>8} / {:>7}",
                s.site,
                s.examples,
                pct(s.local_only_accuracy),
                pct(s.local_only_own_test_accuracy),
                pct(self.federated_accuracy),
                pct(s.federated_own_test_accuracy),
            );
        }
        println!(
            "{:<20} {:>8}  {:>18}",
            "centralized (pooled)",
            self.sites.iter().map(|s| s.examples).sum::<usize>(),
            pct(self.centralized_accuracy)
        );
    }
}
