//! What a run looks like to people and to the tools they already use: a self-contained HTML
//! report of a simulation's run folder or a deployment's stored rounds ([`html`], charts in [`svg`], the folder read by
//! [`run`]; the same charts as PNG files by [`png`]), TensorBoard event files of its rounds ([`tensorboard`]) and runs on an MLflow
//! tracking server ([`mlflow`]).

pub mod html;
pub mod mlflow;
pub mod png;
pub mod run;
pub mod svg;
pub mod tensorboard;

use std::path::{Path, PathBuf};

pub use png::write_pngs;
pub use run::{ReportError, RoundPrivacy, RunRecord, SitePrivacy};

/// Reads the run folder `folder` and writes its report to `out` (default
/// `folder/report.html`); returns the file written.
pub fn write_report(folder: &Path, out: Option<&Path>) -> Result<PathBuf, ReportError> {
    let run = RunRecord::read(folder)?;
    let path = out.map_or_else(|| folder.join("report.html"), Path::to_path_buf);
    write_record(&run, &path)?;
    Ok(path)
}

/// Writes the report of `run` to `path`.
pub fn write_record(run: &RunRecord, path: &Path) -> Result<(), ReportError> {
    std::fs::write(path, html::render(run)).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}
