//! Writing a data set back as files a node reads: a folder of IDX training files for images,
//! a CSV table for the rest. `entente split` uses it to give each site of a simulated
//! federation its own records for a deployment.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{DataError, Dataset, Features};

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `data` (images of shape `[1, rows, cols]`, pixels in `[0, 1]`) to `dir` as
/// `train-images-idx3-ubyte` and `train-labels-idx1-ubyte`; returns the two paths.
pub fn write_idx_train(dir: &Path, data: &Dataset) -> Result<(PathBuf, PathBuf), DataError> {
    let [1, rows, cols] = data.shape.as_slice() else {
        return Err(DataError::Invalid {
            reason: format!(
                "IDX files hold one-channel images; examples of shape {:?} cannot be written",
                data.shape
            ),
        });
    };
    let too_big = |what: &str| DataError::Invalid {
        reason: format!("{what} does not fit an IDX header"),
    };
    let count = u32::try_from(data.len()).map_err(|_| too_big("the example count"))?;
    let rows32 = u32::try_from(*rows).map_err(|_| too_big("the image height"))?;
    let cols32 = u32::try_from(*cols).map_err(|_| too_big("the image width"))?;
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;

    let images = dir.join("train-images-idx3-ubyte");
    let mut bytes = Vec::with_capacity(16 + data.features.len());
    for word in [0x0803, count, rows32, cols32] {
        bytes.extend_from_slice(&u32::to_be_bytes(word));
    }
    match &data.features {
        Features::Pixels(pixels) => bytes.extend_from_slice(pixels),
        // Values in [0, 1] as pixels are read (byte / 255): the nearest byte.
        Features::Values(values) => bytes.extend(
            values
                .iter()
                .map(|&x| (x.clamp(0.0, 1.0) * 255.0).round() as u8),
        ),
    }
    std::fs::write(&images, bytes).map_err(io_error(&images))?;

    let labels = dir.join("train-labels-idx1-ubyte");
    let mut bytes = Vec::with_capacity(8 + data.len());
    for word in [0x0801, count] {
        bytes.extend_from_slice(&u32::to_be_bytes(word));
    }
    for &label in &data.labels {
        bytes.push(u8::try_from(label).map_err(|_| DataError::Invalid {
            reason: format!("label {label} does not fit an IDX byte"),
        })?);
    }
    std::fs::write(&labels, bytes).map_err(io_error(&labels))?;
    Ok((images, labels))
}

/// Writes `data` to `path` as a CSV table: the features of each example, then its label.
/// Values are written in full (Rust's shortest round-trip form), so reading the file back
/// gives the same numbers.
pub fn write_csv(path: &Path, data: &Dataset) -> Result<(), DataError> {
    let file = std::fs::File::create(path).map_err(io_error(path))?;
    let mut out = std::io::BufWriter::new(file);
    for i in 0..data.len() {
        let mut line = String::new();
        for x in data.row(i).iter() {
            line.push_str(&x.to_string());
            line.push(',');
        }
        line.push_str(&data.labels[i].to_string());
        line.push('\n');
        out.write_all(line.as_bytes()).map_err(io_error(path))?;
    }
    out.flush().map_err(io_error(path))
}
