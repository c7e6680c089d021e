//! Threshold alerts with the sparse vector technique (AboveThreshold, with the
//! threshold re-drawn after every alert).

use opendp::traits::InfMul;

use crate::{Cost, Epsilon, MechanismKind, PrivacyError, Privatized, noise, release::RunId};

/// A stream of integer queries (e.g. a zone's occupancy per window) checked
/// against a public threshold; raises an alert when the noisy value reaches
/// the noisy threshold, pays only for alerts, and halts after `cap` alerts.
///
/// Charge [`cost`](Self::cost) (= cap x per-alert epsilon) before the first
/// query. Queries answered "below" cost nothing more.
///
/// # Privacy
/// Each segment (from a fresh noisy threshold up to and including the next
/// alert) is AboveThreshold with per-alert budget e: the threshold gets
/// discrete Laplace noise of scale 2 Delta / e and every query discrete
/// Laplace noise of scale 4 Delta / e, where Delta is the sensitivity of each
/// query; a segment is e-DP whatever the number of "below" answers
/// (threshold share e/2 at sensitivity Delta, query share e/2 at sensitivity
/// 2 Delta, both checked with OpenDP's privacy maps). At most `cap` segments
/// run, so the whole instance is (cap x e)-DP. Only the alert/no-alert
/// answers are released, never the noisy values. The shift argument of the
/// proof is over integers, so it holds for discrete Laplace noise with an
/// integer sensitivity.
///
/// # Citations
/// Dwork, Roth. The Algorithmic Foundations of Differential Privacy (2014),
/// Alg. 1 AboveThreshold and Alg. 2 Sparse, Thm 3.23-3.26. Lyu, Su, Li.
/// Understanding the Sparse Vector Technique for Differential Privacy (VLDB
/// 2017). Canonne, Kamath, Steinke (NeurIPS 2020) for the sampler.
#[derive(Debug, Clone)]
pub struct SparseVector {
    threshold: i64,
    per_alert: Epsilon,
    cap: u32,
    total: Epsilon,
    threshold_scale: f64,
    query_scale: f64,
    /// Noisy threshold of the open segment, drawn lazily.
    noisy_threshold: Option<i64>,
    alerts: u32,
    segments: u32,
    run: RunId,
}

impl SparseVector {
    /// A sparse vector over queries of the given `sensitivity` against the
    /// public `threshold`, with `per_alert` epsilon and at most `cap` alerts.
    pub fn new(
        threshold: i64,
        sensitivity: u32,
        per_alert: Epsilon,
        cap: u32,
    ) -> Result<Self, PrivacyError> {
        super::check_sensitivity(sensitivity)?;
        if cap == 0 {
            return Err(PrivacyError::InvalidParameter {
                name: "cap",
                reason: "an alert cap of 0 releases nothing".into(),
            });
        }
        // cap x e, rounded up; refused if it overflows to infinity.
        let total = Epsilon::new(per_alert.get().inf_mul(&f64::from(cap))?)?;
        let half = per_alert.get() / 2.0;
        let d = i64::from(sensitivity);
        let threshold_scale = noise::laplace_scale(d, half)?;
        let query_scale = noise::laplace_scale(2 * d, half)?;
        Ok(Self {
            threshold,
            per_alert,
            cap,
            total,
            threshold_scale,
            query_scale,
            noisy_threshold: None,
            alerts: 0,
            segments: 0,
            run: RunId::generate()?,
        })
    }

    /// What the whole instance may cost: cap x per-alert epsilon (rounded
    /// up). Charge this before the first query.
    pub fn cost(&self) -> Cost {
        Cost::Pure(self.total)
    }
    /// Epsilon actually used so far: segments started x per-alert epsilon
    /// (a segment that has answered queries but not alerted yet counts).
    /// Informational: never refund the difference to [`cost`](Self::cost).
    pub fn used_epsilon(&self) -> f64 {
        f64::from(self.segments) * self.per_alert.get()
    }
    /// Alerts raised so far.
    pub fn alerts(&self) -> u32 {
        self.alerts
    }
    /// True once `cap` alerts were raised; every later query is refused.
    pub fn is_halted(&self) -> bool {
        self.alerts >= self.cap
    }
    /// Noise scales (threshold, query).
    pub fn scales(&self) -> (f64, f64) {
        (self.threshold_scale, self.query_scale)
    }

    /// Answers one query: `Ok(None)` below the noisy threshold,
    /// `Ok(Some(alert))` at or above it (the alert's value is 1.0 and its
    /// cost is this instance's [`cost`](Self::cost), with its [`RunId`]);
    /// `Err(Halted)` once the cap is reached.
    pub fn query(&mut self, value: i64) -> Result<Option<Privatized>, PrivacyError> {
        if self.is_halted() {
            return Err(PrivacyError::Halted {
                mechanism: "sparse vector",
                reason: format!("alert cap of {} reached", self.cap),
            });
        }
        let noisy_threshold = match self.noisy_threshold {
            Some(t) => t,
            None => {
                let t = noise::laplace_scalar(self.threshold_scale)?.invoke(&self.threshold)?;
                self.noisy_threshold = Some(t);
                self.segments += 1;
                t
            }
        };
        let noisy_value = noise::laplace_scalar(self.query_scale)?.invoke(&value)?;
        if noisy_value < noisy_threshold {
            return Ok(None);
        }
        self.alerts += 1;
        // The next segment draws a fresh threshold.
        self.noisy_threshold = None;
        Ok(Some(Privatized::in_run(
            1.0,
            MechanismKind::SparseVectorAlert,
            self.query_scale,
            self.cost(),
            self.run,
        )))
    }
}

#[cfg(test)]
mod tests;
