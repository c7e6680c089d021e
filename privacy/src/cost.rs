//! Privacy-cost units: pure epsilon and zCDP rho, as validated newtypes.

use serde::{Deserialize, Serialize};

use crate::PrivacyError;

/// Pure differential privacy parameter epsilon: finite, > 0.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Epsilon(f64);

impl Epsilon {
    /// Validates `v` as an epsilon (finite, strictly positive).
    pub fn new(v: f64) -> Result<Self, PrivacyError> {
        if v.is_finite() && v > 0.0 {
            Ok(Self(v))
        } else {
            Err(PrivacyError::InvalidParameter {
                name: "epsilon",
                reason: format!("must be finite and > 0, got {v}"),
            })
        }
    }
    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Epsilon {
    type Error = PrivacyError;
    fn try_from(v: f64) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}
impl From<Epsilon> for f64 {
    fn from(e: Epsilon) -> f64 {
        e.0
    }
}

/// Zero-concentrated DP parameter rho: finite, > 0.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Rho(f64);

impl Rho {
    /// Validates `v` as a rho (finite, strictly positive).
    pub fn new(v: f64) -> Result<Self, PrivacyError> {
        if v.is_finite() && v > 0.0 {
            Ok(Self(v))
        } else {
            Err(PrivacyError::InvalidParameter {
                name: "rho",
                reason: format!("must be finite and > 0, got {v}"),
            })
        }
    }
    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Rho {
    type Error = PrivacyError;
    fn try_from(v: f64) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}
impl From<Rho> for f64 {
    fn from(r: Rho) -> f64 {
        r.0
    }
}

/// Approximate-DP slack delta: finite, in [0, 1).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Delta(f64);

impl Delta {
    /// Validates `v` as a delta (finite, 0 <= v < 1).
    pub fn new(v: f64) -> Result<Self, PrivacyError> {
        if v.is_finite() && (0.0..1.0).contains(&v) && !v.is_sign_negative() {
            Ok(Self(v))
        } else {
            Err(PrivacyError::InvalidParameter {
                name: "delta",
                reason: format!("must be finite and in [0, 1), got {v}"),
            })
        }
    }
    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Delta {
    type Error = PrivacyError;
    fn try_from(v: f64) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}
impl From<Delta> for f64 {
    fn from(d: Delta) -> f64 {
        d.0
    }
}

/// The privacy cost of one release (or of one multi-release mechanism run):
/// pure epsilon, zCDP rho, approximate (epsilon, delta), or nothing (for
/// policy-declared non-personal values).
///
/// How costs compose is in [`crate::accounting`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Cost {
    /// Pure epsilon-DP.
    Pure(Epsilon),
    /// rho-zCDP.
    Zcdp(Rho),
    /// Approximate (epsilon, delta)-DP, e.g. a histogram with threshold
    /// suppression.
    Approx {
        /// epsilon.
        epsilon: Epsilon,
        /// delta.
        delta: Delta,
    },
    /// No privacy cost: a non-personal value declared by policy.
    Free,
}

impl Cost {
    /// Epsilon component (pure or approximate; 0 for zCDP and free).
    pub fn epsilon(&self) -> f64 {
        match self {
            Cost::Pure(e) | Cost::Approx { epsilon: e, .. } => e.get(),
            _ => 0.0,
        }
    }
    /// Delta component (0 unless approximate).
    pub fn delta(&self) -> f64 {
        match self {
            Cost::Approx { delta, .. } => delta.get(),
            _ => 0.0,
        }
    }
    /// Rho component (0 unless zCDP).
    pub fn rho(&self) -> f64 {
        match self {
            Cost::Zcdp(r) => r.get(),
            _ => 0.0,
        }
    }
}
