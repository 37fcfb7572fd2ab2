//! The CSV reader: any bytes, plain or gzip, with reader options from the first byte, are a
//! data set or an error naming the file, line and column; never a panic. A data set it returns
//! is consistent, within the limits, and can be standardized.
#![no_main]

use std::path::Path;

use entente_learn::data::parse_csv_bytes;
use entente_learn::data::{CsvOptions, DataLimits, Dataset, LabelColumn, Standardization};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, table)) = data.split_first() else {
        return;
    };
    let options = CsvOptions {
        label_column: match choice % 3 {
            0 => LabelColumn::Last,
            1 => LabelColumn::First,
            _ => LabelColumn::Index(usize::from(choice >> 4)),
        },
        skip_rows: usize::from((choice >> 2) & 1),
        delimiter: if choice & 8 == 0 { b',' } else { b';' },
        ..CsvOptions::default()
    };
    let limits = DataLimits {
        max_rows: 4096,
        features: Some(64),
        classes: 10,
    };
    let Ok(mut set) = parse_csv_bytes(Path::new("fuzz.csv"), table, &options, &limits) else {
        return;
    };
    assert!(set.len() <= limits.max_rows);
    assert!(set.labels.iter().all(|&l| (l as usize) < limits.classes));
    let checked = Dataset::new(
        set.features.clone(),
        set.labels.clone(),
        set.shape.clone(),
        set.num_classes,
    )
    .expect("the reader's data set is consistent");
    assert_eq!(checked, set);
    if let Ok(z) = Standardization::fit(&set) {
        z.apply(&mut set)
            .expect("statistics fit the set they came from");
    }
});
