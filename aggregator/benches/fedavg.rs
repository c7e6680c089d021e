//! The FedAvg kernel: validate (length, finite values, L2 norm) and average
//! N updates of P f32 parameters, on one thread and on every core, plus the
//! per-update check a node's submission gets (safetensors parse + check).
//! Throughput is the bytes of all updates.

use std::{hint::black_box, time::Duration};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use veil_aggregator::rounds::kernel;

fn updates(nodes: usize, params: usize) -> Vec<Vec<f32>> {
    (0..nodes)
        .map(|n| {
            (0..params)
                .map(|i| ((i.wrapping_mul(2_654_435_761) ^ n) % 1000) as f32 * 1e-6)
                .collect()
        })
        .collect()
}

fn fedavg(c: &mut Criterion) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut g = c.benchmark_group("fedavg");
    for (nodes, params) in [(10, 100_000), (100, 1_000_000)] {
        let data = updates(nodes, params);
        let refs: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
        let mut out = vec![0.0f32; params];
        g.throughput(Throughput::Bytes((nodes * params * 4) as u64));
        if nodes * params >= 10_000_000 {
            g.sample_size(10).measurement_time(Duration::from_secs(10));
        }
        for threads in [1, cores] {
            g.bench_function(
                BenchmarkId::new(format!("{nodes}x{params}"), format!("{threads} threads")),
                |b| b.iter(|| black_box(kernel::fedavg(&refs, f64::MAX, threads, &mut out))),
            );
        }
    }
    g.finish();

    let mut g = c.benchmark_group("validate_update");
    let params = 1_000_000;
    let layout = vec![("w".to_owned(), vec![params])];
    let bytes =
        kernel::encode(&layout, &updates(1, params)[0], Default::default()).expect("encode");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("1M params (parse + finite + norm)", |b| {
        b.iter(|| black_box(kernel::validate_update(&bytes, &layout, f64::MAX).expect("valid")))
    });
    g.finish();
}

criterion_group!(benches, fedavg);
criterion_main!(benches);
