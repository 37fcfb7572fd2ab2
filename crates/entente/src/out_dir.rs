//! The folders `simulate --out` and `split --out` write into: an existing folder that already
//! holds files (an earlier run's results, another site's records) is refused unless
//! `--overwrite` says to write over them.

use std::path::Path;

use anyhow::{Result, bail};

/// Refuses `out` when it is a file, or an existing folder with anything in it, unless
/// `overwrite`.
pub fn check(out: &Path, overwrite: bool) -> Result<()> {
    if out.is_file() {
        bail!(
            "--out {} is a file; name a folder (new or empty) to write into",
            out.display()
        );
    }
    if overwrite {
        return Ok(());
    }
    let Ok(mut entries) = std::fs::read_dir(out) else {
        // Not there yet (created later), or not readable (creating files in it fails later,
        // naming it).
        return Ok(());
    };
    if let Some(Ok(first)) = entries.next() {
        bail!(
            "--out {} already holds files ({} among them): choose a new or empty folder, or \
             pass --overwrite to write over what is there",
            out.display(),
            first.file_name().to_string_lossy()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_or_empty_folders_are_taken_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        check(&dir.path().join("new"), false).unwrap();
        check(dir.path(), false).unwrap();
        std::fs::write(dir.path().join("summary.json"), "{}").unwrap();
        let err = check(dir.path(), false).unwrap_err().to_string();
        assert!(
            err.contains("summary.json") && err.contains("--overwrite"),
            "{err}"
        );
        check(dir.path(), true).unwrap();
        let err = check(&dir.path().join("summary.json"), true).unwrap_err();
        assert!(err.to_string().contains("is a file"), "{err}");
    }
}
