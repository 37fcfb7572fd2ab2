//! `serve --mlflow`: the run logged to an MLflow tracking server from a thread of its own, so
//! that a slow or failing server never holds up a round. The manifest goes as parameters when
//! the run opens, each round's figures as metrics (the TensorBoard tags, step = round) and the
//! final model as the artifact `model.safetensors`.
//!
//! Each call has [`mlflow::DEADLINE`], and after the first failure nothing more goes to the
//! server; [`Tracker::end`] waits for the thread at most about one deadline (plus the model
//! upload's allowance), so a bad server never holds up `serve`'s exit for long either.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use entente_core::engine::RoundRecord;
use entente_core::manifest::Manifest;
use entente_report::mlflow::{self, MlflowRun};
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
    /// Says that the thread is done.
    done: mpsc::Receiver<()>,
    /// The longest [`Tracker::end`] waits for the thread.
    end_wait: Duration,
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
        let (finished, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            log_events(run, received);
            let _ = finished.send(());
        });
        Ok(Self {
            events,
            thread,
            done,
            end_wait: mlflow::DEADLINE,
        })
    }

    /// Logs a finished round's figures.
    pub fn round(&self, record: &RoundRecord) {
        let _ = self
            .events
            .send(Event::Round(u64::from(record.round), round_scalars(record)));
    }

    /// Uploads the final model.
    pub fn model(&mut self, path: PathBuf) {
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        self.end_wait += mlflow::upload_allowance(bytes);
        let _ = self.events.send(Event::Model(path));
    }

    /// Marks the MLflow run finished (or failed, unless `ok`) once everything sent is logged,
    /// waiting for that at most about one call's deadline; past it the thread is left to end
    /// with the process.
    pub fn end(self, ok: bool) {
        let _ = self.events.send(Event::End(ok));
        match self.done.recv_timeout(self.end_wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => eprintln!(
                "warning: MLflow did not take the end of the run within {} s; it may show the run \
                 as still running",
                self.end_wait.as_secs()
            ),
            // Done, or the thread died without saying so.
            _ => {
                if self.thread.join().is_err() {
                    eprintln!("warning: the MLflow logging thread failed");
                }
            }
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
            eprintln!(
                "warning: {e}; the rest of the run's figures are not logged to MLflow (the \
                 federation goes on)"
            );
            failed = true;
        }
    }
    // After a failed call the server is left alone (a local failure, a model that could not
    // be read, still lets the run be marked).
    if !run.given_up()
        && let Err(e) = run.finish(ok && !failed)
    {
        eprintln!("warning: MLflow did not get the end of the run: {e}");
    }
}
