//! One release of a whole-day stream (T = 1440 one-minute windows, E = 16
//! alternating, rho = 0.05): at the first step and at the last (the square
//! root's O(t) worst case), for both mechanisms. Each includes one exact
//! discrete Gaussian draw.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use veil_privacy::{
    Rho,
    mechanisms::{ContinualStream, Contribution, StreamMechanism, StreamParams},
};

const T: u32 = 1440;

fn continual(c: &mut Criterion) {
    let mut g = c.benchmark_group("continual_release");
    for m in [StreamMechanism::Tree, StreamMechanism::SqrtFactorization] {
        let params = StreamParams::new(
            m,
            T,
            Contribution::Alternating { events: 16 },
            Rho::new(0.05).expect("rho"),
        )
        .expect("params");
        g.bench_function(format!("{m} step 0 (T={T})"), |b| {
            b.iter_batched(
                || ContinualStream::new(params).expect("stream"),
                |mut s| black_box(s.release(0, black_box(3)).expect("release")),
                BatchSize::SmallInput,
            )
        });
        let mut s = ContinualStream::new(params).expect("stream");
        for t in 0..T - 1 {
            s.release(t, i64::from(t % 7) - 3).expect("release");
        }
        let state = s.state().clone();
        g.bench_function(format!("{m} step {} (T={T})", T - 1), |b| {
            b.iter_batched(
                || ContinualStream::restore(params, state.clone()).expect("restore"),
                |mut s| black_box(s.release(T - 1, black_box(3)).expect("release")),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, continual);
criterion_main!(benches);
