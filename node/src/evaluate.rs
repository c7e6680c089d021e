//! Noise-free replay of a node's pipeline over an input file: the exact
//! running totals the node's continual streams would release without noise,
//! under the same windows and contribution bounds. It exists to measure the
//! privacy error (released minus exact) in the demo and benchmarks; a running
//! node never calls it. Its output is computed from raw data and must not
//! leave the process that made it.

use std::{collections::BTreeMap, io::BufRead};

use veil_privacy::policy::LoadedPolicy;

use crate::{
    config::Config,
    event::parse_line,
    release::{Input, plan_window},
    run::Pseudonyms,
    units::{Family, UnitStats},
    window::Windower,
};

/// Exact running totals per (metric, zone): (window start ms, total).
#[derive(Debug, Clone, Default)]
pub struct ExactStreams {
    /// Running totals at the end of every released window.
    pub totals: BTreeMap<(String, String), Vec<(i64, i64)>>,
    /// What the day bounds did, per unit kind.
    pub units: [UnitStats; 4],
}

impl ExactStreams {
    /// The share of unit events the bounds dropped, over all kinds.
    pub fn bounded_share(&self) -> f64 {
        let mut all = UnitStats::default();
        for u in &self.units {
            all.add(u);
        }
        all.bounded_share()
    }
}

/// Replays `input` through the node's windows, bounds and release plan.
pub fn exact_streams(
    cfg: &Config,
    policy: &LoadedPolicy,
    input: &mut impl BufRead,
) -> Result<ExactStreams, crate::run::NodeError> {
    let mut windower = Windower::for_node(cfg, policy)?;
    let mut pseudonyms = Pseudonyms::new(policy.event_day_offset_seconds(), Vec::new());
    let mut out = ExactStreams::default();
    let mut running: BTreeMap<(u32, &'static str, String), i64> = BTreeMap::new();
    let mut line = String::new();
    let mut record = |windows: Vec<crate::window::ClosedWindow>,
                      out: &mut ExactStreams|
     -> Result<(), crate::run::NodeError> {
        for w in windows {
            for p in plan_window(cfg, policy, &w)? {
                if let Input::Stream { increment, day, .. } = p.input {
                    let total = running.entry((day, p.metric, p.zone.clone())).or_insert(0);
                    *total += increment;
                    out.totals
                        .entry((p.metric.to_owned(), p.zone.clone()))
                        .or_default()
                        .push((p.window_start_ms, *total));
                }
            }
        }
        Ok(())
    };
    loop {
        line.clear();
        let n = input
            .read_line(&mut line)
            .map_err(|source| crate::run::NodeError::Input {
                path: "evaluation input".into(),
                source,
            })?;
        if n == 0 {
            break;
        }
        if let Ok(ev) = parse_line(line.trim_end_matches(['\n', '\r'])) {
            let key = pseudonyms.key(ev.ts_ms)?;
            windower.add(&ev, |id| key.pseudonym(id.as_bytes()));
        }
        let closed = windower.drain_closed();
        if !closed.is_empty() {
            record(closed, &mut out)?;
        }
    }
    let rest = windower.flush();
    record(rest, &mut out)?;
    out.units = Family::ALL.map(|f| windower.unit_stats(f));
    Ok(out)
}
