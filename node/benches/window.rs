//! Node hot path: window update (validated event -> window, with
//! pseudonyms and contribution bounds) and release (plan + noise of a
//! closed window under the arena policy).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use veil_node::{
    config::Config,
    event::{ValidEvent, parse_line},
    release::{plan_window, privatize},
    window::{ClosedWindow, Windower},
};
use veil_privacy::{ContributionLimits, Cost, EventDay, Pseudonymizer, policy::LoadedPolicy};

const POLICY: &str = include_str!("../../policies/arena.toml");

fn config() -> Config {
    let text = "venue = \"arena\"\nnode_id = \"node-1\"\n\n\
        [aggregator]\nendpoint = \"https://127.0.0.1:1\"\nca = \"a\"\ncert = \"a\"\nkey = \"a\"\n\n\
        [input]\npath = \"-\"\n\n[outbox]\npath = \"o.db\"\n\n\
        [[zone]]\nname = \"gate-a\"\ngate = true\n\n\
        [[zone]]\nname = \"floor\"\ncameras = 2\n";
    Config::parse(text, std::path::Path::new("bench.toml")).expect("config")
}

fn events() -> Vec<ValidEvent<'static>> {
    (0..10_000u64)
        .map(|i| {
            // 200 events per second from 2026-06-01T17:00:00Z.
            let s = i / 200;
            let ts = format!("2026-06-01T17:{:02}:{:02}Z", s / 60, s % 60);
            let line = match i % 4 {
                0 => format!(
                    r#"{{"ts":"{ts}","sensor":"cam-1","zone":"floor","kind":"occupancy","count":{}}}"#,
                    i % 300
                ),
                1 => format!(
                    r#"{{"ts":"{ts}","sensor":"gate-1","zone":"gate-a","kind":"gate_scan","direction":"in","ticket":"t{i}"}}"#
                ),
                2 => format!(
                    r#"{{"ts":"{ts}","sensor":"ap-1","zone":"floor","kind":"probe","device":"d{}","rssi_dbm":-60}}"#,
                    i % 700
                ),
                _ => format!(
                    r#"{{"ts":"{ts}","sensor":"env-1","zone":"floor","kind":"environment","co2_ppm":800,"temperature_c":21.5}}"#
                ),
            };
            parse_line(&line).expect("valid event").into_owned()
        })
        .collect()
}

fn windower(cfg: &Config) -> Windower {
    Windower::new(
        60,
        30_000,
        &cfg.zones,
        ContributionLimits::new(1, 1).expect("limits"),
        Some("analytics"),
    )
}

fn window(c: &mut Criterion) {
    let cfg = config();
    let evs = events();
    let master = Pseudonymizer::generate().expect("pseudonymizer");
    let key = master
        .day_key(EventDay::from_unix_seconds(1_780_333_200, 0).expect("day"))
        .expect("day key");
    let mut g = c.benchmark_group("window");
    g.throughput(Throughput::Elements(evs.len() as u64));
    g.bench_function("update 10k events (pseudonym + bound + aggregate)", |b| {
        b.iter_batched(
            || windower(&cfg),
            |mut w| {
                for ev in &evs {
                    w.add(ev, |id| key.pseudonym(id.as_bytes()));
                }
                w
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    let policy = LoadedPolicy::parse(POLICY).expect("policy");
    let mut w = windower(&cfg);
    for ev in &evs {
        w.add(ev, |id| key.pseudonym(id.as_bytes()));
    }
    let closed: Vec<ClosedWindow> = w.flush();
    let mut g = c.benchmark_group("release");
    g.throughput(Throughput::Elements(closed.len() as u64));
    g.bench_function("plan + noise of every closed window", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for cw in &closed {
                for p in plan_window(&cfg, &policy, cw).expect("plan") {
                    let lease = if matches!(p.cost, Cost::Free) {
                        ""
                    } else {
                        "bench"
                    };
                    black_box(privatize(&p, lease).expect("privatize"));
                    n += 1;
                }
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, window);
criterion_main!(benches);
