//! `submit_releases`: see `veil_fuzz_targets::submit_releases`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz_targets::submit_releases(data));
