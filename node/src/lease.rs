//! Budget leases: before the node draws any noise for a metric, it holds a
//! lease from the aggregator's ledger that already charged the cost. No
//! lease, no release: a window waits (and the wait is counted) while the
//! ledger is unreachable, and a metric stops being released once the day's
//! budget is exhausted.

use std::{collections::HashMap, time::Duration};

use tonic::transport::Channel;
use veil_privacy::Cost;
use veil_proto::{AcquireLeaseRequest, PrivacyCost, ledger_client::LedgerClient};

use crate::upload::{Backoff, classify};

/// Why no lease was obtained.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The venue's budget for the day cannot cover it.
    #[error("budget exhausted: {0}")]
    Exhausted(String),
    /// Refused for good (policy, identity): an operator must act.
    #[error("lease refused: {0}")]
    Refused(String),
    /// Asked to stop while waiting.
    #[error("stopped while waiting for a lease")]
    Stopped,
}

struct Held {
    id: String,
    remaining: u32,
}

/// Counters of the lease path (safe to export).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaseStats {
    /// Leases granted.
    pub granted: u64,
    /// Lease attempts that failed transiently (the window waited).
    pub waits: u64,
    /// Releases not made because the budget was exhausted.
    pub exhausted_releases: u64,
}

/// Leases held by this node, per (metric, purpose, day).
pub struct Leases {
    client: LedgerClient<Channel>,
    policy_hash: String,
    /// Each lease covers this many windows' worth of releases.
    windows_per_lease: u32,
    max_backoff: Duration,
    /// The ledger's endpoint, named in warnings while it is unreachable.
    aggregator: String,
    held: HashMap<(String, String, String), Held>,
    exhausted: HashMap<(String, String, String), ()>,
    /// Counters.
    pub stats: LeaseStats,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("held", &self.held.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Leases {
    /// A lease holder talking to the aggregator's ledger.
    pub fn new(channel: Channel, policy_hash: &str, windows_per_lease: u32) -> Self {
        Self {
            client: LedgerClient::new(channel),
            policy_hash: policy_hash.to_owned(),
            windows_per_lease: windows_per_lease.max(1),
            max_backoff: Duration::from_secs(30),
            aggregator: String::new(),
            held: HashMap::new(),
            exhausted: HashMap::new(),
            stats: LeaseStats::default(),
        }
    }

    /// Names the aggregator's endpoint in the warnings logged while its
    /// ledger is unreachable.
    pub fn with_endpoint(mut self, aggregator: &str) -> Self {
        self.aggregator = aggregator.to_owned();
        self
    }

    /// Caps the wait between attempts while the ledger is unreachable.
    pub fn with_max_backoff(mut self, max_backoff: Duration) -> Self {
        self.max_backoff = max_backoff;
        self
    }

    /// A lease id covering `n` more releases of `metric` for `purpose` on
    /// `day` at `cost` each, acquiring (and so charging) a new lease when the
    /// held one cannot cover them. Waits with backoff while the ledger is
    /// unreachable, until `stop` is set.
    pub async fn take(
        &mut self,
        metric: &str,
        purpose: &str,
        day: &str,
        cost: Cost,
        n: u32,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<String, LeaseError> {
        let key = (metric.to_owned(), purpose.to_owned(), day.to_owned());
        if self.exhausted.contains_key(&key) {
            self.stats.exhausted_releases += u64::from(n);
            return Err(LeaseError::Exhausted(format!("{metric} on {day}")));
        }
        if let Some(h) = self.held.get_mut(&key)
            && h.remaining >= n
        {
            h.remaining -= n;
            return Ok(h.id.clone());
        }
        let releases = n.saturating_mul(self.windows_per_lease).clamp(n, 100_000);
        let id = self.acquire(&key, cost, releases, n, None, stop).await?;
        self.held.insert(
            key,
            Held {
                id: id.clone(),
                remaining: releases - n,
            },
        );
        Ok(id)
    }

    /// A stream lease for every release of `metric` on event `day` by this
    /// node (`zones` x `horizon` at most): the ledger charges `cost`, the
    /// whole stream-day's cost per privacy unit, once. Waits like
    /// [`take`](Self::take) while the ledger is unreachable.
    #[allow(clippy::too_many_arguments)]
    pub async fn take_stream(
        &mut self,
        metric: &str,
        purpose: &str,
        day: &str,
        cost: Cost,
        horizon: u32,
        zones: u32,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<String, LeaseError> {
        let key = (metric.to_owned(), purpose.to_owned(), day.to_owned());
        if self.exhausted.contains_key(&key) {
            return Err(LeaseError::Exhausted(format!("{metric} on {day}")));
        }
        let releases = horizon.saturating_mul(zones.max(1)).min(1_000_000);
        let stream = veil_proto::StreamLease { horizon, zones };
        self.acquire(&key, cost, releases, 0, Some(stream), stop)
            .await
    }

    async fn acquire(
        &mut self,
        key: &(String, String, String),
        cost: Cost,
        releases: u32,
        n: u32,
        stream: Option<veil_proto::StreamLease>,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<String, LeaseError> {
        let (metric, purpose, day) = (&key.0, &key.1, &key.2);
        let mut backoff = Backoff::new(Duration::from_millis(200), self.max_backoff);
        loop {
            let req = AcquireLeaseRequest {
                day: day.to_owned(),
                metric: metric.to_owned(),
                purpose: purpose.to_owned(),
                cost_per_release: Some(PrivacyCost {
                    epsilon: cost.epsilon(),
                    rho: cost.rho(),
                }),
                releases,
                policy_hash: self.policy_hash.clone(),
                stream,
            };
            match self.client.acquire_lease(req).await {
                Ok(resp) => {
                    let lease = resp.into_inner();
                    self.stats.granted += 1;
                    tracing::info!(%metric, %day, releases, stream = stream.is_some(), remaining_epsilon = lease.remaining_epsilon, "Budget lease granted.");
                    return Ok(lease.lease_id);
                }
                // Exhausted, not busy: a busy aggregator sends a retry hint.
                Err(status)
                    if status.code() == tonic::Code::ResourceExhausted
                        && crate::upload::retry_hint(&status).is_none() =>
                {
                    tracing::error!(%metric, %day, reason = %status.message(), "Privacy budget exhausted: this metric is not released again today.");
                    self.exhausted.insert(key.clone(), ());
                    self.stats.exhausted_releases += u64::from(n);
                    return Err(LeaseError::Exhausted(status.message().to_owned()));
                }
                Err(status) => match classify(&status) {
                    e if e.is_transient() => {
                        if *stop.borrow() {
                            return Err(LeaseError::Stopped);
                        }
                        self.stats.waits += 1;
                        let d = backoff.next_delay().max(e.retry_hint().unwrap_or_default());
                        tracing::warn!(aggregator = %self.aggregator, error = %e, retry_in_ms = d.as_millis() as u64, "No budget lease yet (the aggregator's ledger is unreachable); the window waits, nothing is released.");
                        let mut stop = stop.clone();
                        tokio::select! {
                            () = tokio::time::sleep(d) => {},
                            _ = stop.wait_for(|s| *s) => {},
                        }
                    }
                    other => return Err(LeaseError::Refused(other.to_string())),
                },
            }
        }
    }
}
