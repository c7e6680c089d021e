//! `policy_toml`: see `veil_fuzz_targets::policy_toml`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz_targets::policy_toml(data));
