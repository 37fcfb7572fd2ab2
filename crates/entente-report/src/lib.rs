//! What a run looks like to people and to the tools they already use: a self-contained HTML
//! report of a simulation's run folder or a deployment's stored rounds ([`html`], charts in
//! [`svg`], the folder read by [`run`]; the same charts as PNG files by [`png`]), TensorBoard
//! event files of its rounds ([`tensorboard`]) and runs on an MLflow tracking server
//! ([`mlflow`]).

pub mod html;
pub mod mlflow;
pub mod png;
pub mod run;
pub mod svg;
pub mod tensorboard;

use std::path::Path;

pub use png::write_pngs;
pub use run::{ReportError, RoundPrivacy, RunRecord, SitePrivacy};

/// Writes the report of `run` to `path`; a file already there is replaced only if it is an
/// earlier report (so a mistyped `--out` cannot overwrite a run's metrics or model).
pub fn write_record(run: &RunRecord, path: &Path) -> Result<(), ReportError> {
    if std::fs::symlink_metadata(path).is_ok() && !html::is_report(path) {
        return Err(ReportError::WouldReplace(path.to_path_buf()));
    }
    std::fs::write(path, html::render(run)).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}
