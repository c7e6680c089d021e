//! The distributed discrete Gaussian (DDG) for secure aggregation: each node
//! adds integer noise of scale `sigma` drawn by OpenDP's exact discrete
//! Gaussian sampler, and the *sum* of `n` such vectors carries the round's
//! noise. This module draws the per-node noise and states the privacy of the
//! sum; the encoding (clip, scale, conditional rounding) and the modular
//! arithmetic live in `veil-secagg`.
//!
//! Nothing here draws from `rand`: noise comes only from OpenDP's
//! `make_gaussian` over `VectorDomain<AtomDomain<i64>>` with
//! `L2Distance<i64>` (the same measurement [`crate::noise`] builds for every
//! integer vector), split over the cores.
//!
//! # Citations
//! * Kairouz, Liu, Steinke. The Distributed Discrete Gaussian Mechanism for
//!   Federated Learning with Secure Aggregation (ICML 2021), Theorem 1.
//! * Canonne, Kamath, Steinke. The Discrete Gaussian for Differential
//!   Privacy (NeurIPS 2020).

use opendp::traits::{InfAdd, InfDiv, InfExp, InfMul, InfSqrt};

use crate::{PrivacyError, Rho, noise};

/// Most values one call to [`discrete_gaussian_noise`] draws.
pub const MAX_NOISE_LEN: usize = 1 << 28;

/// `len` independent draws of the discrete Gaussian `N_Z(0, sigma^2)`
/// (OpenDP's exact sampler; a long vector is split over the cores, one
/// measurement per thread, same distribution).
///
/// # Privacy
/// This is one node's *share* of the noise of a distributed mechanism; on its
/// own it protects nothing. See [`ddg_sum_rho`] for the cost of the sum.
pub fn discrete_gaussian_noise(len: usize, sigma: f64) -> Result<Vec<i64>, PrivacyError> {
    if len > MAX_NOISE_LEN {
        return Err(PrivacyError::InvalidParameter {
            name: "len",
            reason: format!("at most {MAX_NOISE_LEN} values per call, got {len}"),
        });
    }
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(PrivacyError::InvalidParameter {
            name: "sigma",
            reason: format!("must be finite and > 0, got {sigma}"),
        });
    }
    let zeros = vec![0i64; len];
    noise::invoke_split(&zeros, noise::threads_for(len), || {
        noise::gaussian_vector(sigma)
    })
}

/// zCDP cost (rounded up) of the sum of at least `n_min` and at most `n_max`
/// integer vectors of dimension `dim`, each with L2 norm at most `delta2`
/// and each carrying independent `N_Z(0, sigma^2)` noise per coordinate,
/// with respect to adding or removing one vector (the neighbouring relation
/// of [`crate::model_update::RoundPrivacy::round_rho`]).
///
/// # Privacy
/// Kairouz-Liu-Steinke 2021, Theorem 1: the sum of `n` such vectors is
/// `eps^2 / 2`-zCDP with
/// `eps = min( sqrt(delta2^2 / (n sigma^2) + tau d / 2),
///             delta1 / (sqrt(n) sigma) + tau sqrt(d) )`,
/// `delta1 = min(sqrt(d) delta2, delta2^2)` (an integer vector of L2 norm
/// `delta2` has L1 norm at most both), and
/// `tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1))`.
/// The first terms fall with `n` and `tau` grows with it, so this returns
/// the bound with `n = n_min` in the first terms and `n = n_max` in `tau`:
/// a valid bound for every number of contributors in `[n_min, n_max]`.
/// Requires `sigma >= 1/2` (the theorem's hypothesis). Every operation
/// rounds up (OpenDP's `Inf*` arithmetic).
pub fn ddg_sum_rho(
    delta2: f64,
    sigma: f64,
    n_min: u32,
    n_max: u32,
    dim: usize,
) -> Result<Rho, PrivacyError> {
    let bad = |name: &'static str, reason: String| PrivacyError::InvalidParameter { name, reason };
    if !(delta2.is_finite() && delta2 > 0.0) {
        return Err(bad(
            "delta2",
            format!("must be finite and > 0, got {delta2}"),
        ));
    }
    if !(sigma.is_finite() && sigma >= 0.5) {
        return Err(bad(
            "sigma",
            format!("must be finite and >= 1/2, got {sigma}"),
        ));
    }
    if n_min == 0 || n_max < n_min {
        return Err(bad(
            "n_min/n_max",
            format!("need 1 <= n_min <= n_max, got {n_min}, {n_max}"),
        ));
    }
    if dim == 0 {
        return Err(bad("dim", "must be at least 1".into()));
    }
    let d = dim as f64;
    let n = f64::from(n_min);
    // tau, each term rounded up: exp(-x) with x rounded *down* is an upper
    // bound, so compute x = 2 pi^2 sigma^2 k / (k + 1) rounding down by
    // taking the lower neighbour of the rounded-up value.
    let two_pi2_s2 = 2.0 * std::f64::consts::PI * std::f64::consts::PI * sigma * sigma;
    let mut tau = 0.0f64;
    for k in 1..n_max {
        let k = f64::from(k);
        let x = (two_pi2_s2 * k / (k + 1.0))
            .next_down()
            .next_down()
            .max(0.0);
        tau = tau.inf_add(&(-x).inf_exp()?)?;
    }
    let tau = tau.inf_mul(&10.0)?;
    let d2sq = delta2.inf_mul(&delta2)?;
    let n_s2 = (n * sigma * sigma).next_down().next_down();
    // rho1 = delta2^2 / (2 n sigma^2) + tau d / 4
    let rho1 = d2sq
        .inf_div(&n_s2.inf_mul(&2.0)?.next_down())?
        .inf_add(&tau.inf_mul(&d)?.inf_div(&4.0)?)?;
    // rho2 = (delta1 / (sqrt(n) sigma) + tau sqrt(d))^2 / 2
    let delta1 = d.inf_sqrt()?.inf_mul(&delta2)?.min(d2sq);
    let sqrt_n_s = (n.sqrt() * sigma).next_down().next_down();
    let e2 = delta1
        .inf_div(&sqrt_n_s)?
        .inf_add(&tau.inf_mul(&d.inf_sqrt()?)?)?;
    let rho2 = e2.inf_mul(&e2)?.inf_div(&2.0)?;
    Rho::new(rho1.min(rho2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_central_gaussian_when_tau_vanishes() {
        // sigma large: tau ~ 0, rho ~ delta2^2 / (2 n sigma^2).
        let rho = ddg_sum_rho(100.0, 50.0, 4, 100, 1000).unwrap().get();
        let central = 100.0f64 * 100.0 / (2.0 * 4.0 * 2500.0);
        assert!(
            rho >= central && rho < central * (1.0 + 1e-9),
            "{rho} vs {central}"
        );
    }

    #[test]
    fn small_sigma_pays_for_tau() {
        let loose = ddg_sum_rho(10.0, 0.5, 10, 10, 1000).unwrap().get();
        let central = 100.0 / (2.0 * 10.0 * 0.25);
        assert!(loose > central);
        assert!(ddg_sum_rho(10.0, 0.4, 10, 10, 10).is_err());
        assert!(ddg_sum_rho(10.0, 1.0, 10, 9, 10).is_err());
    }

    #[test]
    fn noise_has_the_requested_length_and_spread() {
        let v = discrete_gaussian_noise(4000, 3.0).unwrap();
        assert_eq!(v.len(), 4000);
        let var = v.iter().map(|&x| (x * x) as f64).sum::<f64>() / 4000.0;
        // Variance of N_Z(0, 9) is just under 9; 4000 samples: +-20% is > 6 sd.
        assert!((7.0..11.0).contains(&var), "variance {var}");
        assert!(discrete_gaussian_noise(1, 0.0).is_err());
    }
}
