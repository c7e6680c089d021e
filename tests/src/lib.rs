//! Shared harness for Veil's end-to-end tests: a per-test dev PKI, an
//! aggregator on 127.0.0.1:0 with a temporary SQLite file, and mTLS clients
//! with any of the PKI's certificates (or none, or a foreign CA's).

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
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), veil_aggregator::server::ServerError>>>,
}

/// Installs the rustls ring provider once per process.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Writes an aggregator config for `venue` with `nodes` registered nodes.
pub fn write_aggregator_config(dir: &Path, nodes: &[&str], listen: &str) -> PathBuf {
    let list: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
    let text = format!(
        "listen = \"{listen}\"\ndatabase = \"sqlite://aggregator.db\"\n\n\
         [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\n\n\
         [[venue]]\nname = \"{VENUE}\"\nnodes = [{}]\n\n\
         [[principal]]\nid = \"spiffe://veil/role/compliance/officer\"\n",
        list.join(", ")
    );
    let path = dir.join("aggregator.toml");
    std::fs::write(&path, text).expect("write aggregator.toml");
    path
}

impl TestEnv {
    /// PKI with 3 nodes; nodes 1 and 2 registered (node-3 has a valid
    /// certificate but an unknown identity).
    pub async fn start() -> Self {
        install_crypto();
        let dir = tempfile::tempdir().expect("tempdir");
        let pki_dir = dir.path().join("pki");
        pki::init(&pki_dir, VENUE, 3).expect("pki init");
        let cfg_path = write_aggregator_config(dir.path(), &["node-1", "node-2"], "127.0.0.1:0");
        let cfg = veil_aggregator::Config::load(&cfg_path).expect("config");
        let bound = veil_aggregator::bind(cfg).await.expect("bind");
        let addr = bound.local_addr();
        let storage = bound.storage().clone();
        let (tx, rx) = oneshot::channel();
        let server = tokio::spawn(bound.serve(async {
            let _ = rx.await;
        }));
        Self {
            dir,
            pki: pki_dir,
            addr,
            storage,
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

/// A valid DP release for `node` of the harness venue.
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
        policy_hash: String::new(),
        lease_id: String::new(),
        sequence: seq,
    }
}

/// Path of a workspace binary (`veil-node`, `veil-aggregator`), built
/// once per test process with the same cargo and profile as the tests, so
/// `cargo test --workspace` alone is enough.
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
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "veil-node",
            "-p",
            "veil-aggregator",
            "--bins",
        ]);
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
