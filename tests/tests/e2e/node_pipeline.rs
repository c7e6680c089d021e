//! The node pipeline end to end: simulated events with malformed lines in,
//! DP releases stored by the aggregator out.

use std::{fmt::Write as _, time::Duration};

use veil_node::simulate::{SimConfig, Simulation, VenueKind};
use veil_tests::TestEnv;

fn node_config(env: &TestEnv, node: &str, input: &str, zones: &str) -> veil_node::Config {
    let text = format!(
        "venue = \"arena\"\nnode_id = \"{node}\"\n\n\
         [aggregator]\nendpoint = \"{}\"\nca = \"pki/ca.pem\"\ncert = \"pki/{node}.pem\"\nkey = \"pki/{node}.key\"\n\n\
         [input]\npath = \"{input}\"\n\n[windows]\nlength = \"1m\"\nlateness = \"10s\"\n\n\
         [outbox]\npath = \"{node}-outbox.db\"\n{zones}",
        env.endpoint()
    );
    let path = env.dir.path().join(format!("{node}.toml"));
    std::fs::write(&path, text).expect("write node config");
    veil_node::Config::load(&path).expect("node config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_node_releases_arrive_and_malformed_lines_are_counted() {
    let env = TestEnv::start().await;
    let mut cfg = SimConfig::new(
        VenueKind::Arena,
        11,
        Duration::from_secs(20 * 60),
        1_780_333_200_000,
    );
    cfg.attendees = Some(800);
    cfg.nodes = 1;
    let sim = Simulation::new(cfg).expect("sim");
    let mut events = Vec::new();
    sim.write_events(0, &mut events).expect("events");
    // Three more malformed lines at known positions.
    let mut text = String::from_utf8(events).expect("utf8");
    text.insert_str(0, "{not json\n");
    text.push_str("{\"ts\":\"2026-06-01T17:05:00Z\",\"sensor\":\"x\",\"zone\":\"floor\",\"kind\":\"occupancy\",\"count\":-4}\n");
    text.push('\n');
    std::fs::write(env.dir.path().join("events.jsonl"), &text).expect("write events");
    let mut zones = String::new();
    for z in sim.zones() {
        let gate = z.role == veil_node::simulate::ZoneRole::Gate;
        write!(
            zones,
            "\n[[zone]]\nname = \"{}\"\ngate = {gate}\ncameras = {}\ncapacity = {}\n",
            z.name,
            u32::from(!gate),
            z.capacity
        )
        .expect("fmt");
    }
    let cfg = node_config(&env, "node-1", "events.jsonl", &zones);
    let metrics = veil_node::metrics::NodeMetrics::new();
    let report = veil_node::run::run_with_metrics(cfg, metrics.clone(), std::future::pending())
        .await
        .expect("node run");

    assert!(report.invalid_lines >= 2, "{report:?}");
    assert_eq!(
        report.first_invalid[0].line, 1,
        "line numbers are 1-based and exact"
    );
    assert!(report.first_invalid[0].reason.contains("JSON"));
    assert_eq!(report.upload.rejected, 0);
    assert_eq!(report.outbox_depth, 0, "everything acknowledged");
    assert!(report.releases > 0);
    assert_eq!(report.upload.accepted, report.releases);
    let stored = env
        .storage
        .releases_for_venue("arena")
        .await
        .expect("query");
    assert_eq!(stored.len() as u64, report.releases);
    let policy =
        veil_privacy::policy::LoadedPolicy::parse(veil_tests::ARENA_POLICY).expect("policy");
    assert_eq!(report.policy_hash, policy.hash);
    assert!(report.leases.granted > 0);
    assert!(stored.iter().all(|r| r.node == "node-1"));
    assert!(
        stored
            .iter()
            .any(|r| r.metric == "occupancy" && r.zone == "floor")
    );
    assert!(stored.iter().any(|r| r.metric == "ingress"));
    // On-device inference ran on every closed window, and its audio-class
    // counts (declared non-personal by the policy) were released.
    assert!(report.inference.windows >= 19, "{:?}", report.inference);
    assert_eq!(report.inference.skipped, 0);
    assert_eq!(report.inference.failures, 0);
    assert!(report.inference.latency_p99_us > 0);
    let audio = stored
        .iter()
        .filter(|r| r.metric.starts_with("audio_"))
        .count() as u64;
    assert!(audio > 0);
    assert_eq!(audio, report.inference.audio_releases);
    // The live crowd in music and applause scenes: music frames are found.
    assert!(
        stored
            .iter()
            .any(|r| r.metric == "audio_music" && r.value > 0.0)
    );
    // Operational metrics count what happened, never a value.
    let text = metrics.render();
    assert!(
        text.contains(&format!("veil_node_input_lines_total {}", report.lines)),
        "{text}"
    );
    assert!(text.contains("veil_node_uploaded_releases_total{kind=\"accepted\"}"));
    assert!(text.contains("veil_node_inference_latency_seconds_count"));
    // Non-personal metrics are released as such, counts with DP noise.
    for r in &stored {
        match r.metric.as_str() {
            "co2_ppm" | "sound_level_db" | "temperature_c" | "clipping_frames"
            | "audio_applause" | "audio_music" | "audio_speech" | "audio_crowd_noise"
            | "audio_clipping" => {
                assert_eq!(r.mechanism, "MECHANISM_NON_PERSONAL");
                assert_eq!(r.epsilon, 0.0);
            }
            _ => {
                assert_eq!(r.mechanism, "MECHANISM_DISCRETE_LAPLACE");
                let want = policy.metric(&r.metric).and_then(|m| m.epsilon);
                assert_eq!(
                    Some(r.epsilon),
                    want,
                    "{}: the policy's per-release epsilon",
                    r.metric
                );
                assert!(r.scale > 0.0);
                assert!(!r.lease_id.is_empty(), "charged to a lease");
            }
        }
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerunning_the_same_input_does_not_release_a_window_twice() {
    let env = TestEnv::start().await;
    let mut cfg = SimConfig::new(
        VenueKind::Arena,
        5,
        Duration::from_secs(10 * 60),
        1_780_333_200_000,
    );
    cfg.attendees = Some(300);
    let sim = Simulation::new(cfg).expect("sim");
    let mut events = Vec::new();
    sim.write_events(0, &mut events).expect("events");
    std::fs::write(env.dir.path().join("events.jsonl"), &events).expect("write");
    let zones = "\n[[zone]]\nname = \"floor\"\ncameras = 1\n";
    let first = veil_node::run(
        node_config(&env, "node-1", "events.jsonl", zones),
        std::future::pending(),
    )
    .await
    .expect("first run");
    let stored_after_first = env.storage.count_releases().await.expect("count");
    assert_eq!(stored_after_first, first.upload.accepted);
    // Same input again (e.g. after a restart): the node knows durably which
    // windows it released, so it draws no noise, asks for no lease and
    // sends nothing (no differently-noised copy ever reaches the aggregator).
    let second = veil_node::run(
        node_config(&env, "node-1", "events.jsonl", zones),
        std::future::pending(),
    )
    .await
    .expect("second run");
    assert_eq!(second.releases, 0, "{second:?}");
    assert_eq!(second.upload.accepted, 0, "{second:?}");
    assert_eq!(second.upload.rejected, 0, "{second:?}");
    assert_eq!(second.upload.duplicate, 0, "{second:?}");
    assert_eq!(second.stream_leases, 0, "{second:?}");
    assert!(second.windows.already_released > 0, "{second:?}");
    assert_eq!(
        env.storage.count_releases().await.expect("count"),
        stored_after_first
    );
    env.stop().await;
}

/// One bad sensor must not stop a venue: lines that are not UTF-8, longer
/// than `input.max_line_bytes`, dated before 1970 or far in the future are
/// each one invalid line, and every valid event around them still counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_are_skipped_and_every_valid_event_still_counts() {
    let env = TestEnv::start().await;
    let mut cfg = SimConfig::new(
        VenueKind::Arena,
        7,
        Duration::from_secs(10 * 60),
        1_780_333_200_000,
    );
    cfg.attendees = Some(300);
    let sim = Simulation::new(cfg).expect("sim");
    let mut clean = Vec::new();
    sim.write_events(0, &mut clean).expect("events");
    let lines: Vec<&[u8]> = clean.split_inclusive(|&b| b == b'\n').collect();
    let mid = lines.len() / 2;
    let mut hostile = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if i == mid {
            hostile.extend_from_slice(b"{\"ts\":\"2026-06-01T17:05:00Z\",\"sensor\":\"\xff\"}\n");
            hostile.extend_from_slice(
                b"{\"ts\":\"1969-12-31T23:59:59Z\",\"sensor\":\"cam-1\",\"zone\":\"floor\",\"kind\":\"occupancy\",\"count\":3}\n",
            );
            for year in ["2099-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
                hostile.extend_from_slice(
                    format!("{{\"ts\":\"{year}\",\"sensor\":\"cam-1\",\"zone\":\"floor\",\"kind\":\"occupancy\",\"count\":3}}\n")
                        .as_bytes(),
                );
            }
            hostile.extend_from_slice(&vec![b'x'; 200_000]);
            hostile.push(b'\n');
        }
        hostile.extend_from_slice(l);
    }
    std::fs::write(env.dir.path().join("clean.jsonl"), &clean).expect("write");
    std::fs::write(env.dir.path().join("hostile.jsonl"), &hostile).expect("write");
    let zones =
        "\n[[zone]]\nname = \"floor\"\ncameras = 1\n\n[[zone]]\nname = \"gate-a\"\ngate = true\n";
    let a = veil_node::run(
        node_config(&env, "node-1", "clean.jsonl", zones),
        std::future::pending(),
    )
    .await
    .expect("clean run");
    let b = veil_node::run(
        node_config(&env, "node-2", "hostile.jsonl", zones),
        std::future::pending(),
    )
    .await
    .expect("a hostile line must not stop the node");
    assert_eq!(b.lines, a.lines + 5, "{b:?}");
    assert_eq!(
        b.invalid_lines,
        a.invalid_lines + 5,
        "{:?}",
        b.first_invalid
    );
    let reasons: Vec<&str> = b.first_invalid.iter().map(|l| l.reason.as_str()).collect();
    for want in [
        "not valid UTF-8",
        "on or after 1970-01-01",
        "ahead of this node's clock",
        "longer than input.max_line_bytes",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(want)),
            "no reason {want:?} in {reasons:?}"
        );
    }
    // Same valid events in the same windows: nothing dropped as late.
    assert_eq!(b.windows.accepted, a.windows.accepted, "{:?}", b.windows);
    assert_eq!(b.windows.late, a.windows.late);
    assert_eq!(b.releases, a.releases);
    env.stop().await;
}
