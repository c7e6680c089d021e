//! DP mechanisms over OpenDP's measurements: counts, bounded sums and means,
//! thresholded histograms, sparse-vector alerts and continual-release
//! counters. Each mechanism documents its `# Privacy` (sensitivity, epsilon or
//! rho) and `# Citations`.
//!
//! Inputs must already be contribution-bounded ([`crate::bounds`]); the
//! sensitivities below are only true under that bound. Nothing here ever
//! releases a value that is not a [`Privatized`].

pub mod continual;
mod histogram;
mod sparse_vector;
mod sum;
mod tree_counter;

pub use continual::{
    Calibration, ContinualStream, Contribution, GAMMA, MAX_ABS_INCREMENT, MAX_EVENTS, MAX_HORIZON,
    StreamMechanism, StreamParams, StreamState, StreamStep,
};
pub use histogram::StabilityHistogram;
pub use sparse_vector::SparseVector;
pub use sum::{BoundedSum, NoisyMean, mean_gaussian, mean_laplace, sum_gaussian, sum_laplace};
pub use tree_counter::{TreeCounter, TreeNoise};

use crate::{Cost, Epsilon, MechanismKind, PrivacyError, Privatized, Rho, noise};

/// Releases an integer count with discrete Laplace noise.
///
/// # Privacy
/// Sensitivity `sensitivity` (the most one person can change the count, made
/// true by contribution bounding before this is called). Scale
/// b = sensitivity / epsilon (rounded up to the next float if needed); the
/// release is epsilon-DP, as OpenDP's privacy map confirms before any noise is
/// drawn.
///
/// # Citations
/// Ghosh, Roughgarden, Sundararajan. Universally Utility-Maximizing Privacy
/// Mechanisms (STOC 2009). Canonne, Kamath, Steinke. The Discrete Gaussian for
/// Differential Privacy (NeurIPS 2020), for the exact discrete Laplace sampler.
pub fn count_laplace(
    count: i64,
    sensitivity: u32,
    epsilon: Epsilon,
) -> Result<Privatized, PrivacyError> {
    check_sensitivity(sensitivity)?;
    let scale = noise::laplace_scale(i64::from(sensitivity), epsilon.get())?;
    let noisy = noise::laplace_scalar(scale)?.invoke(&count)?;
    Ok(Privatized::new(
        noisy as f64,
        MechanismKind::DiscreteLaplace,
        scale,
        Cost::Pure(epsilon),
    ))
}

/// Releases an integer count with discrete Gaussian noise.
///
/// # Privacy
/// Sensitivity `sensitivity`; sigma = sensitivity / sqrt(2 rho) (rounded up
/// to the next float if needed); the release is rho-zCDP, as OpenDP's privacy
/// map confirms before any noise is drawn.
///
/// # Citations
/// Canonne, Kamath, Steinke. The Discrete Gaussian for Differential Privacy
/// (NeurIPS 2020). Bun, Steinke. Concentrated Differential Privacy (TCC 2016).
pub fn count_gaussian(count: i64, sensitivity: u32, rho: Rho) -> Result<Privatized, PrivacyError> {
    check_sensitivity(sensitivity)?;
    let scale = noise::gaussian_scale(i64::from(sensitivity), rho.get())?;
    let noisy = noise::gaussian_scalar(scale)?.invoke(&count)?;
    Ok(Privatized::new(
        noisy as f64,
        MechanismKind::DiscreteGaussian,
        scale,
        Cost::Zcdp(rho),
    ))
}

/// Releases a value the loaded policy declares non-personal, without noise.
///
/// # Privacy
/// None: the caller asserts `declared_by_policy` is the policy key that
/// declares the field non-personal; the aggregator re-checks that claim and
/// audits it.
pub fn non_personal(value: f64, declared_by_policy: &str) -> Result<Privatized, PrivacyError> {
    if !value.is_finite() {
        return Err(PrivacyError::NonFinite {
            what: "non-personal value",
        });
    }
    if declared_by_policy.is_empty() {
        return Err(PrivacyError::InvalidParameter {
            name: "declared_by_policy",
            reason: "a non-personal release must name the policy declaration".into(),
        });
    }
    Ok(Privatized::new(
        value,
        MechanismKind::NonPersonal,
        0.0,
        Cost::Free,
    ))
}

/// Largest per-contributor sensitivity any mechanism here accepts.
pub(crate) const MAX_SENSITIVITY: u32 = 1_000_000;

pub(crate) fn check_sensitivity(s: u32) -> Result<(), PrivacyError> {
    if s == 0 || s > MAX_SENSITIVITY {
        return Err(PrivacyError::InvalidParameter {
            name: "sensitivity",
            reason: format!("must be in 1..={MAX_SENSITIVITY}, got {s}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
