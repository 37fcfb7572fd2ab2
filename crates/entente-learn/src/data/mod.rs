//! In-memory labelled data sets and the readers that fill them.
//!
//! A [`Dataset`] is a row-major matrix of [`Features`] (image pixels kept as bytes, table values
//! as `f32`) plus one `u32` label per row; it knows
//! nothing of burn, so partitioners and tests can use it without a tensor backend. The readers
//! live in submodules: [`idx`] for MNIST-style IDX files (Fashion-MNIST) and [`csv`] for numeric
//! tables (UCI digits, WDBC). Both accept plain or gzip-compressed files, detected by the gzip
//! magic bytes rather than by the file name.
//!
//! Every [`DataError`] names the file, the place in it and what to do about it.

pub mod csv;
mod features;
pub mod idx;
pub mod limits;
pub mod write;

use std::path::PathBuf;

pub use self::csv::{
    CsvOptions, LabelColumn, Standardization, load_csv, parse_csv_bytes, standardize,
};
pub use self::features::{Features, pixel_value};
pub use self::idx::{Split, load_idx_dir, load_idx_pair};
pub use self::limits::DataLimits;

/// A labelled data set held in memory: `len()` examples of `dim` features each.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Features, row-major: example `i` is values `i * dim..(i + 1) * dim`.
    pub features: Features,
    /// One class label per example, each below `num_classes`.
    pub labels: Vec<u32>,
    /// Number of features per example (the product of `shape`).
    pub dim: usize,
    /// Number of classes (at least one more than the largest label).
    pub num_classes: usize,
    /// Shape of one example, e.g. `[1, 28, 28]` for images or `[dim]` for tables.
    pub shape: Vec<usize>,
}

impl Dataset {
    /// Builds a data set after checking that features, labels, shape and classes agree;
    /// `features` are `f32` values or pixel bytes (`Vec<f32>` or `Vec<u8>`).
    pub fn new(
        features: impl Into<Features>,
        labels: Vec<u32>,
        shape: Vec<usize>,
        num_classes: usize,
    ) -> Result<Self, DataError> {
        let features = features.into();
        let dim: usize = shape.iter().product();
        if shape.is_empty() || dim == 0 {
            return Err(DataError::Invalid {
                reason: format!(
                    "example shape {shape:?} has no elements; give every dimension a size of at least 1"
                ),
            });
        }
        if features.len() != labels.len() * dim {
            return Err(DataError::Invalid {
                reason: format!(
                    "{} labels of shape {shape:?} need {} features, but {} were given",
                    labels.len(),
                    labels.len() * dim,
                    features.len()
                ),
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| l as usize >= num_classes)
        {
            return Err(DataError::Invalid {
                reason: format!(
                    "example {index} has label {label}, but num_classes is {num_classes}; \
                     pass num_classes of at least {}",
                    label as usize + 1
                ),
            });
        }
        Ok(Self {
            features,
            labels,
            dim,
            num_classes,
            shape,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the data set has no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The features of example `index` as `f32`; panics if `index >= len()`.
    pub fn row(&self, index: usize) -> std::borrow::Cow<'_, [f32]> {
        self.features
            .slice(index * self.dim, (index + 1) * self.dim)
    }

    /// Appends the features of example `index` to `out` as `f32`; panics if `index >= len()`.
    pub fn extend_row(&self, index: usize, out: &mut Vec<f32>) {
        self.features
            .extend_f32(index * self.dim, (index + 1) * self.dim, out);
    }

    /// A new data set holding the given examples, in the given order, with features of the
    /// same kind; panics on an index `>= len()`.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut features = self.features.empty_like(indices.len() * self.dim);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from(&self.features, i * self.dim, (i + 1) * self.dim);
            labels.push(self.labels[i]);
        }
        Dataset {
            features,
            labels,
            dim: self.dim,
            num_classes: self.num_classes,
            shape: self.shape.clone(),
        }
    }

    /// Joins data sets of the same example shape, in order; `num_classes` is the largest of theirs.
    pub fn concat(parts: &[Dataset]) -> Result<Dataset, DataError> {
        let Some(first) = parts.first() else {
            return Err(DataError::Invalid {
                reason: "cannot concatenate an empty list of data sets; pass at least one"
                    .to_string(),
            });
        };
        if let Some((index, part)) = parts
            .iter()
            .enumerate()
            .find(|(_, p)| p.shape != first.shape || p.dim != first.dim)
        {
            return Err(DataError::Invalid {
                reason: format!(
                    "cannot concatenate: part {index} has example shape {:?} but part 0 has {:?}",
                    part.shape, first.shape
                ),
            });
        }
        let total: usize = parts.iter().map(Dataset::len).sum();
        let mut features = first.features.empty_like(total * first.dim);
        let mut labels = Vec::with_capacity(total);
        for part in parts {
            features.extend_from(&part.features, 0, part.features.len());
            labels.extend_from_slice(&part.labels);
        }
        Ok(Dataset {
            features,
            labels,
            dim: first.dim,
            num_classes: parts.iter().map(|p| p.num_classes).max().unwrap_or(0),
            shape: first.shape.clone(),
        })
    }

    /// Number of examples of each class; the vector has `num_classes` entries (more if a label exceeds it).
    pub fn label_counts(&self) -> Vec<usize> {
        let needed = self
            .labels
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0)
            .max(self.num_classes);
        let mut counts = vec![0; needed];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// The number of classes implied by some labels: largest label plus one, and at least 2.
pub(crate) fn num_classes_from_labels(labels: &[u32]) -> usize {
    labels
        .iter()
        .map(|&l| l as usize + 1)
        .max()
        .unwrap_or(0)
        .max(2)
}

/// Why a data set could not be read or built; each message names the file, the place and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read {}: {source}; check that the path is right and the file is readable", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be read, or is not a regular file (a directory, a pipe, a device).
    #[error(transparent)]
    File(entente_core::files::FileError),
    /// The file holds more bytes than its limit (see [`DataLimits`]), on disk or once
    /// decompressed; reading stopped there.
    #[error(
        "{}: {} more than {limit} bytes, {reason}",
        path.display(),
        if *decompressed { "decompresses to" } else { "holds" }
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The most bytes it may hold.
        limit: u64,
        /// Whether the limit was passed while decompressing it.
        decompressed: bool,
        /// What sets the limit and how to raise it.
        reason: String,
    },
    /// The file holds more examples than `data.max_rows`.
    #[error(
        "{}: holds more than {limit} examples, the limit data.max_rows sets; raise \
         data.max_rows in the manifest if the file really holds that many",
        path.display()
    )]
    TooManyRows {
        /// The file.
        path: PathBuf,
        /// The most examples it may hold.
        limit: usize,
    },
    /// A required file is missing.
    #[error("{what} not found: looked for {}; {hint}", list_paths(tried))]
    NotFound {
        /// What was being looked for, e.g. "Fashion-MNIST training images".
        what: String,
        /// Every path that was tried.
        tried: Vec<PathBuf>,
        /// How to get the file.
        hint: String,
    },
    /// An IDX data set was named by a file, where a folder of IDX files belongs.
    #[error(
        "{} is a file, but IDX data is a folder holding train-images-idx3-ubyte and \
         train-labels-idx1-ubyte (t10k-… for a test set), plain or .gz; name the folder that holds \
         them{}",
        path.display(),
        path.parent().filter(|p| !p.as_os_str().is_empty())
            .map(|p| format!(", such as {}", p.display())).unwrap_or_default()
    )]
    NotAFolder {
        /// The file given.
        path: PathBuf,
    },
    /// The file starts like gzip but does not decompress.
    #[error(
        "{}: gzip data is corrupt or truncated after {decompressed} decompressed bytes ({source}); \
         download the file again",
        path.display()
    )]
    Gzip {
        /// The file.
        path: PathBuf,
        /// How many bytes came out before the error.
        decompressed: usize,
        /// The decompressor's error.
        #[source]
        source: std::io::Error,
    },
    /// An IDX file does not begin with the expected magic number.
    #[error(
        "{}: wrong magic number 0x{found:08x} at byte offset 0, expected 0x{expected:08x} ({expected_kind}); \
         check that this is the right IDX file and that images and labels are not swapped",
        path.display()
    )]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number read, as a big-endian u32.
        found: u32,
        /// The magic number wanted.
        expected: u32,
        /// What the expected magic stands for, e.g. "IDX u8 images, 3 dimensions".
        expected_kind: &'static str,
    },
    /// A file is shorter than its header says.
    #[error(
        "{}: file is truncated: it needs {expected} bytes for {what}, but has {actual}{}; \
         download the file again",
        path.display(),
        if *decompressed { " (after gzip decompression)" } else { "" }
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What the byte count is for, e.g. "header (16 bytes) and 60000 images of 28x28".
        what: String,
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        actual: usize,
        /// Whether the counts are of decompressed bytes.
        decompressed: bool,
    },
    /// A file has bytes after the data its header describes.
    #[error(
        "{}: {extra} unexpected bytes after the data, starting at byte offset {offset}{}; \
         the header and the contents disagree, so the file is probably not what it claims to be",
        path.display(),
        if *decompressed { " (after gzip decompression)" } else { "" }
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// Where the unexpected bytes start.
        offset: usize,
        /// How many there are.
        extra: usize,
        /// Whether the offset is into the decompressed stream.
        decompressed: bool,
    },
    /// An IDX header holds an impossible value.
    #[error("{}: bad header at byte offset {offset}: {reason}", path.display())]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// Where the bad field starts.
        offset: usize,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The image and label files describe different numbers of examples.
    #[error(
        "{} holds {images} images but {} holds {labels} labels; use the label file that belongs to these images",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// The label file.
        labels_path: PathBuf,
        /// Images in the image file.
        images: usize,
        /// Labels in the label file.
        labels: usize,
    },
    /// A CSV cell that should be a number is not.
    #[error(
        "{}:{line}:{column}: cannot read `{cell}` as a number (line {line}, column {column}); \
         {hint}",
        path.display()
    )]
    NotNumeric {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// 1-based column (field) number.
        column: usize,
        /// The cell's text.
        cell: String,
        /// How to fix it.
        hint: &'static str,
    },
    /// A CSV label cell is not a class the federation has: not a whole number, negative, or
    /// not below the number of classes.
    #[error(
        "{}:{line}:{column}: label `{cell}` {problem} (line {line}, column {column}); labels are \
         whole numbers from 0 to {}, below {classes}, {why}: encode classes as 0, 1, 2, ... or \
         pick the right label column",
        path.display(),
        classes.saturating_sub(1)
    )]
    BadLabel {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// 1-based column (field) number.
        column: usize,
        /// The cell's text.
        cell: String,
        /// What is wrong with it, e.g. "is negative".
        problem: &'static str,
        /// Every label must be below this.
        classes: usize,
        /// Where that bound comes from.
        why: &'static str,
    },
    /// A CSV row has a different number of columns than the first data row.
    #[error(
        "{}:{line}: row has {found} columns but line {first_line} has {expected}; \
         every row needs the same number of comma-separated values",
        path.display()
    )]
    Ragged {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the odd row.
        line: usize,
        /// Columns in that row.
        found: usize,
        /// Columns in the first data row.
        expected: usize,
        /// 1-based line number of the first data row.
        first_line: usize,
    },
    /// The chosen label column does not exist.
    #[error(
        "{}:{line}: label column {index} (0-based) does not exist, the row has {columns} columns; \
         set data.label_column to a 0-based column below {columns}, or -1 for the last one",
        path.display()
    )]
    NoLabelColumn {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Requested 0-based label column.
        index: usize,
        /// Columns in the row.
        columns: usize,
    },
    /// A CSV row has fewer than two columns, so it cannot hold a feature and a label.
    #[error(
        "{}:{line}: row has only {columns} column(s), but a table needs at least one feature and \
         one label column; check that the file separates its values with commas",
        path.display()
    )]
    TooFewColumns {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Columns in the row.
        columns: usize,
    },
    /// A CSV file has no data rows.
    #[error("{}: no data rows{}; check the file and data.skip_rows", path.display(),
        if *skipped > 0 { format!(" after skipping {skipped} header line(s)") } else { String::new() })]
    Empty {
        /// The file.
        path: PathBuf,
        /// How many leading lines were skipped.
        skipped: usize,
    },
    /// The file is not valid UTF-8 text.
    #[error(
        "{}: not UTF-8 text (invalid byte at offset {offset}, line {line}); save the file as UTF-8 CSV",
        path.display()
    )]
    NotText {
        /// The file.
        path: PathBuf,
        /// Byte offset of the first invalid byte (in decompressed data, for gzip).
        offset: usize,
        /// 1-based line of that byte.
        line: usize,
    },
    /// An in-memory data set or an argument is inconsistent.
    #[error("invalid data set: {reason}")]
    Invalid {
        /// What is wrong and how to fix it.
        reason: String,
    },
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers shared by the reader tests.

    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, empty directory under the system temp dir, unique per call.
    pub(crate) fn temp_dir(tag: &str) -> PathBuf {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "entente-learn-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Gzip-compresses bytes.
    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Path of a file in the repository's `data/` directory.
    pub(crate) fn repo_data(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../data")
            .join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Dataset {
        Dataset::new(
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
            vec![0, 2, 1],
            vec![2],
            3,
        )
        .unwrap()
    }

    #[test]
    fn new_checks_lengths_and_labels() {
        assert!(Dataset::new(vec![0.0; 5], vec![0, 1], vec![3], 2).is_err());
        let err = Dataset::new(vec![0.0; 4], vec![0, 5], vec![2], 2).unwrap_err();
        assert!(err.to_string().contains("at least 6"), "{err}");
        assert!(Dataset::new(Vec::<f32>::new(), vec![], vec![0], 2).is_err());
        let ok = Dataset::new(vec![0.0; 8], vec![0, 1], vec![1, 2, 2], 2).unwrap();
        assert_eq!(ok.dim, 4);
    }

    #[test]
    fn subset_concat_and_counts() {
        let d = toy();
        assert_eq!(d.len(), 3);
        assert!(!d.is_empty());
        assert_eq!(&*d.row(1), &[2.0, 3.0]);
        let s = d.subset(&[2, 0]);
        assert_eq!(s.features.to_f32(), vec![4.0, 5.0, 0.0, 1.0]);
        assert_eq!(s.labels, vec![1, 0]);
        assert_eq!(s.num_classes, 3);
        let c = Dataset::concat(&[d.clone(), s]).unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!(c.label_counts(), vec![2, 2, 1]);
        assert_eq!(d.subset(&[]).len(), 0);
        assert!(d.subset(&[]).is_empty());
    }

    #[test]
    fn concat_rejects_mismatched_shapes_and_empty_input() {
        let d = toy();
        let other = Dataset::new(vec![0.0; 3], vec![1], vec![3], 2).unwrap();
        let err = Dataset::concat(&[d, other]).unwrap_err();
        assert!(err.to_string().contains("part 1"), "{err}");
        assert!(Dataset::concat(&[]).is_err());
    }
}
