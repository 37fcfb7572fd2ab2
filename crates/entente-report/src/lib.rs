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

/// Whether the regular file at `path` begins with `start` (a pipe or a device is not read).
pub(crate) fn begins_with(path: &Path, start: &[u8]) -> bool {
    use std::io::Read;
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let mut head = vec![0u8; start.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| head == start)
}

/// Whether a file may be written at `path`: nothing is there, or `is_ours` (a check such as
/// [`begins_with`], which only a regular file passes) recognises what an earlier report wrote.
pub(crate) fn may_replace(path: &Path, is_ours: impl Fn(&Path) -> bool) -> bool {
    std::fs::symlink_metadata(path).is_err() || is_ours(path)
}

/// Writes the report of `run` to `path`; a file already there is replaced only if it is an
/// earlier report (so a mistyped `--out` cannot overwrite a run's metrics or model).
pub fn write_record(run: &RunRecord, path: &Path) -> Result<(), ReportError> {
    if !may_replace(path, html::is_report) {
        return Err(ReportError::WouldReplace(path.to_path_buf()));
    }
    std::fs::write(path, html::render(run)).map_err(|source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    })
}
