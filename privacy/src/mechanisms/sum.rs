//! Bounded sums and means of real values: reject NaN/Inf, clamp to declared
//! bounds, round onto a fixed power-of-two grid, sum exactly in integers, then
//! add discrete Laplace or discrete Gaussian noise on that grid.

use crate::{Cost, Epsilon, MechanismKind, PrivacyError, Privatized, Rho, noise};

/// Grid resolution: the larger bound spans 2^20 grid steps, so rounding moves
/// a value by at most 2^-21 of the bound (far below the noise).
const GRID_BITS: i32 = 20;
/// Accepted range for the larger absolute bound.
const MIN_ABS_BOUND: f64 = 1.0 / (1u64 << 30) as f64;
const MAX_ABS_BOUND: f64 = (1u64 << 50) as f64;

/// Declared bounds for a sum: every value is clamped to [`lo`, `hi`] and each
/// contributor adds at most `max_contributions` values (made true by
/// [`crate::bounds::ContributionBounder`] before this is used).
///
/// Values are rounded to the nearest multiple of a power-of-two grid step
/// `granularity()` (about max(|lo|, |hi|) / 2^20); sums are exact on that
/// grid.
///
/// [`lo`]: BoundedSum::lo
/// [`hi`]: BoundedSum::hi
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoundedSum {
    lo: f64,
    hi: f64,
    max_contributions: u32,
    granularity: f64,
    /// Largest |value| on the grid, in grid units.
    unit_bound: i64,
    /// Sensitivity in grid units: unit_bound x max_contributions.
    unit_sensitivity: i64,
}

impl BoundedSum {
    /// Validates the bounds: finite, `lo <= hi`, max(|lo|, |hi|) in
    /// [2^-30, 2^50], and `max_contributions` in 1..=1_000_000.
    pub fn new(lo: f64, hi: f64, max_contributions: u32) -> Result<Self, PrivacyError> {
        if !lo.is_finite() || !hi.is_finite() {
            return Err(PrivacyError::NonFinite { what: "sum bound" });
        }
        if lo > hi {
            return Err(PrivacyError::InvalidParameter {
                name: "bounds",
                reason: format!("lo ({lo}) must not exceed hi ({hi})"),
            });
        }
        super::check_sensitivity(max_contributions).map_err(|_| {
            PrivacyError::InvalidParameter {
                name: "max_contributions",
                reason: format!(
                    "must be in 1..={}, got {max_contributions}",
                    super::MAX_SENSITIVITY
                ),
            }
        })?;
        let max_abs = lo.abs().max(hi.abs());
        if !(MIN_ABS_BOUND..=MAX_ABS_BOUND).contains(&max_abs) {
            return Err(PrivacyError::InvalidParameter {
                name: "bounds",
                reason: format!("max(|lo|, |hi|) = {max_abs} is outside [2^-30, 2^50]"),
            });
        }
        // Power of two, so value / granularity is exact up to the rounding we
        // do on purpose. max_abs is in [2^-30, 2^50]: the exponent fits.
        let exp = max_abs.log2().ceil() as i32 - GRID_BITS;
        let granularity = 2f64.powi(exp);
        let unit_bound = to_units(lo, granularity)
            .abs()
            .max(to_units(hi, granularity).abs())
            .max(1);
        let unit_sensitivity =
            unit_bound
                .checked_mul(i64::from(max_contributions))
                .ok_or(PrivacyError::Overflow {
                    what: "sum sensitivity",
                })?;
        Ok(Self {
            lo,
            hi,
            max_contributions,
            granularity,
            unit_bound,
            unit_sensitivity,
        })
    }
    /// Lower clamping bound.
    pub fn lo(&self) -> f64 {
        self.lo
    }
    /// Upper clamping bound.
    pub fn hi(&self) -> f64 {
        self.hi
    }
    /// Most values one contributor may add.
    pub fn max_contributions(&self) -> u32 {
        self.max_contributions
    }
    /// Grid step values are rounded to (a power of two).
    pub fn granularity(&self) -> f64 {
        self.granularity
    }
    /// L1 (= L2, it is a scalar) sensitivity of the sum under adding or
    /// removing one contributor, in value units:
    /// max(|lo|, |hi|) (on the grid) x `max_contributions`.
    pub fn sensitivity(&self) -> f64 {
        self.unit_sensitivity as f64 * self.granularity
    }

    /// Rejects NaN/Inf first, then clamps, rounds to the grid and sums
    /// exactly. Returns the sum in grid units and the number of values.
    pub(crate) fn clamped_units(&self, values: &[f64]) -> Result<i64, PrivacyError> {
        for v in values {
            if v.is_nan() {
                return Err(PrivacyError::NonFinite {
                    what: "bounded-sum input (NaN)",
                });
            }
            if v.is_infinite() {
                return Err(PrivacyError::NonFinite {
                    what: "bounded-sum input (infinite)",
                });
            }
        }
        sum_units(
            values
                .iter()
                .map(|v| to_units(v.clamp(self.lo, self.hi), self.granularity)),
        )
    }

    fn release(&self, noisy_units: i64, scale_units: f64) -> Result<f64, PrivacyError> {
        let value = noisy_units as f64 * self.granularity;
        if !value.is_finite() || !(scale_units * self.granularity).is_finite() {
            return Err(PrivacyError::Overflow {
                what: "bounded-sum output",
            });
        }
        Ok(value)
    }
}

fn to_units(v: f64, granularity: f64) -> i64 {
    // |v / granularity| <= 2^21 by construction of the grid (v already
    // clamped), so the cast is exact after rounding.
    (v / granularity).round() as i64
}

/// Exact integer sum; refuses rather than wraps.
pub(crate) fn sum_units(units: impl IntoIterator<Item = i64>) -> Result<i64, PrivacyError> {
    units.into_iter().try_fold(0i64, |acc, u| {
        acc.checked_add(u).ok_or(PrivacyError::Overflow {
            what: "bounded-sum accumulator",
        })
    })
}

/// Releases the sum of `values` clamped to `bounds`, with discrete Laplace
/// noise on the bounds' grid.
///
/// NaN and infinite values are rejected before anything else (the whole call
/// fails with [`PrivacyError::NonFinite`]), then values are clamped to
/// [lo, hi] and rounded to the grid.
///
/// # Privacy
/// Sensitivity `bounds.sensitivity()` = max(|lo|, |hi|) x max_contributions
/// (adding or removing one contributor, whose values were bounded to
/// max_contributions upstream). Laplace scale b = sensitivity / epsilon; the
/// release is epsilon-DP (OpenDP's privacy map over the integer grid confirms
/// it before noise is drawn).
///
/// # Citations
/// Dwork, McSherry, Nissim, Smith. Calibrating Noise to Sensitivity in Private
/// Data Analysis (TCC 2006). Canonne, Kamath, Steinke. The Discrete Gaussian
/// for Differential Privacy (NeurIPS 2020). Clamping as in Google's
/// differential-privacy library (BoundedSum), Wilson et al., PETS 2020.
pub fn sum_laplace(
    values: &[f64],
    bounds: &BoundedSum,
    epsilon: Epsilon,
) -> Result<Privatized, PrivacyError> {
    let units = bounds.clamped_units(values)?;
    let scale = noise::laplace_scale(bounds.unit_sensitivity, epsilon.get())?;
    let noisy = noise::laplace_scalar(scale)?.invoke(&units)?;
    let value = bounds.release(noisy, scale)?;
    Ok(Privatized::new(
        value,
        MechanismKind::LaplaceSum,
        scale * bounds.granularity,
        Cost::Pure(epsilon),
    ))
}

/// Releases the sum of `values` clamped to `bounds`, with discrete Gaussian
/// noise on the bounds' grid. Input handling as in [`sum_laplace`].
///
/// # Privacy
/// Sensitivity `bounds.sensitivity()` (L2 = L1 for a scalar);
/// sigma = sensitivity / sqrt(2 rho); the release is rho-zCDP.
///
/// # Citations
/// Canonne, Kamath, Steinke. The Discrete Gaussian for Differential Privacy
/// (NeurIPS 2020). Bun, Steinke. Concentrated Differential Privacy (TCC 2016).
pub fn sum_gaussian(
    values: &[f64],
    bounds: &BoundedSum,
    rho: Rho,
) -> Result<Privatized, PrivacyError> {
    let units = bounds.clamped_units(values)?;
    let scale = noise::gaussian_scale(bounds.unit_sensitivity, rho.get())?;
    let noisy = noise::gaussian_scalar(scale)?.invoke(&units)?;
    let value = bounds.release(noisy, scale)?;
    Ok(Privatized::new(
        value,
        MechanismKind::GaussianSum,
        scale * bounds.granularity,
        Cost::Zcdp(rho),
    ))
}

/// A mean released as a noisy sum and a noisy count (both [`Privatized`]).
///
/// The mean itself is post-processing: [`NoisyMean::mean`] divides on the
/// node; across nodes, divide the sum of sums by the sum of counts instead
/// (better than averaging means).
#[derive(Debug, Clone, PartialEq)]
pub struct NoisyMean {
    /// The noisy clamped sum (half the budget).
    pub sum: Privatized,
    /// The noisy number of values (half the budget).
    pub count: Privatized,
    lo: f64,
    hi: f64,
}

impl NoisyMean {
    /// sum / max(count, 1), clamped to [lo, hi] (post-processing, free).
    pub fn mean(&self) -> f64 {
        (self.sum.value() / self.count.value().max(1.0)).clamp(self.lo, self.hi)
    }
}

/// Releases a mean as noisy sum / noisy count with discrete Laplace noise.
///
/// The count is *not* treated as public: half of `epsilon` goes to the sum
/// ([`sum_laplace`]), half to the number of values (sensitivity
/// `max_contributions`).
///
/// # Privacy
/// epsilon/2 (sum, sensitivity `bounds.sensitivity()`) + epsilon/2 (count,
/// sensitivity `max_contributions`) = epsilon-DP by sequential composition.
///
/// # Citations
/// Dwork, Roth. The Algorithmic Foundations of Differential Privacy (2014),
/// Thm 3.14 (composition). Canonne, Kamath, Steinke (NeurIPS 2020).
pub fn mean_laplace(
    values: &[f64],
    bounds: &BoundedSum,
    epsilon: Epsilon,
) -> Result<NoisyMean, PrivacyError> {
    // Halving is exact in binary floating point.
    let half = Epsilon::new(epsilon.get() / 2.0)?;
    let sum = sum_laplace(values, bounds, half)?;
    let count = super::count_laplace(len_i64(values)?, bounds.max_contributions, half)?;
    Ok(NoisyMean {
        sum,
        count,
        lo: bounds.lo,
        hi: bounds.hi,
    })
}

/// Releases a mean as noisy sum / noisy count with discrete Gaussian noise:
/// rho/2 to the sum, rho/2 to the count (not treated as public).
///
/// # Privacy
/// rho/2 + rho/2 = rho-zCDP (zCDP composes additively).
///
/// # Citations
/// Bun, Steinke. Concentrated Differential Privacy (TCC 2016), Lemma 2.3.
/// Canonne, Kamath, Steinke (NeurIPS 2020).
pub fn mean_gaussian(
    values: &[f64],
    bounds: &BoundedSum,
    rho: Rho,
) -> Result<NoisyMean, PrivacyError> {
    let half = Rho::new(rho.get() / 2.0)?;
    let sum = sum_gaussian(values, bounds, half)?;
    let count = super::count_gaussian(len_i64(values)?, bounds.max_contributions, half)?;
    Ok(NoisyMean {
        sum,
        count,
        lo: bounds.lo,
        hi: bounds.hi,
    })
}

fn len_i64(values: &[f64]) -> Result<i64, PrivacyError> {
    i64::try_from(values.len()).map_err(|_| PrivacyError::Overflow {
        what: "value count",
    })
}

#[cfg(test)]
mod tests;
