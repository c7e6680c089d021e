use super::*;

const GOOD: &str = r#"
version = 1
name = "test"

[budget]
epsilon_per_day = 50.0
delta = 1e-6

[retention]
releases_days = 30

[[metric]]
name = "occupancy"
signal = "camera"
purposes = ["crowd_safety"]
mechanism = "discrete_laplace"
epsilon = 1.0
readers = ["organizer"]

[[metric]]
name = "co2_ppm"
signal = "environment"
purposes = ["operations"]
mechanism = "non_personal"
readers = ["organizer"]

[[consent]]
signal = "app"
purpose = "crowd_safety"
scope = "analytics"
"#;

#[test]
fn parses_and_hashes() {
    let p = LoadedPolicy::parse(GOOD).unwrap();
    assert_eq!(p.hash, sha256_hex(GOOD.as_bytes()));
    assert_eq!(p.metric("occupancy").unwrap().epsilon, Some(1.0));
    assert!(p.metric("ingress").is_none());
    assert_eq!(
        p.consent_scope(Signal::App, "crowd_safety"),
        Some("analytics")
    );
    assert!(p.summary().contains("declared non-personal"));
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    let text = GOOD.replace(
        "readers = [\"organizer\"]\n\n[[metric]]",
        "readers = [\"organizer\"]\ncolour = 1\n\n[[metric]]",
    );
    let err = LoadedPolicy::parse(&text).unwrap_err().to_string();
    assert!(err.contains("colour"), "{err}");
    assert!(err.contains("line 19"), "{err}");
}

#[test]
fn personal_signal_cannot_be_non_personal() {
    let text = GOOD.replace("signal = \"environment\"", "signal = \"probe\"");
    let err = LoadedPolicy::parse(&text).unwrap_err();
    match err {
        PolicyError::Invalid { line, key, reason } => {
            assert_eq!(key, "metric[co2_ppm].mechanism");
            assert_eq!(line, 20);
            assert!(reason.contains("personal"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_values_name_their_key() {
    for (from, to, key) in [
        (
            "epsilon = 1.0",
            "epsilon = 0.0",
            "metric[occupancy].epsilon",
        ),
        (
            "epsilon_per_day = 50.0",
            "epsilon_per_day = -1.0",
            "budget.epsilon_per_day",
        ),
        (
            "releases_days = 30",
            "releases_days = 0",
            "retention.releases_days",
        ),
        ("version = 1", "version = 2", "version"),
    ] {
        let err = LoadedPolicy::parse(&GOOD.replace(from, to))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{from}: {err}");
    }
}

const ATTENDEE_DAY: &str = r#"
version = 1
name = "attendee-day"

[privacy_unit]
unit = "attendee_day"
day_start = "06:00"
utc_offset = "+01:00"
nodes = 2
max_zone_visits = 8
max_visits_per_zone = 4
max_gate_passes = 2

[budget]
epsilon_per_day = 3.0
delta = 1e-6

[retention]
releases_days = 30

[[metric]]
name = "occupancy"
signal = "camera"
purposes = ["crowd_safety"]
mechanism = "continual_sqrt"
rho = 0.05
readers = ["organizer"]
"#;

#[test]
fn attendee_day_cost_is_nodes_times_the_streams_rho() {
    let p = LoadedPolicy::parse(ATTENDEE_DAY).unwrap();
    let c = p.unit_day_cost().unwrap();
    assert_eq!(c.nodes, 2);
    assert!((c.rho - 0.1).abs() < 1e-12, "{c:?}");
    assert!(c.epsilon > 0.1 && c.epsilon <= 3.0, "{c:?}");
    assert!(
        p.guarantee().contains("whole event day"),
        "{}",
        p.guarantee()
    );
    assert!(p.summary().contains("attendee-day cost"), "{}", p.summary());
    // 06:00 at UTC+1 starts the day: offset = 3600 - 21600.
    assert_eq!(p.event_day_offset_seconds(), 3600 - 6 * 3600);
    let u = p.privacy_unit().unwrap();
    assert_eq!(
        u.shape("occupancy"),
        Some(StreamShape::Presence { events: 16 })
    );
    assert_eq!(
        u.zone_shape("occupancy"),
        Some(StreamShape::Presence { events: 8 })
    );
    assert_eq!(
        u.shape("ingress"),
        Some(StreamShape::Cumulative { events: 2 })
    );
}

#[test]
fn a_policy_whose_streams_can_exceed_its_budget_is_refused() {
    let text = ATTENDEE_DAY.replace("rho = 0.05", "rho = 0.5");
    let err = LoadedPolicy::parse(&text).unwrap_err().to_string();
    assert!(err.contains("budget.epsilon_per_day"), "{err}");
    assert!(err.contains("more than the budget of 3"), "{err}");
    assert!(err.contains("2 nodes x rho 0.5000"), "{err}");
}

#[test]
fn continual_metrics_need_a_privacy_unit_and_per_window_ones_cannot_share_it() {
    let start = ATTENDEE_DAY.find("[privacy_unit]").unwrap();
    let end = ATTENDEE_DAY.find("[budget]").unwrap();
    let no_unit = format!("{}{}", &ATTENDEE_DAY[..start], &ATTENDEE_DAY[end..]);
    let err = LoadedPolicy::parse(&no_unit).unwrap_err().to_string();
    assert!(err.contains("needs a [privacy_unit]"), "{err}");
    let mixed = ATTENDEE_DAY.replace(
        "mechanism = \"continual_sqrt\"\nrho = 0.05",
        "mechanism = \"discrete_laplace\"\nepsilon = 1.0",
    );
    let err = LoadedPolicy::parse(&mixed).unwrap_err().to_string();
    assert!(err.contains("per person-window"), "{err}");
    let bad_day = ATTENDEE_DAY.replace("day_start = \"06:00\"", "day_start = \"25:00\"");
    let err = LoadedPolicy::parse(&bad_day).unwrap_err().to_string();
    assert!(err.contains("privacy_unit.day_start"), "{err}");
    let unknown = ATTENDEE_DAY.replace("name = \"occupancy\"", "name = \"dwell\"");
    let err = LoadedPolicy::parse(&unknown).unwrap_err().to_string();
    assert!(err.contains("continual streams only for"), "{err}");
}

#[test]
fn shipped_policies_protect_an_attendee_day_within_their_budget() {
    for (name, text) in [
        ("arena", include_str!("../../../policies/arena.toml")),
        (
            "conference",
            include_str!("../../../policies/conference.toml"),
        ),
        ("festival", include_str!("../../../policies/festival.toml")),
    ] {
        let p = LoadedPolicy::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Some(c) = p.unit_day_cost() else {
            panic!("{name} names no privacy unit")
        };
        assert!(
            c.epsilon <= p.policy.budget.epsilon_per_day,
            "{name}: {c:?}"
        );
        assert_eq!(p.policy.budget.delta, 1e-6, "{name}");
        if name == "arena" {
            assert!(c.epsilon <= 4.0, "{c:?}");
        }
        // No per-window personal metric (the anonymous camera count is
        // per person-minute and not shipped).
        for m in p.policy.metrics.iter().map(toml::Spanned::get_ref) {
            assert!(
                !m.signal.is_personal() || m.mechanism.is_continual(),
                "{name}: {}",
                m.name
            );
        }
    }
}
