//! `veil-aggregator bench sqlite-floor`: the limit of this machine for
//! durable ingest on SQLite, measured without Veil.
//!
//! It makes the writes one group commit of `bench ingest` must make, and
//! nothing else, straight through SQLite's C API (rusqlite, prepared
//! statements, no async driver, no gRPC, no decisions, no hashing): per
//! release one release row (its duplicate check folded into the insert:
//! `ON CONFLICT DO NOTHING` on the idempotency key, cheaper than the
//! aggregator's separate lookup) and one audit row; per call one lease
//! update; per group one transaction that is durable when COMMIT returns. The file has Veil's schema (its migrations
//! are run first) and its connection settings
//! ([`crate::storage::SQLITE_PRAGMAS`]: WAL, `synchronous = FULL`), and a
//! second connection checkpoints the WAL every
//! [`crate::storage::CHECKPOINT_EVERY`] as the aggregator's checkpointer
//! does. The releases and audit entries are those `bench ingest` sends and
//! writes (same keys, zones, windows, content hashes and canonical JSON),
//! built before each transaction and not timed.
//!
//! Every group takes one call from each of the N nodes (N x B releases per
//! commit): the largest group that N closed-loop clients can offer, so
//! fsyncs are amortised at least as well as in the real server. What it
//! prints is therefore an upper bound for `bench ingest` with the same
//! `--nodes` and `--batch` on the same disk, like `pg_test_fsync` is for
//! PostgreSQL: when `releases_per_s` must exceed it, no change inside Veil
//! can get there on this machine.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use rusqlite::{Connection, params};
use veil_privacy::audit::{AuditEntry, merkle::leaf_hash};

use super::{
    BENCH_POLICY, Figure, LEASE_RELEASES, Pattern, Report, VENUE, bench_release, percentile,
};
use crate::{
    ingest::{Limits, validate},
    policy::sha256_hex,
    storage::{CHECKPOINT_EVERY, SQLITE_PRAGMAS, Storage, StoredRelease},
};

/// Parameters of `bench sqlite-floor`.
#[derive(Debug, Clone)]
pub struct FloorParams {
    /// Nodes: each group holds one call of every node.
    pub nodes: u32,
    /// Releases per call.
    pub batch: usize,
    /// How long groups are committed for.
    pub duration: Duration,
    /// Directory for the temporary database (default: the system's
    /// temporary directory). Put it on the disk the aggregator will use.
    pub dir: Option<PathBuf>,
    /// Shape of each node's release stream (as `bench ingest --pattern`).
    pub pattern: Pattern,
}

/// What a floor run did.
#[derive(Debug, Default)]
pub(crate) struct FloorRun {
    /// Releases committed.
    pub releases: u64,
    /// Wall time of each transaction, BEGIN to COMMIT returned.
    pub commit_ms: Vec<f64>,
    /// Writer thread CPU inside the transactions, if the OS reports it.
    pub writer_cpu: Option<Duration>,
    /// WAL checkpoints that completed meanwhile.
    pub checkpoints: u64,
}

/// One release as the floor writes it: its row and its audit entry.
struct Item {
    release: StoredRelease,
    entry: String,
    leaf: [u8; 32],
}

/// `veil-aggregator bench sqlite-floor`.
pub async fn sqlite_floor(p: FloorParams) -> anyhow::Result<Report> {
    if p.nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    if p.batch == 0 || p.batch > 1000 {
        anyhow::bail!("--batch must be in 1..=1000");
    }
    let dir = match &p.dir {
        Some(d) => tempfile::tempdir_in(d)
            .with_context(|| format!("making a temporary directory in {}", d.display()))?,
        None => tempfile::tempdir()?,
    };
    let db = dir.path().join("floor.db");
    eprintln!("bench: SQLite floor in {}", db.display());
    prepare_schema(&db).await?;
    let params = p.clone();
    let path = db.clone();
    let run = tokio::task::spawn_blocking(move || run_floor(&path, &params))
        .await
        .context("the floor's writer thread panicked")??;

    let mut sorted = run.commit_ms.clone();
    sorted.sort_by(f64::total_cmp);
    let busy_s: f64 = run.commit_ms.iter().sum::<f64>() / 1000.0;
    let per_s = if busy_s > 0.0 {
        run.releases as f64 / busy_s
    } else {
        0.0
    };
    let per_commit = p.nodes as usize * p.batch;
    let mut rows = vec![
        ("database".to_owned(), db.display().to_string()),
        (
            "settings".to_owned(),
            format!("Veil's schema; PRAGMA {}", SQLITE_PRAGMAS.join(", ")),
        ),
        (
            "each commit".to_owned(),
            format!(
                "{} calls x {} releases = {per_commit} releases: lookups, lease updates, release + audit rows",
                p.nodes, p.batch
            ),
        ),
        ("pattern".to_owned(), p.pattern.to_string()),
        ("commits".to_owned(), run.commit_ms.len().to_string()),
        ("releases".to_owned(), run.releases.to_string()),
        (
            "WAL checkpoints (concurrent)".to_owned(),
            run.checkpoints.to_string(),
        ),
    ];
    let mut figures = vec![
        Figure {
            name: "floor_releases_per_s",
            value: per_s,
            unit: "releases/s",
        },
        Figure {
            name: "floor_commit_p50_ms",
            value: percentile(&sorted, 50.0),
            unit: "ms",
        },
        Figure {
            name: "floor_commit_p99_ms",
            value: percentile(&sorted, 99.0),
            unit: "ms",
        },
    ];
    match run.writer_cpu {
        Some(cpu) if run.releases > 0 => figures.push(Figure {
            name: "floor_writer_cpu_us",
            value: cpu.as_secs_f64() * 1e6 / run.releases as f64,
            unit: "us/release",
        }),
        _ => rows.push((
            "writer CPU".to_owned(),
            "not reported by this OS (/proc/thread-self/schedstat)".to_owned(),
        )),
    }
    Ok(Report {
        title: "veil-aggregator bench sqlite-floor: SQLite alone, the writes of durable ingest (an upper bound for bench ingest)".into(),
        rows,
        figures,
    })
}

/// Creates the database with Veil's migrations, then closes it.
async fn prepare_schema(db: &Path) -> anyhow::Result<()> {
    let storage = Storage::open(&format!("sqlite://{}", db.display()))
        .await
        .context("creating the floor database")?;
    storage.close().await;
    Ok(())
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    for pragma in SQLITE_PRAGMAS {
        // journal_mode answers with a row; the others with none.
        conn.query_row(&format!("PRAGMA {pragma}"), [], |_| Ok(()))
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(()),
                e => Err(e),
            })?;
    }
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// CPU time this thread has run, from Linux's schedstat.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Commits groups into the database at `path` (Veil's schema) until
/// `p.duration` has passed; see the module docs for what each holds.
pub(crate) fn run_floor(path: &Path, p: &FloorParams) -> anyhow::Result<FloorRun> {
    let conn = open(path).with_context(|| format!("opening {}", path.display()))?;
    let policy_hash = sha256_hex(BENCH_POLICY.as_bytes());
    let limits = Limits::default();
    let nodes: Vec<String> = (1..=p.nodes).map(|i| format!("node-{i}")).collect();
    let leases: Vec<String> = nodes
        .iter()
        .map(|n| sha256_hex(n.as_bytes())[..32].to_owned())
        .collect();
    for (node, lease) in nodes.iter().zip(&leases) {
        conn.execute(
            "INSERT INTO leases (lease_id, venue, node, day, metric, purpose, epsilon, rho, releases, used, policy_hash, created_ms) \
             VALUES (?1, ?2, ?3, ?4, 'occupancy', 'crowd_safety', ?5, 0, ?6, 0, ?7, 0)",
            params![lease, VENUE, node, super::BENCH_DAY, super::BENCH_EPSILON, LEASE_RELEASES, policy_hash],
        )?;
    }

    // The checkpointer: its own connection, as in the aggregator.
    let stop = Arc::new(AtomicBool::new(false));
    let checkpointer = {
        let stop = stop.clone();
        let conn = open(path)?;
        std::thread::spawn(move || -> rusqlite::Result<u64> {
            let mut done = 0;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(CHECKPOINT_EVERY);
                conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
                done += 1;
            }
            Ok(done)
        })
    };

    let result = commit_groups(&conn, p, &nodes, &leases, &policy_hash, &limits);
    stop.store(true, Ordering::Relaxed);
    let checkpoints = checkpointer
        .join()
        .map_err(|_| anyhow::anyhow!("the checkpointer thread panicked"))?
        .context("checkpointing the floor's WAL")?;
    Ok(FloorRun {
        checkpoints,
        ..result?
    })
}

fn commit_groups(
    conn: &Connection,
    p: &FloorParams,
    nodes: &[String],
    leases: &[String],
    policy_hash: &str,
    limits: &Limits,
) -> anyhow::Result<FloorRun> {
    let mut take = conn.prepare("UPDATE leases SET used = used + ?1 WHERE lease_id = ?2")?;
    let mut insert = conn.prepare(
        "INSERT INTO releases (idempotency_key, content_sha256, venue, node, metric, zone, \
         window_start_ms, window_len_s, mechanism, value, scale, epsilon, rho, purpose, policy_hash, \
         lease_id, sequence, received_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )?;
    let mut append =
        conn.prepare("INSERT INTO audit_log (seq, entry, leaf_hash) VALUES (?1, ?2, ?3)")?;

    let mut run = FloorRun::default();
    let mut cpu = thread_cpu().map(|_| Duration::ZERO);
    let mut next: u64 = 0;
    let mut seq: u64 = 0;
    let deadline = Instant::now() + p.duration;
    while Instant::now() < deadline {
        // Build the group (not timed: this is Veil's work, not SQLite's).
        let now = veil_common::now_ms();
        let mut group = Vec::with_capacity(nodes.len() * p.batch);
        for (node, lease) in nodes.iter().zip(leases) {
            for i in next..next + p.batch as u64 {
                let r = bench_release(node, i, (p.pattern, p.batch), lease, policy_hash);
                let release = validate(&r, VENUE, node, policy_hash, limits)
                    .map_err(|(_, reason)| anyhow::anyhow!("bench release refused: {reason}"))?;
                let entry = AuditEntry {
                    seq,
                    time_ms: now,
                    actor: format!("spiffe://veil/venue/{VENUE}/node/{node}"),
                    venue: VENUE.to_owned(),
                    action: crate::audit::action::RELEASE.to_owned(),
                    decision: "allow".to_owned(),
                    reason: format!("{} charged to lease {}", release.metric, release.lease_id),
                    policy_hash: policy_hash.to_owned(),
                    epsilon: release.epsilon,
                    rho: release.rho,
                    release_sha256: release.content_sha256.clone(),
                }
                .to_canonical_json()?;
                let leaf = *leaf_hash(entry.as_bytes()).as_bytes();
                group.push(Item {
                    release,
                    entry,
                    leaf,
                });
                seq += 1;
            }
        }
        next += p.batch as u64;

        // The transaction: what a group commit must write, durable at COMMIT.
        let cpu_before = thread_cpu();
        let started = Instant::now();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let written = (|| -> rusqlite::Result<()> {
            for lease in leases {
                take.execute(params![p.batch as i64, lease])?;
            }
            for (k, item) in group.iter().enumerate() {
                let r = &item.release;
                let stored = insert.execute(params![
                    r.idempotency_key,
                    r.content_sha256,
                    r.venue,
                    r.node,
                    r.metric,
                    r.zone,
                    r.window_start_ms,
                    r.window_len_s,
                    r.mechanism,
                    r.value,
                    r.scale,
                    r.epsilon,
                    r.rho,
                    r.purpose,
                    r.policy_hash,
                    r.lease_id,
                    i64::try_from(r.sequence).unwrap_or(i64::MAX),
                    now,
                ])?;
                if stored != 1 {
                    // Every bench key is new; a duplicate means a bug here.
                    return Err(rusqlite::Error::StatementChangedRows(stored));
                }
                let s = i64::try_from(seq - group.len() as u64 + k as u64).unwrap_or(i64::MAX);
                append.execute(params![s, item.entry, item.leaf.as_slice()])?;
            }
            Ok(())
        })();
        match written {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                conn.execute_batch("ROLLBACK")?;
                return Err(e).context("a floor transaction failed (a key was already stored?)");
            }
        }
        run.commit_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        if let (Some(total), Some(a), Some(b)) = (cpu.as_mut(), cpu_before, thread_cpu()) {
            *total += b.saturating_sub(a);
        }
        run.releases += group.len() as u64;
    }
    run.writer_cpu = cpu;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The floor really writes what a group commit writes: every release
    /// row, one audit entry per release in sequence, the lease uses.
    #[tokio::test]
    async fn floor_commits_every_release_with_its_audit_entry_and_lease_use() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("floor.db");
        prepare_schema(&db).await.unwrap();
        let p = FloorParams {
            nodes: 3,
            batch: 4,
            duration: Duration::from_millis(300),
            dir: None,
            pattern: Pattern::Windows,
        };
        let path = db.clone();
        let run = tokio::task::spawn_blocking(move || run_floor(&path, &p))
            .await
            .unwrap()
            .unwrap();
        assert!(run.releases >= 12, "at least one group of 3 x 4");
        assert_eq!(run.releases % 12, 0, "whole groups only");
        assert_eq!(run.commit_ms.len() as u64, run.releases / 12);

        let conn = open(&db).unwrap();
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(count("SELECT COUNT(*) FROM releases") as u64, run.releases);
        assert_eq!(count("SELECT COUNT(*) FROM audit_log") as u64, run.releases);
        assert_eq!(
            count("SELECT MAX(seq) FROM audit_log") as u64,
            run.releases - 1
        );
        assert_eq!(count("SELECT SUM(used) FROM leases") as u64, run.releases);
        // The audit rows are real entries: each parses and its leaf hash
        // is the hash of its text.
        let (entry, leaf): (String, Vec<u8>) = conn
            .query_row(
                "SELECT entry, leaf_hash FROM audit_log WHERE seq = 5",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let parsed = AuditEntry::parse_canonical(&entry).unwrap();
        assert_eq!(parsed.seq, 5);
        assert_eq!(parsed.action, "release");
        assert_eq!(leaf.as_slice(), leaf_hash(entry.as_bytes()).as_bytes());
    }
}
