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

/// Runs `cmd` with stderr in a file; returns (success, stdout, stderr).
fn run_logged(cmd: &mut Command, log: &std::path::Path) -> (bool, String, String) {
    let file = std::fs::File::create(log).expect("log file");
    let out = cmd.stderr(file).output().expect("run");
    let err = std::fs::read_to_string(log).expect("read log");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err,
    )
}

/// Messages a new user meets say what is wrong and what to do, once, with
/// no terminal colours in files.
#[test]
fn operator_messages_say_what_to_do() {
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    veil_aggregator::pki::init(&d.join("pki"), "arena", 2).expect("pki");
    let agg = || {
        let mut c = Command::new(bin("veil-aggregator"));
        c.args(["--log-format", "text"]);
        c
    };

    // A busy port: which key to change, the cause once, no ANSI in the file.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    let cfg = veil_tests::write_aggregator_config(d, &["node-1"], &format!("127.0.0.1:{port}"));
    let (ok, _, err) = run_logged(
        agg().args(["serve", "--config"]).arg(&cfg),
        &d.join("busy.log"),
    );
    assert!(!ok);
    assert!(err.contains("`listen` in the config"), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
    assert!(!err.contains('\u{1b}'), "ANSI escapes in a file: {err:?}");
    drop(busy);

    // Serving with [metrics]: start-up logs the metrics listener.
    let cfg = veil_tests::write_aggregator_config_with(
        d,
        &["node-1"],
        "127.0.0.1:0",
        veil_tests::ARENA_POLICY,
        "\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    let log = std::fs::File::create(d.join("serve.log")).expect("log");
    let mut child = agg()
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let endpoint = format!(
        "https://{}",
        line.trim().strip_prefix("listening on ").expect("line")
    );

    // A node whose aggregator is down names the endpoint, each cause once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let down = format!("https://127.0.0.1:{closed_port}");
    std::fs::write(
        d.join("node-1.toml"),
        format!(
            "venue = \"arena\"\nnode_id = \"node-1\"\n\n[aggregator]\nendpoint = \"{down}\"\n\
             ca = \"pki/ca.pem\"\ncert = \"pki/node-1.pem\"\nkey = \"pki/node-1.key\"\n\
             max_backoff = \"200ms\"\n\n[input]\npath = \"-\"\n\n[windows]\nlength = \"60s\"\n\
             lateness = \"5s\"\n\n[outbox]\npath = \"node-1-outbox.db\"\n\n\
             [[zone]]\nname = \"floor\"\ncameras = 1\n"
        ),
    )
    .expect("node config");
    let node_log = d.join("node.log");
    let mut node = Command::new(bin("veil-node"))
        .args(["--log-format", "text", "run", "--config"])
        .arg(d.join("node-1.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&node_log).expect("log"))
        .spawn()
        .expect("spawn node");
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill")
        .args(["-TERM", &node.id().to_string()])
        .status();
    drop(node.stdin.take());
    let _ = node.wait();
    let text = std::fs::read_to_string(&node_log).expect("node log");
    let first = text
        .lines()
        .find(|l| l.contains("Policy fetch"))
        .unwrap_or_else(|| panic!("no policy fetch warning: {text}"));
    assert!(first.contains(&down), "{first}");
    assert!(first.matches("tcp connect error").count() <= 1, "{first}");
    assert!(!text.contains('\u{1b}'), "ANSI escapes in a file");

    // `report` defaults to today like `budget show`.
    let (ok, out, err) = run_logged(
        agg()
            .args(["report", "--venue", "arena", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(d.join("report.html")),
        &d.join("report.log"),
    );
    assert!(ok, "report without --day: {err}");
    assert!(out.contains("Wrote the report"), "{out}");

    // An unknown venue names the configured ones.
    let (ok, _, err) = run_logged(
        agg()
            .args(["budget", "show", "--venue", "stadium", "--config"])
            .arg(&cfg),
        &d.join("budget.log"),
    );
    assert!(!ok);
    assert!(err.contains("venues: arena"), "{err}");

    // An export never overwrites an earlier one.
    let export = d.join("audit");
    let (ok, out, err) = run_logged(
        agg()
            .args(["audit", "export", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&export),
        &d.join("export.log"),
    );
    assert!(ok, "{err}");
    // The printed verify command runs as printed: the real verifier key.
    assert!(
        out.contains(&format!("--key {}", d.join("pki/audit.vkey").display())),
        "{out}"
    );
    let (ok, _, err) = run_logged(
        agg()
            .args(["audit", "export", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&export),
        &d.join("export2.log"),
    );
    assert!(!ok && err.contains("not empty"), "{err}");

    // The signing key given to `audit verify` by mistake: use the .vkey.
    let (ok, _, err) = run_logged(
        agg()
            .args(["audit", "verify"])
            .arg(&export)
            .arg("--key")
            .arg(d.join("pki/audit.key")),
        &d.join("verify.log"),
    );
    assert!(!ok && err.contains(".vkey"), "{err}");
    let (ok, out, err) = run_logged(
        agg()
            .args(["audit", "verify"])
            .arg(&export)
            .arg("--key")
            .arg(d.join("pki/audit.vkey")),
        &d.join("verify2.log"),
    );
    assert!(ok && out.starts_with("OK"), "{out}{err}");

    // `model pull` with a certificate of the wrong role says which role it
    // needs, naming the endpoint and the certificate, not tonic's status.
    let pki = d.join("pki");
    let (ok, _, err) = run_logged(
        agg()
            .args([
                "model",
                "pull",
                "--name",
                "occupancy-forecaster",
                "--endpoint",
            ])
            .arg(&endpoint)
            .arg("--cert")
            .arg(pki.join("organizer.pem"))
            .arg("--key")
            .arg(pki.join("organizer.key"))
            .arg("--ca")
            .arg(pki.join("ca.pem"))
            .arg("--out")
            .arg(d.join("pulled")),
        &d.join("pull.log"),
    );
    assert!(!ok, "an organizer cannot pull models");
    assert!(err.contains("`ml` role certificate"), "{err}");
    assert!(
        err.contains(&endpoint) && err.contains("organizer.pem"),
        "{err}"
    );
    assert!(
        !err.contains("status:") && !err.contains("metadata"),
        "{err}"
    );
    assert!(!d.join("pulled").exists(), "nothing written");

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let serve_log = std::fs::read_to_string(d.join("serve.log")).expect("serve log");
    assert!(serve_log.contains("Metrics serving"), "{serve_log}");
    assert!(!endpoint.is_empty());

    // `pki revoke` adds a certificate to the dev PKI's CRL once.
    let revoke = |log: &str| {
        run_logged(
            agg()
                .args(["pki", "revoke", "--dir"])
                .arg(d.join("pki"))
                .arg("--cert")
                .arg(d.join("pki/node-2.pem")),
            &d.join(log),
        )
    };
    let (ok, out, err) = revoke("revoke.log");
    assert!(
        ok && out.contains("Revoked") && out.contains("lists 1 certificate"),
        "{out}{err}"
    );
    let (ok, _, err) = revoke("revoke2.log");
    assert!(!ok && err.contains("already revoked"), "{err}");

    // No issue numbers in --help.
    for (b, sub) in [
        ("veil-aggregator", ""),
        ("veil-aggregator", "serve"),
        ("veil-aggregator", "report"),
        ("veil-node", ""),
        ("veil-node", "run"),
    ] {
        let mut c = Command::new(bin(b));
        if !sub.is_empty() {
            c.arg(sub);
        }
        let help =
            String::from_utf8_lossy(&c.arg("--help").output().expect("help").stdout).to_lowercase();
        assert!(!help.contains("issue "), "{b} {sub} --help: {help}");
    }
}
