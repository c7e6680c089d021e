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
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "veil.v1.Ingest".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

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
