//! Split files: a JSON list with one list of example indices per site, e.g. `[[0, 3], [1, 2]]`.

use std::fmt::Write as _;
use std::path::Path;

use entente_core::files::read_bounded;

use super::PartitionError;

/// Largest split file read (1 GiB: tens of millions of indices).
pub const MAX_SPLIT_FILE_BYTES: u64 = 1 << 30;

/// Reads a split file of at most [`MAX_SPLIT_FILE_BYTES`]; check it against the data with
/// [`super::validate_split`] (or pass it as [`super::Partition::Explicit`], which does).
pub fn load_split_json(path: &Path) -> Result<Vec<Vec<usize>>, PartitionError> {
    let bytes = read_bounded(
        path,
        MAX_SPLIT_FILE_BYTES,
        "a split file (fixed: 1 GiB holds tens of millions of indices)",
    )?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let full = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&position).unwrap_or(&full).to_string();
        PartitionError::Json {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message,
        }
    })
}

/// Writes a split file, one site's list per line.
pub fn save_split_json(path: &Path, split: &[Vec<usize>]) -> Result<(), PartitionError> {
    let mut out = String::from("[\n");
    for (site, list) in split.iter().enumerate() {
        out.push_str("  [");
        for (i, index) in list.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            // Writing to a String cannot fail.
            let _ = write!(out, "{index}");
        }
        out.push(']');
        if site + 1 < split.len() {
            out.push(',');
        }
        out.push('\n');
    }
    out.push_str("]\n");
    std::fs::write(path, out).map_err(|source| PartitionError::Io {
        path: path.to_path_buf(),
        source,
    })
}
