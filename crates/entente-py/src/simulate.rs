//! `entente.simulate`: the round engine in this process with one Python client per site (or
//! entente's own trainer on a site's own records), printing and writing what `entente
//! simulate` does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use entente_core::engine::Site;
use entente_core::manifest::Manifest;
use entente_simulation::{Options, Trainers};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use entente_simulation::out_dir::{self, Spelling};

use crate::site::{Interrupted, PySite};
use crate::wait::interruptible;

/// How Python spells the run folder's settings in errors.
const PYTHON: Spelling = Spelling {
    out: "out=",
    overwrite: "overwrite=True",
};

/// How long an interrupted simulation may take to finish the calls in flight.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs the manifest's federation in this process. `client_fn(site_name)` gives each site's
/// client, or `None` for entente's own trainer on that site's `[[sites]] data`. Returns the
/// run as JSON text: `{"run_dir": ..., "summary": {...}}` (the Python wrapper parses it).
#[pyfunction]
#[pyo3(signature = (manifest, client_fn, *, out=None, overwrite=false, rounds=None, quiet=false, eval_data=None, threads=None, mlflow=None, target_accuracy=None))]
#[allow(clippy::too_many_arguments)]
pub fn simulate(
    py: Python<'_>,
    manifest: PathBuf,
    client_fn: Py<PyAny>,
    out: Option<PathBuf>,
    overwrite: bool,
    rounds: Option<u32>,
    quiet: bool,
    eval_data: Option<PathBuf>,
    threads: Option<usize>,
    mlflow: Option<String>,
    target_accuracy: Option<f64>,
) -> PyResult<String> {
    if target_accuracy.is_some_and(|a| !(0.0..=1.0).contains(&a)) {
        return Err(PyValueError::new_err(
            "target_accuracy must be a share of the test set, from 0 to 1",
        ));
    }
    if let Some(out) = &out {
        out_dir::check(out, overwrite, PYTHON).map_err(|e| PyValueError::new_err(e.to_string()))?;
    }
    let mut manifest =
        Manifest::load(&manifest).map_err(|e| PyValueError::new_err(e.to_string()))?;
    if let Some(r) = rounds {
        manifest
            .override_rounds(r, "rounds=")
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
    }
    let interrupted = Arc::new(Interrupted::default());
    let mut trainers: Vec<Option<Arc<dyn Site>>> = Vec::with_capacity(manifest.sites.len());
    for name in &manifest.sites {
        let client = client_fn.bind(py).call1((name.as_str(),))?;
        trainers.push(if client.is_none() {
            None
        } else {
            Some(Arc::new(PySite::new(
                name.clone(),
                client.unbind(),
                Arc::clone(&interrupted),
            )))
        });
    }
    let options = Options {
        out,
        baselines: false,
        quiet,
        eval_data,
        threads,
        mlflow,
        http: None,
        http_token: None,
        target_accuracy,
    };
    let flag = Arc::clone(&interrupted);
    let outcome = interruptible(
        py,
        move || entente_simulation::run(&manifest, Trainers::Own(trainers), &options),
        move || flag.set(),
        STOP_GRACE,
    )?;
    if interrupted.is_set() {
        return Err(pyo3::exceptions::PyKeyboardInterrupt::new_err(
            "the simulation was interrupted",
        ));
    }
    let outcome = outcome.map_err(|e| crate::EntenteError::new_err(format!("{e:#}")))?;
    let report = serde_json::json!({
        "run_dir": outcome.dir.display().to_string(),
        "summary": outcome.summary,
    });
    Ok(report.to_string())
}

/// The manifest's site names, in order (the process pool deals them to its workers).
#[pyfunction]
pub fn manifest_sites(manifest: PathBuf) -> PyResult<Vec<String>> {
    Manifest::load(&manifest)
        .map(|m| m.sites)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}
