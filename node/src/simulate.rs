//! Venue simulator: realistic, deterministic sensor events for demos and tests.
//!
//! The simulator plays a whole event at a venue and writes what its sensors
//! would send a node, as JSON Lines in exactly the schema of
//! [`crate::event`], plus the *ground truth* a correct node would compute from
//! those lines, so tests can compare DP releases against it. It is a test and
//! demo tool: its randomness (ChaCha8 seeded from [`SimConfig::seed`]) is
//! never used for DP noise, and everything it emits is synthetic.
//!
//! # The venue model
//! * **Layout** ([`zones`]): every venue has entry *gates* (ticket scanners),
//!   one *hub* (concourse, promenade, hall) that connects everything, one or
//!   more *amenities* (merch, food court, cafe), *destinations* where the show
//!   happens (seating, stages, session rooms) and, at festivals, a *campsite*.
//!   Gates, hub and amenities have a hard capacity: when full, people queue
//!   where they are and retry, which shapes the flows during surges.
//! * **Timeline**: each venue kind has phases that are fractions of
//!   [`SimConfig::duration`], so a 20-minute compressed demo and a 2-hour run
//!   show the same story. Arena: doors (ingress) 25 %, first half 27 %,
//!   intermission 10 %, second half 25 %, egress 13 %. Festival: gates open,
//!   three sets with two changeovers, close. Conference: registration,
//!   keynote, coffee, sessions, lunch, sessions, wrap-up. Dwell times scale
//!   with the duration relative to the venue's nominal length.
//! * **Population**: attendees are individuals stepped every 10 s. Each has
//!   an arrival time (ramping up towards the first show, a few late), an
//!   entry gate, a destination (arena seat, or a stage/room chosen per show),
//!   and a leave time (mostly early in egress, a few leave during the last
//!   show). Some go out of the venue and come back once or twice (arena 6 %,
//!   festival 25 %, conference 30 %; mostly during a break): hub -> gate ->
//!   out (`out` scan), 4-20 minutes outside, then in again through their
//!   gate (`in` scan, same ticket, same track) and back to their seat. They flow gate -> hub -> (amenity) -> destination; during shows a
//!   few wander to the hub and amenities and back; at a break most leave their
//!   destination for the hub and amenities (the intermission surge) and
//!   return (festival and conference attendees may switch stage/room); at the
//!   end they flow destination -> hub -> gate -> out, except festival campers,
//!   who return to the campsite.
//! * **Sensors** (per zone): people-tracking cameras (`pc-<zone>-1`, on the
//!   lines into the zone; gate lines also face outside) emitting a
//!   `crossing` for every zone change of every person, including arriving
//!   from outside into a gate and leaving a gate to outside, with the
//!   person's track id (`trk-NNNNNNN`, one per attendee for the whole run,
//!   also across re-entries), the zone left and the zone entered; they miss
//!   about [`SimConfig::tracking_miss_per_10k`] crossings in 10 000 (the
//!   crossing happens, no line is written). A crossing goes to every node
//!   observing its `from` or its `to` zone (to both when those are on two
//!   nodes), with `zone` = `to`, or `from` when leaving to outside. An
//!   anonymous occupancy camera (all zones but gates) with a
//!   noisy count every 5-10 s; gate scanners with one `in`/`out` scan per
//!   person crossing; a microphone frame every second whose level, peak and 8
//!   band energies follow the stage's scene (music, applause after songs or
//!   talks, speech, background PA, crowd chatter growing with occupancy, the
//!   odd clipping peak above 120 dB); an environment sensor every 30 s whose
//!   CO2 and temperature follow occupancy with a ventilation lag (indoors much
//!   more than in the open air); Wi-Fi/BLE probes from the ~30 % of attendees
//!   carrying a discoverable device (stable MAC-like id, a probe every
//!   12-40 s from the zone its owner is in); app telemetry from the ~20 % of
//!   attendees using the app (stable subject id; consent `["analytics"]`,
//!   `["analytics","marketing"]` or none).
//! * **Malformed input**: about [`SimConfig::malformed_per_10k`] lines in
//!   10 000 replace a real event by a broken one (truncated JSON, values out of
//!   range, bad zone names, missing fields, bad timestamps). They are counted
//!   in [`SimStats::malformed`] and are absent from the ground truth.
//!
//! # Determinism and cost
//! The same [`SimConfig`] gives byte-identical output. Movement uses one RNG
//! stream, tracked crossings another; every zone's sensors use their own
//! streams, so the lines of a zone do not depend on how zones are split
//! across nodes (a crossing between two nodes' zones is the same line on
//! both). Each call replays the
//! model from the start, streaming one 10-second step at a time: memory is
//! proportional to attendees, not to events.

mod emit;
mod engine;
mod plan;
mod truth;
mod units;
mod venue;

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;
use std::time::Duration;

pub use truth::{GroundTruth, Metric, PRESENCE_TIMEOUT_MS, TruthRow};
pub use units::{Histogram, UnitStats};

use engine::Engine;
use plan::Plan;

/// Kind of venue to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VenueKind {
    /// An indoor arena concert: gates, concourse, merch, floor and stands.
    Arena,
    /// A day-long open-air festival with three stages and a campsite.
    Festival,
    /// A conference day: registration, hall, cafe, auditorium and rooms.
    Conference,
}

impl VenueKind {
    /// The name accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            VenueKind::Arena => "arena",
            VenueKind::Festival => "festival",
            VenueKind::Conference => "conference",
        }
    }

    /// Attendees simulated when [`SimConfig::attendees`] is `None`.
    pub fn default_attendees(self) -> u32 {
        venue::model(self).default_attendees
    }
}

impl fmt::Display for VenueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VenueKind {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, SimError> {
        match s {
            "arena" => Ok(VenueKind::Arena),
            "festival" => Ok(VenueKind::Festival),
            "conference" => Ok(VenueKind::Conference),
            other => Err(SimError::UnknownVenue(other.to_owned())),
        }
    }
}

/// What a zone is for; drives how people move through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ZoneRole {
    /// Entry/exit gate with ticket scanners (no occupancy camera).
    Gate,
    /// The circulation area connecting everything.
    Hub,
    /// Merch, food, cafe: visited on the way.
    Amenity,
    /// Where people watch the show: seating, stage fronts, session rooms.
    Destination,
    /// Festival campsite: campers start and end there.
    Camp,
}

/// A zone of a venue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSpec {
    /// Zone name as it appears in events (`[a-z0-9-]`).
    pub name: &'static str,
    /// Capacity in people (hard for gates, hub and amenities).
    pub capacity: u32,
    /// What the zone is for.
    pub role: ZoneRole,
    /// Position in [`zones`]; decides which node observes it.
    pub index: usize,
}

impl ZoneSpec {
    /// The node (0-based) observing this zone when the venue has `nodes`
    /// nodes: zone `index` goes to node `index % nodes`.
    pub fn node(&self, nodes: u32) -> u32 {
        let nodes = u64::from(nodes.max(1));
        // The remainder is below `nodes`, which fits in u32.
        u32::try_from(self.index as u64 % nodes).unwrap_or(0)
    }
}

/// The zones of a venue kind, in index order.
pub fn zones(venue: VenueKind) -> Vec<ZoneSpec> {
    venue::model(venue).zones
}

/// Simulation parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Kind of venue.
    pub venue: VenueKind,
    /// RNG seed; the same config always gives the same bytes.
    pub seed: u64,
    /// Length of the simulated event, 5 minutes ..= 7 days.
    pub duration: Duration,
    /// Unix milliseconds of the start of the event (doors open).
    pub start_ms: i64,
    /// Number of nodes the zones are split across, 1 ..= number of zones.
    pub nodes: u32,
    /// Attendees; `None` for the venue kind's default.
    pub attendees: Option<u32>,
    /// Malformed lines per 10 000 lines, 0 ..= 10 000.
    pub malformed_per_10k: u32,
    /// Zone changes per 10 000 the people-tracking cameras miss (no
    /// `crossing` line), 0 ..= 10 000.
    pub tracking_miss_per_10k: u32,
}

impl SimConfig {
    /// A config with one node, default attendees, 5 malformed lines in 10k
    /// and 50 tracking misses in 10k (0.5 %).
    pub fn new(venue: VenueKind, seed: u64, duration: Duration, start_ms: i64) -> Self {
        SimConfig {
            venue,
            seed,
            duration,
            start_ms,
            nodes: 1,
            attendees: None,
            malformed_per_10k: 5,
            tracking_miss_per_10k: 50,
        }
    }
}

/// Invalid simulation parameters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// Unknown venue kind name.
    #[error("unknown venue kind `{0}` (expected arena, festival or conference)")]
    UnknownVenue(String),
    /// Duration outside the supported range.
    #[error("duration must be between 5 minutes and 7 days")]
    Duration,
    /// Start time outside the supported range.
    #[error("start_ms must put the whole event between 1970 and 9999")]
    Start,
    /// Bad node count.
    #[error("nodes must be between 1 and {zones} (the venue's zone count), got {nodes}")]
    Nodes {
        /// Requested nodes.
        nodes: u32,
        /// Zones of the venue.
        zones: usize,
    },
    /// Bad attendee count.
    #[error("attendees must be between 1 and {max}, got {attendees}")]
    Attendees {
        /// Requested attendees.
        attendees: u32,
        /// Largest supported value.
        max: u32,
    },
    /// Malformed rate above 10 000 per 10 000.
    #[error("malformed_per_10k must be at most 10000, got {0}")]
    MalformedRate(u32),
    /// Tracking miss rate above 10 000 per 10 000.
    #[error("tracking_miss_per_10k must be at most 10000, got {0}")]
    MissRate(u32),
    /// Ground-truth window not a positive multiple of 10 s.
    #[error("ground-truth window must be a positive multiple of 10 s, got {0:?}")]
    Window(Duration),
}

/// What [`Simulation::write_events`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Valid event lines written.
    pub events: u64,
    /// Malformed lines written (in addition to `events`).
    pub malformed: u64,
    /// Valid `crossing` lines written (included in `events`).
    pub crossings: u64,
}

impl SimStats {
    /// All lines written.
    pub fn lines(&self) -> u64 {
        self.events + self.malformed
    }
}

/// A configured simulation; each method replays it from the start.
#[derive(Debug)]
pub struct Simulation {
    plan: Plan,
}

impl Simulation {
    /// Validates `cfg` and draws the attendees.
    pub fn new(cfg: SimConfig) -> Result<Self, SimError> {
        Ok(Simulation {
            plan: Plan::new(&cfg)?,
        })
    }

    /// The zones of this venue.
    pub fn zones(&self) -> &[ZoneSpec] {
        &self.plan.model.zones
    }

    /// Zones observed by `node`.
    pub fn node_zones(&self, node: u32) -> Vec<&ZoneSpec> {
        let nodes = self.plan.nodes;
        self.zones()
            .iter()
            .filter(|z| z.node(nodes) == node)
            .collect()
    }

    /// Unix milliseconds of the end of the event (exclusive).
    pub fn end_ms(&self) -> i64 {
        self.plan.end_ms
    }

    /// The phases of the event as `(name, start_ms, end_ms)`.
    pub fn phases(&self) -> Vec<(&'static str, i64, i64)> {
        self.plan.phase_times()
    }

    /// Writes node `node`'s (0-based) events as JSON Lines in event-time order.
    pub fn write_events(&self, node: u32, out: &mut impl Write) -> io::Result<SimStats> {
        if node >= self.plan.nodes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("node {node} out of range (nodes = {})", self.plan.nodes),
            ));
        }
        let mask: Vec<bool> = self
            .zones()
            .iter()
            .map(|z| z.node(self.plan.nodes) == node)
            .collect();
        let mut engine = Engine::new(&self.plan, mask);
        let mut stats = SimStats::default();
        let mut buf = Vec::with_capacity(1 << 16);
        while let Some(step) = engine.step() {
            buf.clear();
            for p in step.events {
                if emit::write_line(&self.plan, p, &mut buf)? {
                    stats.events += 1;
                    if matches!(p.payload, plan::Payload::Crossing { .. }) {
                        stats.crossings += 1;
                    }
                } else {
                    stats.malformed += 1;
                }
            }
            out.write_all(&buf)?;
        }
        Ok(stats)
    }

    /// Zone entries and gate passes per attendee over the run, to choose the
    /// attendee-day bounds (see [`UnitStats`]). Replays the movement only.
    pub fn unit_stats(&self) -> UnitStats {
        UnitStats::compute(&self.plan)
    }

    /// Writes the ground truth (1-minute windows) of all zones, or of the
    /// zones of one node, as JSON Lines of [`TruthRow`].
    pub fn write_ground_truth(&self, node: Option<u32>, out: &mut impl Write) -> io::Result<()> {
        let truth = self.ground_truth();
        let nodes = self.plan.nodes;
        let mut buf = Vec::with_capacity(1 << 16);
        for row in truth.rows() {
            if let Some(n) = node {
                let observed = self
                    .zones()
                    .iter()
                    .any(|z| z.name == row.zone && z.node(nodes) == n);
                if !observed {
                    continue;
                }
            }
            serde_json::to_writer(&mut buf, &row)?;
            buf.push(b'\n');
            if buf.len() > 1 << 15 {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        out.write_all(&buf)
    }

    /// Ground truth in 1-minute tumbling windows aligned to the Unix epoch.
    pub fn ground_truth(&self) -> GroundTruth {
        self.truth(60_000)
    }

    /// Ground truth with another window length (a positive multiple of 10 s,
    /// e.g. 10 s or 60 s), windows aligned to the Unix epoch.
    pub fn ground_truth_with_window(&self, window: Duration) -> Result<GroundTruth, SimError> {
        let ms = i64::try_from(window.as_millis()).map_err(|_| SimError::Window(window))?;
        if ms <= 0 || ms % plan::STEP_MS != 0 || !window.subsec_nanos().is_multiple_of(1_000_000) {
            return Err(SimError::Window(window));
        }
        Ok(self.truth(ms))
    }

    fn truth(&self, window_ms: i64) -> GroundTruth {
        let mut engine = Engine::new(&self.plan, vec![true; self.zones().len()]);
        let mut acc = truth::Accumulator::new(&self.plan, window_ms);
        while let Some(step) = engine.step() {
            acc.add_step(&step);
        }
        acc.finish()
    }
}

/// A synthetic audio frame and the label of what produced it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelledAudioFrame {
    /// RMS level, dB SPL.
    pub level_db: f64,
    /// Peak level, dB SPL.
    pub peak_db: f64,
    /// Relative band energies.
    pub bands: [f64; crate::event::AUDIO_BANDS],
    /// 0 applause, 1 music, 2 speech, 3 crowd noise, 4 clipping (the order
    /// of `inference::AUDIO_CLASSES`).
    pub label: usize,
}

/// `n` labelled audio frames drawn with the microphones' model (all scenes,
/// crowd sizes and stage bleed; clipping oversampled), deterministic in
/// `seed`. Training data for the on-device audio classifier.
pub fn labelled_audio_frames(seed: u64, n: usize) -> Vec<LabelledAudioFrame> {
    use rand::SeedableRng;
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let (level_db, peak_db, bands, label) = engine::labelled_audio_frame(&mut r);
            LabelledAudioFrame {
                level_db,
                peak_db,
                bands,
                label,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
