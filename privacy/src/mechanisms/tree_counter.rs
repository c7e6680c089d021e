//! Running totals under continual observation: the binary-tree ("binary")
//! mechanism. Each window's count goes into a dyadic tree; every tree node is
//! noised once, when its interval closes; the running total at window t is the
//! sum of the noisy nodes of t's binary decomposition (popcount(t) <= L
//! nodes), so its error grows polylogarithmically in the horizon T instead of
//! linearly.

use opendp::traits::InfMul;

use crate::{Cost, Epsilon, MechanismKind, PrivacyError, Privatized, Rho, noise, release::RunId};

/// Noise for the tree's nodes, with the budget of the *whole* stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TreeNoise {
    /// Discrete Laplace per node; the stream is epsilon-DP.
    Laplace(Epsilon),
    /// Discrete Gaussian per node; the stream is rho-zCDP.
    Gaussian(Rho),
}

/// A continual-release counter over at most `horizon` windows.
///
/// Charge [`cost`](Self::cost) once before the first [`push`](Self::push);
/// every running total released carries that cost and the counter's
/// [`RunId`].
///
/// # Privacy
/// `sensitivity` Delta is the most one contributor can add to the *whole
/// stream* (summed over all windows; e.g. 1 for "entries" when each person
/// enters once, or max_events_per_window x windows otherwise). With
/// L = floor(log2 T) + 1 levels, every window lies in exactly one node per
/// level, so the vector of all nodes has L1 sensitivity L x Delta and L2
/// sensitivity sqrt(L) x Delta.
/// - Laplace: scale b = L Delta / epsilon per node; the stream is
///   epsilon-DP (each level epsilon / L, levels compose).
/// - Gaussian: sigma = Delta sqrt(L / (2 rho)) per node; each level costs
///   Delta^2 / (2 sigma^2) = rho / L, so the stream is rho-zCDP.
///
/// The released total at t has error the sum of popcount(t) <= L independent
/// node noises ([`error_bound`](Self::error_bound)): variance <= L x 2b^2
/// (Laplace) or L sigma^2 (Gaussian), i.e. O(log^1.5 T / epsilon) error.
///
/// # Citations
/// Chan, Shi, Song. Private and Continual Release of Statistics (ACM TISSEC
/// 2011), the Binary Mechanism. Dwork, Naor, Pitassi, Rothblum. Differential
/// Privacy under Continual Observation (STOC 2010). Canonne, Kamath, Steinke
/// (NeurIPS 2020) for the samplers.
#[derive(Debug, Clone)]
pub struct TreeCounter {
    horizon: u64,
    levels: u32,
    noise: TreeNoise,
    node_scale: f64,
    /// Exact partial sums of the open node at each level (alpha_i in CSS).
    exact: Vec<i64>,
    /// Noisy closed nodes that make up the current prefix.
    noisy: Vec<i64>,
    t: u64,
    run: RunId,
}

impl TreeCounter {
    /// A counter for up to `horizon` windows (>= 1) of contributions bounded
    /// by `sensitivity` over the whole stream.
    pub fn new(horizon: u64, sensitivity: u32, noise: TreeNoise) -> Result<Self, PrivacyError> {
        super::check_sensitivity(sensitivity)?;
        if horizon == 0 || horizon > 1 << 40 {
            return Err(PrivacyError::InvalidParameter {
                name: "horizon",
                reason: format!("must be in 1..=2^40 windows, got {horizon}"),
            });
        }
        let levels = Self::levels_for(horizon);
        let d = i64::from(sensitivity);
        let node_scale = match noise {
            TreeNoise::Laplace(eps) => noise::laplace_scale(d * i64::from(levels), eps.get())?,
            TreeNoise::Gaussian(rho) => {
                let l = f64::from(levels);
                noise::calibrate(
                    "rho",
                    d as f64 * (l / (2.0 * rho.get())).sqrt(),
                    rho.get(),
                    // L levels, each a disjoint-node vector of L2 sensitivity
                    // Delta: L x map(Delta), rounded up.
                    |s| Ok(noise::gaussian_scalar(s)?.map(&d)?.inf_mul(&l)?),
                )?
            }
        };
        let levels_usize = levels as usize;
        Ok(Self {
            horizon,
            levels,
            noise,
            node_scale,
            exact: vec![0; levels_usize],
            noisy: vec![0; levels_usize],
            t: 0,
            run: RunId::generate()?,
        })
    }

    /// floor(log2 horizon) + 1.
    pub fn levels_for(horizon: u64) -> u32 {
        u64::BITS - horizon.max(1).leading_zeros()
    }
    /// Number of tree levels L.
    pub fn levels(&self) -> u32 {
        self.levels
    }
    /// Noise scale per node (Laplace b or Gaussian sigma).
    pub fn node_scale(&self) -> f64 {
        self.node_scale
    }
    /// Windows pushed so far.
    pub fn windows(&self) -> u64 {
        self.t
    }
    /// The whole stream's cost.
    pub fn cost(&self) -> Cost {
        match self.noise {
            TreeNoise::Laplace(e) => Cost::Pure(e),
            TreeNoise::Gaussian(r) => Cost::Zcdp(r),
        }
    }

    /// Adds the next window's count and returns the noisy running total over
    /// all windows so far. Refuses past the horizon.
    pub fn push(&mut self, count: i64) -> Result<Privatized, PrivacyError> {
        if self.t >= self.horizon {
            return Err(PrivacyError::Halted {
                mechanism: "tree counter",
                reason: format!("horizon of {} windows reached", self.horizon),
            });
        }
        let t = self.t + 1;
        // The node closing at t sits at the level of t's lowest set bit; it
        // absorbs the open nodes below it.
        let level = t.trailing_zeros() as usize;
        let mut node = count;
        for j in 0..level {
            node = node
                .checked_add(self.exact[j])
                .ok_or(PrivacyError::Overflow {
                    what: "tree counter node",
                })?;
            self.exact[j] = 0;
            self.noisy[j] = 0;
        }
        let noisy_node = match self.noise {
            TreeNoise::Laplace(_) => noise::laplace_scalar(self.node_scale)?.invoke(&node)?,
            TreeNoise::Gaussian(_) => noise::gaussian_scalar(self.node_scale)?.invoke(&node)?,
        };
        self.exact[level] = node;
        self.noisy[level] = noisy_node;
        self.t = t;
        let total = (0..self.levels as usize)
            .filter(|j| t >> j & 1 == 1)
            .try_fold(0i64, |acc, j| acc.checked_add(self.noisy[j]))
            .ok_or(PrivacyError::Overflow {
                what: "tree counter total",
            })?;
        let kind = match self.noise {
            TreeNoise::Laplace(_) => MechanismKind::TreeCounterLaplace,
            TreeNoise::Gaussian(_) => MechanismKind::TreeCounterGaussian,
        };
        Ok(Privatized::in_run(
            total as f64,
            kind,
            self.node_scale,
            self.cost(),
            self.run,
        ))
    }

    /// A bound B such that the running total released at window `t` is
    /// within B of the true total with probability at least 1 - `beta`.
    ///
    /// The error is a sum of k = popcount(t) independent node noises.
    /// Gaussian: the discrete Gaussian is sub-Gaussian with variance proxy
    /// sigma^2 (CKS20, Cor. 9), so B = sigma sqrt(2 k ln(2/beta)). Laplace:
    /// a Chernoff bound with the exact discrete Laplace moment generating
    /// function M(s) = (1-a)^2 / (1 - 2a cosh s + a^2), a = e^(-1/b), i.e.
    /// B = min over s in (0, 1/b) of (k ln M(s) + ln(2/beta)) / s (any s is
    /// a valid bound; a grid search picks a good one).
    pub fn error_bound(&self, t: u64, beta: f64) -> f64 {
        let k = f64::from(t.count_ones().min(self.levels));
        let ln2b = (2.0 / beta).ln();
        match self.noise {
            TreeNoise::Gaussian(_) => self.node_scale * (2.0 * k * ln2b).sqrt(),
            TreeNoise::Laplace(_) => {
                let b = self.node_scale;
                let a = (-1.0 / b).exp();
                (1..1000)
                    .map(|i| f64::from(i) / 1000.0 / b)
                    .map(|s| {
                        let ln_m = 2.0 * (1.0 - a).ln() - (1.0 - 2.0 * a * s.cosh() + a * a).ln();
                        (k * ln_m + ln2b) / s
                    })
                    .filter(|v| v.is_finite())
                    .fold(f64::INFINITY, f64::min)
            }
        }
    }
}

#[cfg(test)]
mod tests;
