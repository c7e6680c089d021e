use veil_privacy::pseudonym::{DayKey, EventDay, Pseudonym};

use super::*;

fn unit(key: &DayKey, id: &str) -> Pseudonym {
    key.pseudonym(id.as_bytes())
}

fn key() -> DayKey {
    DayKey::generate(EventDay::new(20_000)).unwrap().0
}

const LIMITS: UnitLimits = UnitLimits {
    max_zone_visits: 3,
    max_visits_per_zone: 2,
    max_gate_passes: 2,
};

#[test]
fn zone_visits_are_bounded_per_zone_and_per_day() {
    let k = key();
    let a = unit(&k, "track-a");
    let mut b = DayBounds::new(LIMITS);
    // Zone 0 twice (K = 2), then a third entry is bounded.
    for _ in 0..2 {
        assert_eq!(b.enter(Family::Tracks, a, 0, 0), Outcome::Counted);
        assert_eq!(b.exit(Family::Tracks, a, 0), Outcome::Counted);
    }
    assert_eq!(b.enter(Family::Tracks, a, 0, 0), Outcome::Bounded);
    // Its exit is then unmatched: the entry was not counted.
    assert_eq!(b.exit(Family::Tracks, a, 0), Outcome::Unmatched);
    // V = 3: one more zone entry anywhere, then nothing.
    assert_eq!(b.enter(Family::Tracks, a, 1, 0), Outcome::Counted);
    assert_eq!(b.exit(Family::Tracks, a, 1), Outcome::Counted);
    assert_eq!(b.enter(Family::Tracks, a, 2, 0), Outcome::Bounded);
    let s = b.stats(Family::Tracks);
    assert_eq!((s.counted, s.bounded, s.unmatched), (6, 2, 1));
    assert!((s.bounded_share() - 0.25).abs() < 1e-12);
    // Another unit is independent.
    assert_eq!(
        b.enter(Family::Tracks, unit(&k, "track-b"), 2, 0),
        Outcome::Counted
    );
}

#[test]
fn counted_events_alternate_per_zone_starting_with_an_entry() {
    let k = key();
    let a = unit(&k, "dev");
    let mut b = DayBounds::new(UnitLimits {
        max_zone_visits: 100,
        max_visits_per_zone: 100,
        max_gate_passes: 1,
    });
    assert_eq!(b.exit(Family::Devices, a, 4), Outcome::Unmatched);
    assert_eq!(b.enter(Family::Devices, a, 4, 10), Outcome::Counted);
    assert_eq!(b.enter(Family::Devices, a, 4, 20), Outcome::Unchanged);
    assert_eq!(b.exit(Family::Devices, a, 4), Outcome::Counted);
    assert_eq!(b.exit(Family::Devices, a, 4), Outcome::Unmatched);
}

#[test]
fn presence_expires_after_the_last_sighting() {
    let k = key();
    let (a, c) = (unit(&k, "a"), unit(&k, "c"));
    let mut b = DayBounds::new(LIMITS);
    b.enter(Family::Devices, a, 1, 1_000);
    b.enter(Family::Devices, a, 1, 5_000); // seen again: last seen 5 s
    b.enter(Family::Devices, c, 2, 2_000);
    assert_eq!(b.expire(Family::Devices, 3_000), vec![(2, 1)]);
    assert_eq!(b.expire(Family::Devices, 6_000), vec![(1, 1)]);
    assert!(b.expire(Family::Devices, 100_000).is_empty());
}

#[test]
fn gate_passes_are_bounded_per_direction() {
    let k = key();
    let t = unit(&k, "ticket");
    let mut b = DayBounds::new(LIMITS);
    assert_eq!(b.gate(t, true), Outcome::Counted);
    assert_eq!(b.gate(t, true), Outcome::Counted);
    assert_eq!(b.gate(t, true), Outcome::Bounded);
    assert_eq!(b.gate(t, false), Outcome::Counted);
}

#[test]
fn state_survives_a_restart_through_its_encoding() {
    let k = key();
    let a = unit(&k, "track-a");
    let mut b = DayBounds::new(LIMITS);
    b.enter(Family::Tracks, a, 0, 7);
    b.exit(Family::Tracks, a, 0);
    b.enter(Family::Tracks, a, 1, 9);
    b.gate(a, true);
    let dirty = b.take_dirty();
    assert_eq!(dirty.len(), 2);
    assert!(b.take_dirty().is_empty(), "dirty set is cleared");
    let mut restored = DayBounds::new(LIMITS);
    for (family, bytes, state) in &dirty {
        restored
            .restore_unit(*family, Pseudonym::from_stored(*bytes), state)
            .unwrap();
    }
    // Inside zone 1 after the restart: its exit counts, and V = 3 is
    // already two entries spent.
    assert_eq!(restored.exit(Family::Tracks, a, 1), Outcome::Counted);
    assert_eq!(restored.enter(Family::Tracks, a, 2, 10), Outcome::Counted);
    assert_eq!(restored.enter(Family::Tracks, a, 3, 11), Outcome::Bounded);
    assert_eq!(restored.gate(a, true), Outcome::Counted);
    assert_eq!(restored.gate(a, true), Outcome::Bounded);
    assert!(
        restored
            .restore_unit(Family::Tracks, a, &[1, 2, 3])
            .is_err()
    );
}

#[test]
fn a_sighting_that_only_updates_last_seen_is_stored_once_it_is_stale() {
    let k = key();
    let a = unit(&k, "dev-a");
    let mut b = DayBounds::new(LIMITS).with_seen_refresh(60_000);
    assert_eq!(b.enter(Family::Devices, a, 0, 1_000), Outcome::Counted);
    assert_eq!(b.take_dirty().len(), 1, "an entry is stored at once");
    // Still inside: nothing to store until the stored time is 60 s old.
    assert_eq!(b.enter(Family::Devices, a, 0, 30_000), Outcome::Unchanged);
    assert!(b.take_dirty().is_empty());
    assert_eq!(b.enter(Family::Devices, a, 0, 61_000), Outcome::Unchanged);
    let stored = b.take_dirty();
    assert_eq!(stored.len(), 1);
    // The stored record carries the newest sighting; a restart restores it.
    let mut restored = DayBounds::new(LIMITS).with_seen_refresh(60_000);
    restored
        .restore_unit(Family::Devices, a, &stored[0].2)
        .unwrap();
    assert!(restored.expire(Family::Devices, 61_000).is_empty());
    assert_eq!(restored.expire(Family::Devices, 61_001), vec![(0, 1)]);
    // A counted exit is stored at once whatever the refresh.
    assert_eq!(b.exit(Family::Devices, a, 0), Outcome::Counted);
    assert_eq!(b.take_dirty().len(), 1);
}

mod grouped_sightings {
    use proptest::prelude::*;

    use super::*;

    /// One window's sightings: (unit, zone, ts) with a few units and zones.
    fn window() -> impl Strategy<Value = Vec<(u8, u16, i64)>> {
        prop::collection::vec((0u8..4, 0u16..5, 0i64..60_000), 0..60)
    }

    proptest! {
        /// `enter_seen` with a window's first, last and count per unit and
        /// zone (as the windower groups probes and app events) leaves the
        /// same state, outcome counts and stored records as one `enter` per
        /// sighting in time order, across windows with expiry between them.
        #[test]
        fn grouping_a_windows_sightings_changes_nothing(
            windows in prop::collection::vec(window(), 1..5),
            refresh in prop::sample::select(vec![0i64, 30_000, 90_000]),
        ) {
            let k = key();
            let units: Vec<Pseudonym> = (0..4).map(|i| unit(&k, &format!("dev-{i}"))).collect();
            let mut one = DayBounds::new(LIMITS).with_seen_refresh(refresh);
            let mut grouped = DayBounds::new(LIMITS).with_seen_refresh(refresh);
            for (w, mut events) in windows.into_iter().enumerate() {
                let base = w as i64 * 60_000;
                events.sort_by_key(|e| e.2);
                for &(u, z, ts) in &events {
                    one.enter(Family::Devices, units[usize::from(u)], z, base + ts);
                }
                // Group by (unit, zone) in first-sighting order.
                let mut groups: Vec<(u8, u16, i64, i64, u64)> = Vec::new();
                for &(u, z, ts) in &events {
                    match groups.iter_mut().find(|g| g.0 == u && g.1 == z) {
                        Some(g) => {
                            g.3 = base + ts;
                            g.4 += 1;
                        }
                        None => groups.push((u, z, base + ts, base + ts, 1)),
                    }
                }
                for (u, z, first, last, n) in groups {
                    grouped.enter_seen(Family::Devices, units[usize::from(u)], z, first, last, n);
                }
                let end = base + 60_000;
                prop_assert_eq!(
                    one.expire(Family::Devices, end - 20_000),
                    grouped.expire(Family::Devices, end - 20_000)
                );
                let mut a = one.take_dirty();
                let mut b = grouped.take_dirty();
                a.sort();
                b.sort();
                prop_assert_eq!(a, b);
                prop_assert_eq!(one.stats(Family::Devices), grouped.stats(Family::Devices));
            }
        }
    }
}
