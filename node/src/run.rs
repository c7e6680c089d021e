//! The node's pipeline: ingest -> windows -> DP release -> outbox, with an
//! uploader draining the outbox concurrently.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    sync::{Notify, watch},
};
use veil_privacy::{
    bounds::ContributionLimits,
    pseudonym::{DayKey, EventDay, Pseudonymizer},
};
use veil_proto::ingest_client::IngestClient;

use crate::{
    config::Config,
    event::parse_line,
    outbox::Outbox,
    release::release_window,
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
    /// Releases still in the outbox at exit.
    pub outbox_depth: u64,
}

const MAX_REPORTED_BAD_LINES: usize = 20;

struct Pseudonyms {
    master: Pseudonymizer,
    keys: HashMap<EventDay, DayKey>,
}

impl Pseudonyms {
    /// The key of the event day holding `ts_ms` (UTC days).
    fn key(&mut self, ts_ms: i64) -> Result<&DayKey, veil_privacy::PrivacyError> {
        let day = EventDay::from_unix_seconds(ts_ms.div_euclid(1000), 0)?;
        if !self.keys.contains_key(&day) {
            // Only current and later day keys are cached.
            self.keys.retain(|d, _| *d > day);
            let key = self.master.day_key(day)?;
            self.keys.insert(day, key);
        }
        self.keys
            .get(&day)
            .ok_or(veil_privacy::PrivacyError::InvalidParameter {
                name: "event day",
                reason: "day key missing".into(),
            })
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs the node until its input ends and the outbox is drained, or until
/// `shutdown` resolves (then intake stops, the current batch finishes, and
/// what is not acknowledged stays in the outbox for the next start).
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunReport, NodeError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let outbox = Outbox::open(
        &cfg.resolve(&cfg.outbox.path),
        &cfg.venue,
        &cfg.node_id,
        cfg.outbox.max_releases,
    )
    .await?;
    let channel = upload::channel(&cfg)?;

    let work = async {
        let policy_hash = fetch_policy_hash(channel.clone(), stop_rx.clone()).await?;
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
        ));
        let ingest = ingest(&cfg, &outbox, &policy_hash, wake.clone(), stop_rx.clone()).await;
        let _ = done_tx.send(true);
        wake.notify_one();
        input_done.notify_waiters();
        let upload_result = uploader
            .await
            .map_err(|e| UploadError::Transient(format!("uploader task failed: {e}")))?;
        let mut report = ingest?;
        report.upload = upload_result?;
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
    report.outbox_depth = outbox.depth().await?;
    outbox.close().await;
    Ok(report)
}

async fn fetch_policy_hash(
    channel: tonic::transport::Channel,
    stop: watch::Receiver<bool>,
) -> Result<String, NodeError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        match upload::fetch_policy(channel.clone()).await {
            Ok((hash, _toml)) => {
                tracing::info!(policy = %hash, "Policy fetched.");
                return Ok(hash);
            }
            Err(UploadError::Transient(e)) => {
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "Policy fetch failed; nothing is released until it succeeds.");
                if *stop.borrow() {
                    return Err(UploadError::Transient(e).into());
                }
                tokio::time::sleep(d).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Policy fetch refused; operator action needed.");
                return Err(e.into());
            }
        }
    }
}

async fn ingest(
    cfg: &Config,
    outbox: &Outbox,
    policy_hash: &str,
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
    let limits = ContributionLimits::new(
        cfg.privacy.max_events_per_window,
        cfg.privacy.max_zones_per_window,
    )?;
    let length_s = u32::try_from(cfg.windows.length.as_secs()).unwrap_or(60);
    let lateness_ms = i64::try_from(cfg.windows.lateness.as_millis()).unwrap_or(0);
    let mut windower = Windower::new(
        length_s,
        lateness_ms,
        &cfg.zones,
        limits,
        &cfg.privacy.app_consent_scope,
    );
    let mut pseudonyms = Pseudonyms {
        master: Pseudonymizer::generate()?,
        keys: HashMap::new(),
    };
    let mut report = RunReport::default();
    loop {
        if *stop.borrow() {
            tracing::info!(
                lines = report.lines,
                "Intake stopped; open windows are not released."
            );
            break;
        }
        let line = match lines.next_line().await {
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
        let closed = windower.drain_closed();
        if !closed.is_empty() {
            release_all(cfg, outbox, policy_hash, closed, &mut report).await?;
            wake.notify_one();
        }
    }
    if !*stop.borrow() {
        let rest = windower.flush();
        release_all(cfg, outbox, policy_hash, rest, &mut report).await?;
        wake.notify_one();
    }
    report.windows = windower.stats();
    Ok(report)
}

async fn release_all(
    cfg: &Config,
    outbox: &Outbox,
    policy_hash: &str,
    windows: Vec<crate::window::ClosedWindow>,
    report: &mut RunReport,
) -> Result<(), NodeError> {
    for w in windows {
        let releases = release_window(cfg, &w)?;
        for r in &releases {
            *report
                .releases_by_metric
                .entry(r.metric.to_owned())
                .or_default() += 1;
            report.epsilon_spent += r.value.cost().epsilon();
        }
        report.releases += outbox.push(&releases, policy_hash, now_ms()).await?;
        report.windows_released += 1;
    }
    Ok(())
}

async fn upload_loop(
    mut client: IngestClient<tonic::transport::Channel>,
    outbox: Outbox,
    batch: usize,
    wake: Arc<Notify>,
    mut input_done: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
) -> Result<UploadStats, UploadError> {
    let mut stats = UploadStats::default();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(30));
    loop {
        match upload::drain_batch(&mut client, &outbox, batch, &mut stats).await {
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
                    .set_state("last_upload_ms", &now_ms().to_string())
                    .await?;
            }
            Err(UploadError::Transient(e)) => {
                if *stop.borrow() {
                    return Ok(stats);
                }
                let d = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "Upload failed; releases stay in the outbox.");
                tokio::time::sleep(d).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Upload refused; operator action needed. Releases stay in the outbox.");
                return Err(e);
            }
        }
    }
}
