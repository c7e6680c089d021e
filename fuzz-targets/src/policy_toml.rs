//! `policy_toml`: policy files, [`LoadedPolicy::parse`] and what
//! `veil-aggregator policy check` prints ([`LoadedPolicy::summary`]).
//!
//! Invariants: no input panics; a policy that parses is internally
//! consistent: its hash is the text's, every metric is found by name and
//! priced by the ledger for each of its purposes, and a privacy unit comes
//! with an attendee-day cost within the daily budget (and only then).

use veil_aggregator_core::ledger;
use veil_privacy::policy::{LoadedPolicy, sha256_hex};

/// Parses the input as a policy file and checks what the parser promised.
pub fn policy_toml(data: &[u8]) {
    // `policy check` reads the file as UTF-8 text and refuses anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = LoadedPolicy::parse(text) else {
        return;
    };
    let _ = p.summary();
    assert_eq!(p.hash, sha256_hex(text.as_bytes()));
    match (p.privacy_unit(), p.unit_day_cost()) {
        (None, None) => {}
        (Some(unit), Some(cost)) => {
            assert_eq!(cost.nodes, unit.nodes);
            assert!(
                cost.epsilon <= p.policy.budget.epsilon_per_day,
                "accepted a policy whose streams cost {} > budget {}",
                cost.epsilon,
                p.policy.budget.epsilon_per_day
            );
            assert!(unit.day_offset_seconds().is_ok());
        }
        (unit, cost) => panic!("privacy unit {unit:?} but attendee-day cost {cost:?}"),
    }
    for m in p.policy.metrics.iter().map(|m| m.get_ref()) {
        assert_eq!(p.metric(&m.name), Some(m), "metric {} not found", m.name);
        for purpose in &m.purposes {
            if let Err(e) = ledger::policy_cost(&p, &m.name, purpose) {
                panic!("metric {} for {purpose} has no cost: {e}", m.name);
            }
        }
    }
}
