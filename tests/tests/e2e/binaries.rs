//! The real binaries: `pki init`, `serve` (health, SIGTERM), `veil-node run`
//! and `simulate`.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use veil_tests::{bin, channel_with, install_crypto, write_aggregator_config};

#[test]
fn simulator_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |seed: u64, out: &str| {
        let status = Command::new(bin("veil-node"))
            .args([
                "simulate",
                "--venue",
                "arena",
                "--duration",
                "15m",
                "--attendees",
                "500",
            ])
            .args(["--seed", &seed.to_string(), "--out"])
            .arg(dir.path().join(out))
            .arg("--ground-truth")
            .arg(dir.path().join(format!("{out}.truth")))
            .status()
            .expect("run veil-node simulate");
        assert!(status.success());
        std::fs::read(dir.path().join(out)).expect("read output")
    };
    let a = run(3, "a.jsonl");
    let b = run(3, "b.jsonl");
    let c = run(4, "c.jsonl");
    assert!(!a.is_empty());
    assert_eq!(a, b, "same seed, same bytes");
    assert_ne!(a, c, "another seed, other events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_binary_serves_health_and_stops_on_sigterm() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    let status = Command::new(bin("veil-aggregator"))
        .args(["pki", "init", "--venue", "arena", "--nodes", "2", "--out"])
        .arg(&pki)
        .status()
        .expect("pki init");
    assert!(status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "server.key", "node-1.key", "compliance.key"] {
            let mode = std::fs::metadata(pki.join(key))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key} must be 0600");
        }
    }
    let cfg = write_aggregator_config(dir.path(), &["node-1", "node-2"], "127.0.0.1:0");
    let mut child = Command::new(bin("veil-aggregator"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_owned();

    let channel = channel_with(
        &format!("https://{addr}"),
        &pki.join("ca.pem"),
        Some((pki.join("node-1.pem"), pki.join("node-1.key"))),
    )
    .await
    .expect("connect");
    // Every service `serve` serves answers SERVING (a client checking the
    // one it uses must not get NOT_FOUND), and so does the server as a whole.
    let mut health = HealthClient::new(channel);
    for service in [
        "",
        "veil.v1.Ingest",
        "veil.v1.Policy",
        "veil.v1.Ledger",
        "veil.v1.Audit",
        "veil.v1.Query",
        "veil.v1.Federated",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
            .into_inner()
            .status;
        assert_eq!(status, 1, "{service:?} is SERVING");
    }

    let pid = child.id().to_string();
    let t0 = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "did not stop after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn privacy_sample_prints_n_integers_centred_on_the_value() {
    let out = Command::new(bin("veil-node"))
        .args([
            "privacy",
            "sample",
            "--mechanism",
            "discrete-gaussian",
            "--rho",
            "0.5",
        ])
        .args(["--sensitivity", "1", "--value", "40", "--n", "5000"])
        .output()
        .expect("run sample");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<i64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().expect("one integer per line"))
        .collect();
    assert_eq!(values.len(), 5000);
    let mean = values.iter().sum::<i64>() as f64 / 5000.0;
    // sigma = 1; the mean of 5000 draws is within 0.1 of 40 with overwhelming probability.
    assert!((mean - 40.0).abs() < 0.1, "mean {mean}");
    assert!(values.iter().any(|v| *v != 40), "noise was added");
    let bad = Command::new(bin("veil-node"))
        .args([
            "privacy",
            "sample",
            "--mechanism",
            "discrete-laplace",
            "--rho",
            "1",
            "--value",
            "1",
            "--n",
            "1",
        ])
        .output()
        .expect("run sample");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--epsilon"));
}
