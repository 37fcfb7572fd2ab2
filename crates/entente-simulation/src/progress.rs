//! Progress display for a simulation: a bar over the sites while a round runs, one line per
//! finished round, and the metrics files written as rounds complete.

use std::sync::Arc;

use anyhow::Result;
use entente_core::engine::{
    Envelope, RoundObserver, RoundRecord, Site, SiteError, TrainTask, Turn,
};
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::text::printable;
use entente_core::update::SiteUpdate;
use entente_dashboard::Board;
use entente_report::mlflow::MlflowRun;
use entente_report::tensorboard::round_scalars;
use indicatif::{ProgressBar, ProgressStyle};

use crate::privacy::PrivacyTrack;
use crate::run_dir::{MetricsWriter, RunDir};

/// The shared progress bar of a simulation.
pub struct Progress {
    bar: ProgressBar,
    rounds: u32,
}

impl Progress {
    /// A bar on stderr, hidden when `quiet` or when stderr is not a terminal.
    pub fn new(quiet: bool, rounds: u32) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        Self { bar, rounds }
    }

    /// Starts a bar for `len` units of other work (baselines).
    pub fn start(&self, prefix: &str, len: usize) {
        self.bar.reset();
        self.bar.set_length(len as u64);
        self.bar.set_position(0);
        self.bar.set_prefix(prefix.to_string());
        self.bar.set_message("");
    }

    /// Advances the bar by one unit.
    pub fn tick(&self, message: &str) {
        self.bar.set_message(message.to_string());
        self.bar.inc(1);
    }

    /// Prints a line to stdout, above the bar.
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| println!("{line}"));
    }

    /// Removes the bar.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }

    /// Wraps a site so that the bar advances when it finishes training.
    pub fn wrap(&self, site: Arc<dyn Site>) -> Arc<dyn Site> {
        Arc::new(CountingSite {
            inner: site,
            bar: self.bar.clone(),
        })
    }

    /// The observer that prints round lines and writes metrics to `dir`.
    /// With `tracking`, each round's figures also go to that MLflow run, and with `board` to
    /// that dashboard; with `privacy`, each round's line records what the sites have spent.
    pub fn observer<'a>(
        &'a self,
        dir: &'a RunDir,
        tracking: Option<MlflowRun>,
        board: Option<Board>,
        privacy: Option<PrivacyTrack>,
    ) -> RoundPrinter<'a> {
        RoundPrinter {
            progress: self,
            metrics: dir.metrics_writer(),
            tracking,
            board,
            privacy,
            header_printed: false,
            records: Vec::new(),
        }
    }
}

/// A site that advances the progress bar after training.
struct CountingSite {
    inner: Arc<dyn Site>,
    bar: ProgressBar,
}

impl Site for CountingSite {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let result = self.inner.train(task);
        self.bar.set_message(format!("{} done", self.inner.name()));
        self.bar.inc(1);
        result
    }

    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        self.inner.evaluate(params)
    }

    fn secure_exchange(
        &self,
        round: u32,
        message: &Envelope,
        turn: Option<&Turn>,
    ) -> Result<Envelope, SiteError> {
        self.inner.secure_exchange(round, message, turn)
    }
}

/// Prints one line per round and appends it to the metrics files.
pub struct RoundPrinter<'a> {
    progress: &'a Progress,
    metrics: Result<MetricsWriter>,
    tracking: Option<MlflowRun>,
    board: Option<Board>,
    privacy: Option<PrivacyTrack>,
    header_printed: bool,
    records: Vec<RoundRecord>,
}

impl RoundPrinter<'_> {
    /// Clears the bar and returns the finished rounds and the MLflow run (unless logging to
    /// it failed), or the first error met while writing metrics.
    pub fn finish(self) -> Result<(Vec<RoundRecord>, Option<MlflowRun>)> {
        self.progress.clear();
        self.metrics.map(|_| (self.records, self.tracking))
    }
}

impl RoundObserver for RoundPrinter<'_> {
    fn round_started(&mut self, round: u32, sites: &[String]) {
        self.progress.start(
            &format!("round {round}/{}", self.progress.rounds),
            sites.len(),
        );
    }

    fn round_finished(&mut self, r: &RoundRecord) {
        if !self.header_printed {
            self.progress.println(&format!(
                "{:>5}  {:>5}  {:>10}  {:>9}  {:>8}  {:>8}  {:>7}",
                "round", "sites", "train loss", "test loss", "test acc", "fed acc", "seconds"
            ));
            self.header_printed = true;
        }
        // No test figures without a central test set (sites that bring their own records and
        // no eval_data).
        let (loss, acc) = r.test.as_ref().map_or_else(
            || ("-".to_string(), "-".to_string()),
            |t| {
                (
                    format!("{:.4}", t.loss),
                    format!("{:.2}%", t.accuracy * 100.0),
                )
            },
        );
        // No federated figure when no site evaluated (none under a privacy budget, or no
        // site keeps a test split).
        let fed = r.federated.as_ref().map_or_else(
            || "-".to_string(),
            |f| format!("{:.2}%", f.accuracy * 100.0),
        );
        self.progress.println(&format!(
            "{:>5}  {:>2}/{:<2}  {:>10.4}  {:>9}  {:>8}  {:>8}  {:>7.1}",
            r.round,
            r.accepted.len(),
            r.selected.len(),
            r.train_loss,
            loss,
            acc,
            fed,
            r.seconds
        ));
        for e in &r.excluded {
            self.progress.println(&format!(
                "       left out {} ({}): {}",
                e.site,
                e.kind,
                printable(&e.reason)
            ));
        }
        if let Ok(writer) = &mut self.metrics
            && let Err(e) =
                writer.append(r, self.privacy.as_ref().map(PrivacyTrack::after).as_ref())
        {
            self.metrics = Err(e);
        }
        if let Some(board) = &self.board {
            board.round_finished(r);
        }
        // The run folder holds every figure; a tracking server that fails loses the rest of
        // the run's figures, never the run. A call waits at most mlflow::DEADLINE, and after
        // the first failure none is made, so a bad server holds up one round, once.
        if let Some(run) = &self.tracking
            && let Err(e) = run.log_metrics(u64::from(r.round), &round_scalars(r))
        {
            self.progress.println(&format!(
                "warning: {e}; the rest of the run's figures are not logged to MLflow (the run \
                 folder holds them all)"
            ));
            self.tracking = None;
        }
        self.records.push(r.clone());
    }
}
