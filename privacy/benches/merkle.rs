//! Audit-log Merkle tree: appends per second (leaf hash + push) and the
//! root of a large tree, as the aggregator's audit log does per entry.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use veil_privacy::audit::{MerkleTree, merkle::leaf_hash};

fn merkle(c: &mut Criterion) {
    let mut g = c.benchmark_group("merkle");
    let n = 10_000u64;
    let leaves: Vec<_> = (0..n)
        .map(|i| leaf_hash(format!("{{\"seq\":{i},\"action\":\"release\"}}").as_bytes()))
        .collect();
    g.throughput(Throughput::Elements(n));
    g.bench_function("append 10k leaves", |b| {
        b.iter_batched(
            MerkleTree::new,
            |mut t| {
                for l in &leaves {
                    t.push(*l);
                }
                t
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("leaf_hash + append 10k entries", |b| {
        b.iter_batched(
            MerkleTree::new,
            |mut t| {
                for i in 0..n {
                    t.push(leaf_hash(black_box(format!("{{\"seq\":{i}}}").as_bytes())));
                }
                t
            },
            BatchSize::SmallInput,
        )
    });
    let tree = MerkleTree::from_leaves(leaves.iter().copied());
    g.throughput(Throughput::Elements(1));
    g.bench_function("root of 10k", |b| b.iter(|| black_box(&tree).root()));
    g.bench_function("inclusion proof in 10k", |b| {
        b.iter(|| black_box(&tree).inclusion_proof(4321, n).expect("proof"))
    });
    g.finish();
}

criterion_group!(benches, merkle);
criterion_main!(benches);
