//! Reading a file someone else named (a manifest, a model, a data file, a ledger) without
//! trusting it: only a regular file is opened, so a pipe or a device cannot block the reader
//! or feed it without end, and no more than a stated number of bytes is ever read.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Why a file could not be read within its bounds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {error}; check the path and the file's permissions", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error (in the message, so not repeated as a cause).
        error: std::io::Error,
    },
    /// The path names a directory, a pipe, a socket or a device.
    #[error(
        "{} is {kind}, not a regular file; name a file (a pipe or a device could block the \
         reader or never end)",
        path.display()
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead, for example "a named pipe (FIFO)".
        kind: &'static str,
    },
    /// The file holds more bytes than the limit for what it should be.
    #[error(
        "{} holds {}more than {limit} bytes, the limit for {what}",
        path.display(),
        size.map_or_else(String::new, |s| format!("{s} bytes, "))
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size, when the file system says it.
        size: Option<u64>,
        /// The most bytes it may hold.
        limit: u64,
        /// What the file should be and where the limit comes from, for example
        /// "a manifest (fixed)".
        what: String,
    },
}

/// Reads all of `path`, a regular file of at most `limit` bytes; `what` says what the file
/// should be and where its limit comes from, for the error that refuses it.
///
/// The type is checked before the file is opened and again on the open file (opened without
/// blocking), and the read stops one byte past the limit, so a file that grows while it is
/// read is refused as well.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, FileError> {
    let io = |error| FileError::Io {
        path: path.to_path_buf(),
        error,
    };
    check_regular(path, &std::fs::metadata(path).map_err(io)?)?;
    let file = open_nonblocking(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    check_regular(path, &meta)?;
    let too_large = |size| FileError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit,
        what: what.to_string(),
    };
    if meta.len() > limit {
        return Err(too_large(Some(meta.len())));
    }
    // The size is a hint, bounded by the limit; what is read decides.
    let hint = usize::try_from(meta.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(hint.saturating_add(1));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(None));
    }
    Ok(bytes)
}

/// Refuses `path` unless `meta` (its metadata) is a regular file's.
pub fn check_regular(path: &Path, meta: &std::fs::Metadata) -> Result<(), FileError> {
    if meta.is_file() {
        return Ok(());
    }
    Err(FileError::NotAFile {
        path: path.to_path_buf(),
        kind: kind_of(&meta.file_type()),
    })
}

/// What a file that is not a regular file is, in words.
fn kind_of(file_type: &std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
        if file_type.is_socket() {
            return "a socket";
        }
    }
    "not a regular file"
}

/// Opens `path` for reading without waiting for a writer, should it have turned into a pipe
/// since it was checked.
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_file_within_its_limit_and_refuses_one_above() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345").unwrap();
        assert_eq!(read_bounded(&path, 5, "a test file").unwrap(), b"12345");
        let err = read_bounded(&path, 4, "a test file (fixed)").unwrap_err();
        assert!(
            matches!(
                err,
                FileError::TooLarge {
                    size: Some(5),
                    limit: 4,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("5 bytes") && msg.contains("4 bytes") && msg.contains("a test file"),
            "{msg}"
        );
    }

    #[test]
    fn directories_and_devices_are_refused_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_bounded(dir.path(), 10, "x").unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotAFile {
                    kind: "a directory",
                    ..
                }
            ),
            "{err:?}"
        );
        #[cfg(unix)]
        {
            let err = read_bounded(Path::new("/dev/zero"), 10, "x").unwrap_err();
            assert!(
                matches!(
                    err,
                    FileError::NotAFile {
                        kind: "a character device",
                        ..
                    }
                ),
                "{err:?}"
            );
        }
        let err = read_bounded(&dir.path().join("missing"), 10, "x").unwrap_err();
        assert!(matches!(err, FileError::Io { .. }), "{err:?}");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = read_bounded(&fifo, 10, "x").unwrap_err();
        assert!(
            matches!(
                err,
                FileError::NotAFile {
                    kind: "a named pipe (FIFO)",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
