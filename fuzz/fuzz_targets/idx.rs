//! The IDX readers: any bytes, plain or gzip, are images, labels or an error naming the file
//! and the offset; never a panic, and never more memory than the limits allow (a gzip bomb
//! stops at the byte limit).
#![no_main]

use std::path::Path;

use entente_learn::data::DataLimits;
use entente_learn::data::idx::{parse_idx_images, parse_idx_labels};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = DataLimits {
        max_rows: 4096,
        features: Some(784),
        classes: 10,
    };
    let origin = Path::new("fuzz-idx");
    if let Ok(images) = parse_idx_images(origin, data, &limits) {
        assert!(images.count <= limits.max_rows);
        assert_eq!(
            images.pixels.len(),
            images.count * images.rows * images.cols
        );
    }
    if let Ok(labels) = parse_idx_labels(origin, data, &limits) {
        assert!(labels.len() <= limits.max_rows);
    }
});
