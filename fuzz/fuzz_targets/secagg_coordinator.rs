//! The coordinator half of secure aggregation receiving what one site sends: each of the
//! site's five replies (active security: keys, shares, masked input, survivor signature,
//! unmasking) is sent as it is, tampered with, replaced, cut short or not sent, as the
//! input says. Whatever arrives, the round ends in a result or an error, never a panic.
#![no_main]

use entente_fuzz::{Input, SITES, SecureFederation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let hostile = SITES.len() - 1;
    SecureFederation::trained().run(
        |_, message| Some(message),
        |site, answer| {
            if site == hostile {
                input.tamper(answer)
            } else {
                Some(answer)
            }
        },
    );
});
