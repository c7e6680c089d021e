//! The aggregator's anomaly detector on simulated events: the simulator's
//! ground truth goes through the real DP release path (OpenDP discrete
//! Laplace through `veil_privacy::mechanisms::count_laplace`, with the
//! node's default sensitivities) into the real alert engine. It must fire
//! soon after the arena's intermission surge at the concourse and stay
//! quiet on steady periods, at epsilon 1 and 0.5 per window.
//!
//! Runs are (simulation seed x fresh noise): 5 simulations x 10 noise draws
//! = 50 runs per epsilon. Prints the detection delay and false-alert rate.

use std::time::Duration;

use veil_aggregator::alerts::{self, Engine, EventKind, Observation};
use veil_node::simulate::{Metric, SimConfig, Simulation, VenueKind, ZoneRole};
use veil_privacy::{Epsilon, mechanisms::count_laplace};

/// 2026-06-01T18:00:00Z.
const START_MS: i64 = 1_780_336_800_000;
const MIN: i64 = 60_000;
/// Steady windows skipped after a phase boundary (people settle in).
const SETTLE: i64 = 5;
/// The detector must fire within this many windows of the surge's start.
const MAX_DELAY: i64 = 3;

struct Run {
    delay: Option<i64>,
    steady_alerts: u64,
    steady_checks: u64,
}

/// (zone, metric, (window start, exact count) in time order).
type Truth = Vec<(String, &'static str, Vec<(i64, i64)>)>;

struct Sim {
    truth: Truth,
    intermission: (i64, i64),
    steady: Vec<(i64, i64)>,
}

fn simulate(seed: u64) -> Sim {
    let cfg = SimConfig {
        attendees: Some(3_000),
        malformed_per_10k: 0,
        ..SimConfig::new(
            VenueKind::Arena,
            seed,
            Duration::from_secs(90 * 60),
            START_MS,
        )
    };
    let s = Simulation::new(cfg).expect("sim config");
    let t = s.ground_truth();
    let phase = |name: &str| {
        let p = s.phases().into_iter().find(|p| p.0 == name).expect("phase");
        (p.1, p.2)
    };
    let mut truth = Vec::new();
    for z in s.zones() {
        // What a node releases: camera occupancy for zones with cameras,
        // gate scans for gates (counts, rounded as the node does).
        let series: Vec<(&'static str, Metric)> = if z.role == ZoneRole::Gate {
            vec![("ingress", Metric::Ingress), ("egress", Metric::Egress)]
        } else {
            vec![("occupancy", Metric::OccupancyCamera)]
        };
        for (name, m) in series {
            let v = t
                .series(z.name, m)
                .into_iter()
                .map(|(w, x)| (w, x.round() as i64))
                .collect();
            truth.push((z.name.to_owned(), name, v));
        }
    }
    let first = phase("first-half");
    let second = phase("second-half");
    Sim {
        truth,
        intermission: phase("intermission"),
        steady: vec![first, second],
    }
}

fn window_of(ms: i64) -> i64 {
    ms.div_euclid(MIN) * MIN
}

/// `noisy = false` releases the truth itself with the same public noise
/// parameters: what the detector does on the signal alone.
fn run(sim: &Sim, epsilon: f64, noisy: bool) -> Run {
    let eps = Epsilon::new(epsilon).expect("epsilon");
    let mut engine = Engine::new(alerts::Config::default(), Vec::new());
    let mut windows: Vec<i64> = sim
        .truth
        .iter()
        .flat_map(|(_, _, v)| v.iter().map(|p| p.0))
        .collect();
    windows.sort_unstable();
    windows.dedup();
    let (surge_start, surge_end) = (window_of(sim.intermission.0) + MIN, sim.intermission.1);
    let steady = |w: i64| {
        sim.steady
            .iter()
            .any(|&(a, b)| w >= window_of(a) + SETTLE * MIN && w + MIN <= b)
    };
    let mut out = Run {
        delay: None,
        steady_alerts: 0,
        steady_checks: 0,
    };
    for w in windows {
        for (zone, metric, series) in &sim.truth {
            let Ok(i) = series.binary_search_by_key(&w, |p| p.0) else {
                continue;
            };
            let x = series[i].1;
            // Sensitivity 1: one camera per zone, one scan per ticket and window.
            let released = count_laplace(x, 1, eps).expect("count_laplace");
            let o = Observation {
                venue: "arena".into(),
                metric: (*metric).to_owned(),
                zone: zone.clone(),
                window_start_ms: w,
                window_len_s: 60,
                mechanism: "MECHANISM_DISCRETE_LAPLACE".into(),
                value: if noisy { released.value() } else { x as f64 },
                scale: released.scale(),
                suppress_below: 0.0,
            };
            let events = engine.observe(&o, 0).events;
            if steady(w) {
                out.steady_checks += 1;
            }
            for ev in events.iter().filter(|e| e.kind == EventKind::Raised) {
                if steady(w) {
                    out.steady_alerts += 1;
                    if std::env::var_os("VEIL_SHOW_ALERTS").is_some() {
                        println!(
                            "steady alert {zone} {metric} w{} {}",
                            (w - START_MS) / MIN,
                            ev.alert.detail
                        );
                    }
                }
                if zone == "concourse"
                    && *metric == "occupancy"
                    && out.delay.is_none()
                    && w >= surge_start - MIN
                    && w < surge_end
                {
                    out.delay = Some((w - surge_start) / MIN + 1);
                }
            }
        }
    }
    out
}

#[test]
fn anomaly_detector_finds_the_intermission_surge_and_stays_quiet_when_steady() {
    let t0 = std::time::Instant::now();
    let sims: Vec<Sim> = (1..=5).map(simulate).collect();
    println!("simulated in {:?}", t0.elapsed());
    // Real changes in "steady" phases (late arrivals, early leavers at the
    // gates) page too: measure them on the signal alone, so what noise adds
    // can be told apart.
    let (mut sig_alerts, mut sig_checks) = (0u64, 0u64);
    for s in &sims {
        let r = run(s, 1.0, false);
        sig_alerts += r.steady_alerts;
        sig_checks += r.steady_checks;
    }
    let signal_rate = sig_alerts as f64 / sig_checks.max(1) as f64;
    println!(
        "signal alone (no noise drawn): {sig_alerts}/{sig_checks} steady zone-windows = {signal_rate:.4}"
    );
    for epsilon in [1.0, 0.5] {
        let mut delays = Vec::new();
        let (mut alerts, mut checks) = (0u64, 0u64);
        for sim in &sims {
            for _ in 0..10 {
                let r = run(sim, epsilon, true);
                delays.push(r.delay);
                alerts += r.steady_alerts;
                checks += r.steady_checks;
            }
        }
        let found: Vec<i64> = delays.iter().flatten().copied().collect();
        let mut sorted = found.clone();
        sorted.sort_unstable();
        let rate = alerts as f64 / checks.max(1) as f64;
        println!(
            "epsilon {epsilon}: surge found in {}/{} runs, delay windows min {:?} median {:?} max {:?}; \
             steady false alerts {alerts}/{checks} zone-windows = {rate:.4}",
            found.len(),
            delays.len(),
            sorted.first(),
            sorted.get(sorted.len() / 2),
            sorted.last(),
        );
        assert_eq!(
            found.len(),
            delays.len(),
            "surge missed in some runs: {delays:?}"
        );
        assert!(
            found.iter().all(|d| *d <= MAX_DELAY),
            "delay above {MAX_DELAY} windows: {delays:?}"
        );
        assert!(rate < 0.01, "alert rate {rate} on steady windows");
        assert!(
            rate - signal_rate < 0.005,
            "noise adds {} alerts per steady zone-window",
            rate - signal_rate
        );
    }
}
