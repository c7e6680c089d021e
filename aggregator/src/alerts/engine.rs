//! The alert engine: pure state machine over committed releases (no I/O),
//! so it can be driven by the aggregator's alert task and by tests alike.
//!
//! Per (venue, metric, zone, window length) it keeps the combined value of
//! the recent windows (sum across nodes, or mean for level metrics) with the
//! variance of its DP noise, and an EWMA baseline of closed windows.
//!
//! # Anomalies
//! A window closes when a later window of the series arrives (event time);
//! closed windows update the baseline (mean `m`, variance `v`). The newest
//! window's value `x` is anomalous when `|x - m| > k * sqrt(v + n)` where
//! `n` is the variance of `x`'s own DP noise (public: from the releases'
//! mechanisms and scales), once the baseline has `warmup_windows` windows.
//! Closed windows enter the baseline winsorized to `m +- k * sqrt(v + n)`.
//! `v` already holds the noise of past windows; adding `n` keeps noise alone
//! from paging even when the baseline happened to look calm. A drop is only
//! judged once the window has as many releases as any kept window of the
//! series (a partly reported window looks low). Suppressed values never page.
//!
//! # Rules
//! Every condition of a rule must hold at the same window; a missing metric
//! makes the rule undecided (no change), and so does a condition that is
//! false on a partly reported window (fewer releases than the most any kept
//! window of that series has). A rule alert resolves when the rule is known
//! false at a later window.
//!
//! # Dedup
//! One open alert per (venue, zone, source, metric); evaluations of windows
//! older than the last one evaluated for that key change nothing.

use std::collections::{BTreeMap, HashMap};

use super::{
    AlertEvent, AlertRecord, AlertState, EventKind,
    config::{Condition, Config, Rule},
};
use crate::query::{Combine, Combiner, Error95Cache, SeriesPoint};

/// One committed release, as the engine needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Venue.
    pub venue: String,
    /// Metric.
    pub metric: String,
    /// Zone.
    pub zone: String,
    /// Window start, Unix ms.
    pub window_start_ms: i64,
    /// Window length, s.
    pub window_len_s: u32,
    /// Proto mechanism name.
    pub mechanism: String,
    /// Released value.
    pub value: f64,
    /// Public noise scale.
    pub scale: f64,
    /// The policy's `suppress_below` for the metric.
    pub suppress_below: f64,
}

impl Observation {
    /// From a stored release.
    pub fn from_release(r: &crate::storage::StoredRelease, suppress_below: f64) -> Self {
        Self {
            venue: r.venue.clone(),
            metric: r.metric.clone(),
            zone: r.zone.clone(),
            window_start_ms: r.window_start_ms,
            window_len_s: r.window_len_s,
            mechanism: r.mechanism.clone(),
            value: r.value,
            scale: r.scale,
            suppress_below,
        }
    }
}

/// What one observation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The window's combined point as now known.
    pub point: SeriesPoint,
    /// Alerts raised or resolved.
    pub events: Vec<AlertEvent>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Ewma {
    n: u32,
    mean: f64,
    var: f64,
}

impl Ewma {
    fn push(&mut self, x: f64, alpha: f64) {
        self.n = self.n.saturating_add(1);
        // Cumulative mean/variance at first, then exponential forgetting.
        let a = alpha.max(1.0 / f64::from(self.n));
        let d = x - self.mean;
        let inc = a * d;
        self.mean += inc;
        self.var = (1.0 - a) * (self.var + d * inc);
    }
}

#[derive(Debug, Default)]
struct Series {
    windows: BTreeMap<i64, Combiner>,
    base: Ewma,
    folded_upto: Option<i64>,
}

impl Series {
    /// Whether window `w` has as many releases as any window kept: nodes
    /// report a window at different times, and a partly reported window
    /// looks low (a node that stops reporting delays clears until its last
    /// windows leave the kept history).
    fn complete(&self, w: i64) -> bool {
        let most = self
            .windows
            .values()
            .map(Combiner::releases)
            .max()
            .unwrap_or(0);
        self.windows.get(&w).is_some_and(|c| c.releases() >= most)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    venue: String,
    metric: String,
    zone: String,
    len: u32,
}

/// (venue, zone, source, metric).
type OpenKey = (String, String, String, String);

/// Windows of history kept per series.
const KEEP_WINDOWS: i64 = 64;

enum Verdict {
    Fire(String),
    Clear,
    Unknown,
}

/// The alert engine.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    rules: Vec<Rule>,
    series: HashMap<SeriesKey, Series>,
    open: HashMap<OpenKey, AlertRecord>,
    last_eval: HashMap<OpenKey, i64>,
    cache: Error95Cache,
}

/// Deterministic alert id: the first 32 hex digits of SHA-256 over the
/// dedup key and the opening window.
pub fn alert_id(
    venue: &str,
    zone: &str,
    source: &str,
    metric: &str,
    window_start_ms: i64,
) -> String {
    crate::policy::sha256_hex(
        format!("{venue}\u{0}{zone}\u{0}{source}\u{0}{metric}\u{0}{window_start_ms}").as_bytes(),
    )[..32]
        .to_owned()
}

impl Engine {
    /// An engine for checked `rules` (see [`Config::check`]).
    pub fn new(cfg: Config, rules: Vec<Rule>) -> Self {
        Self {
            cfg,
            rules,
            series: HashMap::new(),
            open: HashMap::new(),
            last_eval: HashMap::new(),
            cache: Error95Cache::default(),
        }
    }

    /// Re-opens alerts that were open when the aggregator stopped, so they
    /// are deduplicated and resolved as before.
    pub fn restore(&mut self, open: impl IntoIterator<Item = AlertRecord>) {
        for a in open {
            if a.state == AlertState::Raised {
                let key = (
                    a.venue.clone(),
                    a.zone.clone(),
                    a.source.clone(),
                    a.metric.clone(),
                );
                self.last_eval.insert(key.clone(), a.last_window_ms);
                self.open.insert(key, a);
            }
        }
    }

    /// Open alerts.
    pub fn open_alerts(&self) -> impl Iterator<Item = &AlertRecord> {
        self.open.values()
    }

    /// Adds one committed release at wall-clock `now_ms`.
    pub fn observe(&mut self, o: &Observation, now_ms: i64) -> Output {
        let len_ms = i64::from(o.window_len_s) * 1000;
        let key = SeriesKey {
            venue: o.venue.clone(),
            metric: o.metric.clone(),
            zone: o.zone.clone(),
            len: o.window_len_s,
        };
        let alpha = self.cfg.anomaly.alpha;
        let sigmas = self.cfg.anomaly.sigmas;
        let warmup = self.cfg.anomaly.warmup_windows.max(1);
        let s = self.series.entry(key).or_default();
        let newest = s.windows.keys().next_back().copied();
        let w = o.window_start_ms;
        if let Some(n) = newest
            && w < n - KEEP_WINDOWS * len_ms
        {
            // Far too late to matter for alerts: report just this release.
            let mut c = Combiner::default();
            c.add(&o.mechanism, o.value, o.scale);
            let point = c.point(
                &o.venue,
                &o.zone,
                &o.metric,
                w,
                o.window_len_s,
                o.suppress_below,
                &mut self.cache,
            );
            return Output {
                point,
                events: Vec::new(),
            };
        }
        if newest.is_none_or(|n| w > n) {
            // Event time moved on: every earlier window is closed.
            let combine = Combine::of(&o.metric);
            let from = s.folded_upto;
            for (&ws, c) in s.windows.range(..w) {
                if from.is_none_or(|f| ws > f) {
                    // Winsorized: once warmed up, a window folds in at most
                    // `sigmas` deviations from the baseline, so one surge
                    // cannot blow the baseline up and silence itself; a
                    // lasting change is still absorbed within a few windows.
                    let mut x = c.value(combine);
                    if s.base.n >= warmup {
                        let reach =
                            sigmas * (s.base.var.max(0.0) + c.noise_variance(combine)).sqrt();
                        x = x.clamp(s.base.mean - reach, s.base.mean + reach);
                    }
                    s.base.push(x, alpha);
                    s.folded_upto = Some(ws);
                }
            }
        }
        s.windows
            .entry(w)
            .or_default()
            .add(&o.mechanism, o.value, o.scale);
        let cutoff = s.windows.keys().next_back().copied().unwrap_or(w) - KEEP_WINDOWS * len_ms;
        s.windows = s.windows.split_off(&cutoff);
        let point = s.windows[&w].point(
            &o.venue,
            &o.zone,
            &o.metric,
            w,
            o.window_len_s,
            o.suppress_below,
            &mut self.cache,
        );
        let mut events = Vec::new();
        let is_newest = s.windows.keys().next_back() == Some(&w);
        if self.cfg.anomaly.enabled
            && o.window_len_s == self.cfg.anomaly.window_s
            && is_newest
            && self.cfg.anomaly.metrics.iter().any(|m| m == &o.metric)
        {
            let verdict = self.anomaly_verdict(o, &point);
            let source = "anomaly".to_owned();
            let (sev, runbook) = (
                self.cfg.anomaly.severity.clone(),
                self.cfg.anomaly.runbook.clone(),
            );
            self.apply(
                (o.venue.clone(), o.zone.clone(), source, o.metric.clone()),
                verdict,
                w,
                o.window_len_s,
                &sev,
                &runbook,
                now_ms,
                &mut events,
            );
        }
        let rules: Vec<usize> = (0..self.rules.len())
            .filter(|&i| {
                let r = &self.rules[i];
                r.window_s == o.window_len_s
                    && r.matches_zone(&o.zone)
                    && r.conditions.iter().any(|c| c.metric() == o.metric)
            })
            .collect();
        for i in rules {
            let verdict = self.rule_verdict(&self.rules[i], o, w);
            let r = &self.rules[i];
            let (source, metric, sev, runbook) = (
                format!("rule:{}", r.name),
                r.metric().to_owned(),
                r.severity.clone(),
                r.runbook.clone(),
            );
            self.apply(
                (o.venue.clone(), o.zone.clone(), source, metric),
                verdict,
                w,
                o.window_len_s,
                &sev,
                &runbook,
                now_ms,
                &mut events,
            );
        }
        Output { point, events }
    }

    fn anomaly_verdict(&self, o: &Observation, point: &SeriesPoint) -> Verdict {
        let a = &self.cfg.anomaly;
        let key = SeriesKey {
            venue: o.venue.clone(),
            metric: o.metric.clone(),
            zone: o.zone.clone(),
            len: o.window_len_s,
        };
        let Some(s) = self.series.get(&key) else {
            return Verdict::Unknown;
        };
        if s.base.n < a.warmup_windows.max(1) {
            return Verdict::Unknown;
        }
        let w = o.window_start_ms;
        let Some(c) = s.windows.get(&w) else {
            return Verdict::Unknown;
        };
        let combine = Combine::of(&o.metric);
        let x = c.value(combine);
        let noise_var = c.noise_variance(combine);
        let sd = (s.base.var.max(0.0) + noise_var).sqrt();
        let dev = x - s.base.mean;
        let complete = s.complete(w);
        let beyond = |d: f64| d > a.sigmas * sd && d >= a.min_delta && d > 0.0;
        if point.suppressed {
            return if complete {
                Verdict::Clear
            } else {
                Verdict::Unknown
            };
        }
        let sigmas = if sd > 0.0 {
            dev.abs() / sd
        } else {
            f64::INFINITY
        };
        if beyond(dev) {
            Verdict::Fire(format!(
                "{} {:.1} sigma above its baseline (3-sigma test over the DP noise and the zone's recent variation)",
                o.metric, sigmas
            ))
        } else if complete && beyond(-dev) {
            Verdict::Fire(format!(
                "{} {:.1} sigma below its baseline (3-sigma test over the DP noise and the zone's recent variation)",
                o.metric, sigmas
            ))
        } else if complete {
            Verdict::Clear
        } else {
            Verdict::Unknown
        }
    }

    /// (value, noise variance, complete) of `metric` at window `w`.
    fn value_at(&self, o: &Observation, metric: &str, w: i64) -> Option<(f64, f64, bool)> {
        let s = self.series.get(&SeriesKey {
            venue: o.venue.clone(),
            metric: metric.to_owned(),
            zone: o.zone.clone(),
            len: o.window_len_s,
        })?;
        let c = s.windows.get(&w)?;
        let combine = Combine::of(metric);
        Some((c.value(combine), c.noise_variance(combine), s.complete(w)))
    }

    fn rule_verdict(&self, r: &Rule, o: &Observation, w: i64) -> Verdict {
        let len_ms = i64::from(o.window_len_s) * 1000;
        let mut unknown = false;
        for c in &r.conditions {
            let now = self.value_at(o, c.metric(), w);
            let holds = match (c, now) {
                (_, None) => None,
                (Condition::Above(_, l), Some((v, _, _))) => Some(v > *l),
                (Condition::Below(_, l), Some((v, _, _))) => Some(v < *l),
                (Condition::Rising(m, k), Some((v, var, _))) => self
                    .value_at(o, m, w - i64::from(*k) * len_ms)
                    .map(|(v0, var0, _)| v - v0 > 1.959_963_984_540_054 * (var + var0).sqrt()),
            };
            // A partly reported window cannot prove a condition false.
            let complete = now.is_some_and(|n| n.2);
            let holds = match holds {
                Some(false) if !complete => None,
                h => h,
            };
            match holds {
                Some(false) => return Verdict::Clear,
                None => unknown = true,
                Some(true) => {}
            }
        }
        if unknown {
            Verdict::Unknown
        } else {
            let what: Vec<String> = r.conditions.iter().map(Condition::describe).collect();
            Verdict::Fire(format!("rule {}: {}", r.name, what.join(" and ")))
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        key: OpenKey,
        verdict: Verdict,
        w: i64,
        len_s: u32,
        severity: &str,
        runbook: &str,
        now_ms: i64,
        events: &mut Vec<AlertEvent>,
    ) {
        if matches!(verdict, Verdict::Unknown) {
            return;
        }
        if self.last_eval.get(&key).is_some_and(|&last| w < last) {
            return;
        }
        self.last_eval.insert(key.clone(), w);
        match verdict {
            Verdict::Fire(detail) => {
                if let Some(open) = self.open.get_mut(&key) {
                    open.last_window_ms = w;
                    return;
                }
                let (venue, zone, source, metric) = key.clone();
                let alert = AlertRecord {
                    alert_id: alert_id(&venue, &zone, &source, &metric, w),
                    venue,
                    zone,
                    metric,
                    source,
                    severity: severity.to_owned(),
                    state: AlertState::Raised,
                    window_start_ms: w,
                    window_len_s: len_s,
                    last_window_ms: w,
                    runbook: runbook.to_owned(),
                    detail,
                    raised_ms: now_ms,
                    resolved_ms: 0,
                    acked_by: String::new(),
                    acked_ms: 0,
                };
                self.open.insert(key, alert.clone());
                events.push(AlertEvent {
                    kind: EventKind::Raised,
                    alert,
                });
            }
            Verdict::Clear => {
                if let Some(mut alert) = self.open.remove(&key) {
                    alert.state = AlertState::Resolved;
                    alert.resolved_ms = now_ms;
                    alert.last_window_ms = w;
                    events.push(AlertEvent {
                        kind: EventKind::Resolved,
                        alert,
                    });
                }
            }
            Verdict::Unknown => {}
        }
    }
}
