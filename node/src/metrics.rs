//! Prometheus metrics of a running node (`GET /metrics` on
//! `[metrics] listen`, text exposition format).
//!
//! Only operational counters: how many lines, windows, releases, uploads,
//! refusals and alerts, and how long things took. Never a released value,
//! an exact aggregate or anything from an event. Label values come from
//! closed sets (metric names the node computes, fixed reasons), so label
//! cardinality is bounded whatever the input holds.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// A label naming one of a closed set of values.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MetricLabel {
    /// Metric name (from [`crate::release::metric`]).
    pub metric: &'static str,
}

/// A label naming a kind or reason from a fixed list.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// Kind.
    pub kind: &'static str,
}

/// The node's metrics; cheap to clone (shared handles).
#[derive(Clone)]
pub struct NodeMetrics {
    registry: Arc<Registry>,
    /// Input lines read.
    pub lines: Counter,
    /// Input lines rejected.
    pub invalid_lines: Counter,
    /// Valid events dropped because their window had already closed.
    pub late_events: Counter,
    /// Windows closed and released.
    pub windows_released: Counter,
    /// Releases written to the outbox, by metric.
    pub releases: Family<MetricLabel, Counter>,
    /// Releases not made because the venue's budget was exhausted.
    pub budget_exhausted: Counter,
    /// Releases waiting in the outbox.
    pub outbox_depth: Gauge,
    /// Upload outcomes per release: accepted, duplicate, rejected.
    pub uploaded: Family<KindLabel, Counter>,
    /// Failed upload calls: transient or refused.
    pub upload_failures: Family<KindLabel, Counter>,
    /// Time from sending a batch to its acks.
    pub ack_latency: Histogram,
    /// Inference wall time per window.
    pub inference_latency: Histogram,
    /// Windows that skipped inference because it fell behind.
    pub inference_skipped: Counter,
    /// Local alerts raised: forecast_capacity, audio_clipping.
    pub local_alerts: Family<KindLabel, Counter>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Histogram buckets in seconds, 0.1 ms .. ~13 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18)
}

impl NodeMetrics {
    /// Fresh metrics registered under the `veil_node_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("veil_node");
        let m = Self {
            registry: Arc::new(Registry::default()),
            lines: Counter::default(),
            invalid_lines: Counter::default(),
            late_events: Counter::default(),
            windows_released: Counter::default(),
            releases: Family::default(),
            budget_exhausted: Counter::default(),
            outbox_depth: Gauge::default(),
            uploaded: Family::default(),
            upload_failures: Family::default(),
            ack_latency: Histogram::new(latency_buckets()),
            inference_latency: Histogram::new(latency_buckets()),
            inference_skipped: Counter::default(),
            local_alerts: Family::default(),
        };
        r.register("input_lines", "Input lines read", m.lines.clone());
        r.register(
            "input_invalid_lines",
            "Input lines rejected (see the log for line numbers and reasons)",
            m.invalid_lines.clone(),
        );
        r.register(
            "input_late_events",
            "Valid events dropped as late: their window had closed (windows.lateness behind the newest event)",
            m.late_events.clone(),
        );
        r.register(
            "windows_released",
            "Windows closed and released",
            m.windows_released.clone(),
        );
        r.register(
            "releases",
            "Releases written to the outbox, by metric",
            m.releases.clone(),
        );
        r.register(
            "budget_exhausted_releases",
            "Releases not made because the venue's privacy budget was exhausted",
            m.budget_exhausted.clone(),
        );
        r.register(
            "outbox_depth",
            "Releases waiting in the outbox",
            m.outbox_depth.clone(),
        );
        r.register(
            "uploaded_releases",
            "Upload outcomes per release (accepted, duplicate, rejected)",
            m.uploaded.clone(),
        );
        r.register(
            "upload_failures",
            "Failed upload calls (transient: retried; busy: retried after the aggregator's hint; refused: operator action)",
            m.upload_failures.clone(),
        );
        r.register(
            "ack_latency_seconds",
            "Time from sending a batch to the aggregator's acks",
            m.ack_latency.clone(),
        );
        r.register(
            "inference_latency_seconds",
            "On-device inference wall time per window (both models, all zones)",
            m.inference_latency.clone(),
        );
        r.register(
            "inference_skipped_windows",
            "Windows that skipped inference because it fell behind",
            m.inference_skipped.clone(),
        );
        r.register(
            "local_alerts",
            "Local alerts raised by on-device models, by kind",
            m.local_alerts.clone(),
        );
        Self {
            registry: Arc::new(r),
            ..m
        }
    }

    /// Counts `n` releases of `metric`.
    pub fn add_releases(&self, metric: &'static str, n: u64) {
        self.releases
            .get_or_create(&MetricLabel { metric })
            .inc_by(n);
    }

    /// Records one upload call's ack latency.
    pub fn observe_ack(&self, d: Duration) {
        self.ack_latency.observe(d.as_secs_f64());
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `addr` until `stop` resolves. Binding errors
/// are returned (a port in use is an operator problem).
pub async fn serve(
    addr: SocketAddr,
    metrics: NodeMetrics,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    Ok(serve_on(listener, metrics, stop))
}

/// [`serve`] on a bound listener.
pub fn serve_on(
    listener: tokio::net::TcpListener,
    metrics: NodeMetrics,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    use axum::{Router, http::header, routing::get};
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    tracing::info!(%addr, "Serving metrics at /metrics.");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "Metrics endpoint failed.");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_counters_and_has_no_values_of_data() {
        let m = NodeMetrics::new();
        m.lines.inc_by(7);
        m.add_releases("occupancy", 3);
        m.observe_ack(Duration::from_millis(5));
        let text = m.render();
        assert!(text.contains("veil_node_input_lines_total 7"), "{text}");
        assert!(
            text.contains("veil_node_releases_total{metric=\"occupancy\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("veil_node_ack_latency_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[tokio::test]
    async fn endpoint_serves_the_exposition_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let m = NodeMetrics::new();
        m.windows_released.inc_by(4);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = serve_on(listener, m, async {
            let _ = rx.await;
        });
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("veil_node_windows_released_total 4"), "{ok}");
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
        let _ = tx.send(());
        task.await.unwrap();
    }
}
