//! Fixtures shared by the integration tests: the repo's UCI digits and a small MLP.

use std::path::Path;
use std::sync::OnceLock;

use entente_learn::data::{CsvOptions, DataLimits, Dataset, load_csv};
use entente_learn::model::ModelSpec;

/// The UCI digits table shipped in the repository.
const DIGITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/uci-digits.csv.gz");

/// `(train, test)` of the digits scaled to [0, 1]: every fifth example is held out.
pub fn digits() -> &'static (Dataset, Dataset) {
    static DATA: OnceLock<(Dataset, Dataset)> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut all = load_csv(
            Path::new(DIGITS),
            &CsvOptions::default(),
            &DataLimits::default(),
        )
        .unwrap();
        assert_eq!((all.len(), all.dim, all.num_classes), (1797, 64, 10));
        for x in all.features.values_mut() {
            *x /= 16.0;
        }
        let (test, train): (Vec<usize>, Vec<usize>) = (0..all.len()).partition(|i| i % 5 == 0);
        (all.subset(&train), all.subset(&test))
    })
}

/// 64-64-10.
pub fn mlp() -> ModelSpec {
    ModelSpec::Mlp {
        input: 64,
        hidden: vec![64],
        classes: 10,
    }
}
