//! The demo as a new user runs it, then its parts by hand: what it prints
//! about its dashboard, the modes of the files it leaves, and a re-run of
//! one of its nodes against its aggregator (nothing sent, nothing charged).

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use veil_tests::bin;

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `name value` pairs of a node's summary line.
fn pairs(line: &str) -> HashMap<String, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .chunks(2)
        .filter_map(|p| Some((p[0].to_owned(), (*p.get(1)?).to_owned())))
        .collect()
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn budget(cfg: &Path, day: &str) -> String {
    run(
        Command::new(bin("veil-aggregator"))
            .args([
                "budget", "show", "--venue", "arena", "--day", day, "--config",
            ])
            .arg(cfg),
        "budget show",
    )
}

#[test]
fn demo_then_a_node_rerun_against_its_aggregator_sends_and_charges_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("demo");
    let text = run(
        Command::new(bin("veil"))
            .args(["demo", "--duration", "20m", "--attendees", "2000", "--out"])
            .arg(&out),
        "veil demo",
    );

    // The dashboard URL printed mid-run is dead once the run ends: the
    // output says so and names `--serve`, at the URL and at the end.
    let url_line = text
        .lines()
        .find(|l| l.contains("/?token=veil_"))
        .unwrap_or_else(|| panic!("no dashboard URL:\n{text}"));
    assert!(
        url_line.contains("only while this run lasts") && url_line.contains("--serve"),
        "{url_line}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("stopped with this run") && l.contains("--serve")),
        "{text}"
    );

    // What the demo leaves is owner-only, like its keys.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for f in [
            "aggregator.db",
            "node-1-outbox.db",
            "node-2-outbox.db",
            "node-3-outbox.db",
            "pki/audit.key",
        ] {
            let mode = std::fs::metadata(out.join(f))
                .unwrap_or_else(|e| panic!("{f}: {e}"))
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f} is {:o}", mode & 0o777);
        }
    }

    // The demo's aggregator again, by hand, and node-1 re-run on its input.
    let day = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Budget of venue arena on "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no budget day:\n{text}"))
        .to_owned();
    let cfg = out.join("aggregator.toml");
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
        .expect("listening line");
    let _serving = Serving(child);
    assert!(line.starts_with("listening on "), "{line:?}");
    let before = budget(&cfg, &day);

    let mut node = Command::new(bin("veil-node"))
        .args(["run", "--config"])
        .arg(out.join("node-1.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node");
    let t0 = Instant::now();
    while node.try_wait().expect("wait").is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the re-run did not end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = node.wait().expect("node status");
    let mut report = String::new();
    std::io::Read::read_to_string(&mut node.stdout.take().expect("stdout"), &mut report)
        .expect("node stdout");
    assert!(status.success(), "{status}: {report}");
    let summary = pairs(report.lines().next().unwrap_or_default());
    for (k, v) in [
        ("releases", "0"),
        ("accepted", "0"),
        ("duplicate", "0"),
        ("rejected", "0"),
    ] {
        assert_eq!(summary.get(k).map(String::as_str), Some(v), "{k}: {report}");
    }
    let skipped = pairs(report.lines().nth(1).unwrap_or_default());
    let skipped: u64 = skipped
        .get("already_released_events")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(skipped > 0, "{report}");
    assert!(report.contains("Nothing new to release"), "{report}");
    assert_eq!(budget(&cfg, &day), before, "the re-run changed the budget");
}
