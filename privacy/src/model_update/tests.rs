use super::*;

/// Independent (epsilon, delta) of rho-zCDP: the Canonne-Kamath-Steinke
/// bound eps = min over alpha > 1 of
/// rho*alpha + (ln(1/delta) + (alpha-1) ln(1-1/alpha) - ln(alpha)) / (alpha-1),
/// minimised by a fine grid then golden-section search (no OpenDP).
fn cks_epsilon(rho: f64, delta: f64) -> f64 {
    let f = |a: f64| {
        rho * a + ((1.0 / delta).ln() + (a - 1.0) * (1.0 - 1.0 / a).ln() - a.ln()) / (a - 1.0)
    };
    let mut best = (f64::INFINITY, 1.0);
    let mut a = 1.0001;
    while a < 1e4 {
        let v = f(a);
        if v < best.0 {
            best = (v, a);
        }
        a *= 1.001;
    }
    let (mut lo, mut hi) = (best.1 / 1.002, best.1 * 1.002);
    for _ in 0..200 {
        let m1 = lo + (hi - lo) / 3.0;
        let m2 = hi - (hi - lo) / 3.0;
        if f(m1) < f(m2) {
            hi = m2;
        } else {
            lo = m1;
        }
    }
    f((lo + hi) / 2.0).max(0.0)
}

#[test]
fn parameters_are_validated() {
    assert!(RoundPrivacy::new(0.0, 1.0, 3).is_err());
    assert!(RoundPrivacy::new(1.0, 0.0, 3).is_err());
    assert!(RoundPrivacy::new(1.0, f64::NAN, 3).is_err());
    assert!(RoundPrivacy::new(1.0, 1.0, 0).is_err());
    let p = RoundPrivacy::new(2.0, 1.5, 4).unwrap();
    assert!((p.node_sigma() - 1.5).abs() < 1e-12);
}

#[test]
fn round_rho_is_one_over_two_z_squared() {
    for (c, z, m) in [(1.0, 1.0, 3), (0.5, 2.0, 10), (3.0, 0.7, 1)] {
        let p = RoundPrivacy::new(c, z, m).unwrap();
        let rho = p.round_rho().unwrap().get();
        let want = 1.0 / (2.0 * z * z);
        assert!(((rho - want) / want).abs() < 1e-9, "{rho} vs {want}");
        let node = p.node_rho().unwrap().get();
        let want = f64::from(m) / (2.0 * z * z);
        assert!(((node - want) / want).abs() < 1e-9, "{node} vs {want}");
    }
}

#[test]
fn clipping_bounds_the_norm_and_refuses_nan() {
    let mut v = vec![3.0f32, 4.0];
    let before = clip_l2(&mut v, 1.0).unwrap();
    assert!((before - 5.0).abs() < 1e-9);
    assert!(l2_norm(&v) <= 1.0);
    assert!((l2_norm(&v) - 1.0).abs() < 1e-5);
    let mut small = vec![0.1f32, 0.2];
    clip_l2(&mut small, 1.0).unwrap();
    assert_eq!(small, vec![0.1, 0.2]);
    let mut bad = vec![1.0f32, f32::NAN];
    assert!(clip_l2(&mut bad, 1.0).is_err());
    assert!(
        privatize_update(
            vec![f32::INFINITY],
            &RoundPrivacy::new(1.0, 1.0, 1).unwrap()
        )
        .is_err()
    );
}

#[test]
fn noise_has_the_node_share_standard_deviation() {
    // sigma_node = 2 * 1 / sqrt(4) = 1. 20_000 draws: the sample variance of
    // a N(0, 1) has sd sqrt(2/n) = 0.01; allow 6 sd (failure prob ~1e-9).
    let p = RoundPrivacy::new(1.0, 2.0, 4).unwrap();
    let n = 20_000;
    let out = privatize_update(vec![0.0; n], &p).unwrap();
    let v = out.values();
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / (n as f64 - 1.0);
    assert!(mean.abs() < 6.0 / (n as f64).sqrt(), "mean {mean}");
    assert!((var - 1.0).abs() < 0.06, "variance {var}");
    // Negative control: a share with a quarter of the variance fails the same check.
    let weak = RoundPrivacy::new(1.0, 1.0, 4).unwrap();
    let w = privatize_update(vec![0.0; n], &weak).unwrap();
    let var_w = w
        .values()
        .iter()
        .map(|&x| f64::from(x).powi(2))
        .sum::<f64>()
        / n as f64;
    assert!(
        (var_w - 1.0).abs() >= 0.06,
        "negative control passed: {var_w}"
    );
}

#[test]
fn split_noise_has_the_node_share_standard_deviation_in_every_chunk() {
    // The production split over 3 threads: sigma_node = 1; each chunk of
    // 10k draws has a sample variance with sd sqrt(2 / 10k) = 1.4%; allow
    // 6 sd (failure probability ~1e-9).
    let p = RoundPrivacy::new(1.0, 2.0, 4).unwrap();
    let n = 30_000;
    let xs: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let out = crate::noise::invoke_split(&xs, 3, || gaussian(p.node_sigma())).unwrap();
    assert_eq!(out.len(), n);
    let zs: Vec<f64> = out
        .iter()
        .zip(&xs)
        .map(|(o, x)| f64::from(*o) - f64::from(*x))
        .collect();
    assert!(zs.iter().all(|z| z.abs() < 50.0), "outputs out of order");
    for (i, chunk) in zs.chunks(10_000).enumerate() {
        let var = chunk.iter().map(|z| z * z).sum::<f64>() / chunk.len() as f64;
        assert!((var - 1.0).abs() < 0.085, "chunk {i}: variance {var}");
    }
    // A bad sigma is refused with OpenDP's reason, not a panic.
    let e = crate::noise::invoke_split(&xs, 3, || gaussian(-1.0)).unwrap_err();
    assert!(e.to_string().contains("scale"), "{e}");
}

#[test]
fn accumulated_epsilon_matches_an_independent_accountant() {
    let p = RoundPrivacy::new(1.0, 1.2, 3).unwrap();
    let mut acc = ModelPrivacy::initial();
    for _ in 0..5 {
        acc = acc.after_round(&p).unwrap();
    }
    let rho = 5.0 / (2.0 * 1.2 * 1.2);
    assert!((acc.rho - rho).abs() < 1e-9);
    let eps = acc.epsilon(1e-6).unwrap();
    let indep = cks_epsilon(rho, 1e-6);
    assert!(eps >= indep - 1e-6, "OpenDP {eps} below the bound {indep}");
    assert!(
        (eps - indep).abs() / indep < 1e-3,
        "OpenDP {eps} vs independent {indep}"
    );
    // And the looser Bun-Steinke bound is above both.
    assert!(rho + 2.0 * (rho * (1e6f64).ln()).sqrt() >= eps);
}
