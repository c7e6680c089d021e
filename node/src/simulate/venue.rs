//! Static venue layouts: zones, phases of the event and behaviour parameters.
//!
//! Everything here is data; [`super::engine`] turns it into movement.

use super::{VenueKind, ZoneRole, ZoneSpec};

/// What happens during a phase of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PhaseKind {
    /// Doors are open, people arrive through the gates.
    Ingress,
    /// A performance (or talks): people sit at their destination.
    Show,
    /// Intermission, changeover or coffee/lunch break.
    Break,
    /// The event is over: people leave (campers go back to the campsite).
    Egress,
}

/// Where people go during a show phase.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DestRule {
    /// Each attendee's own seat (drawn once, weighted by seating capacity).
    Seat,
    /// Choose among destination zones with these weights (zone name, weight).
    Choose(&'static [(&'static str, f64)]),
}

/// One phase of the timeline; `share` is its fraction of the whole duration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PhaseSpec {
    pub name: &'static str,
    pub kind: PhaseKind,
    pub share: f64,
    /// Destination rule while this phase is a show (ignored otherwise).
    pub dest: DestRule,
}

/// What is played on a stage during shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Program {
    /// Songs separated by applause and the odd announcement.
    Concert,
    /// Talks with applause at the end and Q&A speech.
    Talks,
}

/// A venue model: layout, timeline and behaviour parameters.
#[derive(Debug, Clone)]
pub(crate) struct VenueModel {
    pub zones: Vec<ZoneSpec>,
    /// For each zone, the stage it hears (destination zones only).
    pub stage_of: Vec<Option<usize>>,
    /// Whether a zone is indoors (CO2 builds up) or open air.
    pub indoor: Vec<bool>,
    pub stages: usize,
    pub phases: Vec<PhaseSpec>,
    pub program: Program,
    pub default_attendees: u32,
    /// Duration the behaviour times below are calibrated for, seconds.
    pub nominal_s: f64,
    /// Probability a person at their destination leaves it during a break.
    pub p_break_trip: f64,
    /// Probability a trip (break or wander) includes an amenity.
    pub p_amenity_trip: f64,
    /// Probability a new arrival visits an amenity before their destination.
    pub p_amenity_arrival: f64,
    /// Expected wander trips per person per show phase.
    pub wander_per_show: f64,
    /// Fraction leaving early, during the last show.
    pub early_leave: f64,
    /// Fraction camping on site (they end the event at the campsite).
    pub campers: f64,
    /// Fraction arriving late, during the first show.
    pub late_arrivals: f64,
    /// Fraction who leave the venue during the event and come back (same
    /// ticket, same track): smokers, a trip to the car, lunch outside.
    pub reentry: f64,
    /// Of those, the fraction who go out and come back a second time.
    pub second_reentry: f64,
}

const fn z(name: &'static str, capacity: u32, role: ZoneRole, index: usize) -> ZoneSpec {
    ZoneSpec {
        name,
        capacity,
        role,
        index,
    }
}

const SEAT: DestRule = DestRule::Seat;

pub(crate) fn model(kind: VenueKind) -> VenueModel {
    use PhaseKind::{Break, Egress, Ingress, Show};
    use ZoneRole::{Amenity, Camp, Destination, Gate, Hub};
    match kind {
        VenueKind::Arena => VenueModel {
            zones: vec![
                z("gate-a", 400, Gate, 0),
                z("gate-b", 400, Gate, 1),
                z("gate-c", 300, Gate, 2),
                z("concourse", 4000, Hub, 3),
                z("merch", 600, Amenity, 4),
                z("floor", 4000, Destination, 5),
                z("stands-lower", 5000, Destination, 6),
                z("stands-upper", 4000, Destination, 7),
            ],
            // One show: every seating zone hears stage 0.
            stage_of: vec![None, None, None, None, None, Some(0), Some(0), Some(0)],
            indoor: vec![false, false, false, true, true, true, true, true],
            stages: 1,
            phases: vec![
                ph("doors", Ingress, 0.25, SEAT),
                ph("first-half", Show, 0.27, SEAT),
                ph("intermission", Break, 0.10, SEAT),
                ph("second-half", Show, 0.25, SEAT),
                ph("egress", Egress, 0.13, SEAT),
            ],
            program: Program::Concert,
            default_attendees: 12_000,
            nominal_s: 2.0 * 3600.0,
            p_break_trip: 0.6,
            p_amenity_trip: 0.35,
            p_amenity_arrival: 0.12,
            wander_per_show: 0.25,
            early_leave: 0.05,
            campers: 0.0,
            late_arrivals: 0.05,
            reentry: 0.06,
            second_reentry: 0.15,
        },
        VenueKind::Festival => VenueModel {
            zones: vec![
                z("gate-north", 600, Gate, 0),
                z("gate-south", 600, Gate, 1),
                z("campsite", 9000, Camp, 2),
                z("promenade", 9000, Hub, 3),
                z("food-court", 3000, Amenity, 4),
                z("market", 1500, Amenity, 5),
                z("main-stage", 20_000, Destination, 6),
                z("second-stage", 8000, Destination, 7),
                z("dance-tent", 4000, Destination, 8),
            ],
            stage_of: vec![
                None,
                None,
                None,
                None,
                None,
                None,
                Some(0),
                Some(1),
                Some(2),
            ],
            indoor: vec![false, false, false, false, false, false, false, false, true],
            stages: 3,
            phases: vec![
                ph("gates-open", Ingress, 0.15, SEAT),
                ph("afternoon-sets", Show, 0.20, SET_1),
                ph("changeover-1", Break, 0.07, SEAT),
                ph("evening-sets", Show, 0.20, SET_2),
                ph("changeover-2", Break, 0.07, SEAT),
                ph("headliner", Show, 0.20, HEADLINER),
                ph("close", Egress, 0.11, SEAT),
            ],
            program: Program::Concert,
            default_attendees: 25_000,
            nominal_s: 10.0 * 3600.0,
            p_break_trip: 0.7,
            p_amenity_trip: 0.5,
            p_amenity_arrival: 0.2,
            wander_per_show: 0.6,
            early_leave: 0.08,
            campers: 0.3,
            late_arrivals: 0.1,
            reentry: 0.25,
            second_reentry: 0.3,
        },
        VenueKind::Conference => VenueModel {
            zones: vec![
                z("registration-a", 150, Gate, 0),
                z("registration-b", 150, Gate, 1),
                z("hall", 1500, Hub, 2),
                z("cafe", 600, Amenity, 3),
                z("auditorium", 2500, Destination, 4),
                z("room-1", 600, Destination, 5),
                z("room-2", 600, Destination, 6),
                z("room-3", 400, Destination, 7),
            ],
            stage_of: vec![None, None, None, None, Some(0), Some(1), Some(2), Some(3)],
            indoor: vec![true; 8],
            stages: 4,
            phases: vec![
                ph("registration", Ingress, 0.12, SEAT),
                ph("keynote", Show, 0.13, KEYNOTE),
                ph("coffee", Break, 0.06, SEAT),
                ph("morning-sessions", Show, 0.22, SESSIONS),
                ph("lunch", Break, 0.12, SEAT),
                ph("afternoon-sessions", Show, 0.22, SESSIONS),
                ph("wrap-up", Egress, 0.13, SEAT),
            ],
            program: Program::Talks,
            default_attendees: 2_200,
            nominal_s: 8.0 * 3600.0,
            p_break_trip: 0.85,
            p_amenity_trip: 0.6,
            p_amenity_arrival: 0.3,
            wander_per_show: 0.15,
            early_leave: 0.2,
            campers: 0.0,
            late_arrivals: 0.12,
            reentry: 0.3,
            second_reentry: 0.2,
        },
    }
}

const SET_1: DestRule = DestRule::Choose(&[
    ("main-stage", 0.45),
    ("second-stage", 0.35),
    ("dance-tent", 0.2),
]);
const SET_2: DestRule = DestRule::Choose(&[
    ("main-stage", 0.4),
    ("second-stage", 0.3),
    ("dance-tent", 0.3),
]);
const HEADLINER: DestRule = DestRule::Choose(&[
    ("main-stage", 0.75),
    ("second-stage", 0.1),
    ("dance-tent", 0.15),
]);
const KEYNOTE: DestRule = DestRule::Choose(&[("auditorium", 1.0)]);
const SESSIONS: DestRule = DestRule::Choose(&[
    ("auditorium", 0.4),
    ("room-1", 0.22),
    ("room-2", 0.22),
    ("room-3", 0.16),
]);

const fn ph(name: &'static str, kind: PhaseKind, share: f64, dest: DestRule) -> PhaseSpec {
    PhaseSpec {
        name,
        kind,
        share,
        dest,
    }
}
