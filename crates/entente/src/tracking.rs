//! `serve --mlflow`: the run logged to an MLflow tracking server from a thread of its own, so
//! that a slow or failing server never holds up a round. The manifest goes as parameters when
//! the run opens, each round's figures as metrics (the TensorBoard tags, step = round) and the
//! final model as the artifact `model.safetensors`.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use entente_core::engine::RoundRecord;
use entente_core::manifest::Manifest;
use entente_report::mlflow::MlflowRun;
use entente_report::tensorboard::round_scalars;

/// What the tracking thread is told.
enum Event {
    Round(u64, Vec<(String, f64)>),
    Model(PathBuf),
    /// The run is over: finished, or failed unless `true`.
    End(bool),
}

/// A run being logged to MLflow.
pub struct Tracker {
    events: mpsc::Sender<Event>,
    thread: JoinHandle<()>,
}

impl Tracker {
    /// Opens an MLflow run for `manifest` at `uri` (in the experiment named after the
    /// federation) now, so that a server that cannot be reached stops `serve` before it
    /// starts.
    pub fn start(uri: &str, manifest: &Manifest) -> Result<Self> {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("{}-serve-{secs}", manifest.name);
        let run = entente_simulation::open_mlflow_run(uri, manifest, &name)?;
        let (events, received) = mpsc::channel();
        let thread = std::thread::spawn(move || log_events(run, received));
        Ok(Self { events, thread })
    }

    /// Logs a finished round's figures.
    pub fn round(&self, record: &RoundRecord) {
        let _ = self
            .events
            .send(Event::Round(u64::from(record.round), round_scalars(record)));
    }

    /// Uploads the final model.
    pub fn model(&self, path: PathBuf) {
        let _ = self.events.send(Event::Model(path));
    }

    /// Marks the MLflow run finished (or failed, unless `ok`) once everything sent is logged.
    pub fn end(self, ok: bool) {
        let _ = self.events.send(Event::End(ok));
        if self.thread.join().is_err() {
            eprintln!("warning: the MLflow logging thread failed");
        }
    }
}

/// Logs what comes until the run's end (a sender gone without it counts as a failed run);
/// after the first failure the rest is dropped, with one warning.
fn log_events(run: MlflowRun, events: mpsc::Receiver<Event>) {
    let mut failed = false;
    let mut ok = false;
    for event in events {
        let result = match event {
            Event::End(end) => {
                ok = end;
                break;
            }
            _ if failed => continue,
            Event::Round(step, values) => run.log_metrics(step, &values),
            Event::Model(path) => run.log_artifact(&path, "model.safetensors"),
        };
        if let Err(e) = result {
            eprintln!("warning: no more of the run goes to MLflow: {e}");
            failed = true;
        }
    }
    if let Err(e) = run.finish(ok && !failed) {
        eprintln!("warning: MLflow did not get the end of the run: {e}");
    }
}
