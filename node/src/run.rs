//! The node's pipeline: ingest -> windows -> DP release -> outbox, with an
//! uploader draining the outbox concurrently.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncRead, BufReader},
    sync::{Notify, watch},
};
use veil_privacy::{
    Cost,
    mechanisms::ContinualStream,
    policy::LoadedPolicy,
    pseudonym::{DayKey, EventDay, Pseudonym, SealedDayKey},
};
use veil_proto::ingest_client::IngestClient;

use crate::{
    config::Config,
    event::parse_line,
    inference::live::{InferenceStats, Stage, WindowInput},
    input::LineReader,
    lease::{LeaseError, LeaseStats, Leases},
    metrics::{KindLabel, NodeMetrics},
    outbox::{Outbox, StreamWrite, WindowCommit},
    release::{Input, plan_window, privatize, privatize_stream},
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
    /// The release stage ended without an answer (its task panicked).
    #[error("release stage: {0}")]
    ReleaseStage(String),
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
    /// Attendee-day mode: what the day bounds did, per unit kind
    /// (tracks, devices, app users, tickets).
    pub units: [crate::units::UnitStats; 4],
    /// Stream leases granted by this run (each charges a metric's whole
    /// stream-day once).
    pub stream_leases: u64,
    /// Attendee-day mode: what the policy's streams can cost one attendee.
    pub attendee_day: Option<veil_privacy::policy::UnitDayCost>,
}

const MAX_REPORTED_BAD_LINES: usize = 20;

/// The day keys in use: events are pseudonymised under the key of their
/// event day (the policy's calendar; UTC days without a privacy unit). Each
/// day's key is random, kept sealed in the outbox database (0600) so a
/// restart within the day pseudonymises every identifier the same way, and
/// never sent.
pub(crate) struct Pseudonyms {
    /// Seconds added to Unix time before cutting days.
    offset_s: i32,
    /// Day keys of the current and later days (a handful at most, so a
    /// linear search beats hashing the day).
    keys: Vec<DayKey>,
    /// Keys made since the last window commit, to store with it.
    unsaved: Vec<(EventDay, SealedDayKey)>,
}

impl Pseudonyms {
    /// Keys read back from the store, cut by `offset_s`.
    pub(crate) fn new(offset_s: i32, stored: Vec<DayKey>) -> Self {
        Self {
            offset_s,
            keys: stored,
            unsaved: Vec::new(),
        }
    }

    /// The key of the event day holding `ts_ms`.
    pub(crate) fn key(&mut self, ts_ms: i64) -> Result<&DayKey, veil_privacy::PrivacyError> {
        let day = EventDay::from_unix_seconds(ts_ms.div_euclid(1000), self.offset_s)?;
        let i = match self.keys.iter().position(|k| k.day() == day) {
            Some(i) => i,
            None => {
                let (key, sealed) = DayKey::generate(day)?;
                self.keys.push(key);
                self.unsaved.push((day, sealed));
                self.keys.len() - 1
            }
        };
        Ok(&self.keys[i])
    }

    /// Keys not yet stored; they go into the next window commit.
    pub(crate) fn take_unsaved(&mut self) -> Vec<(EventDay, SealedDayKey)> {
        std::mem::take(&mut self.unsaved)
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
        let policy = Arc::new(
            fetch_policy(
                channel.clone(),
                &cfg.aggregator.endpoint,
                stop_rx.clone(),
                max_backoff,
            )
            .await?,
        );
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
            cfg.aggregator.endpoint.clone(),
        ));
        let mut uploader = uploader;
        let leases = Leases::new(channel.clone(), &policy.hash, cfg.privacy.lease_windows)
            .with_endpoint(&cfg.aggregator.endpoint)
            .with_max_backoff(max_backoff);
        let (ingest, uploaded) = {
            let ingest = ingest(
                &cfg,
                &outbox,
                &policy,
                leases,
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
    aggregator: &str,
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
            Err(e) if e.is_transient() => {
                let d = backoff.next_delay().max(e.retry_hint().unwrap_or_default());
                tracing::warn!(%aggregator, error = %e, retry_in_ms = d.as_millis() as u64, "Policy fetch from the aggregator failed; nothing is released until it succeeds.");
                if *stop.borrow() {
                    return Err(e.into());
                }
                sleep_or_stop(d, &stop).await;
            }
            Err(e) => {
                tracing::error!(%aggregator, error = %e, "Policy fetch refused; operator action needed.");
                return Err(e.into());
            }
        }
    }
}

/// Closed windows the intake stage may run ahead of the release stage:
/// enough that neither waits on the other's bursts, few enough that a
/// stop loses little (unreleased windows are read again at the next start).
const RELEASE_QUEUE: usize = 4;

/// What the intake stage hands the release stage: windows that closed, and
/// the day keys made since the last batch (committed with the batch's first
/// window, so no stored unit record refers to a key the store lacks).
struct ReleaseBatch {
    windows: Vec<crate::window::ClosedWindow>,
    new_keys: Vec<(EventDay, SealedDayKey)>,
}

/// Reads, parses, pseudonymises, windows and bounds the input (the intake
/// stage, in this task) while a second task releases the closed windows
/// (leases, noise, one outbox transaction per window): the intake never
/// waits for a noise draw, a lease or a disk commit, only for the short
/// queue between them when releases fall behind.
#[allow(clippy::too_many_arguments)]
async fn ingest(
    cfg: &Config,
    outbox: &Outbox,
    policy: &Arc<LoadedPolicy>,
    leases: Leases,
    stage: Option<&mut Stage>,
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
    let mut lines = LineReader::new(
        BufReader::with_capacity(1 << 16, reader),
        cfg.input.max_line_bytes,
    );
    let mut windower = Windower::for_node(cfg, policy)?;
    let offset_s = policy.event_day_offset_seconds();
    if let Ok(today) = EventDay::from_unix_seconds(now_ms() / 1000, offset_s) {
        // Yesterday's state stays for a re-run; older keys are gone, so old
        // pseudonyms cannot be recomputed.
        outbox
            .forget_days_before(today.days_since_epoch().saturating_sub(2))
            .await?;
    }
    let mut pseudonyms = Pseudonyms::new(offset_s, outbox.day_keys().await?);
    let length_s = u32::try_from(cfg.windows.length.as_secs()).unwrap_or(60);
    if let Some(end) = outbox.released_end(length_s).await? {
        windower.resume_after(end);
        tracing::info!(
            released_until_ms = end,
            "Windows released before are skipped if read again: nothing is released or charged twice."
        );
    }
    for day in outbox.bound_days().await? {
        for (family, unit, state) in outbox.unit_bounds(day).await? {
            if let Err(e) = windower.restore_unit(
                EventDay::new(day),
                family,
                Pseudonym::from_stored(unit),
                &state,
            ) {
                tracing::error!(day, error = %e, "A stored contribution-bound record is unreadable and was skipped.");
            }
        }
    }
    let (batches, queued) = tokio::sync::mpsc::channel(RELEASE_QUEUE);
    let releaser = tokio::spawn(release_stage(
        Arc::new(cfg.clone()),
        outbox.clone(),
        policy.clone(),
        leases,
        metrics.clone(),
        stop.clone(),
        wake,
        queued,
    ));
    let mut report = RunReport::default();
    let intake = intake(
        cfg,
        policy,
        stage,
        metrics,
        &stop,
        (&mut lines, &path),
        &mut windower,
        &mut pseudonyms,
        batches,
        &mut report,
    )
    .await;
    // The release stage's own error is the cause when both failed (intake
    // stops once the stage is gone).
    let (released, leases) = releaser
        .await
        .map_err(|e| NodeError::ReleaseStage(e.to_string()))??;
    intake?;
    report.windows_released = released.windows_released;
    report.releases = released.releases;
    report.releases_by_metric = released.releases_by_metric;
    report.epsilon_spent = released.epsilon_spent;
    report.outbox_full_waits = released.outbox_full_waits;
    report.stream_leases = released.stream_leases;
    report.windows = windower.stats();
    report.units = crate::units::Family::ALL.map(|f| windower.unit_stats(f));
    report.attendee_day = policy.unit_day_cost();
    report.leases = leases.stats;
    report.policy_hash = policy.hash.clone();
    Ok(report)
}

/// The intake loop of [`ingest`]: every closed window goes to `batches`.
#[allow(clippy::too_many_arguments)]
async fn intake<R: AsyncRead + Unpin>(
    cfg: &Config,
    policy: &LoadedPolicy,
    mut stage: Option<&mut Stage>,
    metrics: &NodeMetrics,
    stop: &watch::Receiver<bool>,
    (lines, path): (&mut LineReader<BufReader<R>>, &std::path::Path),
    windower: &mut Windower,
    pseudonyms: &mut Pseudonyms,
    batches: tokio::sync::mpsc::Sender<ReleaseBatch>,
    report: &mut RunReport,
) -> Result<(), NodeError> {
    let max_future_ms = i64::try_from(cfg.input.max_future_skew.as_millis()).unwrap_or(i64::MAX);
    let offset_s = policy.event_day_offset_seconds();
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
        if line.as_ref().is_ok_and(|l| l.trim().is_empty()) {
            continue;
        }
        let parsed = line.map_err(|e| e.to_string()).and_then(|line| {
            let ev = parse_line(line).map_err(|e| e.to_string())?;
            // Event time is bounded by this node's clock: one sensor dated
            // in the future must not move the windows' watermark forward
            // (every later event would be dropped as late).
            let ahead = ev.ts_ms.saturating_sub(now_ms());
            if ahead > max_future_ms {
                return Err(format!(
                    "field `ts`: {}s ahead of this node's clock, more than input.max_future_skew ({}s)",
                    ahead / 1000,
                    max_future_ms / 1000
                ));
            }
            if let Err(e) = EventDay::from_unix_seconds(ev.ts_ms.div_euclid(1000), offset_s) {
                return Err(format!("field `ts`: no event day under the policy: {e}"));
            }
            Ok(ev)
        });
        match parsed {
            Ok(ev) => {
                let key = pseudonyms.key(ev.ts_ms)?;
                let late_before = windower.stats().late;
                windower.add(&ev, |id| key.pseudonym(id.as_bytes()));
                let late = windower.stats().late;
                if late > late_before {
                    metrics.late_events.inc();
                    // Logged one by one at first, then every 1000th.
                    if late <= MAX_REPORTED_BAD_LINES as u64 || late.is_multiple_of(1000) {
                        tracing::warn!(
                            line = report.lines,
                            late_so_far = late,
                            ts = %ev.event.ts,
                            "Event for a window that already closed (older than windows.lateness behind the newest event) dropped as late."
                        );
                    }
                }
            }
            Err(e) => {
                report.invalid_lines += 1;
                metrics.invalid_lines.inc();
                // The first lines are logged one by one, then every 1000th, so
                // a broken sensor cannot flood the log.
                if report.invalid_lines <= MAX_REPORTED_BAD_LINES as u64
                    || report.invalid_lines.is_multiple_of(1000)
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
            let batch = ReleaseBatch {
                windows: closed,
                new_keys: pseudonyms.take_unsaved(),
            };
            if batches.send(batch).await.is_err() {
                // The release stage ended (stopped, or failed: its error
                // is what `ingest` returns).
                return Ok(());
            }
        }
    }
    if !*stop.borrow() {
        let mut rest = windower.flush();
        submit_inference(cfg, stage, &mut rest);
        let batch = ReleaseBatch {
            windows: rest,
            new_keys: pseudonyms.take_unsaved(),
        };
        // An error here means the stage already ended; `ingest` reports why.
        let _ = batches.send(batch).await;
    }
    Ok(())
}

/// The release stage: releases each batch's windows in order until intake
/// ends or the node stops (batches still queued then are not released; their
/// input is read again at the next start). Returns its counters and the
/// leases, whose statistics the run reports.
#[allow(clippy::too_many_arguments)]
async fn release_stage(
    cfg: Arc<Config>,
    outbox: Outbox,
    policy: Arc<LoadedPolicy>,
    mut leases: Leases,
    metrics: NodeMetrics,
    stop: watch::Receiver<bool>,
    wake: Arc<Notify>,
    mut batches: tokio::sync::mpsc::Receiver<ReleaseBatch>,
) -> Result<(RunReport, Leases), NodeError> {
    let mut streams = Streams::default();
    let mut report = RunReport::default();
    while let Some(batch) = batches.recv().await {
        if *stop.borrow() {
            break;
        }
        release_all(
            &cfg,
            &outbox,
            &policy,
            &mut leases,
            batch,
            &mut report,
            &metrics,
            &stop,
            &wake,
            &mut streams,
        )
        .await?;
        wake.notify_one();
    }
    Ok((report, leases))
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

/// The continual-release streams this run stepped, by (event day, metric,
/// zone), loaded from the outbox database on first use.
#[derive(Default)]
struct Streams {
    open: HashMap<(u32, &'static str, String), ContinualStream>,
}

impl Streams {
    async fn get(
        &mut self,
        outbox: &Outbox,
        policy: &LoadedPolicy,
        day: u32,
        metric: &'static str,
        zone: &str,
        horizon: u32,
    ) -> Result<&mut ContinualStream, NodeError> {
        let key = (day, metric, zone.to_owned());
        if !self.open.contains_key(&key) {
            // Older days' streams are done.
            self.open.retain(|(d, _, _), _| *d >= day);
            let params = crate::release::stream_params(policy, metric, horizon)?;
            let stream = match outbox.stream_state(day, metric, zone).await? {
                Some(state) => ContinualStream::restore(params, state)?,
                None => ContinualStream::new(params)?,
            };
            self.open.insert(key.clone(), stream);
        }
        self.open
            .get_mut(&key)
            .ok_or_else(|| NodeError::Policy("stream vanished".into()))
    }
}

/// Plans each window's releases, obtains budget leases for them (noise is
/// drawn only after the lease charged the cost), and writes them to the
/// outbox with the window's day state, in one transaction.
#[allow(clippy::too_many_arguments)]
async fn release_all(
    cfg: &Config,
    outbox: &Outbox,
    policy: &LoadedPolicy,
    leases: &mut Leases,
    batch: ReleaseBatch,
    report: &mut RunReport,
    metrics: &NodeMetrics,
    stop: &watch::Receiver<bool>,
    wake: &Notify,
    streams: &mut Streams,
) -> Result<(), NodeError> {
    let ReleaseBatch {
        windows,
        mut new_keys,
    } = batch;
    for w in windows {
        let planned = plan_window(cfg, policy, &w)?;
        if !wait_for_room(outbox, planned.len() as u64, report, stop, wake).await? {
            tracing::info!(
                "Stopped while the outbox was full; remaining windows are not released."
            );
            return Ok(());
        }
        // The ledger's day: the event day in the policy's calendar (UTC
        // days without a privacy unit).
        let day = veil_common::day::event_day_of(w.start_ms, policy.event_day_offset_seconds());
        // One lease per (metric, purpose) covers all zones of this window;
        // a stream lease covers the metric's whole event day.
        let mut groups: std::collections::BTreeMap<(&str, &str), (Cost, u32, Option<u32>)> =
            Default::default();
        for p in &planned {
            if matches!(p.cost, Cost::Free) {
                continue;
            }
            let horizon = match p.input {
                Input::Stream { horizon, .. } => Some(horizon),
                _ => None,
            };
            let e = groups
                .entry((p.metric, p.purpose.as_str()))
                .or_insert((p.cost, 0, horizon));
            e.1 += 1;
        }
        let mut lease_ids = std::collections::HashMap::new();
        let exhausted_before = leases.stats.exhausted_releases;
        for ((metric, purpose), (cost, n, horizon)) in groups {
            let taken = match horizon {
                Some(horizon) => {
                    if let Some(id) = outbox.stream_lease(&day, metric, purpose).await? {
                        Ok(id)
                    } else {
                        let zones = cfg.zones.len() as u32;
                        let r = leases
                            .take_stream(metric, purpose, &day, cost, horizon, zones, stop)
                            .await;
                        if let Ok(id) = &r {
                            outbox.set_stream_lease(&day, metric, purpose, id).await?;
                            report.stream_leases += 1;
                        }
                        r
                    }
                }
                None => leases.take(metric, purpose, &day, cost, n, stop).await,
            };
            match taken {
                Ok(id) => {
                    lease_ids.insert(metric, id);
                }
                Err(LeaseError::Exhausted(_)) => {}
                Err(LeaseError::Stopped) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        let mut releases = Vec::with_capacity(planned.len());
        // (metric, zone, the stream's first step of this window).
        let mut stepped: Vec<(&'static str, String, u32)> = Vec::new();
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
            match p.input {
                Input::Stream {
                    day, step, horizon, ..
                } => {
                    let stream = streams
                        .get(outbox, policy, day, p.metric, &p.zone, horizon)
                        .await?;
                    if step < stream.next_step() {
                        // Released before (and its noise drawn): never again.
                        continue;
                    }
                    let first = stream.next_step();
                    let (metric, zone) = (p.metric, p.zone.clone());
                    releases.push(privatize_stream(p, stream, lease)?);
                    stepped.push((metric, zone, first));
                }
                _ => releases.push(privatize(p, lease)?),
            }
        }
        for r in &releases {
            *report
                .releases_by_metric
                .entry(r.metric.to_owned())
                .or_default() += 1;
            report.epsilon_spent += r.value.cost().epsilon();
            metrics.add_releases(r.metric, 1);
        }
        // Each stepped stream's new steps (and its header, stored once).
        let stream_states: Vec<StreamWrite<'_>> = match w.day {
            Some(sd) => {
                let mut out = Vec::with_capacity(stepped.len());
                for (metric, zone, first) in &stepped {
                    if let Some(s) =
                        streams
                            .open
                            .get(&(sd.day.days_since_epoch(), *metric, zone.clone()))
                    {
                        let state = s.state();
                        let header = serde_json::to_string(&state.header()).map_err(|e| {
                            NodeError::Policy(format!("cannot store stream state: {e}"))
                        })?;
                        out.push(StreamWrite {
                            metric,
                            zone: zone.as_str(),
                            header,
                            first: *first,
                            steps: (*first..state.next_step())
                                .filter_map(|t| state.step(t))
                                .collect(),
                        });
                    }
                }
                out
            }
            None => Vec::new(),
        };
        // The batch's new keys go with its first window.
        let new_keys = std::mem::take(&mut new_keys);
        let key_refs: Vec<(EventDay, &SealedDayKey)> =
            new_keys.iter().map(|(d, k)| (*d, k)).collect();
        let commit = WindowCommit {
            start_ms: w.start_ms,
            length_s: w.length_s,
            day: w.day.map(|sd| sd.day.days_since_epoch()),
            new_keys: &key_refs,
            units: &w.unit_updates,
            streams: &stream_states,
        };
        report.releases += outbox
            .commit_window(&releases, &policy.hash, now_ms(), &commit)
            .await?;
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
    aggregator: String,
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
            Err(UploadError::Busy { .. }) => {
                metrics
                    .upload_failures
                    .get_or_create(&KindLabel { kind: "busy" })
                    .inc();
            }
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
            Err(e) if e.is_transient() => {
                if *stop.borrow() {
                    return Ok(stats);
                }
                // A busy aggregator's hint is a floor under the backoff.
                let d = backoff.next_delay().max(e.retry_hint().unwrap_or_default());
                tracing::warn!(%aggregator, error = %e, retry_in_ms = d.as_millis() as u64, "Upload failed; releases stay in the outbox.");
                sleep_or_stop(d, &stop).await;
            }
            Err(e) => {
                tracing::error!(%aggregator, error = %e, "Upload refused; operator action needed. Releases stay in the outbox.");
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
    /// "connected", "refused" (operator action), "busy" (the aggregator asked to retry later) or "unreachable".
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
        Ok(Err(e @ UploadError::Busy { .. })) => ("busy", e.to_string()),
        Ok(Err(e)) => ("refused", format!("operator action needed: {e}")),
        Err(_) => (
            "unreachable",
            format!("no answer within {} ms", timeout.as_millis()),
        ),
    };
    Ok(st)
}
