//! The node's pipeline: ingest -> windows -> DP release -> outbox, with an
//! uploader draining the outbox concurrently.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    sync::{Notify, watch},
};
use veil_privacy::{
    Cost,
    policy::LoadedPolicy,
    pseudonym::{DayKey, EventDay, Pseudonymizer},
};
use veil_proto::ingest_client::IngestClient;

use crate::{
    config::Config,
    event::parse_line,
    inference::live::{InferenceStats, Stage, WindowInput},
    lease::{LeaseError, LeaseStats, Leases},
    metrics::{KindLabel, NodeMetrics},
    outbox::Outbox,
    release::{plan_window, privatize},
    upload::{self, Backoff, UploadError, UploadStats},
    window::{WindowStats, Windower},
};

/// Errors that stop the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Reading input failed.
    #[error("reading input {path}: {source}")]
    Input {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Outbox failure.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
    /// Upload failure that needs an operator.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// Privacy layer refused.
    #[error("privacy: {0}")]
    Privacy(#[from] veil_privacy::PrivacyError),
    /// The venue's policy is unusable: nothing is released.
    #[error("policy: {0}")]
    Policy(String),
    /// The ledger refused a lease for a reason an operator must fix.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The metrics endpoint could not start.
    #[error("metrics endpoint: {0}")]
    Metrics(String),
    /// The on-device models could not be loaded.
    #[error("inference: {0}")]
    Inference(#[from] crate::inference::InferenceError),
}

/// A rejected input line.
#[derive(Debug, Clone, PartialEq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// Why (never echoes input values).
    pub reason: String,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    /// Lines read.
    pub lines: u64,
    /// Lines rejected.
    pub invalid_lines: u64,
    /// The first rejected lines (at most 20).
    pub first_invalid: Vec<BadLine>,
    /// Windowing counters.
    pub windows: WindowStats,
    /// Windows closed and released.
    pub windows_released: u64,
    /// Releases written to the outbox.
    pub releases: u64,
    /// Releases per metric.
    pub releases_by_metric: HashMap<String, u64>,
    /// Total epsilon spent by this node's releases.
    pub epsilon_spent: f64,
    /// Upload totals.
    pub upload: UploadStats,
    /// Budget lease counters.
    pub leases: LeaseStats,
    /// Hash of the policy the releases were made under.
    pub policy_hash: String,
    /// Releases still in the outbox at exit.
    pub outbox_depth: u64,
    /// Corrupt outbox records found (and removed) by the start-up scan.
    pub outbox_corrupt: u64,
    /// Times intake paused because the outbox was at its cap.
    pub outbox_full_waits: u64,
    /// On-device inference counters (zero when `[inference] enabled = false`).
    pub inference: InferenceStats,
}

const MAX_REPORTED_BAD_LINES: usize = 20;

/// The master pseudonym secret and the day keys in use: events are
/// pseudonymised under the key of their (UTC) event day.
pub(crate) struct Pseudonyms {
    master: Pseudonymizer,
    /// Day keys of the current and later days (a handful at most, so a
    /// linear search beats hashing the day).
    keys: Vec<DayKey>,
}

impl Pseudonyms {
    /// Day keys under `master`, derived as days come up.
    pub(crate) fn new(master: Pseudonymizer) -> Self {
        Self {
            master,
            keys: Vec::new(),
        }
    }

    /// The key of the event day holding `ts_ms` (UTC days).
    pub(crate) fn key(&mut self, ts_ms: i64) -> Result<&DayKey, veil_privacy::PrivacyError> {
        let day = EventDay::from_unix_seconds(ts_ms.div_euclid(1000), 0)?;
        let i = match self.keys.iter().position(|k| k.day() == day) {
            Some(i) => i,
            None => {
                // Only current and later day keys are cached.
                self.keys.retain(|k| k.day() > day);
                self.keys.push(self.master.day_key(day)?);
                self.keys.len() - 1
            }
        };
        Ok(&self.keys[i])
    }
}

pub use veil_common::now_ms;

/// Runs the node until its input ends and the outbox is drained, or until
/// `shutdown` resolves (then intake stops, the current batch finishes, and
/// what is not acknowledged stays in the outbox for the next start).
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunReport, NodeError> {
    run_with_metrics(cfg, NodeMetrics::new(), shutdown).await
}

/// [`run`], counting into `metrics` (served on `[metrics] listen` if set).
pub async fn run_with_metrics(
    cfg: Config,
    metrics: NodeMetrics,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunReport, NodeError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics_server = match cfg.metrics.listen {
        Some(addr) => Some(
            crate::metrics::serve(addr, metrics.clone(), std::future::pending())
                .await
                .map_err(|e| NodeError::Metrics(format!("binding {addr}: {e}")))?,
        ),
        None => None,
    };
    let outbox = Outbox::open(
        &cfg.resolve(&cfg.outbox.path),
        &cfg.venue,
        &cfg.node_id,
        cfg.outbox.max_releases,
    )
    .await?;
    let corrupt_at_start = outbox.scan().await?;
    let channel = upload::channel(&cfg)?;
    let max_backoff = cfg.aggregator.max_backoff;

    let work = async {
        let policy = Arc::new(fetch_policy(channel.clone(), stop_rx.clone(), max_backoff).await?);
        let mut stage = if cfg.inference.enabled {
            Some(Stage::start(
                &cfg,
                policy.clone(),
                outbox.clone(),
                metrics.clone(),
            )?)
        } else {
            None
        };
        let input_done = Arc::new(Notify::new());
        let wake = Arc::new(Notify::new());
        let (done_tx, done_rx) = watch::channel(false);
        let uploader = tokio::spawn(upload_loop(
            IngestClient::new(channel.clone()),
            outbox.clone(),
            cfg.aggregator.batch,
            wake.clone(),
            done_rx,
            stop_rx.clone(),
            max_backoff,
            metrics.clone(),
        ));
        let mut uploader = uploader;
        let mut leases = Leases::new(channel.clone(), &policy.hash, cfg.privacy.lease_windows)
            .with_max_backoff(max_backoff);
        let (ingest, uploaded) = {
            let ingest = ingest(
                &cfg,
                &outbox,
                &policy,
                &mut leases,
                stage.as_mut(),
                &metrics,
                wake.clone(),
                stop_rx.clone(),
            );
            tokio::pin!(ingest);
            // The uploader ends before intake only when it failed for good
            // (or on shutdown): then intake stops too, rather than filling
            // the outbox for an aggregator that refuses this node.
            tokio::select! {
                r = &mut ingest => (r, None),
                u = &mut uploader => {
                    let _ = stop_tx.send(true);
                    (ingest.await, Some(u))
                }
            }
        };
        // The queued windows' audio releases reach the outbox before the
        // uploader is told that input is done.
        let inference = match stage {
            Some(s) => s.finish().await,
            None => InferenceStats::default(),
        };
        let _ = done_tx.send(true);
        wake.notify_one();
        input_done.notify_waiters();
        let upload_result = match uploaded {
            Some(u) => u,
            None => uploader.await,
        }
        .map_err(|e| UploadError::Transient(format!("uploader task failed: {e}")))?;
        let mut report = ingest?;
        report.upload = upload_result?;
        // Audio-class releases went to the same outbox.
        report.releases += inference.audio_releases;
        for (m, n) in &inference.releases_by_metric {
            *report
                .releases_by_metric
                .entry((*m).to_owned())
                .or_default() += n;
        }
        report.inference = inference;
        Ok::<RunReport, NodeError>(report)
    };
    tokio::pin!(work);
    tokio::pin!(shutdown);
    let result = tokio::select! {
        r = &mut work => r,
        () = &mut shutdown => {
            tracing::info!("Shutdown requested: stopping intake, finishing the batch in flight.");
            let _ = stop_tx.send(true);
            match tokio::time::timeout(Duration::from_secs(10), &mut work).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("Shutdown grace period over; unacknowledged releases stay in the outbox.");
                    Ok(RunReport::default())
                }
            }
        }
    };
    let mut report = result?;
    report.outbox_corrupt = corrupt_at_start;
    report.outbox_depth = outbox.depth().await?;
    metrics.outbox_depth.set(report.outbox_depth as i64);
    outbox.close().await;
    if let Some(h) = metrics_server {
        h.abort();
    }
    Ok(report)
}

/// Sleeps for `d`, or less if `stop` is set meanwhile.
async fn sleep_or_stop(d: Duration, stop: &watch::Receiver<bool>) {
    let mut stop = stop.clone();
    tokio::select! {
        () = tokio::time::sleep(d) => {},
        _ = stop.wait_for(|s| *s) => {},
    }
}

async fn fetch_policy(
    channel: tonic::transport::Channel,
    stop: watch::Receiver<bool>,
    max_backoff: Duration,
) -> Result<LoadedPolicy, NodeError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), max_backoff);
    loop {
        match upload::fetch_policy(channel.clone()).await {
            Ok((hash, toml)) => {
                let policy = LoadedPolicy::parse(&toml).map_err(|e| {
                    NodeError::Policy(format!("the venue's policy does not parse: {e}"))
                })?;
                if policy.hash != hash {
                    return Err(NodeError::Policy(
                        "policy text does not match its hash".into(),
                    ));
                }
                tracing::info!(policy = %hash, name = %policy.policy.name, "Policy fetched.");
                return Ok(policy);
            }
            Err(UploadError::Transient(e)) => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "Policy fetch failed; nothing is released until it succeeds.");
                if *stop.borrow() {
                    return Err(UploadError::Transient(e).into());
                }
                sleep_or_stop(d, &stop).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Policy fetch refused; operator action needed.");
                return Err(e.into());
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn ingest(
    cfg: &Config,
    outbox: &Outbox,
    policy: &LoadedPolicy,
    leases: &mut Leases,
    mut stage: Option<&mut Stage>,
    metrics: &NodeMetrics,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
) -> Result<RunReport, NodeError> {
    let path = cfg.resolve(&cfg.input.path);
    let reader: Box<dyn AsyncRead + Unpin + Send> = if path.as_os_str() == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(
            tokio::fs::File::open(&path)
                .await
                .map_err(|source| NodeError::Input {
                    path: path.display().to_string(),
                    source,
                })?,
        )
    };
    let mut lines = BufReader::with_capacity(1 << 16, reader).lines();
    let mut windower = Windower::for_node(cfg, policy)?;
    let mut pseudonyms = Pseudonyms::new(Pseudonymizer::generate()?);
    let mut report = RunReport::default();
    let mut stopped = stop.clone();
    loop {
        if *stop.borrow() {
            tracing::info!(
                lines = report.lines,
                "Intake stopped; open windows are not released."
            );
            break;
        }
        // A quiet input (a socket or pipe with no events) must not delay
        // shutdown: wait for a line or for the stop signal.
        let next = tokio::select! {
            l = lines.next_line() => l,
            _ = stopped.wait_for(|s| *s) => continue,
        };
        let line = match next {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(source) => {
                return Err(NodeError::Input {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        report.lines += 1;
        metrics.lines.inc();
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(&line) {
            Ok(ev) => {
                let key = pseudonyms.key(ev.ts_ms)?;
                windower.add(&ev, |id| key.pseudonym(id.as_bytes()));
            }
            Err(e) => {
                report.invalid_lines += 1;
                metrics.invalid_lines.inc();
                // The first lines are logged one by one, then every 1000th, so
                // a broken sensor cannot flood the log.
                if report.invalid_lines <= MAX_REPORTED_BAD_LINES as u64
                    || report.invalid_lines % 1000 == 0
                {
                    tracing::warn!(line = report.lines, invalid_so_far = report.invalid_lines, reason = %e, "Invalid input line skipped.");
                }
                if report.first_invalid.len() < MAX_REPORTED_BAD_LINES {
                    report.first_invalid.push(BadLine {
                        line: report.lines,
                        reason: e.to_string(),
                    });
                }
                continue;
            }
        }
        let mut closed = windower.drain_closed();
        if !closed.is_empty() {
            submit_inference(cfg, stage.as_deref_mut(), &mut closed);
            release_all(
                cfg,
                outbox,
                policy,
                leases,
                closed,
                &mut report,
                metrics,
                &stop,
                &wake,
            )
            .await?;
            wake.notify_one();
        }
    }
    if !*stop.borrow() {
        let mut rest = windower.flush();
        submit_inference(cfg, stage, &mut rest);
        release_all(
            cfg,
            outbox,
            policy,
            leases,
            rest,
            &mut report,
            metrics,
            &stop,
            &wake,
        )
        .await?;
        wake.notify_one();
    }
    report.windows = windower.stats();
    report.leases = leases.stats;
    report.policy_hash = policy.hash.clone();
    Ok(report)
}

/// Hands the closed windows' model inputs to the inference stage (never
/// waits: a full queue skips inference for the window).
fn submit_inference(
    cfg: &Config,
    stage: Option<&mut Stage>,
    closed: &mut [crate::window::ClosedWindow],
) {
    if let Some(stage) = stage {
        for w in closed {
            stage.submit(WindowInput::take_from(cfg, w));
        }
    }
}

/// Waits until the outbox has room for `n` more releases. At the cap,
/// intake pauses (the window is not yet leased or noised, so no budget is
/// spent and nothing is dropped): logged at ERROR once per pause, counted in
/// the report and in `node_state`. Returns false if stopped while waiting.
async fn wait_for_room(
    outbox: &Outbox,
    n: u64,
    report: &mut RunReport,
    stop: &watch::Receiver<bool>,
    wake: &Notify,
) -> Result<bool, NodeError> {
    let mut paused = false;
    loop {
        let depth = outbox.depth().await?;
        if depth.saturating_add(n) <= outbox.cap() || (depth == 0 && !paused && n > outbox.cap()) {
            if paused {
                tracing::info!(
                    depth,
                    cap = outbox.cap(),
                    "Outbox has room again; intake resumes."
                );
            }
            return Ok(true);
        }
        if !paused {
            paused = true;
            report.outbox_full_waits += 1;
            outbox
                .add_to_counter(crate::outbox::STATE_FULL_WAITS, 1)
                .await?;
            tracing::error!(
                depth,
                cap = outbox.cap(),
                "Outbox full: intake paused until the uploader frees room (nothing is dropped; check the aggregator link)."
            );
        }
        if *stop.borrow() {
            return Ok(false);
        }
        wake.notify_one();
        sleep_or_stop(Duration::from_millis(200), stop).await;
    }
}

/// Plans each window's releases, obtains budget leases for them (noise is
/// drawn only after the lease charged the cost), and writes them to the
/// outbox.
#[allow(clippy::too_many_arguments)]
async fn release_all(
    cfg: &Config,
    outbox: &Outbox,
    policy: &LoadedPolicy,
    leases: &mut Leases,
    windows: Vec<crate::window::ClosedWindow>,
    report: &mut RunReport,
    metrics: &NodeMetrics,
    stop: &watch::Receiver<bool>,
    wake: &Notify,
) -> Result<(), NodeError> {
    for w in windows {
        let planned = plan_window(cfg, policy, &w)?;
        if !wait_for_room(outbox, planned.len() as u64, report, stop, wake).await? {
            tracing::info!(
                "Stopped while the outbox was full; remaining windows are not released."
            );
            return Ok(());
        }
        let day = veil_common::day::day_of(w.start_ms);
        // One lease per (metric, purpose) covers all zones of this window.
        let mut groups: std::collections::BTreeMap<(&str, &str), (Cost, u32)> = Default::default();
        for p in &planned {
            if !matches!(p.cost, Cost::Free) {
                let e = groups
                    .entry((p.metric, p.purpose.as_str()))
                    .or_insert((p.cost, 0));
                e.1 += 1;
            }
        }
        let mut lease_ids = std::collections::HashMap::new();
        let exhausted_before = leases.stats.exhausted_releases;
        for ((metric, purpose), (cost, n)) in groups {
            match leases.take(metric, purpose, &day, cost, n, stop).await {
                Ok(id) => {
                    lease_ids.insert(metric, id);
                }
                Err(LeaseError::Exhausted(_)) => {}
                Err(LeaseError::Stopped) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        let mut releases = Vec::with_capacity(planned.len());
        for p in &planned {
            let lease = if matches!(p.cost, Cost::Free) {
                ""
            } else {
                match lease_ids.get(p.metric) {
                    Some(id) => id.as_str(),
                    // No lease, no release.
                    None => continue,
                }
            };
            releases.push(privatize(p, lease)?);
        }
        for r in &releases {
            *report
                .releases_by_metric
                .entry(r.metric.to_owned())
                .or_default() += 1;
            report.epsilon_spent += r.value.cost().epsilon();
            metrics.add_releases(r.metric, 1);
        }
        report.releases += outbox.push(&releases, &policy.hash, now_ms()).await?;
        report.windows_released += 1;
        metrics.windows_released.inc();
        metrics
            .budget_exhausted
            .inc_by(leases.stats.exhausted_releases - exhausted_before);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn upload_loop(
    mut client: IngestClient<tonic::transport::Channel>,
    outbox: Outbox,
    batch: usize,
    wake: Arc<Notify>,
    mut input_done: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    max_backoff: Duration,
    metrics: NodeMetrics,
) -> Result<UploadStats, UploadError> {
    let mut stats = UploadStats::default();
    let mut backoff = Backoff::new(Duration::from_millis(100), max_backoff);
    loop {
        let before = stats;
        let started = std::time::Instant::now();
        let result = upload::drain_batch(&mut client, &outbox, batch, &mut stats).await;
        if stats.calls > before.calls && result.is_ok() {
            metrics.observe_ack(started.elapsed());
        }
        for (kind, n) in [
            ("accepted", stats.accepted - before.accepted),
            ("duplicate", stats.duplicate - before.duplicate),
            ("rejected", stats.rejected - before.rejected),
        ] {
            if n > 0 {
                metrics
                    .uploaded
                    .get_or_create(&KindLabel { kind })
                    .inc_by(n);
            }
        }
        match &result {
            Err(UploadError::Transient(_)) => {
                metrics
                    .upload_failures
                    .get_or_create(&KindLabel { kind: "transient" })
                    .inc();
            }
            Err(_) => {
                metrics
                    .upload_failures
                    .get_or_create(&KindLabel { kind: "refused" })
                    .inc();
            }
            Ok(n) if *n > 0 => {
                metrics
                    .outbox_depth
                    .set(i64::try_from(outbox.depth().await?).unwrap_or(i64::MAX));
            }
            Ok(_) => {}
        }
        match result {
            Ok(0) => {
                if *input_done.borrow() && outbox.depth().await? == 0 {
                    return Ok(stats);
                }
                if *stop.borrow() {
                    return Ok(stats);
                }
                tokio::select! {
                    () = wake.notified() => {},
                    _ = input_done.changed() => {},
                    () = tokio::time::sleep(Duration::from_secs(1)) => {},
                }
            }
            Ok(_) => {
                backoff.reset();
                outbox
                    .set_state(crate::outbox::STATE_LAST_UPLOAD, &now_ms().to_string())
                    .await?;
                // On shutdown the batch in flight is finished (and its acks
                // applied); the rest stays in the durable outbox.
                if *stop.borrow() {
                    return Ok(stats);
                }
            }
            Err(UploadError::Transient(e)) => {
                if *stop.borrow() {
                    return Ok(stats);
                }
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "Upload failed; releases stay in the outbox.");
                sleep_or_stop(d, &stop).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Upload refused; operator action needed. Releases stay in the outbox.");
                return Err(e);
            }
        }
    }
}

/// What `veil-node status` shows: the outbox and the link, read while the
/// node runs (SQLite WAL readers do not block the writer).
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    /// Releases waiting in the outbox.
    pub outbox_depth: u64,
    /// The outbox cap.
    pub outbox_cap: u64,
    /// Oldest pending window start, Unix ms.
    pub oldest_window_ms: Option<i64>,
    /// Last successful upload, Unix ms.
    pub last_upload_ms: Option<i64>,
    /// Corrupt records skipped, ever.
    pub corrupt_total: u64,
    /// Times intake paused at the outbox cap, ever.
    pub outbox_full_waits: u64,
    /// Where an unreadable outbox file was moved, if ever.
    pub quarantined_file: Option<String>,
    /// "connected", "refused" (operator action) or "unreachable".
    pub connection: &'static str,
    /// Why, for refused/unreachable.
    pub connection_detail: String,
}

fn rfc3339(ms: Option<i64>) -> String {
    ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    })
    .and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .unwrap_or_else(|| "-".into())
}

impl NodeStatus {
    /// A human table, then the same facts as `name value` lines.
    pub fn render(&self) -> String {
        let rows = [
            ("outbox_depth", self.outbox_depth.to_string()),
            ("outbox_cap", self.outbox_cap.to_string()),
            ("oldest_pending_window", rfc3339(self.oldest_window_ms)),
            ("last_upload", rfc3339(self.last_upload_ms)),
            ("corrupt_records_total", self.corrupt_total.to_string()),
            (
                "outbox_full_waits_total",
                self.outbox_full_waits.to_string(),
            ),
            (
                "quarantined_file",
                self.quarantined_file.clone().unwrap_or_else(|| "-".into()),
            ),
            ("connection", self.connection.to_owned()),
        ];
        let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        let mut out = String::new();
        out.push_str(&format!("{:<width$}  {}\n", "NAME", "VALUE"));
        for (n, v) in &rows {
            out.push_str(&format!("{n:<width$}  {v}\n"));
        }
        if !self.connection_detail.is_empty() {
            out.push_str(&format!("({})\n", self.connection_detail));
        }
        out.push('\n');
        for (n, v) in &rows {
            out.push_str(&format!("{n} {v}\n"));
        }
        out
    }
}

/// Reads the outbox of `cfg` and tries the aggregator (GetPolicy) within
/// `timeout`.
pub async fn status(cfg: &Config, timeout: Duration) -> Result<NodeStatus, NodeError> {
    let path = cfg.resolve(&cfg.outbox.path);
    let mut st = NodeStatus {
        outbox_cap: cfg.outbox.max_releases,
        ..NodeStatus::default()
    };
    if path.exists() {
        let outbox = Outbox::inspect(&path).await?;
        let num = |v: Option<String>| v.and_then(|v| v.parse::<i64>().ok());
        st.outbox_depth = outbox.depth().await?;
        st.oldest_window_ms = outbox.oldest_window().await?;
        st.last_upload_ms = num(outbox.state(crate::outbox::STATE_LAST_UPLOAD).await?);
        st.corrupt_total = num(outbox.state(crate::outbox::STATE_CORRUPT_TOTAL).await?)
            .map_or(0, |v| u64::try_from(v).unwrap_or(0));
        st.outbox_full_waits = num(outbox.state(crate::outbox::STATE_FULL_WAITS).await?)
            .map_or(0, |v| u64::try_from(v).unwrap_or(0));
        st.quarantined_file = outbox.state(crate::outbox::STATE_QUARANTINED).await?;
        outbox.close().await;
    }
    let probe = async { upload::fetch_policy(upload::channel(cfg)?).await };
    (st.connection, st.connection_detail) = match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(_)) => ("connected", String::new()),
        Ok(Err(UploadError::Transient(e))) => ("unreachable", e),
        Ok(Err(e)) => ("refused", format!("operator action needed: {e}")),
        Err(_) => (
            "unreachable",
            format!("no answer within {} ms", timeout.as_millis()),
        ),
    };
    Ok(st)
}
