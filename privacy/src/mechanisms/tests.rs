use super::*;

#[test]
fn laplace_count_reports_its_scale_and_cost() {
    let eps = Epsilon::new(0.5).unwrap();
    let r = count_laplace(100, 2, eps).unwrap();
    assert_eq!(r.scale(), 4.0);
    assert_eq!(r.cost(), Cost::Pure(eps));
    assert_eq!(r.mechanism(), MechanismKind::DiscreteLaplace);
    assert_eq!(r.value().fract(), 0.0);
    assert_eq!(r.run(), None);
    // The privacy map of the measurement that was used equals the cost.
    assert_eq!(
        noise::laplace_scalar(r.scale()).unwrap().map(&2).unwrap(),
        0.5
    );
}

#[test]
fn gaussian_count_reports_its_scale_and_cost() {
    let rho = Rho::new(0.5).unwrap();
    let r = count_gaussian(100, 2, rho).unwrap();
    assert_eq!(r.scale(), 2.0);
    assert_eq!(r.cost(), Cost::Zcdp(rho));
    assert_eq!(r.mechanism(), MechanismKind::DiscreteGaussian);
    assert_eq!(r.value().fract(), 0.0);
    assert_eq!(
        noise::gaussian_scalar(r.scale()).unwrap().map(&2).unwrap(),
        0.5
    );
}

#[test]
fn zero_or_huge_sensitivity_is_refused() {
    let e = Epsilon::new(1.0).unwrap();
    assert!(count_laplace(1, 0, e).is_err());
    assert!(count_laplace(1, MAX_SENSITIVITY + 1, e).is_err());
    assert!(count_gaussian(1, 0, Rho::new(1.0).unwrap()).is_err());
}

#[test]
fn non_personal_rejects_nan() {
    assert!(non_personal(f64::NAN, "environment.co2_ppm").is_err());
    assert!(non_personal(f64::INFINITY, "environment.co2_ppm").is_err());
    assert!(non_personal(1.0, "").is_err());
    let r = non_personal(412.0, "environment.co2_ppm").unwrap();
    assert_eq!((r.value(), r.cost()), (412.0, Cost::Free));
}
