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
