//! Organizer alerts, evaluated on the aggregator as releases are committed:
//! anomaly detection against a DP-noise-aware baseline, rules from
//! `[[alerts.rules]]`, stored (`alerts` table), audited (rule, zone, window
//! and state; never values), deduplicated while a condition persists and
//! resolved when it clears. Organizers acknowledge them.
//!
//! Everything here is post-processing of committed DP releases: it spends no
//! budget and reads nothing a node did not release. Ingest hands committed
//! batches to the alert task over a bounded queue ([`AlertHub::offer`] never
//! waits; a full queue is counted), and the task publishes series points and
//! alert events on bounded broadcast channels: a slow subscriber skips items
//! (counted as lag) and never holds anyone up.
//!
//! Node-side sparse-vector threshold alerts are not carried by
//! `veil.v1.Release` yet, so there is nothing to pass through; the source
//! name `node_threshold` is reserved for them.

pub mod config;
pub mod engine;

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use serde::Serialize;
use sqlx::Row;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::{Stream, StreamExt as _, wrappers::BroadcastStream};

pub use config::Config;
pub use engine::{Engine, Observation};

use veil_aggregator_core::{
    Core,
    audit::{AuditLog, AuditTx, NewEntry, SELF_ACTOR, action},
    storage::{Storage, StoredRelease},
};

use crate::query::SeriesPoint;

/// Lifecycle state of a stored alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Open: the condition holds (or has not been seen to clear).
    Raised,
    /// The condition cleared.
    Resolved,
}

impl AlertState {
    /// "raised" or "resolved".
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Raised => "raised",
            AlertState::Resolved => "resolved",
        }
    }
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    /// Deterministic id (see [`engine::alert_id`]).
    pub alert_id: String,
    /// Venue.
    pub venue: String,
    /// Zone.
    pub zone: String,
    /// Metric (a rule's first condition's).
    pub metric: String,
    /// "anomaly", "rule:<name>" (or "node_threshold", reserved).
    pub source: String,
    /// "info", "warning" or "critical".
    pub severity: String,
    /// Raised or resolved.
    pub state: AlertState,
    /// Window it was raised in, Unix ms.
    pub window_start_ms: i64,
    /// Window length, s.
    pub window_len_s: u32,
    /// Last window evaluated while open (the resolving window once resolved).
    pub last_window_ms: i64,
    /// What the operator should do.
    pub runbook: String,
    /// What held (rule text or sigmas; no values).
    pub detail: String,
    /// Wall clock when raised, Unix ms.
    pub raised_ms: i64,
    /// Wall clock when resolved, Unix ms; 0 while open.
    pub resolved_ms: i64,
    /// Who acknowledged it, "" if nobody yet.
    pub acked_by: String,
    /// When, Unix ms; 0 if not acknowledged.
    pub acked_ms: i64,
}

/// What happened to an alert (the live stream's items).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Newly raised.
    Raised,
    /// Resolved.
    Resolved,
    /// Acknowledged by an organizer.
    Acknowledged,
}

impl EventKind {
    /// "raised", "resolved" or "acknowledged".
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Raised => "raised",
            EventKind::Resolved => "resolved",
            EventKind::Acknowledged => "acknowledged",
        }
    }
}

/// One item of the alert stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// What happened.
    pub kind: EventKind,
    /// The alert after it happened.
    pub alert: AlertRecord,
}

impl AlertRecord {
    /// The proto message; `event` names the stream event ("" in lists).
    pub fn to_proto(&self, event: Option<EventKind>) -> veil_proto::Alert {
        veil_proto::Alert {
            alert_id: self.alert_id.clone(),
            venue: self.venue.clone(),
            zone: self.zone.clone(),
            metric: self.metric.clone(),
            source: self.source.clone(),
            severity: self.severity.clone(),
            state: self.state.as_str().to_owned(),
            window: Some(veil_proto::Window {
                start_ms: self.window_start_ms,
                length_s: self.window_len_s,
            }),
            runbook: self.runbook.clone(),
            raised_ms: self.raised_ms,
            resolved_ms: self.resolved_ms,
            acked_by: self.acked_by.clone(),
            acked_ms: self.acked_ms,
            detail: self.detail.clone(),
            event: event.map(|e| e.as_str().to_owned()).unwrap_or_default(),
            last_window: Some(veil_proto::Window {
                start_ms: self.last_window_ms,
                length_s: self.window_len_s,
            }),
        }
    }
}

/// Alert errors.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// Bad request field (InvalidArgument).
    #[error("{0}")]
    InvalidArgument(String),
    /// No such alert in this venue (NotFound).
    #[error("no alert {0} in this venue")]
    NotFound(String),
    /// Database (Internal).
    #[error("alerts database: {0}")]
    Db(#[from] sqlx::Error),
    /// Audit (Internal).
    #[error(transparent)]
    Audit(#[from] veil_aggregator_core::audit::Error),
}

/// Counters of the hub (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HubStats {
    /// Committed batches that skipped alert evaluation: the queue was full.
    pub dropped_batches: u64,
    /// Stream items subscribers skipped because they fell behind.
    pub lagged_items: u64,
    /// Alerts raised since start.
    pub raised: u64,
    /// Alerts resolved since start.
    pub resolved: u64,
    /// Alerts acknowledged since start.
    pub acknowledged: u64,
    /// Alerts whose storage or audit failed (published anyway).
    pub store_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    dropped_batches: AtomicU64,
    lagged_items: AtomicU64,
    raised: AtomicU64,
    resolved: AtomicU64,
    acknowledged: AtomicU64,
    store_errors: AtomicU64,
}

/// Where committed releases go in and live series points and alert events
/// come out. Cheap to clone; lives in the application's state.
#[derive(Debug, Clone)]
pub struct AlertHub {
    queue: Option<mpsc::Sender<Vec<StoredRelease>>>,
    // `None` once closed: every stream then ends (server shutdown).
    alerts: Arc<std::sync::Mutex<Option<broadcast::Sender<AlertEvent>>>>,
    series: Arc<std::sync::Mutex<Option<broadcast::Sender<SeriesPoint>>>>,
    counters: Arc<Counters>,
}

fn locked<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the Option half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn subscribe<T: Clone>(
    tx: &std::sync::Mutex<Option<broadcast::Sender<T>>>,
) -> broadcast::Receiver<T> {
    match locked(tx).as_ref() {
        Some(tx) => tx.subscribe(),
        // Closed: a receiver whose sender is gone ends at once.
        None => broadcast::channel(1).1,
    }
}

/// The receiving end of the hub's queue, for [`run`].
#[derive(Debug)]
pub struct HubReceiver(mpsc::Receiver<Vec<StoredRelease>>);

impl AlertHub {
    /// A hub with the config's queue and stream buffer sizes; the receiver
    /// goes to [`run`]. With alerts disabled, nothing is queued.
    pub fn new(cfg: &Config) -> (Self, HubReceiver) {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let (alerts, _) = broadcast::channel(cfg.stream_buffer.max(1));
        let (series, _) = broadcast::channel(cfg.stream_buffer.max(1));
        (
            Self {
                queue: cfg.enabled.then_some(tx),
                alerts: Arc::new(std::sync::Mutex::new(Some(alerts))),
                series: Arc::new(std::sync::Mutex::new(Some(series))),
                counters: Arc::default(),
            },
            HubReceiver(rx),
        )
    }

    /// Hands a committed batch to the alert task. Never waits: a full queue
    /// drops the batch from alert evaluation (counted, logged).
    pub fn offer(&self, batch: Vec<StoredRelease>) {
        let Some(q) = &self.queue else { return };
        if batch.is_empty() {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = q.try_send(batch) {
            self.counters
                .dropped_batches
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("Alert queue full: a committed batch skipped alert evaluation.");
        }
    }

    /// A receiver of alert events. On `RecvError::Lagged(n)` call
    /// [`AlertHub::record_lag`] (or use [`AlertHub::alert_stream`]).
    pub fn subscribe_alerts(&self) -> broadcast::Receiver<AlertEvent> {
        subscribe(&self.alerts)
    }

    /// A receiver of combined series points as releases commit.
    pub fn subscribe_series(&self) -> broadcast::Receiver<SeriesPoint> {
        subscribe(&self.series)
    }

    /// Ends every live stream (server shutdown: open streams would otherwise
    /// keep a graceful shutdown waiting forever).
    pub fn close(&self) {
        locked(&self.alerts).take();
        locked(&self.series).take();
    }

    /// Publishes a series point.
    pub fn publish_point(&self, p: SeriesPoint) {
        if let Some(tx) = locked(&self.series).as_ref() {
            // No subscriber is not an error.
            let _ = tx.send(p);
        }
    }

    /// Alert events as a stream; skipped items are counted as lag.
    pub fn alert_stream(&self) -> impl Stream<Item = AlertEvent> + Send + 'static {
        lag_counted(self.subscribe_alerts(), self.counters.clone())
    }

    /// Series points as a stream; skipped items are counted as lag.
    pub fn series_stream(&self) -> impl Stream<Item = SeriesPoint> + Send + 'static {
        lag_counted(self.subscribe_series(), self.counters.clone())
    }

    /// Counts `n` items a subscriber skipped.
    pub fn record_lag(&self, n: u64) {
        self.counters.lagged_items.fetch_add(n, Ordering::Relaxed);
    }

    /// Publishes an alert event (the alert task and [`acknowledge`] do).
    pub fn publish_alert(&self, ev: AlertEvent) {
        let c = match ev.kind {
            EventKind::Raised => &self.counters.raised,
            EventKind::Resolved => &self.counters.resolved,
            EventKind::Acknowledged => &self.counters.acknowledged,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if let Some(tx) = locked(&self.alerts).as_ref() {
            // No subscriber is not an error.
            let _ = tx.send(ev);
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> HubStats {
        let c = &self.counters;
        HubStats {
            dropped_batches: c.dropped_batches.load(Ordering::Relaxed),
            lagged_items: c.lagged_items.load(Ordering::Relaxed),
            raised: c.raised.load(Ordering::Relaxed),
            resolved: c.resolved.load(Ordering::Relaxed),
            acknowledged: c.acknowledged.load(Ordering::Relaxed),
            store_errors: c.store_errors.load(Ordering::Relaxed),
        }
    }
}

fn lag_counted<T: Clone + Send + 'static>(
    rx: broadcast::Receiver<T>,
    counters: Arc<Counters>,
) -> impl Stream<Item = T> + Send + 'static {
    BroadcastStream::new(rx).filter_map(move |item| match item {
        Ok(v) => Some(v),
        Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
            counters.lagged_items.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(skipped = n, "A live stream subscriber fell behind.");
            None
        }
    })
}

/// The alert task: feeds committed releases to the [`Engine`], publishes
/// series points and alert events, stores and audits alert transitions.
/// Returns when the queue closes.
pub async fn run(
    core: Arc<Core>,
    hub: AlertHub,
    rules: Vec<config::Rule>,
    cfg: Config,
    rx: HubReceiver,
) {
    let mut rx = rx.0;
    let mut engine = Engine::new(cfg, rules);
    match open_alerts(&core.storage).await {
        Ok(open) => engine.restore(open),
        Err(e) => {
            tracing::error!(error = %e, "Loading open alerts failed; they will not be resolved.")
        }
    }
    let organizer = veil_privacy::policy::Reader::Organizer;
    while let Some(batch) = rx.recv().await {
        let mut events = Vec::new();
        for r in &batch {
            // Only metrics the policy lets organizers read feed organizer alerts.
            let Some(policy) = core.policies.get(&r.venue) else {
                continue;
            };
            let Ok(suppress_below) = crate::query::readable(policy, organizer, &r.metric) else {
                continue;
            };
            let out = engine.observe(&Observation::from_release(r, suppress_below), core.now_ms());
            hub.publish_point(out.point);
            for ev in out.events {
                // A raise is published before it is stored: the store waits
                // for the audit log's writer lock, which ingest's group
                // commit holds, and an organizer should not wait for that.
                if ev.kind == EventKind::Raised {
                    hub.publish_alert(ev.clone());
                }
                events.push(ev);
            }
        }
        if events.is_empty() {
            continue;
        }
        // All transitions of a committed batch in one transaction: one wait
        // for the audit lock per batch, not one per alert, so the task keeps
        // up with ingest however fast it commits.
        let now = core.now_ms();
        let stored = match store_transitions(&core.storage, &core.audit, &events, now).await {
            Ok(stored) => stored,
            Err(e) => {
                hub.counters
                    .store_errors
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %e, alerts = events.len(), "Storing alerts failed; publishing them anyway.");
                vec![None; events.len()]
            }
        };
        for (ev, stored) in events.into_iter().zip(stored) {
            let early = ev.kind == EventKind::Raised;
            let ev = match stored {
                Some(alert) => AlertEvent {
                    kind: ev.kind,
                    alert,
                },
                None => ev,
            };
            tracing::info!(
                venue = %ev.alert.venue,
                zone = %ev.alert.zone,
                source = %ev.alert.source,
                event = ev.kind.as_str(),
                "Alert."
            );
            if !early {
                hub.publish_alert(ev);
            }
        }
    }
}

fn audit_reason(a: &AlertRecord, what: &str, window_ms: i64) -> String {
    format!(
        "{} on {}: zone {} window {}+{}s {what}",
        a.source, a.metric, a.zone, window_ms, a.window_len_s
    )
}

/// Stores a raise or resolve with its audit entry in one transaction;
/// returns the stored row after a resolve (it may carry an acknowledgement).
async fn store_transitions(
    storage: &Storage,
    audit: &AuditLog,
    events: &[AlertEvent],
    now: i64,
) -> Result<Vec<Option<AlertRecord>>, AlertError> {
    storage
        .run_audited(audit, "store_transitions", |tx, atx| {
            Box::pin(async move {
                let mut out = Vec::with_capacity(events.len());
                for ev in events {
                    out.push(store_transition(atx, tx, ev, now).await?);
                }
                Ok(out)
            })
        })
        .await
}

/// Stores one transition and its audit entry inside `tx`.
async fn store_transition(
    atx: &mut AuditTx<'_>,
    tx: &mut sqlx::AnyConnection,
    ev: &AlertEvent,
    now: i64,
) -> Result<Option<AlertRecord>, AlertError> {
    let a = &ev.alert;
    let (act, reason) = match ev.kind {
        EventKind::Raised => {
            sqlx::query(
                "-- store_transition()\nINSERT INTO alerts (alert_id, venue, zone, metric, source, severity, state, \
                 window_start_ms, window_len_s, last_window_ms, runbook, detail, raised_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'raised', $7, $8, $9, $10, $11, $12) \
                 ON CONFLICT (alert_id) DO NOTHING",
            )
            .bind(&a.alert_id)
            .bind(&a.venue)
            .bind(&a.zone)
            .bind(&a.metric)
            .bind(&a.source)
            .bind(&a.severity)
            .bind(a.window_start_ms)
            .bind(i64::from(a.window_len_s))
            .bind(a.last_window_ms)
            .bind(&a.runbook)
            .bind(&a.detail)
            .bind(a.raised_ms)
            .execute(&mut *tx)
            .await?;
            (
                action::ALERT_RAISE,
                audit_reason(a, "raised", a.window_start_ms),
            )
        }
        EventKind::Resolved => {
            sqlx::query(
                "-- store_transition()\nUPDATE alerts SET state = 'resolved', resolved_ms = $2, last_window_ms = $3 \
                 WHERE alert_id = $1 AND state = 'raised'",
            )
            .bind(&a.alert_id)
            .bind(a.resolved_ms)
            .bind(a.last_window_ms)
            .execute(&mut *tx)
            .await?;
            (
                action::ALERT_RESOLVE,
                audit_reason(a, "resolved", a.last_window_ms),
            )
        }
        EventKind::Acknowledged => return Ok(None),
    };
    atx.append(
        &mut *tx,
        NewEntry {
            actor: SELF_ACTOR.into(),
            venue: a.venue.clone(),
            action: act,
            allow: true,
            reason,
            ..NewEntry::default()
        },
        now,
    )
    .await?;
    let stored = if ev.kind == EventKind::Resolved {
        fetch(&mut *tx, &a.venue, &a.alert_id).await?
    } else {
        None
    };
    Ok(stored)
}

/// The `alerts` columns every read selects (a macro so SQL stays `&'static str`).
macro_rules! columns {
    () => {
        "alert_id, venue, zone, metric, source, severity, state, window_start_ms, \
         window_len_s, last_window_ms, runbook, detail, raised_ms, resolved_ms, acked_by, acked_ms"
    };
}

/// One `alerts` row (selected with the columns above) as a record.
pub(crate) fn row_to_alert(row: &sqlx::any::AnyRow) -> Result<AlertRecord, sqlx::Error> {
    let state: String = row.try_get("state")?;
    Ok(AlertRecord {
        alert_id: row.try_get("alert_id")?,
        venue: row.try_get("venue")?,
        zone: row.try_get("zone")?,
        metric: row.try_get("metric")?,
        source: row.try_get("source")?,
        severity: row.try_get("severity")?,
        state: if state == "raised" {
            AlertState::Raised
        } else {
            AlertState::Resolved
        },
        window_start_ms: row.try_get("window_start_ms")?,
        window_len_s: u32::try_from(row.try_get::<i64, _>("window_len_s")?).unwrap_or(0),
        last_window_ms: row.try_get("last_window_ms")?,
        runbook: row.try_get("runbook")?,
        detail: row.try_get("detail")?,
        raised_ms: row.try_get("raised_ms")?,
        resolved_ms: row.try_get("resolved_ms")?,
        acked_by: row.try_get("acked_by")?,
        acked_ms: row.try_get("acked_ms")?,
    })
}

async fn fetch(
    conn: &mut sqlx::AnyConnection,
    venue: &str,
    alert_id: &str,
) -> Result<Option<AlertRecord>, sqlx::Error> {
    let row = sqlx::query(concat!(
        "-- fetch()\nSELECT ",
        columns!(),
        " FROM alerts WHERE alert_id = $1 AND venue = $2"
    ))
    .bind(alert_id)
    .bind(venue)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(row_to_alert).transpose()
}

/// Every open alert (to restore the engine at start-up).
pub async fn open_alerts(storage: &Storage) -> Result<Vec<AlertRecord>, AlertError> {
    let rows = sqlx::query(concat!(
        "-- open_alerts()\nSELECT ",
        columns!(),
        " FROM alerts WHERE state = 'raised' ORDER BY raised_ms"
    ))
    .fetch_all(storage.reads())
    .await?;
    Ok(rows.iter().map(row_to_alert).collect::<Result<_, _>>()?)
}

/// Largest `limit` of [`list`].
pub const MAX_LIST: u32 = 1000;

/// Alerts of `venue` raised in `[from_ms, to_ms)` (0 = unbounded), newest
/// first, at most `limit` (1..=1000; 0 means 100).
pub async fn list(
    storage: &Storage,
    venue: &str,
    from_ms: i64,
    to_ms: i64,
    limit: u32,
) -> Result<Vec<AlertRecord>, AlertError> {
    if !veil_common::name::valid_name(venue) {
        return Err(AlertError::InvalidArgument(
            "venue must be 1..=64 bytes of [a-z0-9_-]".into(),
        ));
    }
    if limit > MAX_LIST {
        return Err(AlertError::InvalidArgument(format!(
            "limit must be in 1..={MAX_LIST} (0 for 100), got {limit}"
        )));
    }
    if from_ms < 0 || to_ms < 0 {
        return Err(AlertError::InvalidArgument(
            "from_ms and to_ms must be >= 0 (0 = unbounded)".into(),
        ));
    }
    let limit = if limit == 0 { 100 } else { limit };
    let rows = sqlx::query(concat!(
        "-- list()\nSELECT ",
        columns!(),
        " FROM alerts WHERE venue = $1 \
         AND ($2 = 0 OR raised_ms >= $2) AND ($3 = 0 OR raised_ms < $3) \
         ORDER BY raised_ms DESC, alert_id LIMIT $4"
    ))
    .bind(venue)
    .bind(from_ms)
    .bind(to_ms)
    .bind(i64::from(limit))
    .fetch_all(storage.reads())
    .await?;
    Ok(rows.iter().map(row_to_alert).collect::<Result<_, _>>()?)
}

/// Marks `alert_id` of `venue` acknowledged by `who` (a SPIFFE id or another
/// actor name the caller authenticated), audited, and published on the hub.
/// Acknowledging twice keeps the first acknowledgement.
pub async fn acknowledge(
    core: &Core,
    hub: &AlertHub,
    venue: &str,
    alert_id: &str,
    who: &str,
) -> Result<AlertRecord, AlertError> {
    if alert_id.len() != 32 || !alert_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AlertError::InvalidArgument(
            "alert_id must be the 32 hex digits of an alert".into(),
        ));
    }
    if !veil_common::name::valid_name(venue) {
        return Err(AlertError::InvalidArgument(
            "venue must be 1..=64 bytes of [a-z0-9_-]".into(),
        ));
    }
    let now = core.now_ms();
    let alert = core
        .storage
        .run_audited(&core.audit, "acknowledge_alert", |tx, atx| {
            Box::pin(async move {
                let changed = sqlx::query(
                    "-- acknowledge()\nUPDATE alerts SET acked_by = $3, acked_ms = $4 \
                     WHERE alert_id = $1 AND venue = $2 AND acked_by = ''",
                )
                .bind(alert_id)
                .bind(venue)
                .bind(who)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                let alert = fetch(tx, venue, alert_id)
                    .await?
                    .ok_or_else(|| AlertError::NotFound(alert_id.to_owned()))?;
                if changed == 0 {
                    return Ok::<_, AlertError>((alert, false));
                }
                atx.append(
                    tx,
                    NewEntry {
                        actor: who.to_owned(),
                        venue: venue.to_owned(),
                        action: action::ALERT_ACK,
                        allow: true,
                        reason: audit_reason(&alert, "acknowledged", alert.last_window_ms),
                        ..NewEntry::default()
                    },
                    now,
                )
                .await?;
                Ok((alert, true))
            })
        })
        .await?;
    let (alert, changed) = alert;
    if !changed {
        return Ok(alert);
    }
    hub.publish_alert(AlertEvent {
        kind: EventKind::Acknowledged,
        alert: alert.clone(),
    });
    Ok(alert)
}

#[cfg(test)]
mod tests;
