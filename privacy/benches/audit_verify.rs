//! Offline verification of an audit export (`verify_export`), and its parts:
//! strict parsing of one canonical line (into an owned entry, and borrowed
//! as the verifier reads it), and leaf hashing plus the tree root.
//! Entries look like the aggregator's `bench audit` entries (release
//! decisions with a policy hash and a release hash).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veil_privacy::audit::{
    AuditEntry, AuditEntryRef, CheckpointSigner, ExportInput, MerkleTree, entries_to_jsonl,
    merkle::leaf_hash, verify_export,
};

const ORIGIN: &str = "veil.example/audit/bench";

fn entry(seq: u64) -> AuditEntry {
    AuditEntry {
        seq,
        time_ms: 1_780_333_200_000 + seq as i64,
        actor: "spiffe://veil/aggregator".to_owned(),
        venue: "bench".to_owned(),
        action: "release".to_owned(),
        decision: "allow".to_owned(),
        reason: String::new(),
        policy_hash: "0".repeat(64),
        epsilon: 0.001,
        rho: 0.0,
        release_sha256: format!("{seq:064x}"),
    }
}

fn audit_verify(c: &mut Criterion) {
    let n = 100_000u64;
    let entries: Vec<AuditEntry> = (0..n).map(entry).collect();
    let jsonl = entries_to_jsonl(&entries).expect("valid entries");
    let tree = MerkleTree::from_leaves(entries.iter().map(|e| e.leaf_hash().expect("valid")));
    let signer = CheckpointSigner::generate(ORIGIN).expect("key");
    let checkpoint = signer.sign(ORIGIN, n, &tree.root()).expect("sign");
    let vkey = signer.verifier_key_str();
    let input = ExportInput {
        entries_jsonl: &jsonl,
        checkpoint: &checkpoint,
        proofs_json: None,
        vkey: &vkey,
        origin: ORIGIN,
        previous_checkpoint: None,
        consistency_proof: None,
    };
    let lines: Vec<&str> = jsonl.lines().collect();

    let mut g = c.benchmark_group("audit_verify");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function("verify_export full 100k", |b| {
        b.iter(|| verify_export(black_box(input)).expect("verifies"))
    });
    g.bench_function("parse_canonical 100k", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(AuditEntry::parse_canonical(black_box(l)).expect("canonical"));
            }
        })
    });
    // What `verify_export` does per line: strings borrowed from the line.
    g.bench_function("AuditEntryRef::parse_canonical 100k", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(AuditEntryRef::parse_canonical(black_box(l)).expect("canonical"));
            }
        })
    });
    g.bench_function("leaf_hash + tree root 100k", |b| {
        b.iter(|| {
            MerkleTree::from_leaves(lines.iter().map(|l| leaf_hash(black_box(l).as_bytes()))).root()
        })
    });
    g.finish();
}

criterion_group!(benches, audit_verify);
criterion_main!(benches);
