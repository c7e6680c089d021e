//! What the application's services share: the core (who may call,
//! policies, storage, audit log, limits, clock) and the organizer layer's
//! handles (metrics, the alert hub), which hear about committed releases
//! through [`CommitObserver`].

use std::{ops::Deref, sync::Arc, time::Duration};

use veil_aggregator_core::{Core, ingest::CommitObserver, storage::StoredRelease};

/// Shared aggregator state.
#[derive(Debug)]
pub struct State {
    /// The core: decides and writes.
    pub core: Arc<Core>,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    /// Organizer alerts and live series: committed releases in, alert
    /// events and series points out.
    pub alerts: crate::alerts::AlertHub,
}

/// The services read the core's handles (`st.storage`, `st.audit`, ...)
/// through the state.
impl Deref for State {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl CommitObserver for State {
    fn group_committed(&self, calls: usize, releases: usize, took: Duration) {
        self.metrics.record_group(calls, releases, took);
    }

    fn releases_stored(&self, releases: Vec<StoredRelease>) {
        self.alerts.offer(releases);
    }
}
