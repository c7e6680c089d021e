use super::config::Config;
use super::*;

const MIN: i64 = 60_000;

fn obs(metric: &str, zone: &str, w: i64, value: f64, scale: f64) -> Observation {
    Observation {
        venue: "arena".into(),
        metric: metric.into(),
        zone: zone.into(),
        window_start_ms: w * MIN,
        window_len_s: 60,
        mechanism: if scale > 0.0 {
            "MECHANISM_DISCRETE_LAPLACE"
        } else {
            "MECHANISM_NON_PERSONAL"
        }
        .into(),
        value,
        scale,
        suppress_below: 0.0,
    }
}

fn engine(toml_text: &str) -> Engine {
    let cfg: Config = toml::from_str(toml_text).expect("alerts toml");
    let rules = cfg.check().expect("valid");
    Engine::new(cfg, rules)
}

/// Feeds one value per window; returns (window, event kind, source) of every event.
fn feed(e: &mut Engine, metric: &str, values: &[f64], scale: f64) -> Vec<(i64, EventKind, String)> {
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let w = i as i64;
        for ev in e.observe(&obs(metric, "floor", w, *v, scale), 0).events {
            out.push((w, ev.kind, ev.alert.source));
        }
    }
    out
}

#[test]
fn anomaly_fires_on_a_jump_resolves_after_and_ignores_warmup() {
    let mut e = engine("[anomaly]\nmetrics = [\"occupancy\"]\n");
    // Warm-up jump (window 1) does not page; steady noise-sized wiggle does
    // not page; the surge at window 12 does; it resolves when values return.
    let values = [
        100.0, 300.0, 102.0, 99.0, 101.0, 100.0, 98.0, 103.0, 100.0, 101.0, 99.0, 100.0, 400.0,
        420.0, 100.0, 100.0,
    ];
    let events = feed(&mut e, "occupancy", &values, 1.0);
    assert_eq!(
        events,
        vec![
            (12, EventKind::Raised, "anomaly".to_owned()),
            (14, EventKind::Resolved, "anomaly".to_owned()),
        ],
        "{events:?}"
    );
}

#[test]
fn dp_noise_variance_keeps_the_threshold_above_the_noise() {
    // The series is flat but each release carries Laplace noise of scale
    // 20 (sd ~28): a +60 wiggle is noise-sized and must not page, even
    // though the baseline of these exact values has a tiny variance.
    let mut e = engine("[anomaly]\nmetrics = [\"occupancy\"]\n");
    let mut values = vec![100.0, 101.0, 100.0, 99.0, 100.0, 100.0, 101.0, 100.0];
    values.push(160.0);
    assert!(feed(&mut e, "occupancy", &values, 20.0).is_empty());
    // The same jump without noise (non-personal) pages.
    let mut e = engine("[anomaly]\nmetrics = [\"co2_ppm\"]\n");
    assert_eq!(feed(&mut e, "co2_ppm", &values, 0.0).len(), 1);
}

#[test]
fn a_drop_waits_for_every_node_of_the_window() {
    let mut e = engine("[anomaly]\nmetrics = [\"occupancy\"]\n");
    for w in 0..8 {
        e.observe(&obs("occupancy", "floor", w, 100.0, 1.0), 0);
        e.observe(&obs("occupancy", "floor", w, 100.0, 1.0), 0);
    }
    // Window 8: the first node's 100 alone looks like a drop to 100 from 200.
    assert!(
        e.observe(&obs("occupancy", "floor", 8, 100.0, 1.0), 0)
            .events
            .is_empty()
    );
    // Once both reported, it is normal.
    assert!(
        e.observe(&obs("occupancy", "floor", 8, 100.0, 1.0), 0)
            .events
            .is_empty()
    );
    // A real drop with both nodes reported pages.
    e.observe(&obs("occupancy", "floor", 9, 10.0, 1.0), 0);
    let out = e.observe(&obs("occupancy", "floor", 9, 10.0, 1.0), 0);
    assert_eq!(out.events.len(), 1);
    assert!(out.events[0].alert.detail.contains("below"));
    assert_eq!(out.point.value, 20.0);
    assert_eq!(out.point.releases, 2);
}

const RULES: &str = r#"
[anomaly]
enabled = false

[[rules]]
name = "loud-and-filling"
severity = "warning"
runbook = "Redirect foot traffic to the concourse."
zones = ["floor"]
all = [
  { metric = "sound_level_db", above = 100.0 },
  { metric = "occupancy", rising = 2 },
]

[[rules]]
name = "gate-flow"
severity = "critical"
runbook = "Open gate 4."
zones = ["gate-*"]
metric = "ingress"
above = 50.0
"#;

#[test]
fn rules_combine_conditions_dedup_and_resolve() {
    let mut e = engine(RULES);
    let mut events = Vec::new();
    // (window, sound dB, occupancy)
    let series = [
        (0, 90.0, 100.0),
        (1, 105.0, 100.0), // loud, but occupancy flat
        (2, 105.0, 150.0), // rising over 2 windows: 150 vs 100, noise bound ~4
        (3, 106.0, 200.0), // still holds: deduplicated
        (4, 95.0, 250.0),  // quieter: resolves
        (5, 101.0, 195.0), // loud but occupancy down vs window 3: no
    ];
    for (w, db, occ) in series {
        for o in [
            obs("sound_level_db", "floor", w, db, 0.0),
            obs("occupancy", "floor", w, occ, 1.0),
        ] {
            for ev in e.observe(&o, 0).events {
                events.push((
                    w,
                    ev.kind,
                    ev.alert.source,
                    ev.alert.metric,
                    ev.alert.runbook,
                ));
            }
        }
    }
    let src = "rule:loud-and-filling".to_owned();
    let rb = "Redirect foot traffic to the concourse.".to_owned();
    assert_eq!(
        events,
        vec![
            (
                2,
                EventKind::Raised,
                src.clone(),
                "sound_level_db".to_owned(),
                rb.clone()
            ),
            (4, EventKind::Resolved, src, "sound_level_db".to_owned(), rb),
        ]
    );
    // Zone selectors: the gate rule applies to gate-a, not to floor.
    let mut fired = Vec::new();
    for (zone, v) in [("floor", 80.0), ("gate-a", 80.0), ("gate-a", 10.0)] {
        let mut o = obs("ingress", zone, 0, v, 1.0);
        o.window_start_ms = if v > 50.0 { 0 } else { MIN };
        fired.extend(
            e.observe(&o, 0)
                .events
                .into_iter()
                .map(|ev| (ev.kind, ev.alert.zone, ev.alert.severity)),
        );
    }
    assert_eq!(
        fired,
        vec![
            (
                EventKind::Raised,
                "gate-a".to_owned(),
                "critical".to_owned()
            ),
            (
                EventKind::Resolved,
                "gate-a".to_owned(),
                "critical".to_owned()
            ),
        ]
    );
}

#[test]
fn a_rule_with_a_missing_signal_is_undecided() {
    let mut e = engine(RULES);
    // Loud, but no occupancy yet: no alert and no resolution either.
    assert!(
        e.observe(&obs("sound_level_db", "floor", 5, 110.0, 0.0), 0)
            .events
            .is_empty()
    );
}

#[test]
fn bad_rules_are_refused_with_the_rule_named() {
    for (text, needle) in [
        (
            "[[rules]]\nname = \"r\"\nseverity = \"loud\"\nrunbook = \"x\"\nmetric = \"a\"\nabove = 1.0\n",
            "severity",
        ),
        (
            "[[rules]]\nname = \"r\"\nseverity = \"info\"\nrunbook = \"x\"\nmetric = \"a\"\n",
            "exactly one",
        ),
        (
            "[[rules]]\nname = \"r\"\nseverity = \"info\"\nrunbook = \"x\"\n",
            "needs a condition",
        ),
        (
            "[[rules]]\nname = \"r\"\nseverity = \"info\"\nrunbook = \"x\"\nmetric = \"a\"\nabove = 1.0\nall = [{metric = \"b\", below = 2.0}]\n",
            "not both",
        ),
        (
            "[[rules]]\nname = \"r\"\nseverity = \"info\"\nrunbook = \"x\"\nmetric = \"a\"\nrising = 99\n",
            "1..=30",
        ),
        ("[anomaly]\nalpha = 1.5\n", "alpha"),
    ] {
        let cfg: Config = toml::from_str(text).expect("parses");
        let err = cfg.check().expect_err(text);
        assert!(err.contains(needle), "{err}");
    }
    assert!(toml::from_str::<Config>("[[rules]]\nname = \"r\"\nbogus = 1\n").is_err());
}

#[test]
fn restored_open_alerts_are_deduplicated_and_resolved() {
    let mut e = engine(RULES);
    let mut o = obs("ingress", "gate-b", 3, 80.0, 1.0);
    let raised = e.observe(&o, 0).events;
    assert_eq!(raised.len(), 1);
    let mut fresh = engine(RULES);
    fresh.restore(raised.into_iter().map(|ev| ev.alert));
    o.window_start_ms = 4 * MIN;
    assert!(
        fresh.observe(&o, 0).events.is_empty(),
        "still open: deduplicated"
    );
    o.window_start_ms = 5 * MIN;
    o.value = 1.0;
    let ev = fresh.observe(&o, 0).events;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].kind, EventKind::Resolved);
}

#[test]
fn a_full_queue_never_blocks_and_is_counted() {
    let cfg: Config = toml::from_str("queue = 1\n").expect("toml");
    let (hub, _rx) = AlertHub::new(&cfg);
    let r = crate::storage::StoredRelease {
        idempotency_key: "k".into(),
        content_sha256: String::new(),
        venue: "arena".into(),
        node: "n".into(),
        metric: "occupancy".into(),
        zone: "floor".into(),
        window_start_ms: 0,
        window_len_s: 60,
        mechanism: "MECHANISM_DISCRETE_LAPLACE".into(),
        value: 1.0,
        scale: 1.0,
        epsilon: 1.0,
        rho: 0.0,
        purpose: "p".into(),
        policy_hash: String::new(),
        lease_id: String::new(),
        sequence: 1,
        stream_step: None,
    };
    for _ in 0..3 {
        hub.offer(vec![r.clone()]);
    }
    assert_eq!(hub.stats().dropped_batches, 2);
}
