//! The aggregator's configuration file (TOML, unknown keys refused).
//!
//! Relative paths are resolved against the directory of the config file.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use veil_aggregator_core::{audit::AuditLog, storage::Storage};
use veil_privacy::audit::CheckpointSigner;

/// Errors reading the config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("{path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// toml's message (names the key and line).
        message: String,
    },
    /// A value is semantically wrong.
    #[error("{path}: {key}: {reason}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// Key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Errors opening the audit log from `[audit]`.
#[derive(Debug, thiserror::Error)]
pub enum AuditOpenError {
    /// The signing key could not be read or parsed.
    #[error("audit signing key {path}: {reason}")]
    Key {
        /// Path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The stored log failed to load (or does not match its checkpoint).
    #[error(transparent)]
    Load(#[from] veil_aggregator_core::audit::Error),
}

/// `aggregator.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address, e.g. "127.0.0.1:7443" (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Database URL: "sqlite://PATH" (created if missing) or
    /// "postgres://...". Shorthand for `[storage] url`; give one of the two.
    #[serde(default)]
    pub database: Option<String>,
    /// Database URL and pool settings.
    #[serde(default)]
    pub storage: StorageConfig,
    /// TLS material.
    pub tls: TlsConfig,
    /// Venues and their nodes. A node certificate whose venue/node is not
    /// listed here is refused.
    #[serde(default, rename = "venue")]
    pub venues: Vec<VenueConfig>,
    /// Role principals (compliance, ml, organizer) allowed to call.
    #[serde(default, rename = "principal")]
    pub principals: Vec<PrincipalConfig>,
    /// Ingest limits.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// `[connections]`: limits of the gRPC listener.
    #[serde(default)]
    pub connections: crate::tls::ConnectionLimits,
    /// `[requests]`: request message sizes and request bytes in flight.
    #[serde(default)]
    pub requests: crate::grpc::admission::inflight::RequestLimits,
    /// Audit log signing.
    pub audit: AuditConfig,
    /// Federated rounds (model card delta, scheduled rounds).
    #[serde(default)]
    pub rounds: crate::rounds::RoundsConfig,
    // --- Organizer surface, web half ---
    /// Organizer dashboard: its own HTTPS listener (absent: not served).
    #[serde(default)]
    pub dashboard: Option<crate::dashboard::Config>,
    /// Prometheus `/metrics` on a plain-HTTP listener (absent: not served).
    #[serde(default)]
    pub metrics: Option<crate::metrics::Config>,
    /// Limits the post-event report measures against.
    #[serde(default)]
    pub report: crate::report::Config,
    // --- end web half ---
    /// Organizer alerts: anomaly detection and rules.
    #[serde(default)]
    pub alerts: crate::alerts::Config,
    /// Directory of the config file; set by [`Config::load`].
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[storage]`: where the aggregator keeps its state and how it talks to it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// "sqlite://PATH" (relative to the config file) or
    /// "postgres://USER[:PASSWORD]@HOST[:PORT]/DB" (several replicas may
    /// share one PostgreSQL database).
    #[serde(default)]
    pub url: Option<String>,
    /// Most pooled database connections (default 8).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a request waits for a database connection before failing
    /// with Unavailable (humantime, default "5s").
    #[serde(default = "default_acquire_timeout", with = "humantime_duration")]
    pub acquire_timeout: std::time::Duration,
    /// Longest one statement, lock waits included, may run (humantime,
    /// default "10s"): PostgreSQL `statement_timeout`, SQLite `busy_timeout`.
    #[serde(default = "default_statement_timeout", with = "humantime_duration")]
    pub statement_timeout: std::time::Duration,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field(
                "url",
                &self
                    .url
                    .as_deref()
                    .map(veil_aggregator_core::storage::redact_url),
            )
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

fn default_max_connections() -> u32 {
    8
}
fn default_acquire_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(5)
}
fn default_statement_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: default_max_connections(),
            acquire_timeout: default_acquire_timeout(),
            statement_timeout: default_statement_timeout(),
        }
    }
}

/// Server TLS files (PEM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate that signs node and role client certificates.
    pub ca: PathBuf,
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Server private key.
    pub key: PathBuf,
    /// Certificate revocation lists (PEM) of the client CA; re-read when
    /// they change.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
}

/// One venue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VenueConfig {
    /// Venue name, as in node certificates' `spiffe://veil/venue/<name>/...`.
    pub name: String,
    /// Node ids allowed to submit for this venue.
    pub nodes: Vec<String>,
    /// Policy file (TOML) in force for this venue; nodes fetch it and every
    /// release names its hash. The daily budget comes from it.
    pub policy: PathBuf,
}

/// Audit log settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Checkpoint signing key (signed-note `PRIVATE+KEY+...` format, 0600);
    /// its name is the log's origin. `veil-aggregator pki init` writes one.
    pub signing_key: PathBuf,
    /// Sign a checkpoint every this many entries (and at shutdown and export).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

fn default_checkpoint_every() -> u64 {
    1000
}

/// One role principal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// Full SPIFFE id, e.g. "spiffe://veil/role/organizer/organizer-1".
    pub id: String,
    /// Venues this principal may see (organizer); empty = all (compliance, ml).
    #[serde(default)]
    pub venues: Vec<String>,
}

/// Ingest limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Most releases in one SubmitReleases call.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Largest accepted per-release epsilon (or rho).
    #[serde(default = "default_max_cost")]
    pub max_release_cost: f64,
    /// Oldest accepted window, by the aggregator's clock (humantime, default
    /// "400d"): a release whose window ended longer ago is refused, so a
    /// replay cannot outlive the idempotency keys that would catch it.
    #[serde(default = "default_max_window_age", with = "humantime_duration")]
    pub max_window_age: std::time::Duration,
    /// How far in the future (aggregator's clock) a window may start
    /// (humantime, default "1d"); later windows are refused as clock errors.
    #[serde(default = "default_max_future_skew", with = "humantime_duration")]
    pub max_future_skew: std::time::Duration,
    /// Most releases decided and stored in one group commit (one
    /// transaction, one fsync) across concurrent calls (default 4096). A
    /// call is never split: a larger single call is committed alone.
    #[serde(default = "default_group_max_releases")]
    pub group_max_releases: usize,
    /// Calls waiting for the group committer beyond which a new call is
    /// answered RESOURCE_EXHAUSTED with a retry hint (default 1024).
    #[serde(default = "default_max_queued_calls")]
    pub max_queued_calls: usize,
    /// SubmitReleases calls per second one node may make (0: no limit).
    #[serde(default)]
    pub max_calls_per_node_per_s: f64,
}

fn default_max_queued_calls() -> usize {
    1024
}

fn default_group_max_releases() -> usize {
    4096
}

fn default_max_window_age() -> std::time::Duration {
    std::time::Duration::from_secs(400 * 86_400)
}
fn default_max_future_skew() -> std::time::Duration {
    std::time::Duration::from_secs(86_400)
}

pub(crate) mod humantime_duration {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

fn default_max_batch() -> usize {
    1000
}
fn default_max_cost() -> f64 {
    10.0
}

impl IngestConfig {
    /// The limits as the core takes them.
    pub fn limits(&self) -> veil_aggregator_core::ingest::Limits {
        veil_aggregator_core::ingest::Limits {
            max_batch: self.max_batch,
            max_release_cost: self.max_release_cost,
            max_window_age: self.max_window_age,
            max_future_skew: self.max_future_skew,
            group_max_releases: self.group_max_releases,
            max_queued_calls: self.max_queued_calls,
            max_calls_per_node_per_s: self.max_calls_per_node_per_s,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch: default_max_batch(),
            max_release_cost: default_max_cost(),
            max_window_age: default_max_window_age(),
            max_future_skew: default_max_future_skew(),
            group_max_releases: default_group_max_releases(),
            max_queued_calls: default_max_queued_calls(),
            max_calls_per_node_per_s: 0.0,
        }
    }
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
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

    /// Parses `text` (named `path` in errors) and validates it.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let cfg: Config = toml::from_str(text).map_err(|e| Error::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let invalid = |key: &str, reason: &str| Error::Invalid {
            path: path.to_owned(),
            key: key.into(),
            reason: reason.into(),
        };
        let (key, url) = match (&cfg.database, &cfg.storage.url) {
            (Some(u), None) => ("database", u),
            (None, Some(u)) => ("storage.url", u),
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "database",
                    "give the database URL once: `database` or `[storage] url`, not both",
                ));
            }
            (None, None) => {
                return Err(invalid(
                    "storage.url",
                    "missing: set `[storage] url` (or `database`) to sqlite://PATH or postgres://...",
                ));
            }
        };
        if crate::storage::Backend::of_url(url).is_err() {
            return Err(invalid(key, "must start with sqlite:// or postgres://"));
        }
        if cfg.storage.max_connections == 0 || cfg.storage.max_connections > 1000 {
            return Err(invalid("storage.max_connections", "must be in 1..=1000"));
        }
        if cfg.storage.acquire_timeout.is_zero() || cfg.storage.statement_timeout.is_zero() {
            return Err(invalid(
                "storage",
                "acquire_timeout and statement_timeout must be positive",
            ));
        }
        for v in &cfg.venues {
            if !crate::identity::valid_name(&v.name) {
                return Err(invalid("venue.name", "must be 1..=64 bytes of [a-z0-9_-]"));
            }
            if v.nodes.iter().any(|n| !crate::identity::valid_name(n)) {
                return Err(invalid(
                    "venue.nodes",
                    "node ids must be 1..=64 bytes of [a-z0-9_-]",
                ));
            }
        }
        for p in &cfg.principals {
            match crate::identity::Identity::from_spiffe(&p.id) {
                Some(crate::identity::Identity::Role { .. }) => {}
                _ => {
                    return Err(invalid(
                        "principal.id",
                        "must be spiffe://veil/role/<compliance|ml|organizer>/<name>",
                    ));
                }
            }
        }
        if let Some(d) = &cfg.dashboard {
            d.check().map_err(|(key, reason)| invalid(key, &reason))?;
        }
        cfg.report
            .check()
            .map_err(|(key, reason)| invalid(key, &reason))?;
        if let Err(reason) = cfg.alerts.check() {
            return Err(invalid("alerts", &reason));
        }
        if let Err(reason) = cfg.connections.check() {
            return Err(invalid("connections", &reason));
        }
        if cfg.ingest.max_batch == 0 || cfg.ingest.max_batch > 10_000 {
            return Err(invalid("ingest.max_batch", "must be in 1..=10000"));
        }
        if let Err(reason) = cfg.requests.check(&cfg.method_limits()) {
            return Err(invalid("requests", &reason));
        }
        if cfg.ingest.max_queued_calls == 0 || cfg.ingest.max_queued_calls > 4096 {
            return Err(invalid("ingest.max_queued_calls", "must be in 1..=4096"));
        }
        if !(cfg.ingest.max_calls_per_node_per_s.is_finite()
            && cfg.ingest.max_calls_per_node_per_s >= 0.0)
        {
            return Err(invalid(
                "ingest.max_calls_per_node_per_s",
                "must be a number >= 0 (0: no limit)",
            ));
        }
        Ok(cfg)
    }

    /// Resolves a path from the config against its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The database URL with a relative SQLite path resolved.
    pub fn database_url(&self) -> String {
        let url = self
            .database
            .as_deref()
            .or(self.storage.url.as_deref())
            .unwrap_or_default();
        if let Some(rest) = url.strip_prefix("sqlite://") {
            let p = Path::new(rest);
            if p.is_relative() {
                return format!("sqlite://{}", self.base_dir.join(p).display());
            }
        }
        url.to_owned()
    }

    /// Every venue's policy file, resolved: (venue, path).
    pub fn policy_files(&self) -> impl Iterator<Item = (&str, PathBuf)> {
        self.venues
            .iter()
            .map(|v| (v.name.as_str(), self.resolve(&v.policy)))
    }

    /// The largest message each gRPC method accepts (`[requests]` and
    /// `ingest.max_batch`).
    pub fn method_limits(&self) -> crate::grpc::admission::inflight::MethodLimits {
        crate::grpc::admission::inflight::MethodLimits::new(&self.requests, self.ingest.max_batch)
    }

    /// Who may call: the `[[venue]]` nodes and the `[[principal]]` tables.
    pub fn registry(&self) -> veil_aggregator_core::auth::Registry {
        veil_aggregator_core::auth::Registry::new(
            self.venues
                .iter()
                .flat_map(|v| v.nodes.iter().map(|n| (v.name.clone(), n.clone()))),
            self.principals
                .iter()
                .map(|p| (p.id.clone(), p.venues.clone())),
        )
    }

    /// The venues' policies in force, loaded and validated.
    pub fn policies(&self) -> Result<veil_aggregator_core::policy::Policies, String> {
        veil_aggregator_core::policy::Policies::load(self.policy_files())
    }

    /// How to open the database: [`Config::database_url`] and `[storage]`.
    pub fn storage_options(&self) -> veil_aggregator_core::storage::StorageOptions {
        veil_aggregator_core::storage::StorageOptions {
            url: self.database_url(),
            max_connections: self.storage.max_connections,
            acquire_timeout: self.storage.acquire_timeout,
            statement_timeout: self.storage.statement_timeout,
        }
    }

    /// The checkpoint signer of `[audit] signing_key`.
    pub fn audit_signer(&self) -> Result<CheckpointSigner, AuditOpenError> {
        let path = self.resolve(&self.audit.signing_key);
        let key_err = |reason: String| AuditOpenError::Key {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| key_err(e.to_string()))?;
        CheckpointSigner::from_private_key_str(text.trim()).map_err(|e| key_err(e.to_string()))
    }

    /// Reads the checkpoint signing key and loads the audit log from
    /// `storage` (checking the stored tree against its latest checkpoint).
    pub async fn open_audit(&self, storage: &Storage) -> Result<AuditLog, AuditOpenError> {
        let signer = self.audit_signer()?;
        Ok(AuditLog::load(storage, signer, self.audit.checkpoint_every).await?)
    }

    /// The dashboard's listener and TLS files (paths resolved; the gRPC
    /// server's certificate, key and CA where `[dashboard]` names none),
    /// when `[dashboard]` is configured.
    pub fn dashboard(&self) -> Option<crate::dashboard::Settings> {
        self.dashboard.as_ref().map(|d| crate::dashboard::Settings {
            listen: d.listen,
            cert: self.resolve(d.cert.as_ref().unwrap_or(&self.tls.cert)),
            key: self.resolve(d.key.as_ref().unwrap_or(&self.tls.key)),
            client_ca: self.resolve(d.client_ca.as_ref().unwrap_or(&self.tls.ca)),
            occupancy_limits: self.report.occupancy_limits.clone(),
        })
    }

    /// What the post-event report reads: policies, the database, the audit
    /// log's signer and the `[report]` limits.
    pub fn report_sources(&self) -> Result<crate::report::Sources, String> {
        Ok(crate::report::Sources {
            policies: self.policies()?,
            storage: self.storage_options(),
            signer: self.audit_signer().map_err(|e| e.to_string())?,
            checkpoint_every: self.audit.checkpoint_every,
            limits: self.report.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REST: &str = "[tls]\nca = \"ca.pem\"\ncert = \"s.pem\"\nkey = \"s.key\"\n\n\
                        [audit]\nsigning_key = \"audit.key\"\n";

    fn parse(head: &str) -> Result<Config, Error> {
        Config::parse(
            &format!("listen = \"127.0.0.1:0\"\n{head}\n{REST}"),
            Path::new("aggregator.toml"),
        )
    }

    #[test]
    fn storage_table_and_database_shorthand() {
        let c = parse(
            "[storage]\nurl = \"postgres://veil:pw@db/veil\"\nmax_connections = 20\n\
             acquire_timeout = \"2s\"\nstatement_timeout = \"30s\"\n",
        )
        .expect("storage table");
        let o = c.storage_options();
        assert_eq!(o.url, "postgres://veil:pw@db/veil");
        assert_eq!(o.max_connections, 20);
        assert_eq!(o.acquire_timeout, std::time::Duration::from_secs(2));
        assert_eq!(o.statement_timeout, std::time::Duration::from_secs(30));
        assert!(!format!("{c:?}").contains("pw@"), "password redacted");
        let c = parse("database = \"sqlite://a.db\"").expect("shorthand");
        assert_eq!(c.storage_options().max_connections, 8);
        let both = parse("database = \"sqlite://a.db\"\n[storage]\nurl = \"sqlite://b.db\"");
        assert!(both.is_err());
        assert!(parse("").is_err(), "no database");
        let bad = parse("database = \"mysql://h/db\"").expect_err("unknown scheme");
        assert!(bad.to_string().contains("database"), "{bad}");
    }
}
