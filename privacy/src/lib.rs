//! # veil-privacy
//!
//! The one place where Veil decides privacy: DP mechanisms (over OpenDP's
//! samplers), privacy-cost types and accounting, contribution bounds, keyed
//! pseudonyms and the audit log's hashing primitives.
//!
//! This crate never touches the network, a database or a clock it was not
//! given, and never draws noise from anything but OpenDP's samplers. A value
//! can leave a node only as a [`Privatized`], which only this crate can
//! construct.
#![warn(missing_docs)]

pub mod accounting;
/// The audit log's entries, Merkle tree and checkpoints: the `veil-audit`
/// crate, re-exported under its old path.
pub use veil_audit as audit;
pub mod bounds;
pub mod cost;
pub mod distributed_noise;
pub mod error;
pub mod mechanisms;
pub mod model_update;
mod noise;
pub mod policy;
pub mod pseudonym;
pub mod release;
pub mod sample;
/// Byte scans of the strict JSON-line readers, from `veil-common`.
pub use veil_common::scan;
#[cfg(test)]
mod test_stats;

pub use accounting::{Budget, Composition};
pub use bounds::{Admission, BoundingStats, ContributionBounder, ContributionLimits};
pub use cost::{Cost, Delta, Epsilon, Rho};
pub use error::PrivacyError;
pub use pseudonym::{DayKey, EventDay, Pseudonym, Pseudonymizer};
pub use release::{MechanismKind, Privatized, RunId};
pub use sample::{
    SampleMechanism, noise_vec_discrete_gaussian, noise_vec_discrete_laplace, sample,
};
