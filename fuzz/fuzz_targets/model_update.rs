//! `model_update`: see `veil_fuzz_targets::model_update`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz_targets::model_update(data));
