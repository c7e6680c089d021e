//! The durable outbox: every release is written here (SQLite, WAL +
//! synchronous FULL) before any upload attempt, and leaves only after the
//! aggregator acknowledged it.
//!
//! Records carry a SHA-256 of their payload; a record that fails its check
//! (at start-up, by [`Outbox::scan`], or at read time) is skipped, counted
//! (`corrupt_total` in `node_state`) and reported, never sent and never a
//! reason to crash. A torn WAL tail is discarded by SQLite itself (frame
//! checksums). A file that is not a readable SQLite database at all is
//! moved aside (`<file>.corrupt-<unix ms>`, kept for inspection), reported
//! at ERROR, and a fresh outbox started, so the node never crash-loops on
//! its own files.

use std::str::FromStr;

use prost::Message;
use sqlx::{
    Row, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use veil_privacy::{MechanismKind, Privatized};
use veil_proto::{Mechanism, PrivacyCost, Release, Window};

use crate::release::PendingRelease;

mod day_state;
pub use day_state::{StreamWrite, WindowCommit};

/// Outbox errors.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// Database error.
    #[error("outbox database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migration error (including a newer, unknown schema).
    #[error("outbox schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Durability settings did not take effect.
    #[error("outbox durability check failed: {0}")]
    Durability(String),
    /// A stored stream state does not read back (its noise is never drawn
    /// again: the node refuses to continue the stream).
    #[error(
        "stored state of stream {stream} is unreadable: {reason}; refusing to draw its noise again"
    )]
    Stream {
        /// metric/zone.
        stream: String,
        /// What was wrong.
        reason: String,
    },
    /// The outbox is at its configured cap.
    #[error("outbox full ({depth} of {cap} releases)")]
    Full {
        /// Current depth.
        depth: u64,
        /// Cap.
        cap: u64,
    },
}

/// The outbox schema, embedded in the binary (`veil_common::migrations`).
const MIGRATIONS: [veil_common::migrations::Embedded; 3] = veil_common::embedded_migrations!(
    "migrations": "0001_outbox.sql",
    "0002_day_state.sql",
    "0003_stream_steps.sql"
);

/// A record read back from the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRecord {
    /// Outbox sequence number (upload order).
    pub seq: i64,
    /// The release.
    pub release: Release,
}

/// The outbox.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: SqlitePool,
    venue: String,
    node: String,
    cap: u64,
}

fn mechanism(kind: MechanismKind) -> Mechanism {
    match kind {
        MechanismKind::DiscreteLaplace => Mechanism::DiscreteLaplace,
        MechanismKind::DiscreteGaussian => Mechanism::DiscreteGaussian,
        MechanismKind::LaplaceSum => Mechanism::LaplaceSum,
        MechanismKind::GaussianSum => Mechanism::GaussianSum,
        MechanismKind::NonPersonal => Mechanism::NonPersonal,
        MechanismKind::ContinualSqrt => Mechanism::ContinualSqrt,
        MechanismKind::ContinualTree => Mechanism::ContinualTree,
        _ => Mechanism::Unspecified,
    }
}

/// The release in an outbox row, if its payload matches its checksum and
/// decodes.
fn decode_row(row: &sqlx::sqlite::SqliteRow) -> Option<Release> {
    let payload: Vec<u8> = row.try_get("payload").ok()?;
    let sum: Vec<u8> = row.try_get("payload_sha256").ok()?;
    if sha256(&payload) != sum {
        return None;
    }
    Release::decode(payload.as_slice()).ok()
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

/// Node-state key: last successful upload (Unix ms).
pub const STATE_LAST_UPLOAD: &str = "last_upload_ms";
/// Node-state key: corrupt records skipped, ever.
pub const STATE_CORRUPT_TOTAL: &str = "corrupt_total";
/// Node-state key: times intake paused at the outbox cap, ever.
pub const STATE_FULL_WAITS: &str = "outbox_full_waits";
/// Node-state key: where an unreadable outbox file was moved.
pub const STATE_QUARANTINED: &str = "quarantined_file";

/// Whether `e` says the file itself is not a usable SQLite database.
fn is_corrupt_file(e: &OutboxError) -> bool {
    let db = match e {
        OutboxError::Db(e) => e,
        OutboxError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => e,
        _ => return false,
    };
    if let sqlx::Error::Database(d) = db
        && matches!(d.code().as_deref(), Some("11" | "26"))
    {
        return true;
    }
    let text = db.to_string().to_lowercase();
    text.contains("malformed") || text.contains("not a database")
}

/// Creates the database file owner-only (0600) if missing, and narrows an
/// existing one: it holds the day keys and unit state. SQLite gives its
/// -wal and -shm files the database file's mode.
fn restrict_to_owner(path: &std::path::Path) -> Result<(), OutboxError> {
    let io = |e: std::io::Error| {
        OutboxError::Durability(format!("making {} owner-only: {e}", path.display()))
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        if path.exists() {
            let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
            }
        } else if !path.as_os_str().is_empty() && path.as_os_str() != ":memory:" {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
        }
    }
    Ok(())
}

impl Outbox {
    /// Opens (creating) the outbox file. A file that is not a readable
    /// SQLite database is moved aside and a fresh outbox started (ERROR log).
    pub async fn open(
        path: &std::path::Path,
        venue: &str,
        node: &str,
        cap: u64,
    ) -> Result<Self, OutboxError> {
        match Self::open_file(path, venue, node, cap).await {
            Err(e) if is_corrupt_file(&e) => {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let mut aside = path.as_os_str().to_owned();
                aside.push(format!(".corrupt-{ms}"));
                let aside = std::path::PathBuf::from(aside);
                tracing::error!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    error = %e,
                    "Outbox file is not a readable database: moved aside for inspection and a new outbox started; releases in it are not sent."
                );
                std::fs::rename(path, &aside).map_err(|io| {
                    OutboxError::Durability(format!("moving the corrupt outbox aside: {io}"))
                })?;
                for ext in ["-wal", "-shm"] {
                    let mut side = path.as_os_str().to_owned();
                    side.push(ext);
                    let mut to = aside.as_os_str().to_owned();
                    to.push(ext);
                    let _ = std::fs::rename(&side, &to);
                }
                let outbox = Self::open_file(path, venue, node, cap).await?;
                outbox
                    .set_state(STATE_QUARANTINED, &aside.display().to_string())
                    .await?;
                Ok(outbox)
            }
            r => r,
        }
    }

    /// Opens an existing outbox for inspection (`veil-node status`): never
    /// moves a file aside.
    pub async fn inspect(path: &std::path::Path) -> Result<Self, OutboxError> {
        Self::open_file(path, "", "", u64::MAX).await
    }

    async fn open_file(
        path: &std::path::Path,
        venue: &str,
        node: &str,
        cap: u64,
    ) -> Result<Self, OutboxError> {
        restrict_to_owner(path)?;
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await?;
        let mode: String = sqlx::query_scalar("-- Outbox::open()\nPRAGMA journal_mode")
            .fetch_one(&pool)
            .await?;
        let sync: i64 = sqlx::query_scalar("-- Outbox::open()\nPRAGMA synchronous")
            .fetch_one(&pool)
            .await?;
        if !mode.eq_ignore_ascii_case("wal") || sync != 2 {
            return Err(OutboxError::Durability(format!(
                "journal_mode={mode} synchronous={sync}, expected wal and 2 (FULL)"
            )));
        }
        veil_common::migrations::migrator(&MIGRATIONS)
            .map_err(|e| sqlx::migrate::MigrateError::Source(e.into()))?
            .run(&pool)
            .await?;
        Ok(Self {
            pool,
            venue: venue.to_owned(),
            node: node.to_owned(),
            cap,
        })
    }

    /// The stable idempotency key of a window's release: revision 0 of
    /// (venue, node, metric, zone, window). Re-processing the same input after
    /// a restart yields the same key, so the aggregator refuses a second,
    /// differently-noised release of the same window.
    pub fn key(&self, r: &PendingRelease) -> String {
        format!(
            "{}/{}/{}/{}/{}/0",
            self.venue, self.node, r.metric, r.zone, r.window_start_ms
        )
    }

    fn to_proto(&self, r: &PendingRelease, policy_hash: &str) -> Release {
        let v: &Privatized = &r.value;
        Release {
            idempotency_key: self.key(r),
            metric: r.metric.to_owned(),
            zone: r.zone.clone(),
            window: Some(Window {
                start_ms: r.window_start_ms,
                length_s: r.window_length_s,
            }),
            mechanism: mechanism(v.mechanism()) as i32,
            value: v.value(),
            scale: v.scale(),
            cost: Some(PrivacyCost {
                epsilon: v.cost().epsilon(),
                rho: v.cost().rho(),
            }),
            purpose: r.purpose.clone(),
            policy_hash: policy_hash.to_owned(),
            lease_id: r.lease_id.clone(),
            // Filled from the outbox sequence at read time.
            sequence: 0,
            stream: r
                .stream
                .map(|(step, horizon)| veil_proto::StreamStep { step, horizon }),
        }
    }

    /// Writes releases durably in one transaction. A release whose key is
    /// already pending is not written twice. Returns how many were new.
    pub async fn push(
        &self,
        releases: &[PendingRelease],
        policy_hash: &str,
        now_ms: i64,
    ) -> Result<u64, OutboxError> {
        let depth = self.depth().await?;
        // An empty outbox takes one window even above the cap, so a tiny
        // cap cannot wedge the node.
        if depth > 0 && depth + releases.len() as u64 > self.cap {
            return Err(OutboxError::Full {
                depth,
                cap: self.cap,
            });
        }
        let mut tx = self.pool.begin().await?;
        let added = self
            .insert_releases(&mut tx, releases, policy_hash, now_ms)
            .await?;
        tx.commit().await?;
        Ok(added)
    }

    async fn insert_releases(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        releases: &[PendingRelease],
        policy_hash: &str,
        now_ms: i64,
    ) -> Result<u64, OutboxError> {
        let mut added = 0;
        for r in releases {
            let proto = self.to_proto(r, policy_hash);
            let payload = proto.encode_to_vec();
            let res = sqlx::query(
                "-- Outbox::push()\nINSERT OR IGNORE INTO outbox (idempotency_key, window_start_ms, payload, payload_sha256, created_ms) VALUES (?,?,?,?,?)",
            )
            .bind(&proto.idempotency_key)
            .bind(r.window_start_ms)
            .bind(&payload)
            .bind(sha256(&payload))
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
            added += res.rows_affected();
        }
        Ok(added)
    }

    /// The configured cap.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Start-up check: verifies every record's checksum and decoding,
    /// removes the bad ones (they can never be sent) and returns how many.
    /// Reads in pages, so a large backlog does not sit in memory.
    pub async fn scan(&self) -> Result<u64, OutboxError> {
        let mut after = 0i64;
        let mut corrupt = Vec::new();
        loop {
            let rows = sqlx::query(
                "-- Outbox::scan()\nSELECT seq, payload, payload_sha256 FROM outbox WHERE seq > ? ORDER BY seq LIMIT 1000",
            )
            .bind(after)
            .fetch_all(&self.pool)
            .await?;
            let Some(last) = rows.last() else { break };
            after = last.try_get("seq")?;
            for row in rows {
                let seq: i64 = row.try_get("seq")?;
                if decode_row(&row).is_none() {
                    corrupt.push(seq);
                }
            }
        }
        if !corrupt.is_empty() {
            tracing::error!(
                corrupt = corrupt.len(),
                first_seq = corrupt.first().copied().unwrap_or(0),
                "Corrupt outbox records found at start-up: skipped and removed, the rest is sent."
            );
            self.remove(&corrupt).await?;
            self.add_to_counter(STATE_CORRUPT_TOTAL, corrupt.len() as u64)
                .await?;
        }
        Ok(corrupt.len() as u64)
    }

    /// Adds `n` to a counter kept in `node_state` (survives restarts).
    pub async fn add_to_counter(&self, key: &str, n: u64) -> Result<(), OutboxError> {
        sqlx::query("-- Outbox::add_to_counter()\nINSERT INTO node_state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = CAST(CAST(node_state.value AS INTEGER) + CAST(excluded.value AS INTEGER) AS TEXT)")
            .bind(key)
            .bind(n.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The oldest `limit` records in upload order. Records that fail their
    /// checksum or do not decode are deleted, and their count returned.
    pub async fn peek(&self, limit: usize) -> Result<(Vec<OutboxRecord>, u64), OutboxError> {
        let rows = sqlx::query(
            "-- Outbox::peek()\nSELECT seq, payload, payload_sha256 FROM outbox ORDER BY seq LIMIT ?",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        let mut corrupt = Vec::new();
        for row in rows {
            let seq: i64 = row.try_get("seq")?;
            match decode_row(&row) {
                Some(mut release) => {
                    release.sequence = u64::try_from(seq).unwrap_or(0);
                    out.push(OutboxRecord { seq, release });
                }
                None => corrupt.push(seq),
            }
        }
        for seq in &corrupt {
            tracing::error!(
                seq,
                "Corrupt outbox record skipped and removed; it cannot be sent."
            );
            self.remove(&[*seq]).await?;
        }
        if !corrupt.is_empty() {
            self.add_to_counter(STATE_CORRUPT_TOTAL, corrupt.len() as u64)
                .await?;
        }
        Ok((out, corrupt.len() as u64))
    }

    /// Removes acknowledged records.
    pub async fn remove(&self, seqs: &[i64]) -> Result<(), OutboxError> {
        let mut tx = self.pool.begin().await?;
        for s in seqs {
            sqlx::query("-- Outbox::remove()\nDELETE FROM outbox WHERE seq = ?")
                .bind(s)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Releases waiting.
    pub async fn depth(&self) -> Result<u64, OutboxError> {
        let n: i64 = sqlx::query_scalar("-- Outbox::depth()\nSELECT COUNT(*) FROM outbox")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Records a node-wide fact (e.g. last successful upload time).
    pub async fn set_state(&self, key: &str, value: &str) -> Result<(), OutboxError> {
        sqlx::query("-- Outbox::set_state()\nINSERT INTO node_state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Reads a node-wide fact.
    pub async fn state(&self, key: &str) -> Result<Option<String>, OutboxError> {
        Ok(
            sqlx::query_scalar("-- Outbox::state()\nSELECT value FROM node_state WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// Oldest pending window start, Unix ms.
    pub async fn oldest_window(&self) -> Result<Option<i64>, OutboxError> {
        Ok(sqlx::query_scalar(
            "-- Outbox::oldest_window()\nSELECT MIN(window_start_ms) FROM outbox",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_migrations_match_the_migration_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        veil_common::migrations::check_against_directory(&dir, &MIGRATIONS)
            .await
            .unwrap();
    }
}
