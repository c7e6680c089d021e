//! `audit_export`: see `veil_fuzz_targets::audit_export`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz_targets::audit_export(data));
