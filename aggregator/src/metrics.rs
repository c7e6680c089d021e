//! Prometheus metrics of a running aggregator (`GET /metrics`, text
//! exposition format, on the plain-HTTP `[metrics] listen` address).
//!
//! Only operational counters and gauges: releases accepted, refusals by
//! reason, ack latency, budget left per configured venue, alerts, stream lag.
//! Never a released value or anything derived from one other than the
//! venue's remaining privacy budget, which is public ledger state. Label
//! values come from closed sets (ack statuses, fixed reasons, configured
//! venue names), so label cardinality is bounded whatever peers send.

use std::{net::SocketAddr, sync::Arc};

use veil_aggregator_core::Core;

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use serde::Deserialize;

/// `[metrics]` in `aggregator.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Plain-HTTP listen address of `/metrics` (keep it on loopback or a
    /// scrape network: it carries no data values but is unauthenticated).
    pub listen: SocketAddr,
}

/// Metric names (the `veil_aggregator_` prefix is added on registration).
pub mod name {
    /// Releases stored.
    pub const RELEASES_ACCEPTED: &str = "releases_accepted";
    /// Releases not stored, by reason.
    pub const RELEASES_REFUSED: &str = "releases_refused";
    /// Callers refused at authentication/authorisation, by surface.
    pub const AUTH_REFUSALS: &str = "auth_refusals";
    /// SubmitReleases calls answered RESOURCE_EXHAUSTED, by reason.
    pub const ADMISSION_REFUSALS: &str = "ingest_admission_refusals";
    /// gRPC requests refused before their body was read, by reason.
    pub const REQUEST_REFUSALS: &str = "request_refusals";
    /// SubmitReleases latency to the ack.
    pub const ACK_LATENCY: &str = "ack_latency_seconds";
    /// Budget left today per venue.
    pub const BUDGET_LEFT: &str = "budget_remaining_epsilon";
    /// Alerts raised/resolved/acknowledged.
    pub const ALERTS: &str = "alerts";
    /// Stream events skipped by lagging consumers.
    pub const STREAM_LAGGED: &str = "stream_lagged_events";
    /// Dashboard requests by outcome.
    pub const DASHBOARD_REQUESTS: &str = "dashboard_requests";
    /// Releases per group commit.
    pub const COMMIT_GROUP_RELEASES: &str = "commit_group_releases";
    /// SubmitReleases calls per group commit.
    pub const COMMIT_GROUP_CALLS: &str = "commit_group_calls";
    /// Time to decide, store and commit one group.
    pub const COMMIT_SECONDS: &str = "commit_seconds";
}

/// A label from a closed set of values.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Reason (an ack status, a fixed refusal reason).
    pub reason: &'static str,
}

/// A configured venue's name (bounded: venues come from the config).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VenueLabel {
    /// Venue.
    pub venue: String,
}

/// An alert lifecycle event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabel {
    /// `raised`, `resolved` or `acknowledged`.
    pub event: &'static str,
}

/// The aggregator's metrics; cheap to clone (shared handles).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Releases stored.
    pub releases_accepted: Counter,
    /// Releases not stored (duplicate, conflict, invalid, denied, ...).
    pub releases_refused: Family<ReasonLabel, Counter>,
    /// Refused callers by surface (`grpc`, `dashboard`).
    pub auth_refusals: Family<ReasonLabel, Counter>,
    /// SubmitReleases calls refused by admission control (`queue_full`,
    /// `node_rate`).
    pub admission_refusals: Family<ReasonLabel, Counter>,
    /// gRPC requests refused before their body was read
    /// (`message_too_large`, `connection_budget`, `principal_budget`,
    /// `server_budget`).
    pub request_refusals: Family<ReasonLabel, Counter>,
    /// SubmitReleases call latency up to the ack (after commit).
    pub ack_latency: Histogram,
    /// Epsilon left today, per configured venue (refreshed on scrape).
    pub budget_left: Family<VenueLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Alert lifecycle events.
    pub alerts: Family<AlertLabel, Counter>,
    /// Stream events a lagging consumer skipped.
    pub stream_lagged: Counter,
    /// Committed batches that skipped alert evaluation (queue full).
    pub alert_queue_dropped: Counter,
    /// Serialises [`Metrics::sync_hub`] so concurrent scrapes add each delta once.
    hub_sync: Arc<std::sync::Mutex<()>>,
    /// Dashboard API requests by outcome (`ok`, `unauthorized`, `forbidden`, `bad_request`, `error`).
    pub dashboard_requests: Family<ReasonLabel, Counter>,
    /// Releases per group commit.
    pub commit_group_releases: Histogram,
    /// SubmitReleases calls per group commit.
    pub commit_group_calls: Histogram,
    /// Time to decide, store and commit one group.
    pub commit_seconds: Histogram,
    /// (group commits, calls, releases) so far, for `bench ingest` (the
    /// histograms above carry the same as `_count`/`_sum` for Prometheus).
    commit_totals: Arc<[std::sync::atomic::AtomicU64; 3]>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Seconds, 0.5 ms .. ~16 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16)
}

/// Counts 1 .. 16384.
fn size_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 15)
}

impl Metrics {
    /// Fresh metrics registered under the `veil_aggregator_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("veil_aggregator");
        let mut m = Self {
            registry: Arc::new(Registry::default()),
            releases_accepted: Counter::default(),
            releases_refused: Family::default(),
            auth_refusals: Family::default(),
            admission_refusals: Family::default(),
            request_refusals: Family::default(),
            ack_latency: Histogram::new(latency_buckets()),
            budget_left: Family::default(),
            alerts: Family::default(),
            stream_lagged: Counter::default(),
            alert_queue_dropped: Counter::default(),
            hub_sync: Arc::default(),
            dashboard_requests: Family::default(),
            commit_group_releases: Histogram::new(size_buckets()),
            commit_group_calls: Histogram::new(size_buckets()),
            commit_seconds: Histogram::new(latency_buckets()),
            commit_totals: Arc::default(),
        };
        r.register(
            name::RELEASES_ACCEPTED,
            "Releases stored (each committed with its ledger use and audit entry)",
            m.releases_accepted.clone(),
        );
        r.register(
            name::RELEASES_REFUSED,
            "Releases not stored, by reason (duplicate, conflict, invalid, denied, expired, batch)",
            m.releases_refused.clone(),
        );
        r.register(
            name::AUTH_REFUSALS,
            "Callers refused at authentication or authorisation, by surface",
            m.auth_refusals.clone(),
        );
        r.register(
            name::ADMISSION_REFUSALS,
            "SubmitReleases calls answered RESOURCE_EXHAUSTED before any work, by reason (queue_full, node_rate)",
            m.admission_refusals.clone(),
        );
        r.register(
            name::REQUEST_REFUSALS,
            "gRPC requests refused before their body was read, by reason (message_too_large, connection_budget, principal_budget, server_budget)",
            m.request_refusals.clone(),
        );
        r.register(
            name::ACK_LATENCY,
            "SubmitReleases call time until the acks are sent (after the durable commit)",
            m.ack_latency.clone(),
        );
        r.register(
            name::BUDGET_LEFT,
            "Privacy budget left today per configured venue (epsilon at the policy's delta)",
            m.budget_left.clone(),
        );
        r.register(
            name::ALERTS,
            "Organizer alert lifecycle events by severity",
            m.alerts.clone(),
        );
        r.register(
            name::STREAM_LAGGED,
            "Stream events skipped because a consumer (browser or gRPC watcher) lagged",
            m.stream_lagged.clone(),
        );
        r.register(
            "alert_queue_dropped_batches",
            "Committed batches that skipped alert evaluation because the alert queue was full",
            m.alert_queue_dropped.clone(),
        );
        r.register(
            name::DASHBOARD_REQUESTS,
            "Dashboard API requests by outcome",
            m.dashboard_requests.clone(),
        );
        r.register(
            name::COMMIT_GROUP_RELEASES,
            "Releases decided and stored per group commit (one transaction, one fsync)",
            m.commit_group_releases.clone(),
        );
        r.register(
            name::COMMIT_GROUP_CALLS,
            "SubmitReleases calls answered per group commit",
            m.commit_group_calls.clone(),
        );
        r.register(
            name::COMMIT_SECONDS,
            "Time to decide, store and commit one group",
            m.commit_seconds.clone(),
        );
        m.registry = Arc::new(r);
        m
    }

    /// Counts one SubmitReleases call's acks and its latency.
    pub fn record_acks(&self, acks: &[veil_proto::ReleaseAck], elapsed: std::time::Duration) {
        use veil_proto::AckStatus;
        for a in acks {
            match AckStatus::try_from(a.status).unwrap_or(AckStatus::Unspecified) {
                AckStatus::Accepted => {
                    self.releases_accepted.inc();
                }
                s => {
                    let reason = match s {
                        AckStatus::Duplicate => "duplicate",
                        AckStatus::Conflict => "conflict",
                        AckStatus::Invalid => "invalid",
                        AckStatus::Denied => "denied",
                        _ => "other",
                    };
                    self.releases_refused
                        .get_or_create(&ReasonLabel { reason })
                        .inc();
                }
            }
        }
        self.ack_latency.observe(elapsed.as_secs_f64());
    }

    /// Records one group commit: its calls, releases and duration.
    pub fn record_group(&self, calls: usize, releases: usize, elapsed: std::time::Duration) {
        self.commit_group_calls.observe(calls as f64);
        self.commit_group_releases.observe(releases as f64);
        self.commit_seconds.observe(elapsed.as_secs_f64());
        for (total, n) in self.commit_totals.iter().zip([1, calls, releases]) {
            total.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Group commits, calls and releases committed so far.
    pub fn commit_totals(&self) -> (u64, u64, u64) {
        let [a, b, c] = &*self.commit_totals;
        let get = |x: &std::sync::atomic::AtomicU64| x.load(std::sync::atomic::Ordering::Relaxed);
        (get(a), get(b), get(c))
    }

    /// Counts a refused caller on `surface` (`grpc` or `dashboard`).
    pub fn auth_refused(&self, surface: &'static str) {
        self.auth_refusals
            .get_or_create(&ReasonLabel { reason: surface })
            .inc();
    }

    /// Counts a SubmitReleases call refused by admission control.
    pub fn admission_refused(&self, reason: &'static str) {
        self.admission_refusals
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a gRPC request refused before its body was read.
    pub fn request_refused(&self, reason: &'static str) {
        self.request_refusals
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// Counts a dashboard request outcome.
    pub fn dashboard_request(&self, outcome: &'static str) {
        self.dashboard_requests
            .get_or_create(&ReasonLabel { reason: outcome })
            .inc();
    }

    /// Brings the alert and stream counters up to the hub's (monotonic)
    /// counts; called on scrape.
    pub fn sync_hub(&self, s: &crate::alerts::HubStats) {
        let Ok(_guard) = self.hub_sync.lock() else {
            return;
        };
        let up = |c: &Counter, to: u64| {
            let now = c.get();
            if to > now {
                c.inc_by(to - now);
            }
        };
        for (event, n) in [
            ("raised", s.raised),
            ("resolved", s.resolved),
            ("acknowledged", s.acknowledged),
        ] {
            up(&self.alerts.get_or_create(&AlertLabel { event }), n);
        }
        up(&self.stream_lagged, s.lagged_items);
        up(&self.alert_queue_dropped, s.dropped_batches);
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}

/// Refreshes the budget gauges (one per configured venue) from the ledger.
pub async fn refresh_budget(core: &Core, metrics: &Metrics) {
    let day = crate::ledger::day_of(core.now_ms());
    for (venue, policy) in core.policies.iter() {
        match crate::ledger::report(core.storage.reads(), venue, &day, Some(policy.as_ref())).await
        {
            Ok(r) => {
                metrics
                    .budget_left
                    .get_or_create(&VenueLabel {
                        venue: venue.clone(),
                    })
                    .set(r.remaining_epsilon);
            }
            Err(e) => tracing::warn!(%venue, error = %e, "Budget gauge not refreshed."),
        }
    }
}

/// Serves `GET /metrics` on `listener` (plain HTTP) until `shutdown`;
/// `scrape` refreshes the gauges and returns the text exposition.
pub async fn serve<F, Fut>(
    listener: tokio::net::TcpListener,
    scrape: F,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    use axum::{Router, http::header, routing::get};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let scrape = scrape.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    scrape().await,
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics listener of `cfg`.
pub async fn bind(cfg: &Config) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(cfg.listen).await
}

#[cfg(test)]
mod tests;
