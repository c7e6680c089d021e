//! The population model and the sensors, stepped every 10 s: [`Engine`]
//! replays a [`Plan`] one step at a time and returns the step's sensor
//! events sorted by time.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ZoneRole;
use super::plan::{
    Crossing, NEVER, OUTSIDE, Payload, Pending, Person, Phase, Plan, STEP_MS, STREAM_MALFORMED,
    STREAM_MOVES, STREAM_SENSORS, STREAM_STAGE, STREAM_TRACKS, Sensor, line_zone, normal, rng,
    round1, uniform, weighted,
};
use super::venue::{PhaseKind, Program};
use crate::event::{AUDIO_BANDS, Direction};

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
