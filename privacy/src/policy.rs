//! Consent and privacy policies: what a venue may release, for which
//! purposes, under which mechanism and cost, from which signals, with which
//! consent, within which daily budget, and who may read it.
//!
//! A policy is a TOML document (see `policies/` and the README's schema
//! section). Its identity is the lowercase hex SHA-256 of its bytes: nodes
//! name it in every release and the aggregator refuses releases made under
//! any other. Parsing refuses unknown keys; errors name the key and line.

use std::collections::BTreeSet;

use serde::Deserialize;

/// Where a metric's data comes from. Personal signal classes can never be
/// declared non-personal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Occupancy counts from edge computer vision.
    Camera,
    /// Ticket scans at gates.
    Gate,
    /// Audio levels and features.
    Audio,
    /// CO2, temperature.
    Environment,
    /// Wi-Fi/BLE probes (device identifiers).
    Probe,
    /// App telemetry (subject identifiers).
    App,
    /// On-device model outputs derived from non-personal signals.
    Model,
}

impl Signal {
    /// Whether the signal class carries data about identifiable people.
    pub fn is_personal(self) -> bool {
        matches!(
            self,
            Signal::Camera | Signal::Gate | Signal::Probe | Signal::App
        )
    }
    /// Its name in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Camera => "camera",
            Signal::Gate => "gate",
            Signal::Audio => "audio",
            Signal::Environment => "environment",
            Signal::Probe => "probe",
            Signal::App => "app",
            Signal::Model => "model",
        }
    }
}

/// How a metric is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMechanism {
    /// Discrete Laplace on counts; cost `epsilon` per release.
    DiscreteLaplace,
    /// Discrete Gaussian on counts; cost `rho` per release.
    DiscreteGaussian,
    /// Declared non-personal: released without noise, audited as such.
    NonPersonal,
}

impl PolicyMechanism {
    /// Its name in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMechanism::DiscreteLaplace => "discrete_laplace",
            PolicyMechanism::DiscreteGaussian => "discrete_gaussian",
            PolicyMechanism::NonPersonal => "non_personal",
        }
    }
}

/// Roles that may read outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reader {
    /// Event organizers (dashboard, queries, report).
    Organizer,
    /// Compliance officers.
    Compliance,
    /// ML teams.
    Ml,
}

/// The venue's privacy budget per event day.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetPolicy {
    /// Total epsilon per event day, at `delta`.
    pub epsilon_per_day: f64,
    /// The delta at which epsilon is stated (0 <= delta < 1e-3).
    pub delta: f64,
}

/// How long stored releases are kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Days the aggregator keeps releases (1..=3650).
    pub releases_days: u32,
}

/// One metric the venue may release.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricPolicy {
    /// Metric name as nodes release it.
    pub name: String,
    /// Signal class the metric is computed from.
    pub signal: Signal,
    /// Purposes it may be collected for.
    pub purposes: Vec<String>,
    /// How it is released.
    pub mechanism: PolicyMechanism,
    /// Pure epsilon per release (discrete_laplace).
    #[serde(default)]
    pub epsilon: Option<f64>,
    /// zCDP rho per release (discrete_gaussian).
    #[serde(default)]
    pub rho: Option<f64>,
    /// Released values below this are suppressed by the reader-facing
    /// views (post-processing; 0 = none).
    #[serde(default)]
    pub suppress_below: f64,
    /// Roles that may read the metric's outputs.
    pub readers: Vec<Reader>,
}

/// A consent requirement for subject-linked events.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentPolicy {
    /// Signal class (event kind) the requirement applies to (`app`).
    pub signal: Signal,
    /// Purpose the consent is for.
    pub purpose: String,
    /// Consent scope the subject must have granted.
    pub scope: String,
}

/// A venue policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Schema version; must be 1.
    pub version: u32,
    /// Human-readable name of the policy.
    pub name: String,
    /// Daily budget.
    pub budget: BudgetPolicy,
    /// Retention.
    pub retention: RetentionPolicy,
    /// Metrics that may be released.
    #[serde(rename = "metric")]
    pub metrics: Vec<toml::Spanned<MetricPolicy>>,
    /// Consent requirements.
    #[serde(default, rename = "consent")]
    pub consents: Vec<ConsentPolicy>,
}

/// A policy refused by validation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Not valid TOML, or a key is unknown, missing or mistyped.
    #[error("{0}")]
    Syntax(String),
    /// A value is not allowed.
    #[error("line {line}: `{key}`: {reason}")]
    Invalid {
        /// 1-based line.
        line: usize,
        /// Key path, e.g. `metric[occupancy].epsilon`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// A parsed, validated policy with its content hash.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPolicy {
    /// The policy.
    pub policy: Policy,
    /// Lowercase hex SHA-256 of the TOML bytes.
    pub hash: String,
    /// The TOML text.
    pub text: String,
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn line_of_key(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let t = l.trim_start();
            t.starts_with(key) && t[key.len()..].trim_start().starts_with(['=', ']'])
                || t.starts_with(&format!("[{key}]"))
        })
        .map_or(1, |i| i + 1)
}

use veil_common::name::valid_metric as valid_name;

impl LoadedPolicy {
    /// Parses and validates a policy document.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let policy: Policy =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let top = |key: &str, reason: String| PolicyError::Invalid {
            line: line_of_key(text, key.rsplit('.').next().unwrap_or(key)),
            key: key.to_owned(),
            reason,
        };
        if policy.version != 1 {
            return Err(top(
                "version",
                format!("unsupported version {}, expected 1", policy.version),
            ));
        }
        if policy.name.trim().is_empty() {
            return Err(top("name", "must not be empty".into()));
        }
        let b = &policy.budget;
        if !(b.epsilon_per_day.is_finite()
            && b.epsilon_per_day > 0.0
            && b.epsilon_per_day <= 100_000.0)
        {
            return Err(top(
                "budget.epsilon_per_day",
                "must be in (0, 100000]".into(),
            ));
        }
        if !(b.delta.is_finite() && (0.0..1e-3).contains(&b.delta)) {
            return Err(top("budget.delta", "must be in [0, 0.001)".into()));
        }
        if !(1..=3650).contains(&policy.retention.releases_days) {
            return Err(top("retention.releases_days", "must be in 1..=3650".into()));
        }
        if policy.metrics.is_empty() {
            return Err(top("metric", "at least one [[metric]] is required".into()));
        }
        let mut seen = BTreeSet::new();
        for spanned in &policy.metrics {
            let line = line_of(text, spanned.span().start);
            let m = spanned.get_ref();
            let bad = |field: &str, reason: String| PolicyError::Invalid {
                line,
                key: format!("metric[{}].{field}", m.name),
                reason,
            };
            if !valid_name(&m.name) {
                return Err(bad("name", "must be 1..=64 bytes of [a-z0-9_]".into()));
            }
            if !seen.insert(m.name.clone()) {
                return Err(bad("name", "declared twice".into()));
            }
            if m.purposes.is_empty() || m.purposes.iter().any(|p| !valid_name(p)) {
                return Err(bad(
                    "purposes",
                    "at least one, each 1..=64 bytes of [a-z0-9_]".into(),
                ));
            }
            let positive =
                |v: Option<f64>| v.is_some_and(|v| v.is_finite() && v > 0.0 && v <= 10.0);
            match m.mechanism {
                PolicyMechanism::DiscreteLaplace => {
                    if !positive(m.epsilon) || m.rho.is_some() {
                        return Err(bad(
                            "epsilon",
                            "discrete_laplace needs epsilon in (0, 10] and no rho".into(),
                        ));
                    }
                }
                PolicyMechanism::DiscreteGaussian => {
                    if !positive(m.rho) || m.epsilon.is_some() {
                        return Err(bad(
                            "rho",
                            "discrete_gaussian needs rho in (0, 10] and no epsilon".into(),
                        ));
                    }
                }
                PolicyMechanism::NonPersonal => {
                    if m.signal.is_personal() {
                        return Err(bad(
                            "mechanism",
                            format!(
                                "signal `{}` carries personal data and cannot be declared non_personal",
                                m.signal.as_str()
                            ),
                        ));
                    }
                    if m.epsilon.is_some() || m.rho.is_some() {
                        return Err(bad("epsilon", "a non_personal metric has no cost".into()));
                    }
                }
            }
            if !(m.suppress_below.is_finite() && m.suppress_below >= 0.0) {
                return Err(bad("suppress_below", "must be finite and >= 0".into()));
            }
            if m.readers.is_empty() {
                return Err(bad("readers", "at least one reader role".into()));
            }
        }
        for (i, c) in policy.consents.iter().enumerate() {
            if !valid_name(&c.purpose) || c.scope.is_empty() || c.scope.len() > 64 {
                return Err(PolicyError::Invalid {
                    line: line_of_key(text, "consent"),
                    key: format!("consent[{i}]"),
                    reason: "purpose must be [a-z0-9_] and scope 1..=64 bytes".into(),
                });
            }
        }
        Ok(Self {
            hash: sha256_hex(text.as_bytes()),
            text: text.to_owned(),
            policy,
        })
    }

    /// The metric's policy, if the metric may be released at all.
    pub fn metric(&self, name: &str) -> Option<&MetricPolicy> {
        self.policy
            .metrics
            .iter()
            .map(toml::Spanned::get_ref)
            .find(|m| m.name == name)
    }

    /// Consent scope required for `signal` events used for `purpose`, if any.
    pub fn consent_scope(&self, signal: Signal, purpose: &str) -> Option<&str> {
        self.policy
            .consents
            .iter()
            .find(|c| c.signal == signal && c.purpose == purpose)
            .map(|c| c.scope.as_str())
    }

    /// A plain-language summary for `policy check`.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let p = &self.policy;
        let mut s = String::new();
        let _ = writeln!(s, "Policy \"{}\" (version {})", p.name, p.version);
        let _ = writeln!(s, "  hash: {}", self.hash);
        let _ = writeln!(
            s,
            "  daily budget: epsilon {} at delta {:e}; releases kept {} days",
            p.budget.epsilon_per_day, p.budget.delta, p.retention.releases_days
        );
        let _ = writeln!(s, "  metrics:");
        for m in p.metrics.iter().map(toml::Spanned::get_ref) {
            let cost = match m.mechanism {
                PolicyMechanism::DiscreteLaplace => format!(
                    "discrete Laplace, epsilon {} per release",
                    m.epsilon.unwrap_or(0.0)
                ),
                PolicyMechanism::DiscreteGaussian => format!(
                    "discrete Gaussian, rho {} per release",
                    m.rho.unwrap_or(0.0)
                ),
                PolicyMechanism::NonPersonal => {
                    "declared non-personal: released without noise".to_owned()
                }
            };
            let readers: Vec<&str> = m
                .readers
                .iter()
                .map(|r| match r {
                    Reader::Organizer => "organizer",
                    Reader::Compliance => "compliance",
                    Reader::Ml => "ml",
                })
                .collect();
            let _ = writeln!(
                s,
                "    - {} from {} signals, for {}: {}; read by {}",
                m.name,
                m.signal.as_str(),
                m.purposes.join(", "),
                cost,
                readers.join(", ")
            );
        }
        if p.consents.is_empty() {
            let _ = writeln!(s, "  consent: no subject-linked signal needs consent");
        }
        for c in &p.consents {
            let _ = writeln!(
                s,
                "  consent: {} events count toward `{}` only with scope \"{}\"",
                c.signal.as_str(),
                c.purpose,
                c.scope
            );
        }
        s
    }
}

#[cfg(test)]
mod tests;
