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

/// Mean of z^2 over `zs` (the noise is centred, so this estimates its variance).
fn mean_square(zs: &[i64]) -> f64 {
    zs.iter().map(|&z| (z as f64).powi(2)).sum::<f64>() / zs.len() as f64
}

#[test]
fn split_noise_keeps_length_order_and_distribution() {
    // Four threads whatever this machine has, over an uneven length.
    let n = 40_001;
    let sigma = 3.5;
    let xs: Vec<i64> = (0..n as i64).map(|i| i * 1_000).collect();
    let out = invoke_split(&xs, 4, || gaussian_vector(sigma)).unwrap();
    assert_eq!(out.len(), n);
    let zs: Vec<i64> = out.iter().zip(&xs).map(|(o, x)| o - x).collect();
    // |noise| >= 500 at sigma 3.5 has probability far below 1e-100, so every
    // output sits next to its own input: the chunks came back in order.
    assert!(zs.iter().all(|z| z.abs() < 500), "outputs out of order");
    ks_dkw(&zs, discrete_gaussian_cdf(sigma), ALPHA).unwrap();
    // Each thread's chunk has the full variance (sigma^2 up to e^-(2 pi^2
    // sigma^2) for the discrete Gaussian): the sample variance of 10k draws
    // has sd sqrt(2 / 10k) = 1.4%; allow 6 sd (failure probability ~1e-9).
    for (i, chunk) in zs.chunks(n.div_ceil(4)).enumerate() {
        let v = mean_square(chunk) / (sigma * sigma);
        assert!(
            (v - 1.0).abs() < 6.0 * (2.0 / chunk.len() as f64).sqrt(),
            "chunk {i}: variance ratio {v}"
        );
    }
    // Negative control: a split with half the sigma fails the same test.
    let weak = invoke_split(&vec![0; n], 4, || gaussian_vector(sigma / 2.0)).unwrap();
    assert!(ks_dkw(&weak, discrete_gaussian_cdf(sigma), ALPHA).is_err());
}

#[test]
fn split_laplace_noise_matches_its_pmf() {
    let out = invoke_split(&vec![0; 30_000], 3, || laplace_vector(3.5)).unwrap();
    assert_eq!(out.len(), 30_000);
    ks_dkw(&out, discrete_laplace_cdf(3.5), ALPHA).unwrap();
}

#[test]
fn split_noise_names_what_was_wrong() {
    let zeros = vec![0i64; 10_000];
    let e = invoke_split(&zeros, 3, || gaussian_vector(-1.0)).unwrap_err();
    assert!(matches!(e, PrivacyError::OpenDp(_)), "{e:?}");
    assert!(e.to_string().contains("scale"), "{e}");
    let e = invoke_split(&zeros, 3, || -> Result<GaussianVector, _> {
        Err(PrivacyError::InvalidParameter {
            name: "rho",
            reason: "test".into(),
        })
    })
    .unwrap_err();
    assert!(e.to_string().contains("invalid rho"), "{e}");
}

#[test]
fn short_vectors_stay_on_one_thread() {
    assert_eq!(threads_for(0), 1);
    assert_eq!(threads_for(MIN_VALUES_PER_THREAD * 2 - 1), 1);
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    assert_eq!(threads_for(usize::MAX), cores);
    // One and zero values through the split path.
    assert_eq!(
        invoke_split(&[7], 4, || laplace_vector(1.0)).unwrap().len(),
        1
    );
    assert!(
        invoke_split(&[], 4, || laplace_vector(1.0))
            .unwrap()
            .is_empty()
    );
}
