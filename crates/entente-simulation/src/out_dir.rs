//! The folders a run or a split writes into (`simulate --out`, `split --out`,
//! `entente.simulate(out=...)`): an existing folder that already holds files (an earlier run's
//! results, another site's records) is refused unless the caller says to write over them.

use std::path::Path;

use anyhow::{Result, bail};

/// How the caller spells the two settings in its errors: `--out` and `--overwrite` on the
/// command line, `out=` and `overwrite=True` in Python.
#[derive(Clone, Copy, Debug)]
pub struct Spelling {
    /// The output folder's setting.
    pub out: &'static str,
    /// The setting that allows writing over files.
    pub overwrite: &'static str,
}

/// The command line's spelling.
pub const CLI: Spelling = Spelling {
    out: "--out",
    overwrite: "--overwrite",
};

/// Refuses `out` when it is a file, or an existing folder with anything in it, unless
/// `overwrite`; errors name the settings as `spelling` does.
pub fn check(out: &Path, overwrite: bool, spelling: Spelling) -> Result<()> {
    if out.is_file() {
        bail!(
            "{} {} is a file; name a folder (new or empty) to write into",
            spelling.out,
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
            "{} {} already holds files ({} among them): choose a new or empty folder, or \
             pass {} to write over what is there",
            spelling.out,
            out.display(),
            first.file_name().to_string_lossy(),
            spelling.overwrite
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
        check(&dir.path().join("new"), false, CLI).unwrap();
        check(dir.path(), false, CLI).unwrap();
        std::fs::write(dir.path().join("summary.json"), "{}").unwrap();
        let err = check(dir.path(), false, CLI).unwrap_err().to_string();
        assert!(
            err.contains("summary.json") && err.contains("--overwrite"),
            "{err}"
        );
        check(dir.path(), true, CLI).unwrap();
        let err = check(&dir.path().join("summary.json"), true, CLI).unwrap_err();
        assert!(err.to_string().contains("is a file"), "{err}");
    }
}
