//! Calibrated OpenDP noise measurements over integers: the only place this
//! crate builds one. Every mechanism draws its noise through these, so noise
//! always comes from OpenDP's exact samplers (discrete Laplace and discrete
//! Gaussian, Canonne-Kamath-Steinke 2020) and never from `rand`.
//!
//! OpenDP's `Measurement` is neither `Send` nor `Sync`, so stateful
//! mechanisms keep the calibrated *scale* and rebuild the measurement when
//! they draw; building one costs under a microsecond (measured with
//! `cargo run --release -p veil-privacy --example noise_profile`), against
//! tens of microseconds per value drawn.
//!
//! Long vectors are noised by [`invoke_split`]: one measurement per core,
//! each built and invoked on its own thread over a contiguous chunk.

use std::num::NonZeroUsize;

use opendp::{
    core::{Domain, Measure, Measurement, Metric},
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

/// Fewest values worth a thread of their own. One value costs 10-50 us of
/// exact sampling and a scoped thread about 20 us to start, so even this
/// chunk amortises the spawn a thousandfold; below it the work stays on the
/// calling thread.
pub(crate) const MIN_VALUES_PER_THREAD: usize = 1024;

/// Threads to noise `len` values with: one per available core, but never
/// fewer than [`MIN_VALUES_PER_THREAD`] values per thread (at least one).
pub(crate) fn threads_for(len: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    cores.min(len / MIN_VALUES_PER_THREAD).max(1)
}

/// Noises `values` with the vector measurement `build` makes, split into
/// `threads` contiguous chunks (in order) that each get their own
/// measurement, built and invoked on their own thread (OpenDP's
/// `Measurement` is neither `Send` nor `Sync`).
///
/// # Privacy
/// The measurements this is used with add independent noise to each entry,
/// so the output is distributed exactly as one invocation on the whole
/// vector and the privacy map of that one measurement (what callers charge)
/// holds unchanged. Independence across threads: OpenDP draws every bit
/// from OpenSSL's `RAND_priv_bytes`, which gives each thread its own private
/// DRBG seeded from the shared primary one; streams of distinct instances
/// are as independent as successive calls on one thread (the CSPRNG
/// assumption OpenDP already relies on). A measurement whose noise couples
/// entries (none here) or depends on the vector length must not be split.
pub(crate) fn invoke_split<T, DI, MI, MO>(
    values: &[T],
    threads: usize,
    build: impl Fn() -> Result<Measurement<DI, MI, MO, Vec<T>>, PrivacyError> + Sync,
) -> Result<Vec<T>, PrivacyError>
where
    T: Clone + Send + Sync,
    DI: Domain<Carrier = Vec<T>>,
    MI: Metric,
    MO: Measure,
{
    let noise =
        |chunk: &[T]| -> Result<Vec<T>, PrivacyError> { Ok(build()?.invoke(&chunk.to_vec())?) };
    if threads <= 1 || values.len() < 2 {
        return noise(values);
    }
    let chunk = values.len().div_ceil(threads);
    let parts = std::thread::scope(|scope| {
        let mut chunks = values.chunks(chunk);
        // The first chunk is noised on this thread, the others on their own.
        let first = chunks.next().unwrap_or_default();
        let handles: Vec<_> = chunks.map(|c| scope.spawn(move || noise(c))).collect();
        let mut parts = vec![noise(first)];
        parts.extend(handles.into_iter().map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(PrivacyError::OpenDp("a noise thread panicked".into())))
        }));
        parts
    });
    let mut out = Vec::with_capacity(values.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
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
