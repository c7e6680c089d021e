use super::*;
use crate::test_stats::{ALPHA, discrete_gaussian_cdf, discrete_laplace_cdf, ks_dkw};

const N: usize = 100_000;
const SCALES: [f64; 3] = [1.0, 3.5, 12.0];

fn laplace_samples(scale: f64) -> Vec<i64> {
    laplace_vector(scale).unwrap().invoke(&vec![0; N]).unwrap()
}

fn gaussian_samples(scale: f64) -> Vec<i64> {
    gaussian_vector(scale).unwrap().invoke(&vec![0; N]).unwrap()
}

#[test]
fn discrete_laplace_matches_its_pmf() {
    for b in SCALES {
        let d = ks_dkw(&laplace_samples(b), discrete_laplace_cdf(b), ALPHA)
            .unwrap_or_else(|e| panic!("scale {b}: {e}"));
        println!("discrete Laplace b = {b}: KS = {d:.5}");
    }
}

#[test]
fn discrete_laplace_test_rejects_too_little_noise() {
    for b in SCALES {
        let r = ks_dkw(&laplace_samples(b / 2.0), discrete_laplace_cdf(b), ALPHA);
        assert!(r.is_err(), "half-scale samples passed as scale {b}: {r:?}");
    }
}

#[test]
fn discrete_gaussian_matches_its_pmf() {
    for s in SCALES {
        let d = ks_dkw(&gaussian_samples(s), discrete_gaussian_cdf(s), ALPHA)
            .unwrap_or_else(|e| panic!("sigma {s}: {e}"));
        println!("discrete Gaussian sigma = {s}: KS = {d:.5}");
    }
}

#[test]
fn discrete_gaussian_test_rejects_too_little_noise() {
    for s in SCALES {
        let r = ks_dkw(&gaussian_samples(s / 2.0), discrete_gaussian_cdf(s), ALPHA);
        assert!(r.is_err(), "half-sigma samples passed as sigma {s}: {r:?}");
    }
}

#[test]
fn scalar_samplers_are_the_same_distribution() {
    // The scalar path (used by count releases) over 20k draws.
    let m = laplace_scalar(3.5).unwrap();
    let xs: Vec<i64> = (0..20_000).map(|_| m.invoke(&0).unwrap()).collect();
    ks_dkw(&xs, discrete_laplace_cdf(3.5), ALPHA).unwrap();
    let m = gaussian_scalar(3.5).unwrap();
    let xs: Vec<i64> = (0..20_000).map(|_| m.invoke(&0).unwrap()).collect();
    ks_dkw(&xs, discrete_gaussian_cdf(3.5), ALPHA).unwrap();
}

#[test]
fn privacy_maps_are_exact() {
    // epsilon = sensitivity / b.
    assert_eq!(laplace_scalar(4.0).unwrap().map(&2).unwrap(), 0.5);
    assert_eq!(laplace_vector(4.0).unwrap().map(&2).unwrap(), 0.5);
    // rho = (sensitivity / sigma)^2 / 2.
    assert_eq!(gaussian_scalar(2.0).unwrap().map(&2).unwrap(), 0.5);
    assert_eq!(gaussian_vector(2.0).unwrap().map(&1).unwrap(), 0.125);
}

#[test]
fn calibration_gives_the_textbook_scale_when_exact() {
    assert_eq!(laplace_scale(2, 0.5).unwrap(), 4.0);
    assert_eq!(gaussian_scale(2, 0.5).unwrap(), 2.0);
}

#[test]
fn calibration_never_undercharges() {
    for (d, e) in [(1, 0.1), (3, 0.3), (7, 1.1), (1, 1e-3), (1000, 0.7)] {
        let s = laplace_scale(d, e).unwrap();
        assert!(laplace_scalar(s).unwrap().map(&d).unwrap() <= e);
        let s = gaussian_scale(d, e).unwrap();
        assert!(gaussian_scalar(s).unwrap().map(&d).unwrap() <= e);
    }
}

#[test]
fn calibration_refuses_nonsense() {
    assert!(laplace_scale(1, 0.0).is_err());
    assert!(calibrate("x", f64::INFINITY, 1.0, |_| Ok(0.0)).is_err());
    assert!(calibrate("x", 1.0, 1.0, |_| Ok(2.0)).is_err());
}
