//! Noise for inspection and bulk use: [`sample`] backs the node's
//! `veil-node privacy sample` command and goes through exactly the functions
//! the node releases counts with; the `noise_vec_*` functions noise a whole
//! vector with OpenDP vector measurements, one per core for long vectors.

use crate::{
    Epsilon, PrivacyError, Rho,
    mechanisms::{self, check_sensitivity},
    noise,
};

/// The count mechanism to draw from in [`sample`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SampleMechanism {
    /// [`mechanisms::count_laplace`] at this epsilon.
    DiscreteLaplace {
        /// epsilon.
        epsilon: Epsilon,
    },
    /// [`mechanisms::count_gaussian`] at this rho.
    DiscreteGaussian {
        /// rho.
        rho: Rho,
    },
}

/// Most samples one call returns.
pub const MAX_SAMPLES: usize = 10_000_000;

/// `n` independent releases of the count `value` through the production
/// path ([`mechanisms::count_laplace`] / [`mechanisms::count_gaussian`]),
/// for inspecting the noise distribution.
///
/// # Privacy
/// Each sample is a full release of `value` at the given cost; n samples of a
/// real count cost n times that. Use it on synthetic values only.
///
/// # Citations
/// As for the mechanism sampled.
pub fn sample(
    mechanism: SampleMechanism,
    sensitivity: u32,
    value: i64,
    n: usize,
) -> Result<Vec<i64>, PrivacyError> {
    if n > MAX_SAMPLES {
        return Err(PrivacyError::InvalidParameter {
            name: "n",
            reason: format!("at most {MAX_SAMPLES} samples per call, got {n}"),
        });
    }
    (0..n)
        .map(|_| {
            let released = match mechanism {
                SampleMechanism::DiscreteLaplace { epsilon } => {
                    mechanisms::count_laplace(value, sensitivity, epsilon)?
                }
                SampleMechanism::DiscreteGaussian { rho } => {
                    mechanisms::count_gaussian(value, sensitivity, rho)?
                }
            };
            // Counts are integers far below 2^53, so the f64 holds them
            // exactly; OpenDP saturates at the i64 range, and so does `as`.
            Ok(released.value() as i64)
        })
        .collect()
}

/// Adds discrete Gaussian noise to every entry of `values` with OpenDP's
/// vector measurement; a long vector is split over the cores, one
/// measurement per thread (same distribution, see `noise::invoke_split`).
///
/// # Privacy
/// `sensitivity` is the L2 sensitivity of the *whole vector* (e.g. 1 for a
/// histogram where each person is in one bucket once); sigma =
/// sensitivity / sqrt(2 rho); the vector release is rho-zCDP.
///
/// # Citations
/// Canonne, Kamath, Steinke. The Discrete Gaussian for Differential Privacy
/// (NeurIPS 2020).
pub fn noise_vec_discrete_gaussian(
    values: &[i64],
    sensitivity: u32,
    rho: Rho,
) -> Result<Vec<i64>, PrivacyError> {
    check_sensitivity(sensitivity)?;
    let scale = noise::gaussian_scale(i64::from(sensitivity), rho.get())?;
    noise::invoke_split(values, noise::threads_for(values.len()), || {
        noise::gaussian_vector(scale)
    })
}

/// Adds discrete Laplace noise to every entry of `values` with OpenDP's
/// vector measurement, split over the cores as
/// [`noise_vec_discrete_gaussian`] is.
///
/// # Privacy
/// `sensitivity` is the L1 sensitivity of the whole vector; scale b =
/// sensitivity / epsilon; the vector release is epsilon-DP.
///
/// # Citations
/// Ghosh, Roughgarden, Sundararajan (STOC 2009). Canonne, Kamath, Steinke
/// (NeurIPS 2020).
pub fn noise_vec_discrete_laplace(
    values: &[i64],
    sensitivity: u32,
    epsilon: Epsilon,
) -> Result<Vec<i64>, PrivacyError> {
    check_sensitivity(sensitivity)?;
    let scale = noise::laplace_scale(i64::from(sensitivity), epsilon.get())?;
    noise::invoke_split(values, noise::threads_for(values.len()), || {
        noise::laplace_vector(scale)
    })
}

#[cfg(test)]
mod tests;
