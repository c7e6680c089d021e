//! Samples per second of each mechanism (one release = one element, except
//! bulk noise and histograms, measured per noised entry).

use std::{collections::BTreeMap, hint::black_box};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veil_privacy::{
    Delta, Epsilon, Rho,
    mechanisms::{
        BoundedSum, SparseVector, StabilityHistogram, TreeCounter, TreeNoise, count_gaussian,
        count_laplace, sum_gaussian, sum_laplace,
    },
    noise_vec_discrete_gaussian, noise_vec_discrete_laplace,
};

fn eps(v: f64) -> Epsilon {
    Epsilon::new(v).expect("valid epsilon")
}
fn rho(v: f64) -> Rho {
    Rho::new(v).expect("valid rho")
}

fn mechanisms(c: &mut Criterion) {
    let mut g = c.benchmark_group("release");
    g.throughput(Throughput::Elements(1));
    g.bench_function("count_laplace eps=1", |b| {
        b.iter(|| count_laplace(black_box(1234), 1, eps(1.0)).expect("release"))
    });
    g.bench_function("count_gaussian rho=0.5", |b| {
        b.iter(|| count_gaussian(black_box(1234), 1, rho(0.5)).expect("release"))
    });
    let bounds = BoundedSum::new(0.0, 3600.0, 4).expect("bounds");
    let values: Vec<f64> = (0..100).map(|i| f64::from(i) * 30.0).collect();
    g.bench_function("sum_laplace 100 values eps=1", |b| {
        b.iter(|| sum_laplace(black_box(&values), &bounds, eps(1.0)).expect("release"))
    });
    g.bench_function("sum_gaussian 100 values rho=0.5", |b| {
        b.iter(|| sum_gaussian(black_box(&values), &bounds, rho(0.5)).expect("release"))
    });
    g.bench_function("sparse_vector query (below)", |b| {
        let mut s = SparseVector::new(1_000_000, 1, eps(1.0), 3).expect("svt");
        b.iter(|| s.query(black_box(0)).expect("query"))
    });
    g.finish();

    let mut g = c.benchmark_group("tree_counter");
    g.throughput(Throughput::Elements(64));
    g.bench_function("64 pushes (T=2^20, Laplace eps=1)", |b| {
        b.iter_batched(
            || TreeCounter::new(1 << 20, 1, TreeNoise::Laplace(eps(1.0))).expect("tree"),
            |mut t| {
                for _ in 0..64 {
                    black_box(t.push(black_box(7)).expect("push"));
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("bulk");
    let n = 10_000;
    g.throughput(Throughput::Elements(n as u64));
    let zeros = vec![0i64; n];
    g.bench_function("noise_vec_discrete_laplace 10k eps=1", |b| {
        b.iter(|| noise_vec_discrete_laplace(black_box(&zeros), 1, eps(1.0)).expect("noise"))
    });
    g.bench_function("noise_vec_discrete_gaussian 10k rho=0.5", |b| {
        b.iter(|| noise_vec_discrete_gaussian(black_box(&zeros), 1, rho(0.5)).expect("noise"))
    });
    let hist = StabilityHistogram::new(eps(1.0), Delta::new(1e-6).expect("delta"), 4, 1)
        .expect("histogram");
    let counts: BTreeMap<u32, i64> = (0..n as u32).map(|k| (k, 100)).collect();
    g.bench_function("stability_histogram 10k buckets", |b| {
        b.iter(|| hist.release(black_box(&counts)).expect("release"))
    });
    g.finish();
}

criterion_group!(benches, mechanisms);
criterion_main!(benches);
