//! Errors a user can act on speak of what the user can change - manifest keys such as
//! `data.skip_rows` and `data.label_column` - never of entente's own Rust types.

use std::path::Path;

use entente_learn::data::{CsvOptions, DataLimits, LabelColumn, parse_csv_bytes};
use entente_learn::partition::{Partition, partition};

fn csv_error(bytes: &[u8], options: &CsvOptions) -> String {
    parse_csv_bytes(
        Path::new("table.csv"),
        bytes,
        options,
        &DataLimits::default(),
    )
    .unwrap_err()
    .to_string()
}

/// No `Type::member` path in `message`, and `key` named.
fn assert_names_key(message: &str, key: &str) {
    assert!(!message.contains("::"), "a Rust path in: {message}");
    assert!(message.contains(key), "`{key}` not named in: {message}");
}

#[test]
fn csv_hints_name_manifest_keys() {
    let plain = CsvOptions::default();
    assert_names_key(&csv_error(b"width,label\n1,0\n", &plain), "skip_rows = 1");
    let skip = CsvOptions {
        skip_rows: 1,
        ..CsvOptions::default()
    };
    assert_names_key(&csv_error(b"width,label\n", &skip), "data.skip_rows");
    let ninth = CsvOptions {
        label_column: LabelColumn::Index(9),
        ..CsvOptions::default()
    };
    assert_names_key(&csv_error(b"1,2,0\n", &ninth), "data.label_column");
    assert_names_key(&csv_error(b"1;2;0\n", &plain), "commas");
    let shaped = CsvOptions {
        shape: Some(vec![3]),
        ..CsvOptions::default()
    };
    assert_names_key(&csv_error(b"1,2,0\n", &shaped), "data.shape");
}

#[test]
fn partition_hints_name_manifest_keys() {
    let labels: Vec<u32> = (0..100).map(|i| i % 2).collect();
    let err = partition(&labels, 2, 5, &Partition::Dirichlet { alpha: 0.001 }, 0).unwrap_err();
    assert_names_key(&err.to_string(), "data.alpha");
}
