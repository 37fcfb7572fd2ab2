//! Reader for IDX files, the format of MNIST and Fashion-MNIST.
//!
//! An IDX file is a big-endian header followed by raw values: a 4-byte magic number whose third
//! byte is the value type (`0x08` = unsigned byte) and fourth the number of dimensions, then one
//! 4-byte size per dimension. Images are `0x00000803` (count, rows, columns) and labels
//! `0x00000801` (count). Files may be gzip-compressed; that is detected from the content.
//!
//! Format: <http://yann.lecun.com/exdb/mnist/>; Fashion-MNIST (Xiao, Rasul, Vollgraf 2017) uses
//! the same layout and file names.

use std::path::{Path, PathBuf};

use super::limits::{FileKind, decompress_maybe_gzip, read_data_file};
use super::{DataError, DataLimits, Dataset, Features, num_classes_from_labels};

/// Magic number of an IDX file of unsigned-byte images (3 dimensions: count, rows, columns).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte labels (1 dimension: count).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

const IMAGES_HEADER: usize = 16;
const LABELS_HEADER: usize = 8;

/// Which half of an MNIST-style data set to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training files, `train-*`.
    Train,
    /// The test files, `t10k-*`.
    Test,
}

impl Split {
    /// The file-name prefix of this split in the MNIST naming scheme.
    pub fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

/// Unsigned-byte images read from an IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// Pixels, image after image, each row-major.
    pub pixels: Vec<u8>,
}

/// Loads an image file and its label file into a [`Dataset`] with pixels scaled to `[0, 1]`,
/// each file within `limits`.
///
/// The example shape is `[1, rows, cols]`; `num_classes` is the largest label plus one (at least 2).
pub fn load_idx_pair(
    images: &Path,
    labels: &Path,
    limits: &DataLimits,
) -> Result<Dataset, DataError> {
    let imgs = read_idx_images(images, limits)?;
    let labs = read_idx_labels(labels, limits)?;
    if imgs.count != labs.len() {
        return Err(DataError::CountMismatch {
            images_path: images.to_path_buf(),
            labels_path: labels.to_path_buf(),
            images: imgs.count,
            labels: labs.len(),
        });
    }
    let features = Features::Pixels(imgs.pixels);
    let labels: Vec<u32> = labs.into_iter().map(u32::from).collect();
    let num_classes = num_classes_from_labels(&labels);
    Ok(Dataset {
        features,
        labels,
        dim: imgs.rows * imgs.cols,
        num_classes,
        shape: vec![1, imgs.rows, imgs.cols],
    })
}

/// Loads one split from a directory holding the standard MNIST/Fashion-MNIST file names.
///
/// Looks for `{train,t10k}-images-idx3-ubyte` and `{train,t10k}-labels-idx1-ubyte`, with or
/// without `.gz`, and the dotted variants (`train-images.idx3-ubyte`) some mirrors use.
pub fn load_idx_dir(dir: &Path, split: Split, limits: &DataLimits) -> Result<Dataset, DataError> {
    if dir.is_file() {
        return Err(DataError::NotAFolder {
            path: dir.to_path_buf(),
        });
    }
    let prefix = split.prefix();
    let images = find_file(dir, prefix, "images", "idx3")?;
    let labels = find_file(dir, prefix, "labels", "idx1")?;
    load_idx_pair(&images, &labels, limits)
}

/// Reads an IDX file of unsigned-byte images (magic `0x00000803`), plain or gzip, within
/// `limits`.
pub fn read_idx_images(path: &Path, limits: &DataLimits) -> Result<IdxImages, DataError> {
    let (bytes, decompressed) = read_data_file(path, &limits.bytes(FileKind::IdxImages))?;
    images_from_bytes(path, bytes, decompressed, limits)
}

/// Parses an IDX image file already in memory (plain or gzip) as [`read_idx_images`] reads
/// one; `origin` names it in errors.
pub fn parse_idx_images(
    origin: &Path,
    raw: &[u8],
    limits: &DataLimits,
) -> Result<IdxImages, DataError> {
    let limit = limits.bytes(FileKind::IdxImages);
    let (bytes, decompressed) = decompress_maybe_gzip(origin, raw.to_vec(), &limit)?;
    images_from_bytes(origin, bytes, decompressed, limits)
}

fn images_from_bytes(
    path: &Path,
    bytes: Vec<u8>,
    decompressed: bool,
    limits: &DataLimits,
) -> Result<IdxImages, DataError> {
    check_magic(path, &bytes, decompressed, IMAGES_MAGIC)?;
    if bytes.len() < IMAGES_HEADER {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: format!("the {IMAGES_HEADER}-byte image header"),
            expected: IMAGES_HEADER,
            actual: bytes.len(),
            decompressed,
        });
    }
    let count = read_u32(&bytes, 4);
    check_count(path, count, limits)?;
    let rows = read_u32(&bytes, 8);
    let cols = read_u32(&bytes, 12);
    for (offset, value, name) in [(8, rows, "rows"), (12, cols, "columns")] {
        if value == 0 {
            return Err(DataError::BadHeader {
                path: path.to_path_buf(),
                offset,
                reason: format!(
                    "number of {name} is 0; an image needs at least one, so the file is damaged"
                ),
            });
        }
    }
    let payload = count
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .and_then(|v| v.checked_add(IMAGES_HEADER));
    let Some(expected) = payload else {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            offset: 4,
            reason: format!(
                "{count} images of {rows}x{cols} is too large to address; the header is damaged"
            ),
        });
    };
    check_len(path, bytes.len(), expected, decompressed, || {
        format!("the header ({IMAGES_HEADER} bytes) and {count} images of {rows}x{cols}")
    })?;
    let mut pixels = bytes;
    pixels.drain(..IMAGES_HEADER);
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Reads an IDX file of unsigned-byte labels (magic `0x00000801`), plain or gzip, within
/// `limits`.
pub fn read_idx_labels(path: &Path, limits: &DataLimits) -> Result<Vec<u8>, DataError> {
    let (bytes, decompressed) = read_data_file(path, &limits.bytes(FileKind::IdxLabels))?;
    labels_from_bytes(path, bytes, decompressed, limits)
}

/// Parses an IDX label file already in memory (plain or gzip) as [`read_idx_labels`] reads
/// one; `origin` names it in errors.
pub fn parse_idx_labels(
    origin: &Path,
    raw: &[u8],
    limits: &DataLimits,
) -> Result<Vec<u8>, DataError> {
    let limit = limits.bytes(FileKind::IdxLabels);
    let (bytes, decompressed) = decompress_maybe_gzip(origin, raw.to_vec(), &limit)?;
    labels_from_bytes(origin, bytes, decompressed, limits)
}

fn labels_from_bytes(
    path: &Path,
    bytes: Vec<u8>,
    decompressed: bool,
    limits: &DataLimits,
) -> Result<Vec<u8>, DataError> {
    check_magic(path, &bytes, decompressed, LABELS_MAGIC)?;
    if bytes.len() < LABELS_HEADER {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: format!("the {LABELS_HEADER}-byte label header"),
            expected: LABELS_HEADER,
            actual: bytes.len(),
            decompressed,
        });
    }
    let count = read_u32(&bytes, 4);
    check_count(path, count, limits)?;
    let Some(expected) = count.checked_add(LABELS_HEADER) else {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            offset: 4,
            reason: format!("{count} labels is too large to address; the header is damaged"),
        });
    };
    check_len(path, bytes.len(), expected, decompressed, || {
        format!("the header ({LABELS_HEADER} bytes) and {count} labels")
    })?;
    let mut labels = bytes;
    labels.drain(..LABELS_HEADER);
    Ok(labels)
}

/// A file may hold at most `data.max_rows` examples.
fn check_count(path: &Path, count: usize, limits: &DataLimits) -> Result<(), DataError> {
    if count > limits.max_rows {
        return Err(DataError::TooManyRows {
            path: path.to_path_buf(),
            limit: limits.max_rows,
        });
    }
    Ok(())
}

fn find_file(dir: &Path, prefix: &str, kind: &str, idx: &str) -> Result<PathBuf, DataError> {
    let stems = [
        format!("{prefix}-{kind}-{idx}-ubyte"),
        format!("{prefix}-{kind}.{idx}-ubyte"),
    ];
    let mut tried = Vec::new();
    for stem in &stems {
        for suffix in ["", ".gz"] {
            let candidate = dir.join(format!("{stem}{suffix}"));
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(candidate);
        }
    }
    let split = if prefix == "t10k" { "test" } else { "training" };
    let hint = if dir.is_dir() {
        format!(
            "put the MNIST-style {kind} file for the {split} split in {}",
            dir.display()
        )
    } else {
        format!(
            "directory {} does not exist; for Fashion-MNIST run `apt-get install dataset-fashion-mnist` \
             (installs into {FASHION_MNIST_DIR}) or point to a directory with the IDX files",
            dir.display()
        )
    };
    Err(DataError::NotFound {
        what: format!("{split} {kind} (IDX)"),
        tried,
        hint,
    })
}

fn check_magic(
    path: &Path,
    bytes: &[u8],
    decompressed: bool,
    expected: u32,
) -> Result<(), DataError> {
    let expected_kind = if expected == IMAGES_MAGIC {
        "IDX u8 images, 3 dimensions"
    } else {
        "IDX u8 labels, 1 dimension"
    };
    let Some(head) = bytes.first_chunk::<4>() else {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: format!("the 4-byte magic number ({expected_kind})"),
            expected: 4,
            actual: bytes.len(),
            decompressed,
        });
    };
    let found = u32::from_be_bytes(*head);
    if found != expected {
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found,
            expected,
            expected_kind,
        });
    }
    Ok(())
}

fn check_len(
    path: &Path,
    actual: usize,
    expected: usize,
    decompressed: bool,
    what: impl FnOnce() -> String,
) -> Result<(), DataError> {
    if actual < expected {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            what: what(),
            expected,
            actual,
            decompressed,
        });
    }
    if actual > expected {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            offset: expected,
            extra: actual - expected,
            decompressed,
        });
    }
    Ok(())
}

/// Reads a big-endian u32 at `offset`; callers have checked that the header is long enough.
fn read_u32(bytes: &[u8], offset: usize) -> usize {
    bytes
        .get(offset..)
        .and_then(<[u8]>::first_chunk::<4>)
        .map_or(0, |b| u32::from_be_bytes(*b) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{gzip, temp_dir};

    fn images_file(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IMAGES_MAGIC, count, rows, cols] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    fn labels_file(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    fn fashion_dir() -> PathBuf {
        let dir = PathBuf::from(FASHION_MNIST_DIR);
        assert!(
            dir.is_dir(),
            "Fashion-MNIST is missing: {FASHION_MNIST_DIR} does not exist. \
             Install it with `apt-get install dataset-fashion-mnist` (CI does this)."
        );
        dir
    }

    #[test]
    fn fashion_mnist_train() {
        let d = load_idx_dir(&fashion_dir(), Split::Train, &DataLimits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.len(), 60_000);
        assert_eq!(d.shape, vec![1, 28, 28]);
        assert_eq!(d.dim, 784);
        assert_eq!(d.num_classes, 10);
        assert_eq!(d.features.len(), 60_000 * 784);
        assert_eq!(d.label_counts(), vec![6000; 10]);
        // First labels of the training file (9 = ankle boot), as read with Python's gzip module.
        assert_eq!(&d.labels[..10], &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
        assert!(
            d.features
                .to_f32()
                .iter()
                .all(|&x| (0.0..=1.0).contains(&x))
        );
        // Sum of the first image's raw pixels is 76247.
        let sum: f32 = d.row(0).iter().sum();
        assert!((sum - 76247.0 / 255.0).abs() < 1e-2, "{sum}");
    }

    #[test]
    fn fashion_mnist_test() {
        let d = load_idx_dir(&fashion_dir(), Split::Test, &DataLimits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.len(), 10_000);
        assert_eq!(d.shape, vec![1, 28, 28]);
        assert_eq!(d.num_classes, 10);
        assert_eq!(d.label_counts(), vec![1000; 10]);
        assert_eq!(&d.labels[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
        let sum: f32 = d.row(0).iter().sum();
        assert!((sum - 33456.0 / 255.0).abs() < 1e-2, "{sum}");
    }

    #[test]
    fn raw_and_gzip_give_the_same_data() {
        let dir = temp_dir("idx-ok");
        let pixels: Vec<u8> = (0..12).map(|i| (i * 20) as u8).collect();
        let img = images_file(3, 2, 2, &pixels);
        let lab = labels_file(&[0, 4, 1]);
        std::fs::write(dir.join("train-images-idx3-ubyte"), &img).unwrap();
        std::fs::write(dir.join("train-labels-idx1-ubyte"), &lab).unwrap();
        // Gzip detected by content even without the .gz extension.
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), gzip(&img)).unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), gzip(&lab)).unwrap();
        let a = load_idx_dir(&dir, Split::Train, &DataLimits::default()).unwrap();
        let b = load_idx_dir(&dir, Split::Test, &DataLimits::default()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 3);
        assert_eq!(a.shape, vec![1, 2, 2]);
        assert_eq!(a.num_classes, 5);
        assert_eq!(
            &*a.row(1),
            &[80.0 / 255.0, 100.0 / 255.0, 120.0 / 255.0, 140.0 / 255.0]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn num_classes_is_at_least_two() {
        let dir = temp_dir("idx-one-class");
        let (i, l) = (dir.join("i"), dir.join("l"));
        std::fs::write(&i, images_file(2, 1, 1, &[0, 255])).unwrap();
        std::fs::write(&l, labels_file(&[0, 0])).unwrap();
        let d = load_idx_pair(&i, &l, &DataLimits::default()).unwrap();
        assert_eq!(d.num_classes, 2);
        assert_eq!(d.features.to_f32(), vec![0.0, 1.0]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn truncated_images_say_expected_and_actual_bytes() {
        let dir = temp_dir("idx-trunc");
        let (i, l) = (dir.join("imgs"), dir.join("labs"));
        std::fs::write(&i, images_file(3, 2, 2, &[0; 10])).unwrap();
        std::fs::write(&l, labels_file(&[0, 1, 2])).unwrap();
        let err = load_idx_pair(&i, &l, &DataLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 28,
                    actual: 26,
                    decompressed: false,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("imgs") && msg.contains("28") && msg.contains("26"),
            "{msg}"
        );

        // Gzip: the counts are of decompressed bytes, and the message says so.
        std::fs::write(&i, gzip(&images_file(3, 2, 2, &[0; 10]))).unwrap();
        let msg = load_idx_pair(&i, &l, &DataLimits::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("after gzip decompression"), "{msg}");

        // A header cut short.
        std::fs::write(&i, &images_file(3, 2, 2, &[])[..9]).unwrap();
        let err = load_idx_pair(&i, &l, &DataLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 16,
                    actual: 9,
                    ..
                }
            ),
            "{err:?}"
        );

        // A truncated gzip stream.
        let gz = gzip(&images_file(3, 2, 2, &[7; 12]));
        std::fs::write(&i, &gz[..gz.len() - 6]).unwrap();
        let err = load_idx_pair(&i, &l, &DataLimits::default()).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let dir = temp_dir("idx-trailing");
        let l = dir.join("labs");
        let mut bytes = labels_file(&[1, 2]);
        bytes.extend_from_slice(&[0, 0, 0]);
        std::fs::write(&l, bytes).unwrap();
        let err = read_idx_labels(&l, &DataLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TrailingBytes {
                    offset: 10,
                    extra: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wrong_magic_is_shown_in_hex() {
        let dir = temp_dir("idx-magic");
        let (i, l) = (dir.join("imgs"), dir.join("labs"));
        std::fs::write(&i, images_file(2, 1, 1, &[0, 0])).unwrap();
        std::fs::write(&l, labels_file(&[0, 1])).unwrap();
        // Swapped arguments: the label file is read as images.
        let err = load_idx_pair(&l, &i, &DataLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadMagic {
                    found: 0x801,
                    expected: 0x803,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("0x00000801") && msg.contains("0x00000803"),
            "{msg}"
        );
        assert!(msg.contains("labs"), "{msg}");

        std::fs::write(&i, b"PK\x03\x04 not idx at all").unwrap();
        let msg = read_idx_images(&i, &DataLimits::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("0x504b0304"), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = temp_dir("idx-count");
        let (i, l) = (dir.join("imgs"), dir.join("labs"));
        std::fs::write(&i, images_file(3, 1, 2, &[0; 6])).unwrap();
        std::fs::write(&l, labels_file(&[0, 1])).unwrap();
        let err = load_idx_pair(&i, &l, &DataLimits::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::CountMismatch {
                    images: 3,
                    labels: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("imgs") && msg.contains("labs"), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn zero_sized_images_are_a_bad_header() {
        let dir = temp_dir("idx-zero");
        let i = dir.join("imgs");
        std::fs::write(&i, images_file(2, 0, 3, &[])).unwrap();
        let err = read_idx_images(&i, &DataLimits::default()).unwrap_err();
        assert!(
            matches!(err, DataError::BadHeader { offset: 8, .. }),
            "{err:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_holds_at_most_max_rows_examples() {
        let limits = DataLimits {
            max_rows: 2,
            ..DataLimits::default()
        };
        let origin = Path::new("imgs");
        let two = parse_idx_images(origin, &images_file(2, 1, 1, &[0, 9]), &limits).unwrap();
        assert_eq!(two.count, 2);
        let err = parse_idx_images(origin, &images_file(3, 1, 1, &[0; 3]), &limits).unwrap_err();
        assert!(
            matches!(err, DataError::TooManyRows { limit: 2, .. }),
            "{err:?}"
        );
        // A label file of more labels passes its byte limit (8 + max_rows) first.
        let err = parse_idx_labels(origin, &labels_file(&[0, 1, 2]), &limits).unwrap_err();
        assert!(
            err.to_string()
                .contains("the most data.max_rows = 2 labels take"),
            "{err}"
        );
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit_the_schema_sets() {
        // 10 images of 2x2 pixels: 16 + 40 bytes at most. The header claims 10 images, the
        // stream holds a million bytes more.
        let limits = DataLimits {
            max_rows: 10,
            features: Some(4),
            ..DataLimits::default()
        };
        let bomb = gzip(&images_file(10, 2, 2, &vec![0; 1 << 20]));
        let err = parse_idx_images(Path::new("bomb.gz"), &bomb, &limits).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TooLarge {
                    limit: 56,
                    decompressed: true,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("decompresses to more than 56 bytes")
                && msg.contains("data.max_rows = 10 images of 4 pixels"),
            "{msg}"
        );
        let ok = gzip(&images_file(10, 2, 2, &[1; 40]));
        assert_eq!(
            parse_idx_images(Path::new("ok.gz"), &ok, &limits)
                .unwrap()
                .count,
            10
        );
    }

    #[test]
    fn missing_files_list_what_was_tried() {
        let dir = temp_dir("idx-missing");
        let err = load_idx_dir(&dir, Split::Test, &DataLimits::default()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("t10k-images-idx3-ubyte.gz"), "{msg}");
        let err =
            load_idx_dir(&dir.join("nope"), Split::Train, &DataLimits::default()).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(err.to_string().contains("dataset-fashion-mnist"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_given_for_the_folder_is_named_as_a_file() {
        let dir = temp_dir("idx-file");
        let file = dir.join("train-images-idx3-ubyte.gz");
        std::fs::write(&file, b"").unwrap();
        let err = load_idx_dir(&file, Split::Train, &DataLimits::default()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::NotAFolder { .. }), "{err:?}");
        assert!(
            msg.contains("is a file") && !msg.contains("does not exist"),
            "{msg}"
        );
        assert!(msg.contains(&format!("such as {}", dir.display())), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
