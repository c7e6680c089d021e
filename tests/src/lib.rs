//! Shared harness for Veil's end-to-end tests: a per-test dev PKI, an
//! aggregator on 127.0.0.1:0 with a temporary SQLite file, and mTLS clients
//! with any of the PKI's certificates (or none, or a foreign CA's).
//!
//! With `VEIL_TEST_DATABASE_URL=postgres://USER@HOST:PORT/DB` set, every
//! aggregator the harness configures gets a fresh database of its own
//! (`CREATE DATABASE veil_test_<random>`) on that server instead, so the
//! whole suite runs on PostgreSQL, tests still independent and parallel.

pub mod raw_h2;

use std::path::{Path, PathBuf};

use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use veil_aggregator::{pki, storage::Storage};
use veil_proto::{Mechanism, PrivacyCost, Release, Window};

/// Venue name used by the harness.
pub const VENUE: &str = "arena";

/// A running aggregator with its PKI.
pub struct TestEnv {
    /// Temporary directory holding everything.
    pub dir: tempfile::TempDir,
    /// Where the PKI is.
    pub pki: PathBuf,
    /// Bound address.
    pub addr: std::net::SocketAddr,
    /// The aggregator's storage.
    pub storage: Storage,
    /// The aggregator's audit log.
    pub audit: veil_aggregator::audit::AuditLog,
    /// The aggregator config file.
    pub config: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), veil_aggregator::server::Error>>>,
}

/// Installs the rustls ring provider once per process.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The harness venue's policy: the per person-window protocol-test policy
/// (`tests/policies/per_window.toml`: per-window mechanisms, a venue-day
/// budget), so protocol tests can send per-window releases. The shipped
/// attendee-day policies are tested by the node pipeline and demo tests.
pub const ARENA_POLICY: &str = include_str!("../policies/per_window.toml");

/// SHA-256 of [`ARENA_POLICY`].
pub fn arena_policy_hash() -> String {
    veil_privacy::policy::sha256_hex(ARENA_POLICY.as_bytes())
}

/// Writes an aggregator config (and `policy.toml`, the arena policy) for
/// the harness venue with `nodes` registered nodes. The PKI must be in
/// `dir/pki` (with its `audit.key`). Windows are accepted back to 1970
/// (`ingest.max_window_age = "100y"`) because many tests use tiny Unix times.
pub fn write_aggregator_config(dir: &Path, nodes: &[&str], listen: &str) -> PathBuf {
    write_aggregator_config_with(dir, nodes, listen, ARENA_POLICY, "")
}

/// Like [`write_aggregator_config`] with a given policy text and extra TOML.
pub fn write_aggregator_config_with(
    dir: &Path,
    nodes: &[&str],
    listen: &str,
    policy: &str,
    extra: &str,
) -> PathBuf {
    std::fs::write(dir.join("policy.toml"), policy).expect("write policy");
    let list: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
    let database = test_database_url(dir);
    let text = format!(
        "listen = \"{listen}\"\ndatabase = \"{database}\"\n{extra}\n\
         [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\n\n\
         [audit]\nsigning_key = \"pki/audit.key\"\ncheckpoint_every = 50\n\n\
         [ingest]\nmax_window_age = \"100y\"\n\n\
         [[venue]]\nname = \"{VENUE}\"\nnodes = [{}]\npolicy = \"policy.toml\"\n\n\
         [[principal]]\nid = \"spiffe://veil/role/compliance/officer\"\n\n\
         [[principal]]\nid = \"spiffe://veil/role/organizer/organizer\"\nvenues = [\"{VENUE}\"]\n\n\
         [[principal]]\nid = \"spiffe://veil/role/ml/ml-team\"\n",
        list.join(", ")
    );
    let path = dir.join("aggregator.toml");
    std::fs::write(&path, text).expect("write aggregator.toml");
    path
}

/// The PostgreSQL server URL the suite runs against, if any
/// (`VEIL_TEST_DATABASE_URL`).
pub fn postgres_url() -> Option<String> {
    std::env::var("VEIL_TEST_DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

/// The aggregator database for a test directory: `sqlite://aggregator.db`
/// (relative to the config), or with `VEIL_TEST_DATABASE_URL` a fresh
/// PostgreSQL database made once per directory (its URL is kept in
/// `dir/test-database-url`, so a rewritten config keeps its data).
pub fn test_database_url(dir: &Path) -> String {
    let Some(server) = postgres_url() else {
        return "sqlite://aggregator.db".into();
    };
    let remembered = dir.join("test-database-url");
    if let Ok(url) = std::fs::read_to_string(&remembered) {
        return url;
    }
    let url = create_database(&server);
    std::fs::write(&remembered, &url).expect("remember database url");
    url
}

/// Creates `veil_test_<random>` on the PostgreSQL server `server` and
/// returns its URL (blocking; usable from sync and async code).
pub fn create_database(server: &str) -> String {
    let server = server.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(veil_common::test_util::create_database(
            &server,
            "veil_test",
        ))
        .unwrap_or_else(|e| panic!("VEIL_TEST_DATABASE_URL {server}: {e}"))
        .1
    })
    .join()
    .expect("create database thread")
}

pub use veil_common::test_util::with_database;

/// The database URL an aggregator config in `dir` uses, resolved.
pub fn aggregator_database_url(config: &Path) -> String {
    veil_aggregator::Config::load(config)
        .expect("config")
        .database_url()
}

/// A small pool on an aggregator database (SQLite or PostgreSQL) for tests
/// that look at what was stored.
pub async fn open_any(url: &str) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"))
}

impl TestEnv {
    /// PKI with 3 nodes; nodes 1 and 2 registered (node-3 has a valid
    /// certificate but an unknown identity).
    pub async fn start() -> Self {
        Self::start_with_policy(ARENA_POLICY).await
    }

    /// Like [`TestEnv::start`] with another policy for the venue.
    pub async fn start_with_policy(policy: &str) -> Self {
        Self::start_with(policy, "").await
    }

    /// Like [`TestEnv::start`] with a policy and extra aggregator TOML
    /// (inserted before `[tls]`, e.g. an `[alerts]` section).
    pub async fn start_with(policy: &str, extra: &str) -> Self {
        Self::start_with_nodes(policy, extra, 2).await
    }

    /// Like [`TestEnv::start_with`] with nodes `node-1..=node-<registered>`
    /// registered and one more (`node-<registered + 1>`) with a valid
    /// certificate but an unknown identity.
    pub async fn start_with_nodes(policy: &str, extra: &str, registered: u32) -> Self {
        Self::start_edited(policy, extra, registered, &|text| text).await
    }

    /// Like [`TestEnv::start_with_nodes`], with the config file's text
    /// passed through `edit` before the aggregator loads it (e.g. to add
    /// keys to `[tls]`).
    pub async fn start_edited(
        policy: &str,
        extra: &str,
        registered: u32,
        edit: &dyn Fn(String) -> String,
    ) -> Self {
        install_crypto();
        let dir = tempfile::tempdir().expect("tempdir");
        let pki_dir = dir.path().join("pki");
        pki::init(&pki_dir, VENUE, registered + 1).expect("pki init");
        let names: Vec<String> = (1..=registered).map(|i| format!("node-{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let cfg_path =
            write_aggregator_config_with(dir.path(), &names, "127.0.0.1:0", policy, extra);
        let text = std::fs::read_to_string(&cfg_path).expect("read config");
        std::fs::write(&cfg_path, edit(text)).expect("write config");
        let cfg = veil_aggregator::Config::load(&cfg_path).expect("config");
        let bound = veil_aggregator::bind(cfg).await.expect("bind");
        let addr = bound.local_addr();
        let storage = bound.storage().clone();
        let audit = bound.audit().clone();
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(bound.serve(async {
            let _ = rx.await;
        }));
        Self {
            dir,
            pki: pki_dir,
            addr,
            storage,
            audit,
            config: cfg_path,
            stop: Some(tx),
            server: Some(server),
        }
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// A channel presenting `pki/<name>.pem` (or no certificate for `None`).
    pub async fn channel(&self, name: Option<&str>) -> Result<Channel, tonic::transport::Error> {
        channel_with(
            &self.endpoint(),
            &self.pki.join("ca.pem"),
            name.map(|n| {
                (
                    self.pki.join(format!("{n}.pem")),
                    self.pki.join(format!("{n}.key")),
                )
            }),
        )
        .await
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(s) = self.server.take() {
            s.await.expect("join").expect("serve");
        }
    }
}

/// Connects to `endpoint` trusting `ca`, presenting `identity` files if given.
pub async fn channel_with(
    endpoint: &str,
    ca: &Path,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).expect("read ca")))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).expect("read cert"),
            std::fs::read(key).expect("read key"),
        ));
    }
    Endpoint::from_shared(endpoint.to_owned())?
        .tls_config(tls)?
        .connect()
        .await
}

/// Acquires a lease of `releases` releases of `metric` (epsilon 1 per
/// release, purpose crowd_safety) on the day of Unix ms 0 for the caller,
/// under the policy the aggregator serves.
pub async fn lease(channel: Channel, metric: &str, releases: u32) -> Result<String, tonic::Status> {
    let policy = veil_proto::policy_client::PolicyClient::new(channel.clone())
        .get_policy(veil_proto::GetPolicyRequest {})
        .await?
        .into_inner();
    let resp = veil_proto::ledger_client::LedgerClient::new(channel)
        .acquire_lease(veil_proto::AcquireLeaseRequest {
            day: "1970-01-01".into(),
            metric: metric.into(),
            purpose: "crowd_safety".into(),
            cost_per_release: Some(PrivacyCost {
                epsilon: 1.0,
                rho: 0.0,
            }),
            releases,
            policy_hash: policy.hash,
            stream: None,
        })
        .await?;
    Ok(resp.into_inner().lease_id)
}

/// A valid DP release for `node` of the harness venue under the arena
/// policy (epsilon 1, purpose crowd_safety), charged to `lease_id`.
pub fn release_with_lease(
    node: &str,
    metric: &str,
    window_start_ms: i64,
    value: f64,
    seq: u64,
    lease_id: &str,
) -> Release {
    let mut r = release(node, metric, window_start_ms, value, seq);
    r.lease_id = lease_id.to_owned();
    r
}

/// A DP release for `node` of the harness venue with no lease.
pub fn release(node: &str, metric: &str, window_start_ms: i64, value: f64, seq: u64) -> Release {
    Release {
        idempotency_key: format!("{VENUE}/{node}/{metric}/floor/{window_start_ms}/0"),
        metric: metric.to_owned(),
        zone: "floor".into(),
        window: Some(Window {
            start_ms: window_start_ms,
            length_s: 60,
        }),
        mechanism: Mechanism::DiscreteLaplace as i32,
        value,
        scale: 1.0,
        cost: Some(PrivacyCost {
            epsilon: 1.0,
            rho: 0.0,
        }),
        purpose: "crowd_safety".into(),
        policy_hash: arena_policy_hash(),
        lease_id: String::new(),
        sequence: seq,
        stream: None,
    }
}

/// Path of a workspace binary (`veil-node`, `veil-aggregator`), built
/// once per test process with the same cargo and profile as the tests, so
/// `cargo test --workspace` alone is enough.
///
/// The build selects the whole workspace with its test targets, exactly the
/// package and target selection of `cargo test --workspace`, so cargo
/// resolves the same dependency features and reuses the test build's
/// artifacts: only the binaries themselves are compiled. (Selecting just
/// `-p veil-node -p veil-aggregator --bins` resolves other features and
/// rebuilt a dozen dependencies, minutes on a 2-core machine.)
pub fn bin(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let mut dir = std::env::current_exe().expect("current exe");
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins", "--tests"]);
        if dir.ends_with("release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build for the binaries");
        assert!(
            status.success(),
            "building veil-node and veil-aggregator failed"
        );
    });
    dir.join(name)
}

/// A throwaway PostgreSQL cluster of a test's own (for tests that stop or
/// restart the server, which a shared server cannot allow): `initdb` in a
/// temporary directory, a loopback port, trust auth. As root it runs as
/// the `postgres` user (PostgreSQL refuses root). Stopped and deleted on drop.
pub struct PgCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_root: bool,
}

impl PgCluster {
    /// The PostgreSQL binaries: `VEIL_TEST_PG_BIN`, else the newest
    /// `/usr/lib/postgresql/*/bin` holding `initdb`.
    pub fn bin_dir() -> Option<PathBuf> {
        if let Ok(d) = std::env::var("VEIL_TEST_PG_BIN") {
            let d = PathBuf::from(d);
            return d.join("initdb").exists().then_some(d);
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|d| d.join("initdb").exists())
            .collect();
        dirs.sort();
        dirs.pop()
    }

    /// Starts a fresh cluster, or `None` (with the reason) when PostgreSQL
    /// is not installed.
    pub fn start() -> Result<Self, String> {
        let bin = Self::bin_dir().ok_or("no PostgreSQL binaries (initdb) found")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let uid = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| e.to_string())?;
        let as_root = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        if as_root {
            let ok = std::process::Command::new("chown")
                .arg("postgres:")
                .arg(dir.path())
                .status()
                .map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err("chown to the postgres user failed".into());
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let c = Self {
            dir,
            bin,
            port,
            as_root,
        };
        let data = c.data();
        c.run(
            "initdb",
            &["-D", &data, "-U", "postgres", "-A", "trust", "--no-sync"],
        )?;
        let opts = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
            c.dir.path().display()
        );
        let log = c.dir.path().join("server.log").display().to_string();
        c.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &opts, "-w", "start"],
        )?;
        Ok(c)
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// The server URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: sessions are cut).
    pub fn stop(&self) -> Result<(), String> {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"])
    }

    /// (Re)starts it with the same options (`pg_ctl restart` reuses
    /// them), whether it was running or stopped.
    pub fn restart(&self) -> Result<(), String> {
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-m",
                "fast",
                "-w",
                "restart",
            ],
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
