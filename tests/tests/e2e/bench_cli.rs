//! The bench commands of both binaries, at tiny sizes: each prints its
//! table and then one parseable `name value unit` line per figure (and no
//! ingest errors). Speed is never asserted here.

use std::process::Command;

use veil_tests::bin;

/// Runs a binary and returns its stdout, asserting success.
fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(bin(name))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the bench command");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}\nstdout:\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The value of figure `name` from its `name value unit` line; never
/// negative.
fn figure(stdout: &str, name: &str, unit: &str) -> f64 {
    let v = signed_figure(stdout, name, unit);
    assert!(v >= 0.0, "{name} is negative: {v}");
    v
}

/// The value of a figure that may be negative: alert latency is measured
/// from the ack, and an alert can reach the organizer's stream first.
fn signed_figure(stdout: &str, name: &str, unit: &str) -> f64 {
    let line = stdout
        .lines()
        // Figure lines are not indented (table rows are).
        .find(|l| !l.starts_with(' ') && l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{stdout}"));
    let parts: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(parts.len(), 3, "`{line}` is not `name value unit`");
    assert_eq!(parts[2], unit, "unit of {name}");
    let v: f64 = parts[1]
        .parse()
        .unwrap_or_else(|e| panic!("`{line}`: value does not parse: {e}"));
    assert!(v.is_finite(), "`{line}`");
    v
}

#[test]
fn node_bench_pipeline_prints_figures() {
    let out = run("veil-node", &["bench", "pipeline", "--events", "3000"]);
    assert!(figure(&out, "events_per_s", "events/s") > 0.0);
    assert!(figure(&out, "peak_rss_mib", "MiB") > 0.0);
    assert!(out.contains("fake"), "says the lease ids are fake:\n{out}");
}

#[test]
fn node_bench_noise_prints_figures() {
    for m in ["discrete-gaussian", "discrete-laplace"] {
        let out = run(
            "veil-node",
            &["bench", "noise", "--values", "500", "--mechanism", m],
        );
        assert!(figure(&out, "noise_values_per_s", "values/s") > 0.0);
    }
}

#[test]
fn aggregator_bench_ingest_prints_figures_without_errors() {
    let out = run(
        "veil-aggregator",
        &[
            "bench",
            "ingest",
            "--nodes",
            "3",
            "--duration",
            "1",
            "--batch",
            "10",
            "--db",
            "sqlite",
        ],
    );
    assert!(figure(&out, "releases_per_s", "releases/s") > 0.0);
    figure(&out, "ack_p50_ms", "ms");
    figure(&out, "ack_p99_ms", "ms");
    signed_figure(&out, "alert_latency_p50_ms", "ms");
    signed_figure(&out, "alert_latency_p99_ms", "ms");
    assert_eq!(figure(&out, "errors", "count"), 0.0);
}

#[test]
fn aggregator_bench_ingest_transport_only_is_labelled_and_stores_nothing() {
    let out = run(
        "veil-aggregator",
        &[
            "bench",
            "ingest",
            "--nodes",
            "3",
            "--duration",
            "1",
            "--batch",
            "10",
            "--transport-only",
        ],
    );
    assert!(figure(&out, "transport_releases_per_s", "releases/s") > 0.0);
    figure(&out, "transport_ack_p50_ms", "ms");
    figure(&out, "transport_ack_p99_ms", "ms");
    assert_eq!(figure(&out, "errors", "count"), 0.0);
    // Never a durable figure name: scripts compare runs by name.
    assert!(
        !out.lines().any(|l| l.starts_with("releases_per_s ")),
        "transport-only printed a durable figure:\n{out}"
    );
    assert!(out.contains("NOT durable"), "{out}");
    let stored = out
        .lines()
        .find(|l| l.trim_start().starts_with("releases stored (count)"))
        .unwrap_or_else(|| panic!("no stored count:\n{out}"));
    assert!(stored.trim_end().ends_with(" 0"), "`{stored}`");
}

#[test]
fn aggregator_bench_fedavg_secure_prints_plain_and_secure_figures() {
    let out = run(
        "veil-aggregator",
        &[
            "bench",
            "fedavg",
            "--secure",
            "--dropout",
            "0.2",
            "--nodes",
            "10",
            "--params",
            "20000",
        ],
    );
    assert!(figure(&out, "plain_round_ms", "ms") > 0.0);
    assert!(figure(&out, "round_ms", "ms") > 0.0);
    assert!(figure(&out, "unmask_ms", "ms") > 0.0);
    assert!(figure(&out, "secure_over_plain", "x") > 0.0);
    assert_eq!(figure(&out, "dropped", "nodes"), 2.0);
    for f in [
        "client_share_ms",
        "client_encode_ms",
        "client_noise_ms",
        "client_mask_ms",
        "client_total_ms",
    ] {
        assert!(figure(&out, f, "ms") > 0.0, "{f}");
    }
}

#[test]
fn aggregator_bench_audit_prints_figures() {
    let out = run("veil-aggregator", &["bench", "audit", "--entries", "300"]);
    assert!(figure(&out, "audit_append_per_s", "entries/s") > 0.0);
    assert!(figure(&out, "audit_verify_per_s", "entries/s") > 0.0);
}

#[test]
fn aggregator_bench_sqlite_floor_prints_floor_figures_in_the_given_dir() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        "veil-aggregator",
        &[
            "bench",
            "sqlite-floor",
            "--nodes",
            "3",
            "--batch",
            "5",
            "--duration",
            "1",
            "--pattern",
            "windows",
            "--dir",
            dir.path().to_str().unwrap(),
        ],
    );
    assert!(figure(&out, "floor_releases_per_s", "releases/s") > 0.0);
    let p50 = figure(&out, "floor_commit_p50_ms", "ms");
    assert!(figure(&out, "floor_commit_p99_ms", "ms") >= p50);
    // Labelled as the floor, never as an ingest figure.
    assert!(
        !out.lines().any(|l| l.starts_with("releases_per_s ")),
        "{out}"
    );
    assert!(out.contains("synchronous = FULL"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("pattern") && l.trim_end().ends_with("windows")),
        "{out}"
    );
    assert!(
        out.contains(dir.path().to_str().unwrap()),
        "the database was not in --dir:\n{out}"
    );
    // The temporary database is gone afterwards.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn aggregator_bench_sqlite_floor_refuses_bad_sizes() {
    let out = Command::new(bin("veil-aggregator"))
        .args(["bench", "sqlite-floor", "--nodes", "0", "--duration", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--nodes must be at least 1"), "{err}");
}
