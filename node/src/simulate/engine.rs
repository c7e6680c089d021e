//! The population model and the sensors, stepped every 10 s.
//!
//! [`Plan`] holds what is fixed for a run (layout, phases in steps, the
//! attendees' static attributes and identifiers); [`Engine`] replays it one
//! step at a time and returns the step's sensor events sorted by time.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Exp1, StandardNormal};

use super::venue::{self, DestRule, PhaseKind, Program, VenueModel};
use super::{SimConfig, SimError, ZoneRole};
use crate::event::{AUDIO_BANDS, Direction};

/// Model step, milliseconds.
pub(crate) const STEP_MS: i64 = 10_000;
const NEVER: u32 = u32::MAX;
const OUTSIDE: u8 = u8::MAX;
const MAX_ATTENDEES: u32 = 1_000_000;
/// Last supported millisecond (9999-12-31T23:59:59.999Z).
const MAX_MS: i64 = 253_402_300_799_999;

/// RNG streams (ChaCha stream ids) for the parts of the model.
const STREAM_PEOPLE: u64 = 0;
const STREAM_MOVES: u64 = 1;
/// Tracked crossings: time, miss and corruption draws (never mask-dependent).
const STREAM_TRACKS: u64 = 2;
const STREAM_STAGE: u64 = 100;
const STREAM_SENSORS: u64 = 1_000;
const STREAM_MALFORMED: u64 = 2_000;

fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

fn uniform(r: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * r.random::<f64>()
}

fn normal(r: &mut ChaCha8Rng, mean: f64, sd: f64) -> f64 {
    let z: f64 = r.sample(StandardNormal);
    mean + sd * z
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Index drawn with probability proportional to `weights`.
fn weighted(r: &mut ChaCha8Rng, weights: &[f64]) -> usize {
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
    fn len(&self) -> u32 {
        self.end - self.start
    }
}

/// A discoverable device carried by an attendee.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    pub mac: String,
    /// Probability of a probe in one step.
    p_probe: f64,
}

/// An app user.
#[derive(Debug, Clone)]
pub(crate) struct AppUser {
    pub subject: String,
    pub consent: &'static [&'static str],
}

const CONSENTS: [&[&str]; 3] = [&["analytics"], &["analytics", "marketing"], &[]];

/// Static attributes of one attendee.
#[derive(Debug, Clone)]
pub(crate) struct Person {
    gate: u8,
    first_dest: u8,
    seat: u8,
    arrive: u32,
    leave: u32,
    camper: bool,
    pub ticket: String,
    /// Track id from the people-tracking cameras, kept all day (the camera
    /// system re-identifies the person on re-entry).
    pub track: String,
    /// Steps at which the attendee goes out of the venue and comes back,
    /// ascending; `NEVER` if not.
    outings: [u32; 2],
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
    phase_of_step: Vec<u8>,
    pub malformed_per_10k: u32,
    pub tracking_miss_per_10k: u32,
    /// Behaviour time scale: duration / the venue's nominal duration.
    scale: f64,
    /// Ventilation time constant for CO2, seconds.
    tau_s: f64,
    pub people: Vec<Person>,
    pub sensors: Vec<ZoneSensors>,
    hub: usize,
    gates: Vec<usize>,
    amenities: Vec<usize>,
    camp: Option<usize>,
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

    fn phase_index(&self, step: u32) -> usize {
        self.phase_of_step.get(step as usize).copied().unwrap_or(0) as usize
    }

    fn first_phase(&self, kind: PhaseKind) -> Option<&Phase> {
        self.phases.iter().find(|p| p.kind == kind)
    }

    fn last_phase(&self, kind: PhaseKind) -> Option<&Phase> {
        self.phases.iter().rev().find(|p| p.kind == kind)
    }

    /// The show phase at or after phase `i`.
    fn next_show(&self, i: usize) -> Option<&Phase> {
        self.phases[i..].iter().find(|p| p.kind == PhaseKind::Show)
    }

    fn choose_dest(&self, r: &mut ChaCha8Rng, show: Option<&Phase>, seat: u8) -> u8 {
        match show {
            Some(p) if !p.dest.is_empty() => {
                let w: Vec<f64> = p.dest.iter().map(|d| d.1).collect();
                p.dest[weighted(r, &w)].0 as u8
            }
            _ => seat,
        }
    }

    fn draw_people(&self, n: u32) -> Vec<Person> {
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

fn resolve_phases(model: &VenueModel, steps: u32) -> Vec<Phase> {
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

/// What an attendee is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Waiting,
    Entering,
    Hub,
    Amenity,
    Camp,
    AtDest,
    Exiting,
    Gone,
}

/// Where an attendee goes when their time in the hub is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Dest,
    Amenity,
    Gate,
    Camp,
}

#[derive(Debug, Clone, Copy)]
struct Agent {
    /// Index in [`Plan::people`].
    person: u32,
    zone: u8,
    mode: Mode,
    after: After,
    timer: u32,
    dest: u8,
    camped: bool,
    /// Outings started so far.
    outings: u8,
    /// On the way out for an outing (comes back unless it is time to leave).
    out: bool,
}

/// What a stage is doing at a given second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scene {
    Quiet,
    Background,
    Music,
    Applause,
    Speech,
}

#[derive(Debug)]
struct Stage {
    scene: Scene,
    until_ms: i64,
    rng: ChaCha8Rng,
    /// Scene of each second of the current step.
    now: [Scene; 10],
}

/// A sensor firing at a regular period with jitter.
#[derive(Debug, Clone, Copy)]
struct Periodic {
    next_ms: i64,
    period_ms: i64,
    jitter_ms: i64,
}

impl Periodic {
    fn new(r: &mut ChaCha8Rng, start_ms: i64, period_ms: i64, jitter_ms: i64) -> Periodic {
        Periodic {
            next_ms: start_ms + r.random_range(0..period_ms),
            period_ms,
            jitter_ms,
        }
    }

    /// The next firing before `end_ms`, if any.
    fn fire(&mut self, r: &mut ChaCha8Rng, end_ms: i64) -> Option<i64> {
        if self.next_ms >= end_ms {
            return None;
        }
        let t = self.next_ms;
        self.next_ms += self.period_ms + r.random_range(0..=self.jitter_ms);
        Some(t)
    }
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

/// One simulated step.
pub(crate) struct StepView<'a> {
    pub start_ms: i64,
    pub end_ms: i64,
    /// True people per zone during the step.
    pub occupancy: &'a [u32],
    /// The step's events, sorted by time.
    pub events: &'a [Pending],
    /// Every zone change of the step (all zones, emitted or not), in person
    /// order.
    pub crossings: &'a [Crossing],
}

#[derive(Debug, Clone, Copy)]
struct Air {
    co2: f64,
    temp: f64,
}

/// Replays a [`Plan`].
pub(crate) struct Engine<'a> {
    plan: &'a Plan,
    /// Zones whose sensor events are produced.
    mask: Vec<bool>,
    moves: ChaCha8Rng,
    sensors: Vec<ChaCha8Rng>,
    malformed: Vec<ChaCha8Rng>,
    agents: Vec<Agent>,
    occ: Vec<u32>,
    stages: Vec<Stage>,
    air: Vec<Air>,
    cams: Vec<Periodic>,
    mics: Vec<Periodic>,
    envs: Vec<Periodic>,
    step: u32,
    pending: Vec<Pending>,
    tracks: ChaCha8Rng,
    /// Start and end of the current step, ms.
    now: (i64, i64),
    crossings: Vec<Crossing>,
}

const MUSIC: [f64; 8] = [0.24, 0.2, 0.15, 0.12, 0.1, 0.09, 0.06, 0.04];
const APPLAUSE: [f64; 8] = [0.04, 0.06, 0.09, 0.13, 0.17, 0.2, 0.18, 0.13];
const SPEECH: [f64; 8] = [0.03, 0.1, 0.24, 0.27, 0.18, 0.1, 0.05, 0.03];
const CROWD: [f64; 8] = [0.08, 0.14, 0.2, 0.2, 0.16, 0.11, 0.07, 0.04];
const HVAC: [f64; 8] = [0.35, 0.25, 0.15, 0.1, 0.07, 0.04, 0.02, 0.02];

impl<'a> Engine<'a> {
    pub(crate) fn new(plan: &'a Plan, mask: Vec<bool>) -> Engine<'a> {
        let nz = plan.model.zones.len();
        let mut sensors: Vec<ChaCha8Rng> = (0..nz as u64)
            .map(|z| rng(plan.seed, STREAM_SENSORS + z))
            .collect();
        let malformed = (0..nz as u64)
            .map(|z| rng(plan.seed, STREAM_MALFORMED + z))
            .collect();
        let mut cams = Vec::with_capacity(nz);
        let mut mics = Vec::with_capacity(nz);
        let mut envs = Vec::with_capacity(nz);
        for r in &mut sensors {
            let period = r.random_range(5_000..=9_000);
            cams.push(Periodic::new(r, plan.start_ms, period, 1_000));
            mics.push(Periodic::new(r, plan.start_ms, 1_000, 0));
            envs.push(Periodic::new(r, plan.start_ms, 30_000, 500));
        }
        let stages = (0..plan.model.stages as u64)
            .map(|s| Stage {
                scene: Scene::Quiet,
                until_ms: 0,
                rng: rng(plan.seed, STREAM_STAGE + s),
                now: [Scene::Quiet; 10],
            })
            .collect();
        let air = plan
            .model
            .indoor
            .iter()
            .map(|&indoor| Air {
                co2: 420.0,
                temp: if indoor { 20.0 } else { 18.0 },
            })
            .collect();
        let agents = plan
            .people
            .iter()
            .enumerate()
            .map(|(i, p)| Agent {
                person: i as u32,
                zone: OUTSIDE,
                mode: Mode::Waiting,
                after: After::Dest,
                timer: p.arrive,
                dest: p.first_dest,
                camped: false,
                outings: 0,
                out: false,
            })
            .collect();
        Engine {
            plan,
            mask,
            moves: rng(plan.seed, STREAM_MOVES),
            sensors,
            malformed,
            agents,
            occ: vec![0; nz],
            stages,
            air,
            cams,
            mics,
            envs,
            step: 0,
            pending: Vec::new(),
            tracks: rng(plan.seed, STREAM_TRACKS),
            now: (plan.start_ms, plan.start_ms),
            crossings: Vec::new(),
        }
    }

    /// Simulates the next step; `None` when the event is over.
    pub(crate) fn step(&mut self) -> Option<StepView<'_>> {
        if self.step >= self.plan.steps {
            return None;
        }
        let s = self.step;
        let start_ms = self.plan.start_ms + i64::from(s) * STEP_MS;
        let end_ms = (start_ms + STEP_MS).min(self.plan.end_ms);
        self.pending.clear();
        self.crossings.clear();
        self.now = (start_ms, end_ms);
        self.move_people(s, start_ms, end_ms);
        self.update_air(end_ms - start_ms);
        self.update_stages(s, start_ms);
        self.sense(s, start_ms, end_ms);
        self.pending.sort_by_key(|p| p.ts_ms);
        self.step += 1;
        Some(StepView {
            start_ms,
            end_ms,
            occupancy: &self.occ,
            events: &self.pending,
            crossings: &self.crossings,
        })
    }

    fn scaled_minutes(&mut self, lo: f64, hi: f64) -> u32 {
        let steps = uniform(&mut self.moves, lo, hi) * 60_000.0 / STEP_MS as f64 * self.plan.scale;
        (steps.round() as u32).max(1)
    }

    fn fraction_of(&mut self, lo: f64, hi: f64, len: u32) -> u32 {
        ((uniform(&mut self.moves, lo, hi) * f64::from(len)).round() as u32).max(1)
    }

    /// Moves `a` into zone `to` unless it is a full gate, hub or amenity.
    fn go(&mut self, a: &mut Agent, to: usize) -> bool {
        let z = &self.plan.model.zones[to];
        let hard = matches!(z.role, ZoneRole::Gate | ZoneRole::Hub | ZoneRole::Amenity);
        if a.zone as usize == to {
            return true;
        }
        if hard && self.occ[to] >= z.capacity {
            return false;
        }
        if a.zone != OUTSIDE {
            self.occ[a.zone as usize] -= 1;
        }
        self.occ[to] += 1;
        self.cross(a.person, a.zone, to as u8);
        a.zone = to as u8;
        true
    }

    fn leave_zone(&mut self, a: &mut Agent) {
        if a.zone != OUTSIDE {
            self.occ[a.zone as usize] -= 1;
            self.cross(a.person, a.zone, OUTSIDE);
        }
        a.zone = OUTSIDE;
    }

    /// Records a zone change and emits it as a `crossing` to the nodes
    /// observing `from` or `to`, unless the camera misses it. Every draw is
    /// made whatever the mask, so a crossing is the same on every node.
    fn cross(&mut self, person: u32, from: u8, to: u8) {
        let plan = self.plan;
        let (start_ms, end_ms) = self.now;
        let r = &mut self.tracks;
        let ts_ms = r.random_range(start_ms..end_ms);
        let tracked = r.random_range(0..10_000) >= plan.tracking_miss_per_10k;
        let broken = r.random_range(0..10_000) < plan.malformed_per_10k;
        let corrupt_seed: u64 = r.random();
        self.crossings.push(Crossing {
            ts_ms,
            person,
            from,
            to,
        });
        let observed = |z: u8| z != OUTSIDE && self.mask[z as usize];
        if !tracked || !(observed(from) || observed(to)) {
            return;
        }
        let mut p = Pending {
            ts_ms,
            zone: if to != OUTSIDE { to } else { from },
            sensor: Sensor::Counter(line_zone(from, to, plan.hub)),
            payload: Payload::Crossing { person, from, to },
        };
        if broken {
            let mut r = ChaCha8Rng::seed_from_u64(corrupt_seed);
            p.payload = Payload::Malformed(super::emit::corrupt(plan, &p, &mut r));
        }
        self.pending.push(p);
    }

    fn scan(&mut self, gate: usize, start_ms: i64, end_ms: i64, direction: Direction, person: u32) {
        if !self.mask[gate] {
            return;
        }
        let r = &mut self.sensors[gate];
        let ts = r.random_range(start_ms..end_ms);
        let lane = r.random_range(0..self.plan.sensors[gate].lanes.len()) as u8;
        self.push(
            ts,
            gate,
            Sensor::Lane(lane),
            Payload::Gate { direction, person },
        );
    }

    fn push(&mut self, ts_ms: i64, zone: usize, sensor: Sensor, payload: Payload) {
        let mut p = Pending {
            ts_ms,
            zone: zone as u8,
            sensor,
            payload,
        };
        let bad = &mut self.malformed[zone];
        if bad.random_range(0..10_000) < self.plan.malformed_per_10k {
            p.payload = Payload::Malformed(super::emit::corrupt(self.plan, &p, bad));
        }
        self.pending.push(p);
    }

    /// Starts a trip to the hub; false if the hub is full.
    fn start_trip(
        &mut self,
        a: &mut Agent,
        leaving: bool,
        dwell: u32,
        s: u32,
        camper: bool,
    ) -> bool {
        if !self.go(a, self.plan.hub) {
            return false;
        }
        a.mode = Mode::Hub;
        a.timer = s + dwell;
        a.after = if leaving {
            if camper && self.plan.camp.is_some() {
                After::Camp
            } else {
                After::Gate
            }
        } else if self.moves.random::<f64>() < self.plan.model.p_amenity_trip {
            After::Amenity
        } else {
            After::Dest
        };
        true
    }

    fn move_people(&mut self, s: u32, start_ms: i64, end_ms: i64) {
        let plan = self.plan;
        let pi = plan.phase_index(s);
        let phase = &plan.phases[pi];
        if phase.kind == PhaseKind::Break && s == phase.start {
            self.break_starts(pi, s);
        }
        let show_steps = plan
            .phases
            .iter()
            .filter(|p| p.kind == PhaseKind::Show)
            .map(|p| f64::from(p.len()))
            .sum::<f64>()
            .max(1.0);
        let shows = plan
            .phases
            .iter()
            .filter(|p| p.kind == PhaseKind::Show)
            .count() as f64;
        let p_wander = match phase.kind {
            PhaseKind::Show => plan.model.wander_per_show * shows / show_steps,
            PhaseKind::Ingress => 0.5 * plan.model.wander_per_show * shows / show_steps,
            PhaseKind::Break | PhaseKind::Egress => 0.0,
        };
        for i in 0..self.agents.len() {
            let mut a = self.agents[i];
            let p = &plan.people[i];
            let leaving = s >= p.leave;
            let person = i as u32;
            match a.mode {
                Mode::Gone => {}
                Mode::Waiting if a.outings > 0 && leaving => {
                    // Out of the venue when it is time to go home: stays out.
                    a.mode = Mode::Gone;
                    a.timer = NEVER;
                }
                Mode::Waiting => {
                    if s >= a.timer {
                        let gate = p.gate as usize;
                        if self.go(&mut a, gate) {
                            a.mode = Mode::Entering;
                            a.timer = s + self.moves.random_range(1..=2);
                            self.scan(gate, start_ms, end_ms, Direction::In, person);
                        } else {
                            a.timer = s + 1;
                        }
                    }
                }
                Mode::Entering => {
                    if s >= a.timer {
                        if let (true, Some(camp)) = (p.camper && !a.camped, plan.camp) {
                            self.go(&mut a, camp);
                            a.camped = true;
                            a.mode = Mode::Camp;
                            let ingress_left = plan.phases[pi].end.saturating_sub(s);
                            a.timer = if phase.kind == PhaseKind::Ingress {
                                s + self.fraction_of(0.2, 0.8, ingress_left)
                            } else {
                                s + self.scaled_minutes(5.0, 20.0)
                            };
                        } else if self.go(&mut a, plan.hub) {
                            a.mode = Mode::Hub;
                            a.timer = s + self.scaled_minutes(1.0, 5.0);
                            a.after = if self.moves.random::<f64>() < plan.model.p_amenity_arrival {
                                After::Amenity
                            } else {
                                After::Dest
                            };
                        } else {
                            a.timer = s + 1;
                        }
                    }
                }
                Mode::Hub => {
                    if s >= a.timer {
                        if leaving && matches!(a.after, After::Dest | After::Amenity) {
                            a.after = if p.camper && plan.camp.is_some() {
                                After::Camp
                            } else {
                                After::Gate
                            };
                        }
                        self.hub_exit(&mut a, p, s, phase);
                    }
                }
                Mode::Amenity => {
                    if s >= a.timer {
                        if leaving {
                            let dwell = self.scaled_minutes(0.5, 3.0);
                            if !self.start_trip(&mut a, true, dwell, s, p.camper) {
                                a.timer = s + 1;
                            }
                        } else {
                            let dest = a.dest as usize;
                            self.go(&mut a, dest);
                            a.mode = Mode::AtDest;
                            a.timer = NEVER;
                        }
                    }
                }
                Mode::Camp => {
                    if leaving {
                        a.timer = NEVER;
                    } else if s >= a.timer {
                        let dwell = self.scaled_minutes(1.0, 4.0);
                        if !self.start_trip(&mut a, false, dwell, s, p.camper) {
                            a.timer = s + 1;
                        }
                    }
                }
                Mode::AtDest => {
                    let outing = p.outings.get(usize::from(a.outings)).copied();
                    if !leaving && outing.is_some_and(|t| s >= t) {
                        // Going out for a while: to a gate via the hub.
                        let dwell = self.scaled_minutes(0.5, 2.0);
                        if self.go(&mut a, plan.hub) {
                            a.mode = Mode::Hub;
                            a.timer = s + dwell;
                            a.after = After::Gate;
                            a.outings += 1;
                            a.out = true;
                        }
                    } else if leaving {
                        let dwell = self.scaled_minutes(0.5, 3.0);
                        self.start_trip(&mut a, true, dwell, s, p.camper);
                    } else if s >= a.timer {
                        let dwell = if phase.kind == PhaseKind::Break {
                            self.fraction_of(0.25, 0.6, phase.len())
                        } else {
                            self.scaled_minutes(1.0, 4.0)
                        };
                        // A scheduled trip (break, or a new destination): retry
                        // next step while the hub is full.
                        if !self.start_trip(&mut a, false, dwell, s, p.camper) {
                            a.timer = s + 1;
                        }
                    } else if p_wander > 0.0 && self.moves.random::<f64>() < p_wander {
                        let dwell = self.scaled_minutes(2.0, 6.0);
                        self.start_trip(&mut a, false, dwell, s, p.camper);
                    }
                }
                Mode::Exiting => {
                    if s >= a.timer {
                        let gate = a.zone as usize;
                        self.leave_zone(&mut a);
                        if a.out && !leaving {
                            // Back in after a while, through their own gate.
                            a.mode = Mode::Waiting;
                            a.timer = s + self.scaled_minutes(4.0, 20.0);
                        } else {
                            a.mode = Mode::Gone;
                            a.timer = NEVER;
                        }
                        a.out = false;
                        self.scan(gate, start_ms, end_ms, Direction::Out, person);
                    }
                }
            }
            self.agents[i] = a;
        }
    }

    /// Someone's time in the hub is up: go where `a.after` says.
    fn hub_exit(&mut self, a: &mut Agent, p: &Person, s: u32, phase: &Phase) {
        let plan = self.plan;
        match a.after {
            After::Dest => {
                self.go(a, a.dest as usize);
                a.mode = Mode::AtDest;
                a.timer = NEVER;
            }
            After::Amenity => {
                let w: Vec<f64> = plan
                    .amenities
                    .iter()
                    .map(|&z| f64::from(plan.model.zones[z].capacity))
                    .collect();
                let amenity = plan.amenities.get(weighted(&mut self.moves, &w)).copied();
                let dwell = if phase.kind == PhaseKind::Break {
                    self.fraction_of(0.3, 0.55, phase.len())
                } else {
                    self.scaled_minutes(2.0, 7.0)
                };
                if amenity.is_some_and(|z| self.go(a, z)) {
                    a.mode = Mode::Amenity;
                    a.timer = s + dwell;
                } else {
                    // Amenity full: skip it.
                    self.go(a, a.dest as usize);
                    a.mode = Mode::AtDest;
                    a.timer = NEVER;
                }
            }
            After::Gate => {
                let gate = if self.moves.random::<f64>() < 0.7 {
                    p.gate as usize
                } else {
                    plan.gates[self.moves.random_range(0..plan.gates.len())]
                };
                if self.go(a, gate) {
                    a.mode = Mode::Exiting;
                    a.timer = s + self.moves.random_range(1..=2);
                } else {
                    a.timer = s + 1;
                }
            }
            After::Camp => {
                if let Some(camp) = plan.camp {
                    self.go(a, camp);
                }
                a.mode = Mode::Camp;
                a.timer = NEVER;
            }
        }
    }

    /// At the start of a break: pick everyone's next destination and schedule
    /// the break trips of those at their destination.
    fn break_starts(&mut self, pi: usize, s: u32) {
        let plan = self.plan;
        let len = plan.phases[pi].len();
        let next = plan.next_show(pi);
        for i in 0..self.agents.len() {
            let mut a = self.agents[i];
            if a.mode == Mode::Gone {
                continue;
            }
            let seat = plan.people[i].seat;
            a.dest = plan.choose_dest(&mut self.moves, next, seat);
            if a.mode == Mode::AtDest {
                let must_move = a.dest != a.zone;
                if must_move || self.moves.random::<f64>() < plan.model.p_break_trip {
                    a.timer = s + ((uniform(&mut self.moves, 0.0, 0.25) * f64::from(len)) as u32);
                }
            }
            self.agents[i] = a;
        }
    }

    fn update_air(&mut self, dt_ms: i64) {
        let dt = dt_ms as f64 / 1000.0;
        let k = 1.0 - (-dt / self.plan.tau_s).exp();
        let kt = 1.0 - (-dt / (1.5 * self.plan.tau_s)).exp();
        for (z, air) in self.air.iter_mut().enumerate() {
            let spec = &self.plan.model.zones[z];
            let load = (f64::from(self.occ[z]) / f64::from(spec.capacity.max(1))).min(2.0);
            let (co2, temp) = if self.plan.model.indoor[z] {
                (420.0 + 1300.0 * load, 20.0 + 6.0 * load)
            } else {
                (420.0 + 120.0 * load, 18.0 + 1.5 * load)
            };
            air.co2 += (co2 - air.co2) * k;
            air.temp += (temp - air.temp) * kt;
        }
    }

    fn update_stages(&mut self, s: u32, start_ms: i64) {
        let plan = self.plan;
        let phase = &plan.phases[plan.phase_index(s)];
        let show_s = f64::from(phase.len()) * STEP_MS as f64 / 1000.0;
        let rel0 = start_ms - plan.start_ms;
        for stage in &mut self.stages {
            for k in 0..10 {
                let t = rel0 + k as i64 * 1000;
                stage.now[k] = match phase.kind {
                    PhaseKind::Ingress | PhaseKind::Break => Scene::Background,
                    PhaseKind::Egress => Scene::Quiet,
                    PhaseKind::Show => {
                        let showing =
                            matches!(stage.scene, Scene::Music | Scene::Applause | Scene::Speech);
                        if !showing || t >= stage.until_ms {
                            next_scene(stage, plan.model.program, showing, t, show_s);
                        }
                        stage.scene
                    }
                };
                if phase.kind != PhaseKind::Show {
                    stage.scene = stage.now[k];
                }
            }
        }
    }

    fn sense(&mut self, s: u32, start_ms: i64, end_ms: i64) {
        let plan = self.plan;
        let phase = plan.phases[plan.phase_index(s)].kind;
        for z in 0..plan.model.zones.len() {
            if !self.mask[z] {
                continue;
            }
            let spec = &plan.model.zones[z];
            let n = f64::from(self.occ[z]);
            let fill = n / f64::from(spec.capacity.max(1));
            if spec.role != ZoneRole::Gate {
                while let Some(ts) = self.cams[z].fire(&mut self.sensors[z], end_ms) {
                    let r = &mut self.sensors[z];
                    let f = normal(r, 1.0 - 0.05 * fill.min(1.0), 0.03);
                    let count = (n * f + normal(r, 0.0, 1.0)).round().clamp(0.0, 100_000.0) as u32;
                    self.push(ts, z, Sensor::Cam, Payload::Occupancy { count });
                }
            }
            while let Some(ts) = self.envs[z].fire(&mut self.sensors[z], end_ms) {
                let r = &mut self.sensors[z];
                let co2_ppm = normal(r, self.air[z].co2, 12.0)
                    .round()
                    .clamp(300.0, 9_999.0);
                let temperature_c = (normal(r, self.air[z].temp, 0.1) * 100.0).round() / 100.0;
                self.push(
                    ts,
                    z,
                    Sensor::Env,
                    Payload::Environment {
                        co2_ppm,
                        temperature_c,
                    },
                );
            }
            while let Some(ts) = self.mics[z].fire(&mut self.sensors[z], end_ms) {
                let k = ((ts - start_ms) / 1000).clamp(0, 9) as usize;
                let payload = self.audio_frame(z, k, n, fill, phase);
                self.push(ts, z, Sensor::Mic, payload);
            }
        }
        let app_boost = if phase == PhaseKind::Break { 3.0 } else { 1.0 };
        for i in 0..self.agents.len() {
            let zone = self.agents[i].zone;
            if zone == OUTSIDE || !self.mask[zone as usize] {
                continue;
            }
            let z = zone as usize;
            let person = &plan.people[i];
            if let Some(d) = &person.device {
                let r = &mut self.sensors[z];
                if r.random::<f64>() < d.p_probe {
                    let ts = r.random_range(start_ms..end_ms);
                    let ap = r.random_range(0..plan.sensors[z].aps.len()) as u8;
                    let rssi_dbm = normal(r, -68.0, 9.0).round().clamp(-100.0, -30.0) as i32;
                    self.push(
                        ts,
                        z,
                        Sensor::Ap(ap),
                        Payload::Probe {
                            person: i as u32,
                            rssi_dbm,
                        },
                    );
                }
            }
            if person.app.is_some() {
                let role = plan.model.zones[z].role;
                let role_boost = if matches!(role, ZoneRole::Amenity | ZoneRole::Gate) {
                    2.0
                } else {
                    1.0
                };
                let p = STEP_MS as f64 / 300_000.0 * app_boost * role_boost;
                let r = &mut self.sensors[z];
                if r.random::<f64>() < p {
                    let ts = r.random_range(start_ms..end_ms);
                    let actions = actions(role, plan.model.program);
                    let action = actions[r.random_range(0..actions.len())];
                    self.push(
                        ts,
                        z,
                        Sensor::App,
                        Payload::App {
                            person: i as u32,
                            action,
                        },
                    );
                }
            }
        }
    }

    fn audio_frame(&mut self, z: usize, k: usize, n: f64, fill: f64, phase: PhaseKind) -> Payload {
        let plan = self.plan;
        let talks = plan.model.program == Program::Talks;
        let r = &mut self.sensors[z];
        let crowd = 45.0 + 10.0 * (1.0 + n).log10() + normal(r, 0.0, 1.5);
        let crowd_bands = if n < 1.0 { HVAC } else { CROWD };
        // The stage this zone hears: its own, or stage 0 bleeding into the hub.
        let (stage_scene, bleed) = match plan.model.stage_of[z] {
            Some(st) => (self.stages[st].now[k], 0.0),
            None if phase == PhaseKind::Show && plan.model.zones[z].role != ZoneRole::Gate => {
                (self.stages.first().map_or(Scene::Quiet, |s| s.now[k]), 24.0)
            }
            None => (Scene::Quiet, 0.0),
        };
        let bleeding = bleed > 0.0;
        let (stage_db, stage_bands, peak_lo, peak_hi, clip) = match stage_scene {
            Scene::Quiet => (0.0, HVAC, 6.0, 10.0, false),
            Scene::Background => (normal(r, 72.0, 1.5), MUSIC, 4.0, 8.0, false),
            Scene::Music if talks => (normal(r, 70.0, 2.0), MUSIC, 5.0, 9.0, false),
            Scene::Music => (normal(r, 97.0, 2.0), MUSIC, 6.0, 12.0, true),
            Scene::Applause if n < 1.0 && !bleeding => (0.0, HVAC, 6.0, 10.0, false),
            Scene::Applause => (
                80.0 + 26.0 * fill.min(1.0).sqrt() + normal(r, 0.0, 2.0),
                APPLAUSE,
                8.0,
                16.0,
                true,
            ),
            Scene::Speech if talks => (normal(r, 72.0, 2.5), SPEECH, 8.0, 14.0, false),
            Scene::Speech => (normal(r, 86.0, 2.0), SPEECH, 8.0, 14.0, false),
        };
        let stage_db = if stage_db > 0.0 {
            stage_db - bleed
        } else {
            0.0
        };
        let level = 10.0 * (10f64.powf(crowd / 10.0) + 10f64.powf(stage_db / 10.0)).log10();
        let (profile, lo, hi) = if stage_db > crowd {
            (stage_bands, peak_lo, peak_hi)
        } else {
            (crowd_bands, 6.0, 10.0)
        };
        let mut peak = level + uniform(r, lo, hi);
        if clip && !bleeding && r.random::<f64>() < 0.004 {
            peak = uniform(r, 121.0, 129.0);
        }
        let mut bands = [0.0; AUDIO_BANDS];
        for (b, p) in bands.iter_mut().zip(profile) {
            *b = (p * normal(r, 1.0, 0.1)).max(0.001);
        }
        let total: f64 = bands.iter().sum();
        for b in &mut bands {
            *b = ((*b / total) * 1000.0).round() / 1000.0;
        }
        let level_db = round1(level.clamp(0.0, 160.0));
        Payload::Audio {
            level_db,
            peak_db: round1(peak.clamp(level_db, 180.0)),
            bands,
        }
    }
}

/// Advances a stage's program at relative time `t` (ms).
fn next_scene(stage: &mut Stage, program: Program, showing: bool, t: i64, show_s: f64) {
    let r = &mut stage.rng;
    let secs = |x: f64| (x * 1000.0) as i64;
    let (scene, len_s) = match (program, showing, stage.scene) {
        (Program::Concert, false, _) => (Scene::Applause, uniform(r, 10.0, 20.0)),
        (Program::Concert, true, Scene::Music) => (Scene::Applause, uniform(r, 6.0, 15.0)),
        (Program::Concert, true, Scene::Applause) if r.random::<f64>() < 0.3 => {
            (Scene::Speech, uniform(r, 8.0, 25.0))
        }
        (Program::Concert, true, _) => {
            let song = (show_s / 8.0).clamp(45.0, 240.0);
            (Scene::Music, uniform(r, 0.6, 1.4) * song)
        }
        (Program::Talks, true, Scene::Speech) => (Scene::Applause, uniform(r, 5.0, 12.0)),
        (Program::Talks, _, _) => {
            let talk = (show_s / 3.0).clamp(120.0, 1500.0);
            (Scene::Speech, uniform(r, 0.7, 1.3) * talk)
        }
    };
    stage.scene = scene;
    stage.until_ms = t + secs(len_s);
}

fn actions(role: ZoneRole, program: Program) -> &'static [&'static str] {
    match (role, program) {
        (ZoneRole::Gate, _) => &["show_ticket", "open_map"],
        (ZoneRole::Hub, _) => &["open_map", "view_menu", "order_food", "check_schedule"],
        (ZoneRole::Amenity, _) => &["view_merch", "purchase", "order_food", "view_menu"],
        (ZoneRole::Destination, Program::Concert) => {
            &["vote_setlist", "share_photo", "view_lyrics"]
        }
        (ZoneRole::Destination, Program::Talks) => {
            &["rate_talk", "ask_question", "download_slides"]
        }
        (ZoneRole::Camp, _) => &["check_schedule", "report_issue", "open_map"],
    }
}

/// One synthetic audio frame with the label of what produced it, drawn with
/// the same level and band model as the microphones (scene, crowd size,
/// bleed from a distant stage), for training the on-device classifier.
/// Label indices: 0 applause, 1 music (incl. background PA), 2 speech,
/// 3 crowd noise (the crowd or room is louder than any stage), 4 clipping
/// (peak >= 120 dB). Clipping is oversampled (1 in 4 frames that can clip)
/// so the classifier sees enough of it.
pub(crate) fn labelled_audio_frame(r: &mut ChaCha8Rng) -> (f64, f64, [f64; AUDIO_BANDS], usize) {
    let n = if r.random::<f64>() < 0.1 {
        0.0
    } else {
        (10f64.powf(uniform(r, 0.0, 3.8)) - 1.0).round()
    };
    let fill = uniform(r, 0.0, 1.0);
    let talks = r.random::<f64>() < 0.3;
    let bleed = if r.random::<f64>() < 0.2 { 24.0 } else { 0.0 };
    let scene = [
        Scene::Quiet,
        Scene::Background,
        Scene::Music,
        Scene::Applause,
        Scene::Speech,
    ][r.random_range(0..5)];
    let crowd = 45.0 + 10.0 * (1.0 + n).log10() + normal(r, 0.0, 1.5);
    let crowd_bands = if n < 1.0 { HVAC } else { CROWD };
    let bleeding = bleed > 0.0;
    let (stage_db, stage_bands, peak_lo, peak_hi, clip) = match scene {
        Scene::Quiet => (0.0, HVAC, 6.0, 10.0, false),
        Scene::Background => (normal(r, 72.0, 1.5), MUSIC, 4.0, 8.0, false),
        Scene::Music if talks => (normal(r, 70.0, 2.0), MUSIC, 5.0, 9.0, false),
        Scene::Music => (normal(r, 97.0, 2.0), MUSIC, 6.0, 12.0, true),
        Scene::Applause if n < 1.0 && !bleeding => (0.0, HVAC, 6.0, 10.0, false),
        Scene::Applause => (
            80.0 + 26.0 * fill.sqrt() + normal(r, 0.0, 2.0),
            APPLAUSE,
            8.0,
            16.0,
            true,
        ),
        Scene::Speech if talks => (normal(r, 72.0, 2.5), SPEECH, 8.0, 14.0, false),
        Scene::Speech => (normal(r, 86.0, 2.0), SPEECH, 8.0, 14.0, false),
    };
    let stage_db = if stage_db > 0.0 {
        stage_db - bleed
    } else {
        0.0
    };
    let level = 10.0 * (10f64.powf(crowd / 10.0) + 10f64.powf(stage_db / 10.0)).log10();
    let stage_wins = stage_db > crowd;
    let (profile, lo, hi) = if stage_wins {
        (stage_bands, peak_lo, peak_hi)
    } else {
        (crowd_bands, 6.0, 10.0)
    };
    let mut peak = level + uniform(r, lo, hi);
    let clipped = clip && !bleeding && r.random::<f64>() < 0.25;
    if clipped {
        peak = uniform(r, 121.0, 129.0);
    }
    let mut bands = [0.0; AUDIO_BANDS];
    for (b, p) in bands.iter_mut().zip(profile) {
        *b = (p * normal(r, 1.0, 0.1)).max(0.001);
    }
    let total: f64 = bands.iter().sum();
    for b in &mut bands {
        *b = ((*b / total) * 1000.0).round() / 1000.0;
    }
    let level_db = round1(level.clamp(0.0, 160.0));
    let peak_db = round1(peak.clamp(level_db, 180.0));
    let label = if peak_db >= 120.0 {
        4
    } else if !stage_wins {
        3
    } else {
        match scene {
            Scene::Applause => 0,
            Scene::Music | Scene::Background => 1,
            Scene::Speech => 2,
            Scene::Quiet => 3,
        }
    };
    (level_db, peak_db, bands, label)
}
