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
    /// Continual release of the metric's running total per zone and event
    /// day by the square-root matrix factorization, discrete Gaussian noise
    /// calibrated to the whole day; `rho` is the cost of one node's streams
    /// of the metric per privacy unit (attendee-day). Needs `[privacy_unit]`.
    ContinualSqrt,
    /// Continual release by the binary-tree mechanism (same contract as
    /// `continual_sqrt`, more noise at the same cost).
    ContinualTree,
}

impl PolicyMechanism {
    /// Its name in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMechanism::DiscreteLaplace => "discrete_laplace",
            PolicyMechanism::DiscreteGaussian => "discrete_gaussian",
            PolicyMechanism::NonPersonal => "non_personal",
            PolicyMechanism::ContinualSqrt => "continual_sqrt",
            PolicyMechanism::ContinualTree => "continual_tree",
        }
    }

    /// Whether the metric is released as a continual stream per event day
    /// (its cost is per privacy unit and day, charged once per stream-day).
    pub fn is_continual(self) -> bool {
        matches!(
            self,
            PolicyMechanism::ContinualSqrt | PolicyMechanism::ContinualTree
        )
    }
}

/// What one privacy unit is, and the contribution bounds that make the
/// continual metrics' sensitivities true. The node enforces the bounds per
/// unit (a keyed pseudonym of a ticket, device, app subject or camera
/// track) and event day, and drops (and counts) what exceeds them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyUnitPolicy {
    /// The protected unit; only `attendee_day` is defined.
    pub unit: UnitKind,
    /// Local time the event day starts, "HH:MM" (a concert crossing
    /// midnight stays one day when the day starts at, e.g., 06:00).
    pub day_start: String,
    /// The venue's UTC offset during the event, "+HH:MM" or "-HH:MM".
    pub utc_offset: String,
    /// Nodes that release the venue's continual streams. Each bounds its
    /// units on its own, so one attendee can cost each node's streams: the
    /// attendee-day cost is the per-node cost times this.
    pub nodes: u32,
    /// V: zone entries per attendee-day, across the node's zones.
    pub max_zone_visits: u32,
    /// K: entries into any one zone per attendee-day (K <= V).
    pub max_visits_per_zone: u32,
    /// G: gate passes per attendee-day, per direction.
    pub max_gate_passes: u32,
}

/// Privacy units a policy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    /// One attendee over one event day.
    AttendeeDay,
}

/// How one unit can change a continual metric's per-window increments over
/// a day (what its sensitivity rests on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamShape {
    /// Presence (occupancy, devices or app users present): per zone the
    /// unit's increments are +1 (entry) and -1 (exit), alternating, starting
    /// with an entry; at most `events` of them across the metric's zones.
    Presence {
        /// 2 V: every counted visit is one entry and at most one exit.
        events: u32,
    },
    /// A cumulative count (gate ingress or egress): +1 per pass, at most
    /// `events` across the metric's zones.
    Cumulative {
        /// G.
        events: u32,
    },
}

impl PrivacyUnitPolicy {
    /// The event-day calendar: the UTC offset minus the day start, seconds
    /// (feed to [`crate::pseudonym::EventDay::from_unix_seconds`]).
    pub fn day_offset_seconds(&self) -> Result<i32, String> {
        Ok(parse_utc_offset(&self.utc_offset)? - parse_day_start(&self.day_start)?)
    }

    /// The contribution shape of continual metric `metric`, or `None` if
    /// the node computes no continual stream under that name.
    pub fn shape(&self, metric: &str) -> Option<StreamShape> {
        match metric {
            "occupancy" | "unique_devices" | "app_users" => Some(StreamShape::Presence {
                events: self.max_zone_visits.saturating_mul(2),
            }),
            "ingress" | "egress" => Some(StreamShape::Cumulative {
                events: self.max_gate_passes,
            }),
            _ => None,
        }
    }

    /// The same shape for one zone's stream alone: presence counts at most
    /// 2 min(K, V) events in one zone.
    pub fn zone_shape(&self, metric: &str) -> Option<StreamShape> {
        match self.shape(metric)? {
            StreamShape::Presence { .. } => Some(StreamShape::Presence {
                events: self
                    .max_visits_per_zone
                    .min(self.max_zone_visits)
                    .saturating_mul(2),
            }),
            s => Some(s),
        }
    }
}

/// "+HH:MM" / "-HH:MM" as seconds east of UTC (within +-14:00).
fn parse_utc_offset(s: &str) -> Result<i32, String> {
    let bad = || format!("`{s}` is not a UTC offset like \"+01:00\" or \"-05:00\"");
    let (sign, rest) = match s.as_bytes().first() {
        Some(b'+') => (1, &s[1..]),
        Some(b'-') => (-1, &s[1..]),
        _ => return Err(bad()),
    };
    let secs = parse_hh_mm(rest).ok_or_else(bad)?;
    if secs > 14 * 3600 {
        return Err(bad());
    }
    Ok(sign * secs)
}

/// "HH:MM" (00:00..=23:59) as seconds after midnight.
fn parse_day_start(s: &str) -> Result<i32, String> {
    parse_hh_mm(s)
        .filter(|v| *v < 24 * 3600)
        .ok_or_else(|| format!("`{s}` is not a local time like \"06:00\""))
}

fn parse_hh_mm(s: &str) -> Option<i32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60).then_some(h * 3600 + m * 60)
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
    /// The privacy unit and its contribution bounds (required by continual
    /// metrics; without it the policy protects per person-window only).
    #[serde(default)]
    pub privacy_unit: Option<PrivacyUnitPolicy>,
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

/// What the policy's continual streams can cost one privacy unit per day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UnitDayCost {
    /// Sum of the continual metrics' rho (one node's streams).
    pub rho_per_node: f64,
    /// Nodes releasing streams (`privacy_unit.nodes`).
    pub nodes: u32,
    /// rho per attendee-day: nodes x rho_per_node (zCDP composes by adding).
    pub rho: f64,
    /// The same as epsilon at the policy's delta.
    pub epsilon: f64,
}

fn attendee_day_cost(policy: &Policy) -> Result<Option<UnitDayCost>, String> {
    let Some(unit) = &policy.privacy_unit else {
        return Ok(None);
    };
    let rho_per_node: f64 = policy
        .metrics
        .iter()
        .map(toml::Spanned::get_ref)
        .filter(|m| m.mechanism.is_continual())
        .filter_map(|m| m.rho)
        .sum();
    let rho = rho_per_node * f64::from(unit.nodes);
    let epsilon = if rho > 0.0 {
        crate::accounting::zcdp_to_approx_dp(rho, policy.budget.delta)
            .map_err(|e| format!("cannot convert rho {rho} to epsilon: {e}"))?
    } else {
        0.0
    };
    Ok(Some(UnitDayCost {
        rho_per_node,
        nodes: unit.nodes,
        rho,
        epsilon,
    }))
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
        if let Some(u) = &policy.privacy_unit {
            if let Err(reason) = parse_day_start(&u.day_start) {
                return Err(top("privacy_unit.day_start", reason));
            }
            if let Err(reason) = parse_utc_offset(&u.utc_offset) {
                return Err(top("privacy_unit.utc_offset", reason));
            }
            if !(1..=64).contains(&u.nodes) {
                return Err(top("privacy_unit.nodes", "must be in 1..=64".into()));
            }
            if !(1..=1000).contains(&u.max_zone_visits) {
                return Err(top(
                    "privacy_unit.max_zone_visits",
                    "must be in 1..=1000".into(),
                ));
            }
            if !(1..=u.max_zone_visits).contains(&u.max_visits_per_zone) {
                return Err(top(
                    "privacy_unit.max_visits_per_zone",
                    "must be in 1..=max_zone_visits".into(),
                ));
            }
            if !(1..=1000).contains(&u.max_gate_passes) {
                return Err(top(
                    "privacy_unit.max_gate_passes",
                    "must be in 1..=1000".into(),
                ));
            }
            if b.delta <= 0.0 {
                return Err(top(
                    "budget.delta",
                    "continual streams are stated as (epsilon, delta) from zCDP: delta must be > 0"
                        .into(),
                ));
            }
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
            if policy.privacy_unit.is_some()
                && matches!(
                    m.mechanism,
                    PolicyMechanism::DiscreteLaplace | PolicyMechanism::DiscreteGaussian
                )
            {
                return Err(bad(
                    "mechanism",
                    format!(
                        "a per-window mechanism protects one person-window only and cannot share a budget stated per attendee-day; use continual_sqrt (or drop [privacy_unit] to state a per person-window policy), not {}",
                        m.mechanism.as_str()
                    ),
                ));
            }
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
                PolicyMechanism::ContinualSqrt | PolicyMechanism::ContinualTree => {
                    if !positive(m.rho) || m.epsilon.is_some() {
                        return Err(bad(
                            "rho",
                            format!(
                                "{} needs rho in (0, 10] (the cost of one node's streams per attendee-day) and no epsilon",
                                m.mechanism.as_str()
                            ),
                        ));
                    }
                    let Some(unit) = &policy.privacy_unit else {
                        return Err(bad(
                            "mechanism",
                            format!(
                                "{} needs a [privacy_unit] section: its cost is per attendee-day",
                                m.mechanism.as_str()
                            ),
                        ));
                    };
                    if unit.shape(&m.name).is_none() {
                        return Err(bad(
                            "mechanism",
                            "nodes release continual streams only for occupancy, ingress, egress, unique_devices and app_users".into(),
                        ));
                    }
                    if !m.signal.is_personal() {
                        return Err(bad(
                            "signal",
                            "continual streams are for personal signals; declare the metric non_personal instead".into(),
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
        let loaded_cost =
            attendee_day_cost(&policy).map_err(|reason| top("budget.epsilon_per_day", reason))?;
        if let Some(cost) = &loaded_cost
            && cost.epsilon > b.epsilon_per_day
        {
            return Err(top(
                "budget.epsilon_per_day",
                format!(
                    "the continual streams can cost one attendee epsilon {:.3} per day at delta {:e} ({} nodes x rho {:.4} = rho {:.4}), more than the budget of {}: lower the metrics' rho or the bounds, or raise the budget",
                    cost.epsilon,
                    b.delta,
                    cost.nodes,
                    cost.rho_per_node,
                    cost.rho,
                    b.epsilon_per_day
                ),
            ));
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

    /// What the continual streams cost one attendee per day (`None` without
    /// a `[privacy_unit]`).
    pub fn unit_day_cost(&self) -> Option<UnitDayCost> {
        // Validated by `parse`: the conversion succeeded there.
        attendee_day_cost(&self.policy).ok().flatten()
    }

    /// The privacy unit and its bounds, if the policy names one.
    pub fn privacy_unit(&self) -> Option<&PrivacyUnitPolicy> {
        self.policy.privacy_unit.as_ref()
    }

    /// Seconds to add to a Unix time before cutting days at 00:00 to get
    /// the event day: the UTC offset minus the day start (0 without a
    /// privacy unit: UTC days).
    pub fn event_day_offset_seconds(&self) -> i32 {
        self.privacy_unit()
            .and_then(|u| u.day_offset_seconds().ok())
            .unwrap_or(0)
    }

    /// The guarantee in one sentence a person understands.
    pub fn guarantee(&self) -> String {
        match self.unit_day_cost() {
            Some(c) => format!(
                "each attendee's presence over the whole event day is protected at epsilon {:.2} (delta {:e})",
                c.epsilon, self.policy.budget.delta
            ),
            None => format!(
                "each person is protected per window only (person-window), within a venue budget of epsilon {} per day (delta {:e}); there is no per-attendee-day guarantee",
                self.policy.budget.epsilon_per_day, self.policy.budget.delta
            ),
        }
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
        match (&p.privacy_unit, self.unit_day_cost()) {
            (Some(u), Some(c)) => {
                let _ = writeln!(
                    s,
                    "  privacy unit: one attendee over one event day (day starts {} at UTC{}); at most {} zone visits ({} per zone) and {} gate passes per direction per attendee-day, enforced on each node",
                    u.day_start,
                    u.utc_offset,
                    u.max_zone_visits,
                    u.max_visits_per_zone,
                    u.max_gate_passes
                );
                let _ = writeln!(
                    s,
                    "  attendee-day cost: {} nodes x rho {:.4} = rho {:.4} = epsilon {:.3} at delta {:e} (budget {})",
                    c.nodes,
                    c.rho_per_node,
                    c.rho,
                    c.epsilon,
                    p.budget.delta,
                    p.budget.epsilon_per_day
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "  privacy unit: none named; personal metrics are protected per person-window only"
                );
            }
        }
        let _ = writeln!(s, "  guarantee: {}", self.guarantee());
        let _ = writeln!(s, "  metrics:");
        for m in p.metrics.iter().map(toml::Spanned::get_ref) {
            let cost = match m.mechanism {
                PolicyMechanism::DiscreteLaplace => format!(
                    "discrete Laplace, epsilon {} per release (per person-window)",
                    m.epsilon.unwrap_or(0.0)
                ),
                PolicyMechanism::DiscreteGaussian => format!(
                    "discrete Gaussian, rho {} per release (per person-window)",
                    m.rho.unwrap_or(0.0)
                ),
                PolicyMechanism::NonPersonal => {
                    "declared non-personal: released without noise".to_owned()
                }
                PolicyMechanism::ContinualSqrt | PolicyMechanism::ContinualTree => format!(
                    "running totals per zone and event day ({}), rho {} per attendee-day per node",
                    if m.mechanism == PolicyMechanism::ContinualSqrt {
                        "square-root factorization"
                    } else {
                        "binary tree"
                    },
                    m.rho.unwrap_or(0.0)
                ),
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
