//! `entente.join`: the node, as `entente join` runs it, with a Python client as its trainer.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use entente_core::manifest::Manifest;
use entente_node::{NodeConfig, Trainer};
use entente_proto::tls::{self, KeyDir};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

use crate::site::{Interrupted, PySite};
use crate::wait::interruptible;

/// How long a stopped node may take to close its connection.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs this site's node until the coordinator says the run is finished; returns the number of
/// rounds. `client` trains (an `entente.Client` or a Flower `NumPyClient`); without one,
/// entente's own trainer trains on the site's own records (`data`, else the site's
/// `[[sites]] data`, else `data.path`). The audit heads the coordinator shows go to
/// `audit_record` (default: beside the manifest, `STEM.SITE.audit-heads.jsonl`). Ctrl-C stops the
/// node and raises `KeyboardInterrupt`.
#[pyfunction]
#[pyo3(signature = (manifest, *, coordinator, site=None, client=None, keys=PathBuf::from("keys"), ca=None, cert=None, key=None, data=None, max_retries=None, audit_record=None))]
#[allow(clippy::too_many_arguments)]
pub fn join(
    py: Python<'_>,
    manifest: PathBuf,
    coordinator: String,
    site: Option<String>,
    client: Option<Py<PyAny>>,
    keys: PathBuf,
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    data: Option<PathBuf>,
    max_retries: Option<u32>,
    audit_record: Option<PathBuf>,
) -> PyResult<u32> {
    let manifest_path = manifest;
    let manifest =
        Manifest::load(&manifest_path).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let keys = KeyDir::new(&keys);
    let site = match site {
        Some(name) => {
            tls::validate_site_name(&name).map_err(|e| PyValueError::new_err(e.to_string()))?;
            name
        }
        None => {
            let Some(cert) = &cert else {
                return Err(PyValueError::new_err(
                    "give site=NAME (keys under keys=DIR), or cert= and key=",
                ));
            };
            let pem = std::fs::read(cert).map_err(|e| {
                PyValueError::new_err(format!("cannot read {}: {e}", cert.display()))
            })?;
            entente_node::leaf_site_name(&pem).map_err(|e| PyValueError::new_err(e.to_string()))?
        }
    };
    if data.is_some() && client.is_some() {
        return Err(PyValueError::new_err(
            "data= is for entente's own trainer; a client reads its own records",
        ));
    }
    let interrupted = Arc::new(Interrupted::default());
    let trainer = match client {
        Some(c) => Trainer::External(Arc::new(PySite::new(site.clone(), c, interrupted))),
        None => Trainer::Builtin { data },
    };
    let config = NodeConfig {
        coordinator,
        ca: ca.unwrap_or_else(|| keys.ca_cert()),
        cert: cert.unwrap_or_else(|| keys.site_cert(&site)),
        key: key.unwrap_or_else(|| keys.site_key(&site)),
        manifest,
        trainer,
        max_retries,
        corrupt: None,
        signatures: Some(entente_proto::tls::signatures::signatures_path(
            &manifest_path,
        )),
        audit_record: Some(
            audit_record
                .unwrap_or_else(|| entente_node::default_audit_record(&manifest_path, &site)),
        ),
        revocations: Some(keys.revocation_list()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| PyRuntimeError::new_err(format!("could not start the async runtime: {e}")))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let result = interruptible(
        py,
        move || {
            runtime.block_on(entente_node::run(config, async {
                let _ = stopped.await;
            }))
        },
        move || {
            let _ = stop.send(());
        },
        STOP_GRACE,
    )?;
    result.map_err(|e| crate::EntenteError::new_err(e.to_string()))
}
