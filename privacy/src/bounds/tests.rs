use super::*;

fn who(i: u8) -> Pseudonym {
    Pseudonym::dangerous_from_bytes([i; 32])
}

#[test]
fn caps_events_per_pseudonym_per_window() {
    let mut b = ContributionBounder::new(ContributionLimits::new(3, 10).unwrap());
    let got: Vec<Admission> = (0..5).map(|_| b.admit(&who(1), &"gate")).collect();
    assert_eq!(&got[..3], &[Admission::Admitted; 3]);
    assert_eq!(&got[3..], &[Admission::DroppedEventCap; 2]);
    // Another pseudonym has its own allowance.
    assert_eq!(b.admit(&who(2), &"gate"), Admission::Admitted);
    assert_eq!(
        b.stats(),
        BoundingStats {
            admitted: 4,
            dropped_event_cap: 2,
            dropped_zone_cap: 0
        }
    );
    assert_eq!(b.contributors(), 2);
}

#[test]
fn caps_distinct_zones_per_pseudonym() {
    let mut b = ContributionBounder::new(ContributionLimits::new(10, 2).unwrap());
    assert_eq!(b.admit(&who(1), &"a"), Admission::Admitted);
    assert_eq!(b.admit(&who(1), &"b"), Admission::Admitted);
    assert_eq!(b.admit(&who(1), &"c"), Admission::DroppedZoneCap);
    // Known zones stay open.
    assert_eq!(b.admit(&who(1), &"a"), Admission::Admitted);
    assert_eq!(b.stats().dropped(), 1);
}

#[test]
fn a_new_window_forgets_everyone() {
    let mut b = ContributionBounder::new(ContributionLimits::new(1, 1).unwrap());
    assert_eq!(b.admit(&who(1), &1u32), Admission::Admitted);
    assert_eq!(b.admit(&who(1), &1u32), Admission::DroppedEventCap);
    let closed = b.start_window();
    assert_eq!((closed.admitted, closed.dropped()), (1, 1));
    assert_eq!(b.stats(), BoundingStats::default());
    assert_eq!(b.admit(&who(1), &2u32), Admission::Admitted);
}

#[test]
fn per_zone_counts_have_the_declared_sensitivity() {
    // Whatever one pseudonym sends, its admitted events touch <= max_zones
    // zones and number <= max_events_per_window.
    let limits = ContributionLimits::new(4, 2).unwrap();
    let mut b = ContributionBounder::new(limits);
    let mut per_zone = std::collections::HashMap::new();
    for i in 0..100u32 {
        let zone = i % 7;
        if b.admit(&who(9), &zone) == Admission::Admitted {
            *per_zone.entry(zone).or_insert(0u32) += 1;
        }
    }
    assert!(per_zone.len() <= 2);
    assert_eq!(per_zone.values().sum::<u32>(), 4);
}

#[test]
fn zero_limits_are_refused() {
    assert!(ContributionLimits::new(0, 1).is_err());
    assert!(ContributionLimits::new(1, 0).is_err());
}

#[test]
fn zone_cap_counts_every_zone_touched() {
    // Up to 3 zones: the first (held inline) and two more, in any order.
    let mut b = ContributionBounder::new(ContributionLimits::new(10, 3).unwrap());
    for zone in ["a", "b", "a", "c", "b"] {
        assert_eq!(b.admit(&who(1), &zone), Admission::Admitted, "{zone}");
    }
    assert_eq!(b.admit(&who(1), &"d"), Admission::DroppedZoneCap);
    for zone in ["c", "b", "a"] {
        assert_eq!(b.admit(&who(1), &zone), Admission::Admitted, "{zone}");
    }
    // 8 admitted, the cap of 10 events still applies across zones.
    assert_eq!(b.admit(&who(1), &"a"), Admission::Admitted);
    assert_eq!(b.admit(&who(1), &"c"), Admission::Admitted);
    assert_eq!(b.admit(&who(1), &"b"), Admission::DroppedEventCap);
    assert_eq!(b.admit(&who(1), &"d"), Admission::DroppedEventCap);
    assert_eq!(
        b.stats(),
        BoundingStats {
            admitted: 10,
            dropped_event_cap: 2,
            dropped_zone_cap: 1
        }
    );
    assert_eq!(b.contributors(), 1);
}

proptest::proptest! {
    /// The bounder decides every event as the plain rule does: drop once
    /// the pseudonym has `max_events` admitted, or when the event is in a
    /// zone beyond its first `max_zones`.
    #[test]
    fn admissions_follow_the_plain_rule(
        max_events in 1u32..6,
        max_zones in 1u32..4,
        events in proptest::collection::vec((0u8..5, 0u8..6), 0..300),
    ) {
        let mut b = ContributionBounder::new(ContributionLimits::new(max_events, max_zones).unwrap());
        let mut model: std::collections::HashMap<u8, (u32, Vec<u8>)> = Default::default();
        for (person, zone) in events {
            let (n, zones) = model.entry(person).or_default();
            let want = if *n >= max_events {
                Admission::DroppedEventCap
            } else if !zones.contains(&zone) && zones.len() >= max_zones as usize {
                Admission::DroppedZoneCap
            } else {
                if !zones.contains(&zone) {
                    zones.push(zone);
                }
                *n += 1;
                Admission::Admitted
            };
            proptest::prop_assert_eq!(b.admit(&who(person), &zone), want);
        }
        proptest::prop_assert_eq!(b.contributors(), model.len());
    }
}
