//! What every gRPC service shares: who may call, policies, storage, the
//! audit log and limits.

use crate::{
    audit::AuditLog, auth::Registry, config::IngestConfig, policy::Policies, storage::Storage,
};

/// Shared aggregator state.
#[derive(Debug)]
pub struct State {
    /// Registered nodes and principals.
    pub registry: Registry,
    /// Policies in force.
    pub policies: Policies,
    /// Database.
    pub storage: Storage,
    /// Audit log.
    pub audit: AuditLog,
    /// Ingest limits.
    pub limits: IngestConfig,
    /// Prometheus metrics (issue 9).
    pub metrics: crate::metrics::Metrics,
    /// Organizer alerts and live series (issue 9): committed releases in,
    /// alert events and series points out.
    pub alerts: crate::alerts::AlertHub,
}

/// Current wall-clock time, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
