//! Durable storage of accepted releases (SQLite through sqlx).
//!
//! The database only ever holds DP releases and policy-declared non-personal
//! values; never a raw event or an identifier. Every batch is one
//! transaction, and nothing is acknowledged before it commits.

use std::str::FromStr;

use sqlx::{
    Row, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Database error.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migration error, including an unknown (newer) schema version.
    #[error("schema migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database is not in the durability mode Veil requires.
    #[error("database durability check failed: {0}")]
    Durability(String),
}

/// A validated release ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRelease {
    /// Idempotency key.
    pub idempotency_key: String,
    /// SHA-256 (hex) of the release content, for duplicate detection.
    pub content_sha256: String,
    /// Venue (from the certificate).
    pub venue: String,
    /// Node (from the certificate).
    pub node: String,
    /// Metric.
    pub metric: String,
    /// Zone.
    pub zone: String,
    /// Window start, Unix ms.
    pub window_start_ms: i64,
    /// Window length, s.
    pub window_len_s: u32,
    /// Mechanism name.
    pub mechanism: String,
    /// Released value.
    pub value: f64,
    /// Noise scale.
    pub scale: f64,
    /// Epsilon charged.
    pub epsilon: f64,
    /// Rho charged.
    pub rho: f64,
    /// Purpose.
    pub purpose: String,
    /// Policy hash.
    pub policy_hash: String,
    /// Lease id.
    pub lease_id: String,
    /// Node sequence number.
    pub sequence: u64,
}

/// Outcome of storing one release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// New row.
    Inserted,
    /// Same key, same content: nothing changed.
    Duplicate,
    /// Same key, different content: refused, original kept.
    Conflict,
}

/// The aggregator's database.
#[derive(Debug, Clone)]
pub struct Storage {
    pool: SqlitePool,
}

impl Storage {
    /// Opens (creating if needed) the SQLite database at `url`, sets WAL +
    /// synchronous FULL, checks they took effect, and runs migrations.
    /// Refuses a database whose schema is newer than this binary knows.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let storage = Self { pool };
        storage.check_durability().await?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&storage.pool)
            .await?;
        Ok(storage)
    }

    async fn check_durability(&self) -> Result<(), StorageError> {
        let mode: String = sqlx::query_scalar("-- check_durability()\nPRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Durability(format!(
                "journal_mode is {mode}, expected wal"
            )));
        }
        let sync: i64 = sqlx::query_scalar("-- check_durability()\nPRAGMA synchronous")
            .fetch_one(&self.pool)
            .await?;
        if sync != 2 {
            return Err(StorageError::Durability(format!(
                "synchronous is {sync}, expected 2 (FULL)"
            )));
        }
        Ok(())
    }

    /// Number of stored releases.
    pub async fn count_releases(&self) -> Result<u64, StorageError> {
        let n: i64 = sqlx::query_scalar("-- count_releases()\nSELECT COUNT(*) FROM releases")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// All releases of a venue, ordered by metric, zone, window, node.
    pub async fn releases_for_venue(
        &self,
        venue: &str,
    ) -> Result<Vec<StoredRelease>, StorageError> {
        let rows = sqlx::query(
            "-- releases_for_venue()\nSELECT idempotency_key, content_sha256, venue, node, metric, zone, \
             window_start_ms, window_len_s, mechanism, value, scale, epsilon, rho, purpose, policy_hash, \
             lease_id, sequence FROM releases WHERE venue = ? ORDER BY metric, zone, window_start_ms, node",
        )
        .bind(venue)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_release).collect()
    }

    /// The underlying pool (for the modules that share the transaction).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, flushing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether `r`'s idempotency key is already stored: `Duplicate` (same
/// content), `Conflict` (different content) or `None`.
pub async fn existing(
    tx: &mut sqlx::SqliteConnection,
    r: &StoredRelease,
) -> Result<Option<StoreOutcome>, sqlx::Error> {
    let existing: Option<String> = sqlx::query_scalar(
        "-- existing()\nSELECT content_sha256 FROM releases WHERE idempotency_key = ?",
    )
    .bind(&r.idempotency_key)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(existing.map(|h| {
        if h == r.content_sha256 {
            StoreOutcome::Duplicate
        } else {
            StoreOutcome::Conflict
        }
    }))
}

/// Inserts a new release inside `tx`.
pub async fn insert(
    tx: &mut sqlx::SqliteConnection,
    r: &StoredRelease,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "-- insert()\nINSERT INTO releases (idempotency_key, content_sha256, venue, node, metric, zone, \
         window_start_ms, window_len_s, mechanism, value, scale, epsilon, rho, purpose, policy_hash, \
         lease_id, sequence, received_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    )
    .bind(&r.idempotency_key)
    .bind(&r.content_sha256)
    .bind(&r.venue)
    .bind(&r.node)
    .bind(&r.metric)
    .bind(&r.zone)
    .bind(r.window_start_ms)
    .bind(i64::from(r.window_len_s))
    .bind(&r.mechanism)
    .bind(r.value)
    .bind(r.scale)
    .bind(r.epsilon)
    .bind(r.rho)
    .bind(&r.purpose)
    .bind(&r.policy_hash)
    .bind(&r.lease_id)
    .bind(i64::try_from(r.sequence).unwrap_or(i64::MAX))
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn row_to_release(row: &sqlx::sqlite::SqliteRow) -> Result<StoredRelease, StorageError> {
    Ok(StoredRelease {
        idempotency_key: row.try_get("idempotency_key")?,
        content_sha256: row.try_get("content_sha256")?,
        venue: row.try_get("venue")?,
        node: row.try_get("node")?,
        metric: row.try_get("metric")?,
        zone: row.try_get("zone")?,
        window_start_ms: row.try_get("window_start_ms")?,
        window_len_s: u32::try_from(row.try_get::<i64, _>("window_len_s")?).unwrap_or(0),
        mechanism: row.try_get("mechanism")?,
        value: row.try_get("value")?,
        scale: row.try_get("scale")?,
        epsilon: row.try_get("epsilon")?,
        rho: row.try_get("rho")?,
        purpose: row.try_get("purpose")?,
        policy_hash: row.try_get("policy_hash")?,
        lease_id: row.try_get("lease_id")?,
        sequence: u64::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or(0),
    })
}
