//! The inference stage of a running node.
//!
//! Closed windows are handed to this stage over a bounded queue; intake and
//! DP releases never wait for it (when it falls behind, windows skip
//! inference and are counted). For every window it:
//!
//! 1. classifies each zone's audio frames and releases the per-class frame
//!    counts as the `audio_*` metrics, where the venue's policy declares them
//!    non-personal (sound describes the room, not people; undeclared metrics
//!    are not sent — fail closed);
//! 2. forecasts each camera zone's occupancy ten minutes ahead from its exact
//!    on-node history and raises a local early warning when the forecast
//!    reaches `forecast_alert_ratio` of the zone's `capacity`;
//! 3. raises a local alert when a zone's frames classified as clipping reach
//!    `clipping_alert_frames`.
//!
//! Local alerts are logged at WARN (once when raised, once when cleared)
//! and counted in metrics; forecasts are not released (they are computed
//! from exact counts, so sending them would bypass the DP layer).

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::mpsc;
use veil_privacy::policy::LoadedPolicy;

use super::{AUDIO_CLASSES, AudioCounts, AudioFeatures, InferenceError, Models, ZoneHistory};
use crate::{
    config::Config,
    metrics::{KindLabel, NodeMetrics},
    outbox::{Outbox, OutboxError},
    release::{metric::AUDIO_CLASS_METRICS, plan_measurements, privatize},
    window::ClosedWindow,
};

/// What inference needs from one zone of a closed window.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneInput {
    /// Zone name.
    pub zone: String,
    /// Exact occupancy estimate (camera zones with readings only).
    pub occupancy: Option<f64>,
    /// Audio frame features.
    pub frames: Vec<AudioFeatures>,
    /// The zone's configured capacity.
    pub capacity: Option<u32>,
}

/// What inference needs from one closed window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowInput {
    /// Window start, Unix ms.
    pub start_ms: i64,
    /// Window length, s.
    pub length_s: u32,
    /// Per zone.
    pub zones: Vec<ZoneInput>,
}

impl WindowInput {
    /// Moves the audio frames out of `w` (releases do not need them) and
    /// copies the exact occupancy of its camera zones.
    pub fn take_from(cfg: &Config, w: &mut ClosedWindow) -> Self {
        let zones = cfg
            .zones
            .iter()
            .filter_map(|z| {
                let agg = w.zones.get_mut(&z.name)?;
                let occupancy = (z.cameras > 0 && !agg.occupancy.is_empty())
                    .then(|| agg.occupancy_estimate() as f64);
                Some(ZoneInput {
                    zone: z.name.clone(),
                    occupancy,
                    frames: std::mem::take(&mut agg.audio_frames),
                    capacity: z.capacity,
                })
            })
            .collect();
        Self {
            start_ms: w.start_ms,
            length_s: w.length_s,
            zones,
        }
    }
}

/// What the models said about one window.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowOutput {
    /// Per zone with audio frames: class counts.
    pub audio: Vec<(String, AudioCounts)>,
    /// Per camera zone: forecast occupancy in ten minutes.
    pub forecasts: Vec<(String, f64)>,
    /// Wall time of both models over all zones.
    pub latency: Duration,
}

/// Runs both models over one window, updating the zones' histories first.
pub fn infer(
    models: &Models,
    histories: &mut HashMap<String, ZoneHistory>,
    input: &WindowInput,
) -> Result<WindowOutput, InferenceError> {
    let started = std::time::Instant::now();
    let mut audio = Vec::new();
    let mut forecasts = Vec::new();
    for z in &input.zones {
        if !z.frames.is_empty() {
            audio.push((z.zone.clone(), models.classify_frames(&z.frames)?));
        }
        if let Some(occ) = z.occupancy {
            let h = histories.entry(z.zone.clone()).or_default();
            h.record(input.start_ms, input.length_s, occ);
            if let Some(f) = models.forecast(h)? {
                forecasts.push((z.zone.clone(), f));
            }
        }
    }
    Ok(WindowOutput {
        audio,
        forecasts,
        latency: started.elapsed(),
    })
}

/// Alert thresholds (from `[inference]` and the zones' capacities).
#[derive(Debug, Clone)]
pub struct AlertRules {
    /// Share of capacity a forecast must reach.
    pub forecast_ratio: f64,
    /// Clipping frames per zone and window.
    pub clipping_frames: u64,
}

/// A local alert that was raised or cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalAlert {
    /// "forecast_capacity" or "audio_clipping".
    pub kind: &'static str,
    /// Zone.
    pub zone: String,
    /// Window that raised or cleared it, Unix ms.
    pub window_start_ms: i64,
    /// True when raised, false when cleared.
    pub raised: bool,
    /// Operator-facing detail.
    pub detail: String,
}

/// Open local alerts; a condition that persists raises once.
#[derive(Debug, Default)]
pub struct LocalAlerts {
    open: std::collections::HashSet<(&'static str, String)>,
}

impl LocalAlerts {
    /// Evaluates one window's outputs; returns the alerts raised or cleared.
    pub fn evaluate(
        &mut self,
        rules: &AlertRules,
        input: &WindowInput,
        out: &WindowOutput,
    ) -> Vec<LocalAlert> {
        let mut changes = Vec::new();
        let mut update = |kind: &'static str, zone: &str, firing: bool, detail: String| {
            let key = (kind, zone.to_owned());
            let was = self.open.contains(&key);
            if firing != was {
                if firing {
                    self.open.insert(key);
                } else {
                    self.open.remove(&key);
                }
                changes.push(LocalAlert {
                    kind,
                    zone: zone.to_owned(),
                    window_start_ms: input.start_ms,
                    raised: firing,
                    detail,
                });
            }
        };
        for (zone, forecast) in &out.forecasts {
            let Some(cap) = input
                .zones
                .iter()
                .find(|z| &z.zone == zone)
                .and_then(|z| z.capacity)
            else {
                continue;
            };
            let limit = rules.forecast_ratio * f64::from(cap);
            update(
                "forecast_capacity",
                zone,
                *forecast >= limit,
                format!(
                    "forecast occupancy in 10 min {forecast:.0} vs {limit:.0} ({:.0}% of capacity {cap})",
                    rules.forecast_ratio * 100.0
                ),
            );
        }
        for (zone, counts) in &out.audio {
            let n = counts.get("clipping");
            update(
                "audio_clipping",
                zone,
                n >= rules.clipping_frames,
                format!("{n} clipping frames in the window"),
            );
        }
        changes
    }
}

/// Counters of the inference stage (safe to export).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferenceStats {
    /// Windows run through the models.
    pub windows: u64,
    /// Windows that skipped inference (queue full).
    pub skipped: u64,
    /// Model failures (the window's outputs are dropped, logged at ERROR).
    pub failures: u64,
    /// Audio-class releases written to the outbox.
    pub audio_releases: u64,
    /// The same, per metric.
    pub releases_by_metric: std::collections::BTreeMap<&'static str, u64>,
    /// Audio-class releases not written (outbox full or failing; ERROR).
    pub audio_release_errors: u64,
    /// Local alerts raised, by kind.
    pub alerts_raised: std::collections::BTreeMap<&'static str, u64>,
    /// Median inference time per window, µs.
    pub latency_p50_us: u64,
    /// 99th percentile, µs.
    pub latency_p99_us: u64,
    /// Largest, µs.
    pub latency_max_us: u64,
}

/// Most latency samples kept for the run report's percentiles.
const MAX_LATENCY_SAMPLES: usize = 1 << 16;

/// The running stage: a task fed by a bounded queue.
#[derive(Debug)]
pub struct Stage {
    tx: mpsc::Sender<WindowInput>,
    task: tokio::task::JoinHandle<InferenceStats>,
    metrics: NodeMetrics,
    skipped: u64,
}

/// Everything the stage task owns.
struct Worker {
    models: Arc<Models>,
    policy: Arc<LoadedPolicy>,
    outbox: Outbox,
    metrics: NodeMetrics,
    rules: AlertRules,
}

impl Stage {
    /// Loads the embedded models and starts the stage.
    pub fn start(
        cfg: &Config,
        policy: Arc<LoadedPolicy>,
        outbox: Outbox,
        metrics: NodeMetrics,
    ) -> Result<Self, InferenceError> {
        let models = Arc::new(Models::load_embedded()?);
        let (tx, rx) = mpsc::channel(cfg.inference.queue_windows);
        let worker = Worker {
            models,
            policy,
            outbox,
            metrics: metrics.clone(),
            rules: AlertRules {
                forecast_ratio: cfg.inference.forecast_alert_ratio,
                clipping_frames: cfg.inference.clipping_alert_frames,
            },
        };
        let task = tokio::spawn(worker.run(rx));
        Ok(Self {
            tx,
            task,
            metrics,
            skipped: 0,
        })
    }

    /// Queues a window; never waits. Returns false when the queue is full
    /// (the window skips inference; counted, logged at WARN every 100).
    pub fn submit(&mut self, input: WindowInput) -> bool {
        match self.tx.try_send(input) {
            Ok(()) => true,
            Err(_) => {
                self.skipped += 1;
                self.metrics.inference_skipped.inc();
                if self.skipped % 100 == 1 {
                    tracing::warn!(
                        skipped = self.skipped,
                        "On-device inference is behind; windows skip it (DP releases are unaffected)."
                    );
                }
                false
            }
        }
    }

    /// Finishes the queued windows and returns the stage's counters.
    pub async fn finish(self) -> InferenceStats {
        let Self {
            tx, task, skipped, ..
        } = self;
        drop(tx);
        let mut stats = task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "Inference task failed.");
            InferenceStats::default()
        });
        stats.skipped = skipped;
        stats
    }
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<WindowInput>) -> InferenceStats {
        let mut stats = InferenceStats::default();
        let mut histories: HashMap<String, ZoneHistory> = HashMap::new();
        let mut alerts = LocalAlerts::default();
        let mut latencies: Vec<u64> = Vec::new();
        while let Some(input) = rx.recv().await {
            let models = self.models.clone();
            // The models are synchronous CPU work: off the async threads.
            let joined = tokio::task::spawn_blocking(move || {
                let out = infer(&models, &mut histories, &input);
                (out, histories, input)
            })
            .await;
            let (out, back, input) = match joined {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "Inference panicked; the stage stops.");
                    stats.failures += 1;
                    break;
                }
            };
            histories = back;
            let out = match out {
                Ok(o) => o,
                Err(e) => {
                    stats.failures += 1;
                    tracing::error!(error = %e, window_start_ms = input.start_ms, "Inference failed for a window.");
                    continue;
                }
            };
            stats.windows += 1;
            let us = u64::try_from(out.latency.as_micros()).unwrap_or(u64::MAX);
            if latencies.len() < MAX_LATENCY_SAMPLES {
                latencies.push(us);
            }
            stats.latency_max_us = stats.latency_max_us.max(us);
            self.metrics
                .inference_latency
                .observe(out.latency.as_secs_f64());
            for a in alerts.evaluate(&self.rules, &input, &out) {
                if a.raised {
                    *stats.alerts_raised.entry(a.kind).or_default() += 1;
                    self.metrics
                        .local_alerts
                        .get_or_create(&KindLabel { kind: a.kind })
                        .inc();
                    tracing::warn!(kind = a.kind, zone = %a.zone, window_start_ms = a.window_start_ms, detail = %a.detail, "Local alert raised.");
                } else {
                    tracing::info!(kind = a.kind, zone = %a.zone, window_start_ms = a.window_start_ms, "Local alert cleared.");
                }
            }
            match self.release_audio(&input, &out, &mut stats).await {
                Ok(()) => {}
                Err(e) => {
                    stats.audio_release_errors += 1;
                    tracing::error!(error = %e, window_start_ms = input.start_ms, "Audio-class releases of a window were not written.");
                }
            }
        }
        latencies.sort_unstable();
        let pct = |p: f64| -> u64 {
            if latencies.is_empty() {
                return 0;
            }
            let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
            latencies[i.min(latencies.len() - 1)]
        };
        stats.latency_p50_us = pct(0.5);
        stats.latency_p99_us = pct(0.99);
        stats
    }

    /// Writes the per-class counts the policy allows to the outbox.
    async fn release_audio(
        &self,
        input: &WindowInput,
        out: &WindowOutput,
        stats: &mut InferenceStats,
    ) -> Result<(), ReleaseAudioError> {
        let mut releases = Vec::new();
        for (zone, counts) in &out.audio {
            let values: Vec<(&'static str, f64)> = AUDIO_CLASS_METRICS
                .iter()
                .zip(AUDIO_CLASSES)
                .map(|(m, c)| (*m, counts.get(c) as f64))
                .collect();
            for p in plan_measurements(&self.policy, zone, input.start_ms, input.length_s, &values)?
            {
                releases.push(privatize(&p, "")?);
            }
        }
        if releases.is_empty() {
            return Ok(());
        }
        let now = veil_common::now_ms();
        stats.audio_releases += self.outbox.push(&releases, &self.policy.hash, now).await?;
        for r in &releases {
            self.metrics.add_releases(r.metric, 1);
            *stats.releases_by_metric.entry(r.metric).or_default() += 1;
        }
        Ok(())
    }
}

/// Why audio-class releases were not written.
#[derive(Debug, thiserror::Error)]
enum ReleaseAudioError {
    #[error(transparent)]
    Privacy(#[from] veil_privacy::PrivacyError),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::AudioFeatures;

    const POLICY: &str = include_str!("../../../policies/arena.toml");

    fn config(capacity: u32) -> Config {
        let text = format!(
            "venue = \"arena\"\nnode_id = \"node-1\"\n\n\
             [aggregator]\nendpoint = \"https://127.0.0.1:1\"\n\
             ca = \"unused.pem\"\ncert = \"unused.pem\"\nkey = \"unused.key\"\n\n\
             [input]\npath = \"unused.jsonl\"\n\n[outbox]\npath = \"unused.db\"\n\n\
             [inference]\nforecast_alert_ratio = 0.5\nclipping_alert_frames = 2\n\n\
             [[zone]]\nname = \"floor\"\ncameras = 1\ncapacity = {capacity}\n"
        );
        Config::parse(&text, std::path::Path::new("node.toml")).unwrap()
    }

    fn music() -> AudioFeatures {
        AudioFeatures::new(97.0, 106.0, &[0.24, 0.2, 0.15, 0.12, 0.1, 0.09, 0.06, 0.04])
    }
    fn clipping() -> AudioFeatures {
        AudioFeatures::new(97.0, 125.0, &[0.24, 0.2, 0.15, 0.12, 0.1, 0.09, 0.06, 0.04])
    }

    fn window(minute: i64, occupancy: f64, frames: Vec<AudioFeatures>) -> WindowInput {
        WindowInput {
            start_ms: 1_767_200_400_000 + minute * 60_000,
            length_s: 60,
            zones: vec![ZoneInput {
                zone: "floor".into(),
                occupancy: Some(occupancy),
                frames,
                capacity: Some(1000),
            }],
        }
    }

    #[test]
    fn infer_classifies_frames_and_forecasts_camera_zones() {
        let models = Models::load_embedded().unwrap();
        let mut h = HashMap::new();
        let mut last = None;
        for m in 0..20 {
            let out = infer(
                &models,
                &mut h,
                &window(m, 400.0, vec![music(), clipping()]),
            )
            .unwrap();
            last = Some(out);
        }
        let out = last.unwrap();
        assert_eq!(out.audio.len(), 1);
        assert_eq!(out.audio[0].1.get("music"), 1);
        assert_eq!(out.audio[0].1.get("clipping"), 1);
        assert_eq!(out.forecasts.len(), 1);
        // A steady zone is forecast near its level.
        let f = out.forecasts[0].1;
        assert!((250.0..600.0).contains(&f), "forecast {f}");
        // A zone without camera readings or frames gets neither.
        let mut input = window(21, 0.0, vec![]);
        input.zones[0].occupancy = None;
        let out = infer(&models, &mut h, &input).unwrap();
        assert!(out.audio.is_empty() && out.forecasts.is_empty());
    }

    #[test]
    fn local_alerts_raise_once_while_the_condition_persists_and_clear() {
        let rules = AlertRules {
            forecast_ratio: 0.9,
            clipping_frames: 3,
        };
        let mut alerts = LocalAlerts::default();
        let input = window(0, 0.0, vec![]);
        let out = |forecast: f64, clipping: u64| WindowOutput {
            audio: vec![("floor".into(), AudioCounts([0, 0, 0, 0, clipping]))],
            forecasts: vec![("floor".into(), forecast)],
            latency: Duration::ZERO,
        };
        assert!(alerts.evaluate(&rules, &input, &out(100.0, 0)).is_empty());
        let raised = alerts.evaluate(&rules, &input, &out(950.0, 3));
        let kinds: Vec<_> = raised.iter().map(|a| (a.kind, a.raised)).collect();
        assert_eq!(
            kinds,
            vec![("forecast_capacity", true), ("audio_clipping", true)]
        );
        assert!(
            raised[0].detail.contains("capacity 1000"),
            "{:?}",
            raised[0]
        );
        // Still firing: nothing new.
        assert!(alerts.evaluate(&rules, &input, &out(990.0, 9)).is_empty());
        let cleared = alerts.evaluate(&rules, &input, &out(800.0, 0));
        assert!(cleared.iter().all(|a| !a.raised) && cleared.len() == 2);
        // A zone without a capacity never raises a forecast alert.
        let mut no_cap = window(0, 0.0, vec![]);
        no_cap.zones[0].capacity = None;
        assert!(alerts.evaluate(&rules, &no_cap, &out(1e9, 0)).is_empty());
    }

    #[test]
    fn audio_classes_are_planned_only_where_the_policy_declares_them_non_personal() {
        let policy = LoadedPolicy::parse(POLICY).unwrap();
        let planned = plan_measurements(
            &policy,
            "floor",
            0,
            60,
            &[
                ("audio_music", 3.0),
                // Not in the policy: dropped.
                ("audio_whistles", 1.0),
                // Declared with a DP mechanism: a raw measurement is refused.
                ("occupancy", 10.0),
            ],
        )
        .unwrap();
        let names: Vec<_> = planned.iter().map(|p| p.metric).collect();
        assert_eq!(names, vec!["audio_music"]);
        assert!(matches!(planned[0].cost, veil_privacy::Cost::Free));
    }

    #[tokio::test]
    async fn stage_releases_audio_counts_to_the_outbox_and_raises_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(100);
        let outbox = Outbox::open(&dir.path().join("outbox.db"), "arena", "node-1", 10_000)
            .await
            .unwrap();
        let policy = Arc::new(LoadedPolicy::parse(POLICY).unwrap());
        let metrics = NodeMetrics::new();
        let mut stage = Stage::start(&cfg, policy, outbox.clone(), metrics.clone()).unwrap();
        for m in 0..12 {
            let frames = vec![music(), music(), clipping(), clipping()];
            let mut w = window(m, 80.0, frames);
            w.zones[0].capacity = cfg.zones[0].capacity;
            assert!(stage.submit(w));
        }
        let stats = stage.finish().await;
        assert_eq!(stats.windows, 12);
        assert_eq!(stats.skipped, 0);
        // Five audio classes per window and zone.
        assert_eq!(stats.audio_releases, 12 * 5);
        assert_eq!(outbox.depth().await.unwrap(), 12 * 5);
        assert_eq!(stats.releases_by_metric.get("audio_clipping"), Some(&12));
        // Clipping persisted: raised once. Occupancy 80 of capacity 100 at
        // ratio 0.5: the forecast alert is raised once too.
        assert_eq!(stats.alerts_raised.get("audio_clipping"), Some(&1));
        assert_eq!(stats.alerts_raised.get("forecast_capacity"), Some(&1));
        assert!(stats.latency_p50_us > 0 && stats.latency_p99_us >= stats.latency_p50_us);
        let text = metrics.render();
        assert!(
            text.contains("veil_node_local_alerts_total{kind=\"audio_clipping\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("veil_node_inference_latency_seconds_count 12"),
            "{text}"
        );
        let (records, corrupt) = outbox.peek(100).await.unwrap();
        assert_eq!(corrupt, 0);
        let clip = records
            .iter()
            .find(|r| r.release.metric == "audio_clipping")
            .unwrap();
        assert_eq!(clip.release.zone, "floor");
    }
}
