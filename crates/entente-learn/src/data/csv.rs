//! Reader for numeric CSV tables, and z-score standardization for tabular features.
//!
//! Each data row holds numbers only: the features and one label column, an integer class
//! `0, 1, 2, ...`. Leading header lines are skipped with [`CsvOptions::skip_rows`]; blank
//! lines are ignored. Cells are read by the `csv` crate, so they may be quoted as RFC 4180 has
//! it: `"1.5"` is the number 1.5 and `"radius, mean"` one header cell. Gzip input is detected
//! from the content. Errors name the file, the 1-based line and column, and the offending cell.

use std::path::Path;

use entente_core::manifest::MAX_CLASSES;
use entente_core::text::{excerpt, printable};

use super::limits::{FileKind, decompress_maybe_gzip, read_data_file};
use super::{DataError, DataLimits, Dataset, Features, num_classes_from_labels};

/// Which column of a CSV row holds the class label.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LabelColumn {
    /// The last column (the common layout, e.g. UCI digits and WDBC).
    #[default]
    Last,
    /// The first column.
    First,
    /// The column with this 0-based index.
    Index(usize),
}

/// How to read a CSV file; `CsvOptions::default()` is comma-separated, no header, label last.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvOptions {
    /// Which column holds the label.
    pub label_column: LabelColumn,
    /// Number of leading lines to skip (1 for a single header line).
    pub skip_rows: usize,
    /// Field separator, `b','` by default.
    pub delimiter: u8,
    /// Multiply every feature by this, e.g. `Some(1.0 / 16.0)` for pixels in `0..=16`.
    pub scale: Option<f32>,
    /// Example shape, e.g. `[1, 8, 8]`; `None` means `[dim]`. Its product must equal the feature count.
    pub shape: Option<Vec<usize>>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            label_column: LabelColumn::Last,
            skip_rows: 0,
            delimiter: b',',
            scale: None,
            shape: None,
        }
    }
}

/// Loads a numeric CSV file (plain or gzip) into a [`Dataset`], within `limits`.
///
/// `num_classes` is the largest label plus one (at least 2).
pub fn load_csv(
    path: &Path,
    options: &CsvOptions,
    limits: &DataLimits,
) -> Result<Dataset, DataError> {
    let (bytes, _) = read_data_file(path, &limits.bytes(FileKind::Csv))?;
    parse_csv(path, &bytes, options, limits)
}

/// Parses CSV content already in memory (plain or gzip), within `limits`; `origin` names it
/// in errors.
pub fn parse_csv_bytes(
    origin: &Path,
    raw: &[u8],
    options: &CsvOptions,
    limits: &DataLimits,
) -> Result<Dataset, DataError> {
    let (bytes, _) = decompress_maybe_gzip(origin, raw.to_vec(), &limits.bytes(FileKind::Csv))?;
    parse_csv(origin, &bytes, options, limits)
}

/// Parses decompressed CSV bytes with the `csv` crate: RFC 4180 quoting, so a quoted cell may
/// hold the delimiter (`"radius, mean"`) or a doubled quote. The first `skip_rows` lines are cut
/// off before parsing, as lines: a header is skipped even if its quotes do not balance.
fn parse_csv(
    path: &Path,
    bytes: &[u8],
    options: &CsvOptions,
    limits: &DataLimits,
) -> Result<Dataset, DataError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let offset = e.valid_up_to();
        DataError::NotText {
            path: path.to_path_buf(),
            offset,
            line: bytes[..offset].iter().filter(|&&b| b == b'\n').count() + 1,
        }
    })?;
    let header_bytes: usize = text
        .split_inclusive('\n')
        .take(options.skip_rows)
        .map(str::len)
        .sum();
    let body = &text[header_bytes..];
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .delimiter(options.delimiter)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(body.as_bytes());
    let mut features = Vec::new();
    let mut labels = Vec::new();
    // (columns, label column, 1-based line) of the first data row.
    let mut layout: Option<(usize, usize, usize)> = None;
    let mut record = ::csv::StringRecord::new();

    loop {
        // Reading from memory, with rows of any length allowed and the text checked as UTF-8
        // above, the reader has no error left to give; should it give one, it is reported.
        let more = reader
            .read_record(&mut record)
            .map_err(|e| DataError::Invalid {
                reason: format!("{}: {e}; check the file's quoting", path.display()),
            })?;
        if !more {
            break;
        }
        let line = options.skip_rows + record_line(body, &record);
        if record.len() == 1 && record[0].is_empty() {
            continue; // a line of spaces
        }
        let (columns, label_col, first_line) = match layout {
            Some(l) => l,
            None => {
                let l = first_layout(path, line, record.len(), options.label_column)?;
                layout = Some(l);
                l
            }
        };
        if record.len() != columns {
            return Err(DataError::Ragged {
                path: path.to_path_buf(),
                line,
                found: record.len(),
                expected: columns,
                first_line,
            });
        }
        if labels.len() == limits.max_rows {
            return Err(DataError::TooManyRows {
                path: path.to_path_buf(),
                limit: limits.max_rows,
            });
        }
        for (col, cell) in record.iter().enumerate() {
            if col == label_col {
                labels.push(parse_label(path, line, col + 1, cell, limits)?);
            } else {
                let value = cell.parse::<f32>().ok().filter(|v| v.is_finite());
                let Some(value) = value else {
                    return Err(DataError::NotNumeric {
                        path: path.to_path_buf(),
                        line,
                        column: col + 1,
                        cell: quote(cell),
                        hint: feature_hint(cell, line == first_line && options.skip_rows == 0),
                    });
                };
                features.push(value * options.scale.unwrap_or(1.0));
            }
        }
    }

    let Some((columns, _, _)) = layout else {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            skipped: options.skip_rows,
        });
    };
    let dim = columns - 1;
    let shape = options.shape.clone().unwrap_or_else(|| vec![dim]);
    if shape.iter().product::<usize>() != dim {
        return Err(DataError::Invalid {
            reason: format!(
                "{}: the example shape {shape:?} has {} elements but each row has {dim} features; \
                 use a shape (data.shape) whose product is {dim}",
                path.display(),
                shape.iter().product::<usize>()
            ),
        });
    }
    let num_classes = num_classes_from_labels(&labels);
    Ok(Dataset {
        features: Features::Values(features),
        labels,
        dim,
        num_classes,
        shape,
    })
}

/// Per-feature mean and standard deviation, for z-scoring features as `(x - mean) / std`.
#[derive(Clone, Debug, PartialEq)]
pub struct Standardization {
    /// Mean of each feature.
    pub mean: Vec<f32>,
    /// Population standard deviation of each feature (1 where a feature is constant).
    pub std: Vec<f32>,
}

impl Standardization {
    /// Computes the statistics of a non-empty data set.
    pub fn fit(data: &Dataset) -> Result<Self, DataError> {
        if data.is_empty() {
            return Err(DataError::Invalid {
                reason: "cannot standardize by an empty data set; fit on a set with examples"
                    .to_string(),
            });
        }
        let n = data.len() as f64;
        let mut sum = vec![0f64; data.dim];
        let values = data.features.slice(0, data.features.len());
        for row in values.chunks_exact(data.dim) {
            for (s, &x) in sum.iter_mut().zip(row) {
                *s += f64::from(x);
            }
        }
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let mut sq = vec![0f64; data.dim];
        for row in values.chunks_exact(data.dim) {
            for ((s, &x), m) in sq.iter_mut().zip(row).zip(&mean) {
                *s += (f64::from(x) - m).powi(2);
            }
        }
        let std = sq
            .iter()
            .map(|s| {
                let sd = (s / n).sqrt();
                if sd > 1e-12 { sd as f32 } else { 1.0 }
            })
            .collect();
        Ok(Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            std,
        })
    }

    /// Replaces each feature `x` of `data` by `(x - mean) / std`.
    pub fn apply(&self, data: &mut Dataset) -> Result<(), DataError> {
        if data.dim != self.mean.len() {
            return Err(DataError::Invalid {
                reason: format!(
                    "standardization was fitted on {} features but the data set has {}; \
                     fit and apply on data with the same columns",
                    self.mean.len(),
                    data.dim
                ),
            });
        }
        for row in data.features.values_mut().chunks_exact_mut(self.mean.len()) {
            for ((x, m), s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *x = (*x - m) / s;
            }
        }
        Ok(())
    }
}

/// Z-scores `train` and `test` by the training set's per-feature statistics, and returns them.
pub fn standardize(train: &mut Dataset, test: &mut Dataset) -> Result<Standardization, DataError> {
    let stats = Standardization::fit(train)?;
    stats.apply(train)?;
    stats.apply(test)?;
    Ok(stats)
}

fn first_layout(
    path: &Path,
    line: usize,
    columns: usize,
    label_column: LabelColumn,
) -> Result<(usize, usize, usize), DataError> {
    let label_col = match label_column {
        LabelColumn::Last => columns - 1,
        LabelColumn::First => 0,
        LabelColumn::Index(index) => index,
    };
    if columns < 2 {
        return Err(DataError::TooFewColumns {
            path: path.to_path_buf(),
            line,
            columns,
        });
    }
    if label_col >= columns {
        return Err(DataError::NoLabelColumn {
            path: path.to_path_buf(),
            line,
            index: label_col,
            columns,
        });
    }
    Ok((columns, label_col, line))
}

/// The 1-based line of `body` on which `record` starts. The reader's position of a record is
/// where reading it began, before the blank lines it passed over, so those are counted here.
fn record_line(body: &str, record: &::csv::StringRecord) -> usize {
    let Some(position) = record.position() else {
        return 1;
    };
    let start = usize::try_from(position.byte()).unwrap_or(usize::MAX);
    let blank = body
        .as_bytes()
        .get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .filter(|&&b| b == b'\n')
        .count();
    usize::try_from(position.line())
        .unwrap_or(usize::MAX)
        .saturating_add(blank)
}

/// The class a label cell names: a whole number below the schema's `data.classes`, else
/// below [`MAX_CLASSES`]. `1.0` is class 1; anything else is a [`DataError::BadLabel`] that
/// says what is wrong and which labels are allowed.
fn parse_label(
    path: &Path,
    line: usize,
    column: usize,
    cell: &str,
    limits: &DataLimits,
) -> Result<u32, DataError> {
    let classes = limits.classes;
    let problem = match cell.parse::<i128>() {
        Ok(v) if v < 0 => "is negative",
        Ok(v) => match u32::try_from(v) {
            Ok(label) if (label as usize) < classes => return Ok(label),
            _ => "is too large",
        },
        Err(_) => match cell.parse::<f64>() {
            Ok(v) if !v.is_finite() => "is not a number",
            Ok(v) if v.fract() != 0.0 => "is not a whole number",
            Ok(v) if v < 0.0 => "is negative",
            // Below `classes`, so a u32 exactly: the cast neither wraps nor cuts.
            Ok(v) if v < classes as f64 => return Ok(v as u32),
            Ok(_) => "is too large",
            Err(_) => "is not a number",
        },
    };
    Err(DataError::BadLabel {
        path: path.to_path_buf(),
        line,
        column,
        cell: quote(cell),
        problem,
        classes,
        why: if classes < MAX_CLASSES {
            "the manifest's data.classes"
        } else {
            "the most a federation may have; the manifest states no data.classes"
        },
    })
}

/// A cell as an error message quotes it: shortened, and with control characters (a quoted
/// cell may hold a line break) escaped.
fn quote(cell: &str) -> String {
    printable(&excerpt(cell)).into_owned()
}

fn feature_hint(cell: &str, first_row_without_skip: bool) -> &'static str {
    if cell.is_empty() {
        "fill in the missing value; empty cells are not allowed"
    } else if first_row_without_skip {
        "if the first line is a header, skip it: set skip_rows = 1 under [data] in the manifest"
    } else if cell.parse::<f32>().is_ok() {
        "use finite numbers; NaN and infinity are not allowed"
    } else if cell.starts_with('"') {
        "a double quote starts a quoted value only as the cell's first character; remove the \
         spaces before it"
    } else if cell.contains(',') && cell.replacen(',', ".", 1).parse::<f32>().is_ok() {
        "write decimals with a point (1.5), not a comma; a quoted cell is one value"
    } else {
        "every feature column must hold numbers; remove or encode text columns"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{gzip, repo_data, temp_dir};
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn digits() -> Dataset {
        let options = CsvOptions {
            scale: Some(1.0 / 16.0),
            shape: Some(vec![1, 8, 8]),
            ..CsvOptions::default()
        };
        load_csv(
            &repo_data("uci-digits.csv.gz"),
            &options,
            &DataLimits::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn wdbc() -> Dataset {
        let options = CsvOptions {
            skip_rows: 1,
            ..CsvOptions::default()
        };
        load_csv(&repo_data("wdbc.csv"), &options, &DataLimits::default())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Writes `contents` to a fresh temp file and loads it.
    fn load_str(contents: &[u8], options: &CsvOptions) -> Result<Dataset, DataError> {
        let dir = temp_dir("csv");
        let path = dir.join("table.csv");
        std::fs::write(&path, contents).unwrap();
        let result = load_csv(&path, options, &DataLimits::default());
        std::fs::remove_dir_all(dir).unwrap();
        result
    }

    #[test]
    fn uci_digits() {
        let d = digits();
        assert_eq!(d.len(), 1797);
        assert_eq!(d.dim, 64);
        assert_eq!(d.shape, vec![1, 8, 8]);
        assert_eq!(d.num_classes, 10);
        // Counts from scikit-learn's load_digits().
        assert_eq!(
            d.label_counts(),
            vec![178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
        );
        assert_eq!(d.labels[0], 0);
        assert_eq!(&d.row(0)[..4], &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0]);
        let max = d.features.to_f32().iter().cloned().fold(f32::MIN, f32::max);
        assert_eq!(max, 1.0);
        assert!(d.features.to_f32().iter().all(|&x| x >= 0.0));
    }

    #[test]
    fn wdbc_with_header_skipped() {
        let d = wdbc();
        assert_eq!(d.len(), 569);
        assert_eq!(d.dim, 30);
        assert_eq!(d.shape, vec![30]);
        assert_eq!(d.num_classes, 2);
        assert_eq!(d.label_counts(), vec![212, 357]);
        assert_eq!(d.row(0)[0], 17.99);
        assert_eq!(d.row(0)[29], 0.1189);
        assert_eq!(d.labels[0], 0);
    }

    #[test]
    fn wdbc_header_without_skip_names_line_column_and_fix() {
        let err = load_csv(
            &repo_data("wdbc.csv"),
            &CsvOptions::default(),
            &DataLimits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, DataError::NotNumeric { line: 1, column: 3, cell, .. } if cell == "malignant"),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("wdbc.csv:1:3"), "{msg}");
        assert!(msg.contains("`malignant`"), "{msg}");
        assert!(msg.contains("skip_rows = 1"), "{msg}");
        // With the label in the third column, the header's class name is a bad label.
        let options = CsvOptions {
            label_column: LabelColumn::Index(2),
            ..CsvOptions::default()
        };
        let err = load_csv(&repo_data("wdbc.csv"), &options, &DataLimits::default()).unwrap_err();
        assert!(
            matches!(&err, DataError::BadLabel { line: 1, column: 3, cell, .. } if cell == "malignant"),
            "{err:?}"
        );
    }

    #[test]
    fn standardize_by_training_statistics() {
        let d = wdbc();
        let idx: Vec<usize> = (0..d.len()).collect();
        let (mut train, mut test) = (d.subset(&idx[..400]), d.subset(&idx[400..]));
        let raw_test = test.clone();
        let stats = standardize(&mut train, &mut test).unwrap();
        for j in 0..train.dim {
            let col: Vec<f64> = train
                .features
                .to_f32()
                .iter()
                .skip(j)
                .step_by(30)
                .map(|&x| f64::from(x))
                .collect();
            let mean = col.iter().sum::<f64>() / col.len() as f64;
            let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / col.len() as f64;
            assert!(mean.abs() < 1e-4, "feature {j} mean {mean}");
            assert!((var - 1.0).abs() < 1e-3, "feature {j} var {var}");
        }
        let expected = (raw_test.row(0)[0] - stats.mean[0]) / stats.std[0];
        assert!((test.row(0)[0] - expected).abs() < 1e-6);
        // Whole-file statistics of feature 0 (radius mean), from Python's statistics module.
        let all = Standardization::fit(&d).unwrap();
        assert!((all.mean[0] - 14.127_292).abs() < 1e-3);
        assert!((all.std[0] - 3.520_951).abs() < 1e-3);
    }

    #[test]
    fn standardize_handles_constant_columns_and_mismatch() {
        let mut a = Dataset::new(vec![1.0, 2.0, 1.0, 4.0], vec![0, 1], vec![2], 2).unwrap();
        let mut b = Dataset::new(vec![1.0, 3.0], vec![0], vec![2], 2).unwrap();
        let stats = standardize(&mut a, &mut b).unwrap();
        assert_eq!(stats.std[0], 1.0);
        assert_eq!(a.features.to_f32(), vec![0.0, -1.0, 0.0, 1.0]);
        assert_eq!(b.features.to_f32(), vec![0.0, 0.0]);
        let mut c = Dataset::new(vec![1.0], vec![0], vec![1], 2).unwrap();
        assert!(stats.apply(&mut c).is_err());
        let empty = a.subset(&[]);
        assert!(Standardization::fit(&empty).is_err());
    }

    #[test]
    fn gzip_detected_by_content_and_options_respected() {
        let text = "# made up\n\"1\", 2 ,0\r\n\r\n3,4,1\n5,6,3\n";
        let options = CsvOptions {
            skip_rows: 1,
            ..CsvOptions::default()
        };
        let plain = load_str(text.as_bytes(), &options).unwrap();
        let zipped = load_str(&gzip(text.as_bytes()), &options).unwrap();
        assert_eq!(plain, zipped);
        assert_eq!(plain.features.to_f32(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(plain.labels, vec![0, 1, 3]);
        assert_eq!(plain.num_classes, 4);

        let options = CsvOptions {
            label_column: LabelColumn::Index(1),
            delimiter: b';',
            scale: Some(0.5),
            ..CsvOptions::default()
        };
        let d = load_str(b"2;0;4\n6;1.0;8\n", &options).unwrap();
        assert_eq!(d.features.to_f32(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(d.labels, vec![0, 1]);
        assert_eq!(d.num_classes, 2);
    }

    #[test]
    fn parse_bytes_matches_file() {
        let path = repo_data("uci-digits.csv.gz");
        let bytes = std::fs::read(&path).unwrap();
        let options = CsvOptions::default();
        let from_bytes = parse_csv_bytes(
            Path::new("embedded:uci-digits"),
            &bytes,
            &options,
            &DataLimits::default(),
        )
        .unwrap();
        assert_eq!(
            from_bytes,
            load_csv(&path, &options, &DataLimits::default()).unwrap()
        );
        let err = parse_csv_bytes(
            Path::new("embedded:x"),
            b"1,a,0\n",
            &options,
            &DataLimits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("embedded:x:1:2:"), "{err}");
    }

    #[test]
    fn non_numeric_cell_names_line_column_and_text() {
        let err = load_str(b"1,2,0\n3,abc,1\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DataError::NotNumeric { line: 2, column: 2, cell, .. } if cell == "abc"),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("table.csv:2:2") && msg.contains("`abc`"),
            "{msg}"
        );
        assert!(msg.contains("remove or encode text columns"), "{msg}");

        let msg = load_str(b"1,,0\n", &CsvOptions::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("missing value"), "{msg}");
        let msg = load_str(b"1,2,0\nNaN,2,0\n", &CsvOptions::default())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("finite"), "{msg}");
    }

    #[test]
    fn ragged_rows_name_the_line() {
        let err = load_str(b"1,2,0\n3,4,1\n\n5,1\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Ragged {
                    line: 4,
                    found: 2,
                    expected: 3,
                    first_line: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("table.csv:4"), "{err}");
    }

    #[test]
    fn empty_files_are_errors() {
        let err = load_str(b"", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(err, DataError::Empty { skipped: 0, .. }),
            "{err:?}"
        );
        let err = load_str(
            b"a,b,c\n\n  \n",
            &CsvOptions {
                skip_rows: 1,
                ..CsvOptions::default()
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("after skipping 1 header line"),
            "{err}"
        );
    }

    #[test]
    fn labels_must_be_non_negative_integers() {
        for bad in ["-1", "1.5", "cat", "1e40"] {
            let text = format!("1,2,{bad}\n");
            let err = load_str(text.as_bytes(), &CsvOptions::default()).unwrap_err();
            assert!(
                matches!(&err, DataError::BadLabel { line: 1, column: 3, cell, .. } if cell == bad),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn labels_must_be_classes_the_federation_has() {
        let err = load_str(b"1,2,0\n3,4,99999\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(
                &err,
                DataError::BadLabel {
                    line: 2,
                    column: 3,
                    cell,
                    problem: "is too large",
                    classes: MAX_CLASSES,
                    ..
                } if cell == "99999"
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("table.csv:2:3: label `99999` is too large"),
            "{err}"
        );
        let schema = DataLimits {
            classes: 3,
            ..DataLimits::default()
        };
        let origin = Path::new("site.csv");
        let options = CsvOptions::default();
        assert!(parse_csv_bytes(origin, b"1,2,2\n", &options, &schema).is_ok());
        let err = parse_csv_bytes(origin, b"1,2,2\n1,2,3\n", &options, &schema).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("site.csv:2:3: label `3` is too large")
                && msg.contains("from 0 to 2, below 3, the manifest's data.classes"),
            "{msg}"
        );
    }

    /// Every label that is not a class is an error naming the file, line, cell and the
    /// labels allowed; none panics, wraps or is cut to a class.
    #[test]
    fn out_of_range_labels_name_the_allowed_range() {
        let manifest = DataLimits {
            classes: 10,
            ..DataLimits::default()
        };
        let cases = [
            ("4000000000", "is too large", DataLimits::default()),
            ("4294967296", "is too large", DataLimits::default()),
            (
                "123456789012345678901234567890123456789012",
                "is too large",
                DataLimits::default(),
            ),
            ("1e40", "is too large", DataLimits::default()),
            ("10", "is too large", manifest),
            ("10.0", "is too large", manifest),
            ("-1", "is negative", manifest),
            ("-1.0", "is negative", manifest),
            ("1.5", "is not a whole number", manifest),
            ("NaN", "is not a number", manifest),
            ("inf", "is not a number", manifest),
            ("cat", "is not a number", manifest),
        ];
        for (label, problem, limits) in cases {
            let text = format!("1,2,0\n3,4,{label}\n");
            let err = parse_csv_bytes(
                Path::new("dir/labels.csv"),
                text.as_bytes(),
                &CsvOptions::default(),
                &limits,
            )
            .unwrap_err();
            assert!(
                matches!(
                    &err,
                    DataError::BadLabel { line: 2, column: 3, cell, problem: p, .. }
                        if cell == label && *p == problem
                ),
                "{label}: {err:?}"
            );
            let msg = err.to_string();
            let range = format!("from 0 to {}, below {}", limits.classes - 1, limits.classes);
            assert!(
                msg.starts_with(&format!("dir/labels.csv:2:3: label `{label}` {problem}"))
                    && msg.contains(&range),
                "{msg}"
            );
        }
        // Quoted, signed or written as a float, a class is still that class.
        let d = load_str(b"1,\"2\"\n3,+1\n5, 0.0 \n7,-0\n", &CsvOptions::default()).unwrap();
        assert_eq!(d.labels, vec![2, 1, 0, 0]);
    }

    #[test]
    fn quoted_cells_are_one_value() {
        let header = b"\"radius, mean\",\"the \"\"x\"\" value\",label\n\"1.5\",2,0\n\" 2.5 \",\"-3e1\",\"1\"\n";
        let options = CsvOptions {
            skip_rows: 1,
            ..CsvOptions::default()
        };
        let d = load_str(header, &options).unwrap();
        assert_eq!(d.dim, 2);
        assert_eq!(d.features.to_f32(), vec![1.5, 2.0, 2.5, -30.0]);
        assert_eq!(d.labels, vec![0, 1]);
        // Not skipped, the header's first cell is the whole quoted name, not `"radius`.
        let err = load_str(header, &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DataError::NotNumeric { line: 1, column: 1, cell, .. } if cell == "radius, mean"),
            "{err:?}"
        );
        // A decimal comma inside quotes is one cell that is not a number: no ragged row.
        let err = load_str(b"1,2,0\n3,\"1,5\",1\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(&err, DataError::NotNumeric { line: 2, column: 2, cell, .. } if cell == "1,5"),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("table.csv:2:2") && msg.contains("with a point (1.5)"),
            "{msg}"
        );
        // Same for a semicolon-separated table, where such a cell needs no quotes.
        let semicolons = CsvOptions {
            delimiter: b';',
            ..CsvOptions::default()
        };
        let msg = load_str(b"1;2;0\n1;2,5;0\n", &semicolons)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("`2,5`") && msg.contains("with a point"),
            "{msg}"
        );
        // A quote after a space is text, as RFC 4180 has it; the message says so.
        let msg = load_str(b"1,2,0\n1, \"2\",0\n", &CsvOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("table.csv:2:2") && msg.contains("remove the spaces before it"),
            "{msg}"
        );
    }

    #[test]
    fn quoted_line_breaks_keep_line_numbers_right() {
        // The first row spans lines 1 and 2, so the bad label is on line 3.
        let err = load_str(b"\"1\n\",2,0\n3,4,x\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(
                &err,
                DataError::BadLabel {
                    line: 3,
                    column: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        // A line break inside a bad cell is escaped in the message.
        let err = load_str(b"1,\"2\n3\",0\n", &CsvOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("table.csv:1:2") && !msg.contains('\n'),
            "{msg}"
        );
        // A quote never closed takes the rest of the file into its cell: a ragged row.
        let err = load_str(b"1,2,0\n3,\"4,1\n5,6,0\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Ragged {
                    line: 2,
                    found: 2,
                    expected: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        // A header line is skipped as a line, even with a quote it does not close.
        let options = CsvOptions {
            skip_rows: 1,
            ..CsvOptions::default()
        };
        let d = load_str(b"\"open,b,label\n1,2,0\n", &options).unwrap();
        assert_eq!(d.labels, vec![0]);
    }

    /// One data row of the property test: three features, a label, and how each of the four
    /// cells is written (plain, quoted, spaced, spaced inside quotes).
    type Row = (Vec<f32>, u32, Vec<u8>);

    /// `rows` as a table under a header with quoted names, cells written as each row says.
    fn render(rows: &[Row], delimiter: char) -> String {
        let sep = delimiter.to_string();
        let mut text = ["\"a, b\"", "\"c\"\"d\"", "e", "label"].join(&sep) + "\n";
        for (values, label, styles) in rows {
            let cells: Vec<String> = values
                .iter()
                .map(ToString::to_string)
                .chain(std::iter::once(label.to_string()))
                .zip(styles)
                .map(|(cell, style)| match style {
                    0 => cell,
                    1 => format!("\"{cell}\""),
                    2 => format!("  {cell}\t"),
                    _ => format!("\" {cell} \"  "),
                })
                .collect();
            text.push_str(&cells.join(&sep));
            text.push_str("\r\n");
        }
        text
    }

    proptest! {
        /// Any table of numbers reads back as written, whatever quoting and spacing its
        /// cells have and whichever separator it uses.
        #[test]
        fn tables_read_back_however_cells_are_quoted(
            rows in vec((vec(-1e6f32..1e6, 3), 0u32..10, vec(0u8..4, 4)), 1..20),
            delimiter in prop_oneof![Just(','), Just(';')],
        ) {
            let text = render(&rows, delimiter);
            let options = CsvOptions {
                skip_rows: 1,
                delimiter: delimiter as u8,
                ..CsvOptions::default()
            };
            let limits = DataLimits::default();
            let d = parse_csv_bytes(Path::new("p.csv"), text.as_bytes(), &options, &limits)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            let values: Vec<f32> = rows.iter().flat_map(|r| r.0.clone()).collect();
            let labels: Vec<u32> = rows.iter().map(|r| r.1).collect();
            prop_assert_eq!(d.features.to_f32(), values);
            prop_assert_eq!(d.labels, labels);
        }
    }

    #[test]
    fn a_table_holds_at_most_max_rows_examples() {
        let limits = DataLimits {
            max_rows: 2,
            ..DataLimits::default()
        };
        let origin = Path::new("long.csv");
        let options = CsvOptions::default();
        let two = parse_csv_bytes(origin, b"1,2,0\n\n3,4,1\n", &options, &limits).unwrap();
        assert_eq!(two.len(), 2);
        let err = parse_csv_bytes(origin, b"1,2,0\n3,4,1\n5,6,0\n", &options, &limits).unwrap_err();
        assert!(
            matches!(err, DataError::TooManyRows { limit: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("raise data.max_rows"), "{err}");
    }

    #[test]
    fn label_column_and_shape_are_checked() {
        let options = CsvOptions {
            label_column: LabelColumn::Index(3),
            ..CsvOptions::default()
        };
        let err = load_str(b"1,2,0\n", &options).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::NoLabelColumn {
                    index: 3,
                    columns: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = load_str(b"1\n2\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TooFewColumns {
                    line: 1,
                    columns: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("commas"), "{err}");
        let options = CsvOptions {
            shape: Some(vec![3]),
            ..CsvOptions::default()
        };
        let err = load_str(b"1,2,0\n", &options).unwrap_err();
        assert!(err.to_string().contains("product is 2"), "{err}");
    }

    #[test]
    fn invalid_utf8_and_missing_file() {
        let err = load_str(b"1,2,0\n1,\xff,0\n", &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::NotText {
                    offset: 8,
                    line: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = load_csv(
            Path::new("/nonexistent/x.csv"),
            &CsvOptions::default(),
            &DataLimits::default(),
        )
        .unwrap_err();
        assert!(matches!(err, DataError::File(_)), "{err:?}");
        assert!(err.to_string().contains("/nonexistent/x.csv"), "{err}");
    }
}
