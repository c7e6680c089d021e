//! Encoding a float model update into Z_{2^32} so that noise survives
//! aggregation exactly: the distributed discrete Gaussian (DDG) of
//! Kairouz, Liu and Steinke (ICML 2021).
//!
//! A node, with round parameters clip norm `C`, noise multiplier `z`,
//! granularity `gamma` and at least `n_min` / at most `n_max` contributors:
//! 1. refuses NaN/Inf, clips its update to L2 norm `C` (in f64);
//! 2. scales by `1 / gamma`, so coordinates are in integer units of `gamma`;
//! 3. rounds each coordinate to floor or ceiling at random with the
//!    probability that makes it unbiased, and repeats the whole vector until
//!    its L2 norm is at most [`EncodingParams::delta2`] (*conditional*
//!    randomized rounding; each attempt fails with probability at most
//!    `beta` = [`ROUNDING_BETA`]);
//! 4. adds integer noise `N_Z(0, sigma^2)` per coordinate with
//!    `sigma = z * delta2 / sqrt(n_min)`, drawn by OpenDP's exact sampler
//!    ([`veil_privacy::distributed_noise`]);
//! 5. reduces modulo 2^32. The aggregator's sum of masked inputs is the sum
//!    of these, exactly (wrapping arithmetic); [`decode_sum`] lifts it to
//!    `[-2^31, 2^31)` and multiplies by `gamma`.
//!
//! # Bounds
//! * **Norm after rounding** (Kairouz et al., Lemma 4 / Sec. 4.1):
//!   `delta2 = min( sqrt(c^2 + d/4 + sqrt(2 ln(1/beta)) (c + sqrt(d)/2)),
//!   c + sqrt(d) )`, `c = C / gamma`. Rounding enforces it; it is the L2
//!   sensitivity the privacy cost uses.
//! * **Bias and fixed-point error**: unconditional randomized rounding is
//!   unbiased; conditioning on an event of probability >= 1 - beta moves
//!   each coordinate's mean by at most `beta / (1 - beta)` units, i.e.
//!   `gamma * beta / (1 - beta)` (about `gamma * 1e-6` here). Each
//!   coordinate's rounding error is below one unit, so before noise the
//!   decoded sum of `n` updates is within `n * gamma` of the sum of the
//!   clipped float updates, coordinate by coordinate (plus f32 rounding of
//!   the inputs).
//! * **Overflow**: a coordinate of the sum of `n <= n_max` inputs has
//!   magnitude at most `n_max * delta2` (rounded part) plus the noise sum,
//!   which is `sqrt(n_max) sigma`-subgaussian (a discrete Gaussian is
//!   sigma-subgaussian, Canonne-Kamath-Steinke 2020 Cor. 9): with
//!   probability at least `1 - tail` over all `d` coordinates it is below
//!   `sqrt(2 n_max sigma^2 ln(2 d / tail))`, `tail` = [`TAIL_PROBABILITY`]
//!   (2^-40). [`EncodingParams::new`] refuses parameters whose sum of the
//!   two reaches 2^31, so the centred lift never wraps except with
//!   probability 2^-40 per round.
//!
//! # Privacy
//! [`EncodingParams::round_rho`]: the DDG bound of
//! [`veil_privacy::distributed_noise::ddg_sum_rho`] with `delta2`, `sigma`,
//! `n_min`, `n_max`, `d`; for `sigma >= 1` it is `1 / (2 z^2)` up to a
//! negligible `tau` term, the same as the central Gaussian of
//! `RoundPrivacy::round_rho` (the comparison is tested). It holds for the
//! sum of at least `n_min` honest contributions, which is why the server
//! refuses to unmask fewer.
//!
//! Rounding randomness is not DP noise (privacy rests on the enforced norm
//! bound, whatever the coin flips): it comes from a ChaCha20 stream keyed
//! from ring's `SystemRandom`. The noise itself comes only from OpenDP.
//!
//! # Citations
//! * Kairouz, Liu, Steinke. The Distributed Discrete Gaussian Mechanism for
//!   Federated Learning with Secure Aggregation (ICML 2021).
//! * Canonne, Kamath, Steinke. The Discrete Gaussian for Differential
//!   Privacy (NeurIPS 2020).

use chacha20::{
    ChaCha20Rng,
    rand_core::{Rng, SeedableRng},
};
use ring::rand::{SecureRandom, SystemRandom};
use veil_privacy::{Rho, distributed_noise};

use crate::SecAggError;

/// Bits of the modulus: inputs and sums live in Z_{2^32}.
pub const MODULUS_BITS: u32 = 32;
/// Probability that one conditional-rounding attempt exceeds the norm
/// bound (2^-20): small, so the bias is negligible and retries rare.
pub const ROUNDING_BETA: f64 = 1.0 / 1_048_576.0;
/// Probability the overflow bound may fail in a round (2^-40).
pub const TAIL_PROBABILITY: f64 = 1.0 / 1_099_511_627_776.0;
/// Largest dimension accepted.
pub const MAX_DIMENSION: usize = 1 << 26;
/// Largest number of contributors accepted.
pub const MAX_NODES: u32 = 10_000;
/// Rounding attempts before giving up (each fails with probability beta).
const MAX_ROUNDING_ATTEMPTS: usize = 64;

/// Validated encoding parameters of one secure round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncodingParams {
    clip_norm: f64,
    noise_multiplier: f64,
    n_min: u32,
    n_max: u32,
    dimension: usize,
    gamma: f64,
}

impl EncodingParams {
    /// Validates the parameters, and refuses any whose worst case could wrap
    /// the modulus ([`SecAggError::WouldOverflow`]) or whose per-node noise
    /// is below the DDG theorem's `sigma >= 1/2`.
    pub fn new(
        clip_norm: f64,
        noise_multiplier: f64,
        n_min: u32,
        n_max: u32,
        dimension: usize,
        gamma: f64,
    ) -> Result<Self, SecAggError> {
        let bad = |name, reason: String| Err(SecAggError::InvalidParameter { name, reason });
        if !(clip_norm.is_finite() && clip_norm > 0.0) {
            return bad(
                "clip_norm",
                format!("must be finite and > 0, got {clip_norm}"),
            );
        }
        if !(noise_multiplier.is_finite() && noise_multiplier > 0.0) {
            return bad(
                "noise_multiplier",
                format!("must be finite and > 0, got {noise_multiplier}"),
            );
        }
        if n_min == 0 || n_max < n_min || n_max > MAX_NODES {
            return bad(
                "n_min/n_max",
                format!("need 1 <= n_min <= n_max <= {MAX_NODES}, got {n_min}, {n_max}"),
            );
        }
        if dimension == 0 || dimension > MAX_DIMENSION {
            return bad(
                "dimension",
                format!("must be in 1..={MAX_DIMENSION}, got {dimension}"),
            );
        }
        if !(gamma.is_finite() && gamma > 0.0) {
            return bad("gamma", format!("must be finite and > 0, got {gamma}"));
        }
        let p = Self {
            clip_norm,
            noise_multiplier,
            n_min,
            n_max,
            dimension,
            gamma,
        };
        let sigma = p.node_sigma();
        if !(sigma.is_finite() && sigma >= 0.5) {
            return bad(
                "gamma",
                format!("per-node noise sigma {sigma} < 1/2: use a finer gamma"),
            );
        }
        let bound = p.overflow_bound();
        let limit = 2f64.powi(MODULUS_BITS as i32 - 1);
        if bound.is_nan() || bound >= limit {
            return Err(SecAggError::WouldOverflow { bound, limit });
        }
        Ok(p)
    }

    /// The finest power-of-two granularity `gamma = C / 2^j` (j <= 40) that
    /// [`new`](Self::new) accepts: the least fixed-point error that cannot
    /// wrap.
    pub fn with_finest_gamma(
        clip_norm: f64,
        noise_multiplier: f64,
        n_min: u32,
        n_max: u32,
        dimension: usize,
    ) -> Result<Self, SecAggError> {
        let mut last = None;
        for j in (0..=40).rev() {
            let gamma = clip_norm * 2f64.powi(-j);
            match Self::new(clip_norm, noise_multiplier, n_min, n_max, dimension, gamma) {
                Ok(p) => return Ok(p),
                Err(e @ SecAggError::WouldOverflow { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(SecAggError::InvalidParameter {
            name: "gamma",
            reason: "no granularity fits".into(),
        }))
    }

    /// L2 clip norm C (float units).
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }
    /// Noise multiplier z.
    pub fn noise_multiplier(&self) -> f64 {
        self.noise_multiplier
    }
    /// Fewest contributors the noise is calibrated for.
    pub fn n_min(&self) -> u32 {
        self.n_min
    }
    /// Most contributors the overflow bound allows.
    pub fn n_max(&self) -> u32 {
        self.n_max
    }
    /// Vector length d.
    pub fn dimension(&self) -> usize {
        self.dimension
    }
    /// Granularity gamma: one integer unit is gamma in float units.
    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    /// L2 norm bound of a rounded update, in integer units (see module docs).
    pub fn delta2(&self) -> f64 {
        let c = self.clip_norm / self.gamma;
        let d = self.dimension as f64;
        let slack = (2.0 * (1.0 / ROUNDING_BETA).ln()).sqrt();
        let a = (c * c + d / 4.0 + slack * (c + d.sqrt() / 2.0)).sqrt();
        let b = c + d.sqrt();
        a.min(b).next_up()
    }

    /// Per-node noise scale in integer units: `z * delta2 / sqrt(n_min)`.
    pub fn node_sigma(&self) -> f64 {
        self.noise_multiplier * self.delta2() / f64::from(self.n_min).sqrt()
    }

    /// Worst-case magnitude of a coordinate of the sum of `n_max` inputs,
    /// except with probability [`TAIL_PROBABILITY`].
    pub fn overflow_bound(&self) -> f64 {
        let n = f64::from(self.n_max);
        let s = self.node_sigma();
        let tail = (2.0 * n * s * s * (2.0 * self.dimension as f64 / TAIL_PROBABILITY).ln()).sqrt();
        n * self.delta2() + tail
    }

    /// zCDP cost of the round's aggregate (Kairouz-Liu-Steinke Theorem 1,
    /// rounded up): what the venue ledgers are charged under secure
    /// aggregation.
    pub fn round_rho(&self) -> Result<Rho, SecAggError> {
        Ok(distributed_noise::ddg_sum_rho(
            self.delta2(),
            self.node_sigma(),
            self.n_min,
            self.n_max,
            self.dimension,
        )?)
    }
}

/// A clipped, scaled, conditionally rounded update (integer units, no noise
/// yet). It cannot leave the node: only [`add_noise`] turns it into
/// something the masking accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundedUpdate {
    values: Vec<i64>,
}

impl RoundedUpdate {
    /// The rounded integers.
    pub fn values(&self) -> &[i64] {
        &self.values
    }

    /// TEST ONLY: the rounded update without noise, as if it were noised.
    /// Exists to check exactness of the arithmetic; gives no privacy.
    #[cfg(feature = "dangerous-test-util")]
    pub fn dangerous_without_noise(self) -> EncodedUpdate {
        EncodedUpdate {
            values: self.values.iter().map(|&v| v as u32).collect(),
        }
    }
}

/// A noised update in Z_{2^32}: the only input [`crate::client::Client`]
/// masks.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedUpdate {
    values: Vec<u32>,
}

impl EncodedUpdate {
    /// The values modulo 2^32 (still secret: they carry only 1/n of the
    /// noise).
    pub fn values(&self) -> &[u32] {
        &self.values
    }
}

/// Steps 1-3: refuse non-finite values, clip to `C`, scale by `1/gamma`,
/// conditionally round.
pub fn clip_and_round(
    update: &[f32],
    params: &EncodingParams,
) -> Result<RoundedUpdate, SecAggError> {
    if update.len() != params.dimension {
        return Err(SecAggError::WrongShape {
            what: "update",
            expected: params.dimension,
            got: update.len(),
        });
    }
    if update.iter().any(|x| !x.is_finite()) {
        return Err(SecAggError::OutOfRange {
            what: "update",
            reason: "NaN or infinite entry".into(),
        });
    }
    let norm = update
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    let clip = if norm > params.clip_norm {
        params.clip_norm / norm
    } else {
        1.0
    };
    let scale = clip / params.gamma;
    let delta2 = params.delta2();
    // Exact integer comparison with a hair of slack on the safe side.
    let max_sq = (delta2 * delta2 * (1.0 - 1e-12)).floor() as u128;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(seed.as_mut_slice())
        .map_err(|_| SecAggError::Randomness)?;
    let mut rng = ChaCha20Rng::from_seed(*seed);
    let mut values = vec![0i64; update.len()];
    for _ in 0..MAX_ROUNDING_ATTEMPTS {
        let mut sq: u128 = 0;
        for (r, &x) in values.iter_mut().zip(update) {
            let y = f64::from(x) * scale;
            let fl = y.floor();
            let frac = y - fl;
            let u = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
            // |y| <= c < 2^31 (the overflow check), so the cast is exact.
            *r = fl as i64 + i64::from(u < frac);
            sq += u128::from(r.unsigned_abs()) * u128::from(r.unsigned_abs());
        }
        if sq <= max_sq {
            return Ok(RoundedUpdate { values });
        }
    }
    Err(SecAggError::OutOfRange {
        what: "rounded update",
        reason: format!("norm above the bound after {MAX_ROUNDING_ATTEMPTS} attempts"),
    })
}

/// Step 4-5: adds this node's discrete Gaussian share (OpenDP) and reduces
/// modulo 2^32.
///
/// # Privacy
/// One node's share, `N_Z(0, sigma^2)` with sigma = [`EncodingParams::node_sigma`];
/// see [`EncodingParams::round_rho`] for the cost of the sum.
pub fn add_noise(
    rounded: RoundedUpdate,
    params: &EncodingParams,
) -> Result<EncodedUpdate, SecAggError> {
    let noise =
        distributed_noise::discrete_gaussian_noise(rounded.values.len(), params.node_sigma())?;
    Ok(EncodedUpdate {
        // Two's-complement truncation is reduction modulo 2^32.
        values: rounded
            .values
            .iter()
            .zip(&noise)
            .map(|(&r, &n)| r.wrapping_add(n) as u32)
            .collect(),
    })
}

/// Steps 1-5 in one call.
pub fn encode(update: &[f32], params: &EncodingParams) -> Result<EncodedUpdate, SecAggError> {
    add_noise(clip_and_round(update, params)?, params)
}

/// Decodes an aggregate: centred lift of each value to `[-2^31, 2^31)`,
/// times gamma. Divide by the number of contributors for FedAvg.
pub fn decode_sum(sum: &[u32], params: &EncodingParams) -> Vec<f64> {
    sum.iter()
        .map(|&v| f64::from(v as i32) * params.gamma)
        .collect()
}
