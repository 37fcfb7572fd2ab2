//! A Python client as an entente site: the round engine (in a simulation) or the node (in a
//! deployment) calls [`PySite`] like any other site, and it calls the client's `fit` and
//! `evaluate` through `entente._bridge`, which converts and checks what the client returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use entente_core::engine::{ErrorKind, LocalOptimizer, Site, SiteError, TrainTask};
use entente_core::f32_bytes;
use entente_core::metrics::EvalMetrics;
use entente_core::params::ParamSet;
use entente_core::update::{MAX_CLAIMED_EXAMPLES, SiteUpdate};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

/// Longest error text a site reports for one failed call (the coordinator cuts it too).
const MAX_REASON: usize = 1000;

/// Set when a Python call was interrupted (Ctrl-C): every later call fails at once, so that a
/// simulation stops instead of running on without its clients.
#[derive(Debug, Default)]
pub struct Interrupted(AtomicBool);

impl Interrupted {
    /// Whether Ctrl-C reached a client call.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Marks the run as interrupted.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A site whose training and evaluation are a Python client's.
pub struct PySite {
    name: String,
    client: Py<PyAny>,
    interrupted: Arc<Interrupted>,
}

impl PySite {
    /// Site `name` answered by `client` (an `entente.Client` or a Flower `NumPyClient`).
    pub fn new(name: String, client: Py<PyAny>, interrupted: Arc<Interrupted>) -> Self {
        Self {
            name,
            client,
            interrupted,
        }
    }

    fn fail(&self, kind: ErrorKind, reason: impl Into<String>) -> SiteError {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push_str("...");
        }
        SiteError::new(self.name.clone(), kind, reason)
    }

    /// The failure of a Python call: its traceback goes to the site's log (stderr), its message
    /// to the coordinator.
    fn python_error(&self, py: Python<'_>, method: &str, e: PyErr) -> SiteError {
        if e.is_instance_of::<PyKeyboardInterrupt>(py) {
            self.interrupted.set();
            return self.fail(
                ErrorKind::Internal,
                format!("{method} was interrupted (Ctrl-C)"),
            );
        }
        let kind = e
            .get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        let message = e.value(py).to_string();
        match kind.as_str() {
            // The bridge's own checks of what the client returned: no traceback to show.
            "InvalidReturn" => {
                eprintln!(
                    "site {}: {method} returned a model entente refuses: {message}",
                    self.name
                );
                self.fail(
                    ErrorKind::MalformedReply,
                    format!("{method} returned a model entente refuses: {message}"),
                )
            }
            // Raised in a worker process, which printed the traceback; the message keeps the
            // original exception's kind.
            "ClientFailed" => self.fail(ErrorKind::Internal, format!("{method} raised {message}")),
            _ => {
                e.display(py);
                self.fail(
                    ErrorKind::Internal,
                    format!("{method} raised {kind}: {message}"),
                )
            }
        }
    }

    /// Runs `call` on the bridge module with the interpreter attached.
    fn call<T>(
        &self,
        method: &str,
        call: impl FnOnce(Python<'_>, &Bound<'_, PyModule>) -> PyResult<T>,
    ) -> Result<T, SiteError> {
        if self.interrupted.is_set() {
            return Err(self.fail(ErrorKind::Internal, "the run was interrupted (Ctrl-C)"));
        }
        Python::attach(|py| {
            let bridge = py
                .import("entente._bridge")
                .map_err(|e| self.python_error(py, "importing entente._bridge", e))?;
            call(py, &bridge).map_err(|e| self.python_error(py, method, e))
        })
    }
}

/// The model as the bridge takes it: tensor names, shapes and little-endian f32 bytes.
fn tensors<'py>(
    py: Python<'py>,
    params: &ParamSet,
) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>, Bound<'py, PyList>)> {
    let names = PyList::empty(py);
    let shapes = PyList::empty(py);
    let blobs = PyList::empty(py);
    for (spec, values) in params.iter() {
        names.append(&spec.name)?;
        shapes.append(spec.shape.clone())?;
        blobs.append(PyBytes::new(py, &f32_bytes::as_le_bytes(values)))?;
    }
    Ok((names, shapes, blobs))
}

/// What a round's `config` tells the client: the manifest's local-training settings.
fn train_config<'py>(py: Python<'py>, task: &TrainTask) -> PyResult<Bound<'py, PyDict>> {
    let config = PyDict::new(py);
    let t = &task.training;
    config.set_item("round", task.round)?;
    config.set_item("local_epochs", t.epochs)?;
    config.set_item("batch_size", t.batch_size)?;
    config.set_item("learning_rate", t.learning_rate)?;
    let (optimizer, momentum) = match t.optimizer {
        LocalOptimizer::Sgd { momentum } => ("sgd", momentum),
        LocalOptimizer::Adam => ("adam", 0.0),
    };
    config.set_item("optimizer", optimizer)?;
    config.set_item("momentum", momentum)?;
    config.set_item("fedprox_mu", t.fedprox_mu)?;
    config.set_item("seed", task.seed)?;
    Ok(config)
}

impl Site for PySite {
    fn name(&self) -> &str {
        &self.name
    }

    fn train(&self, task: &TrainTask) -> Result<SiteUpdate, SiteError> {
        let (blobs, num_examples, loss) = self.call("fit", |py, bridge| {
            let (names, shapes, blobs) = tensors(py, &task.global)?;
            let config = train_config(py, task)?;
            let out =
                bridge.call_method1("fit", (self.client.bind(py), names, shapes, blobs, config))?;
            let (blobs, num_examples, loss): (Vec<Vec<u8>>, u64, f64) = out.extract()?;
            Ok((blobs, num_examples, loss))
        })?;
        let layout = task.global.layout();
        if blobs.len() != layout.specs().len() {
            return Err(self.fail(
                ErrorKind::MalformedReply,
                format!(
                    "fit returned {} tensors, the model has {}",
                    blobs.len(),
                    layout.specs().len()
                ),
            ));
        }
        let mut flat = Vec::with_capacity(layout.total());
        for (spec, blob) in layout.specs().iter().zip(&blobs) {
            if blob.len() != 4 * spec.numel() {
                return Err(self.fail(
                    ErrorKind::MalformedReply,
                    format!(
                        "fit returned {} bytes for tensor `{}`, which needs {} float32 values",
                        blob.len(),
                        spec.name,
                        spec.numel()
                    ),
                ));
            }
            f32_bytes::extend_from_le_bytes(&mut flat, blob);
        }
        let params = ParamSet::from_flat(Arc::clone(layout), flat).map_err(|e| {
            self.fail(
                ErrorKind::MalformedReply,
                format!("fit returned a bad model: {e}"),
            )
        })?;
        Ok(SiteUpdate {
            site: self.name.clone(),
            num_examples,
            params,
            train_loss: loss,
        })
    }

    fn evaluate(&self, params: &Arc<ParamSet>) -> Result<EvalMetrics, SiteError> {
        let (loss, num_examples, accuracy) = self.call("evaluate", |py, bridge| {
            let (names, shapes, blobs) = tensors(py, params)?;
            let out = bridge.call_method1(
                "evaluate",
                (self.client.bind(py), names, shapes, blobs, PyDict::new(py)),
            )?;
            let result: (f64, usize, f64) = out.extract()?;
            Ok(result)
        })?;
        // The site's figures join a weighted mean: bounded here as the wire bounds them.
        if !loss.is_finite() || !(accuracy.is_nan() || (0.0..=1.0).contains(&accuracy)) {
            return Err(self.fail(ErrorKind::MalformedReply, format!(
                "evaluate returned loss {loss} and accuracy {accuracy}; the loss must be finite \
                 and the accuracy a fraction in [0, 1]"
            )));
        }
        if num_examples as u64 > MAX_CLAIMED_EXAMPLES {
            return Err(self.fail(
                ErrorKind::MalformedReply,
                format!(
                    "evaluate claims {num_examples} examples, more than {MAX_CLAIMED_EXAMPLES}"
                ),
            ));
        }
        Ok(EvalMetrics {
            loss,
            accuracy,
            per_class_accuracy: Vec::new(),
            num_examples,
        })
    }
}
