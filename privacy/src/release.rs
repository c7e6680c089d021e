//! The released-value type. Only this crate can construct a [`Privatized`], so
//! un-noised data cannot be handed to an uploader by mistake.

use ring::rand::{SecureRandom, SystemRandom};

use crate::{Cost, PrivacyError};

/// The mechanism that produced a released value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MechanismKind {
    /// Integer count + discrete Laplace noise (pure DP).
    DiscreteLaplace,
    /// Integer count + discrete Gaussian noise (zCDP).
    DiscreteGaussian,
    /// Clamped real sum + discrete Laplace on a fixed grid (pure DP).
    LaplaceSum,
    /// Clamped real sum + discrete Gaussian on a fixed grid (zCDP).
    GaussianSum,
    /// One bucket of a histogram with threshold suppression
    /// (discrete Laplace, approximate DP).
    StabilityHistogram,
    /// An alert raised by the sparse vector technique (pure DP).
    SparseVectorAlert,
    /// A running total from the binary-tree counter with discrete Laplace
    /// noise (pure DP).
    TreeCounterLaplace,
    /// A running total from the binary-tree counter with discrete Gaussian
    /// noise (zCDP).
    TreeCounterGaussian,
    /// A running total of a whole-day stream from the binary-tree
    /// factorization, discrete Gaussian on an exact integer encoding (zCDP;
    /// `mechanisms::continual`).
    ContinualTree,
    /// A running total of a whole-day stream from the square-root (Toeplitz)
    /// matrix factorization, discrete Gaussian on an exact integer encoding
    /// (zCDP; `mechanisms::continual`).
    ContinualSqrt,
    /// Policy-declared non-personal value, released without noise.
    NonPersonal,
}

/// Identifies one run of a mechanism that releases several values under one
/// privacy guarantee (a histogram, a sparse-vector instance, a tree counter).
///
/// Every [`Privatized`] from such a run carries the run's whole cost and its
/// `RunId`: a ledger charges a run's cost once per distinct `RunId` (and
/// before the run draws noise, through the mechanism's own `cost()`).
/// A consumer that ignores the id and charges every value over-charges, which
/// is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId([u8; 16]);

impl RunId {
    /// A fresh random run id (from the OS CSPRNG).
    pub(crate) fn generate() -> Result<Self, PrivacyError> {
        let mut b = [0u8; 16];
        SystemRandom::new()
            .fill(&mut b)
            .map_err(|_| PrivacyError::Randomness)?;
        Ok(Self(b))
    }
    /// The id of a run restored from durable state.
    pub(crate) fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
    /// The id's bytes (for the wire and the audit log; not personal data).
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

/// A value that may leave the node: the output of a DP mechanism (with its
/// public noise scale and cost), or a value the policy declared non-personal.
#[derive(Debug, Clone, PartialEq)]
pub struct Privatized {
    value: f64,
    mechanism: MechanismKind,
    scale: f64,
    cost: Cost,
    run: Option<RunId>,
}

impl Privatized {
    /// Only mechanisms in this crate call this.
    pub(crate) fn new(value: f64, mechanism: MechanismKind, scale: f64, cost: Cost) -> Self {
        Self {
            value,
            mechanism,
            scale,
            cost,
            run: None,
        }
    }
    /// A value released as part of a multi-release run; `cost` is the whole
    /// run's cost.
    pub(crate) fn in_run(
        value: f64,
        mechanism: MechanismKind,
        scale: f64,
        cost: Cost,
        run: RunId,
    ) -> Self {
        Self {
            value,
            mechanism,
            scale,
            cost,
            run: Some(run),
        }
    }
    /// The released (noisy) value.
    pub fn value(&self) -> f64 {
        self.value
    }
    /// The mechanism that produced it.
    pub fn mechanism(&self) -> MechanismKind {
        self.mechanism
    }
    /// Public noise parameter (Laplace b or Gaussian sigma, in the value's
    /// units), 0 for non-personal.
    pub fn scale(&self) -> f64 {
        self.scale
    }
    /// Privacy cost of this release; for a value with a [`RunId`], the cost
    /// of the whole run (charged once per run).
    pub fn cost(&self) -> Cost {
        self.cost
    }
    /// The multi-release run this value belongs to, if any.
    pub fn run(&self) -> Option<RunId> {
        self.run
    }
}
