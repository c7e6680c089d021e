//! Histograms over zones or categories whose key set is not public: every
//! bucket is noised, and a bucket is released only if its noisy count clears
//! a threshold, so a bucket that exists only because of one contributor is
//! released with probability at most delta.

use std::collections::BTreeMap;

use opendp::traits::{InfDiv, InfLn, InfMul};

use crate::{Cost, Delta, Epsilon, MechanismKind, PrivacyError, Privatized, noise, release::RunId};

/// A histogram with threshold suppression ("stability histogram").
///
/// Build it (its [`cost`](Self::cost) is known before any data is seen),
/// charge the cost, then [`release`](Self::release) the counts.
///
/// # Privacy
/// Each contributor touches at most `max_buckets` buckets (L0 bound, e.g.
/// `max_zones` of the contribution bounder) and adds at most `max_per_bucket`
/// to each (L-infinity bound), so the L1 sensitivity of the count vector is
/// `max_buckets x max_per_bucket`. Every bucket gets discrete Laplace noise
/// with scale b = L1 / epsilon, which makes the noisy counts of buckets
/// present in both neighbours epsilon-DP. A bucket present only because of
/// one contributor has true count <= `max_per_bucket`; it is released only if
/// `max_per_bucket + Z >= threshold`, with
/// threshold = max_per_bucket + ceil(b ln(max_buckets / delta)), so for
/// discrete Laplace Z, P[Z >= m] = e^(-m/b) / (1 + e^(-1/b)) <= delta /
/// max_buckets per bucket and <= delta over the contributor's buckets (union
/// bound). The whole histogram is therefore (epsilon, delta)-DP; that is its
/// [`Cost::Approx`], charged once per release call (every released bucket
/// carries it with the call's [`RunId`]).
///
/// # Citations
/// Korolova, Kenthapadi, Mishra, Ntoulas. Releasing Search Queries and Clicks
/// Privately (WWW 2009). Bun, Nissim, Stemmer. Simultaneous Private Learning
/// of Multiple Concepts (ITCS 2016) (stability-based histograms). Wilson,
/// Zhang, Lam, Desfontaines, Simmons-Marengo, Gipson. Differentially Private
/// SQL with Bounded User Contribution (PETS 2020). Canonne, Kamath, Steinke
/// (NeurIPS 2020) for the discrete Laplace sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StabilityHistogram {
    epsilon: Epsilon,
    delta: Delta,
    max_buckets: u32,
    max_per_bucket: u32,
    scale: f64,
    threshold: i64,
}

impl StabilityHistogram {
    /// Calibrates noise and threshold. `delta` must be > 0;
    /// `max_buckets` and `max_per_bucket` in 1..=1_000_000 with a product of
    /// at most 1_000_000.
    pub fn new(
        epsilon: Epsilon,
        delta: Delta,
        max_buckets: u32,
        max_per_bucket: u32,
    ) -> Result<Self, PrivacyError> {
        if delta.get() <= 0.0 {
            return Err(PrivacyError::InvalidParameter {
                name: "delta",
                reason: "threshold suppression needs delta > 0".into(),
            });
        }
        super::check_sensitivity(max_buckets)?;
        super::check_sensitivity(max_per_bucket)?;
        let l1 = u32::try_from(u64::from(max_buckets) * u64::from(max_per_bucket))
            .ok()
            .filter(|l1| *l1 <= super::MAX_SENSITIVITY)
            .ok_or_else(|| PrivacyError::InvalidParameter {
                name: "sensitivity",
                reason: "max_buckets x max_per_bucket exceeds 1000000".into(),
            })?;
        let scale = noise::laplace_scale(i64::from(l1), epsilon.get())?;
        // m >= b ln(max_buckets / delta), every step rounded up.
        let m = f64::from(max_buckets)
            .inf_div(&delta.get())?
            .inf_ln()?
            .max(0.0)
            .inf_mul(&scale)?
            .ceil();
        if m >= 1e15 {
            return Err(PrivacyError::InvalidParameter {
                name: "epsilon",
                reason: "threshold too large; epsilon or delta is too small".into(),
            });
        }
        let threshold = i64::from(max_per_bucket) + m as i64;
        Ok(Self {
            epsilon,
            delta,
            max_buckets,
            max_per_bucket,
            scale,
            threshold,
        })
    }

    /// The (epsilon, delta) cost of one [`release`](Self::release).
    pub fn cost(&self) -> Cost {
        Cost::Approx {
            epsilon: self.epsilon,
            delta: self.delta,
        }
    }
    /// Discrete Laplace scale per bucket.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// A bucket is released iff its noisy count is >= this.
    pub fn threshold(&self) -> i64 {
        self.threshold
    }

    /// Noises every bucket (one OpenDP vector measurement over all counts)
    /// and returns the buckets whose noisy count reaches the threshold, in
    /// key order. The input must hold each contributor's contributions only
    /// within the declared bounds.
    pub fn release<K: Ord + Clone>(
        &self,
        counts: &BTreeMap<K, i64>,
    ) -> Result<Vec<(K, Privatized)>, PrivacyError> {
        let run = RunId::generate()?;
        let values: Vec<i64> = counts.values().copied().collect();
        let noisy = noise::laplace_vector(self.scale)?.invoke(&values)?;
        Ok(counts
            .keys()
            .zip(noisy)
            .filter(|(_, n)| *n >= self.threshold)
            .map(|(k, n)| {
                let p = Privatized::in_run(
                    n as f64,
                    MechanismKind::StabilityHistogram,
                    self.scale,
                    self.cost(),
                    run,
                );
                (k.clone(), p)
            })
            .collect())
    }

    /// Most buckets one contributor touches.
    pub fn max_buckets(&self) -> u32 {
        self.max_buckets
    }
    /// Most one contributor adds to one bucket.
    pub fn max_per_bucket(&self) -> u32 {
        self.max_per_bucket
    }
}

#[cfg(test)]
mod tests;
