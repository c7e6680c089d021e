//! `event_line`: see `veil_fuzz_targets::event_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| veil_fuzz_targets::event_line(data));
