//! `entente._native`: the Rust half of the Python package. The node (`join`) and the
//! simulation driver (`simulate`) are entente's own; a Python client takes the place of a
//! site's trainer ([`site::PySite`]). Transport, mutual TLS, the manifest checks, secure
//! aggregation, client-level DP and the site's privacy ledger all stay in Rust.

mod join;
mod params;
mod simulate;
mod site;
mod wait;

use pyo3::prelude::*;

pyo3::create_exception!(
    entente,
    EntenteError,
    pyo3::exceptions::PyRuntimeError,
    "A federation run could not start or stopped early; the message says why."
);

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging();
    m.add_function(wrap_pyfunction!(join::join, m)?)?;
    m.add_function(wrap_pyfunction!(simulate::simulate, m)?)?;
    m.add_function(wrap_pyfunction!(simulate::manifest_sites, m)?)?;
    m.add_function(wrap_pyfunction!(params::save_params, m)?)?;
    m.add_function(wrap_pyfunction!(params::load_params, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("EntenteError", m.py().get_type::<EntenteError>())?;
    Ok(())
}

/// Logs to stderr at the level `ENTENTE_LOG` names (default `warn`), as the CLI does.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ENTENTE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // A second import in the same process keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
