//! Edge resilience over real processes and files: the aggregator binary
//! SIGKILLed while nodes upload, a node SIGKILLed while draining, an
//! aggregator outage with a growing outbox, corrupt outbox records and
//! files, certificate refusals, SIGTERM on the node, window-age refusals,
//! duplicate and conflicting resubmissions.

use std::{
    collections::{BTreeSet, HashMap},
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    str::FromStr,
    time::{Duration, Instant},
};

use sqlx::{
    Row, SqlitePool,
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
};
use veil_node::simulate::{SimConfig, Simulation, VenueKind, ZoneRole};
use veil_proto::{AckStatus, SubmitReleasesRequest, ingest_client::IngestClient};
use veil_tests::{
    TestEnv, VENUE, aggregator_database_url, bin, lease, open_any, release_with_lease,
    write_aggregator_config,
};

// ---------------------------------------------------------------- helpers

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `veil-aggregator serve` process on a fixed port.
struct Agg {
    child: Child,
    cfg: PathBuf,
}

impl Agg {
    fn start(cfg: &Path) -> Self {
        let mut child = Command::new(bin("veil-aggregator"))
            .args(["serve", "--config"])
            .arg(cfg)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn aggregator");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("listening line");
        assert!(line.starts_with("listening on "), "{line:?}");
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        Self {
            child,
            cfg: cfg.to_owned(),
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        *self = Self::start(&self.cfg);
    }
}

impl Drop for Agg {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A PKI (3 nodes) and an aggregator config on a free port in `dir`.
fn aggregator_setup(dir: &Path, nodes: &[&str]) -> (PathBuf, String) {
    veil_aggregator::pki::init(&dir.join("pki"), VENUE, 3).expect("pki");
    let port = free_port();
    let cfg = write_aggregator_config(dir, nodes, &format!("127.0.0.1:{port}"));
    (cfg, format!("https://127.0.0.1:{port}"))
}

/// Simulated arena events (recent, so inside the default window age) and the
/// `[[zone]]` TOML for one gate and one camera zone.
fn write_events(dir: &Path, name: &str, seed: u64, minutes: u64) -> (PathBuf, String) {
    let start = (now_ms() - 2 * 3_600_000) / 60_000 * 60_000;
    let mut cfg = SimConfig::new(
        VenueKind::Arena,
        seed,
        Duration::from_secs(minutes * 60),
        start,
    );
    cfg.attendees = Some(300);
    let sim = Simulation::new(cfg).expect("sim");
    let mut events = Vec::new();
    sim.write_events(0, &mut events).expect("events");
    let path = dir.join(name);
    std::fs::write(&path, &events).expect("write events");
    let gate = sim
        .zones()
        .iter()
        .find(|z| z.role == ZoneRole::Gate)
        .expect("gate");
    let other = sim
        .zones()
        .iter()
        .find(|z| z.role != ZoneRole::Gate)
        .expect("zone");
    let zones = format!(
        "\n[[zone]]\nname = \"{}\"\ngate = true\n\n[[zone]]\nname = \"{}\"\ncameras = 1\n",
        gate.name, other.name
    );
    (path, zones)
}

/// Writes `dir/<node>.toml`.
fn node_toml(
    dir: &Path,
    node: &str,
    endpoint: &str,
    input: &str,
    zones: &str,
    aggregator_extra: &str,
    extra: &str,
) -> PathBuf {
    let text = format!(
        "venue = \"{VENUE}\"\nnode_id = \"{node}\"\n\n\
         [aggregator]\nendpoint = \"{endpoint}\"\nca = \"pki/ca.pem\"\ncert = \"pki/{node}.pem\"\nkey = \"pki/{node}.key\"\nmax_backoff = \"500ms\"\n{aggregator_extra}\n\
         [input]\npath = \"{input}\"\n\n[windows]\nlength = \"10s\"\nlateness = \"5s\"\n\n\
         [outbox]\npath = \"{node}-outbox.db\"\n{extra}\n{zones}"
    );
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(&path, text).expect("write node config");
    path
}

fn spawn_node(cfg: &Path, stdin: Stdio) -> Child {
    let log = std::fs::File::create(cfg.with_extension("log")).expect("log file");
    Command::new(bin("veil-node"))
        .args(["--log-format", "text", "run", "--config"])
        .arg(cfg)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn node")
}

/// Waits for `child` (at most `limit`) and parses its `name value` report.
fn finish(mut child: Child, limit: Duration, what: &str) -> HashMap<String, u64> {
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        std::io::Read::read_to_string(&mut s, &mut out).expect("stdout");
    }
    assert!(status.success(), "{what}: {status}; stdout: {out}");
    let first = out.lines().next().unwrap_or_default();
    let words: Vec<&str> = first.split_whitespace().collect();
    words
        .chunks(2)
        .filter_map(|p| Some((p[0].to_owned(), p.get(1)?.parse().ok()?)))
        .collect()
}

async fn open_db(path: &Path) -> SqlitePool {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .expect("url")
        .busy_timeout(Duration::from_secs(10));
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .expect("open db")
}

/// (idempotency key, sequence) of `node`'s stored releases, in insertion
/// order; `db` is the aggregator's database URL (SQLite or PostgreSQL).
async fn stored(db: &str, node: &str) -> Vec<(String, i64)> {
    let pool = open_any(db).await;
    let rows =
        sqlx::query("SELECT idempotency_key, sequence FROM releases WHERE node = $1 ORDER BY id")
            .bind(node)
            .fetch_all(&pool)
            .await
            .expect("query releases");
    pool.close().await;
    rows.iter()
        .map(|r| (r.get::<String, _>(0), r.get::<i64, _>(1)))
        .collect()
}

/// Keys waiting in a node's outbox.
async fn outbox_keys(db: &Path) -> Vec<String> {
    let pool = open_db(db).await;
    let keys = sqlx::query_scalar("SELECT idempotency_key FROM outbox ORDER BY seq")
        .fetch_all(&pool)
        .await
        .expect("query outbox");
    pool.close().await;
    keys
}

fn assert_unique(keys: &[(String, i64)]) -> BTreeSet<String> {
    let set: BTreeSet<String> = keys.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(set.len(), keys.len(), "a key stored twice");
    set
}

async fn wait_until<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status(cfg: &Path) -> String {
    let out = Command::new(bin("veil-node"))
        .args(["status", "--config"])
        .arg(cfg)
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status_value(text: &str, name: &str) -> String {
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no `{name}` in {text}"))
        .trim()
        .to_owned()
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_sigkilled_repeatedly_while_nodes_upload_stores_every_release_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let nodes = ["node-1", "node-2", "node-3"];
    let (cfg, endpoint) = aggregator_setup(d, &nodes);
    let db = aggregator_database_url(&d.join("aggregator.toml"));
    let mut agg = Agg::start(&cfg);
    let mut children = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (events, zones) = write_events(d, &format!("{node}.jsonl"), 40 + i as u64, 10);
        let input = events
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let ncfg = node_toml(d, node, &endpoint, &input, &zones, "batch = 4", "");
        children.push((node, ncfg.clone(), spawn_node(&ncfg, Stdio::null())));
    }
    // Random kill moments from a fixed-seed LCG (reproducible).
    let mut rng: u64 = 0x5eed_1234_abcd_0001;
    let mut next = |lo: u64, hi: u64| {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        lo + (rng >> 33) % (hi - lo)
    };
    let mut committed: BTreeSet<String> = BTreeSet::new();
    let mut kills = 0;
    while kills < 12 {
        tokio::time::sleep(Duration::from_millis(next(150, 600))).await;
        agg.kill9();
        kills += 1;
        // What was committed before the kill is all still there.
        let mut now = BTreeSet::new();
        for node in nodes {
            now.extend(assert_unique(&stored(&db, node).await));
        }
        assert!(committed.is_subset(&now), "a committed release vanished");
        committed = now;
        tokio::time::sleep(Duration::from_millis(next(50, 400))).await;
        agg.restart();
    }
    let mut total = 0;
    for (node, ncfg, child) in children {
        let report = finish(child, Duration::from_secs(120), node);
        let produced = report["releases"];
        assert!(produced > 50, "{node}: {report:?}");
        assert_eq!(report["outbox_depth"], 0, "{node}: {report:?}");
        assert_eq!(report["rejected"], 0, "{node}: {report:?}");
        assert_eq!(
            report["accepted"] + report["duplicate"],
            produced,
            "{node}: {report:?}"
        );
        let keys = stored(&db, node).await;
        assert_unique(&keys);
        assert_eq!(
            keys.len() as u64,
            produced,
            "{node}: every release stored once"
        );
        assert!(
            outbox_keys(&ncfg.with_file_name(format!("{node}-outbox.db")))
                .await
                .is_empty()
        );
        total += produced;
    }
    assert!(committed.len() as u64 <= total);
    // The release's own audit entry exists once per stored release.
    let pool = open_any(&db).await;
    let entries: Vec<String> = sqlx::query_scalar("SELECT entry FROM audit_log")
        .fetch_all(&pool)
        .await
        .expect("audit");
    let shas: Vec<String> = sqlx::query_scalar("SELECT content_sha256 FROM releases")
        .fetch_all(&pool)
        .await
        .expect("shas");
    let mut allowed: HashMap<String, u32> = HashMap::new();
    for e in &entries {
        let v: serde_json::Value = serde_json::from_str(e).expect("entry json");
        if v["action"] == "release" && v["release_sha256"].as_str().is_some_and(|s| !s.is_empty()) {
            *allowed
                .entry(v["release_sha256"].as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    for sha in &shas {
        assert_eq!(allowed.get(sha), Some(&1), "one audit entry per release");
    }
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sigkilled_while_draining_restarts_with_nothing_lost_or_doubled() {
    let env = TestEnv::start().await;
    let d = env.dir.path();
    let (_, zones) = write_events(d, "events.jsonl", 7, 10);
    std::fs::write(d.join("empty.jsonl"), "").expect("empty");
    // One release per call: the drain is slow enough to be caught mid-way.
    let cfg = node_toml(
        d,
        "node-1",
        &env.endpoint(),
        "events.jsonl",
        &zones,
        "batch = 1",
        "",
    );
    let outbox = d.join("node-1-outbox.db");
    let mut child = spawn_node(&cfg, Stdio::null());
    let storage = env.storage.clone();
    wait_until(Duration::from_secs(60), "the first acks", || async {
        storage.count_releases().await.unwrap_or(0) >= 20
    })
    .await;
    child.kill().expect("SIGKILL node");
    child.wait().expect("reap");
    let db = aggregator_database_url(&d.join("aggregator.toml"));
    let before = stored(&db, "node-1").await;
    let pending = outbox_keys(&outbox).await;
    assert!(!pending.is_empty(), "killed while draining");
    let mut expected = assert_unique(&before);
    expected.extend(pending.iter().cloned());
    // Restart on no new input: only the outbox drains.
    let cfg = node_toml(
        d,
        "node-1",
        &env.endpoint(),
        "empty.jsonl",
        &zones,
        "batch = 1",
        "",
    );
    let report = finish(
        spawn_node(&cfg, Stdio::null()),
        Duration::from_secs(90),
        "restart",
    );
    assert_eq!(report["rejected"], 0, "{report:?}");
    assert_eq!(report["outbox_depth"], 0, "{report:?}");
    assert_eq!(
        report["accepted"] + report["duplicate"],
        pending.len() as u64,
        "{report:?}"
    );
    assert!(
        report["duplicate"] <= 1,
        "at most the batch in flight: {report:?}"
    );
    let after = stored(&db, "node-1").await;
    assert_eq!(
        assert_unique(&after),
        expected,
        "nothing lost, nothing doubled"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregator_outage_backlog_drains_in_order_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (cfg, endpoint) = aggregator_setup(d, &["node-1", "node-2"]);
    let db = aggregator_database_url(&d.join("aggregator.toml"));
    let mut agg = Agg::start(&cfg);
    let (events, zones) = write_events(d, "events.jsonl", 9, 10);
    let text = std::fs::read_to_string(&events).expect("events");
    let lines: Vec<&str> = text.lines().collect();
    let (head, tail) = lines.split_at(lines.len() / 4);
    // Leases cover 100 windows, so the node keeps releasing while the
    // ledger is away (fail-closed: without a lease nothing is released).
    let ncfg = node_toml(
        d,
        "node-1",
        &endpoint,
        "-",
        &zones,
        "batch = 50",
        "\n[privacy]\nlease_windows = 100\n",
    );
    let mut node = spawn_node(&ncfg, Stdio::piped());
    let mut stdin = node.stdin.take().expect("stdin");
    for l in head {
        writeln!(stdin, "{l}").expect("feed");
    }
    stdin.flush().expect("flush");
    let db2 = db.clone();
    wait_until(Duration::from_secs(60), "first releases stored", || {
        let db = db2.clone();
        async move { !stored(&db, "node-1").await.is_empty() }
    })
    .await;
    agg.kill9();
    for l in tail {
        writeln!(stdin, "{l}").expect("feed");
    }
    stdin.flush().expect("flush");
    let outbox = d.join("node-1-outbox.db");
    let mut depth = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        depth = outbox_keys(&outbox).await.len();
        if depth > 50 {
            break;
        }
    }
    assert!(depth > 50, "the outbox grows while the aggregator is down");
    let st = status(&ncfg);
    assert!(st.contains("NAME"), "human table: {st}");
    assert_eq!(status_value(&st, "connection"), "unreachable", "{st}");
    assert!(
        status_value(&st, "outbox_depth")
            .parse::<u64>()
            .expect("depth")
            > 0
    );
    let oldest = status_value(&st, "oldest_pending_window");
    assert!(
        oldest.len() == 20 && oldest.as_bytes()[10] == b'T' && oldest.ends_with('Z'),
        "RFC 3339: {oldest}"
    );
    drop(stdin);
    tokio::time::sleep(Duration::from_secs(2)).await;
    agg.restart();
    let report = finish(node, Duration::from_secs(90), "node");
    assert_eq!(report["outbox_depth"], 0, "{report:?}");
    assert_eq!(report["rejected"], 0, "{report:?}");
    let keys = stored(&db, "node-1").await;
    assert_unique(&keys);
    assert_eq!(keys.len() as u64, report["releases"], "{report:?}");
    assert!(
        keys.windows(2).all(|w| w[0].1 < w[1].1),
        "stored in outbox order"
    );
    let st = status(&ncfg);
    assert_eq!(status_value(&st, "connection"), "connected", "{st}");
    assert_eq!(status_value(&st, "outbox_depth"), "0", "{st}");
    assert_ne!(status_value(&st, "last_upload"), "-", "{st}");
    // While the aggregator was away, the node said so naming where it was.
    let log = std::fs::read_to_string(ncfg.with_extension("log")).expect("node log");
    let warning = log
        .lines()
        .find(|l| l.contains("Upload failed"))
        .unwrap_or_else(|| panic!("no upload warning while the aggregator was down: {log}"));
    assert!(warning.contains(&endpoint), "names the endpoint: {warning}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_outbox_record_is_skipped_reported_and_the_rest_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (acfg, endpoint) = aggregator_setup(d, &["node-1", "node-2"]);
    let db = aggregator_database_url(&d.join("aggregator.toml"));
    let mut agg = Agg::start(&acfg);
    let (_, zones) = write_events(d, "events.jsonl", 3, 5);
    std::fs::write(d.join("empty.jsonl"), "").expect("empty");
    // A backlog: the aggregator dies after the first acks; the node
    // finishes its input into the outbox and is stopped with SIGTERM.
    let cfg = node_toml(
        d,
        "node-1",
        &endpoint,
        "events.jsonl",
        &zones,
        "batch = 1",
        "\n[privacy]\nlease_windows = 100\n",
    );
    let child = spawn_node(&cfg, Stdio::null());
    let db2 = db.clone();
    wait_until(Duration::from_secs(60), "first releases stored", || {
        let db = db2.clone();
        async move { !stored(&db, "node-1").await.is_empty() }
    })
    .await;
    agg.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let first = finish(child, Duration::from_secs(15), "node after SIGTERM");
    let outbox = d.join("node-1-outbox.db");
    let pending = outbox_keys(&outbox).await;
    assert!(pending.len() > 5, "{first:?}");
    assert_eq!(first["outbox_depth"], pending.len() as u64, "{first:?}");
    // Modify payload bytes of two records in place (as a bad sector would).
    let pool = open_db(&outbox).await;
    let bad: Vec<String> =
        sqlx::query_scalar("SELECT idempotency_key FROM outbox ORDER BY seq LIMIT 2 OFFSET 2")
            .fetch_all(&pool)
            .await
            .expect("keys");
    sqlx::query("UPDATE outbox SET payload = substr(payload, 1, 10) || x'ff' || substr(payload, 12) WHERE idempotency_key IN (?, ?)")
        .bind(&bad[0])
        .bind(&bad[1])
        .execute(&pool)
        .await
        .expect("corrupt");
    pool.close().await;
    let before = stored(&db, "node-1").await;
    agg.restart();
    let cfg = node_toml(d, "node-1", &endpoint, "empty.jsonl", &zones, "", "");
    let report = finish(
        spawn_node(&cfg, Stdio::null()),
        Duration::from_secs(60),
        "node",
    );
    assert_eq!(report["corrupt"], 2, "{report:?}");
    assert_eq!(
        report["accepted"] + report["duplicate"],
        pending.len() as u64 - 2,
        "{report:?}"
    );
    assert_eq!(report["outbox_depth"], 0, "{report:?}");
    let log = std::fs::read_to_string(cfg.with_extension("log")).expect("log");
    assert!(
        log.contains("Corrupt outbox records found at start-up"),
        "{log}"
    );
    let after = assert_unique(&stored(&db, "node-1").await);
    let mut expected = assert_unique(&before);
    expected.extend(pending.iter().filter(|k| !bad.contains(k)).cloned());
    assert_eq!(after, expected, "the rest is sent, once");
    let st = status(&cfg);
    assert_eq!(status_value(&st, "corrupt_records_total"), "2", "{st}");

    // A file that is not a database at all: moved aside, the node runs.
    std::fs::write(&outbox, b"this is not a sqlite file, just garbage bytes....................................................................")
        .expect("garbage");
    let _ = std::fs::remove_file(d.join("node-1-outbox.db-wal"));
    let _ = std::fs::remove_file(d.join("node-1-outbox.db-shm"));
    let report = finish(
        spawn_node(&cfg, Stdio::null()),
        Duration::from_secs(60),
        "node",
    );
    assert_eq!(report["outbox_depth"], 0, "{report:?}");
    let aside = std::fs::read_dir(d)
        .expect("dir")
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .contains("node-1-outbox.db.corrupt-")
        });
    assert!(aside, "the unreadable file is kept aside");
    let st = status(&cfg);
    assert_ne!(status_value(&st, "quarantined_file"), "-", "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_foreign_ca_certificate_exits_with_an_operator_error() {
    let env = TestEnv::start().await;
    let d = env.dir.path();
    let foreign = d.join("foreign");
    veil_aggregator::pki::init(&foreign, VENUE, 1).expect("foreign pki");
    std::fs::copy(foreign.join("node-1.pem"), d.join("pki/node-9.pem")).expect("copy");
    std::fs::copy(foreign.join("node-1.key"), d.join("pki/node-9.key")).expect("copy");
    std::fs::write(d.join("empty.jsonl"), "").expect("empty");
    let zones = "\n[[zone]]\nname = \"floor\"\ncameras = 1\n";
    let cfg = node_toml(d, "node-9", &env.endpoint(), "empty.jsonl", zones, "", "");
    let text = std::fs::read_to_string(&cfg)
        .expect("cfg")
        .replace("node_id = \"node-9\"", "node_id = \"node-1\"");
    std::fs::write(&cfg, text).expect("cfg");
    let mut child = spawn_node(&cfg, Stdio::null());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let log = std::fs::read_to_string(cfg.with_extension("log")).unwrap_or_default();
            panic!("node kept retrying a refused handshake: {log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let log = std::fs::read_to_string(cfg.with_extension("log")).expect("log");
    assert!(log.contains("operator action"), "{log}");
    assert!(log.contains("ERROR"), "{log}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_binary_stops_promptly_on_sigterm_with_exit_0() {
    let env = TestEnv::start().await;
    let d = env.dir.path();
    let (events, zones) = write_events(d, "events.jsonl", 5, 10);
    let cfg = node_toml(d, "node-1", &env.endpoint(), "-", &zones, "", "");
    let mut child = spawn_node(&cfg, Stdio::piped());
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&std::fs::read(&events).expect("events"))
        .expect("feed");
    stdin.flush().expect("flush");
    let storage = env.storage.clone();
    wait_until(Duration::from_secs(60), "releases stored", || async {
        storage.count_releases().await.unwrap_or(0) > 0
    })
    .await;
    // stdin stays open: the node is idle, waiting for sensors.
    let t0 = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let report = finish(child, Duration::from_secs(15), "node after SIGTERM");
    assert!(t0.elapsed() < Duration::from_secs(15));
    assert!(report["releases"] > 0, "{report:?}");
    drop(stdin);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_resubmission_is_audited_and_windows_out_of_range_are_refused() {
    let env = TestEnv::start().await;
    let ch = env.channel(Some("node-1")).await.expect("connect");
    let lease_id = lease(ch.clone(), "occupancy", 5).await.expect("lease");
    let mut client = IngestClient::new(ch);
    let r = release_with_lease("node-1", "occupancy", 600_000, 3.0, 1, &lease_id);
    let submit = |rs| SubmitReleasesRequest { releases: rs };
    let first = client
        .submit_releases(submit(vec![r.clone()]))
        .await
        .expect("first")
        .into_inner();
    assert_eq!(first.acks[0].status, AckStatus::Accepted as i32);
    let entries_before = env.audit.size().await;
    let again = client
        .submit_releases(submit(vec![r.clone()]))
        .await
        .expect("dup")
        .into_inner();
    assert_eq!(again.acks[0].status, AckStatus::Duplicate as i32);
    assert_eq!(
        env.audit.size().await,
        entries_before,
        "a duplicate adds no audit entry"
    );
    let mut changed = r.clone();
    changed.value = 4.0;
    let conflict = client
        .submit_releases(submit(vec![changed]))
        .await
        .expect("conflict")
        .into_inner();
    assert_eq!(conflict.acks[0].status, AckStatus::Conflict as i32);
    assert_eq!(
        env.audit.size().await,
        entries_before + 1,
        "the conflict is audited"
    );
    let pool = env.storage.reads().clone();
    let last: String = sqlx::query_scalar("SELECT entry FROM audit_log ORDER BY seq DESC LIMIT 1")
        .fetch_one(&pool)
        .await
        .expect("entry");
    assert!(last.contains("release.conflict"), "{last}");
    let stored = env.storage.releases_for_venue(VENUE).await.expect("query");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].value, 3.0, "original kept");

    // Too far in the future (default ingest.max_future_skew = 1 day).
    let future = (now_ms() / 60_000 + 3 * 24 * 60) * 60_000;
    let resp = client
        .submit_releases(submit(vec![release_with_lease(
            "node-1",
            "occupancy",
            future,
            1.0,
            2,
            &lease_id,
        )]))
        .await
        .expect("future")
        .into_inner();
    assert_eq!(resp.acks[0].status, AckStatus::Invalid as i32);
    assert!(
        resp.acks[0].reason.contains("max_future_skew"),
        "{}",
        resp.acks[0].reason
    );
    // Older than the dedup-key retention (checked against the limits).
    let limits = veil_aggregator::ingest::Limits {
        max_window_age: Duration::from_secs(7 * 86_400),
        ..Default::default()
    };
    let old = veil_aggregator::ingest::validate(
        &r,
        VENUE,
        "node-1",
        &veil_tests::arena_policy_hash(),
        &limits,
    )
    .expect("valid");
    let err =
        veil_aggregator::ingest::check_window_time(&old, now_ms(), &limits).expect_err("too old");
    assert!(err.1.contains("max_window_age"), "{}", err.1);
    let mut recent = old.clone();
    recent.window_start_ms = (now_ms() - 3_600_000) / 60_000 * 60_000;
    assert!(veil_aggregator::ingest::check_window_time(&recent, now_ms(), &limits).is_ok());
    assert_eq!(env.storage.count_releases().await.expect("count"), 1);
    env.stop().await;
}
