//! The CI smoke pass: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` through its target.

use std::path::{Path, PathBuf};

use super::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir` (none if it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = read
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, run) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a known target");
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ has no seeds");
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    for file in corpus.iter().chain(&regressions) {
        let data = std::fs::read(file).expect("a corpus file");
        if let Err(panic) = std::panic::catch_unwind(|| run(&data)) {
            eprintln!("{target}: {} fails", file.display());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn event_line_corpus() {
    replay("event_line");
}

#[test]
fn policy_toml_corpus() {
    replay("policy_toml");
}

#[test]
fn audit_entry_corpus() {
    replay("audit_entry");
}

#[test]
fn audit_export_corpus() {
    replay("audit_export");
}

#[test]
fn model_update_corpus() {
    replay("model_update");
}

#[test]
fn submit_releases_corpus() {
    replay("submit_releases");
}

#[test]
fn every_target_has_a_corpus_directory() {
    for (target, _) in TARGETS {
        assert!(
            fuzz_dir().join("corpus").join(target).is_dir(),
            "fuzz/corpus/{target}/"
        );
    }
}
