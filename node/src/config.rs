//! The node's configuration file (TOML, unknown keys refused).
//!
//! Relative paths are resolved against the config file's directory.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

/// Errors reading the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a valid config (toml's message names key and line).
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// Message.
        message: String,
    },
    /// A value is semantically wrong.
    #[error("{path}: {key}: {reason}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// `node.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Venue name (must match the node certificate).
    pub venue: String,
    /// Node id (must match the node certificate).
    pub node_id: String,
    /// Where and how to reach the aggregator.
    pub aggregator: AggregatorConfig,
    /// Event input.
    pub input: InputConfig,
    /// Windowing.
    #[serde(default)]
    pub windows: WindowConfig,
    /// Privacy parameters.
    #[serde(default)]
    pub privacy: PrivacyConfig,
    /// Durable outbox.
    pub outbox: OutboxConfig,
    /// The zones this node observes (public facts about the venue). Events
    /// for other zones are dropped and counted; the set of released
    /// (zone, metric) pairs depends only on this list, never on the data.
    #[serde(rename = "zone")]
    pub zones: Vec<ZoneConfig>,
    /// On-device inference (audio classes, occupancy forecasts, local alerts).
    #[serde(default)]
    pub inference: InferenceConfig,
    /// Prometheus metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Directory of the config file; set by [`Config::load`].
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Aggregator endpoint and this node's TLS material (PEM files).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// e.g. "https://127.0.0.1:7443".
    pub endpoint: String,
    /// Name the server certificate must carry (default "localhost").
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// CA certificate that signed the server certificate.
    pub ca: PathBuf,
    /// This node's certificate.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// Releases per upload call, 1..=1000.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Longest wait between reconnect attempts (exponential backoff with
    /// full jitter from 100 ms up to this; humantime, default "30s").
    #[serde(default = "default_max_backoff", with = "humantime_serde_compat")]
    pub max_backoff: Duration,
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

fn default_server_name() -> String {
    "localhost".into()
}
fn default_batch() -> usize {
    500
}

/// One zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// Zone name as in events.
    pub name: String,
    /// Whether the zone is an entry gate (ingress/egress are released).
    #[serde(default)]
    pub gate: bool,
    /// Occupancy cameras covering the zone (0 = no occupancy release). One
    /// person is in view of at most this many cameras at once, so it is the
    /// sensitivity of the zone's occupancy sum.
    #[serde(default)]
    pub cameras: u32,
    /// Safe occupancy limit of the zone (people). When the on-device
    /// forecaster predicts the zone will reach `inference.forecast_alert_ratio`
    /// of it within 10 minutes, the node raises a local early warning.
    #[serde(default)]
    pub capacity: Option<u32>,
}

/// On-device inference. Models, their inputs and their outputs stay on the
/// node; only the audio-class counts leave it, as releases the venue's
/// policy declares (non-personal; undeclared ones are not sent).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// Run the models on every closed window (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Closed windows waiting for inference, 1..=10000. When inference falls
    /// this far behind, windows skip inference (counted, logged at WARN);
    /// intake and DP releases never wait for it.
    #[serde(default = "default_inference_queue")]
    pub queue_windows: usize,
    /// Early warning when forecast occupancy reaches this share of a zone's
    /// `capacity`, in (0, 2] (default 0.9).
    #[serde(default = "default_forecast_ratio")]
    pub forecast_alert_ratio: f64,
    /// Local alert when at least this many of a zone's audio frames in one
    /// window are classified as clipping (default 5).
    #[serde(default = "default_clipping_frames")]
    pub clipping_alert_frames: u64,
}

fn default_true() -> bool {
    true
}
fn default_inference_queue() -> usize {
    64
}
fn default_forecast_ratio() -> f64 {
    0.9
}
fn default_clipping_frames() -> u64 {
    5
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queue_windows: default_inference_queue(),
            forecast_alert_ratio: default_forecast_ratio(),
            clipping_alert_frames: default_clipping_frames(),
        }
    }
}

/// Prometheus text exposition (`GET /metrics`), plain HTTP. Off unless
/// `listen` is set; bind it to loopback or a management network. Metrics
/// carry operational counters only, never a released or raw value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// e.g. "127.0.0.1:9464".
    #[serde(default)]
    pub listen: Option<std::net::SocketAddr>,
}

/// Where events come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// JSON Lines file, or "-" for stdin.
    pub path: PathBuf,
    /// Longest accepted line in bytes (1 KiB..=16 MiB); a longer line is
    /// skipped as invalid without being held in memory, so the node's memory
    /// does not follow its input.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// How far ahead of this node's clock an event may be dated. A later
    /// event is skipped as invalid: one wrong sensor clock must not move
    /// event time forward and make every later event late.
    #[serde(default = "default_max_future_skew", with = "humantime_serde_compat")]
    pub max_future_skew: Duration,
}

fn default_max_line_bytes() -> usize {
    64 * 1024
}
fn default_max_future_skew() -> Duration {
    Duration::from_secs(300)
}

/// Tumbling event-time windows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Window length, e.g. "1m" or "10s" (humantime), 1 s..=1 day, whole seconds.
    #[serde(default = "default_window", with = "humantime_serde_compat")]
    pub length: Duration,
    /// How long after a window's end late events are still accepted.
    #[serde(default = "default_lateness", with = "humantime_serde_compat")]
    pub lateness: Duration,
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}
fn default_lateness() -> Duration {
    Duration::from_secs(30)
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            length: default_window(),
            lateness: default_lateness(),
        }
    }
}

/// Node-side privacy parameters. What may be released, with which
/// mechanism, cost, purpose and consent, comes from the venue's policy,
/// fetched from the aggregator at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Most events one device/subject/ticket contributes per window.
    #[serde(default = "default_max_events")]
    pub max_events_per_window: u32,
    /// Most zones one device/subject contributes to per window.
    #[serde(default = "default_max_zones")]
    pub max_zones_per_window: u32,
    /// Each budget lease covers this many windows of a metric (more means
    /// fewer round trips and more tolerance of ledger outages, but budget
    /// charged for windows never released if the node stops early).
    #[serde(default = "default_lease_windows")]
    pub lease_windows: u32,
    /// Attendee-day policies: a device or app user counts as present in a
    /// zone from its first sighting there until this long after its last.
    #[serde(default = "default_presence_timeout", with = "humantime_serde_compat")]
    pub presence_timeout: Duration,
}

fn default_presence_timeout() -> Duration {
    Duration::from_secs(900)
}

fn default_max_events() -> u32 {
    1
}
fn default_max_zones() -> u32 {
    1
}
fn default_lease_windows() -> u32 {
    10
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            max_events_per_window: default_max_events(),
            max_zones_per_window: default_max_zones(),
            lease_windows: default_lease_windows(),
            presence_timeout: default_presence_timeout(),
        }
    }
}

/// The durable outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// SQLite file.
    pub path: PathBuf,
    /// Most releases held. At the cap intake pauses before the next window
    /// is released (no budget is spent, nothing is dropped) until the
    /// uploader frees room; the pause is logged at ERROR and counted
    /// (`outbox_full_waits` in the run report and `veil-node status`).
    #[serde(default = "default_cap")]
    pub max_releases: u64,
}

fn default_cap() -> u64 {
    1_000_000
}

mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Self::parse(&text, path)?;
        cfg.base_dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(cfg)
    }

    /// Parses and validates `text` (named `path` in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |key, reason: &str| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            reason: reason.into(),
        };
        if !veil_common::name::valid_name(&cfg.venue) {
            return Err(invalid("venue", "must be 1..=64 bytes of [a-z0-9_-]"));
        }
        if !veil_common::name::valid_name(&cfg.node_id) {
            return Err(invalid("node_id", "must be 1..=64 bytes of [a-z0-9_-]"));
        }
        let len = cfg.windows.length;
        if len.subsec_nanos() != 0 || len.as_secs() == 0 || len.as_secs() > 86_400 {
            return Err(invalid(
                "windows.length",
                "must be whole seconds in 1s..=1day",
            ));
        }
        if cfg.windows.lateness > Duration::from_secs(86_400) {
            return Err(invalid("windows.lateness", "must be at most 1 day"));
        }
        if !(1024..=16 << 20).contains(&cfg.input.max_line_bytes) {
            return Err(invalid(
                "input.max_line_bytes",
                "must be in 1024..=16777216 (1 KiB..=16 MiB)",
            ));
        }
        if cfg.input.max_future_skew > Duration::from_secs(86_400) {
            return Err(invalid("input.max_future_skew", "must be at most 1 day"));
        }
        if cfg.privacy.lease_windows == 0 || cfg.privacy.lease_windows > 1440 {
            return Err(invalid("privacy.lease_windows", "must be in 1..=1440"));
        }
        if cfg.privacy.max_events_per_window == 0 || cfg.privacy.max_events_per_window > 1000 {
            return Err(invalid(
                "privacy.max_events_per_window",
                "must be in 1..=1000",
            ));
        }
        if cfg.privacy.max_zones_per_window == 0 || cfg.privacy.max_zones_per_window > 64 {
            return Err(invalid("privacy.max_zones_per_window", "must be in 1..=64"));
        }
        if cfg.aggregator.max_backoff < Duration::from_millis(100)
            || cfg.aggregator.max_backoff > Duration::from_secs(3600)
        {
            return Err(invalid("aggregator.max_backoff", "must be in 100ms..=1h"));
        }
        if cfg.aggregator.batch == 0 || cfg.aggregator.batch > 1000 {
            return Err(invalid("aggregator.batch", "must be in 1..=1000"));
        }
        if cfg.zones.is_empty() {
            return Err(invalid("zone", "at least one [[zone]] is required"));
        }
        for z in &cfg.zones {
            if !veil_common::name::valid_name(&z.name) {
                return Err(invalid("zone.name", "must be 1..=64 bytes of [a-z0-9_-]"));
            }
            if z.cameras > 64 {
                return Err(invalid("zone.cameras", "must be in 0..=64"));
            }
            if z.capacity == Some(0) {
                return Err(invalid("zone.capacity", "must be > 0 when set"));
            }
        }
        if cfg.inference.queue_windows == 0 || cfg.inference.queue_windows > 10_000 {
            return Err(invalid("inference.queue_windows", "must be in 1..=10000"));
        }
        let ratio = cfg.inference.forecast_alert_ratio;
        if !(ratio > 0.0 && ratio <= 2.0) {
            return Err(invalid(
                "inference.forecast_alert_ratio",
                "must be in (0, 2]",
            ));
        }
        if cfg.outbox.max_releases == 0 {
            return Err(invalid("outbox.max_releases", "must be > 0"));
        }
        Ok(cfg)
    }

    /// Resolves a path from the config against its directory ("-" stays).
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || p == Path::new("-") {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }
}
