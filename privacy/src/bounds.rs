//! Contribution bounding, applied per window before aggregation: each
//! pseudonym may add at most `max_events_per_window` events and touch at most
//! `max_zones` distinct zones. Excess events are dropped (and counted), which
//! is what makes the mechanisms' declared sensitivities true.
//!
//! Never keyed by a raw identifier: only by [`Pseudonym`].

use std::{collections::hash_map::Entry, hash::Hash};

use crate::{
    PrivacyError,
    pseudonym::{Pseudonym, PseudonymMap},
};

/// Per-window contribution limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContributionLimits {
    max_events_per_window: u32,
    max_zones: u32,
}

impl ContributionLimits {
    /// Both limits must be >= 1.
    pub fn new(max_events_per_window: u32, max_zones: u32) -> Result<Self, PrivacyError> {
        if max_events_per_window == 0 || max_zones == 0 {
            return Err(PrivacyError::InvalidParameter {
                name: "contribution limits",
                reason: "max_events_per_window and max_zones must be >= 1".into(),
            });
        }
        Ok(Self {
            max_events_per_window,
            max_zones,
        })
    }
    /// Most events one pseudonym adds per window.
    pub fn max_events_per_window(&self) -> u32 {
        self.max_events_per_window
    }
    /// Most distinct zones one pseudonym touches per window.
    pub fn max_zones(&self) -> u32 {
        self.max_zones
    }
}

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Counted.
    Admitted,
    /// Dropped: the pseudonym already added `max_events_per_window` events.
    DroppedEventCap,
    /// Dropped: the event is in a new zone and the pseudonym already touched
    /// `max_zones` zones.
    DroppedZoneCap,
}

/// Counts of a window's admissions and drops (safe to export as metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BoundingStats {
    /// Events admitted.
    pub admitted: u64,
    /// Events dropped by the per-window event cap.
    pub dropped_event_cap: u64,
    /// Events dropped by the zone cap.
    pub dropped_zone_cap: u64,
}

impl BoundingStats {
    /// All dropped events.
    pub fn dropped(&self) -> u64 {
        self.dropped_event_cap + self.dropped_zone_cap
    }
}

/// What one pseudonym added to the window so far.
#[derive(Debug)]
struct Seen<Z> {
    /// Events admitted.
    events: u32,
    /// The first zone it touched (held inline: most pseudonyms touch one
    /// zone per window, and then need no allocation).
    first_zone: Z,
    /// Further zones it touched.
    more_zones: Vec<Z>,
}

impl<Z: PartialEq> Seen<Z> {
    fn touched(&self, zone: &Z) -> bool {
        self.first_zone == *zone || self.more_zones.contains(zone)
    }

    fn zones(&self) -> usize {
        1 + self.more_zones.len()
    }
}

/// Enforces [`ContributionLimits`] over one window at a time.
///
/// With these limits, one pseudonym changes a window's per-zone count
/// vector by at most `max_events_per_window` in L1, touches at most
/// `max_zones` zones (L0), and adds at most `max_events_per_window` to any
/// one zone (L-infinity): the sensitivities the mechanisms are calibrated to.
#[derive(Debug)]
pub struct ContributionBounder<Z> {
    limits: ContributionLimits,
    seen: PseudonymMap<Seen<Z>>,
    stats: BoundingStats,
}

impl<Z: Eq + Hash + Clone> ContributionBounder<Z> {
    /// An empty window.
    pub fn new(limits: ContributionLimits) -> Self {
        Self {
            limits,
            seen: PseudonymMap::default(),
            stats: BoundingStats::default(),
        }
    }
    /// The limits enforced.
    pub fn limits(&self) -> ContributionLimits {
        self.limits
    }

    /// Decides one event of `who` in `zone`. Admitted events count against
    /// the pseudonym's limits; dropped ones do not.
    pub fn admit(&mut self, who: &Pseudonym, zone: &Z) -> Admission {
        let admission = match self.seen.entry(*who) {
            // Both limits are >= 1: a first event is always admitted.
            Entry::Vacant(v) => {
                v.insert(Seen {
                    events: 1,
                    first_zone: zone.clone(),
                    more_zones: Vec::new(),
                });
                Admission::Admitted
            }
            Entry::Occupied(o) => {
                let seen = o.into_mut();
                if seen.events >= self.limits.max_events_per_window {
                    Admission::DroppedEventCap
                } else if !seen.touched(zone) {
                    if seen.zones() >= self.limits.max_zones as usize {
                        Admission::DroppedZoneCap
                    } else {
                        seen.more_zones.push(zone.clone());
                        seen.events += 1;
                        Admission::Admitted
                    }
                } else {
                    seen.events += 1;
                    Admission::Admitted
                }
            }
        };
        match admission {
            Admission::Admitted => self.stats.admitted += 1,
            Admission::DroppedEventCap => self.stats.dropped_event_cap += 1,
            Admission::DroppedZoneCap => self.stats.dropped_zone_cap += 1,
        }
        admission
    }

    /// This window's counts so far.
    pub fn stats(&self) -> BoundingStats {
        self.stats
    }
    /// Distinct pseudonyms seen this window.
    pub fn contributors(&self) -> usize {
        self.seen.len()
    }

    /// Closes the window: forgets every pseudonym and returns the window's
    /// counts.
    pub fn start_window(&mut self) -> BoundingStats {
        self.seen.clear();
        std::mem::take(&mut self.stats)
    }
}

#[cfg(test)]
mod tests;
