use super::*;

fn hist(e: f64, d: f64, l0: u32, linf: u32) -> StabilityHistogram {
    StabilityHistogram::new(Epsilon::new(e).unwrap(), Delta::new(d).unwrap(), l0, linf).unwrap()
}

#[test]
fn threshold_follows_epsilon_and_delta() {
    // b = 1, m = ceil(ln 1e6) = 14.
    let h = hist(1.0, 1e-6, 1, 1);
    assert_eq!((h.scale(), h.threshold()), (1.0, 15));
    // b = 3 x 2 / 0.5 = 12, m = ceil(12 ln(3 / 1e-5)) = ceil(151.36..) = 152.
    let h = hist(0.5, 1e-5, 3, 2);
    assert_eq!((h.scale(), h.threshold()), (12.0, 154));
    assert_eq!(
        h.cost(),
        Cost::Approx {
            epsilon: Epsilon::new(0.5).unwrap(),
            delta: Delta::new(1e-5).unwrap()
        }
    );
    // The vector measurement's privacy map equals the epsilon part.
    let m = noise::laplace_vector(h.scale()).unwrap();
    assert_eq!(m.map(&6).unwrap(), 0.5);
}

#[test]
fn big_buckets_are_released_and_tiny_ones_suppressed() {
    let h = hist(1.0, 1e-6, 1, 1);
    let counts: BTreeMap<&str, i64> = [("gate-a", 500), ("gate-b", 1), ("stage", 80)].into();
    let out = h.release(&counts).unwrap();
    let keys: Vec<&str> = out.iter().map(|(k, _)| *k).collect();
    assert_eq!(keys, ["gate-a", "stage"]);
    let run = out[0].1.run().unwrap();
    for (_, p) in &out {
        assert_eq!(p.mechanism(), MechanismKind::StabilityHistogram);
        assert_eq!(p.cost(), h.cost());
        assert_eq!(p.run(), Some(run));
        assert_eq!(p.value().fract(), 0.0);
    }
}

#[test]
fn single_contributor_buckets_leak_with_probability_at_most_delta() {
    // delta = 0.01 so the rate is measurable: P[release] <= 0.01 (exactly
    // e^-5 / (1 + e^-1) = 0.0049 here); 20 000 buckets expect ~99.
    let h = hist(1.0, 0.01, 1, 1);
    let counts: BTreeMap<u32, i64> = (0..20_000).map(|k| (k, 1)).collect();
    let released = h.release(&counts).unwrap().len();
    assert!(
        released < 200,
        "{released} of 20000 single-contributor buckets released"
    );
}

#[test]
fn bad_parameters_are_refused() {
    let e = Epsilon::new(1.0).unwrap();
    assert!(StabilityHistogram::new(e, Delta::new(0.0).unwrap(), 1, 1).is_err());
    assert!(StabilityHistogram::new(e, Delta::new(1e-6).unwrap(), 0, 1).is_err());
    assert!(StabilityHistogram::new(e, Delta::new(1e-6).unwrap(), 1000, 1001).is_err());
}
