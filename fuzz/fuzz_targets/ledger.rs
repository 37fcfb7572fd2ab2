//! The privacy-ledger reader: any bytes are a ledger or an error naming the file; never a
//! panic. A ledger that reads reports what it has spent and what a further charge would bring.
#![no_main]

use std::path::Path;

use entente_privacy::budget::Ledger;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ledger) = Ledger::parse(Path::new("fuzz-ledger.json"), data) else {
        return;
    };
    if let Ok(spent) = ledger.spent() {
        assert!(spent >= 0.0, "{spent}");
    }
    if let Ok(after) = ledger.spent_after(0.01, 1.0, 10) {
        assert!(after >= 0.0, "{after}");
    }
});
