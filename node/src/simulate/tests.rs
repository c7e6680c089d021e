use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use super::*;
use crate::event::{Body, Direction, parse_line};

/// 2026-06-01T18:00:00Z.
const START_MS: i64 = 1_780_336_800_000;

fn demo(venue: VenueKind, seed: u64) -> SimConfig {
    SimConfig {
        attendees: Some(match venue {
            VenueKind::Arena => 1_500,
            VenueKind::Festival => 2_000,
            VenueKind::Conference => 600,
        }),
        ..SimConfig::new(venue, seed, Duration::from_secs(20 * 60), START_MS)
    }
}

fn sim(cfg: SimConfig) -> Simulation {
    Simulation::new(cfg).expect("valid config")
}

fn output(s: &Simulation, node: u32) -> (String, SimStats) {
    let mut out = Vec::new();
    let stats = s.write_events(node, &mut out).expect("write to memory");
    (String::from_utf8(out).expect("utf-8"), stats)
}

fn phase(s: &Simulation, name: &str) -> (i64, i64) {
    s.phases()
        .into_iter()
        .find(|p| p.0 == name)
        .map(|p| (p.1, p.2))
        .expect("phase exists")
}

/// Mean of `metric` over the windows lying entirely inside `[from, to)`.
fn mean_in(t: &GroundTruth, zone: &str, metric: Metric, (from, to): (i64, i64)) -> f64 {
    let v: Vec<f64> = t
        .series(zone, metric)
        .into_iter()
        .filter(|(w, _)| *w >= from && *w + t.window_ms() <= to)
        .map(|(_, v)| v)
        .collect();
    assert!(
        !v.is_empty(),
        "no {metric} windows for {zone} in {from}..{to}"
    );
    v.iter().sum::<f64>() / v.len() as f64
}

fn correlation(pairs: &[(f64, f64)]) -> f64 {
    let n = pairs.len() as f64;
    let (mx, my) = (
        pairs.iter().map(|p| p.0).sum::<f64>() / n,
        pairs.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = pairs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let vx: f64 = pairs.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    let vy: f64 = pairs.iter().map(|(_, y)| (y - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

#[test]
fn same_seed_same_bytes_other_seed_differs() {
    let a = output(&sim(demo(VenueKind::Arena, 7)), 0);
    let b = output(&sim(demo(VenueKind::Arena, 7)), 0);
    let c = output(&sim(demo(VenueKind::Arena, 8)), 0);
    assert!(a.1.events > 10_000, "{:?}", a.1);
    assert!(a.1.crossings > 1_500 * 4, "{:?}", a.1);
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
}

#[test]
fn valid_lines_round_trip_and_malformed_lines_fail() {
    for venue in [VenueKind::Arena, VenueKind::Festival, VenueKind::Conference] {
        let cfg = SimConfig {
            malformed_per_10k: 200,
            ..demo(venue, 3)
        };
        let (text, stats) = output(&sim(cfg.clone()), 0);
        let (clean, clean_stats) = output(
            &sim(SimConfig {
                malformed_per_10k: 0,
                ..cfg
            }),
            0,
        );
        assert_eq!(clean_stats.malformed, 0);
        assert!(stats.malformed > 50, "{venue}: {stats:?}");
        assert_eq!(stats.lines(), clean_stats.events);
        let (mut ok, mut bad, mut last_ts) = (0, 0, i64::MIN);
        let kinds: HashSet<&str> = text
            .lines()
            .zip(clean.lines())
            .filter_map(|(line, clean_line)| match parse_line(line) {
                Ok(v) => {
                    ok += 1;
                    assert_eq!(line, clean_line, "valid lines are untouched");
                    assert_eq!(
                        serde_json::to_string(&v.event).expect("serialise"),
                        line,
                        "round trip"
                    );
                    assert!(v.ts_ms >= last_ts, "event-time order: {line}");
                    assert!((START_MS..START_MS + 20 * 60_000).contains(&v.ts_ms));
                    last_ts = v.ts_ms;
                    Some(v.event.body.kind())
                }
                Err(_) => {
                    bad += 1;
                    assert_ne!(line, clean_line);
                    assert!(parse_line(clean_line).is_ok());
                    None
                }
            })
            .collect();
        assert_eq!((ok, bad), (stats.events, stats.malformed), "{venue}");
        assert_eq!(kinds.len(), 7, "{venue}: every kind appears: {kinds:?}");
    }
}

#[test]
fn ground_truth_matches_the_valid_lines() {
    let s = sim(SimConfig {
        malformed_per_10k: 300,
        ..demo(VenueKind::Arena, 11)
    });
    let truth = s.ground_truth();
    let (text, _) = output(&s, 0);
    // (window, zone) -> devices, ingress, egress, app total, app consented.
    type Counts = (BTreeSet<String>, u64, u64, u64, u64);
    let mut seen: BTreeMap<(i64, String), Counts> = BTreeMap::new();
    // (zone, device or consented subject, ts) of probes and app events.
    let mut probes: Vec<(String, String, i64)> = Vec::new();
    let mut app_users: Vec<(String, String, i64)> = Vec::new();
    for v in text.lines().filter_map(|l| parse_line(l).ok()) {
        let w = v.ts_ms.div_euclid(60_000) * 60_000;
        let zone = v.event.zone.into_owned();
        let e = seen.entry((w, zone.clone())).or_default();
        match v.event.body {
            Body::Probe { device, .. } => {
                e.0.insert(device.to_string());
                probes.push((zone, device.into_owned(), v.ts_ms));
            }
            Body::GateScan { direction, .. } => match direction {
                Direction::In => e.1 += 1,
                Direction::Out => e.2 += 1,
            },
            Body::App {
                consent, subject, ..
            } => {
                e.3 += 1;
                if consent.iter().any(|c| c == "analytics") {
                    e.4 += 1;
                    app_users.push((zone, subject.into_owned(), v.ts_ms));
                }
            }
            _ => {}
        }
    }
    // Present at the end of a window: an event in the last 5 minutes.
    let present = |events: &[(String, String, i64)], zone: &str, end: i64| -> f64 {
        let ids: HashSet<&str> = events
            .iter()
            .filter(|(z, _, ts)| z == zone && (end - PRESENCE_TIMEOUT_MS..end).contains(ts))
            .map(|(_, id, _)| id.as_str())
            .collect();
        ids.len() as f64
    };
    let mut checked = 0;
    let mut some_present = (0.0, 0.0);
    for z in s.zones() {
        let (mut ins, mut outs) = (0, 0);
        for w in truth.windows() {
            let e = seen.remove(&(w, z.name.to_owned())).unwrap_or_default();
            let got = |m| truth.get(z.name, m, w);
            let end = w + 60_000;
            let (devices, users) = (
                present(&probes, z.name, end),
                present(&app_users, z.name, end),
            );
            assert_eq!(got(Metric::DevicesPresent), Some(devices), "{} {w}", z.name);
            assert_eq!(got(Metric::AppUsersPresent), Some(users), "{} {w}", z.name);
            some_present.0 += devices;
            some_present.1 += users;
            (ins, outs) = (ins + e.1, outs + e.2);
            if z.role == ZoneRole::Gate {
                assert_eq!(got(Metric::IngressCumulative), Some(ins as f64));
                assert_eq!(got(Metric::EgressCumulative), Some(outs as f64));
            } else {
                assert_eq!(got(Metric::IngressCumulative), None);
            }
            assert_eq!(got(Metric::UniqueDevices), Some(e.0.len() as f64));
            assert_eq!(got(Metric::AppEventsTotal), Some(e.3 as f64));
            assert_eq!(got(Metric::AppEventsConsented), Some(e.4 as f64));
            if z.role == ZoneRole::Gate {
                assert_eq!(got(Metric::Ingress), Some(e.1 as f64));
                assert_eq!(got(Metric::Egress), Some(e.2 as f64));
            } else {
                assert_eq!(got(Metric::Ingress), None);
            }
            checked += 1;
        }
    }
    assert!(
        seen.is_empty(),
        "events outside the truth's windows: {seen:?}"
    );
    assert_eq!(checked, 8 * 20);
    assert!(
        some_present.0 > 1_000.0 && some_present.1 > 100.0,
        "{some_present:?}"
    );
}

#[test]
fn intermission_surge_at_concourse_and_merch() {
    let s = sim(demo(VenueKind::Arena, 5));
    let t = s
        .ground_truth_with_window(Duration::from_secs(10))
        .expect("10 s windows");
    let show = phase(&s, "first-half");
    let intermission = phase(&s, "intermission");
    for (zone, factor) in [("concourse", 3.0), ("merch", 3.0)] {
        let during = mean_in(&t, zone, Metric::Occupancy, intermission);
        let before = mean_in(&t, zone, Metric::Occupancy, show);
        assert!(
            during > factor * before && during > 50.0,
            "{zone}: intermission {during:.0} vs show {before:.0}"
        );
    }
    // ... and the seats empty out accordingly.
    let seats_show = mean_in(&t, "stands-lower", Metric::Occupancy, show);
    let seats_break = mean_in(&t, "stands-lower", Metric::Occupancy, intermission);
    assert!(
        seats_break < 0.8 * seats_show,
        "{seats_break} vs {seats_show}"
    );
    // The cameras see it too.
    let cam = mean_in(&t, "concourse", Metric::OccupancyCamera, intermission);
    let occ = mean_in(&t, "concourse", Metric::Occupancy, intermission);
    assert!((cam - occ).abs() < 0.2 * occ, "camera {cam} vs true {occ}");
}

#[test]
fn ingress_precedes_egress() {
    let cfg = SimConfig {
        malformed_per_10k: 0,
        ..demo(VenueKind::Arena, 9)
    };
    let s = sim(cfg);
    let t = s.ground_truth();
    let gates: Vec<&str> = s
        .zones()
        .iter()
        .filter(|z| z.role == ZoneRole::Gate)
        .map(|z| z.name)
        .collect();
    let totals = |m: Metric| -> BTreeMap<i64, f64> {
        let mut by_window = BTreeMap::new();
        for g in &gates {
            for (w, v) in t.series(g, m) {
                *by_window.entry(w).or_insert(0.0) += v;
            }
        }
        by_window
    };
    let (ins, outs) = (totals(Metric::Ingress), totals(Metric::Egress));
    let sum = |m: &BTreeMap<i64, f64>| m.values().sum::<f64>();
    let centroid =
        |m: &BTreeMap<i64, f64>| m.iter().map(|(w, v)| *w as f64 * v).sum::<f64>() / sum(m);
    let units = s.unit_stats();
    assert_eq!(units.attendees, 1_500, "everyone comes in");
    assert_eq!(
        sum(&ins),
        units.gate_in.events() as f64,
        "one scan per pass in"
    );
    assert!(sum(&ins) < 1_500.0 * 1.2, "few re-entries: {}", sum(&ins));
    assert!(
        sum(&outs) > 1_350.0,
        "most have left by the end: {}",
        sum(&outs)
    );
    assert!(centroid(&ins) < centroid(&outs));
    let show_end = phase(&s, "first-half").1;
    let last_show = phase(&s, "second-half").0;
    let before = ins.range(..show_end).map(|(_, v)| v).sum::<f64>();
    let after = outs.range(last_show..).map(|(_, v)| v).sum::<f64>();
    assert!(
        before >= 0.9 * sum(&ins),
        "ingress before the first half ends: {before}"
    );
    assert!(
        after >= 0.95 * sum(&outs),
        "egress after the second half starts: {after}"
    );
}

#[test]
fn co2_follows_occupancy() {
    // Enough people for the air to change: CO2 follows load (people / capacity).
    let s = sim(SimConfig {
        attendees: Some(8_000),
        ..demo(VenueKind::Arena, 13)
    });
    let t = s.ground_truth();
    for (zone, min_r) in [
        ("floor", 0.8),
        ("stands-lower", 0.8),
        ("stands-upper", 0.8),
        // Short surges and a ventilation lag: a weaker but clear link.
        ("concourse", 0.4),
        ("merch", 0.4),
    ] {
        let co2: BTreeMap<i64, f64> = t.series(zone, Metric::Co2Ppm).into_iter().collect();
        let pairs: Vec<(f64, f64)> = t
            .series(zone, Metric::Occupancy)
            .into_iter()
            .filter_map(|(w, occ)| co2.get(&w).map(|c| (occ, *c)))
            .collect();
        let r = correlation(&pairs);
        eprintln!("{zone}: correlation {r:.2}");
        assert!(r > min_r, "{zone}: correlation {r:.2}");
    }
    let full = mean_in(&t, "floor", Metric::Co2Ppm, phase(&s, "second-half"));
    let empty = mean_in(&t, "floor", Metric::Co2Ppm, (START_MS, START_MS + 60_000));
    assert!(full > empty + 400.0, "{full} vs {empty}");
}

#[test]
fn zones_are_partitioned_across_nodes() {
    let one = sim(demo(VenueKind::Festival, 21));
    let three = sim(SimConfig {
        nodes: 3,
        ..demo(VenueKind::Festival, 21)
    });
    let mut owned = Vec::new();
    let mut lines = Vec::new();
    // Crossing lines of all nodes (those between two nodes twice).
    let mut crossings = Vec::new();
    let mut bad = BTreeSet::new();
    for node in 0..3 {
        let zones: HashSet<&str> = three.node_zones(node).iter().map(|z| z.name).collect();
        assert!(!zones.is_empty());
        let (text, _) = output(&three, node);
        for line in text.lines() {
            if let Ok(v) = parse_line(line) {
                if let Body::Crossing { from, to, .. } = &v.event.body {
                    // A crossing goes to the nodes of both its zones.
                    let mine = |z: &Option<std::borrow::Cow<'_, str>>| {
                        z.as_deref().is_some_and(|z| zones.contains(z))
                    };
                    assert!(mine(from) || mine(to), "{line} on node {node}");
                    assert_eq!(Some(&v.event.zone), to.as_ref().or(from.as_ref()));
                    crossings.push(line.to_owned());
                    continue;
                }
                assert!(zones.contains(&*v.event.zone), "{line} on node {node}");
                lines.push(line.to_owned());
            } else {
                // A broken crossing line reaches both nodes too.
                bad.insert(line.to_owned());
            }
        }
        let mut truth = Vec::new();
        three
            .write_ground_truth(Some(node), &mut truth)
            .expect("write");
        for row in String::from_utf8(truth).expect("utf-8").lines() {
            let row: TruthRow = serde_json::from_str(row).expect("truth row");
            assert!(zones.contains(row.zone.as_str()));
            assert!(row.metric.parse::<Metric>().is_ok());
        }
        owned.extend(zones);
    }
    let distinct: HashSet<&str> = owned.iter().copied().collect();
    assert_eq!(distinct.len(), owned.len(), "no zone on two nodes");
    assert_eq!(
        distinct.len(),
        zones(VenueKind::Festival).len(),
        "every zone on a node"
    );
    // A zone's lines do not depend on how the venue is split, and a
    // crossing between two nodes' zones is the same line on both.
    let (single, _) = output(&one, 0);
    let (mut single, single_bad): (Vec<&str>, Vec<&str>) =
        single.lines().partition(|l| parse_line(l).is_ok());
    assert_eq!(bad, single_bad.into_iter().map(str::to_owned).collect());
    crossings.sort_unstable();
    let node_of = |z: Option<&str>| {
        z.and_then(|z| three.zones().iter().find(|s| s.name == z))
            .map(|s| s.node(3))
    };
    let mut split: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut between_nodes = 0;
    for copies in crossings.chunk_by(|a, b| a == b) {
        let v = parse_line(&copies[0]).expect("valid");
        let Body::Crossing { from, to, .. } = &v.event.body else {
            unreachable!("crossings only");
        };
        let nodes: HashSet<u32> = [node_of(from.as_deref()), node_of(to.as_deref())]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(copies.len(), nodes.len(), "{}", copies[0]);
        between_nodes += usize::from(nodes.len() == 2);
        split.push(&copies[0]);
    }
    assert!(between_nodes > 100, "{between_nodes}");
    single.sort_unstable();
    split.sort_unstable();
    assert_eq!(single.len(), split.len());
    assert_eq!(single, split);
}

#[test]
fn festival_campers_stay_and_conference_fills_rooms() {
    let f = sim(demo(VenueKind::Festival, 2));
    let t = f.ground_truth();
    let count = |t: &GroundTruth, m: Metric, zones: &[&str]| -> f64 {
        zones
            .iter()
            .flat_map(|z| t.series(z, m))
            .map(|(_, v)| v)
            .sum()
    };
    let (ins, outs) = (
        count(&t, Metric::Ingress, &["gate-north", "gate-south"]),
        count(&t, Metric::Egress, &["gate-north", "gate-south"]),
    );
    assert!(outs < 0.85 * ins, "campers stay: {outs} out of {ins}");
    let end = f.end_ms();
    let camp_end = mean_in(&t, "campsite", Metric::Occupancy, (end - 120_000, end));
    assert!(camp_end > 300.0, "campsite at the end: {camp_end}");

    let c = sim(demo(VenueKind::Conference, 2));
    let t = c.ground_truth();
    let keynote = phase(&c, "keynote");
    assert!(mean_in(&t, "auditorium", Metric::Occupancy, keynote) > 400.0);
    let sessions = phase(&c, "afternoon-sessions");
    for room in ["room-1", "room-2", "room-3"] {
        assert!(
            mean_in(&t, room, Metric::Occupancy, sessions) > 30.0,
            "{room}"
        );
    }
}

#[test]
fn window_lengths_agree() {
    let s = sim(demo(VenueKind::Arena, 4));
    let minute = s.ground_truth();
    let ten = s
        .ground_truth_with_window(Duration::from_secs(10))
        .expect("10 s");
    assert_eq!(ten.window_ms(), 10_000);
    for w in minute.windows() {
        let sub: Vec<i64> = (0..6).map(|k| w + k * 10_000).collect();
        for m in [Metric::Ingress, Metric::Egress] {
            let total: f64 = sub.iter().filter_map(|x| ten.get("gate-a", m, *x)).sum();
            assert_eq!(minute.get("gate-a", m, w), Some(total));
        }
        let devices: f64 = sub
            .iter()
            .filter_map(|x| ten.get("floor", Metric::UniqueDevices, *x))
            .sum();
        let distinct = minute
            .get("floor", Metric::UniqueDevices, w)
            .expect("present");
        assert!(distinct <= devices);
    }
    assert!(s.ground_truth_with_window(Duration::from_secs(15)).is_err());
    assert!(s.ground_truth_with_window(Duration::ZERO).is_err());
}

#[test]
fn config_is_validated() {
    assert_eq!("festival".parse::<VenueKind>(), Ok(VenueKind::Festival));
    assert!("stadium".parse::<VenueKind>().is_err());
    let base = demo(VenueKind::Arena, 1);
    let bad = [
        SimConfig {
            nodes: 0,
            ..base.clone()
        },
        SimConfig {
            nodes: 9,
            ..base.clone()
        },
        SimConfig {
            attendees: Some(0),
            ..base.clone()
        },
        SimConfig {
            duration: Duration::from_secs(60),
            ..base.clone()
        },
        SimConfig {
            start_ms: -1,
            ..base.clone()
        },
        SimConfig {
            malformed_per_10k: 10_001,
            ..base.clone()
        },
    ];
    for cfg in bad {
        assert!(Simulation::new(cfg.clone()).is_err(), "{cfg:?}");
    }
    let s = sim(base);
    assert!(s.write_events(1, &mut std::io::sink()).is_err());
    for z in zones(VenueKind::Arena) {
        assert!(veil_common::name::valid_name(z.name));
        assert_eq!(z.node(3), (z.index % 3) as u32);
    }
}

#[test]
fn timestamps_are_rfc3339() {
    use time::{OffsetDateTime, format_description::well_known::Rfc3339};
    for ms in [
        0,
        1,
        999,
        START_MS,
        START_MS + 86_399_999,
        951_782_400_123,
        253_402_300_799_999,
    ] {
        let s = emit::rfc3339(ms);
        let parsed = OffsetDateTime::parse(&s, &Rfc3339).expect("parses");
        assert_eq!(
            parsed.unix_timestamp_nanos() / 1_000_000,
            i128::from(ms),
            "{s}"
        );
    }
}

/// A config whose crossing lines are every zone change (no misses, nothing
/// malformed).
fn exact(cfg: SimConfig) -> SimConfig {
    SimConfig {
        malformed_per_10k: 0,
        tracking_miss_per_10k: 0,
        ..cfg
    }
}

/// A parsed crossing: time, track, zone left, zone entered.
type Cross = (i64, String, Option<String>, Option<String>);

/// The valid crossing lines of `text`, in line order.
fn crossings(text: &str) -> Vec<Cross> {
    text.lines()
        .filter_map(|l| parse_line(l).ok())
        .filter_map(|v| match v.event.body {
            Body::Crossing { track, from, to } => Some((
                v.ts_ms,
                track.into_owned(),
                from.map(|z| z.into_owned()),
                to.map(|z| z.into_owned()),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn crossings_are_consistent_per_track() {
    for venue in [VenueKind::Arena, VenueKind::Festival, VenueKind::Conference] {
        let cfg = exact(demo(venue, 17));
        let attendees = cfg.attendees.expect("set") as usize;
        let s = sim(cfg);
        let (text, stats) = output(&s, 0);
        let cs = crossings(&text);
        assert_eq!(cs.len() as u64, stats.crossings);
        let mut tracks: BTreeMap<&str, Vec<&Cross>> = BTreeMap::new();
        for c in &cs {
            tracks.entry(c.1.as_str()).or_default().push(c);
        }
        assert_eq!(tracks.len(), attendees, "{venue}: one track per attendee");
        for (track, list) in tracks {
            // Where the track is: outside at first.
            let mut at: Option<&str> = None;
            let mut inside: HashSet<&str> = HashSet::new();
            let mut last_ts = i64::MIN;
            for (ts, _, from, to) in list {
                assert!(*ts > last_ts, "{venue} {track}: time order");
                last_ts = *ts;
                assert_eq!(from.as_deref(), at, "{venue} {track}: leaves where it is");
                assert_ne!(from, to, "{venue} {track}");
                // Per zone: enter, exit, enter, ... never enter twice.
                if let Some(z) = from {
                    assert!(inside.remove(z.as_str()), "{venue} {track}: exits {z}");
                }
                if let Some(z) = to {
                    assert!(inside.insert(z.as_str()), "{venue} {track}: enters {z}");
                }
                assert!(inside.len() <= 1);
                at = to.as_deref();
            }
        }
    }
}

#[test]
fn attendees_leave_and_come_back_with_one_track_and_ticket() {
    for (venue, at_least) in [(VenueKind::Conference, 100), (VenueKind::Arena, 40)] {
        let s = sim(exact(demo(venue, 5)));
        let (text, _) = output(&s, 0);
        let (mut arrivals, mut scans) = (BTreeMap::new(), BTreeMap::new());
        for v in text.lines().filter_map(|l| parse_line(l).ok()) {
            match v.event.body {
                Body::Crossing {
                    track, from: None, ..
                } => *arrivals.entry(track.into_owned()).or_insert(0) += 1,
                Body::GateScan {
                    direction: Direction::In,
                    ticket,
                } => *scans.entry(ticket.into_owned()).or_insert(0) += 1,
                _ => {}
            }
        }
        let again = |m: &BTreeMap<String, u32>| m.values().filter(|n| **n >= 2).count() as u64;
        let units = s.unit_stats();
        eprintln!("{venue}: {units}");
        assert!(
            again(&arrivals) >= at_least,
            "{venue}: {}",
            again(&arrivals)
        );
        assert_eq!(again(&arrivals), again(&scans), "{venue}");
        assert_eq!(units.reentered, again(&arrivals), "{venue}");
        assert_eq!(
            units.gate_in.events(),
            u64::from(arrivals.values().sum::<u32>())
        );
        assert_eq!(units.gate_in.max(), *arrivals.values().max().expect("some"));
        assert_eq!(
            units.zone_entries.events(),
            units.zone_entries_per_zone.events()
        );
        assert!(units.gate_out.max() >= 2, "{venue}");
    }
    // An arena attendee enters a handful to ~10 zones.
    let arena = sim(demo(VenueKind::Arena, 5)).unit_stats();
    let entries = &arena.zone_entries;
    assert!((4.0..10.0).contains(&entries.mean()), "{arena}");
    assert!(
        entries.quantile(0.5) >= 3 && entries.quantile(0.99) <= 20,
        "{arena}"
    );
    assert!(entries.bound_for(0.02) <= 16, "{arena}");
}

#[test]
fn presence_is_the_running_sum_of_crossings() {
    for (miss, malformed) in [(0, 0), (200, 100)] {
        let s = sim(SimConfig {
            tracking_miss_per_10k: miss,
            malformed_per_10k: malformed,
            ..demo(VenueKind::Arena, 23)
        });
        let truth = s.ground_truth();
        let (text, _) = output(&s, 0);
        let cs = crossings(&text);
        let (mut error, mut people) = (0.0, 0.0);
        for z in s.zones() {
            let name = Some(z.name);
            for w in truth.windows() {
                let end = w + 60_000;
                let net: i64 = cs
                    .iter()
                    .filter(|c| c.0 < end)
                    .map(|c| i64::from(c.3.as_deref() == name) - i64::from(c.2.as_deref() == name))
                    .sum();
                let got = |m| truth.get(z.name, m, w).expect("every window");
                assert_eq!(got(Metric::PresenceTracked), net as f64, "{} {w}", z.name);
                let presence = got(Metric::Presence);
                assert!(presence >= 0.0);
                if miss == 0 && malformed == 0 {
                    assert_eq!(presence, net as f64, "{} {w}", z.name);
                }
                error += (presence - net as f64).abs();
                people += presence;
            }
        }
        if miss > 0 {
            // 2 % missed, 1 % malformed: a visible, small sensor error.
            assert!(error > 0.0 && error < 0.1 * people, "{error} vs {people}");
        }
    }
    // Presence at the end of a 10-second window (one model step) is the
    // number of people in the zone during that step.
    let s = sim(demo(VenueKind::Festival, 23));
    let ten = s
        .ground_truth_with_window(Duration::from_secs(10))
        .expect("10 s");
    for z in s.zones() {
        for (w, occupancy) in ten.series(z.name, Metric::Occupancy) {
            assert_eq!(ten.get(z.name, Metric::Presence, w), Some(occupancy));
        }
    }
}

#[test]
fn crossings_do_not_depend_on_other_rates() {
    // The misses and the crossing lines are drawn from their own stream:
    // changing the malformed rate or the split never moves a crossing.
    let a = sim(exact(demo(VenueKind::Arena, 31)));
    let b = sim(SimConfig {
        tracking_miss_per_10k: 0,
        nodes: 2,
        ..demo(VenueKind::Arena, 31)
    });
    let (all, _) = output(&a, 0);
    let mut split = crossings(&output(&b, 0).0);
    split.extend(crossings(&output(&b, 1).0));
    split.sort();
    split.dedup();
    let mut all = crossings(&all);
    all.sort();
    // b writes a few crossings as malformed lines: a subset, nothing else.
    assert!(split.len() < all.len() && split.len() > all.len() * 99 / 100);
    let all: HashSet<Cross> = all.into_iter().collect();
    assert!(split.iter().all(|c| all.contains(c)));
}

/// Volume and speed of a default 2-hour arena run; prints figures, asserts none.
/// `cargo test --release -p veil-node simulate -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: run in release"]
fn arena_two_hours_volume() {
    let cfg = SimConfig::new(VenueKind::Arena, 7, Duration::from_secs(2 * 3600), START_MS);
    let t0 = Instant::now();
    let s = sim(cfg);
    let mut bytes = CountingSink(0);
    let stats = s.write_events(0, &mut bytes).expect("sink");
    let events = t0.elapsed();
    let t1 = Instant::now();
    let truth = s.ground_truth();
    let truth_time = t1.elapsed();
    let t2 = Instant::now();
    let units = s.unit_stats();
    println!("seed 7, unit stats in {:.2?}:\n{units}", t2.elapsed());
    for (name, h) in [
        ("zone entries", &units.zone_entries),
        ("per zone", &units.zone_entries_per_zone),
        ("gate in", &units.gate_in),
        ("gate out", &units.gate_out),
    ] {
        println!("{name}: {:?}", h.counts());
    }
    println!(
        "arena 2 h, {} attendees: {} events ({} crossings) + {} malformed, {:.1} MB, \
         {:.2?} to write; ground truth {} values in {:.2?}",
        VenueKind::Arena.default_attendees(),
        stats.events,
        stats.crossings,
        stats.malformed,
        bytes.0 as f64 / 1e6,
        events,
        truth.rows().count(),
        truth_time
    );
}

struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
