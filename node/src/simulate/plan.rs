//! What is fixed for a simulated run: the layout, phases resolved to
//! steps, the attendees' static attributes and identifiers, the sensors'
//! ids ([`Plan`]), and the compact events the engine produces before they
//! are written out ([`Pending`], [`Crossing`]). Data only: the engine
//! ([`super::engine`]) steps it, the emitter ([`super::emit`]) writes it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Exp1, StandardNormal};

use super::venue::{self, DestRule, PhaseKind, VenueModel};
use super::{SimConfig, SimError, ZoneRole};
use crate::event::{AUDIO_BANDS, Direction};

/// Model step, milliseconds.
pub(crate) const STEP_MS: i64 = 10_000;
pub(super) const NEVER: u32 = u32::MAX;
pub(super) const OUTSIDE: u8 = u8::MAX;
pub(super) const MAX_ATTENDEES: u32 = 1_000_000;
/// Last supported millisecond (9999-12-31T23:59:59.999Z).
pub(super) const MAX_MS: i64 = 253_402_300_799_999;

/// RNG streams (ChaCha stream ids) for the parts of the model.
pub(super) const STREAM_PEOPLE: u64 = 0;
pub(super) const STREAM_MOVES: u64 = 1;
/// Tracked crossings: time, miss and corruption draws (never mask-dependent).
pub(super) const STREAM_TRACKS: u64 = 2;
pub(super) const STREAM_STAGE: u64 = 100;
pub(super) const STREAM_SENSORS: u64 = 1_000;
pub(super) const STREAM_MALFORMED: u64 = 2_000;

pub(super) fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

pub(super) fn uniform(r: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * r.random::<f64>()
}

pub(super) fn normal(r: &mut ChaCha8Rng, mean: f64, sd: f64) -> f64 {
    let z: f64 = r.sample(StandardNormal);
    mean + sd * z
}

pub(super) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Index drawn with probability proportional to `weights`.
pub(super) fn weighted(r: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = r.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len().saturating_sub(1)
}

/// A phase resolved to steps.
#[derive(Debug, Clone)]
pub(crate) struct Phase {
    pub name: &'static str,
    pub kind: PhaseKind,
    pub start: u32,
    pub end: u32,
    /// Show destinations as (zone, weight); empty means "own seat".
    pub dest: Vec<(usize, f64)>,
}

impl Phase {
    pub(super) fn len(&self) -> u32 {
        self.end - self.start
    }
}

/// A discoverable device carried by an attendee.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    pub mac: String,
    /// Probability of a probe in one step.
    pub(super) p_probe: f64,
}

/// An app user.
#[derive(Debug, Clone)]
pub(crate) struct AppUser {
    pub subject: String,
    pub consent: &'static [&'static str],
}

pub(super) const CONSENTS: [&[&str]; 3] = [&["analytics"], &["analytics", "marketing"], &[]];

/// Static attributes of one attendee.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    pub(super) gate: u8,
    pub(super) first_dest: u8,
    pub(super) seat: u8,
    pub(super) arrive: u32,
    pub(super) leave: u32,
    pub(super) camper: bool,
    pub ticket: String,
    /// Track id from the people-tracking cameras, kept all day (the camera
    /// system re-identifies the person on re-entry).
    pub track: String,
    /// Steps at which the attendee goes out of the venue and comes back,
    /// ascending; `NEVER` if not.
    pub(super) outings: [u32; 2],
    pub device: Option<Device>,
    pub app: Option<AppUser>,
}

/// Sensor ids of a zone.
#[derive(Debug, Clone)]
pub(crate) struct ZoneSensors {
    pub cam: String,
    pub mic: String,
    pub env: String,
    pub aps: Vec<String>,
    pub lanes: Vec<String>,
    pub cam_firmware: &'static str,
    /// People-tracking camera on the lines into this zone (see [`line_zone`]).
    pub counter: String,
}

/// Everything fixed for a run.
#[derive(Debug)]
pub(crate) struct Plan {
    pub model: VenueModel,
    pub seed: u64,
    pub nodes: u32,
    pub start_ms: i64,
    pub end_ms: i64,
    pub steps: u32,
    pub phases: Vec<Phase>,
    pub(super) phase_of_step: Vec<u8>,
    pub malformed_per_10k: u32,
    pub tracking_miss_per_10k: u32,
    /// Behaviour time scale: duration / the venue's nominal duration.
    pub(super) scale: f64,
    /// Ventilation time constant for CO2, seconds.
    pub(super) tau_s: f64,
    pub people: Vec<Person>,
    pub sensors: Vec<ZoneSensors>,
    pub(super) hub: usize,
    pub(super) gates: Vec<usize>,
    pub(super) amenities: Vec<usize>,
    pub(super) camp: Option<usize>,
}

impl Plan {
    pub(crate) fn new(cfg: &SimConfig) -> Result<Plan, SimError> {
        let model = venue::model(cfg.venue);
        let duration_ms =
            i64::try_from(cfg.duration.as_millis()).map_err(|_| SimError::Duration)?;
        if !(5 * 60_000..=7 * 24 * 3_600_000).contains(&duration_ms) {
            return Err(SimError::Duration);
        }
        if cfg.start_ms < 0 || cfg.start_ms > MAX_MS - duration_ms {
            return Err(SimError::Start);
        }
        if cfg.nodes == 0 || cfg.nodes as usize > model.zones.len() {
            return Err(SimError::Nodes {
                nodes: cfg.nodes,
                zones: model.zones.len(),
            });
        }
        let attendees = cfg.attendees.unwrap_or(model.default_attendees);
        if attendees == 0 || attendees > MAX_ATTENDEES {
            return Err(SimError::Attendees {
                attendees,
                max: MAX_ATTENDEES,
            });
        }
        if cfg.malformed_per_10k > 10_000 {
            return Err(SimError::MalformedRate(cfg.malformed_per_10k));
        }
        if cfg.tracking_miss_per_10k > 10_000 {
            return Err(SimError::MissRate(cfg.tracking_miss_per_10k));
        }
        // At least 30 steps (5 minutes checked above), at most 60 480.
        let steps =
            u32::try_from((duration_ms + STEP_MS - 1) / STEP_MS).map_err(|_| SimError::Duration)?;
        let phases = resolve_phases(&model, steps);
        let mut phase_of_step = vec![0u8; steps as usize];
        for (i, p) in phases.iter().enumerate() {
            for s in p.start..p.end {
                phase_of_step[s as usize] = i as u8;
            }
        }
        let duration_s = duration_ms as f64 / 1000.0;
        let role = |r: ZoneRole| -> Vec<usize> {
            model
                .zones
                .iter()
                .filter(|z| z.role == r)
                .map(|z| z.index)
                .collect()
        };
        let gates = role(ZoneRole::Gate);
        let amenities = role(ZoneRole::Amenity);
        let hub = role(ZoneRole::Hub).first().copied().unwrap_or(0);
        let camp = role(ZoneRole::Camp).first().copied();
        let sensors = model
            .zones
            .iter()
            .map(|z| ZoneSensors {
                cam: format!("cam-{}-1", z.name),
                mic: format!("mic-{}-1", z.name),
                env: format!("env-{}-1", z.name),
                aps: (1..=(1 + z.capacity / 2500).min(8))
                    .map(|k| format!("ap-{}-{k}", z.name))
                    .collect(),
                lanes: (1..=(1 + z.capacity / 100).min(12))
                    .map(|k| format!("{}-{k}", z.name))
                    .collect(),
                cam_firmware: if z.index % 3 == 0 {
                    "cv-2.3.9"
                } else {
                    "cv-2.4.1"
                },
                counter: format!("pc-{}-1", z.name),
            })
            .collect();
        let mut plan = Plan {
            scale: (duration_s / model.nominal_s).clamp(0.05, 4.0),
            tau_s: (duration_s / 12.0).clamp(60.0, 600.0),
            model,
            seed: cfg.seed,
            nodes: cfg.nodes,
            start_ms: cfg.start_ms,
            end_ms: cfg.start_ms + duration_ms,
            steps,
            phases,
            phase_of_step,
            malformed_per_10k: cfg.malformed_per_10k,
            tracking_miss_per_10k: cfg.tracking_miss_per_10k,
            people: Vec::new(),
            sensors,
            hub,
            gates,
            amenities,
            camp,
        };
        plan.people = plan.draw_people(attendees);
        Ok(plan)
    }

    pub(crate) fn phase_times(&self) -> Vec<(&'static str, i64, i64)> {
        self.phases
            .iter()
            .map(|p| {
                let at = |s: u32| (self.start_ms + i64::from(s) * STEP_MS).min(self.end_ms);
                (p.name, at(p.start), at(p.end))
            })
            .collect()
    }

    pub(super) fn phase_index(&self, step: u32) -> usize {
        self.phase_of_step.get(step as usize).copied().unwrap_or(0) as usize
    }

    pub(super) fn first_phase(&self, kind: PhaseKind) -> Option<&Phase> {
        self.phases.iter().find(|p| p.kind == kind)
    }

    pub(super) fn last_phase(&self, kind: PhaseKind) -> Option<&Phase> {
        self.phases.iter().rev().find(|p| p.kind == kind)
    }

    /// The show phase at or after phase `i`.
    pub(super) fn next_show(&self, i: usize) -> Option<&Phase> {
        self.phases[i..].iter().find(|p| p.kind == PhaseKind::Show)
    }

    pub(super) fn choose_dest(&self, r: &mut ChaCha8Rng, show: Option<&Phase>, seat: u8) -> u8 {
        match show {
            Some(p) if !p.dest.is_empty() => {
                let w: Vec<f64> = p.dest.iter().map(|d| d.1).collect();
                p.dest[weighted(r, &w)].0 as u8
            }
            _ => seat,
        }
    }

    pub(super) fn draw_people(&self, n: u32) -> Vec<Person> {
        let mut r = rng(self.seed, STREAM_PEOPLE);
        let zones = &self.model.zones;
        let gate_w: Vec<f64> = self
            .gates
            .iter()
            .map(|&g| f64::from(zones[g].capacity))
            .collect();
        let dests: Vec<usize> = zones
            .iter()
            .filter(|z| z.role == ZoneRole::Destination)
            .map(|z| z.index)
            .collect();
        let dest_w: Vec<f64> = dests
            .iter()
            .map(|&d| f64::from(zones[d].capacity))
            .collect();
        let whole = Phase {
            name: "",
            kind: PhaseKind::Show,
            start: 0,
            end: self.steps,
            dest: Vec::new(),
        };
        let ingress = self.first_phase(PhaseKind::Ingress).unwrap_or(&whole);
        let first_show = self.first_phase(PhaseKind::Show).unwrap_or(&whole);
        let last_show = self.last_phase(PhaseKind::Show).unwrap_or(&whole);
        let egress = self.last_phase(PhaseKind::Egress).unwrap_or(&whole);
        let ticket_offset = r.random_range(0..100_000_000u64);
        let subject_offset = r.random_range(0..10_000_000u64);
        let mac_mask = r.random_range(0..1u32 << 24);
        let track_offset = r.random_range(0..10_000_000u64);
        let breaks: Vec<&Phase> = self
            .phases
            .iter()
            .filter(|p| p.kind == PhaseKind::Break)
            .collect();
        let shows: Vec<&Phase> = self
            .phases
            .iter()
            .filter(|p| p.kind == PhaseKind::Show)
            .collect();
        const OUIS: [[u8; 3]; 6] = [
            [0xa4, 0x5e, 0x60],
            [0x3c, 0x22, 0xfb],
            [0xf0, 0x18, 0x98],
            [0x8c, 0x85, 0x90],
            [0xdc, 0xa6, 0x32],
            [0x40, 0x4e, 0x36],
        ];
        let at = |p: &Phase, f: f64| -> u32 {
            (p.start + (f * f64::from(p.len())) as u32).min(p.end.saturating_sub(1))
        };
        // When an attendee goes out for a while: most during a break, the
        // rest at any time of a show.
        let outing = |r: &mut ChaCha8Rng| -> u32 {
            if !breaks.is_empty() && r.random::<f64>() < 0.6 {
                let b = breaks[r.random_range(0..breaks.len())];
                at(b, uniform(r, 0.0, 0.5))
            } else if !shows.is_empty() {
                let p = shows[r.random_range(0..shows.len())];
                at(p, uniform(r, 0.05, 0.9))
            } else {
                NEVER
            }
        };
        (0..n)
            .map(|i| {
                let gate = self.gates[weighted(&mut r, &gate_w)] as u8;
                let seat = dests[weighted(&mut r, &dest_w)] as u8;
                let first_dest = self.choose_dest(&mut r, Some(first_show), seat);
                let camper = r.random::<f64>() < self.model.campers;
                let arrive = if r.random::<f64>() < self.model.late_arrivals {
                    at(first_show, uniform(&mut r, 0.0, 0.35))
                } else {
                    at(ingress, 0.02 + 0.98 * r.random::<f64>().sqrt())
                };
                let leave = if r.random::<f64>() < self.model.early_leave {
                    at(last_show, uniform(&mut r, 0.5, 1.0))
                } else {
                    let e: f64 = r.sample(Exp1);
                    at(egress, (0.2 * e).min(0.6))
                };
                let leave = leave.max(arrive + 6);
                // Identifiers are bijections of the index, so they are unique.
                let ticket = format!(
                    "T-{:08}",
                    (u64::from(i) * 2_654_435_761 + ticket_offset) % 100_000_000
                );
                let device = (r.random::<f64>() < 0.3).then(|| {
                    let oui = OUIS[r.random_range(0..OUIS.len())];
                    let low = i ^ mac_mask;
                    Device {
                        mac: format!(
                            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                            oui[0],
                            oui[1],
                            oui[2],
                            (low >> 16) & 0xff,
                            (low >> 8) & 0xff,
                            low & 0xff
                        ),
                        p_probe: (STEP_MS as f64 / 1000.0 / uniform(&mut r, 12.0, 40.0)).min(1.0),
                    }
                });
                let app = (r.random::<f64>() < 0.2).then(|| AppUser {
                    subject: format!(
                        "u-{:07}",
                        (u64::from(i) * 40_503 + subject_offset) % 10_000_000
                    ),
                    consent: CONSENTS[weighted(&mut r, &[0.5, 0.2, 0.3])],
                });
                let mut outings = [NEVER; 2];
                if r.random::<f64>() < self.model.reentry {
                    outings[0] = outing(&mut r);
                    if r.random::<f64>() < self.model.second_reentry {
                        outings[1] = outing(&mut r);
                        outings.sort_unstable();
                    }
                }
                let track = format!(
                    "trk-{:07}",
                    (u64::from(i) * 7_368_787 + track_offset) % 10_000_000
                );
                Person {
                    gate,
                    first_dest,
                    seat,
                    arrive,
                    leave,
                    camper,
                    ticket,
                    track,
                    outings,
                    device,
                    app,
                }
            })
            .collect()
    }
}

pub(super) fn resolve_phases(model: &VenueModel, steps: u32) -> Vec<Phase> {
    let total: f64 = model.phases.iter().map(|p| p.share).sum();
    let n = model.phases.len() as u32;
    let mut out = Vec::with_capacity(model.phases.len());
    let mut start = 0u32;
    let mut cum = 0.0;
    for (i, p) in model.phases.iter().enumerate() {
        cum += p.share / total;
        let i = i as u32;
        let end = if i + 1 == n {
            steps
        } else {
            // Every phase gets at least one step and leaves one for each later phase.
            ((cum * f64::from(steps)).round() as u32).clamp(start + 1, steps - (n - 1 - i))
        };
        let dest = match p.dest {
            DestRule::Seat => Vec::new(),
            DestRule::Choose(list) => list
                .iter()
                .filter_map(|(name, w)| {
                    model
                        .zones
                        .iter()
                        .find(|z| z.name == *name)
                        .map(|z| (z.index, *w))
                })
                .collect(),
        };
        out.push(Phase {
            name: p.name,
            kind: p.kind,
            start,
            end,
            dest,
        });
        start = end;
    }
    out
}

/// Which sensor of a zone produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sensor {
    Cam,
    Mic,
    Env,
    Ap(u8),
    Lane(u8),
    App,
    /// The people-tracking camera of a zone's lines (zone index).
    Counter(u8),
}

/// A compact event before serialisation.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Occupancy {
        count: u32,
    },
    Gate {
        direction: Direction,
        person: u32,
    },
    Audio {
        level_db: f64,
        peak_db: f64,
        bands: [f64; AUDIO_BANDS],
    },
    Environment {
        co2_ppm: f64,
        temperature_c: f64,
    },
    Probe {
        person: u32,
        rssi_dbm: i32,
    },
    App {
        person: u32,
        action: &'static str,
    },
    /// A tracked line crossing; `OUTSIDE` for the edge of the tracked area.
    Crossing {
        person: u32,
        from: u8,
        to: u8,
    },
    /// A broken line standing in for an event (excluded from ground truth).
    Malformed(String),
}

/// One line of output.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub ts_ms: i64,
    pub zone: u8,
    pub sensor: Sensor,
    pub payload: Payload,
}

/// The zone whose people-tracking camera watches the line between `from`
/// and `to`: the zone on the far side from the hub (or from outside).
pub(crate) fn line_zone(from: u8, to: u8, hub: usize) -> u8 {
    match (from, to) {
        (OUTSIDE, z) | (z, OUTSIDE) => z,
        (f, t) if usize::from(f) == hub => t,
        (f, t) if usize::from(t) == hub => f,
        (_, t) => t,
    }
}

/// A zone change of one person, whether the tracking cameras saw it or not.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Crossing {
    pub ts_ms: i64,
    pub person: u32,
    /// Zone left; `OUTSIDE` when arriving.
    pub from: u8,
    /// Zone entered; `OUTSIDE` when leaving the venue.
    pub to: u8,
}

impl Crossing {
    pub(crate) fn zone_left(&self) -> Option<usize> {
        (self.from != OUTSIDE).then_some(usize::from(self.from))
    }

    pub(crate) fn zone_entered(&self) -> Option<usize> {
        (self.to != OUTSIDE).then_some(usize::from(self.to))
    }
}
