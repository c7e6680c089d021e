//! Calibrated OpenDP noise measurements over integers: the only place this
//! crate builds one. Every mechanism draws its noise through these, so noise
//! always comes from OpenDP's exact samplers (discrete Laplace and discrete
//! Gaussian, Canonne-Kamath-Steinke 2020) and never from `rand`.
//!
//! OpenDP's `Measurement` is neither `Send` nor `Sync`, so stateful
//! mechanisms keep the calibrated *scale* and rebuild the measurement when
//! they draw; building one costs microseconds.

use opendp::{
    core::Measurement,
    domains::{AtomDomain, VectorDomain},
    measurements::{make_gaussian, make_laplace},
    measures::{MaxDivergence, ZeroConcentratedDivergence},
    metrics::{AbsoluteDistance, L1Distance, L2Distance},
};

use crate::PrivacyError;

/// Discrete Laplace on one integer.
pub(crate) type LaplaceScalar =
    Measurement<AtomDomain<i64>, AbsoluteDistance<i64>, MaxDivergence, i64>;
/// Discrete Gaussian on one integer.
pub(crate) type GaussianScalar =
    Measurement<AtomDomain<i64>, AbsoluteDistance<i64>, ZeroConcentratedDivergence, i64>;
/// Discrete Laplace on each entry of an integer vector (L1 sensitivity).
pub(crate) type LaplaceVector =
    Measurement<VectorDomain<AtomDomain<i64>>, L1Distance<i64>, MaxDivergence, Vec<i64>>;
/// Discrete Gaussian on each entry of an integer vector (L2 sensitivity).
pub(crate) type GaussianVector = Measurement<
    VectorDomain<AtomDomain<i64>>,
    L2Distance<i64>,
    ZeroConcentratedDivergence,
    Vec<i64>,
>;

pub(crate) fn laplace_scalar(scale: f64) -> Result<LaplaceScalar, PrivacyError> {
    Ok(make_laplace(
        AtomDomain::<i64>::default(),
        AbsoluteDistance::<i64>::default(),
        scale,
        None,
    )?)
}

pub(crate) fn gaussian_scalar(scale: f64) -> Result<GaussianScalar, PrivacyError> {
    Ok(make_gaussian(
        AtomDomain::<i64>::default(),
        AbsoluteDistance::<i64>::default(),
        scale,
        None,
    )?)
}

pub(crate) fn laplace_vector(scale: f64) -> Result<LaplaceVector, PrivacyError> {
    Ok(make_laplace(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L1Distance::<i64>::default(),
        scale,
        None,
    )?)
}

pub(crate) fn gaussian_vector(scale: f64) -> Result<GaussianVector, PrivacyError> {
    Ok(make_gaussian(
        VectorDomain::new(AtomDomain::<i64>::default()),
        L2Distance::<i64>::default(),
        scale,
        None,
    )?)
}

/// Finds the smallest scale at or just above `ideal` whose OpenDP privacy
/// cost (`cost_of(scale)`, evaluated with OpenDP's exact rational privacy map)
/// is at most `budget`. The ideal scale is computed in floating point and may
/// round down by an ulp; stepping up to the next float fixes that, so the
/// charged budget always covers the real cost.
pub(crate) fn calibrate(
    name: &'static str,
    ideal: f64,
    budget: f64,
    cost_of: impl Fn(f64) -> Result<f64, PrivacyError>,
) -> Result<f64, PrivacyError> {
    if !(ideal.is_finite() && ideal > 0.0) {
        return Err(PrivacyError::InvalidParameter {
            name,
            reason: format!("noise scale {ideal} is not finite and positive"),
        });
    }
    let mut scale = ideal;
    for _ in 0..8 {
        if cost_of(scale)? <= budget {
            return Ok(scale);
        }
        scale = scale.next_up();
    }
    Err(PrivacyError::InvalidParameter {
        name,
        reason: format!("no noise scale near {ideal} fits a budget of {budget}"),
    })
}

/// Laplace scale for an integer query with L1 `sensitivity` at `epsilon`.
pub(crate) fn laplace_scale(sensitivity: i64, epsilon: f64) -> Result<f64, PrivacyError> {
    calibrate("epsilon", sensitivity as f64 / epsilon, epsilon, |s| {
        Ok(laplace_scalar(s)?.map(&sensitivity)?)
    })
}

/// Gaussian sigma for an integer query with L2 `sensitivity` at `rho`.
pub(crate) fn gaussian_scale(sensitivity: i64, rho: f64) -> Result<f64, PrivacyError> {
    calibrate("rho", sensitivity as f64 / (2.0 * rho).sqrt(), rho, |s| {
        Ok(gaussian_scalar(s)?.map(&sensitivity)?)
    })
}

#[cfg(test)]
mod tests;
