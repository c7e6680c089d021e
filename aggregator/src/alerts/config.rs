//! `[alerts]` in the aggregator TOML: the anomaly detector's settings and
//! the organizer's rules. Unknown keys are refused.

use serde::Deserialize;

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Evaluate alerts at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Committed batches queued between ingest and the alert task (default
    /// 1024). When full, batches skip alert evaluation (counted); ingest never
    /// waits.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Items each live stream may fall behind before it skips (default 1024;
    /// skipped items are counted as lag).
    #[serde(default = "default_queue")]
    pub stream_buffer: usize,
    /// `[alerts.anomaly]`.
    #[serde(default)]
    pub anomaly: AnomalyConfig,
    /// `[[alerts.rules]]`.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            queue: default_queue(),
            stream_buffer: default_queue(),
            anomaly: AnomalyConfig::default(),
            rules: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_queue() -> usize {
    1024
}

/// `[alerts.anomaly]`: k-sigma detection per (venue, zone, metric) against a
/// rolling (EWMA) baseline whose variance is floored by the DP noise.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Metrics watched (default occupancy, ingress, egress).
    #[serde(default = "default_anomaly_metrics")]
    pub metrics: Vec<String>,
    /// Only windows of this length are evaluated, s (default 60).
    #[serde(default = "default_window_s")]
    pub window_s: u32,
    /// Threshold in standard deviations (default 3).
    #[serde(default = "default_sigmas")]
    pub sigmas: f64,
    /// EWMA weight of the newest window, 0 < alpha < 1 (default 0.2).
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// Closed windows the baseline needs before it may page (default 5).
    #[serde(default = "default_warmup")]
    pub warmup_windows: u32,
    /// Smallest absolute change that may page, in the metric's unit (default 0).
    #[serde(default)]
    pub min_delta: f64,
    /// "info", "warning" (default) or "critical".
    #[serde(default = "default_severity")]
    pub severity: String,
    /// What the operator should do.
    #[serde(default = "default_runbook")]
    pub runbook: String,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            metrics: default_anomaly_metrics(),
            window_s: default_window_s(),
            sigmas: default_sigmas(),
            alpha: default_alpha(),
            warmup_windows: default_warmup(),
            min_delta: 0.0,
            severity: default_severity(),
            runbook: default_runbook(),
        }
    }
}

fn default_anomaly_metrics() -> Vec<String> {
    ["occupancy", "ingress", "egress"]
        .map(str::to_owned)
        .to_vec()
}
fn default_window_s() -> u32 {
    60
}
fn default_sigmas() -> f64 {
    3.0
}
fn default_alpha() -> f64 {
    0.2
}
fn default_warmup() -> u32 {
    5
}
fn default_severity() -> String {
    "warning".into()
}
fn default_runbook() -> String {
    "Unusual change for this zone: check it on the venue cameras and with the steward on site."
        .into()
}

/// One condition on one metric of a zone, at the evaluated window.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// Metric.
    pub metric: String,
    /// Holds when the combined value is above this.
    #[serde(default)]
    pub above: Option<f64>,
    /// Holds when the combined value is below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// Holds when the value rose over the last `rising` windows by more than
    /// the 95% noise bound of the difference (1..=30).
    #[serde(default)]
    pub rising: Option<u32>,
}

/// `[[alerts.rules]]`: either one inline condition (`metric` with `above`,
/// `below` or `rising`) or `all = [ {metric = ..., above = ...}, ... ]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rule name, 1..=64 bytes of [a-z0-9_-]; the alert source is `rule:<name>`.
    pub name: String,
    /// "info", "warning" or "critical".
    pub severity: String,
    /// What the operator should do.
    pub runbook: String,
    /// Zones the rule applies to: names, or prefixes ending in `*`; empty = all.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Inline condition: metric.
    #[serde(default)]
    pub metric: Option<String>,
    /// Inline condition: above.
    #[serde(default)]
    pub above: Option<f64>,
    /// Inline condition: below.
    #[serde(default)]
    pub below: Option<f64>,
    /// Inline condition: rising over k windows.
    #[serde(default)]
    pub rising: Option<u32>,
    /// Every condition must hold at the same window.
    #[serde(default)]
    pub all: Vec<ConditionConfig>,
    /// Window length the rule evaluates, s (default 60).
    #[serde(default = "default_window_s")]
    pub window_s: u32,
}

/// A checked condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// value > limit.
    Above(String, f64),
    /// value < limit.
    Below(String, f64),
    /// rose significantly over k windows.
    Rising(String, u32),
}

impl Condition {
    /// The metric it reads.
    pub fn metric(&self) -> &str {
        match self {
            Condition::Above(m, _) | Condition::Below(m, _) | Condition::Rising(m, _) => m,
        }
    }
    /// Human text (no values but the configured limits).
    pub fn describe(&self) -> String {
        match self {
            Condition::Above(m, l) => format!("{m} above {l}"),
            Condition::Below(m, l) => format!("{m} below {l}"),
            Condition::Rising(m, k) => format!("{m} rising over {k} windows"),
        }
    }
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Name.
    pub name: String,
    /// Severity.
    pub severity: String,
    /// Runbook.
    pub runbook: String,
    /// Zone selectors.
    pub zones: Vec<String>,
    /// Conditions (all must hold).
    pub conditions: Vec<Condition>,
    /// Window length, s.
    pub window_s: u32,
}

impl Rule {
    /// Whether the rule applies to `zone`.
    pub fn matches_zone(&self, zone: &str) -> bool {
        self.zones.is_empty()
            || self.zones.iter().any(|z| match z.strip_suffix('*') {
                Some(prefix) => zone.starts_with(prefix),
                None => z == zone,
            })
    }
    /// The alert's metric: the first condition's.
    pub fn metric(&self) -> &str {
        self.conditions.first().map_or("", |c| c.metric())
    }
}

fn condition(
    rule: &str,
    metric: &str,
    above: Option<f64>,
    below: Option<f64>,
    rising: Option<u32>,
) -> Result<Condition, String> {
    if !veil_common::name::valid_metric(metric) {
        return Err(format!(
            "rule {rule}: metric `{metric}` must be 1..=64 bytes of [a-z0-9_]"
        ));
    }
    match (above, below, rising) {
        (Some(l), None, None) if l.is_finite() => Ok(Condition::Above(metric.into(), l)),
        (None, Some(l), None) if l.is_finite() => Ok(Condition::Below(metric.into(), l)),
        (None, None, Some(k)) if (1..=30).contains(&k) => Ok(Condition::Rising(metric.into(), k)),
        (None, None, Some(_)) => Err(format!("rule {rule}: rising must be in 1..=30 windows")),
        _ => Err(format!(
            "rule {rule}: a condition on `{metric}` needs exactly one of above, below (finite) or rising"
        )),
    }
}

fn check_severity(s: &str, what: &str) -> Result<(), String> {
    if matches!(s, "info" | "warning" | "critical") {
        Ok(())
    } else {
        Err(format!(
            "{what}: severity must be info, warning or critical, not {s:?}"
        ))
    }
}

impl Config {
    /// Checks the settings and the rules; returns the rules. The message
    /// names the rule and key at fault.
    pub fn check(&self) -> Result<Vec<Rule>, String> {
        if self.queue == 0 || self.queue > 1 << 20 {
            return Err("alerts.queue must be in 1..=1048576".into());
        }
        if self.stream_buffer == 0 || self.stream_buffer > 1 << 20 {
            return Err("alerts.stream_buffer must be in 1..=1048576".into());
        }
        let a = &self.anomaly;
        if !(a.sigmas.is_finite() && a.sigmas > 0.0) {
            return Err("alerts.anomaly.sigmas must be finite and > 0".into());
        }
        if !(a.alpha > 0.0 && a.alpha < 1.0) {
            return Err("alerts.anomaly.alpha must be in (0, 1)".into());
        }
        if !(a.min_delta.is_finite() && a.min_delta >= 0.0) {
            return Err("alerts.anomaly.min_delta must be finite and >= 0".into());
        }
        if a.window_s == 0 || a.window_s > 86_400 {
            return Err("alerts.anomaly.window_s must be in 1..=86400".into());
        }
        if a.warmup_windows > 10_000 {
            return Err("alerts.anomaly.warmup_windows must be at most 10000".into());
        }
        if let Some(m) = a
            .metrics
            .iter()
            .find(|m| !veil_common::name::valid_metric(m))
        {
            return Err(format!(
                "alerts.anomaly.metrics: `{m}` must be 1..=64 bytes of [a-z0-9_]"
            ));
        }
        check_severity(&a.severity, "alerts.anomaly")?;
        let mut names = std::collections::HashSet::new();
        let mut rules = Vec::new();
        for r in &self.rules {
            if !crate::identity::valid_name(&r.name) {
                return Err(format!(
                    "alerts.rules: name {:?} must be 1..=64 bytes of [a-z0-9_-]",
                    r.name
                ));
            }
            if !names.insert(r.name.clone()) {
                return Err(format!("alerts.rules: rule {} is defined twice", r.name));
            }
            check_severity(&r.severity, &format!("rule {}", r.name))?;
            if r.runbook.trim().is_empty() || r.runbook.len() > 1000 {
                return Err(format!("rule {}: runbook must be 1..=1000 bytes", r.name));
            }
            if r.window_s == 0 || r.window_s > 86_400 {
                return Err(format!("rule {}: window_s must be in 1..=86400", r.name));
            }
            for z in &r.zones {
                let name = z.strip_suffix('*').unwrap_or(z);
                if z != "*" && !crate::identity::valid_name(name) {
                    return Err(format!(
                        "rule {}: zone selector {z:?} must be a zone name or a prefix ending in *",
                        r.name
                    ));
                }
            }
            let inline =
                r.metric.is_some() || r.above.is_some() || r.below.is_some() || r.rising.is_some();
            let conditions = match (inline, r.all.is_empty()) {
                (true, true) => vec![condition(
                    &r.name,
                    r.metric.as_deref().unwrap_or(""),
                    r.above,
                    r.below,
                    r.rising,
                )?],
                (false, false) => r
                    .all
                    .iter()
                    .map(|c| condition(&r.name, &c.metric, c.above, c.below, c.rising))
                    .collect::<Result<_, _>>()?,
                (true, false) => {
                    return Err(format!(
                        "rule {}: give either an inline condition (metric + above/below/rising) or all = [...], not both",
                        r.name
                    ));
                }
                (false, true) => {
                    return Err(format!(
                        "rule {}: needs a condition (metric + above/below/rising, or all = [...])",
                        r.name
                    ));
                }
            };
            rules.push(Rule {
                name: r.name.clone(),
                severity: r.severity.clone(),
                runbook: r.runbook.clone(),
                zones: r.zones.clone(),
                conditions,
                window_s: r.window_s,
            });
        }
        Ok(rules)
    }
}
