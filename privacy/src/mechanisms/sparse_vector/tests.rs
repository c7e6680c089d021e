use super::*;

fn svt(threshold: i64, cap: u32) -> SparseVector {
    SparseVector::new(threshold, 1, Epsilon::new(1.0).unwrap(), cap).unwrap()
}

#[test]
fn privacy_maps_split_the_per_alert_epsilon() {
    let s = svt(10, 3);
    let (t, q) = s.scales();
    assert_eq!((t, q), (2.0, 4.0));
    assert_eq!(noise::laplace_scalar(t).unwrap().map(&1).unwrap(), 0.5);
    assert_eq!(noise::laplace_scalar(q).unwrap().map(&2).unwrap(), 0.5);
    assert_eq!(s.cost(), Cost::Pure(Epsilon::new(3.0).unwrap()));
}

#[test]
fn no_alerts_far_below_the_threshold() {
    let mut s = svt(1000, 3);
    for _ in 0..2000 {
        assert_eq!(s.query(0).unwrap(), None);
    }
    assert_eq!(s.alerts(), 0);
    // One segment open: its epsilon is in use even without an alert.
    assert_eq!(s.used_epsilon(), 1.0);
}

#[test]
fn alerts_far_above_the_threshold_until_the_cap() {
    let mut s = svt(10, 3);
    let mut runs = Vec::new();
    for _ in 0..3 {
        let a = s.query(2000).unwrap().unwrap();
        assert_eq!(a.mechanism(), MechanismKind::SparseVectorAlert);
        assert_eq!(a.value(), 1.0);
        assert_eq!(a.cost(), s.cost());
        runs.push(a.run().unwrap());
    }
    assert!(runs.iter().all(|r| *r == runs[0]));
    assert!(s.is_halted());
    assert_eq!(s.used_epsilon(), 3.0);
    assert!(matches!(s.query(2000), Err(PrivacyError::Halted { .. })));
    assert!(matches!(s.query(0), Err(PrivacyError::Halted { .. })));
}

#[test]
fn a_crossing_stream_alerts_after_it_crosses() {
    let mut s = svt(100, 1);
    let mut first = None;
    for (i, v) in (0..400).map(|i| (i, i * 2)) {
        if s.query(v).unwrap().is_some() {
            first = Some(i);
            break;
        }
    }
    // Threshold 100 is reached at i = 50; noise scale 2 + 4 makes a gap of
    // 100 essentially impossible either way.
    let i = first.unwrap();
    assert!((20..90).contains(&i), "alert at {i}");
}

#[test]
fn bad_parameters_are_refused() {
    let e = Epsilon::new(1.0).unwrap();
    assert!(SparseVector::new(0, 1, e, 0).is_err());
    assert!(SparseVector::new(0, 0, e, 1).is_err());
    assert!(SparseVector::new(0, 1, Epsilon::new(f64::MAX).unwrap(), 4).is_err());
}

#[test]
fn stateful_mechanisms_can_live_in_async_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SparseVector>();
    send_sync::<super::super::TreeCounter>();
}
