//! Several aggregator replicas on one PostgreSQL database, and PostgreSQL
//! going away under load. Skipped (with a message) unless
//! `VEIL_TEST_DATABASE_URL` names a PostgreSQL server.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::Arc,
    time::Duration,
};

use sqlx::Row;
use tokio::sync::Mutex;
use tonic::Code;
use veil_aggregator::{audit::AuditLog, storage::Storage};
use veil_privacy::audit::{ExportInput, verify_export};
use veil_proto::{AckStatus, SubmitReleasesRequest, ingest_client::IngestClient};
use veil_tests::{
    ARENA_POLICY, PgCluster, VENUE, channel_with, install_crypto, lease, open_any, postgres_url,
    release_with_lease, write_aggregator_config_with,
};

/// An in-process replica serving `config`.
struct Replica {
    endpoint: String,
    storage: Storage,
    audit: AuditLog,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), veil_aggregator::server::Error>>,
}

impl Replica {
    async fn start(config: &Path) -> Self {
        let cfg = veil_aggregator::Config::load(config).expect("config");
        let bound = veil_aggregator::bind(cfg).await.expect("bind");
        let endpoint = format!("https://127.0.0.1:{}", bound.local_addr().port());
        let storage = bound.storage().clone();
        let audit = bound.audit().clone();
        let (stop, rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(bound.serve(async {
            let _ = rx.await;
        }));
        Self {
            endpoint,
            storage,
            audit,
            stop,
            server,
        }
    }

    async fn channel(&self, pki: &Path, node: &str) -> tonic::transport::Channel {
        channel_with(
            &self.endpoint,
            &pki.join("ca.pem"),
            Some((
                pki.join(format!("{node}.pem")),
                pki.join(format!("{node}.key")),
            )),
        )
        .await
        .expect("connect")
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.expect("join").expect("serve");
    }
}

fn skip(test: &str) -> bool {
    if postgres_url().is_none() {
        eprintln!("{test}: skipped: set VEIL_TEST_DATABASE_URL=postgres://... to run it");
        return true;
    }
    false
}

const NODES: usize = 8;
const LEASE: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_overspend_never_double_store_and_export_one_log() {
    if skip("two_replicas_never_overspend_never_double_store_and_export_one_log") {
        return;
    }
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    veil_aggregator::pki::init(&pki, VENUE, NODES as u32).expect("pki");
    let nodes: Vec<String> = (1..=NODES).map(|i| format!("node-{i}")).collect();
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    // A day budget of 60 epsilon: 15 leases of 4 releases at epsilon 1,
    // far fewer than the nodes ask for, so leases race for the last of it.
    let budget = 60.0;
    let policy = ARENA_POLICY.replace(
        "epsilon_per_day = 2500.0",
        &format!("epsilon_per_day = {budget}"),
    );
    let cfg = write_aggregator_config_with(dir.path(), &names, "127.0.0.1:0", &policy, "");
    let policy_hash = veil_privacy::policy::sha256_hex(policy.as_bytes());
    let a = Replica::start(&cfg).await;
    let b = Replica::start(&cfg).await;

    // Every node leases alternately on each replica until the budget is
    // gone, and sends each batch to both replicas at once.
    let acks: Arc<Mutex<Vec<(String, i32)>>> = Arc::default();
    let mut tasks = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let ch = [a.channel(&pki, node).await, b.channel(&pki, node).await];
        let node = node.clone();
        let acks = acks.clone();
        let policy_hash = policy_hash.clone();
        tasks.push(tokio::spawn(async move {
            let mut window = 0i64;
            let mut leases = 0u32;
            for round in 0.. {
                let l = match lease(ch[(i + round) % 2].clone(), "occupancy", LEASE).await {
                    Ok(l) => l,
                    Err(s) if s.code() == Code::ResourceExhausted => break,
                    Err(s) => panic!("lease: {s}"),
                };
                leases += 1;
                let releases: Vec<_> = (0..LEASE)
                    .map(|_| {
                        window += 1;
                        let mut r = release_with_lease(
                            &node,
                            "occupancy",
                            60_000 * window,
                            window as f64,
                            window as u64,
                            &l,
                        );
                        r.policy_hash = policy_hash.clone();
                        r
                    })
                    .collect();
                let send = |c: &tonic::transport::Channel| {
                    let mut client = IngestClient::new(c.clone());
                    let releases = releases.clone();
                    async move {
                        client
                            .submit_releases(SubmitReleasesRequest { releases })
                            .await
                            .expect("submit")
                            .into_inner()
                            .acks
                    }
                };
                let (x, y) = tokio::join!(send(&ch[0]), send(&ch[1]));
                let mut acks = acks.lock().await;
                for ack in x.into_iter().chain(y) {
                    acks.push((ack.idempotency_key, ack.status));
                }
            }
            leases
        }));
    }
    let mut granted = 0u32;
    for t in tasks {
        granted += t.await.expect("node task");
    }

    // The ledger: never more than the budget, and exactly the leases.
    let report = veil_aggregator::ledger::report(a.storage.reads(), VENUE, "1970-01-01", None)
        .await
        .expect("report");
    assert!(
        report.spent_epsilon <= budget + 1e-9,
        "overspent: {report:?}"
    );
    assert_eq!(
        granted,
        (budget as u32) / LEASE,
        "every lease that fits is granted"
    );
    assert!((report.spent_epsilon - f64::from(granted * LEASE)).abs() < 1e-9);

    // Idempotency across replicas: of the two copies of each release one
    // is accepted and the other is a duplicate; each key stored once.
    let acks = acks.lock().await;
    let mut per_key: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (k, s) in acks.iter() {
        per_key.entry(k).or_default().push(*s);
    }
    for (k, statuses) in &per_key {
        let mut s = statuses.clone();
        s.sort();
        assert_eq!(
            s,
            vec![AckStatus::Accepted as i32, AckStatus::Duplicate as i32],
            "{k}"
        );
    }
    let pool = open_any(&a.storage_url(&cfg)).await;
    let rows = sqlx::query("SELECT idempotency_key, lease_id FROM releases")
        .fetch_all(&pool)
        .await
        .expect("releases");
    let stored: BTreeSet<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
    assert_eq!(stored.len(), rows.len(), "a key stored twice");
    assert_eq!(stored.len(), per_key.len());
    assert_eq!(stored.len() as u32, granted * LEASE);
    // No lease covers more releases than it was granted for.
    let mut per_lease: BTreeMap<String, u32> = BTreeMap::new();
    for r in &rows {
        *per_lease.entry(r.get::<String, _>(1)).or_default() += 1;
    }
    assert!(per_lease.values().all(|n| *n <= LEASE), "{per_lease:?}");
    pool.close().await;

    // One audit log: both replicas export the same bytes, and it verifies.
    let ea = a.audit.export(&a.storage, None, 0).await.expect("export a");
    let eb = b.audit.export(&b.storage, None, 0).await.expect("export b");
    assert_eq!(ea.entries_jsonl, eb.entries_jsonl, "same entries");
    assert_eq!(ea.checkpoint, eb.checkpoint, "same signed checkpoint");
    let vkey = std::fs::read_to_string(pki.join("audit.vkey")).expect("vkey");
    let verified = verify_export(ExportInput {
        entries_jsonl: &ea.entries_jsonl,
        checkpoint: &ea.checkpoint,
        proofs_json: None,
        vkey: vkey.trim(),
        origin: a.audit.origin(),
        previous_checkpoint: None,
        consistency_proof: None,
    });
    assert!(verified.is_ok(), "{verified:?}");
    // 2 policy loads + one lease entry per grant or refusal + one release
    // entry per stored release.
    let lines = ea.entries_jsonl.lines().count();
    assert!(lines >= 2 + granted as usize + stored.len(), "{lines}");

    a.stop().await;
    b.stop().await;
}

impl Replica {
    fn storage_url(&self, cfg: &Path) -> String {
        veil_tests::aggregator_database_url(cfg)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_under_load_loses_nothing_acknowledged() {
    if skip("postgres_restart_under_load_loses_nothing_acknowledged") {
        return;
    }
    let cluster = match PgCluster::start() {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("postgres_restart_under_load_loses_nothing_acknowledged: skipped: {reason}");
            return;
        }
    };
    install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    veil_aggregator::pki::init(&pki, VENUE, 3).expect("pki");
    // This test's database lives on its own cluster, which it restarts.
    let url = veil_tests::create_database(&cluster.url());
    std::fs::write(dir.path().join("test-database-url"), &url).expect("url");
    let cfg = write_aggregator_config_with(
        dir.path(),
        &["node-1", "node-2", "node-3"],
        "127.0.0.1:0",
        ARENA_POLICY,
        "[storage]\nacquire_timeout = \"2s\"\nstatement_timeout = \"5s\"\n",
    );
    let r = Replica::start(&cfg).await;

    // Three nodes submit one release per call, retrying a refused call as
    // a node's outbox would, and remember what was acknowledged.
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let codes: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for node in ["node-1", "node-2", "node-3"] {
        let ch = r.channel(&pki, node).await;
        let l = lease(ch.clone(), "occupancy", 300).await.expect("lease");
        let (acked, codes, stop) = (acked.clone(), codes.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = IngestClient::new(ch);
            let mut window = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && window < 300 {
                window += 1;
                let rel =
                    release_with_lease(node, "occupancy", 60_000 * window, 1.0, window as u64, &l);
                loop {
                    let resp = client
                        .submit_releases(SubmitReleasesRequest {
                            releases: vec![rel.clone()],
                        })
                        .await;
                    match resp {
                        Ok(resp) => {
                            for ack in resp.into_inner().acks {
                                assert!(
                                    ack.status == AckStatus::Accepted as i32
                                        || ack.status == AckStatus::Duplicate as i32,
                                    "{ack:?}"
                                );
                                acked.lock().await.insert(ack.idempotency_key);
                            }
                            break;
                        }
                        Err(s) => {
                            codes.lock().await.insert(format!("{:?}", s.code()));
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }
        }));
    }
    let wait_for = |n: usize| {
        let acked = acked.clone();
        async move {
            while acked.lock().await.len() < n {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for(30).await;
    cluster.stop().expect("stop postgres");
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.restart().expect("start postgres");
    let after = acked.lock().await.len();
    // Acknowledgements resume once the database is back.
    wait_for(after + 30).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        t.await.expect("node task");
    }

    // Calls during the outage failed as Unavailable (never hung, never
    // another code), and everything acknowledged is stored.
    let codes = codes.lock().await.clone();
    assert!(
        codes.iter().all(|c| c == "Unavailable"),
        "codes seen: {codes:?}"
    );
    let pool = open_any(&url).await;
    let stored: BTreeSet<String> = sqlx::query_scalar("SELECT idempotency_key FROM releases")
        .fetch_all(&pool)
        .await
        .expect("releases")
        .into_iter()
        .collect();
    pool.close().await;
    let acked = acked.lock().await.clone();
    assert!(
        acked.is_subset(&stored),
        "acknowledged but lost: {:?}",
        acked.difference(&stored).collect::<Vec<_>>()
    );
    // And the audit log is still one verifiable tree.
    let e = r.audit.export(&r.storage, None, 0).await.expect("export");
    let vkey = std::fs::read_to_string(pki.join("audit.vkey")).expect("vkey");
    let verified = verify_export(ExportInput {
        entries_jsonl: &e.entries_jsonl,
        checkpoint: &e.checkpoint,
        proofs_json: None,
        vkey: vkey.trim(),
        origin: r.audit.origin(),
        previous_checkpoint: None,
        consistency_proof: None,
    });
    assert!(verified.is_ok(), "{verified:?}");
    r.stop().await;
    drop(cluster);
}
