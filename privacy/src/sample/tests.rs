use super::*;
use crate::test_stats::{ALPHA, discrete_gaussian_cdf, discrete_laplace_cdf, ks_dkw};

#[test]
fn sample_goes_through_the_count_path_and_has_its_distribution() {
    // epsilon = 0.5, sensitivity 1: b = 2, centred on the value.
    let mech = SampleMechanism::DiscreteLaplace {
        epsilon: Epsilon::new(0.5).unwrap(),
    };
    let xs = sample(mech, 1, 40, 100_000).unwrap();
    let cdf = discrete_laplace_cdf(2.0);
    ks_dkw(&xs, |x| cdf(x - 40), ALPHA).unwrap();
    // rho = 0.125, sensitivity 1: sigma = 2.
    let mech = SampleMechanism::DiscreteGaussian {
        rho: Rho::new(0.125).unwrap(),
    };
    let xs = sample(mech, 1, -7, 100_000).unwrap();
    let cdf = discrete_gaussian_cdf(2.0);
    ks_dkw(&xs, |x| cdf(x + 7), ALPHA).unwrap();
}

#[test]
fn sample_refuses_what_the_count_path_refuses() {
    let mech = SampleMechanism::DiscreteLaplace {
        epsilon: Epsilon::new(0.5).unwrap(),
    };
    assert!(sample(mech, 0, 1, 10).is_err());
    assert!(sample(mech, 1, 1, MAX_SAMPLES + 1).is_err());
    assert_eq!(sample(mech, 1, 1, 0).unwrap(), Vec::<i64>::new());
}

#[test]
fn bulk_noise_has_the_right_distribution() {
    // sigma = 3 / sqrt(2 x 0.5) = 3.
    let zeros = vec![0; 100_000];
    let xs = noise_vec_discrete_gaussian(&zeros, 3, Rho::new(0.5).unwrap()).unwrap();
    ks_dkw(&xs, discrete_gaussian_cdf(3.0), ALPHA).unwrap();
    let xs = noise_vec_discrete_laplace(&zeros, 3, Epsilon::new(1.0).unwrap()).unwrap();
    ks_dkw(&xs, discrete_laplace_cdf(3.0), ALPHA).unwrap();
    // The same test rejects bulk noise at the wrong scale.
    assert!(ks_dkw(&xs, discrete_laplace_cdf(6.0), ALPHA).is_err());
}

#[test]
fn bulk_noise_keeps_order_and_length() {
    let values: Vec<i64> = (0..1000).map(|i| i * 1_000_000).collect();
    let out = noise_vec_discrete_gaussian(&values, 1, Rho::new(2.0).unwrap()).unwrap();
    assert_eq!(out.len(), values.len());
    assert!(values.iter().zip(&out).all(|(v, o)| (v - o).abs() < 100));
}
