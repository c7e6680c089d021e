//! Contribution bounds per privacy unit and event day: what makes the
//! attendee-day sensitivities of the continual streams true.
//!
//! A unit is the keyed pseudonym of one identifier of one kind: a camera
//! track (occupancy), a device (devices present), an app subject (app users
//! present) or a ticket (gate ingress / egress). Per unit and event day the
//! node counts at most
//! - `V` zone entries in total and `K` into any one zone (presence kinds);
//!   per zone a unit's counted events alternate entry, exit, entry, ...
//!   starting with an entry, so every zone's increments from one unit are an
//!   alternating +1/-1 sequence with at most 2V nonzero steps across zones
//!   (`veil_privacy::policy::StreamShape::Presence`);
//! - `G` gate passes per direction (`StreamShape::Cumulative`).
//!
//! What exceeds a bound is dropped and counted ([`UnitStats`]); an exit from
//! a zone whose entry was not counted (dropped by a bound, or missed by the
//! camera) is dropped too, so counted occupancy never goes below zero for a
//! unit. Nothing here sees or keeps an identifier: only pseudonyms, which
//! never leave the node. The state is small per unit and is persisted with
//! each window's releases ([`DayBounds::encode_unit`]) so a restart within the
//! day keeps enforcing the same bounds.

use smallvec::SmallVec;
use veil_privacy::pseudonym::{Pseudonym, PseudonymMap};

/// One unit's state as stored (see [`DayBounds::take_dirty`]); a unit of
/// one or two zones (almost every unit) fits inline, without an allocation.
pub type EncodedUnit = SmallVec<[u8; 32]>;

/// A changed unit for the durable store: its family, pseudonym bytes and
/// encoded state.
pub type UnitRecord = (Family, [u8; 32], EncodedUnit);

/// The bounds, from the policy's `[privacy_unit]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitLimits {
    /// V: zone entries per unit and day (presence kinds).
    pub max_zone_visits: u16,
    /// K: entries into one zone per unit and day.
    pub max_visits_per_zone: u16,
    /// G: gate passes per unit, day and direction.
    pub max_gate_passes: u16,
}

impl UnitLimits {
    /// The policy's bounds (refusing values the policy validation would).
    pub fn from_policy(u: &veil_privacy::policy::PrivacyUnitPolicy) -> Self {
        let clamp = |v: u32| u16::try_from(v.clamp(1, 1000)).unwrap_or(1000);
        Self {
            max_zone_visits: clamp(u.max_zone_visits),
            max_visits_per_zone: clamp(u.max_visits_per_zone),
            max_gate_passes: clamp(u.max_gate_passes),
        }
    }
}

/// The kinds of units, one bound table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// Camera tracks: occupancy from line crossings.
    Tracks = 0,
    /// Wi-Fi/BLE devices: devices present.
    Devices = 1,
    /// Consented app subjects: app users present.
    AppUsers = 2,
    /// Tickets: gate ingress and egress.
    Tickets = 3,
}

impl Family {
    /// Every family, in storage order.
    pub const ALL: [Family; 4] = [
        Family::Tracks,
        Family::Devices,
        Family::AppUsers,
        Family::Tickets,
    ];
    /// Its number in storage.
    pub fn code(self) -> u8 {
        self as u8
    }
    /// The family with this storage number.
    pub fn from_code(c: u8) -> Option<Self> {
        Self::ALL.get(usize::from(c)).copied()
    }
}

/// What a bound decided about one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counted: the zone's increment changes by one.
    Counted,
    /// Nothing to count (a unit already present seen again).
    Unchanged,
    /// Dropped by a contribution bound.
    Bounded,
    /// An exit whose entry was not counted: dropped.
    Unmatched,
}

/// Counts of what the bounds did (safe to export: no unit appears).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnitStats {
    /// Events counted.
    pub counted: u64,
    /// Events dropped by a bound (V, K or G).
    pub bounded: u64,
    /// Exits without a counted entry.
    pub unmatched: u64,
}

impl UnitStats {
    /// Share of bounded events among counted + bounded.
    pub fn bounded_share(&self) -> f64 {
        let all = self.counted + self.bounded;
        if all == 0 {
            0.0
        } else {
            self.bounded as f64 / all as f64
        }
    }

    fn note(&mut self, o: Outcome) -> Outcome {
        match o {
            Outcome::Counted => self.counted += 1,
            Outcome::Bounded => self.bounded += 1,
            Outcome::Unmatched => self.unmatched += 1,
            Outcome::Unchanged => {}
        }
        o
    }

    /// Adds `other`.
    pub fn add(&mut self, other: &UnitStats) {
        self.counted += other.counted;
        self.bounded += other.bounded;
        self.unmatched += other.unmatched;
    }
}

/// One unit's presence in one zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ZoneVisit {
    zone: u16,
    visits: u16,
    inside: bool,
    last_seen_ms: i64,
}

/// One unit's state for the day.
///
/// The first two zones a unit visits are held inline, so the usual unit
/// (one or two zones a day) costs one table slot and no allocation of its
/// own: the table is probed once per event, and a pointer to chase per
/// lookup would be a second cache miss on a table of a day's units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct UnitState {
    /// Zone entries counted (presence) or `in` passes (tickets).
    visits: u16,
    /// `out` passes (tickets).
    passes_out: u16,
    /// Changed since the last [`DayBounds::take_dirty`] (in-memory only).
    dirty: bool,
    /// The newest `last_seen_ms` already handed to the store (in-memory
    /// only; see [`DayBounds::with_seen_refresh`]).
    seen_saved_ms: i64,
    zones: SmallVec<[ZoneVisit; 2]>,
}

impl UnitState {
    fn zone(&mut self, zone: u16) -> Option<&mut ZoneVisit> {
        self.zones.iter_mut().find(|z| z.zone == zone)
    }
}

/// The bounds of one event day.
#[derive(Debug, Clone)]
pub struct DayBounds {
    limits: UnitLimits,
    units: [PseudonymMap<UnitState>; 4],
    /// Units whose `dirty` flag is set, in the order they changed.
    dirty: [Vec<Pseudonym>; 4],
    stats: [UnitStats; 4],
    /// See [`DayBounds::with_seen_refresh`]; 0: every sighting is stored.
    seen_refresh_ms: i64,
}

impl DayBounds {
    /// Empty bounds for a new day.
    pub fn new(limits: UnitLimits) -> Self {
        Self {
            limits,
            units: Default::default(),
            dirty: Default::default(),
            stats: Default::default(),
            seen_refresh_ms: 0,
        }
    }

    /// Stores a sighting that changes nothing but when a unit was last seen
    /// (a device still present) only once the stored time is `ms` old.
    ///
    /// Most sightings in a window are of units already inside; storing each
    /// of them re-encoded and rewrote every present unit every window. The
    /// counts the bounds rest on (visits, passes) are stored at once as
    /// before; only `last_seen` may be up to `ms` stale in the store. After a
    /// restart a unit can then expire up to `ms` early, and its next sighting
    /// is a new entry that spends one more of its V visits: the bounds only
    /// get stricter, never looser, so the guarantee is unchanged (the node
    /// uses a third of `privacy.presence_timeout`).
    pub fn with_seen_refresh(mut self, ms: i64) -> Self {
        self.seen_refresh_ms = ms.max(0);
        self
    }

    /// What the bounds did to `family`'s events.
    pub fn stats(&self, family: Family) -> UnitStats {
        self.stats[family as usize]
    }

    /// A presence unit enters `zone` (a tracked crossing into it, or the
    /// first sighting of a device or app user there).
    pub fn enter(&mut self, family: Family, unit: Pseudonym, zone: u16, ts_ms: i64) -> Outcome {
        self.enter_seen(family, unit, zone, ts_ms, ts_ms, 1)
    }

    /// `n` sightings of a presence unit in `zone` within one window, the
    /// first at `first_ms` and the last at `last_ms`: the same outcome and
    /// state as `n` calls of [`enter`](Self::enter) in time order with
    /// nothing else of this unit between them. Only the first sighting can
    /// count (every later one finds the unit inside, or bounded as before,
    /// since the counts it is bounded by only grow), the last one sets when
    /// the unit was last seen, and a bounded sighting is dropped `n` times.
    pub fn enter_seen(
        &mut self,
        family: Family,
        unit: Pseudonym,
        zone: u16,
        first_ms: i64,
        last_ms: i64,
        n: u64,
    ) -> Outcome {
        let f = family as usize;
        let limits = self.limits;
        let st = self.units[f].entry(unit).or_default();
        let outcome = match st.zones.iter().position(|z| z.zone == zone) {
            Some(i) if st.zones[i].inside => {
                let z = &mut st.zones[i];
                z.last_seen_ms = z.last_seen_ms.max(last_ms);
                Outcome::Unchanged
            }
            Some(i) => {
                if st.zones[i].visits >= limits.max_visits_per_zone
                    || st.visits >= limits.max_zone_visits
                {
                    Outcome::Bounded
                } else {
                    let z = &mut st.zones[i];
                    z.visits += 1;
                    z.inside = true;
                    z.last_seen_ms = first_ms.max(last_ms);
                    st.visits += 1;
                    Outcome::Counted
                }
            }
            None => {
                if st.visits >= limits.max_zone_visits {
                    Outcome::Bounded
                } else {
                    st.zones.push(ZoneVisit {
                        zone,
                        visits: 1,
                        inside: true,
                        last_seen_ms: first_ms.max(last_ms),
                    });
                    st.visits += 1;
                    Outcome::Counted
                }
            }
        };
        let store = match outcome {
            Outcome::Bounded => false,
            Outcome::Unchanged => {
                self.seen_refresh_ms == 0
                    || last_ms.saturating_sub(st.seen_saved_ms) >= self.seen_refresh_ms
            }
            _ => true,
        };
        if store && !st.dirty {
            st.dirty = true;
            self.dirty[f].push(unit);
        }
        if outcome == Outcome::Bounded {
            self.stats[f].bounded += n.saturating_sub(1);
        }
        self.stats[f].note(outcome)
    }

    /// A presence unit leaves `zone`: counted only if its entry was.
    pub fn exit(&mut self, family: Family, unit: Pseudonym, zone: u16) -> Outcome {
        let f = family as usize;
        let outcome = match self.units[f].get_mut(&unit) {
            Some(st) => match st.zone(zone) {
                Some(z) if z.inside => {
                    z.inside = false;
                    if !st.dirty {
                        st.dirty = true;
                        self.dirty[f].push(unit);
                    }
                    Outcome::Counted
                }
                _ => Outcome::Unmatched,
            },
            None => Outcome::Unmatched,
        };
        self.stats[f].note(outcome)
    }

    /// Ends the presence of every unit of `family` not seen in a zone since
    /// `before_ms` (exclusive): one counted exit each. Returns the exits per
    /// zone.
    pub fn expire(&mut self, family: Family, before_ms: i64) -> Vec<(u16, u64)> {
        let f = family as usize;
        let mut exits: Vec<(u16, u64)> = Vec::new();
        for (unit, st) in self.units[f].iter_mut() {
            let mut touched = false;
            for z in st
                .zones
                .iter_mut()
                .filter(|z| z.inside && z.last_seen_ms < before_ms)
            {
                z.inside = false;
                touched = true;
                match exits.iter_mut().find(|(zone, _)| *zone == z.zone) {
                    Some(e) => e.1 += 1,
                    None => exits.push((z.zone, 1)),
                }
            }
            if touched && !st.dirty {
                st.dirty = true;
                self.dirty[f].push(*unit);
            }
        }
        let n: u64 = exits.iter().map(|(_, n)| n).sum();
        self.stats[f].counted += n;
        exits.sort_unstable();
        exits
    }

    /// A ticket passes a gate (`inward` = an `in` scan).
    pub fn gate(&mut self, unit: Pseudonym, inward: bool) -> Outcome {
        let f = Family::Tickets as usize;
        let max = self.limits.max_gate_passes;
        let st = self.units[f].entry(unit).or_default();
        let passes = if inward { st.visits } else { st.passes_out };
        let outcome = if passes >= max {
            Outcome::Bounded
        } else {
            if inward {
                st.visits += 1;
            } else {
                st.passes_out += 1;
            }
            if !st.dirty {
                st.dirty = true;
                self.dirty[f].push(unit);
            }
            Outcome::Counted
        };
        self.stats[f].note(outcome)
    }

    /// Units changed since the last call, with their encoded state, for the
    /// durable store (written in the transaction of the window's releases).
    pub fn take_dirty(&mut self) -> Vec<UnitRecord> {
        let mut out = Vec::new();
        for family in Family::ALL {
            let f = family as usize;
            for unit in std::mem::take(&mut self.dirty[f]) {
                if let Some(st) = self.units[f].get_mut(&unit) {
                    st.dirty = false;
                    st.seen_saved_ms = newest_seen(st);
                    out.push((family, *unit.as_bytes(), encode(st)));
                }
            }
        }
        out
    }

    /// Restores one unit's state read back from the store (a restart within
    /// the day). Malformed records are refused.
    pub fn restore_unit(
        &mut self,
        family: Family,
        unit: Pseudonym,
        bytes: &[u8],
    ) -> Result<(), String> {
        let st = decode(bytes).ok_or("malformed unit record")?;
        self.units[family as usize].insert(unit, st);
        Ok(())
    }

    /// Units held, per family (for tests and status).
    pub fn units(&self, family: Family) -> usize {
        self.units[family as usize].len()
    }
}

/// `visits u16 | passes_out u16 | n u16 | n x (zone u16, visits u16, inside u8, last_seen i64)`, little endian.
fn encode(st: &UnitState) -> EncodedUnit {
    let mut b = EncodedUnit::with_capacity(6 + st.zones.len() * 13);
    b.extend_from_slice(&st.visits.to_le_bytes());
    b.extend_from_slice(&st.passes_out.to_le_bytes());
    let n = u16::try_from(st.zones.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&n.to_le_bytes());
    for z in st.zones.iter().take(usize::from(n)) {
        b.extend_from_slice(&z.zone.to_le_bytes());
        b.extend_from_slice(&z.visits.to_le_bytes());
        b.push(u8::from(z.inside));
        b.extend_from_slice(&z.last_seen_ms.to_le_bytes());
    }
    b
}

fn decode(b: &[u8]) -> Option<UnitState> {
    let u16_at = |i: usize| Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?));
    let visits = u16_at(0)?;
    let passes_out = u16_at(2)?;
    let n = usize::from(u16_at(4)?);
    if b.len() != 6 + n * 13 {
        return None;
    }
    let mut zones = SmallVec::with_capacity(n);
    for i in 0..n {
        let o = 6 + i * 13;
        let inside = match b[o + 4] {
            0 => false,
            1 => true,
            _ => return None,
        };
        zones.push(ZoneVisit {
            zone: u16_at(o)?,
            visits: u16_at(o + 2)?,
            inside,
            last_seen_ms: i64::from_le_bytes(b.get(o + 5..o + 13)?.try_into().ok()?),
        });
    }
    let mut st = UnitState {
        visits,
        passes_out,
        dirty: false,
        seen_saved_ms: 0,
        zones,
    };
    st.seen_saved_ms = newest_seen(&st);
    Some(st)
}

fn newest_seen(st: &UnitState) -> i64 {
    st.zones.iter().map(|z| z.last_seen_ms).max().unwrap_or(0)
}

#[cfg(test)]
mod tests;
