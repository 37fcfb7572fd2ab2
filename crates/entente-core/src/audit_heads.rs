//! A node's own record of the coordinator's audit log: the chain head (the newest entry's
//! sequence number and hash) that came with every task it was sent, one JSON line per head.
//!
//! The hash chain alone can be rewritten by whoever holds the store: edit an entry, re-hash
//! every later one, and the chain still verifies; delete the newest entries and nothing is
//! missing. A head the coordinator showed a site is out of its reach, so `entente audit verify
//! --against RECORD` can check a store against it: every recorded entry must still be in the
//! store with the hash the site was shown.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{FileError, read_bounded};

/// Largest record read back: a line is about 200 bytes, so about a million heads.
pub const MAX_RECORD_BYTES: u64 = 256 << 20;

/// The newest entry of an audit log when a task was sent: its `seq` and SHA-256 `hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// The entry's position in the log (1, 2, 3, ...).
    pub seq: u64,
    /// The entry's hash: 64 lowercase hexadecimal digits.
    pub hash: String,
}

impl AuditHead {
    /// A head, checked: `seq` at least 1 and `hash` 64 lowercase hexadecimal digits.
    pub fn new(seq: u64, hash: &str) -> Result<Self, String> {
        if seq == 0 {
            return Err("its sequence number is 0 (entries count from 1)".into());
        }
        let hex = hash.len() == 64
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(format!(
                "its hash is not 64 lowercase hexadecimal digits ({} bytes)",
                hash.len()
            ));
        }
        Ok(Self {
            seq,
            hash: hash.to_string(),
        })
    }
}

/// One line of a node's record: the head that came with a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRecord {
    /// The federation the task belonged to.
    pub federation: String,
    /// The round of the task (0 for the message that the run is finished).
    pub round: u32,
    /// When the node received it, in milliseconds since the Unix epoch.
    pub received_unix_ms: u64,
    /// The head.
    #[serde(flatten)]
    pub head: AuditHead,
}

/// Why a record could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeadRecordError {
    /// The record file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The record file could not be written.
    #[error("cannot write the audit record {}: {source}; check that its folder is writable", path.display())]
    Write {
        /// The record file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A head came that is older than one already recorded, or the same entry with another
    /// hash: the log this site was shown went back.
    #[error(
        "the coordinator's audit log went back: this site was shown entry {seen_seq} (hash \
         {seen_hash}) and now entry {seq} (hash {hash}); its store was rolled back, replaced or \
         rewritten. If this is a new deployment of the same manifest, move {} away and join again",
        path.display()
    )]
    WentBack {
        /// The record file.
        path: PathBuf,
        /// The newest entry recorded.
        seen_seq: u64,
        /// Its hash.
        seen_hash: String,
        /// The entry now shown.
        seq: u64,
        /// Its hash.
        hash: String,
    },
    /// A line is not a head record.
    #[error(
        "{}:{line}: not an audit head record ({problem}); the file is written by `entente join`, \
         one JSON object per line",
        path.display()
    )]
    Malformed {
        /// The record file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },
}

/// Reads every record of `path`, checked line by line.
pub fn read_records(path: &Path) -> Result<Vec<HeadRecord>, HeadRecordError> {
    let bytes = read_bounded(
        path,
        MAX_RECORD_BYTES,
        "an audit head record (fixed: about a million heads)",
    )?;
    let malformed = |line: usize, problem: String| HeadRecordError::Malformed {
        path: path.to_path_buf(),
        line,
        problem,
    };
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        malformed(line + 1, "it is not UTF-8".into())
    })?;
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: HeadRecord = serde_json::from_str(line)
            .map_err(|e| malformed(i + 1, crate::text::excerpt(&e.to_string()).into_owned()))?;
        AuditHead::new(record.head.seq, &record.head.hash).map_err(|p| malformed(i + 1, p))?;
        records.push(record);
    }
    Ok(records)
}

/// A node's record file, appended to as tasks come: a head equal to the last one written is
/// not written again.
#[derive(Debug)]
pub struct HeadLog {
    path: PathBuf,
    last: Option<AuditHead>,
}

impl HeadLog {
    /// Opens the record at `path`, creating its folder; an existing record is read first (a
    /// malformed one is refused rather than appended to).
    pub fn open(path: &Path) -> Result<Self, HeadRecordError> {
        let write_err = |source| HeadRecordError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        let last = if path.exists() {
            read_records(path)?.pop().map(|r| r.head)
        } else {
            None
        };
        Ok(Self {
            path: path.to_path_buf(),
            last,
        })
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` (and syncs it to disk) unless its head is the last one written;
    /// returns whether a line was written. A head older than the last one, or the last entry
    /// with another hash, is refused ([`HeadRecordError::WentBack`]) and not written: a log
    /// that goes back was rolled back or rewritten.
    pub fn append(&mut self, record: &HeadRecord) -> Result<bool, HeadRecordError> {
        if let Some(last) = &self.last {
            if last == &record.head {
                return Ok(false);
            }
            if record.head.seq <= last.seq {
                return Err(HeadRecordError::WentBack {
                    path: self.path.clone(),
                    seen_seq: last.seq,
                    seen_hash: last.hash.clone(),
                    seq: record.head.seq,
                    hash: record.head.hash.clone(),
                });
            }
        }
        let write_err = |source| HeadRecordError::Write {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_string(record)
            .map_err(|e| write_err(std::io::Error::other(e.to_string())))?;
        line.push('\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(write_err)?;
        file.write_all(line.as_bytes()).map_err(write_err)?;
        file.sync_data().map_err(write_err)?;
        self.last = Some(record.head.clone());
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(round: u32, seq: u64, digit: char) -> HeadRecord {
        HeadRecord {
            federation: "demo".into(),
            round,
            received_unix_ms: 1_700_000_000_000 + u64::from(round),
            head: AuditHead::new(seq, &digit.to_string().repeat(64)).unwrap(),
        }
    }

    #[test]
    fn heads_are_checked() {
        assert!(AuditHead::new(0, &"a".repeat(64)).is_err());
        assert!(AuditHead::new(1, &"A".repeat(64)).is_err());
        assert!(AuditHead::new(1, &"a".repeat(63)).is_err());
        assert!(AuditHead::new(1, &"g".repeat(64)).is_err());
        assert!(AuditHead::new(7, &"0a".repeat(32)).is_ok());
    }

    #[test]
    fn a_record_is_appended_once_per_head_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("site-a.jsonl");
        let mut log = HeadLog::open(&path).unwrap();
        assert!(log.append(&record(1, 5, 'a')).unwrap());
        assert!(!log.append(&record(1, 5, 'a')).unwrap(), "same head again");
        assert!(log.append(&record(2, 9, 'b')).unwrap());
        // Opened again (a restarted node), it knows its last head.
        let mut again = HeadLog::open(&path).unwrap();
        assert!(!again.append(&record(2, 9, 'b')).unwrap());
        assert!(again.append(&record(3, 12, 'c')).unwrap());
        let read = read_records(&path).unwrap();
        assert_eq!(
            read,
            [record(1, 5, 'a'), record(2, 9, 'b'), record(3, 12, 'c')]
        );
    }

    #[test]
    fn a_log_that_goes_back_is_refused_and_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site-a.jsonl");
        let mut log = HeadLog::open(&path).unwrap();
        assert!(log.append(&record(1, 9, 'a')).unwrap());
        for went_back in [record(2, 5, 'b'), record(2, 9, 'c')] {
            let err = log.append(&went_back).unwrap_err();
            assert!(
                matches!(err, HeadRecordError::WentBack { seen_seq: 9, .. }),
                "{err}"
            );
            assert!(err.to_string().contains("move"), "{err}");
        }
        assert_eq!(read_records(&path).unwrap(), [record(1, 9, 'a')]);
        assert!(log.append(&record(3, 10, 'd')).unwrap());
    }

    #[test]
    fn malformed_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let good = serde_json::to_string(&record(1, 5, 'a')).unwrap();
        let cases = [
            (format!("{good}\nnot json\n"), 2, "expected"),
            (
                format!("{good}\n{}\n", good.replace("aaaa", "AAAA")),
                2,
                "hexadecimal",
            ),
            (
                good.replace("\"seq\":5", "\"seq\":0"),
                1,
                "sequence number is 0",
            ),
        ];
        for (text, line, problem) in cases {
            std::fs::write(&path, text).unwrap();
            let err = read_records(&path).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(err, HeadRecordError::Malformed { line: l, .. } if l == line),
                "{msg}"
            );
            assert!(msg.contains(problem), "{msg}");
            assert!(HeadLog::open(&path).is_err(), "appending to a bad record");
        }
    }
}
