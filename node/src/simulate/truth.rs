//! Ground truth: what a correct node would compute from the valid lines,
//! and how many people are really where.
//!
//! # Point values at the end of a window
//! The running totals of the attendee-day streams are values at an instant,
//! so several metrics are taken at the *end* `E` (exclusive) of each window
//! `[W, E)`: they describe the state after every event with `ts_ms < E` and
//! before any event with `ts_ms >= E`, counted from the start of the event
//! (the first window of a run covers it). See [`Metric`] for each one.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ZoneRole;
use super::engine::StepView;
use super::plan::{Crossing, Payload, Plan};
use crate::event::Direction;

/// A ground-truth metric, per zone and window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Mean number of people really in the zone (time-weighted).
    Occupancy,
    /// Mean of the occupancy camera counts (zones with a camera: not gates).
    OccupancyCamera,
    /// Valid `in` gate scans (gates only).
    Ingress,
    /// Valid `out` gate scans (gates only).
    Egress,
    /// Distinct devices with at least one valid probe in the zone.
    UniqueDevices,
    /// Valid app events whose consent includes `analytics`.
    AppEventsConsented,
    /// All valid app events.
    AppEventsTotal,
    /// Arithmetic mean of the audio frames' `level_db`.
    SoundLevelDb,
    /// Mean reported CO2, ppm.
    Co2Ppm,
    /// Mean reported temperature, degrees Celsius.
    TemperatureC,
    /// People really in the zone at the end of the window: over *every*
    /// zone change of every person (seen by the cameras or not) with
    /// `ts_ms < E`, entries into the zone minus exits from it.
    Presence,
    /// What a perfect counter of the tracked crossings would show at the end
    /// of the window: over the valid `crossing` lines with `ts_ms < E`, those
    /// with `to` = the zone minus those with `from` = the zone. It differs
    /// from [`Metric::Presence`] only by the crossings the cameras missed
    /// ([`super::SimConfig::tracking_miss_per_10k`]) and crossings written
    /// as malformed lines: the sensor error, apart from any privacy noise.
    PresenceTracked,
    /// Valid `in` gate scans with `ts_ms < E` since the start (gates only).
    IngressCumulative,
    /// Valid `out` gate scans with `ts_ms < E` since the start (gates only).
    EgressCumulative,
    /// Devices present at the end of the window. A device is present in a
    /// zone from its first valid probe there until [`PRESENCE_TIMEOUT_MS`]
    /// after its last one there; a gap longer than the timeout ends the
    /// stay. So it is present at `E` iff it has a valid probe in the zone
    /// with `E - PRESENCE_TIMEOUT_MS <= ts_ms < E`. Each zone on its own: a
    /// device probed in two zones within the timeout is present in both.
    DevicesPresent,
    /// App users present at the end of the window, defined as
    /// [`Metric::DevicesPresent`] over valid `app` events whose consent
    /// includes `analytics` (the user's `subject`, not the device), with the
    /// same timeout. Events without that consent do not count.
    AppUsersPresent,
}

/// How long a device or app user stays present in a zone after its last
/// event there, milliseconds (5 minutes).
pub const PRESENCE_TIMEOUT_MS: i64 = 5 * 60_000;

impl Metric {
    /// Every metric, in output order.
    pub const ALL: [Metric; 16] = [
        Metric::Occupancy,
        Metric::OccupancyCamera,
        Metric::Ingress,
        Metric::Egress,
        Metric::UniqueDevices,
        Metric::AppEventsConsented,
        Metric::AppEventsTotal,
        Metric::SoundLevelDb,
        Metric::Co2Ppm,
        Metric::TemperatureC,
        Metric::Presence,
        Metric::PresenceTracked,
        Metric::IngressCumulative,
        Metric::EgressCumulative,
        Metric::DevicesPresent,
        Metric::AppUsersPresent,
    ];

    /// The metric's name in ground-truth lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Occupancy => "occupancy",
            Metric::OccupancyCamera => "occupancy_camera",
            Metric::Ingress => "ingress",
            Metric::Egress => "egress",
            Metric::UniqueDevices => "unique_devices",
            Metric::AppEventsConsented => "app_events_consented",
            Metric::AppEventsTotal => "app_events_total",
            Metric::SoundLevelDb => "sound_level_db",
            Metric::Co2Ppm => "co2_ppm",
            Metric::TemperatureC => "temperature_c",
            Metric::Presence => "presence",
            Metric::PresenceTracked => "presence_tracked",
            Metric::IngressCumulative => "ingress_cumulative",
            Metric::EgressCumulative => "egress_cumulative",
            Metric::DevicesPresent => "devices_present",
            Metric::AppUsersPresent => "app_users_present",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Metric::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown ground-truth metric `{s}`"))
    }
}

/// One ground-truth line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthRow {
    /// Zone name.
    pub zone: String,
    /// Window start, Unix milliseconds (a multiple of the window length).
    pub window_start_ms: i64,
    /// Metric name ([`Metric::as_str`]).
    pub metric: String,
    /// Value.
    pub value: f64,
}

/// Ground truth per (zone, metric, window).
///
/// Windows are tumbling, aligned to the Unix epoch, and cover every window
/// overlapping the event. Count metrics are present (possibly 0) for every
/// window; means are absent for windows without readings.
#[derive(Debug, Clone)]
pub struct GroundTruth {
    window_ms: i64,
    zones: Vec<&'static str>,
    values: BTreeMap<(i64, usize, Metric), f64>,
}

impl GroundTruth {
    /// Window length, milliseconds.
    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    /// The value of `metric` for `zone` in the window starting at `window_start_ms`.
    pub fn get(&self, zone: &str, metric: Metric, window_start_ms: i64) -> Option<f64> {
        let z = self.zones.iter().position(|n| *n == zone)?;
        self.values.get(&(window_start_ms, z, metric)).copied()
    }

    /// All windows of `metric` for `zone`, as (window start, value), in time order.
    pub fn series(&self, zone: &str, metric: Metric) -> Vec<(i64, f64)> {
        let Some(z) = self.zones.iter().position(|n| *n == zone) else {
            return Vec::new();
        };
        self.values
            .iter()
            .filter(|((_, zz, m), _)| *zz == z && *m == metric)
            .map(|((w, _, _), v)| (*w, *v))
            .collect()
    }

    /// Window starts, in time order.
    pub fn windows(&self) -> Vec<i64> {
        let mut w: Vec<i64> = self.values.keys().map(|k| k.0).collect();
        w.dedup();
        w
    }

    /// Every value, ordered by window, zone index and metric.
    pub fn rows(&self) -> impl Iterator<Item = TruthRow> + '_ {
        self.values.iter().map(|((w, z, m), v)| TruthRow {
            zone: self.zones[*z].to_owned(),
            window_start_ms: *w,
            metric: m.as_str().to_owned(),
            value: *v,
        })
    }
}

#[derive(Debug, Default)]
struct ZoneAcc {
    people_ms: f64,
    covered_ms: i64,
    cam: (f64, u32),
    ingress: u64,
    egress: u64,
    /// Device (person index) -> last valid probe in the window.
    devices: HashMap<u32, i64>,
    /// Consented app user (person index) -> last valid app event in the window.
    app_users: HashMap<u32, i64>,
    /// Entries minus exits over all crossings / over valid crossing lines.
    net: i64,
    net_tracked: i64,
    app_consented: u64,
    app_total: u64,
    sound: (f64, u32),
    co2: (f64, u32),
    temp: (f64, u32),
}

fn mean((sum, n): (f64, u32)) -> Option<f64> {
    (n > 0).then(|| sum / f64::from(n))
}

/// Folds simulated steps into a [`GroundTruth`], closing windows as it goes.
pub(crate) struct Accumulator<'a> {
    plan: &'a Plan,
    window_ms: i64,
    open: BTreeMap<i64, Vec<ZoneAcc>>,
    values: BTreeMap<(i64, usize, Metric), f64>,
    /// Running state per zone at the end of the last closed window.
    running: Vec<Running>,
}

/// Running totals of a zone, from the start to the end of the last closed
/// window.
#[derive(Debug, Default)]
struct Running {
    presence: i64,
    tracked: i64,
    ingress: u64,
    egress: u64,
    device_last: HashMap<u32, i64>,
    app_last: HashMap<u32, i64>,
}

/// Merges a window's last-seen times into the running ones, drops those
/// expired at `end` and returns how many are present at `end`.
fn present_at(running: &mut HashMap<u32, i64>, window: HashMap<u32, i64>, end: i64) -> usize {
    for (k, ts) in window {
        let last = running.entry(k).or_insert(ts);
        *last = (*last).max(ts);
    }
    running.retain(|_, ts| *ts >= end - PRESENCE_TIMEOUT_MS);
    running.len()
}

impl<'a> Accumulator<'a> {
    pub(crate) fn new(plan: &'a Plan, window_ms: i64) -> Self {
        Accumulator {
            plan,
            window_ms,
            open: BTreeMap::new(),
            values: BTreeMap::new(),
            running: (0..plan.model.zones.len())
                .map(|_| Running::default())
                .collect(),
        }
    }

    fn window(&mut self, ts_ms: i64) -> &mut Vec<ZoneAcc> {
        let w = ts_ms.div_euclid(self.window_ms) * self.window_ms;
        let n = self.plan.model.zones.len();
        self.open
            .entry(w)
            .or_insert_with(|| (0..n).map(|_| ZoneAcc::default()).collect())
    }

    pub(crate) fn add_step(&mut self, step: &StepView<'_>) {
        // Occupancy is piecewise constant over the step.
        let mut t = step.start_ms;
        while t < step.end_ms {
            let w_end = (t.div_euclid(self.window_ms) + 1) * self.window_ms;
            let until = w_end.min(step.end_ms);
            let accs = self.window(t);
            for (acc, n) in accs.iter_mut().zip(step.occupancy) {
                acc.people_ms += f64::from(*n) * (until - t) as f64;
                acc.covered_ms += until - t;
            }
            t = until;
        }
        for c in step.crossings {
            self.add_crossing(c);
        }
        let plan = self.plan;
        for p in step.events {
            let accs = self.window(p.ts_ms);
            let Some(acc) = accs.get_mut(p.zone as usize) else {
                continue;
            };
            match &p.payload {
                Payload::Occupancy { count } => {
                    acc.cam.0 += f64::from(*count);
                    acc.cam.1 += 1;
                }
                Payload::Gate { direction, .. } => match direction {
                    Direction::In => acc.ingress += 1,
                    Direction::Out => acc.egress += 1,
                },
                Payload::Audio { level_db, .. } => {
                    acc.sound.0 += level_db;
                    acc.sound.1 += 1;
                }
                Payload::Environment {
                    co2_ppm,
                    temperature_c,
                } => {
                    acc.co2.0 += co2_ppm;
                    acc.co2.1 += 1;
                    acc.temp.0 += temperature_c;
                    acc.temp.1 += 1;
                }
                Payload::Probe { person, .. } => {
                    let last = acc.devices.entry(*person).or_insert(p.ts_ms);
                    *last = (*last).max(p.ts_ms);
                }
                Payload::App { person, .. } => {
                    acc.app_total += 1;
                    let consented = plan
                        .people
                        .get(*person as usize)
                        .and_then(|p| p.app.as_ref())
                        .is_some_and(|a| a.consent.contains(&"analytics"));
                    if consented {
                        acc.app_consented += 1;
                        let last = acc.app_users.entry(*person).or_insert(p.ts_ms);
                        *last = (*last).max(p.ts_ms);
                    }
                }
                Payload::Crossing { from, to, .. } => {
                    let (from, to) = (usize::from(*from), usize::from(*to));
                    if let Some(acc) = accs.get_mut(to) {
                        acc.net_tracked += 1;
                    }
                    if let Some(acc) = accs.get_mut(from) {
                        acc.net_tracked -= 1;
                    }
                }
                Payload::Malformed(_) => {}
            }
        }
        // Later steps start at `step.end_ms`: earlier windows are complete.
        while let Some(entry) = self.open.first_entry() {
            if *entry.key() + self.window_ms > step.end_ms {
                break;
            }
            let (w, accs) = entry.remove_entry();
            self.close(w, accs);
        }
    }

    fn add_crossing(&mut self, c: &Crossing) {
        let accs = self.window(c.ts_ms);
        if let Some(z) = c.zone_entered() {
            accs[z].net += 1;
        }
        if let Some(z) = c.zone_left() {
            accs[z].net -= 1;
        }
    }

    fn close(&mut self, w: i64, accs: Vec<ZoneAcc>) {
        let end = w + self.window_ms;
        for (z, acc) in accs.into_iter().enumerate() {
            let role = self.plan.model.zones[z].role;
            let run = &mut self.running[z];
            run.presence += acc.net;
            run.tracked += acc.net_tracked;
            run.ingress += acc.ingress;
            run.egress += acc.egress;
            let unique_devices = acc.devices.len();
            let devices_present = present_at(&mut run.device_last, acc.devices, end);
            let app_users_present = present_at(&mut run.app_last, acc.app_users, end);
            let mut put = |m: Metric, v: Option<f64>| {
                if let Some(v) = v {
                    self.values.insert((w, z, m), v);
                }
            };
            put(
                Metric::Occupancy,
                (acc.covered_ms > 0).then(|| acc.people_ms / acc.covered_ms as f64),
            );
            if role != ZoneRole::Gate {
                put(Metric::OccupancyCamera, mean(acc.cam));
            } else {
                put(Metric::Ingress, Some(acc.ingress as f64));
                put(Metric::Egress, Some(acc.egress as f64));
                put(Metric::IngressCumulative, Some(run.ingress as f64));
                put(Metric::EgressCumulative, Some(run.egress as f64));
            }
            put(Metric::Presence, Some(run.presence as f64));
            put(Metric::PresenceTracked, Some(run.tracked as f64));
            put(Metric::DevicesPresent, Some(devices_present as f64));
            put(Metric::AppUsersPresent, Some(app_users_present as f64));
            put(Metric::UniqueDevices, Some(unique_devices as f64));
            put(Metric::AppEventsConsented, Some(acc.app_consented as f64));
            put(Metric::AppEventsTotal, Some(acc.app_total as f64));
            put(Metric::SoundLevelDb, mean(acc.sound));
            put(Metric::Co2Ppm, mean(acc.co2));
            put(Metric::TemperatureC, mean(acc.temp));
        }
    }

    pub(crate) fn finish(mut self) -> GroundTruth {
        while let Some((w, accs)) = self.open.pop_first() {
            self.close(w, accs);
        }
        GroundTruth {
            window_ms: self.window_ms,
            zones: self.plan.model.zones.iter().map(|z| z.name).collect(),
            values: self.values,
        }
    }
}
