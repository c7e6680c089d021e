//! The durable outbox: every release is written here (SQLite, WAL +
//! synchronous FULL) before any upload attempt, and leaves only after the
//! aggregator acknowledged it.
//!
//! Records carry a SHA-256 of their payload; a record that fails its check
//! at read time is skipped, counted and reported, never sent and never a
//! reason to crash.

use std::str::FromStr;

use prost::Message;
use sqlx::{
    Row, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use veil_privacy::{MechanismKind, Privatized};
use veil_proto::{Mechanism, PrivacyCost, Release, Window};

use crate::release::PendingRelease;

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
    /// The outbox is at its configured cap.
    #[error("outbox full ({depth} of {cap} releases)")]
    Full {
        /// Current depth.
        depth: u64,
        /// Cap.
        cap: u64,
    },
}

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
        _ => Mechanism::Unspecified,
    }
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

impl Outbox {
    /// Opens (creating) the outbox file.
    pub async fn open(
        path: &std::path::Path,
        venue: &str,
        node: &str,
        cap: u64,
    ) -> Result<Self, OutboxError> {
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
        sqlx::migrate!("./migrations").run(&pool).await?;
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
            lease_id: String::new(),
            // Filled from the outbox sequence at read time.
            sequence: 0,
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
        if depth + releases.len() as u64 > self.cap {
            return Err(OutboxError::Full {
                depth,
                cap: self.cap,
            });
        }
        let mut tx = self.pool.begin().await?;
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
            .execute(&mut *tx)
            .await?;
            added += res.rows_affected();
        }
        tx.commit().await?;
        Ok(added)
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
            let payload: Vec<u8> = row.try_get("payload").unwrap_or_default();
            let sum: Vec<u8> = row.try_get("payload_sha256").unwrap_or_default();
            match (sha256(&payload) == sum).then(|| Release::decode(payload.as_slice())) {
                Some(Ok(mut release)) => {
                    release.sequence = u64::try_from(seq).unwrap_or(0);
                    out.push(OutboxRecord { seq, release });
                }
                _ => corrupt.push(seq),
            }
        }
        for seq in &corrupt {
            tracing::error!(
                seq,
                "Corrupt outbox record skipped and removed; it cannot be sent."
            );
            self.remove(&[*seq]).await?;
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
