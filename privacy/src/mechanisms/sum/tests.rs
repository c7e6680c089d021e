use super::*;
use crate::noise;

fn eps(v: f64) -> Epsilon {
    Epsilon::new(v).unwrap()
}

#[test]
fn sensitivity_is_bound_times_contributions() {
    let b = BoundedSum::new(-3.0, 10.0, 4).unwrap();
    assert_eq!(b.granularity(), 2f64.powi(-16));
    assert_eq!(b.sensitivity(), 40.0);
    let b = BoundedSum::new(-7.5, 2.0, 1).unwrap();
    assert_eq!(b.sensitivity(), 7.5);
}

#[test]
fn laplace_sum_scale_and_privacy_map_are_exact() {
    let b = BoundedSum::new(0.0, 10.0, 4).unwrap();
    let r = sum_laplace(&[1.0, 2.0], &b, eps(0.5)).unwrap();
    assert_eq!(r.scale(), 80.0);
    assert_eq!(r.cost(), Cost::Pure(eps(0.5)));
    assert_eq!(r.mechanism(), MechanismKind::LaplaceSum);
    let units_scale = r.scale() / b.granularity();
    let m = noise::laplace_scalar(units_scale).unwrap();
    assert_eq!(m.map(&b.unit_sensitivity).unwrap(), 0.5);
}

#[test]
fn gaussian_sum_scale_and_privacy_map_are_exact() {
    let b = BoundedSum::new(0.0, 8.0, 1).unwrap();
    let rho = Rho::new(0.5).unwrap();
    let r = sum_gaussian(&[1.0], &b, rho).unwrap();
    assert_eq!(r.scale(), 8.0);
    assert_eq!(r.cost(), Cost::Zcdp(rho));
    assert_eq!(r.mechanism(), MechanismKind::GaussianSum);
    let m = noise::gaussian_scalar(r.scale() / b.granularity()).unwrap();
    assert_eq!(m.map(&b.unit_sensitivity).unwrap(), 0.5);
}

#[test]
fn values_are_clamped_to_the_bounds() {
    let b = BoundedSum::new(0.0, 10.0, 1).unwrap();
    // Scale 10 / 1e4 = 0.001: the clamped sum 10 + 0 + 3 = 13 shows through.
    let r = sum_laplace(&[100.0, -5.0, 3.0], &b, eps(1e4)).unwrap();
    assert!((r.value() - 13.0).abs() < 0.05, "{}", r.value());
    let r = sum_gaussian(&[1e9, -1e9, 3.0], &b, Rho::new(1e8).unwrap()).unwrap();
    assert!((r.value() - 13.0).abs() < 0.05, "{}", r.value());
}

#[test]
fn nan_and_inf_are_rejected_before_anything_else() {
    let b = BoundedSum::new(0.0, 10.0, 1).unwrap();
    let e = sum_laplace(&[1.0, f64::NAN], &b, eps(1.0)).unwrap_err();
    assert_eq!(
        e,
        PrivacyError::NonFinite {
            what: "bounded-sum input (NaN)"
        }
    );
    assert!(e.to_string().contains("NaN"));
    let e = sum_gaussian(&[f64::NEG_INFINITY], &b, Rho::new(1.0).unwrap()).unwrap_err();
    assert_eq!(
        e,
        PrivacyError::NonFinite {
            what: "bounded-sum input (infinite)"
        }
    );
    // Even when clamping would have "fixed" it.
    assert!(sum_laplace(&[f64::INFINITY], &b, eps(1.0)).is_err());
    assert!(mean_laplace(&[f64::NAN], &b, eps(1.0)).is_err());
}

#[test]
fn bad_bounds_are_refused() {
    assert!(BoundedSum::new(1.0, 0.0, 1).is_err());
    assert!(BoundedSum::new(f64::NAN, 1.0, 1).is_err());
    assert!(BoundedSum::new(0.0, f64::INFINITY, 1).is_err());
    assert!(BoundedSum::new(0.0, 0.0, 1).is_err());
    assert!(BoundedSum::new(0.0, 1e300, 1).is_err());
    assert!(BoundedSum::new(0.0, 1.0, 0).is_err());
}

#[test]
fn overflow_is_an_error_not_a_wrap() {
    assert_eq!(
        sum_units([i64::MAX, 1]).unwrap_err(),
        PrivacyError::Overflow {
            what: "bounded-sum accumulator"
        }
    );
    assert_eq!(
        sum_units([i64::MIN, -1]).unwrap_err().to_string(),
        "overflow in bounded-sum accumulator"
    );
    // The widest accepted bounds still give a finite release.
    let top = 2f64.powi(50);
    let b = BoundedSum::new(-top, top, 1_000_000).unwrap();
    let r = sum_laplace(&vec![top; 10_000], &b, eps(1.0)).unwrap();
    assert!(r.value().is_finite() && r.scale().is_finite());
}

#[test]
fn mean_is_noisy_sum_over_noisy_count() {
    let b = BoundedSum::new(0.0, 10.0, 2).unwrap();
    let values = vec![4.0; 1000];
    let m = mean_laplace(&values, &b, eps(1e3)).unwrap();
    assert_eq!(m.sum.cost(), Cost::Pure(eps(500.0)));
    assert_eq!(m.count.cost(), Cost::Pure(eps(500.0)));
    assert!((m.mean() - 4.0).abs() < 0.01, "{}", m.mean());
    let m = mean_gaussian(&values, &b, Rho::new(1e4).unwrap()).unwrap();
    assert_eq!(m.sum.cost(), Cost::Zcdp(Rho::new(5e3).unwrap()));
    assert!((m.mean() - 4.0).abs() < 0.01, "{}", m.mean());
    // No data: the mean stays within the bounds.
    let m = mean_laplace(&[], &b, eps(0.1)).unwrap();
    assert!((0.0..=10.0).contains(&m.mean()));
}
