//! The manifest parser: any text is a checked manifest or an error naming the problem. Paths
//! resolve against a folder that does not exist, so nothing outside the input is read. A
//! manifest that parses gives its digest, round rules and aggregator without a panic.
#![no_main]

use std::path::Path;

use entente_core::aggregators;
use entente_core::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/nonexistent/entente-fuzz");
    let Ok(manifest) = Manifest::parse(text, "fuzz.toml", base) else {
        return;
    };
    let digest = manifest.agreement_digest();
    assert_eq!(digest.len(), 64);
    let _ = manifest.round_rules();
    let _ = aggregators::build(&manifest.strategy);
    // What parses once parses again to the same terms.
    let again = Manifest::parse(&manifest.source, "fuzz.toml", base)
        .expect("a manifest's own source parses");
    assert_eq!(again.agreement_digest(), digest);
});
