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
