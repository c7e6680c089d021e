//! Differentially private model updates for federated rounds: L2 clipping of
//! a float update vector, distributed Gaussian noise drawn by OpenDP, and the
//! zCDP accounting of rounds.
//!
//! Noise is drawn only by OpenDP's Gaussian measurement over
//! `VectorDomain<AtomDomain<f32>>` with `L2Distance<f64>` (OpenDP discretises
//! the floats to a grid of 2^k and samples exact discrete Gaussian noise; no
//! `floating-point` feature). Nothing here touches the network or a clock.
//!
//! # The distributed noise assumption
//! A round has a minimum of `m` participants, clip norm `C` and noise
//! multiplier `z`. Each node clips its update to L2 norm `C` and adds
//! Gaussian noise of standard deviation `sigma_node = z * C / sqrt(m)` to
//! every coordinate. The *sum* of the updates of at least `m` nodes that each
//! added their share honestly therefore carries Gaussian noise of standard
//! deviation at least `z * C`, while one node changes the sum by at most `C`
//! in L2: the published sum (and its average, and every model derived from
//! it) is `rho_round = 1 / (2 z^2)`-zCDP with respect to the replacement of
//! one node's whole local dataset (Bun-Steinke 2016, Prop. 1.6).
//!
//! This guarantee holds against whoever sees only the aggregate (the ML team,
//! the published model card). Until secure aggregation lands, the aggregator
//! sees each update with only its own share of noise, which is
//! `m / (2 z^2)`-zCDP ([`RoundPrivacy::node_rho`]); both numbers are
//! reported and venue ledgers are charged the larger one.
//!
//! # Accountant
//! Rounds compose additively in zCDP (Bun-Steinke 2016, Lemma 2.3): after
//! `R` rounds the published model is `R * rho_round`-zCDP. Every enrolled
//! node participates in a round (no Poisson sampling), so no amplification
//! by subsampling is claimed. The total is turned into (epsilon, delta) with
//! the optimal conversion of Canonne-Kamath-Steinke 2020 (OpenDP's
//! zCDP-to-approx-DP privacy profile, see
//! [`crate::accounting::zcdp_to_approx_dp`]).
//!
//! # Citations
//! * Bun, Steinke. Concentrated Differential Privacy: Simplifications,
//!   Extensions, and Lower Bounds (TCC 2016).
//! * Canonne, Kamath, Steinke. The Discrete Gaussian for Differential
//!   Privacy (NeurIPS 2020).
//! * McMahan, Ramage, Talwar, Zhang. Learning Differentially Private
//!   Recurrent Language Models (ICLR 2018): clipped, noised FedAvg.

use opendp::{
    core::Measurement,
    domains::{AtomDomain, VectorDomain},
    measurements::make_gaussian,
    measures::ZeroConcentratedDivergence,
    metrics::L2Distance,
};

use crate::{PrivacyError, Rho, accounting::zcdp_to_approx_dp};

type FloatGaussian = Measurement<
    VectorDomain<AtomDomain<f32>>,
    L2Distance<f64>,
    ZeroConcentratedDivergence,
    Vec<f32>,
>;

fn gaussian(scale: f64) -> Result<FloatGaussian, PrivacyError> {
    Ok(make_gaussian(
        VectorDomain::new(AtomDomain::<f32>::new_non_nan()),
        L2Distance::<f64>::default(),
        scale,
        None,
    )?)
}

/// The privacy parameters of one federated round, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundPrivacy {
    clip_norm: f64,
    noise_multiplier: f64,
    min_nodes: u32,
}

impl RoundPrivacy {
    /// `clip_norm` finite and > 0, `noise_multiplier` finite and > 0,
    /// `min_nodes` >= 1.
    pub fn new(
        clip_norm: f64,
        noise_multiplier: f64,
        min_nodes: u32,
    ) -> Result<Self, PrivacyError> {
        if !(clip_norm.is_finite() && clip_norm > 0.0) {
            return Err(PrivacyError::InvalidParameter {
                name: "clip_norm",
                reason: format!("must be finite and > 0, got {clip_norm}"),
            });
        }
        if !(noise_multiplier.is_finite() && noise_multiplier > 0.0) {
            return Err(PrivacyError::InvalidParameter {
                name: "noise_multiplier",
                reason: format!("must be finite and > 0, got {noise_multiplier}"),
            });
        }
        if min_nodes == 0 {
            return Err(PrivacyError::InvalidParameter {
                name: "min_nodes",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            clip_norm,
            noise_multiplier,
            min_nodes,
        })
    }

    /// L2 clip norm C.
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    /// Noise multiplier z.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }

    /// Minimum participants m.
    pub fn min_nodes(&self) -> u32 {
        self.min_nodes
    }

    /// Standard deviation of each node's noise share: `z * C / sqrt(m)`.
    pub fn node_sigma(&self) -> f64 {
        self.noise_multiplier * self.clip_norm / f64::from(self.min_nodes).sqrt()
    }

    /// zCDP cost of the published aggregate of one round: OpenDP's privacy
    /// map of a Gaussian of scale `z * C` at L2 sensitivity `C`, i.e.
    /// `1 / (2 z^2)` rounded up.
    ///
    /// # Privacy
    /// Sensitivity C (one node's clipped update), noise std z*C in the sum.
    pub fn round_rho(&self) -> Result<Rho, PrivacyError> {
        let m = gaussian(self.noise_multiplier * self.clip_norm)?;
        Rho::new(m.map(&self.clip_norm)?)
    }

    /// zCDP cost of one node's noised update as seen by whoever receives it
    /// alone (the aggregator, until secure aggregation): `m / (2 z^2)`.
    pub fn node_rho(&self) -> Result<Rho, PrivacyError> {
        let m = gaussian(self.node_sigma())?;
        Rho::new(m.map(&self.clip_norm)?)
    }
}

/// L2 norm of `v`, accumulated in f64.
pub fn l2_norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// Scales `v` so that its L2 norm is at most `clip_norm`; returns the norm
/// before clipping. A non-finite entry is an error (nothing is clipped).
pub fn clip_l2(v: &mut [f32], clip_norm: f64) -> Result<f64, PrivacyError> {
    if v.iter().any(|x| !x.is_finite()) {
        return Err(PrivacyError::InvalidParameter {
            name: "update",
            reason: "update has a NaN or infinite entry".into(),
        });
    }
    let norm = l2_norm(v);
    if norm > clip_norm {
        // Scale a hair below C so that f32 rounding never pushes it above.
        let f = (clip_norm / norm * (1.0 - 1e-6)) as f32;
        for x in v.iter_mut() {
            *x *= f;
        }
    }
    Ok(norm)
}

/// A clipped update with this node's share of Gaussian noise: the only form
/// in which a model update may leave a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisedUpdate {
    values: Vec<f32>,
    norm_before_clip: f64,
}

impl NoisedUpdate {
    /// The noised values, in the order they were given.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Consumes the update.
    pub fn into_values(self) -> Vec<f32> {
        self.values
    }

    /// L2 norm of the raw update before clipping (stays on the node).
    pub fn norm_before_clip(&self) -> f64 {
        self.norm_before_clip
    }
}

/// Clips `update` to `params.clip_norm()` and adds Gaussian noise of
/// standard deviation [`RoundPrivacy::node_sigma`] to every coordinate, drawn
/// by OpenDP (a long update is split over the cores, one measurement per
/// thread; each coordinate's noise is independent, so the distribution and
/// the privacy map are those of one measurement on the whole update).
///
/// # Privacy
/// L2 sensitivity C after clipping; this share is `m / (2 z^2)`-zCDP alone,
/// and the sum of `m` shares is `1 / (2 z^2)`-zCDP (see the module docs).
pub fn privatize_update(
    mut update: Vec<f32>,
    params: &RoundPrivacy,
) -> Result<NoisedUpdate, PrivacyError> {
    let norm_before_clip = clip_l2(&mut update, params.clip_norm)?;
    let sigma = params.node_sigma();
    let values =
        crate::noise::invoke_split(&update, crate::noise::threads_for(update.len()), || {
            gaussian(sigma)
        })?;
    Ok(NoisedUpdate {
        values,
        norm_before_clip,
    })
}

/// Accumulated privacy of a model after a number of rounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPrivacy {
    /// Total zCDP rho of the published model (sum over rounds).
    pub rho: f64,
    /// Rounds composed.
    pub rounds: u32,
}

impl ModelPrivacy {
    /// No rounds yet.
    pub fn initial() -> Self {
        Self {
            rho: 0.0,
            rounds: 0,
        }
    }

    /// `self` followed by one more round with `params` (rho adds, rounded up).
    pub fn after_round(&self, params: &RoundPrivacy) -> Result<Self, PrivacyError> {
        use opendp::traits::InfAdd;
        Ok(Self {
            rho: self.rho.inf_add(&params.round_rho()?.get())?,
            rounds: self.rounds.saturating_add(1),
        })
    }

    /// `self` followed by one more round of cost `round_rho` (e.g. the
    /// distributed discrete Gaussian bound of a secure round; rho adds,
    /// rounded up).
    pub fn after_round_rho(&self, round_rho: Rho) -> Result<Self, PrivacyError> {
        use opendp::traits::InfAdd;
        Ok(Self {
            rho: self.rho.inf_add(&round_rho.get())?,
            rounds: self.rounds.saturating_add(1),
        })
    }

    /// (epsilon, delta)-DP epsilon at `delta` (Canonne-Kamath-Steinke).
    pub fn epsilon(&self, delta: f64) -> Result<f64, PrivacyError> {
        zcdp_to_approx_dp(self.rho, delta)
    }
}

#[cfg(test)]
mod tests;
