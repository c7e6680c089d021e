//! `audit_entry`: see `veil_fuzz_targets::audit_entry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz_targets::audit_entry(data));
