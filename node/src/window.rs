//! Event-time tumbling windows with bounded lateness, per-zone aggregates,
//! and contribution bounding applied before anything is aggregated.
//!
//! A window `[start, start + length)` closes once the watermark (the largest
//! event time seen) passes `start + length + lateness`; events for a closed
//! window are dropped and counted as late. Identifiers only ever enter here
//! as keyed pseudonyms.

use std::collections::BTreeMap;

use veil_privacy::{
    bounds::{Admission, BoundingStats, ContributionBounder, ContributionLimits},
    pseudonym::{Pseudonym, PseudonymSet},
};

use crate::{
    config::ZoneConfig,
    event::{Body, Direction, ValidEvent},
    inference::AudioFeatures,
};

/// Peak dB at or above which an audio frame counts as clipping.
pub const CLIPPING_PEAK_DB: f64 = 120.0;

/// Audio frames per zone and window kept for the on-device classifier
/// (one per second for an hour); further frames still count towards the
/// sound level and clipping aggregates but are not classified.
pub const MAX_CLASSIFIED_FRAMES: usize = 3600;

/// Exact (pre-noise) aggregates of one zone in one window. Never leaves the
/// node; `release` turns it into DP releases.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZoneAggregate {
    /// Per camera: (sum of counts, readings).
    pub occupancy: BTreeMap<String, (u64, u64)>,
    /// Gate scans in (bounded).
    pub ingress: u64,
    /// Gate scans out (bounded).
    pub egress: u64,
    /// Distinct probing devices (pseudonyms).
    pub devices: PseudonymSet,
    /// Distinct consented app subjects (pseudonyms).
    pub app_users: PseudonymSet,
    /// Sum and count of audio RMS levels (dB).
    pub sound: (f64, u64),
    /// Audio frames at or above [`CLIPPING_PEAK_DB`].
    pub clipping_frames: u64,
    /// Audio frame features for the on-device classifier (at most
    /// [`MAX_CLASSIFIED_FRAMES`]); they never leave the node.
    pub audio_frames: Vec<AudioFeatures>,
    /// Sum and count of CO2 readings (ppm).
    pub co2: (f64, u64),
    /// Sum and count of temperature readings (degC).
    pub temperature: (f64, u64),
}

impl ZoneAggregate {
    /// Occupancy: sum over cameras of each camera's mean count, rounded.
    pub fn occupancy_estimate(&self) -> i64 {
        let total: f64 = self
            .occupancy
            .values()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| *s as f64 / *n as f64)
            .sum();
        total.round() as i64
    }
}

/// One closed window.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    /// Window start, Unix ms.
    pub start_ms: i64,
    /// Window length, s.
    pub length_s: u32,
    /// Aggregates of every configured zone (present even when empty).
    pub zones: BTreeMap<String, ZoneAggregate>,
    /// Contribution-bounding counts of the window.
    pub bounding: BoundingStats,
}

/// A window still taking events: one aggregate per configured zone, in
/// [`Windower::zones`] order, and the bounder keyed by that zone index.
struct OpenWindow {
    zones: Vec<ZoneAggregate>,
    bounder: ContributionBounder<usize>,
}

/// Counts of what the windower did with events (safe to export).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowStats {
    /// Events added to a window.
    pub accepted: u64,
    /// Events for a window that had already closed.
    pub late: u64,
    /// Events for a zone not in the config.
    pub unknown_zone: u64,
    /// App events without the required consent scope.
    pub no_consent: u64,
    /// Occupancy readings from more cameras than the zone declares.
    pub extra_camera: u64,
    /// Events dropped by contribution bounds.
    pub bounded_out: u64,
    /// Audio frames beyond [`MAX_CLASSIFIED_FRAMES`] (aggregated, not classified).
    pub unclassified_frames: u64,
}

/// Assigns events to tumbling windows.
pub struct Windower {
    length_ms: i64,
    lateness_ms: i64,
    /// Configured zones sorted by name, one per name (a name configured
    /// twice keeps its last entry); an event's zone is found by binary
    /// search, and its index keys the open windows' aggregates and bounds.
    zones: Vec<ZoneConfig>,
    limits: ContributionLimits,
    consent_scope: Option<String>,
    open: BTreeMap<i64, OpenWindow>,
    closed_before: i64,
    watermark: i64,
    stats: WindowStats,
}

impl std::fmt::Debug for Windower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windower")
            .field("length_ms", &self.length_ms)
            .field("open", &self.open.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Windower {
    /// A windower for `zones` with windows of `length_s` seconds; app events
    /// count only if they carry `consent_scope` (when the policy requires one).
    pub fn new(
        length_s: u32,
        lateness_ms: i64,
        zones: &[ZoneConfig],
        limits: ContributionLimits,
        consent_scope: Option<&str>,
    ) -> Self {
        Self {
            length_ms: i64::from(length_s.max(1)) * 1000,
            lateness_ms: lateness_ms.max(0),
            zones: zones
                .iter()
                .map(|z| (z.name.clone(), z.clone()))
                .collect::<BTreeMap<_, _>>()
                .into_values()
                .collect(),
            limits,
            consent_scope: consent_scope.map(str::to_owned),
            open: BTreeMap::new(),
            closed_before: i64::MIN,
            watermark: i64::MIN,
            stats: WindowStats::default(),
        }
    }

    /// The windower a node runs: window length, lateness and zones from
    /// its config, contribution limits from its config, and the consent
    /// scope the policy requires for the purpose app users are released for.
    pub fn for_node(
        cfg: &crate::config::Config,
        policy: &veil_privacy::policy::LoadedPolicy,
    ) -> Result<Self, veil_privacy::PrivacyError> {
        let limits = ContributionLimits::new(
            cfg.privacy.max_events_per_window,
            cfg.privacy.max_zones_per_window,
        )?;
        let length_s = u32::try_from(cfg.windows.length.as_secs()).unwrap_or(60);
        let lateness_ms = i64::try_from(cfg.windows.lateness.as_millis()).unwrap_or(0);
        let consent = policy
            .metric(crate::release::metric::APP_USERS)
            .and_then(|m| m.purposes.first())
            .and_then(|purpose| policy.consent_scope(veil_privacy::policy::Signal::App, purpose));
        Ok(Self::new(
            length_s,
            lateness_ms,
            &cfg.zones,
            limits,
            consent,
        ))
    }

    /// What happened so far.
    pub fn stats(&self) -> WindowStats {
        self.stats
    }

    /// Start of the window holding `ts_ms`.
    pub fn window_start(&self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.length_ms) * self.length_ms
    }

    /// Adds one event. `pseudonym` turns a raw identifier into its keyed
    /// pseudonym for the event's day; the identifier is not kept.
    pub fn add(&mut self, ev: &ValidEvent<'_>, pseudonym: impl Fn(&str) -> Pseudonym) {
        let start = self.window_start(ev.ts_ms);
        if start < self.closed_before {
            self.stats.late += 1;
            return;
        }
        let Ok(zone) = self
            .zones
            .binary_search_by(|z| z.name.as_str().cmp(&ev.event.zone))
        else {
            self.stats.unknown_zone += 1;
            return;
        };
        let cameras = self.zones[zone].cameras as usize;
        self.watermark = self.watermark.max(ev.ts_ms);
        let (zones, limits) = (self.zones.len(), self.limits);
        let w = self.open.entry(start).or_insert_with(|| OpenWindow {
            zones: vec![ZoneAggregate::default(); zones],
            bounder: ContributionBounder::new(limits),
        });
        let agg = &mut w.zones[zone];
        let bounded = |w_bounder: &mut ContributionBounder<usize>, p: &Pseudonym| {
            w_bounder.admit(p, &zone) == Admission::Admitted
        };
        match &ev.event.body {
            Body::Occupancy { count } => {
                let sensor: &str = &ev.event.sensor;
                if let Some(e) = agg.occupancy.get_mut(sensor) {
                    e.0 += u64::from(*count);
                    e.1 += 1;
                } else if agg.occupancy.len() >= cameras {
                    self.stats.extra_camera += 1;
                    return;
                } else {
                    agg.occupancy
                        .insert(sensor.to_owned(), (u64::from(*count), 1));
                }
            }
            Body::GateScan { direction, ticket } => {
                let p = pseudonym(ticket);
                if !bounded(&mut w.bounder, &p) {
                    self.stats.bounded_out += 1;
                    return;
                }
                match direction {
                    Direction::In => agg.ingress += 1,
                    Direction::Out => agg.egress += 1,
                }
            }
            Body::Probe { device, .. } => {
                let p = pseudonym(device);
                // A device already counted in this zone adds nothing more.
                if agg.devices.contains(&p) {
                    self.stats.accepted += 1;
                    return;
                }
                if !bounded(&mut w.bounder, &p) {
                    self.stats.bounded_out += 1;
                    return;
                }
                agg.devices.insert(p);
            }
            Body::App {
                subject, consent, ..
            } => {
                if let Some(scope) = &self.consent_scope
                    && !consent.iter().any(|c| c == scope)
                {
                    self.stats.no_consent += 1;
                    return;
                }
                let p = pseudonym(subject);
                if agg.app_users.contains(&p) {
                    self.stats.accepted += 1;
                    return;
                }
                if !bounded(&mut w.bounder, &p) {
                    self.stats.bounded_out += 1;
                    return;
                }
                agg.app_users.insert(p);
            }
            Body::Crossing { .. } => {
                // Tracked crossings feed the attendee-day presence streams
                // (`units`); the per-window aggregates do not use them.
                self.stats.unknown_zone += 0;
            }
            Body::Audio {
                level_db,
                peak_db,
                bands,
            } => {
                agg.sound.0 += level_db;
                agg.sound.1 += 1;
                if *peak_db >= CLIPPING_PEAK_DB {
                    agg.clipping_frames += 1;
                }
                if agg.audio_frames.len() < MAX_CLASSIFIED_FRAMES {
                    agg.audio_frames
                        .push(AudioFeatures::new(*level_db, *peak_db, bands));
                } else {
                    self.stats.unclassified_frames += 1;
                }
            }
            Body::Environment {
                co2_ppm,
                temperature_c,
            } => {
                agg.co2.0 += co2_ppm;
                agg.co2.1 += 1;
                agg.temperature.0 += temperature_c;
                agg.temperature.1 += 1;
            }
        }
        self.stats.accepted += 1;
    }

    /// Closes and returns every window the watermark has passed (end +
    /// lateness), oldest first.
    pub fn drain_closed(&mut self) -> Vec<ClosedWindow> {
        let cutoff = self.watermark.saturating_sub(self.lateness_ms);
        let mut out = Vec::new();
        while let Some((&start, _)) = self.open.first_key_value() {
            if start + self.length_ms > cutoff {
                break;
            }
            out.push(self.close(start));
        }
        out
    }

    /// Closes every open window (end of input), oldest first.
    pub fn flush(&mut self) -> Vec<ClosedWindow> {
        let starts: Vec<i64> = self.open.keys().copied().collect();
        starts.into_iter().map(|s| self.close(s)).collect()
    }

    fn close(&mut self, start: i64) -> ClosedWindow {
        let mut w = self.open.remove(&start).unwrap_or_else(|| OpenWindow {
            zones: Vec::new(),
            bounder: ContributionBounder::new(self.limits),
        });
        self.closed_before = self.closed_before.max(start + self.length_ms);
        ClosedWindow {
            start_ms: start,
            length_s: u32::try_from(self.length_ms / 1000).unwrap_or(u32::MAX),
            zones: self
                .zones
                .iter()
                .map(|z| z.name.clone())
                .zip(std::mem::take(&mut w.zones))
                .collect(),
            bounding: w.bounder.start_window(),
        }
    }
}

#[cfg(test)]
mod tests;
