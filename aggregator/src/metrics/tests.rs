use super::*;

#[test]
fn exposition_names_every_family_and_no_values_of_data() {
    let m = Metrics::new();
    let acks = vec![
        veil_proto::ReleaseAck {
            idempotency_key: "arena/n1/occupancy/floor/0/0".into(),
            status: veil_proto::AckStatus::Accepted as i32,
            reason: String::new(),
        },
        veil_proto::ReleaseAck {
            idempotency_key: "arena/n1/occupancy/floor/60000/0".into(),
            status: veil_proto::AckStatus::Invalid as i32,
            reason: "window not aligned".into(),
        },
    ];
    m.record_acks(&acks, std::time::Duration::from_millis(3));
    let stats = crate::alerts::HubStats {
        raised: 2,
        lagged_items: 5,
        ..Default::default()
    };
    m.sync_hub(&stats);
    m.sync_hub(&stats); // a second scrape adds nothing
    m.auth_refused("dashboard");
    let text = m.encode();
    for name in [
        "veil_aggregator_releases_accepted_total 1",
        "veil_aggregator_releases_refused_total{reason=\"invalid\"} 1",
        "veil_aggregator_ack_latency_seconds_count 1",
        "veil_aggregator_alerts_total{event=\"raised\"} 2",
        "veil_aggregator_auth_refusals_total{reason=\"dashboard\"} 1",
        "veil_aggregator_stream_lagged_events_total 5",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // Keys and reasons (which could carry zone names or values) never appear.
    assert!(!text.contains("floor"));
    assert!(!text.contains("aligned"));
}
