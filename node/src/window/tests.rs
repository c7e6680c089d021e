use veil_privacy::{bounds::ContributionLimits, pseudonym::Pseudonymizer};

use super::*;
use crate::{config::ZoneConfig, event::parse_line};

fn zones() -> Vec<ZoneConfig> {
    vec![
        ZoneConfig {
            name: "gate-a".into(),
            gate: true,
            cameras: 0,
            capacity: None,
        },
        ZoneConfig {
            name: "floor".into(),
            gate: false,
            cameras: 1,
            capacity: None,
        },
    ]
}

fn windower(lateness_ms: i64) -> Windower {
    Windower::new(
        60,
        lateness_ms,
        &zones(),
        ContributionLimits::new(1, 1).unwrap(),
        Some("analytics"),
    )
}

fn ev(ts: &str, zone: &str, body: &str) -> ValidEvent<'static> {
    parse_line(&format!(
        r#"{{"ts":"{ts}","sensor":"s-1","zone":"{zone}",{body}}}"#
    ))
    .unwrap()
    .into_owned()
}

fn add(w: &mut Windower, e: &ValidEvent<'_>) {
    let p = Pseudonymizer::generate().unwrap();
    let key = p
        .day_key(veil_privacy::pseudonym::EventDay::new(20_000))
        .unwrap();
    w.add(e, |id| key.pseudonym(id.as_bytes()));
}

#[test]
fn windows_close_after_lateness_and_late_events_are_counted() {
    let mut w = windower(10_000);
    add(
        &mut w,
        &ev(
            "2026-06-01T18:00:05Z",
            "floor",
            r#""kind":"occupancy","count":10"#,
        ),
    );
    add(
        &mut w,
        &ev(
            "2026-06-01T18:01:05Z",
            "floor",
            r#""kind":"occupancy","count":20"#,
        ),
    );
    assert!(
        w.drain_closed().is_empty(),
        "18:00 window still within lateness"
    );
    add(
        &mut w,
        &ev(
            "2026-06-01T18:01:11Z",
            "floor",
            r#""kind":"occupancy","count":20"#,
        ),
    );
    let closed = w.drain_closed();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].zones["floor"].occupancy_estimate(), 10);
    // An event for the closed window is late.
    add(
        &mut w,
        &ev(
            "2026-06-01T18:00:30Z",
            "floor",
            r#""kind":"occupancy","count":99"#,
        ),
    );
    assert_eq!(w.stats().late, 1);
    let rest = w.flush();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].zones["floor"].occupancy_estimate(), 20);
    // Every configured zone is present, even without events.
    assert!(rest[0].zones.contains_key("gate-a"));
}

#[test]
fn contribution_bounds_apply_before_aggregation() {
    let mut w = windower(0);
    let p = Pseudonymizer::generate().unwrap();
    let key = p
        .day_key(veil_privacy::pseudonym::EventDay::new(20_000))
        .unwrap();
    let scan = |t: &str, ticket: &str| {
        ev(
            t,
            "gate-a",
            &format!(r#""kind":"gate_scan","direction":"in","ticket":"{ticket}""#),
        )
    };
    for e in [
        scan("2026-06-01T18:00:01Z", "T1"),
        scan("2026-06-01T18:00:02Z", "T1"),
        scan("2026-06-01T18:00:03Z", "T2"),
    ] {
        w.add(&e, |id| key.pseudonym(id.as_bytes()));
    }
    let closed = w.flush();
    assert_eq!(
        closed[0].zones["gate-a"].ingress, 2,
        "T1 counted once per window"
    );
    assert_eq!(w.stats().bounded_out, 1);
    assert_eq!(closed[0].bounding.dropped(), 1);
}

#[test]
fn app_events_need_consent_and_unknown_zones_are_dropped() {
    let mut w = windower(0);
    add(
        &mut w,
        &ev(
            "2026-06-01T18:00:01Z",
            "floor",
            r#""kind":"app","subject":"u1","action":"a","consent":[]"#,
        ),
    );
    add(
        &mut w,
        &ev(
            "2026-06-01T18:00:02Z",
            "floor",
            r#""kind":"app","subject":"u2","action":"a","consent":["analytics"]"#,
        ),
    );
    add(
        &mut w,
        &ev(
            "2026-06-01T18:00:03Z",
            "backstage",
            r#""kind":"occupancy","count":3"#,
        ),
    );
    let closed = w.flush();
    assert_eq!(closed[0].zones["floor"].app_users.len(), 1);
    assert_eq!(w.stats().no_consent, 1);
    assert_eq!(w.stats().unknown_zone, 1);
}

#[test]
fn extra_cameras_beyond_the_declared_sensitivity_are_dropped() {
    let mut w = windower(0);
    for (sensor, count) in [("cam-1", 10), ("cam-2", 50)] {
        let line = format!(
            r#"{{"ts":"2026-06-01T18:00:01Z","sensor":"{sensor}","zone":"floor","kind":"occupancy","count":{count}}}"#
        );
        let e = parse_line(&line).unwrap();
        add(&mut w, &e);
    }
    let closed = w.flush();
    assert_eq!(closed[0].zones["floor"].occupancy_estimate(), 10);
    assert_eq!(w.stats().extra_camera, 1);
}

proptest::proptest! {
    #[test]
    fn every_event_lands_in_exactly_one_window(ts in proptest::collection::vec(0i64..10_000_000, 1..200)) {
        let mut w = Windower::new(60, i64::MAX / 4, &zones(), ContributionLimits::new(1, 1).unwrap(), Some("analytics"));
        let mut sorted = ts.clone();
        sorted.sort_unstable();
        for t in &sorted {
            let e = ValidEvent {
                ts_ms: *t,
                event: crate::event::Event {
                    ts: "".into(),
                    sensor: "cam".into(),
                    zone: "floor".into(),
                    firmware: None,
                    body: crate::event::Body::Occupancy { count: 1 },
                },
            };
            add(&mut w, &e);
        }
        let closed = w.flush();
        let readings: u64 = closed.iter().map(|c| c.zones["floor"].occupancy.values().map(|(_, n)| *n).sum::<u64>()).sum();
        proptest::prop_assert_eq!(readings, sorted.len() as u64);
        for c in &closed {
            for (_, n) in c.zones["floor"].occupancy.values() {
                proptest::prop_assert!(*n > 0);
            }
            proptest::prop_assert_eq!(c.start_ms % 60_000, 0);
        }
    }
}

/// Simulated arena events (20 minutes, 800 attendees) and the arena zones,
/// one camera each (gates none), as the pipeline bench configures them.
fn arena() -> (String, Vec<ZoneConfig>) {
    use crate::simulate::{SimConfig, Simulation, VenueKind, ZoneRole};
    let sim = Simulation::new(SimConfig {
        attendees: Some(800),
        ..SimConfig::new(
            VenueKind::Arena,
            7,
            std::time::Duration::from_secs(20 * 60),
            1_780_336_800_000,
        )
    })
    .unwrap();
    let mut out = Vec::new();
    sim.write_events(0, &mut out).unwrap();
    let zones = sim
        .node_zones(0)
        .iter()
        .map(|z| ZoneConfig {
            name: z.name.to_owned(),
            gate: z.role == ZoneRole::Gate,
            cameras: u32::from(z.role != ZoneRole::Gate),
            capacity: None,
        })
        .collect();
    (String::from_utf8(out).unwrap(), zones)
}

fn run_all(
    text: &str,
    zones: &[ZoneConfig],
    limits: ContributionLimits,
    key: &veil_privacy::DayKey,
) -> (Vec<ClosedWindow>, WindowStats) {
    let mut w = Windower::new(60, 30_000, zones, limits, Some("analytics"));
    let mut closed = Vec::new();
    for line in text.lines() {
        if let Ok(e) = parse_line(line) {
            w.add(&e, |id| key.pseudonym(id.as_bytes()));
            closed.extend(w.drain_closed());
        }
    }
    closed.extend(w.flush());
    (closed, w.stats())
}

#[test]
fn windows_do_not_depend_on_the_order_zones_are_configured_in() {
    let (text, zones) = arena();
    let key = Pseudonymizer::generate()
        .unwrap()
        .day_key(veil_privacy::pseudonym::EventDay::new(20_605))
        .unwrap();
    let limits = ContributionLimits::new(2, 2).unwrap();
    let (closed, stats) = run_all(&text, &zones, limits, &key);
    assert!(closed.len() >= 20, "{}", closed.len());
    assert!(
        stats.bounded_out > 0 && stats.accepted > 10_000,
        "{stats:?}"
    );
    // Reversed, and with a placeholder entry that a later one overrides.
    let mut shuffled: Vec<ZoneConfig> = zones.iter().rev().cloned().collect();
    let mut stale = shuffled[0].clone();
    stale.cameras = 0;
    shuffled.insert(0, stale);
    assert_eq!(run_all(&text, &shuffled, limits, &key), (closed, stats));
}

#[test]
fn windows_hold_what_the_events_say() {
    // With bounds no simulated person reaches, every window and zone holds
    // exactly the distinct devices, consented app users, gate scans and
    // readings of its events.
    let (text, zones) = arena();
    let key = Pseudonymizer::generate()
        .unwrap()
        .day_key(veil_privacy::pseudonym::EventDay::new(20_605))
        .unwrap();
    let limits = ContributionLimits::new(1000, 64).unwrap();
    let (closed, stats) = run_all(&text, &zones, limits, &key);
    assert_eq!(
        (stats.bounded_out, stats.late, stats.unknown_zone),
        (0, 0, 0)
    );

    type Want = (
        std::collections::BTreeSet<String>,
        std::collections::BTreeSet<String>,
        u64,
        u64,
        u64,
        u64,
    );
    let mut want: BTreeMap<(i64, String), Want> = BTreeMap::new();
    for v in text.lines().filter_map(|l| parse_line(l).ok()) {
        let start = v.ts_ms.div_euclid(60_000) * 60_000;
        let e = want.entry((start, v.event.zone.to_string())).or_default();
        match &v.event.body {
            Body::Probe { device, .. } => {
                e.0.insert(device.to_string());
            }
            Body::App {
                subject, consent, ..
            } if consent.iter().any(|c| c == "analytics") => {
                e.1.insert(subject.to_string());
            }
            Body::GateScan { direction, .. } => match direction {
                Direction::In => e.2 += 1,
                Direction::Out => e.3 += 1,
            },
            Body::Audio { .. } => e.4 += 1,
            Body::Environment { .. } => e.5 += 1,
            _ => {}
        }
    }
    let mut got: BTreeMap<(i64, String), Want> = BTreeMap::new();
    for c in &closed {
        assert_eq!(c.zones.len(), zones.len());
        for (zone, agg) in &c.zones {
            let have = (
                agg.devices.len(),
                agg.app_users.len(),
                agg.ingress,
                agg.egress,
                agg.sound.1,
                agg.co2.1,
            );
            if have == (0, 0, 0, 0, 0, 0) {
                continue;
            }
            let w = &want[&(c.start_ms, zone.clone())];
            assert_eq!(
                have,
                (w.0.len(), w.1.len(), w.2, w.3, w.4, w.5),
                "{zone} at {}",
                c.start_ms
            );
            got.insert((c.start_ms, zone.clone()), w.clone());
        }
    }
    want.retain(|_, w| *w != Want::default());
    assert_eq!(got.len(), want.len());
}
