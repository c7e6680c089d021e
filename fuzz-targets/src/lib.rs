//! # veil-fuzz-targets
//!
//! The bodies of Veil's fuzz targets, on stable Rust. Each public function
//! takes the fuzzer's bytes, runs one real path that reads untrusted input
//! (an event line, a policy file, an audit entry or export, a model update,
//! a SubmitReleases request) and asserts what a user relies on: it never
//! panics, what it accepts is consistent (accepted input re-validates, fast
//! and general parsers agree), and what it refuses gets an error.
//!
//! `fuzz/` (cargo-fuzz, nightly, outside the workspace) wraps each function
//! in a `fuzz_target!`; this crate's tests replay every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through the same
//! functions, so CI checks the corpora without a fuzzing stage.
//!
//! Test code only: it never runs in a node or an aggregator.

pub mod audit_entry;
pub mod audit_export;
pub mod event_line;
pub mod model_update;
pub mod policy_toml;
pub mod submit_releases;

pub use audit_entry::audit_entry;
pub use audit_export::audit_export;
pub use event_line::event_line;
pub use model_update::model_update;
pub use policy_toml::policy_toml;
pub use submit_releases::submit_releases;

/// A target: the fuzzer's bytes in, a panic on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target by name (the directory names under `fuzz/corpus/`).
pub const TARGETS: [(&str, Target); 6] = [
    ("event_line", event_line),
    ("policy_toml", policy_toml),
    ("audit_entry", audit_entry),
    ("audit_export", audit_export),
    ("model_update", model_update),
    ("submit_releases", submit_releases),
];

#[cfg(test)]
mod tests;
