//! Errors of the privacy layer.

/// Why a privacy operation was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum PrivacyError {
    /// A parameter is out of its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidParameter {
        /// Which parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An input value was NaN or infinite.
    #[error("non-finite input value for {what}")]
    NonFinite {
        /// What value.
        what: &'static str,
    },
    /// An integer accumulation or a rescaled output would overflow.
    #[error("overflow in {what}")]
    Overflow {
        /// What overflowed.
        what: &'static str,
    },
    /// A stateful mechanism has released all it may (e.g. the sparse vector
    /// reached its alert cap, or a tree counter its horizon).
    #[error("{mechanism} halted: {reason}")]
    Halted {
        /// Which mechanism.
        mechanism: &'static str,
        /// Why it stopped.
        reason: String,
    },
    /// The operating system's secure random generator failed.
    #[error("system randomness unavailable")]
    Randomness,
    /// OpenDP refused to build or run a measurement.
    #[error("opendp: {0}")]
    OpenDp(String),
    /// The budget cannot cover the requested spend.
    #[error("budget exhausted: requested {requested}, remaining {remaining}")]
    BudgetExhausted {
        /// Cost requested (epsilon or rho, per the budget's unit).
        requested: f64,
        /// What was left.
        remaining: f64,
    },
}

impl From<opendp::error::Error> for PrivacyError {
    fn from(e: opendp::error::Error) -> Self {
        PrivacyError::OpenDp(format!(
            "{:?}: {}",
            e.variant,
            e.message.unwrap_or_default()
        ))
    }
}
