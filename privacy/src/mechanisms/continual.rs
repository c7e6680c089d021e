//! Continual release of a running total over a whole event day, calibrated
//! to what one attendee can contribute to the *whole* day: one noise budget
//! per stream-day, however often the dashboard refreshes.
//!
//! A *stream* is one zone x metric x event day of `horizon` T steps (one step
//! per window, e.g. T = 1440 one-minute windows). At step t the node knows
//! the exact increment d_t (the zone's net change in that window) and
//! releases the running total x_t = d_0 + ... + d_t plus noise. This module
//! never sees an event or an identifier, only the per-step increments the
//! node has already contribution-bounded; its [`StreamState`] holds those
//! exact increments and must stay on the node (it is not a release).
//!
//! # The mechanism: matrix factorization with an exact integer encoding
//! Let A be the T x T lower-triangular matrix of ones (x = A d). Factor
//! A = B C; the mechanism is y = C d + z with z i.i.d. Gaussian, and the
//! release is B y, post-processing of y. Step t needs only rows <= t of C,
//! so y_t is drawn when d_t is known and never again.
//!
//! Adding integer noise to a real-valued C d would reveal C d's fractional
//! parts, so the node works on an exact integer encoding: with
//! gamma = 2^16 ([`GAMMA`]) it uses the integer matrix C' (below), draws
//! y = C' d + z with z_t i.i.d. *discrete* Gaussian of scale sigma' from
//! OpenDP's exact sampler, every integer operation checked, and releases
//! B' y with B' C' = A (B' public, computed in f64).
//! - [`StreamMechanism::Tree`]: C' = gamma C_tree, C_tree the binary-tree
//!   matrix: with steps numbered i = t + 1, the node (i - 2^l, i] for every
//!   level l < L = floor(log2 T) + 1 and every multiple i of 2^l up to T sums
//!   its d's. Exactly one node closes at each step (level = trailing zeros of
//!   i), so one draw per step; B' = B_tree / gamma sums the popcount(i) nodes
//!   of i's dyadic decomposition of [1, i] (O(log T) per release).
//! - [`StreamMechanism::SqrtFactorization`]: C = A^(1/2), the lower-triangular
//!   Toeplitz matrix of the power series of (1 - x)^(-1/2):
//!   c_k = binom(2k, k) / 4^k (c_0 = 1, decreasing, c_k ~ 1 / sqrt(pi k)).
//!   C' is Toeplitz with c'_k = round(gamma c_k); rounding is monotone, so
//!   c' is still positive and non-increasing (checked when built).
//!   C'^(-1) is lower-triangular Toeplitz (power-series inversion of c'), and
//!   B' = A C'^(-1) is Toeplitz with b'_k the prefix sums of its
//!   coefficients (b' ~ c / gamma). A release at step t costs O(t)
//!   multiply-adds (exact i128 for C' d, f64 for B' y) plus one draw.
//!
//! The released total at step t is x_t + (B' z)_t: unbiased, with public
//! standard deviation [`Calibration::std_at`]:
//! sigma' sqrt(b'_0^2 + ... + b'_t^2) (square root) or
//! sigma' / gamma sqrt(popcount(t + 1)) (tree). (The discrete Gaussian's
//! variance is below sigma'^2 by a relative e^(-2 pi^2 sigma'^2), nothing at
//! the scales here, where sigma' >= gamma / sqrt(2 rho).)
//!
//! # Privacy
//! The unit is one attendee over one event day; Delta is the difference the
//! unit makes to the increments of every stream calibrated together (a
//! metric's zones, all sharing one [`Contribution`] bound E). The node
//! enforces the shapes; the sensitivities are only true under them.
//!
//! **Alternating** (presence: occupancy from line crossings, devices or app
//! users present). In each stream the unit's increments are +1 (entry) and
//! -1 (exit) alternating in time (an entry and exit in the same step cancel,
//! which keeps the alternation), at most E nonzero events across the
//! streams. Let s_1 < ... < s_m be the unit's events in one stream.
//! - Square root: (C' Delta)_t = sum over s_j <= t of +-c'_(t - s_j). Read
//!   from the latest event back, the signs alternate and the magnitudes
//!   c'_(t - s_m) >= c'_(t - s_(m-1)) >= ... do not increase (c' is
//!   non-increasing), so the alternating sum is at most its first term:
//!   |(C' Delta)_t| <= c'_(t - tau(t)), tau(t) the latest event <= t. The t
//!   with tau(t) = s_j are s_j .. s_(j+1) - 1 (or T - 1), distinct lags from
//!   0, so ||C' Delta||^2 <= m sum_(k<T) c'_k^2. Streams add:
//!   **||C' Delta||^2 <= E S, S = sum_(k<T) c'_k^2.**
//! - Tree: each node sums a contiguous run of an alternating +-1 sequence,
//!   so it is -1, 0 or 1 (times gamma), and each event lies in at most L
//!   nodes (one per level): **||C' Delta||^2 <= gamma^2 E L.**
//!
//! Both are tight for the streams jointly: a unit whose E events are E
//! entries at step 0 in E streams reaches them exactly. For one stream alone
//! they can be up to ~2x loose (an exit partly cancels its entry); the
//! tighter single-stream bound (balanced gaps between events) does *not*
//! add over streams, so it is not used.
//!
//! **Monotone** (cumulative gate ingress or egress): the unit adds +1 per
//! pass, at most E passes across the streams. By the triangle inequality
//! ||C' Delta|| <= E ||c'|| (square root) and each tree level's nodes sum
//! the unit's passes, at most E, so **||C' Delta||^2 <= E^2 S** and
//! **gamma^2 E^2 L** respectively; both are reached with all E passes at
//! step 0 of one stream.
//!
//! **Calibration.** Delta_enc = ceil(sqrt(bound)) (an integer, at least the
//! true L2 sensitivity of y), and sigma' is the smallest scale at or above
//! Delta_enc / sqrt(2 rho) at which OpenDP's privacy map of the discrete
//! Gaussian at d_in = Delta_enc is <= rho. The y_t are independent discrete
//! Gaussians around (C' d)_t, so the Renyi divergence of the whole vector y
//! between neighbours is the sum over coordinates, alpha ||C' Delta||^2 /
//! (2 sigma'^2) (CKS20 Thm 4 with additivity over independent coordinates):
//! the scalar map at the vector's L2 distance. So every stream calibrated
//! with the same E, for its whole day, is jointly rho-zCDP for the unit,
//! and everything released from y is post-processing. rho is charged once
//! per stream-day ([`RunId`]), before the first draw. The increments are the
//! node's sensor data, fixed in advance of the releases; were they chosen
//! adaptively from earlier releases, the Gaussian case of Denisov et al.
//! (2022, Thm 2.1) shows the same bound holds for lower-triangular C.
//!
//! Overflow: |d_t| <= [`MAX_ABS_INCREMENT`] = 2^31 and T <= 10,000 keep
//! |(C' d)_t| <= 2^16 x 2^14 x 2^31 = 2^61, and sigma' <= 2^40, so i64 holds y
//! (OpenDP saturates the cast; reaching it has probability below e^(-2^40)).
//!
//! # Citations
//! Dwork, Naor, Pitassi, Rothblum. Differential Privacy under Continual
//! Observation (STOC 2010). Chan, Shi, Song. Private and Continual Release of
//! Statistics (ACM TISSEC 2011), the binary mechanism. Fichtenberger,
//! Henzinger, Upadhyay. Constant Matters: Fine-grained Error Bound on
//! Differentially Private Continual Observation (ICML 2023), the square-root
//! factorization. Henzinger, Upadhyay, Upadhyay. Almost Tight Error Bounds on
//! Differentially Private Continual Counting (SODA 2023). Dvijotham,
//! McMahan, Pillutla, Steinke, Thakurta. Efficient and Near-Optimal Noise
//! Generation for Streaming Differential Privacy (FOCS 2024). Denisov,
//! McMahan, Rush, Smith, Thakurta. Improved Differential Privacy for SGD via
//! Optimal Private Linear Operators on Adaptive Streams (NeurIPS 2022).
//! Canonne, Kamath, Steinke. The Discrete Gaussian for Differential Privacy
//! (NeurIPS 2020). Bun, Steinke. Concentrated Differential Privacy (TCC
//! 2016).

use std::{
    collections::HashMap,
    fmt,
    str::FromStr,
    sync::{Arc, Mutex, OnceLock},
};

use serde::{Deserialize, Serialize};

use crate::{Cost, MechanismKind, PrivacyError, Privatized, Rho, noise, release::RunId};

/// The encoding scale gamma: C' = round(gamma C).
pub const GAMMA: i64 = 1 << 16;
/// Longest stream, in steps.
pub const MAX_HORIZON: u32 = 10_000;
/// Largest contribution bound E.
pub const MAX_EVENTS: u32 = 100_000;
/// Largest |increment| of one step.
pub const MAX_ABS_INCREMENT: i64 = 1 << 31;
/// Largest encoded noise scale sigma' (a smaller rho is refused).
const MAX_SIGMA: f64 = (1u64 << 40) as f64;

const MECHANISM: &str = "continual stream";

/// How a stream's running totals are noised (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum StreamMechanism {
    /// The binary-tree mechanism.
    #[serde(rename = "continual_tree")]
    Tree,
    /// The square-root (Toeplitz) matrix factorization.
    #[serde(rename = "continual_sqrt")]
    SqrtFactorization,
}

impl StreamMechanism {
    /// The stable name, as in policies, the wire and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamMechanism::Tree => "continual_tree",
            StreamMechanism::SqrtFactorization => "continual_sqrt",
        }
    }
    /// The [`MechanismKind`] of this mechanism's releases.
    pub fn kind(self) -> MechanismKind {
        match self {
            StreamMechanism::Tree => MechanismKind::ContinualTree,
            StreamMechanism::SqrtFactorization => MechanismKind::ContinualSqrt,
        }
    }
}

impl fmt::Display for StreamMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StreamMechanism {
    type Err = PrivacyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "continual_tree" => Ok(StreamMechanism::Tree),
            "continual_sqrt" => Ok(StreamMechanism::SqrtFactorization),
            other => Err(PrivacyError::InvalidParameter {
                name: "mechanism",
                reason: format!("unknown stream mechanism {other:?}"),
            }),
        }
    }
}

/// What one unit may contribute to the streams calibrated together (see
/// `# Privacy` in the module docs). The node enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Contribution {
    /// Per stream, +1 and -1 alternating in time; at most `events` nonzero
    /// increments across the streams (E = 2V for V zone visits).
    Alternating {
        /// E.
        events: u32,
    },
    /// +1 per pass; at most `events` passes across the streams.
    Monotone {
        /// E.
        events: u32,
    },
}

impl Contribution {
    /// The bound E.
    pub fn events(self) -> u32 {
        match self {
            Contribution::Alternating { events } | Contribution::Monotone { events } => events,
        }
    }
}

/// Everything that fixes a stream's noise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamParams {
    /// Tree or square root.
    pub mechanism: StreamMechanism,
    /// Steps T in the day, 1..=[`MAX_HORIZON`].
    pub horizon: u32,
    /// The contribution bound the node enforces.
    pub contribution: Contribution,
    /// zCDP cost of the whole stream-day per unit (jointly for all streams
    /// calibrated with the same contribution bound).
    pub rho: Rho,
}

impl StreamParams {
    /// Validated parameters.
    pub fn new(
        mechanism: StreamMechanism,
        horizon: u32,
        contribution: Contribution,
        rho: Rho,
    ) -> Result<Self, PrivacyError> {
        let p = Self {
            mechanism,
            horizon,
            contribution,
            rho,
        };
        p.validate()?;
        Ok(p)
    }

    fn validate(&self) -> Result<(), PrivacyError> {
        if self.horizon == 0 || self.horizon > MAX_HORIZON {
            return Err(PrivacyError::InvalidParameter {
                name: "horizon",
                reason: format!("must be in 1..={MAX_HORIZON} steps, got {}", self.horizon),
            });
        }
        let e = self.contribution.events();
        if e == 0 || e > MAX_EVENTS {
            return Err(PrivacyError::InvalidParameter {
                name: "events",
                reason: format!("must be in 1..={MAX_EVENTS}, got {e}"),
            });
        }
        // Rho's constructor already refuses non-finite and non-positive
        // values; a deserialized one went through it too.
        Rho::new(self.rho.get())?;
        Ok(())
    }

    /// The noise scale and its public error, with the rho OpenDP's map
    /// gives. Deterministic in the parameters.
    pub fn calibrate(&self) -> Result<Calibration, PrivacyError> {
        self.validate()?;
        let coeffs = coefficients(self.mechanism, self.horizon)?;
        let e = u128::from(self.contribution.events());
        let gamma2 = (GAMMA as u128).pow(2);
        let levels = u128::from(levels_for(self.horizon));
        // Every product below is far from u128::MAX (E <= 1e5, S < 2^40).
        let bound = match (self.mechanism, self.contribution) {
            (StreamMechanism::SqrtFactorization, Contribution::Alternating { .. }) => e * coeffs.s,
            (StreamMechanism::SqrtFactorization, Contribution::Monotone { .. }) => e * e * coeffs.s,
            (StreamMechanism::Tree, Contribution::Alternating { .. }) => gamma2 * e * levels,
            (StreamMechanism::Tree, Contribution::Monotone { .. }) => gamma2 * e * e * levels,
        };
        let delta_enc = ceil_sqrt(bound);
        let delta_enc = i64::try_from(delta_enc).map_err(|_| PrivacyError::Overflow {
            what: "stream sensitivity",
        })?;
        let rho = self.rho.get();
        let sigma = noise::calibrate("rho", delta_enc as f64 / (2.0 * rho).sqrt(), rho, |s| {
            Ok(noise::gaussian_scalar(s)?.map(&delta_enc)?)
        })?;
        if sigma > MAX_SIGMA {
            return Err(PrivacyError::InvalidParameter {
                name: "rho",
                reason: format!("{rho} needs noise scale {sigma:e} > 2^40 (encoded); too small"),
            });
        }
        let rho_exact = Rho::new(noise::gaussian_scalar(sigma)?.map(&delta_enc)?)?;
        Ok(Calibration {
            mechanism: self.mechanism,
            horizon: self.horizon,
            bound,
            delta_enc,
            sigma,
            rho_exact,
            coeffs,
        })
    }
}

/// A stream's noise scale and public error per step, with the precomputed
/// factorization (shared, cheap to clone).
#[derive(Debug, Clone)]
pub struct Calibration {
    mechanism: StreamMechanism,
    horizon: u32,
    bound: u128,
    delta_enc: i64,
    sigma: f64,
    rho_exact: Rho,
    coeffs: Arc<Coefficients>,
}

impl Calibration {
    /// Standard deviation of the released running total at step `t` (in
    /// the value's units); steps past the horizon get the last step's.
    pub fn std_at(&self, t: u32) -> f64 {
        let i = (t.min(self.horizon - 1)) as usize;
        self.sigma * self.coeffs.var[i].sqrt()
    }
    /// The largest [`std_at`](Self::std_at) over the stream.
    pub fn max_std(&self) -> f64 {
        self.sigma * self.coeffs.var.iter().copied().fold(0.0, f64::max).sqrt()
    }
    /// sigma' of the discrete Gaussian on the encoded y (gamma times the
    /// value's units).
    pub fn sigma(&self) -> f64 {
        self.sigma
    }
    /// The encoding scale gamma.
    pub fn gamma(&self) -> i64 {
        GAMMA
    }
    /// The zCDP cost per unit: OpenDP's privacy map at
    /// [`sensitivity`](Self::sensitivity) (at most the requested rho).
    pub fn rho(&self) -> Rho {
        self.rho_exact
    }
    /// Delta_enc = ceil(sqrt(bound)): the L2 sensitivity of y (encoded
    /// units) the noise is calibrated to.
    pub fn sensitivity(&self) -> f64 {
        self.delta_enc as f64
    }
    /// The bound on ||C' Delta||^2 (encoded units squared), exact.
    pub fn sensitivity_squared_bound(&self) -> u128 {
        self.bound
    }
    /// The mechanism.
    pub fn mechanism(&self) -> StreamMechanism {
        self.mechanism
    }
    /// Steps T.
    pub fn horizon(&self) -> u32 {
        self.horizon
    }
    /// The square root's c'_k (k < T); empty for the tree.
    pub fn encoded_coefficients(&self) -> &[i64] {
        &self.coeffs.c
    }
    /// The square root's b'_k (k < T), B' = A C'^(-1); empty for the tree.
    pub fn release_coefficients(&self) -> &[f64] {
        &self.coeffs.b
    }
}

/// Public coefficients of one (mechanism, horizon).
#[derive(Debug)]
struct Coefficients {
    /// c'_k (square root only).
    c: Vec<i64>,
    /// b'_k (square root only).
    b: Vec<f64>,
    /// Variance of the released total at t, per sigma'^2.
    var: Vec<f64>,
    /// sum_k c'_k^2 (square root only).
    s: u128,
}

/// floor(log2 T) + 1.
fn levels_for(horizon: u32) -> u32 {
    u32::BITS - horizon.max(1).leading_zeros()
}

/// ceil(sqrt(n)), exact.
fn ceil_sqrt(n: u128) -> u128 {
    let r = n.isqrt();
    if r * r == n { r } else { r + 1 }
}

/// The coefficients of (mechanism, horizon), built once per process.
fn coefficients(
    mechanism: StreamMechanism,
    horizon: u32,
) -> Result<Arc<Coefficients>, PrivacyError> {
    type Cache = Mutex<HashMap<(StreamMechanism, u32), Arc<Coefficients>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // A poisoned lock only means another thread panicked while inserting;
    // the map holds complete entries only.
    if let Some(c) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&(mechanism, horizon))
    {
        return Ok(c.clone());
    }
    let built = Arc::new(match mechanism {
        StreamMechanism::Tree => tree_coefficients(horizon),
        StreamMechanism::SqrtFactorization => sqrt_coefficients(horizon)?,
    });
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert((mechanism, horizon), built.clone());
    Ok(built)
}

fn tree_coefficients(horizon: u32) -> Coefficients {
    let g2 = (GAMMA as f64).powi(2);
    Coefficients {
        c: Vec::new(),
        b: Vec::new(),
        var: (1..=horizon)
            .map(|i| f64::from(i.count_ones()) / g2)
            .collect(),
        s: 0,
    }
}

/// c'_k = round(gamma binom(2k, k) / 4^k), k < `horizon`, checked positive
/// and non-increasing.
fn encoded_sqrt_coefficients(horizon: u32) -> Result<Vec<i64>, PrivacyError> {
    let n = horizon as usize;
    let mut c = Vec::with_capacity(n);
    let mut ck = 1.0f64;
    for k in 0..n {
        if k > 0 {
            ck *= (2 * k - 1) as f64 / (2 * k) as f64;
        }
        c.push((GAMMA as f64 * ck).round() as i64);
    }
    // The privacy argument needs c' positive and non-increasing; rounding a
    // decreasing sequence keeps it so, but check what is actually used.
    if c.iter().any(|&x| x <= 0) || c.windows(2).any(|w| w[1] > w[0]) {
        return Err(PrivacyError::InvalidParameter {
            name: "horizon",
            reason: "encoded square-root coefficients are not positive and non-increasing".into(),
        });
    }
    Ok(c)
}

/// c' and b' = prefix sums of the power-series inverse of c' (O(T^2) once
/// per horizon: about 50 ms at T = 10,000 in a release build).
fn sqrt_coefficients(horizon: u32) -> Result<Coefficients, PrivacyError> {
    let n = horizon as usize;
    let c = encoded_sqrt_coefficients(horizon)?;
    let cf: Vec<f64> = c.iter().map(|&x| x as f64).collect();
    let mut inv = vec![0.0f64; n];
    inv[0] = 1.0 / cf[0];
    for k in 1..n {
        let acc: f64 = cf[1..=k]
            .iter()
            .zip(inv[..k].iter().rev())
            .map(|(c, i)| c * i)
            .sum();
        inv[k] = -acc / cf[0];
    }
    let mut b = Vec::with_capacity(n);
    let mut acc = 0.0;
    for v in &inv {
        acc += v;
        b.push(acc);
    }
    let mut var = Vec::with_capacity(n);
    let mut acc = 0.0;
    for v in &b {
        acc += v * v;
        var.push(acc);
    }
    let s = c.iter().map(|&x| (x as u128).pow(2)).sum();
    Ok(Coefficients { c, b, var, s })
}

/// A stream's durable record: parameters, the noise already drawn and what
/// was released. It holds the exact increments, so it stays on the node;
/// persist it after every [`ContinualStream::release`] and before the value
/// leaves, so that a restart never draws noise again for a released step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamState {
    params: StreamParams,
    /// sigma' at creation; a restore under a different calibration is
    /// refused (the noise of one stream has one scale).
    sigma: f64,
    gamma: i64,
    /// The stream's [`RunId`], hex.
    run: String,
    next_step: u32,
    /// d_0 .. d_(next_step - 1).
    increments: Vec<i64>,
    /// y_0 .. y_(next_step - 1): the noisy encoded values.
    noisy: Vec<i64>,
    /// The running totals released.
    released: Vec<f64>,
}

/// One released step of a stream, as stored: a stream's durable state is
/// its header ([`StreamState::header`]) and its steps in order, so a window
/// appends O(1) instead of rewriting every step so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamStep {
    /// The step's exact (encoded) increment d_t.
    pub increment: i64,
    /// The step's noisy encoded value y_t.
    pub noisy: i64,
    /// The running total released at the step.
    pub released: f64,
}

impl StreamState {
    /// The parameters the stream was made with.
    pub fn params(&self) -> &StreamParams {
        &self.params
    }
    /// The first step not yet released.
    pub fn next_step(&self) -> u32 {
        self.next_step
    }
    /// The state with no step released: parameters, scale and run id.
    pub fn header(&self) -> StreamState {
        StreamState {
            params: self.params,
            sigma: self.sigma,
            gamma: self.gamma,
            run: self.run.clone(),
            next_step: 0,
            increments: Vec::new(),
            noisy: Vec::new(),
            released: Vec::new(),
        }
    }
    /// Step `t`, if it was released.
    pub fn step(&self, t: u32) -> Option<StreamStep> {
        let i = t as usize;
        Some(StreamStep {
            increment: *self.increments.get(i)?,
            noisy: *self.noisy.get(i)?,
            released: *self.released.get(i)?,
        })
    }
    /// Appends the next step read back from storage (what
    /// [`ContinualStream::restore`] then checks: it refuses a state whose
    /// released values are not the post-processing of its noise).
    pub fn push_step(&mut self, step: StreamStep) {
        self.increments.push(step.increment);
        self.noisy.push(step.noisy);
        self.released.push(step.released);
        self.next_step = self.next_step.saturating_add(1);
    }
}

/// One stream-day of continual release (see the module docs).
///
/// Charge [`StreamParams::rho`] once for the stream ([`run`](Self::run))
/// before the first [`release`](Self::release). Deliberately not `Clone`:
/// two copies could draw two noises for one step.
#[derive(Debug)]
pub struct ContinualStream {
    calibration: Calibration,
    state: StreamState,
    run: RunId,
    /// P_i = d_0 + ... + d_(i-1), P_0 = 0 (tree nodes in O(1)).
    prefix: Vec<i64>,
}

impl ContinualStream {
    /// A fresh stream at step 0.
    pub fn new(params: StreamParams) -> Result<Self, PrivacyError> {
        let calibration = params.calibrate()?;
        let run = RunId::generate()?;
        let n = params.horizon as usize;
        let state = StreamState {
            params,
            sigma: calibration.sigma,
            gamma: GAMMA,
            run: hex::encode(run.as_bytes()),
            next_step: 0,
            increments: Vec::with_capacity(n),
            noisy: Vec::with_capacity(n),
            released: Vec::with_capacity(n),
        };
        let mut prefix = Vec::with_capacity(n + 1);
        prefix.push(0);
        Ok(Self {
            calibration,
            state,
            run,
            prefix,
        })
    }

    /// Continues a stream from its durable state. Refuses a state made
    /// under other parameters or another calibration, or one that is
    /// malformed (lengths, increment range, released values that are not
    /// B' y).
    pub fn restore(params: StreamParams, state: StreamState) -> Result<Self, PrivacyError> {
        let bad = |reason: String| PrivacyError::InvalidParameter {
            name: "stream state",
            reason,
        };
        if state.params != params {
            return Err(bad(format!(
                "made under {:?}, not {params:?}",
                state.params
            )));
        }
        let calibration = params.calibrate()?;
        // JSON may move a float by an ulp (serde_json's default parser);
        // another calibration (e.g. a changed OpenDP map) moves it further.
        let same_scale = (state.sigma / calibration.sigma - 1.0).abs() <= 1e-12;
        if !same_scale || state.gamma != GAMMA {
            return Err(bad(format!(
                "noise scale {} (gamma {}) differs from this calibration's {} (gamma {GAMMA})",
                state.sigma, state.gamma, calibration.sigma
            )));
        }
        let n = state.next_step as usize;
        if state.next_step > params.horizon
            || state.increments.len() != n
            || state.noisy.len() != n
            || state.released.len() != n
        {
            return Err(bad(format!(
                "next step {} of {} with {} increments, {} noisy values, {} releases",
                state.next_step,
                params.horizon,
                state.increments.len(),
                state.noisy.len(),
                state.released.len()
            )));
        }
        let run_bytes: [u8; 16] = hex::decode(&state.run)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("run id is not 16 hex bytes".into()))?;
        let mut prefix = Vec::with_capacity(params.horizon as usize + 1);
        prefix.push(0i64);
        for &d in &state.increments {
            check_increment(d)?;
            let last = prefix[prefix.len() - 1];
            prefix.push(last.checked_add(d).ok_or(PrivacyError::Overflow {
                what: "stream running total",
            })?);
        }
        let stream = Self {
            calibration,
            run: RunId::from_bytes(run_bytes),
            prefix,
            state,
        };
        for (t, &r) in stream.state.released.iter().enumerate() {
            let want = stream.total_at(t);
            if !(r.is_finite() && (r - want).abs() <= 1e-9 * (1.0 + want.abs())) {
                return Err(bad(format!(
                    "released value {r} at step {t} is not the post-processing {want} of the noise"
                )));
            }
        }
        Ok(stream)
    }

    /// The durable state (persist it after every release).
    pub fn state(&self) -> &StreamState {
        &self.state
    }
    /// The first step not yet released.
    pub fn next_step(&self) -> u32 {
        self.state.next_step
    }
    /// The stream's run: its cost is charged once per run.
    pub fn run(&self) -> RunId {
        self.run
    }
    /// The stream's calibration.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }
    /// The value released at step `t`, if it was.
    pub fn released(&self, t: u32) -> Option<f64> {
        self.state.released.get(t as usize).copied()
    }

    /// Releases the running total at step `t` from the exact increment of
    /// step `t`. Steps `next_step..t` are advanced with increment 0 first
    /// (their noise drawn, their totals recorded and available through
    /// [`released`](Self::released)). Refuses `t < next_step` (already
    /// released: no noise is ever drawn again for it) and `t >= horizon`;
    /// refuses |increment| > [`MAX_ABS_INCREMENT`] before drawing anything.
    ///
    /// # Privacy
    /// See the module docs: the whole stream costs
    /// [`StreamParams::rho`], charged once per [`run`](Self::run); the value
    /// carries that cost, the run and, as its scale, [`Calibration::std_at`].
    pub fn release(&mut self, t: u32, increment: i64) -> Result<Privatized, PrivacyError> {
        let horizon = self.state.params.horizon;
        if t >= horizon {
            return Err(PrivacyError::Halted {
                mechanism: MECHANISM,
                reason: format!("step {t} is past the horizon of {horizon} steps"),
            });
        }
        if t < self.state.next_step {
            return Err(PrivacyError::InvalidParameter {
                name: "step",
                reason: format!(
                    "step {t} was already released (next step is {})",
                    self.state.next_step
                ),
            });
        }
        check_increment(increment)?;
        let m = noise::gaussian_scalar(self.calibration.sigma)?;
        for s in self.state.next_step..=t {
            let d = if s == t { increment } else { 0 };
            let last = self.prefix[self.prefix.len() - 1];
            let p = last.checked_add(d).ok_or(PrivacyError::Overflow {
                what: "stream running total",
            })?;
            let exact = self.encoded(s as usize, d, p)?;
            // Nothing below can fail after the draw: the step is recorded
            // whole or not at all.
            let y = m.invoke(&exact)?;
            self.prefix.push(p);
            self.state.increments.push(d);
            self.state.noisy.push(y);
            let total = self.total_at(s as usize);
            self.state.released.push(total);
            self.state.next_step = s + 1;
        }
        Ok(Privatized::in_run(
            self.state.released[t as usize],
            self.state.params.mechanism.kind(),
            self.calibration.std_at(t),
            Cost::Zcdp(self.state.params.rho),
            self.run,
        ))
    }

    /// (C' d)_t, with d_t = `d` and P_(t+1) = `p` not yet recorded.
    fn encoded(&self, t: usize, d: i64, p: i64) -> Result<i64, PrivacyError> {
        let overflow = PrivacyError::Overflow {
            what: "encoded stream value",
        };
        let v: i128 = match self.state.params.mechanism {
            StreamMechanism::Tree => {
                let i = t + 1;
                let width = 1usize << i.trailing_zeros();
                i128::from(p - self.prefix[i - width]) * i128::from(GAMMA)
            }
            StreamMechanism::SqrtFactorization => {
                let c = &self.calibration.coeffs.c;
                let past: i128 = self
                    .state
                    .increments
                    .iter()
                    .enumerate()
                    .map(|(s, &x)| i128::from(c[t - s]) * i128::from(x))
                    .sum();
                past + i128::from(c[0]) * i128::from(d)
            }
        };
        // |v| <= 2^61 by the bounds on T and increments (module docs).
        i64::try_from(v).map_err(|_| overflow)
    }

    /// B' y at step t from the recorded noisy values y_0..y_t.
    fn total_at(&self, t: usize) -> f64 {
        let y = &self.state.noisy;
        match self.state.params.mechanism {
            StreamMechanism::Tree => {
                let mut i = t + 1;
                let mut sum = 0i128;
                while i > 0 {
                    sum += i128::from(y[i - 1]);
                    i &= i - 1;
                }
                sum as f64 / GAMMA as f64
            }
            StreamMechanism::SqrtFactorization => {
                let b = &self.calibration.coeffs.b;
                (0..=t).map(|s| b[t - s] * y[s] as f64).sum()
            }
        }
    }
}

#[cfg(test)]
impl ContinualStream {
    /// Test only: multiplies the noise scale by `factor` (for negative
    /// controls that must be caught by the distribution tests).
    pub(crate) fn dangerous_scale_noise(&mut self, factor: f64) {
        self.calibration.sigma *= factor;
    }
}

fn check_increment(d: i64) -> Result<(), PrivacyError> {
    if d.unsigned_abs() > MAX_ABS_INCREMENT.unsigned_abs() {
        return Err(PrivacyError::Overflow {
            what: "stream increment (|d| > 2^31)",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
