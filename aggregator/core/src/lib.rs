//! # veil-aggregator-core
//!
//! The part of the aggregator that decides and writes: who is calling
//! ([`identity`], [`auth`]), which policy is in force ([`policy`]), the
//! privacy-budget [`ledger`], the tamper-evident [`audit`] log, durable
//! [`storage`], and [`ingest`] of node releases with its group committer.
//! A write that needs an audit entry goes through
//! [`storage::Storage::run_audited`]; time comes from the [`Clock`] in
//! [`Core`].
//!
//! It never receives raw events or identifiers, and holds no transport: no
//! gRPC server, HTTP, CLI or metrics exporter. The application crate
//! (`veil-aggregator`) maps [`Error`] to gRPC status in one place.

pub mod audit;
pub mod audited;
pub mod auth;
mod error;
pub mod identity;
pub mod ingest;
pub mod ledger;
pub mod policy;
pub mod storage;

use std::sync::Arc;

pub use error::Error;
pub use veil_common::{Clock, SystemClock};

/// What every request handler shares: who may call, policies, storage, the
/// audit log, ingest limits and the clock.
#[derive(Debug)]
pub struct Core {
    /// Registered nodes and principals.
    pub registry: auth::Registry,
    /// Policies in force.
    pub policies: policy::Policies,
    /// Database.
    pub storage: storage::Storage,
    /// Audit log.
    pub audit: audit::AuditLog,
    /// Ingest limits.
    pub limits: ingest::Limits,
    /// The aggregator's clock.
    pub clock: Arc<dyn Clock>,
}

impl Core {
    /// Current time by [`Core::clock`], Unix ms.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}
