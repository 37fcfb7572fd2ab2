//! A site's half of secure aggregation receiving what the coordinator sends it: each of the
//! five messages for the site (active security: settings, signed keys, shares, survivor
//! list, unmasking request with signatures) is delivered as it is, tampered with, replaced, cut short or not
//! delivered, as the input says. The site answers or refuses, never panics, and the
//! coordinator copes with what it then answers.
#![no_main]

use entente_fuzz::{Input, SITES, SecureFederation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let target = SITES.len() - 1;
    SecureFederation::trained().run(
        |site, message| {
            if site == target {
                input.tamper(message)
            } else {
                Some(message)
            }
        },
        |_, answer| Some(answer),
    );
});
