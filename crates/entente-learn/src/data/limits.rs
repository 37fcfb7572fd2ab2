//! How much one data file may hold, and reading it within that: a file is refused as soon as
//! it passes its limit, on disk or while it is decompressed, so a huge file or a gzip bomb is
//! an error before anything of its size is allocated.
//!
//! The byte limits follow from the number of examples a file may hold (`data.max_rows`) and,
//! when the manifest states the data schema, the size of one example:
//!
//! | file | limit in bytes |
//! |---|---|
//! | IDX images | 16 + `max_rows` x features |
//! | IDX labels | 8 + `max_rows` |
//! | CSV table | `max_rows` x (features + 1) x [`CSV_CELL_BYTES`] + [`CSV_HEADER_BYTES`] |
//! | images or table, no schema | [`NO_SCHEMA_MAX_BYTES`] |

use std::io::Read;
use std::path::Path;

use entente_core::files::{FileError, read_bounded};
use entente_core::manifest::{DEFAULT_MAX_ROWS, MAX_CLASSES};

use super::DataError;

/// Most bytes a data file may hold, on disk or decompressed, when the manifest states no data
/// schema (4 GiB).
pub const NO_SCHEMA_MAX_BYTES: u64 = 4 << 30;
/// Bytes one CSV cell may take with its delimiter: a quoted, signed `f32` in exponent
/// notation with spaces around it fits.
pub const CSV_CELL_BYTES: u64 = 32;
/// Bytes of header lines (`data.skip_rows`) and blank lines a CSV table may hold beyond its rows.
pub const CSV_HEADER_BYTES: u64 = 1 << 20;

/// Bounds on what one data file may hold, checked while it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataLimits {
    /// Most examples (IDX images and labels, CSV data rows) one file may hold (`data.max_rows`).
    pub max_rows: usize,
    /// Features of one example, when the manifest states the data schema; it sizes the byte
    /// limits, which are [`NO_SCHEMA_MAX_BYTES`] without it.
    pub features: Option<usize>,
    /// Every CSV label must be below this: the schema's `data.classes`, else [`MAX_CLASSES`].
    pub classes: usize,
}

impl Default for DataLimits {
    /// [`DEFAULT_MAX_ROWS`] examples, no schema, labels below [`MAX_CLASSES`].
    fn default() -> Self {
        Self {
            max_rows: DEFAULT_MAX_ROWS,
            features: None,
            classes: MAX_CLASSES,
        }
    }
}

/// Which kind of data file a limit is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// An IDX file of images.
    IdxImages,
    /// An IDX file of labels.
    IdxLabels,
    /// A CSV table.
    Csv,
}

/// The most bytes one file may hold, and what sets that number (for the error).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ByteLimit {
    bytes: u64,
    reason: String,
    /// For IDX files: the size the file's own header declares lowers the limit, so that a
    /// compressed file is never inflated past what it says it holds.
    idx: bool,
}

impl DataLimits {
    /// The byte limit of a file of `kind`.
    pub(crate) fn bytes(&self, kind: FileKind) -> ByteLimit {
        let rows = self.max_rows as u64;
        let raise = "raise data.max_rows in the manifest if the file really holds more examples";
        let idx = matches!(kind, FileKind::IdxImages | FileKind::IdxLabels);
        let sized = |bytes: u64, of: String| ByteLimit {
            bytes,
            reason: format!("the most data.max_rows = {rows} {of} take; {raise}"),
            idx,
        };
        match (kind, self.features) {
            (FileKind::IdxLabels, _) => sized(rows.saturating_add(8), "labels".into()),
            (FileKind::IdxImages, Some(f)) => sized(
                rows.saturating_mul(f as u64).saturating_add(16),
                format!("images of {f} pixels"),
            ),
            (FileKind::Csv, Some(f)) => sized(
                rows.saturating_mul((f as u64 + 1).saturating_mul(CSV_CELL_BYTES))
                    .saturating_add(CSV_HEADER_BYTES),
                format!(
                    "rows of {} cells (data.features and the label, at most {CSV_CELL_BYTES} \
                     bytes each) and {CSV_HEADER_BYTES} bytes of header lines",
                    f + 1
                ),
            ),
            (FileKind::IdxImages | FileKind::Csv, None) => ByteLimit {
                bytes: NO_SCHEMA_MAX_BYTES,
                reason: "the most a data file may hold when the manifest states no data schema; \
                         state data.shape or data.features, and data.classes: the limit is then \
                         data.max_rows examples of that size"
                    .into(),
                idx,
            },
        }
    }
}

/// Reads the data file at `path` within `limit` (a regular file only), decompressing it if it
/// starts with the gzip magic `1f 8b`; the flag says whether it was compressed.
pub(crate) fn read_data_file(path: &Path, limit: &ByteLimit) -> Result<(Vec<u8>, bool), DataError> {
    let raw = read_bounded(path, limit.bytes, &limit.reason).map_err(|e| match e {
        FileError::TooLarge { path, .. } => DataError::TooLarge {
            path,
            limit: limit.bytes,
            decompressed: false,
            reason: limit.reason.clone(),
        },
        other => DataError::File(other),
    })?;
    decompress_maybe_gzip(path, raw, limit)
}

/// Decompresses `raw` if it starts with the gzip magic `1f 8b`, stopping one byte past
/// `limit`; `path` names it in errors.
pub(crate) fn decompress_maybe_gzip(
    path: &Path,
    raw: Vec<u8>,
    limit: &ByteLimit,
) -> Result<(Vec<u8>, bool), DataError> {
    let too_large = |decompressed| DataError::TooLarge {
        path: path.to_path_buf(),
        limit: limit.bytes,
        decompressed,
        reason: limit.reason.clone(),
    };
    if !raw.starts_with(&[0x1f, 0x8b]) {
        if raw.len() as u64 > limit.bytes {
            return Err(too_large(false));
        }
        return Ok((raw, false));
    }
    let gzip_err = |decompressed: usize| {
        move |source| DataError::Gzip {
            path: path.to_path_buf(),
            decompressed,
            source,
        }
    };
    let mut decoder = flate2::read::MultiGzDecoder::new(raw.as_slice());
    let mut out = Vec::new();
    let mut cap = limit.bytes;
    if limit.idx {
        // The header first: its dimensions say how many bytes follow.
        (&mut decoder)
            .take(IDX_HEADER_MAX)
            .read_to_end(&mut out)
            .map_err(gzip_err(0))?;
        if let Some(declared) = idx_declared_bytes(&out) {
            if declared > limit.bytes {
                return Err(too_large(true));
            }
            cap = declared;
        }
    }
    let hint = raw.len().saturating_mul(4).min(cap as usize);
    out.reserve(hint.saturating_sub(out.len()));
    let left = cap.saturating_add(1).saturating_sub(out.len() as u64);
    let read = out.len();
    decoder
        .take(left)
        .read_to_end(&mut out)
        .map_err(gzip_err(read))?;
    if out.len() as u64 > limit.bytes {
        return Err(too_large(true));
    }
    // More than an IDX header declares: the parser names the bytes after the data.
    Ok((out, true))
}

/// The longest IDX header: the magic and up to 255 dimensions.
const IDX_HEADER_MAX: u64 = 4 + 4 * 255;

/// An IDX file's size as its header declares it (magic, dimensions, one byte per item), if
/// `header` holds the whole header; `None` if it does not or the size overflows.
fn idx_declared_bytes(header: &[u8]) -> Option<u64> {
    let dims = usize::from(*header.get(3)?);
    let dims_bytes = header.get(4..4 + 4 * dims)?;
    let items = dims_bytes.chunks_exact(4).try_fold(1u64, |n, d| {
        n.checked_mul(u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])))
    })?;
    items.checked_add(4 + 4 * dims as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::gzip;

    #[test]
    fn a_compressed_idx_file_is_inflated_no_further_than_its_header_declares() {
        let limits = DataLimits {
            max_rows: 1_000_000,
            features: Some(784),
            classes: 10,
        };
        let limit = limits.bytes(FileKind::IdxImages);
        let path = Path::new("train-images-idx3-ubyte.gz");
        // 100 images of 28x28 declared, 100 MB of zeros sent.
        let mut bomb = vec![0, 0, 8, 3];
        for d in [100u32, 28, 28] {
            bomb.extend_from_slice(&d.to_be_bytes());
        }
        let declared = bomb.len() + 100 * 784;
        bomb.resize(100 << 20, 0);
        let (out, compressed) = decompress_maybe_gzip(path, gzip(&bomb), &limit).unwrap();
        assert!(compressed);
        assert_eq!(out.len(), declared + 1, "one byte past the declared size");
        // A header that declares more than the limit is refused before anything follows.
        let mut huge = vec![0, 0, 8, 3];
        for d in [u32::MAX, 28, 28] {
            huge.extend_from_slice(&d.to_be_bytes());
        }
        let err = decompress_maybe_gzip(path, gzip(&huge), &limit).unwrap_err();
        assert!(matches!(err, DataError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn limits_follow_the_schema_and_max_rows() {
        let limits = DataLimits {
            max_rows: 1000,
            features: Some(784),
            classes: 10,
        };
        assert_eq!(limits.bytes(FileKind::IdxImages).bytes, 16 + 784_000);
        assert_eq!(limits.bytes(FileKind::IdxLabels).bytes, 1008);
        assert_eq!(
            limits.bytes(FileKind::Csv).bytes,
            1000 * 785 * CSV_CELL_BYTES + CSV_HEADER_BYTES
        );
        let none = DataLimits::default();
        assert_eq!(none.bytes(FileKind::Csv).bytes, NO_SCHEMA_MAX_BYTES);
        assert!(none.bytes(FileKind::Csv).reason.contains("data.features"));
    }

    #[test]
    fn decompression_stops_one_byte_past_the_limit() {
        let limit = ByteLimit {
            bytes: 1000,
            reason: "the test's limit".into(),
            idx: false,
        };
        let path = Path::new("bomb.gz");
        let (ok, compressed) = decompress_maybe_gzip(path, gzip(&[7; 1000]), &limit).unwrap();
        assert!(compressed);
        assert_eq!(ok.len(), 1000);
        let err = decompress_maybe_gzip(path, gzip(&[7; 1001]), &limit).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TooLarge {
                    limit: 1000,
                    decompressed: true,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = decompress_maybe_gzip(path, vec![0; 1001], &limit).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TooLarge {
                    decompressed: false,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}
