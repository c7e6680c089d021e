//! Event-time tumbling windows with bounded lateness, per-zone aggregates,
//! and contribution bounding applied before anything is aggregated.
//!
//! A window `[start, start + length)` closes once the watermark (the largest
//! event time seen) passes `start + length + lateness`; events for a closed
//! window are dropped and counted as late. Identifiers only ever enter here
//! as keyed pseudonyms.

use std::collections::BTreeMap;

use smallvec::SmallVec;
use veil_privacy::{
    bounds::{Admission, BoundingStats, ContributionBounder, ContributionLimits},
    pseudonym::{EventDay, Pseudonym, PseudonymMap, PseudonymSet},
};

use crate::{
    config::ZoneConfig,
    event::{Body, Direction, ValidEvent},
    inference::AudioFeatures,
    units::{DayBounds, Family, Outcome, UnitLimits, UnitRecord, UnitStats},
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
    /// Attendee-day mode: counted entries and exits of tracked people
    /// (crossings), after the day's contribution bounds.
    pub tracked: InOut,
    /// Attendee-day mode: devices starting / ending presence in the zone.
    pub devices_present: InOut,
    /// Attendee-day mode: consented app users starting / ending presence.
    pub app_present: InOut,
}

/// Counted entries and exits of one zone in one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InOut {
    /// Entries counted.
    pub entries: u64,
    /// Exits counted.
    pub exits: u64,
}

impl InOut {
    /// The window's net change of the running count.
    pub fn net(&self) -> i64 {
        i64::try_from(self.entries).unwrap_or(i64::MAX)
            - i64::try_from(self.exits).unwrap_or(i64::MAX)
    }
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
    /// Attendee-day mode: where the window sits in its event day.
    pub day: Option<StreamDay>,
    /// Attendee-day mode: the contribution-bound state of the units this
    /// window changed (family, stored pseudonym, encoded state), to persist
    /// with the window's releases.
    pub unit_updates: Vec<UnitRecord>,
}

/// The event day of a window and its step in that day's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamDay {
    /// The event day.
    pub day: EventDay,
    /// Window index since the day's start.
    pub step: u32,
    /// Windows per day (the streams' horizon).
    pub horizon: u32,
    /// Unix ms the event day starts.
    pub day_start_ms: i64,
}

/// The policy's privacy unit as the windower applies it.
#[derive(Debug, Clone)]
pub struct DayMode {
    /// Bounds per unit and day.
    pub limits: UnitLimits,
    /// Event-day calendar: seconds added to Unix time before cutting days.
    pub day_offset_s: i32,
    /// Presence ends this long after a device's / app user's last sighting.
    pub presence_timeout_ms: i64,
}

/// A bounded event waiting for its window to close (bounds apply in event
/// time order at close, so late events within the lateness count the same
/// as on-time ones, and the persisted state matches the released windows).
#[derive(Debug, Clone, Copy)]
struct UnitEvent {
    ts_ms: i64,
    unit: Pseudonym,
    what: UnitWhat,
}

#[derive(Debug, Clone, Copy)]
enum UnitWhat {
    Cross {
        from: Option<u16>,
        to: Option<u16>,
    },
    /// `n` sightings in `zone`, the first at the event's time and the last
    /// at `last_ms` (see [`Sightings`]).
    Seen {
        family: Family,
        zone: u16,
        last_ms: i64,
        n: u64,
    },
    Gate {
        zone: u16,
        inward: bool,
    },
}

/// One unit's sightings in one zone within one window.
#[derive(Debug, Clone, Copy)]
struct Sighting {
    family: Family,
    zone: u16,
    first_ms: i64,
    last_ms: i64,
    n: u64,
}

/// The sightings of devices and app users in one open window, per unit.
///
/// A phone probes every few seconds; within a window only a unit's first
/// sighting in a zone can be counted, and its last one sets when it was last
/// seen ([`DayBounds::enter_seen`]), so the window keeps first, last and
/// count per unit and zone instead of one pending event per sighting.
#[derive(Default)]
struct Sightings(PseudonymMap<SmallVec<[Sighting; 1]>>);

impl Sightings {
    fn note(&mut self, unit: Pseudonym, family: Family, zone: u16, ts_ms: i64) {
        let list = self.0.entry(unit).or_default();
        match list
            .iter_mut()
            .find(|s| s.zone == zone && s.family == family)
        {
            Some(s) => {
                s.first_ms = s.first_ms.min(ts_ms);
                s.last_ms = s.last_ms.max(ts_ms);
                s.n += 1;
            }
            None => list.push(Sighting {
                family,
                zone,
                first_ms: ts_ms,
                last_ms: ts_ms,
                n: 1,
            }),
        }
    }

    /// The sightings as pending unit events (at their first sighting).
    fn drain_into(&mut self, pending: &mut Vec<UnitEvent>) {
        pending.reserve(self.0.len());
        for (unit, list) in self.0.drain() {
            for s in list {
                pending.push(UnitEvent {
                    ts_ms: s.first_ms,
                    unit,
                    what: UnitWhat::Seen {
                        family: s.family,
                        zone: s.zone,
                        last_ms: s.last_ms,
                        n: s.n,
                    },
                });
            }
        }
    }
}

/// A window still taking events: one aggregate per configured zone, in
/// [`Windower::zones`] order, and the bounder keyed by that zone index.
struct OpenWindow {
    zones: Vec<ZoneAggregate>,
    bounder: ContributionBounder<usize>,
    pending: Vec<UnitEvent>,
    seen: Sightings,
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
    /// Events of windows this node released before a restart (re-read
    /// input): skipped, nothing is released or charged again.
    pub already_released: u64,
    /// Attendee-day mode: unit events counted, dropped by a bound, and exits
    /// without a counted entry, over all unit kinds.
    pub units: UnitStats,
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
    /// Windows before this were released before a restart.
    released_before: i64,
    watermark: i64,
    stats: WindowStats,
    day_mode: Option<DayMode>,
    days: BTreeMap<EventDay, DayBounds>,
    /// Units sighted in the last closed window: a new window's table starts
    /// at that size instead of growing to it.
    seen_hint: usize,
    unit_stats: [UnitStats; 4],
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
            released_before: i64::MIN,
            watermark: i64::MIN,
            stats: WindowStats::default(),
            day_mode: None,
            days: BTreeMap::new(),
            seen_hint: 0,
            unit_stats: Default::default(),
        }
    }

    /// Attendee-day mode: gate scans, probes, app events and tracked
    /// crossings are bounded per unit and event day (not per window) and
    /// feed the presence and cumulative counts of the continual streams.
    pub fn with_day_mode(mut self, mode: DayMode) -> Self {
        self.day_mode = Some(mode);
        self
    }

    /// Windows starting before `start_ms` were released before a restart:
    /// their events are counted as already released and skipped.
    pub fn resume_after(&mut self, start_ms: i64) {
        self.released_before = self.released_before.max(start_ms);
        self.closed_before = self.closed_before.max(start_ms);
    }

    /// Restores a unit's contribution-bound state persisted for `day`.
    pub fn restore_unit(
        &mut self,
        day: EventDay,
        family: Family,
        unit: Pseudonym,
        state: &[u8],
    ) -> Result<(), String> {
        let Some(mode) = &self.day_mode else {
            return Ok(());
        };
        let (limits, refresh) = (mode.limits, mode.presence_timeout_ms / 3);
        self.days
            .entry(day)
            .or_insert_with(|| DayBounds::new(limits).with_seen_refresh(refresh))
            .restore_unit(family, unit, state)
    }

    /// What the day bounds did, per unit kind, since start.
    pub fn unit_stats(&self, family: Family) -> UnitStats {
        self.unit_stats[family as usize]
    }

    /// The event day and step of the window starting at `start_ms`.
    pub fn stream_day(&self, start_ms: i64) -> Option<StreamDay> {
        let mode = self.day_mode.as_ref()?;
        let offset_ms = i64::from(mode.day_offset_s) * 1000;
        let day = EventDay::from_unix_seconds(start_ms.div_euclid(1000), mode.day_offset_s).ok()?;
        let day_start_ms = i64::from(day.days_since_epoch()) * 86_400_000 - offset_ms;
        let step = u32::try_from((start_ms - day_start_ms) / self.length_ms).ok()?;
        let horizon = u32::try_from(86_400_000 / self.length_ms).ok()?;
        Some(StreamDay {
            day,
            step,
            horizon,
            day_start_ms,
        })
    }

    fn tracked_zone(&self, name: &str) -> Option<u16> {
        self.zones
            .binary_search_by(|z| z.name.as_str().cmp(name))
            .ok()
            .filter(|i| self.zones[*i].cameras > 0)
            .and_then(|i| u16::try_from(i).ok())
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
            .metric(crate::metric::APP_USERS)
            .and_then(|m| m.purposes.first())
            .and_then(|purpose| policy.consent_scope(veil_privacy::policy::Signal::App, purpose));
        let w = Self::new(length_s, lateness_ms, &cfg.zones, limits, consent);
        let Some(unit) = policy.privacy_unit() else {
            return Ok(w);
        };
        let invalid = |reason: String| veil_privacy::PrivacyError::InvalidParameter {
            name: "windows.length",
            reason,
        };
        let offset = unit.day_offset_seconds().map_err(invalid)?;
        let len = i64::from(length_s.max(1));
        if 86_400 % len != 0 || i64::from(offset) % len != 0 {
            return Err(invalid(format!(
                "continual streams step once per window from the event day's start: the window length ({length_s} s) must divide the day and the day start"
            )));
        }
        Ok(w.with_day_mode(DayMode {
            limits: UnitLimits::from_policy(unit),
            day_offset_s: offset,
            presence_timeout_ms: i64::try_from(cfg.privacy.presence_timeout.as_millis())
                .unwrap_or(i64::MAX),
        }))
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
        if start < self.released_before {
            self.stats.already_released += 1;
            return;
        }
        if start < self.closed_before {
            self.stats.late += 1;
            return;
        }
        if let Body::Crossing { track, from, to } = &ev.event.body {
            if self.day_mode.is_none() {
                // Only attendee-day policies release tracked presence.
                self.stats.accepted += 1;
                return;
            }
            // Only zones with cameras have an occupancy stream; a crossing
            // into any other zone spends none of the unit's visits.
            let from = from.as_deref().and_then(|z| self.tracked_zone(z));
            let to = to.as_deref().and_then(|z| self.tracked_zone(z));
            if from.is_none() && to.is_none() {
                // Between zones this node does not track (a gate and the
                // outside, or another node's zones): nothing to count here.
                self.stats.accepted += 1;
                return;
            }
            self.watermark = self.watermark.max(ev.ts_ms);
            let unit = pseudonym(track);
            self.open_window(start).pending.push(UnitEvent {
                ts_ms: ev.ts_ms,
                unit,
                what: UnitWhat::Cross { from, to },
            });
            self.stats.accepted += 1;
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
        let day_mode = self.day_mode.is_some();
        let zone16 = u16::try_from(zone).unwrap_or(u16::MAX);
        let w = open_entry(
            &mut self.open,
            start,
            self.zones.len(),
            self.limits,
            self.seen_hint,
        );
        if day_mode {
            // Bounded per unit and day when the window closes.
            match &ev.event.body {
                Body::GateScan { direction, ticket } => {
                    w.pending.push(UnitEvent {
                        ts_ms: ev.ts_ms,
                        unit: pseudonym(ticket),
                        what: UnitWhat::Gate {
                            zone: zone16,
                            inward: *direction == Direction::In,
                        },
                    });
                    self.stats.accepted += 1;
                    return;
                }
                Body::Probe { device, .. } => {
                    w.seen
                        .note(pseudonym(device), Family::Devices, zone16, ev.ts_ms);
                    self.stats.accepted += 1;
                    return;
                }
                _ => {}
            }
        }
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
                if day_mode {
                    w.seen.note(p, Family::AppUsers, zone16, ev.ts_ms);
                    self.stats.accepted += 1;
                    return;
                }
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
            // Handled above.
            Body::Crossing { .. } => return,
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

    fn open_window(&mut self, start: i64) -> &mut OpenWindow {
        open_entry(
            &mut self.open,
            start,
            self.zones.len(),
            self.limits,
            self.seen_hint,
        )
    }

    /// Applies the day bounds to a closing window's unit events, in event
    /// time order, and ends the presence of devices and app users not seen
    /// for the presence timeout by the window's end.
    fn apply_day_bounds(&mut self, start: i64, w: &mut OpenWindow) -> Vec<UnitRecord> {
        let Some(mode) = self.day_mode.clone() else {
            return Vec::new();
        };
        let Some(sd) = self.stream_day(start) else {
            return Vec::new();
        };
        // Days before this window's can no longer close a window.
        self.days = self.days.split_off(&sd.day);
        let bounds = self.days.entry(sd.day).or_insert_with(|| {
            DayBounds::new(mode.limits).with_seen_refresh(mode.presence_timeout_ms / 3)
        });
        let before: [UnitStats; 4] = Family::ALL.map(|f| bounds.stats(f));
        self.seen_hint = w.seen.0.len();
        w.seen.drain_into(&mut w.pending);
        w.pending.sort_by_key(|e| e.ts_ms);
        for e in std::mem::take(&mut w.pending) {
            match e.what {
                UnitWhat::Cross { from, to } => {
                    if let Some(z) = from
                        && bounds.exit(Family::Tracks, e.unit, z) == Outcome::Counted
                    {
                        w.zones[usize::from(z)].tracked.exits += 1;
                    }
                    if let Some(z) = to
                        && bounds.enter(Family::Tracks, e.unit, z, e.ts_ms) == Outcome::Counted
                    {
                        w.zones[usize::from(z)].tracked.entries += 1;
                    }
                }
                UnitWhat::Seen {
                    family,
                    zone,
                    last_ms,
                    n,
                } => {
                    if bounds.enter_seen(family, e.unit, zone, e.ts_ms, last_ms, n)
                        == Outcome::Counted
                    {
                        let agg = &mut w.zones[usize::from(zone)];
                        match family {
                            Family::AppUsers => agg.app_present.entries += 1,
                            _ => agg.devices_present.entries += 1,
                        }
                    }
                }
                UnitWhat::Gate { zone, inward } => {
                    if bounds.gate(e.unit, inward) == Outcome::Counted {
                        let agg = &mut w.zones[usize::from(zone)];
                        if inward {
                            agg.ingress += 1;
                        } else {
                            agg.egress += 1;
                        }
                    }
                }
            }
        }
        let end = start + self.length_ms;
        for family in [Family::Devices, Family::AppUsers] {
            for (zone, n) in bounds.expire(family, end - mode.presence_timeout_ms) {
                let agg = &mut w.zones[usize::from(zone)];
                match family {
                    Family::AppUsers => agg.app_present.exits += n,
                    _ => agg.devices_present.exits += n,
                }
            }
        }
        for f in Family::ALL {
            let now = bounds.stats(f);
            let delta = UnitStats {
                counted: now.counted - before[f as usize].counted,
                bounded: now.bounded - before[f as usize].bounded,
                unmatched: now.unmatched - before[f as usize].unmatched,
            };
            self.unit_stats[f as usize].add(&delta);
            self.stats.units.add(&delta);
        }
        bounds.take_dirty()
    }

    fn close(&mut self, start: i64) -> ClosedWindow {
        let mut w = self.open.remove(&start).unwrap_or_else(|| OpenWindow {
            zones: Vec::new(),
            bounder: ContributionBounder::new(self.limits),
            pending: Vec::new(),
            seen: Sightings::default(),
        });
        self.closed_before = self.closed_before.max(start + self.length_ms);
        let unit_updates = if w.zones.is_empty() {
            Vec::new()
        } else {
            self.apply_day_bounds(start, &mut w)
        };
        ClosedWindow {
            day: self.stream_day(start),
            unit_updates,
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

fn open_entry(
    open: &mut BTreeMap<i64, OpenWindow>,
    start: i64,
    zones: usize,
    limits: ContributionLimits,
    seen_hint: usize,
) -> &mut OpenWindow {
    open.entry(start).or_insert_with(|| OpenWindow {
        zones: vec![ZoneAggregate::default(); zones],
        bounder: ContributionBounder::new(limits),
        pending: Vec::new(),
        seen: Sightings(PseudonymMap::with_capacity_and_hasher(
            seen_hint,
            Default::default(),
        )),
    })
}

#[cfg(test)]
mod tests;
