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

fn ev(ts: &str, zone: &str, body: &str) -> ValidEvent {
    parse_line(&format!(
        r#"{{"ts":"{ts}","sensor":"s-1","zone":"{zone}",{body}}}"#
    ))
    .unwrap()
}

fn add(w: &mut Windower, e: &ValidEvent) {
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
        let e = parse_line(&format!(
            r#"{{"ts":"2026-06-01T18:00:01Z","sensor":"{sensor}","zone":"floor","kind":"occupancy","count":{count}}}"#
        ))
        .unwrap();
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
                    ts: String::new(),
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
