//! Parameters a site keeps between rounds and never sends (SCAFFOLD's control variate, a
//! personal head): the last two rounds' versions, in memory and, with a folder, on disk as
//! `round-NNNNNNNNNN.safetensors`, so a restarted node goes on from them. A round asked for
//! again (a retry, a coordinator resuming from its checkpoint) starts from the version kept
//! before that round, as the first attempt did.

use std::path::{Path, PathBuf};

use entente_core::params::ParamSet;

/// Why a site's kept parameters could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeptError {
    /// The folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A version could not be written.
    #[error("{path}: could not be written: {reason}")]
    Unwritable {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A kept file is not a parameter file.
    #[error("{path}: {reason}; remove the file only if this site should start over")]
    Unreadable {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A site's kept parameters of the last two rounds it trained, oldest first, each with its
/// round; on disk in `folder` when there is one.
pub(crate) struct PerRound {
    folder: Option<PathBuf>,
    kept: Vec<(u32, ParamSet)>,
}

/// How many rounds' versions a site keeps.
const KEPT: usize = 2;

fn file_name(round: u32) -> String {
    format!("round-{round:010}.safetensors")
}

fn round_of(name: &str) -> Option<u32> {
    name.strip_prefix("round-")?
        .strip_suffix(".safetensors")?
        .parse()
        .ok()
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeptError + '_ {
    move |source| KeptError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl PerRound {
    /// Takes up the versions kept in `folder` (creating it), or starts with none.
    pub(crate) fn open(folder: Option<PathBuf>) -> Result<Self, KeptError> {
        let Some(dir) = folder else {
            return Ok(Self {
                folder: None,
                kept: Vec::new(),
            });
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut rounds = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            if let Some(round) = entry.file_name().to_str().and_then(round_of) {
                rounds.push(round);
            }
        }
        rounds.sort_unstable();
        let mut kept = Vec::new();
        for &round in rounds.iter().rev().take(KEPT).rev() {
            let path = dir.join(file_name(round));
            let unreadable = |reason: String| KeptError::Unreadable {
                path: path.display().to_string(),
                reason,
            };
            let control = ParamSet::load(&path).map_err(|e| unreadable(e.to_string()))?;
            if control.as_flat().iter().any(|v| !v.is_finite()) {
                return Err(unreadable("it holds a value that is not finite".into()));
            }
            kept.push((round, control));
        }
        Ok(Self {
            folder: Some(dir),
            kept,
        })
    }

    /// What to train round `round` from: the latest version of an earlier round. Round 1, the
    /// first of every run, starts from nothing kept (`None`), whatever is kept: asked for again
    /// (a coordinator restarted during round 1) or by a new run of the same manifest.
    pub(crate) fn before(&self, round: u32) -> Result<Option<&ParamSet>, String> {
        match self.kept.iter().rev().find(|(r, _)| *r < round) {
            Some((_, c)) => Ok(Some(c)),
            None if self.kept.is_empty() || round <= 1 => Ok(None),
            None => Err(format!(
                "round {round} was asked for, but what this site keeps already comes from \
                 round {} and the version before it is gone; a run cannot go back that far{}",
                self.kept[0].0,
                self.folder.as_ref().map_or_else(String::new, |dir| format!(
                    " (if this is a new run of the manifest, what is kept in {} is an earlier \
                     run's: remove that folder)",
                    dir.display()
                ))
            )),
        }
    }

    /// The latest version kept.
    pub(crate) fn latest(&self) -> Option<&ParamSet> {
        self.kept.last().map(|(_, p)| p)
    }

    /// Keeps `control` as the one round `round` produced (replacing any earlier attempt at
    /// that round or a later one), writing it before the site answers.
    pub(crate) fn keep(&mut self, round: u32, control: ParamSet) -> Result<(), KeptError> {
        self.kept.retain(|(r, _)| *r < round);
        if let Some(dir) = &self.folder {
            let path = dir.join(file_name(round));
            let tmp = dir.join(format!("{}.tmp", file_name(round)));
            control.save(&tmp).map_err(|e| KeptError::Unwritable {
                path: tmp.display().to_string(),
                reason: e.to_string(),
            })?;
            // On disk before it is named, and the name on disk before the site answers: a
            // crash leaves the previous version or this one, never an empty file.
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
            #[cfg(unix)]
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        self.kept.push((round, control));
        let stale = self.kept.len().saturating_sub(KEPT);
        self.kept.drain(..stale);
        if let Some(dir) = &self.folder {
            for entry in std::fs::read_dir(dir).map_err(io(dir))? {
                let entry = entry.map_err(io(dir))?;
                let name = entry.file_name();
                let Some(r) = name.to_str().and_then(round_of) else {
                    continue;
                };
                if !self.kept.iter().any(|(k, _)| *k == r) {
                    std::fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
                }
            }
        }
        Ok(())
    }
}
