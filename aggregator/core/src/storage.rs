//! Durable storage of accepted releases, on SQLite (the embedded default)
//! or PostgreSQL (several aggregator replicas on one database), through
//! sqlx's `Any` driver so that every query has one code path.
//!
//! The database only ever holds DP releases and policy-declared non-personal
//! values; never a raw event or an identifier. Every batch is one
//! transaction, and nothing is acknowledged before it commits.
//!
//! SQL is written once for both dialects: `$N` placeholders (SQLite accepts
//! them too), `ON CONFLICT ... DO NOTHING` instead of `INSERT OR IGNORE`,
//! qualified columns in upserts, and only the types both drivers map
//! (BIGINT, DOUBLE PRECISION/REAL, TEXT, BYTEA/BLOB). Where a statement must
//! differ (row locks, the audit lock), [`Backend::of`] picks it.

use std::{sync::Arc, time::Duration};

use sqlx::{
    AnyConnection, AnyPool, Executor as _, Row,
    any::{AnyPoolOptions, AnyRow},
};

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Database error.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migration error.
    #[error("schema migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database holds a schema version this binary does not know.
    #[error(
        "database schema version {found} is unknown to this veil-aggregator (it knows up to {known}): \
         the database was migrated by a newer release; run that release or restore a backup"
    )]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Highest version this binary has.
        known: i64,
    },
    /// The database is not in the durability mode Veil requires.
    #[error("database durability check failed: {0}")]
    Durability(String),
    /// The storage URL or settings are not usable.
    #[error("storage config: {0}")]
    Config(String),
}

/// Which database a pool or connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file (one process).
    Sqlite,
    /// PostgreSQL server (possibly several replicas).
    Postgres,
}

impl Backend {
    /// The backend of `url` (`sqlite:` or `postgres:`/`postgresql:`).
    pub fn of_url(url: &str) -> Result<Self, Error> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(Error::Config(
                "database URL must start with sqlite:// or postgres://".into(),
            ))
        }
    }

    /// The backend of an open connection.
    pub fn of(conn: &AnyConnection) -> Self {
        if conn.backend_name() == "PostgreSQL" {
            Self::Postgres
        } else {
            Self::Sqlite
        }
    }
}

/// How to open the database (`[storage]` in the config).
#[derive(Clone)]
pub struct StorageOptions {
    /// `sqlite://PATH` (created if missing) or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`.
    pub url: String,
    /// Most pooled connections.
    pub max_connections: u32,
    /// How long a request waits for a connection (including connecting)
    /// before it fails with Unavailable.
    pub acquire_timeout: Duration,
    /// Longest a single statement (including waiting for a lock) may run:
    /// PostgreSQL `statement_timeout`, SQLite `busy_timeout`.
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageOptions")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// `url` with any password replaced by `***` (for logs and `Debug`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.split_once('@') {
        Some(v) => v,
        None => return url.to_owned(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl StorageOptions {
    /// `url` with the default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(10),
        }
    }
}

/// Highest schema version in `migrator`.
fn known_version(migrator: &sqlx::migrate::Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The schema of each backend, embedded in the binary (file names parse as
/// sqlx's migration directories do; `veil_common::migrations`).
const SQLITE_MIGRATIONS: [veil_common::migrations::Embedded; 7] = veil_common::embedded_migrations!(
    "migrations/sqlite": "0001_releases.sql", "0002_ledger_audit.sql", "0003_rounds.sql",
    "0004_alerts.sql", "0005_dashboard_tokens.sql", "0006_drop_releases_node.sql",
    "0008_secure_rounds.sql",
);
const POSTGRES_MIGRATIONS: [veil_common::migrations::Embedded; 7] = veil_common::embedded_migrations!(
    "migrations/postgres": "0001_releases.sql", "0002_ledger_audit.sql", "0003_rounds.sql",
    "0004_alerts.sql", "0005_dashboard_tokens.sql", "0006_drop_releases_node.sql",
    "0008_secure_rounds.sql",
);

/// A validated release ready to store.
#[derive(Debug, Clone, Default, PartialEq)]
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
    /// A continual stream's step (the window's index in its event day), as
    /// the node sent it; checked against the window, not stored.
    pub stream_step: Option<u32>,
}

/// The aggregator's database.
#[derive(Debug, Clone)]
pub struct Storage {
    pool: AnyPool,
    backend: Backend,
    /// SQLite: keeps the WAL checkpointer running (see
    /// [`spawn_checkpointer`]); it stops when the last clone is dropped.
    _checkpointer: Option<Arc<CheckpointerAlive>>,
}

/// Held by every [`Storage`] clone while its WAL checkpointer should run.
#[derive(Debug)]
struct CheckpointerAlive;

/// Settings of every SQLite connection, in order (`PRAGMA` omitted), before
/// `busy_timeout`. `bench sqlite-floor` opens its connections with the same
/// list, so the floor it measures moves with these.
pub const SQLITE_PRAGMAS: &[&str] = &[
    // Durability: a commit returns after its WAL frames are fsynced
    // (checked at start by `check_durability`).
    "journal_mode = WAL",
    "synchronous = FULL",
    "foreign_keys = ON",
    // Checkpoints run in the background (`spawn_checkpointer`), not
    // inside commits.
    "wal_autocheckpoint = 0",
    // Statement journals of multi-row inserts stay in memory instead of
    // spilling to temp files; a larger page cache keeps the index pages of
    // recent releases hot (at most 16 MiB per connection).
    "temp_store = MEMORY",
    "cache_size = -16384",
];

/// How often the SQLite WAL is checkpointed in the background.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);

/// Checkpoints a SQLite database's WAL every [`CHECKPOINT_EVERY`], on its
/// own pooled connection, until `alive` has no holder.
///
/// SQLite's default is to checkpoint inside whichever commit pushes the WAL
/// over 1000 pages: the writer then copies pages into the database file and
/// fsyncs it before its own commit returns, so every few groups one ingest
/// commit took far longer than the rest. Connections therefore run with
/// `wal_autocheckpoint = 0`, and this task does the same work in PASSIVE
/// mode, which never blocks the writer (new commits go on appending to the
/// WAL meanwhile). Durability is unchanged: a commit is durable once its WAL
/// frames are fsynced, which `synchronous = FULL` still does per commit.
/// When the last connection closes, SQLite checkpoints what is left.
fn spawn_checkpointer(pool: AnyPool, alive: std::sync::Weak<CheckpointerAlive>) {
    tokio::spawn(async move {
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            if alive.upgrade().is_none() || pool.is_closed() {
                return;
            }
            match sqlx::query("-- checkpointer()\nPRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    // Once, then every 100th time: a lasting fault is
                    // visible without flooding the log.
                    if failures % 100 == 1 {
                        tracing::warn!(error = %e, failures, "Checkpointing the SQLite WAL failed; it keeps growing until a checkpoint succeeds.");
                    }
                }
            }
        }
    });
}

impl Storage {
    /// Opens `url` with the default pool settings (see [`Storage::open_with`]).
    pub async fn open(url: &str) -> Result<Self, Error> {
        Self::open_with(&StorageOptions::new(url)).await
    }

    /// Opens the database and runs migrations. SQLite: creates the file if
    /// missing, sets WAL + synchronous FULL and checks they took effect.
    /// PostgreSQL: every connection gets the statement timeout. Refuses a
    /// database whose schema is newer than this binary knows, before
    /// touching it.
    pub async fn open_with(opts: &StorageOptions) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(&opts.url)?;
        if opts.max_connections == 0 {
            return Err(Error::Config("max_connections must be at least 1".into()));
        }
        let timeout_ms = u64::try_from(opts.statement_timeout.as_millis()).unwrap_or(u64::MAX);
        let url = match backend {
            Backend::Sqlite if !opts.url.contains('?') => format!("{}?mode=rwc", opts.url),
            _ => opts.url.clone(),
        };
        if backend == Backend::Sqlite {
            create_owner_only(&opts.url)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    match Backend::of(conn) {
                        Backend::Sqlite => {
                            for pragma in SQLITE_PRAGMAS {
                                conn.execute(sqlx::AssertSqlSafe(format!(
                                    "-- after_connect()\nPRAGMA {pragma}"
                                )))
                                .await?;
                            }
                            conn.execute(sqlx::AssertSqlSafe(format!(
                                "-- after_connect()\nPRAGMA busy_timeout = {timeout_ms}"
                            )))
                            .await?;
                        }
                        Backend::Postgres => {
                            // A statement (or a lock wait) that runs longer
                            // fails instead of hanging the request; a
                            // transaction left idle (a replica stalled
                            // mid-batch) is ended so its locks go.
                            conn.execute(sqlx::AssertSqlSafe(format!(
                                "-- after_connect()\nSET statement_timeout = {timeout_ms}"
                            )))
                            .await?;
                            conn.execute(sqlx::AssertSqlSafe(format!(
                                "-- after_connect()\nSET idle_in_transaction_session_timeout = {}",
                                timeout_ms.saturating_mul(3)
                            )))
                            .await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let checkpointer = (backend == Backend::Sqlite).then(|| {
            let alive = Arc::new(CheckpointerAlive);
            spawn_checkpointer(pool.clone(), Arc::downgrade(&alive));
            alive
        });
        let storage = Self {
            pool,
            backend,
            _checkpointer: checkpointer,
        };
        let files: &[veil_common::migrations::Embedded] = match backend {
            Backend::Sqlite => {
                storage.check_durability().await?;
                &SQLITE_MIGRATIONS
            }
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let migrator = &veil_common::migrations::migrator(files)
            .map_err(|e| Error::Migrate(sqlx::migrate::MigrateError::Source(e.into())))?;
        storage
            .check_schema_version(known_version(migrator))
            .await?;
        migrator.run(&storage.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(v) => Error::SchemaTooNew {
                found: v,
                known: known_version(migrator),
            },
            other => Error::Migrate(other),
        })?;
        Ok(storage)
    }

    /// Refuses a database migrated by a newer release.
    async fn check_schema_version(&self, known: i64) -> Result<(), Error> {
        let exists: bool = match self.backend {
            Backend::Sqlite => sqlx::query_scalar::<_, i64>(
                "-- check_schema_version()\nSELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            )
            .fetch_one(&self.pool)
            .await?
                > 0,
            Backend::Postgres => sqlx::query_scalar::<_, i64>(
                "-- check_schema_version()\nSELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'",
            )
            .fetch_one(&self.pool)
            .await?
                > 0,
        };
        if !exists {
            return Ok(());
        }
        let found: Option<i64> = sqlx::query_scalar(
            "-- check_schema_version()\nSELECT MAX(version) FROM _sqlx_migrations",
        )
        .fetch_one(&self.pool)
        .await?;
        match found {
            Some(found) if found > known => Err(Error::SchemaTooNew { found, known }),
            _ => Ok(()),
        }
    }

    async fn check_durability(&self) -> Result<(), Error> {
        let mut conn = self.pool.acquire().await?;
        let mode: String = sqlx::query_scalar("-- check_durability()\nPRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Durability(format!(
                "journal_mode is {mode}, expected wal"
            )));
        }
        let sync: i64 = sqlx::query_scalar("-- check_durability()\nPRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await?;
        if sync != 2 {
            return Err(Error::Durability(format!(
                "synchronous is {sync}, expected 2 (FULL)"
            )));
        }
        Ok(())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Number of stored releases.
    pub async fn count_releases(&self) -> Result<u64, Error> {
        let n: i64 = sqlx::query_scalar("-- count_releases()\nSELECT COUNT(*) FROM releases")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// All releases of a venue, ordered by metric, zone, window, node.
    pub async fn releases_for_venue(&self, venue: &str) -> Result<Vec<StoredRelease>, Error> {
        let rows = sqlx::query(
            "-- releases_for_venue()\nSELECT idempotency_key, content_sha256, venue, node, metric, zone, \
             window_start_ms, window_len_s, mechanism, value, scale, epsilon, rho, purpose, policy_hash, \
             lease_id, sequence FROM releases WHERE venue = $1 ORDER BY metric, zone, window_start_ms, node",
        )
        .bind(venue)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_to_release).collect()
    }

    /// The pool, inside the core: its own reads and the audited writes of
    /// [`Storage::run_audited`].
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool for reads by the layers above the core (analytics, reports,
    /// the dashboard). Every write that needs an audit entry goes through
    /// [`Storage::run_audited`]; the few tables whose rows carry no audit
    /// entry are written through [`Storage::unaudited_tables`].
    pub fn reads(&self) -> &AnyPool {
        &self.pool
    }

    /// The pool for the application's tables whose rows carry no audit
    /// entry: dashboard token hashes, and the federated rounds' own tables
    /// (rounds, model versions, evaluation sets). Not for the core's tables
    /// (releases, ledger, leases, audit log, checkpoints), with one known
    /// exception: a round's close still writes its audited ledger charge in
    /// a transaction of its own here, taking the audit lock itself (to move
    /// onto [`Storage::run_audited`] with the rounds rework).
    pub fn unaudited_tables(&self) -> &AnyPool {
        &self.pool
    }

    /// The raw pool, for tests that inspect or corrupt tables directly
    /// (install a failing trigger, overspend a ledger day). Never used by
    /// the aggregator itself.
    #[cfg(feature = "test-util")]
    pub fn dangerous_raw_pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes the pool (SQLite: flushing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates a missing SQLite database file owner-only (0600) before SQLite
/// does (0644 by the umask): it holds the ledger, the audit log and token
/// hashes. SQLite gives its -wal and -shm files the database file's mode.
/// An existing file's mode is left as the operator set it.
fn create_owner_only(url: &str) -> Result<(), Error> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.starts_with(':') || std::path::Path::new(path).exists() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::Config(format!(
                    "creating the database file {path}: {e}"
                )));
            }
        }
    }
    Ok(())
}

/// Whether a database error means the database is unreachable or
/// overloaded (retry later) rather than a bug or bad data.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => {
            // PostgreSQL: 57014 statement timeout, 55P03 lock timeout,
            // 57P01..57P03 shutdown/cannot connect now, 08* connection,
            // 40001/40P01 serialization failure/deadlock (retry).
            // SQLite: 5 SQLITE_BUSY, 6 SQLITE_LOCKED.
            let code = d.code().unwrap_or_default();
            code.starts_with("08")
                || code.starts_with("57")
                || code == "55P03"
                || code == "40001"
                || code == "40P01"
                || code == "5"
                || code == "6"
        }
        _ => false,
    }
}

/// Builds `head` + `(p1, .., pn)` + `tail`: the SQL of an `IN` list of `n`
/// bound values (placeholders only, never values, so it is injection-safe).
pub(crate) fn in_list_sql(backend: Backend, head: &str, n: usize, tail: &str) -> String {
    values_sql(backend, head, 1, n, tail).replacen("),(", ",", n.saturating_sub(1))
}

/// Builds `head` + `(p1,..,pcols),(..)..` for `rows` rows + `tail`: the SQL
/// of a multi-row `VALUES` list (placeholders only, never values).
///
/// Placeholders are `$N` on PostgreSQL and anonymous `?` on SQLite: the
/// SQLite driver resolves every named parameter by a linear search of the
/// statement's names, so `$N` makes binding a statement of n parameters
/// O(n²) (measured: 70% of ingest CPU with 4,608-parameter inserts).
pub(crate) fn values_sql(
    backend: Backend,
    head: &str,
    cols: usize,
    rows: usize,
    tail: &str,
) -> String {
    use std::fmt::Write as _;
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * cols * 7);
    sql.push_str(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ",(" });
        for c in 0..cols {
            if c > 0 {
                sql.push(',');
            }
            match backend {
                Backend::Postgres => {
                    let _ = write!(sql, "${}", r * cols + c + 1);
                }
                Backend::Sqlite => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql.push_str(tail);
    sql
}

/// Keys per `IN (...)` lookup and rows per multi-row `INSERT` of releases
/// (18 values each: well inside SQLite's and PostgreSQL's bind limits).
const RELEASE_CHUNK: usize = 256;

/// The stored content hash of every key in `keys` that is already stored
/// (a key absent from the map is new).
pub async fn existing_many(
    tx: &mut AnyConnection,
    keys: &[&str],
) -> Result<std::collections::HashMap<String, String>, sqlx::Error> {
    let mut found = std::collections::HashMap::new();
    for chunk in keys.chunks(RELEASE_CHUNK) {
        let sql = in_list_sql(
            Backend::of(tx),
            "-- existing_many()\nSELECT idempotency_key, content_sha256 FROM releases WHERE idempotency_key IN ",
            chunk.len(),
            "",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() == RELEASE_CHUNK);
        for k in chunk {
            q = q.bind(*k);
        }
        for row in q.fetch_all(&mut *tx).await? {
            found.insert(
                row.try_get("idempotency_key")?,
                row.try_get("content_sha256")?,
            );
        }
    }
    Ok(found)
}

/// Inserts a new release inside `tx`.
pub async fn insert(
    tx: &mut AnyConnection,
    r: &StoredRelease,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    insert_many(tx, &[r], now_ms).await
}

/// Inserts new releases inside `tx`, a multi-row `INSERT` per 256. Fails
/// (so the caller rolls back) if any key is already stored.
pub async fn insert_many(
    tx: &mut AnyConnection,
    releases: &[&StoredRelease],
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    for chunk in releases.chunks(RELEASE_CHUNK) {
        let sql = values_sql(
            Backend::of(tx),
            "-- insert_many()\nINSERT INTO releases (idempotency_key, content_sha256, venue, node, metric, zone, \
             window_start_ms, window_len_s, mechanism, value, scale, epsilon, rho, purpose, policy_hash, \
             lease_id, sequence, received_ms) VALUES ",
            18,
            chunk.len(),
            " ON CONFLICT (idempotency_key) DO NOTHING",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() == RELEASE_CHUNK);
        for r in chunk {
            q = q
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
                .bind(now_ms);
        }
        let done = q.execute(&mut *tx).await?;
        if done.rows_affected() != chunk.len() as u64 {
            // Another replica stored one of these keys after the lookup
            // (writers are serialized by the audit lock, so this is a bug or
            // a manual write): abort; the retry finds the stored releases.
            return Err(sqlx::Error::Protocol(format!(
                "{} of {} idempotency keys were stored concurrently",
                chunk.len() as u64 - done.rows_affected(),
                chunk.len()
            )));
        }
    }
    Ok(())
}

fn row_to_release(row: &AnyRow) -> Result<StoredRelease, Error> {
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
        stream_step: None,
    })
}

/// A fresh database for a unit test: a SQLite file in `dir`, or with
/// `VEIL_TEST_DATABASE_URL=postgres://...` a new database on that server.
#[cfg(any(test, feature = "test-util"))]
pub async fn open_test_storage(dir: &std::path::Path) -> Storage {
    let url = match std::env::var("VEIL_TEST_DATABASE_URL") {
        Ok(server) if server.starts_with("postgres") => {
            veil_common::test_util::create_database(&server, "veil_unit")
                .await
                .expect("VEIL_TEST_DATABASE_URL")
                .1
        }
        _ => format!("sqlite://{}", dir.join("a.db").display()),
    };
    Storage::open(&url).await.expect("open test storage")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_migrations_match_the_migration_directories() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for (dir, files) in [
            ("migrations/sqlite", &SQLITE_MIGRATIONS),
            ("migrations/postgres", &POSTGRES_MIGRATIONS),
        ] {
            veil_common::migrations::check_against_directory(&root.join(dir), files)
                .await
                .unwrap();
        }
    }

    #[test]
    fn multi_row_sql_numbers_postgres_placeholders_and_uses_anonymous_ones_on_sqlite() {
        assert_eq!(
            values_sql(
                Backend::Postgres,
                "INSERT INTO t (a, b) VALUES ",
                2,
                3,
                " X"
            ),
            "INSERT INTO t (a, b) VALUES ($1,$2),($3,$4),($5,$6) X"
        );
        assert_eq!(values_sql(Backend::Sqlite, "V ", 2, 2, ""), "V (?,?),(?,?)");
        assert_eq!(
            in_list_sql(Backend::Postgres, "IN ", 3, ""),
            "IN ($1,$2,$3)"
        );
        assert_eq!(in_list_sql(Backend::Sqlite, "IN ", 1, ""), "IN (?)");
    }

    #[tokio::test]
    async fn many_releases_round_trip_through_multi_row_statements() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let s = Storage::open(&url).await.expect("open");
        // More than one chunk, and a last chunk of another size.
        let releases: Vec<StoredRelease> = (0..RELEASE_CHUNK + 7)
            .map(|i| StoredRelease {
                idempotency_key: format!("v/n/m/z/{i}/0"),
                content_sha256: format!("{i:064x}"),
                venue: "v".into(),
                node: "n".into(),
                metric: "m".into(),
                zone: "z".into(),
                window_start_ms: i as i64 * 60_000,
                window_len_s: 60,
                mechanism: "MECHANISM_DISCRETE_LAPLACE".into(),
                value: i as f64,
                scale: 1.0,
                epsilon: 0.5,
                rho: 0.0,
                purpose: "p".into(),
                policy_hash: "h".into(),
                lease_id: "l".into(),
                sequence: i as u64 + 1,
                stream_step: None,
            })
            .collect();
        let mut tx = s.pool().begin().await.expect("begin");
        let refs: Vec<&StoredRelease> = releases.iter().collect();
        insert_many(&mut tx, &refs, 5).await.expect("insert");
        let keys: Vec<&str> = releases
            .iter()
            .map(|r| r.idempotency_key.as_str())
            .collect();
        let mut probe = keys.clone();
        probe.push("v/n/m/z/absent/0");
        let found = existing_many(&mut tx, &probe).await.expect("lookup");
        assert_eq!(
            found.len(),
            releases.len(),
            "every stored key found, the absent one not"
        );
        assert_eq!(found["v/n/m/z/9/0"], format!("{:064x}", 9));
        let again = insert_many(&mut tx, &[&releases[3]], 5).await;
        assert!(again.is_err(), "a stored key makes the insert fail");
        drop(tx);
        let stored = s.releases_for_venue("v").await.expect("read");
        assert!(stored.is_empty(), "nothing without a commit");
        s.close().await;
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused_with_both_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let s = Storage::open(&url).await.expect("open");
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', TRUE, X'00', 0)",
        )
        .execute(s.pool())
        .await
        .expect("insert");
        s.close().await;
        let err = Storage::open(&url).await.expect_err("refused");
        assert!(
            matches!(err, Error::SchemaTooNew { found: 9999, known } if known >= 3),
            "{err}"
        );
        assert!(err.to_string().contains("9999"), "{err}");
    }

    #[test]
    fn urls_name_their_backend_and_passwords_are_redacted() {
        assert_eq!(Backend::of_url("sqlite://a.db").ok(), Some(Backend::Sqlite));
        assert_eq!(
            Backend::of_url("postgres://u@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert!(Backend::of_url("mysql://h/db").is_err());
        assert_eq!(
            redact_url("postgres://veil:secret@db:5432/veil"),
            "postgres://veil:***@db:5432/veil"
        );
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }
}
