//! The safetensors reader (models, `model.init`, checkpoints): any bytes are a parameter set or
//! an error; never a panic. A set that reads writes back to bytes that read as the same set.
#![no_main]

use entente_core::params::ParamSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(params) = ParamSet::from_safetensors(data) else {
        return;
    };
    let bytes = params.to_safetensors().expect("a parameter set serializes");
    let again = ParamSet::from_safetensors(&bytes).expect("what entente writes, it reads");
    assert_eq!(again.layout(), params.layout());
    let bits = |p: &ParamSet| p.as_flat().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&again), bits(&params));
});
