//! Contribution bounding, applied per window before aggregation: each
//! pseudonym may add at most `max_events_per_window` events and touch at most
//! `max_zones` distinct zones. Excess events are dropped (and counted), which
//! is what makes the mechanisms' declared sensitivities true.
//!
//! Never keyed by a raw identifier: only by [`Pseudonym`].

use std::{collections::HashMap, hash::Hash};

use crate::{PrivacyError, pseudonym::Pseudonym};

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

#[derive(Debug)]
struct Seen<Z> {
    events: u32,
    zones: Vec<Z>,
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
    seen: HashMap<Pseudonym, Seen<Z>>,
    stats: BoundingStats,
}

impl<Z: Eq + Hash + Clone> ContributionBounder<Z> {
    /// An empty window.
    pub fn new(limits: ContributionLimits) -> Self {
        Self {
            limits,
            seen: HashMap::new(),
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
        let seen = self.seen.entry(*who).or_insert_with(|| Seen {
            events: 0,
            zones: Vec::new(),
        });
        let admission = if seen.events >= self.limits.max_events_per_window {
            Admission::DroppedEventCap
        } else if !seen.zones.contains(zone) {
            if seen.zones.len() >= self.limits.max_zones as usize {
                Admission::DroppedZoneCap
            } else {
                seen.zones.push(zone.clone());
                seen.events += 1;
                Admission::Admitted
            }
        } else {
            seen.events += 1;
            Admission::Admitted
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
