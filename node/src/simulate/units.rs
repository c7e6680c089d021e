//! What one attendee contributes over the simulated day: zone entries and
//! gate passes, to choose the attendee-day bounds V (zone visits), K
//! (visits to one zone) and G (gate passes per direction).
//!
//! Counted over every zone change of the model (the ones the cameras miss
//! too), so the shares of events above a bound are upper bounds of what a
//! node enforcing it drops. A zone *entry* is a crossing with a `to` zone
//! (arriving from outside into a gate counts); a gate pass `in` is a crossing
//! from outside (one `in` scan), `out` one to outside (one `out` scan).

use std::fmt;

use super::engine::Engine;
use super::plan::Plan;

/// How many units contribute how many events: `counts()[n]` units
/// contributed exactly `n` events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
}

impl Histogram {
    fn from_values(values: impl IntoIterator<Item = u32>) -> Histogram {
        let mut counts = Vec::new();
        for v in values {
            let v = v as usize;
            if counts.len() <= v {
                counts.resize(v + 1, 0);
            }
            counts[v] += 1;
        }
        Histogram { counts }
    }

    /// Units per number of events (index = events per unit).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Units counted (including those with 0 events).
    pub fn units(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Events of all units.
    pub fn events(&self) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .map(|(n, c)| n as u64 * c)
            .sum()
    }

    /// Mean events per unit (0 without units).
    pub fn mean(&self) -> f64 {
        let units = self.units();
        if units == 0 {
            0.0
        } else {
            self.events() as f64 / units as f64
        }
    }

    /// The smallest `n` such that at least a share `q` (0..=1) of the units
    /// contributed at most `n` events.
    pub fn quantile(&self, q: f64) -> u32 {
        let need = (q.clamp(0.0, 1.0) * self.units() as f64).ceil() as u64;
        let mut seen = 0;
        for (n, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= need {
                return n as u32;
            }
        }
        self.max()
    }

    /// Most events of one unit.
    pub fn max(&self) -> u32 {
        self.counts.len().saturating_sub(1) as u32
    }

    /// Share of all events beyond the first `bound` of each unit: what a
    /// node keeping at most `bound` events per unit drops (0 without events).
    pub fn dropped_share(&self, bound: u32) -> f64 {
        let total = self.events();
        if total == 0 {
            return 0.0;
        }
        let dropped: u64 = self
            .counts
            .iter()
            .enumerate()
            .skip(bound as usize + 1)
            .map(|(n, c)| (n as u64 - u64::from(bound)) * c)
            .sum();
        dropped as f64 / total as f64
    }

    /// The smallest bound that drops at most a share `max_share` of the events.
    pub fn bound_for(&self, max_share: f64) -> u32 {
        (0..=self.max())
            .find(|b| self.dropped_share(*b) <= max_share)
            .unwrap_or(self.max())
    }
}

/// Per-attendee contributions over the whole run (one event day for runs
/// shorter than a day). See the module docs for what is counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitStats {
    /// Zone entries per attendee who came in.
    pub zone_entries: Histogram,
    /// Entries per (attendee, zone) pair with at least one entry: the events
    /// a per-zone bound K acts on (same total as `zone_entries`).
    pub zone_entries_per_zone: Histogram,
    /// Gate passes in (scans `in`) per attendee who came in.
    pub gate_in: Histogram,
    /// Gate passes out (scans `out`) per attendee who came in.
    pub gate_out: Histogram,
    /// Attendees who came in.
    pub attendees: u64,
    /// Attendees who left the venue and came back at least once.
    pub reentered: u64,
}

impl UnitStats {
    pub(crate) fn compute(plan: &Plan) -> UnitStats {
        let nz = plan.model.zones.len();
        let n = plan.people.len();
        let mut entries = vec![0u32; n];
        let mut per_zone = vec![0u32; n * nz];
        let (mut ins, mut outs) = (vec![0u32; n], vec![0u32; n]);
        let mut engine = Engine::new(plan, vec![false; nz]);
        while let Some(step) = engine.step() {
            for c in step.crossings {
                let i = c.person as usize;
                match (c.zone_left(), c.zone_entered()) {
                    (_, Some(z)) => {
                        entries[i] += 1;
                        per_zone[i * nz + z] += 1;
                        if c.zone_left().is_none() {
                            ins[i] += 1;
                        }
                    }
                    (Some(_), None) => outs[i] += 1,
                    (None, None) => {}
                }
            }
        }
        let came = |i: &usize| ins[*i] > 0;
        let people = || (0..n).filter(came);
        UnitStats {
            zone_entries: Histogram::from_values(people().map(|i| entries[i])),
            zone_entries_per_zone: Histogram::from_values(
                per_zone.iter().copied().filter(|c| *c > 0),
            ),
            gate_in: Histogram::from_values(people().map(|i| ins[i])),
            gate_out: Histogram::from_values(people().map(|i| outs[i])),
            attendees: people().count() as u64,
            reentered: people().filter(|i| ins[*i] > 1).count() as u64,
        }
    }
}

impl fmt::Display for UnitStats {
    /// One line per statistic, e.g. `zone entries per attendee-day: mean
    /// 7.4, p50 7, p90 10, p99 13, max 17; bound for <= 2% dropped: 12`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} attendees, {} left and came back",
            self.attendees, self.reentered
        )?;
        for (name, h) in [
            ("zone entries per attendee-day (V)", &self.zone_entries),
            (
                "entries per attendee and zone (K)",
                &self.zone_entries_per_zone,
            ),
            ("gate passes in per attendee (G)", &self.gate_in),
            ("gate passes out per attendee (G)", &self.gate_out),
        ] {
            writeln!(
                f,
                "{name}: mean {:.2}, p50 {}, p90 {}, p99 {}, max {}; \
                 smallest bound dropping <= 2%: {} ({:.2}% dropped), <= 0.5%: {}",
                h.mean(),
                h.quantile(0.5),
                h.quantile(0.9),
                h.quantile(0.99),
                h.max(),
                h.bound_for(0.02),
                100.0 * h.dropped_share(h.bound_for(0.02)),
                h.bound_for(0.005),
            )?;
        }
        Ok(())
    }
}
