//! The tamper-evident audit log: every decision is a canonical JSON entry,
//! a leaf of an RFC 9162 Merkle tree, stored in the same transaction as the
//! decision itself; signed checkpoints (C2SP signed notes) are never issued
//! unless consistent with the previous one. Entries never hold personal data.

use std::sync::Arc;

use sqlx::{AnyConnection, AnyPool, Row};

use crate::storage::{Backend, Storage};
use tokio::sync::{Mutex, MutexGuard};
use veil_privacy::audit::{
    AuditEntry, Checkpoint, CheckpointSigner, Hash, InclusionProof, MerkleTree, check_consistent,
    entries_to_jsonl, inclusion_proofs_to_json,
};

/// Audit action names.
pub mod action {
    /// A release was stored (allow) or refused (deny).
    pub const RELEASE: &str = "release";
    /// A resubmission with a known key but different content.
    pub const RELEASE_CONFLICT: &str = "release.conflict";
    /// A budget lease was granted (allow) or refused (deny).
    pub const LEASE: &str = "lease";
    /// A policy came into force at start-up.
    pub const POLICY_LOAD: &str = "policy.load";
    /// A caller was refused at authentication/authorisation.
    pub const AUTH: &str = "auth";
    /// An audit export was made.
    pub const EXPORT: &str = "audit.export";
    /// An organizer alert was raised (rule, zone, window; never values).
    pub const ALERT_RAISE: &str = "alert.raise";
    /// An organizer alert was resolved.
    pub const ALERT_RESOLVE: &str = "alert.resolve";
    /// An organizer acknowledged an alert.
    pub const ALERT_ACK: &str = "alert.ack";
}

/// Audit log errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Database error.
    #[error("audit database: {0}")]
    Db(#[from] sqlx::Error),
    /// Entry, tree or signature error.
    #[error("audit: {0}")]
    Audit(#[from] veil_privacy::audit::AuditError),
    /// Entry encoding error.
    #[error("audit entry: {0}")]
    Entry(#[from] veil_privacy::audit::EntryError),
    /// The stored log is not what it must be.
    #[error("audit log corrupt: {0}")]
    Corrupt(String),
    /// Reading/writing export files.
    #[error("audit export {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// An entry to append; the log assigns `seq` and `time_ms`.
#[derive(Debug, Clone, Default)]
pub struct NewEntry {
    /// SPIFFE id of the caller (or the aggregator itself).
    pub actor: String,
    /// Venue concerned, or "".
    pub venue: String,
    /// One of [`action`].
    pub action: &'static str,
    /// Allow or deny.
    pub allow: bool,
    /// Why (never personal data).
    pub reason: String,
    /// Policy hash in force.
    pub policy_hash: String,
    /// Epsilon charged.
    pub epsilon: f64,
    /// Rho charged.
    pub rho: f64,
    /// SHA-256 (hex) of the release, or "".
    pub release_sha256: String,
}

struct Inner {
    tree: MerkleTree,
    last: Option<Checkpoint>,
}

/// The audit log of one aggregator database.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Mutex<Inner>>,
    signer: Arc<CheckpointSigner>,
    origin: String,
    checkpoint_every: u64,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The log's writer lock for one transaction. Entries appended through it
/// are rolled back from the in-memory tree unless [`AuditTx::committed`] is
/// called after the database transaction commits.
pub struct AuditTx<'a> {
    guard: MutexGuard<'a, Inner>,
    start: u64,
    synced: bool,
    done: bool,
}

/// Audit entries per multi-row `INSERT`.
const APPEND_CHUNK: usize = 512;

/// PostgreSQL advisory lock key ("veilaudt") held by every transaction that
/// appends to the audit log, on whatever replica.
const AUDIT_LOCK_KEY: i64 = 0x7665_696c_6175_6474;

/// Extends `tree` with the stored entries it lacks (appended by another
/// replica or process), checking the sequence has no gap.
async fn catch_up(tree: &mut MerkleTree, conn: &mut AnyConnection) -> Result<(), Error> {
    let from = tree.len();
    let rows = sqlx::query(
        "-- catch_up()\nSELECT seq, leaf_hash FROM audit_log WHERE seq >= $1 ORDER BY seq",
    )
    .bind(i64::try_from(from).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let seq: i64 = row.try_get("seq")?;
        let expected = tree.len();
        if u64::try_from(seq).ok() != Some(expected) {
            return Err(Error::Corrupt(format!(
                "sequence gap: expected {expected}, found {seq}"
            )));
        }
        let bytes: Vec<u8> = row.try_get("leaf_hash")?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::Corrupt(format!("entry {seq}: leaf hash is not 32 bytes")))?;
        tree.push(Hash(arr));
    }
    Ok(())
}

/// The SPIFFE id the aggregator uses for its own entries.
pub const SELF_ACTOR: &str = "spiffe://veil/aggregator";

impl AuditLog {
    /// Loads the tree from the database and checks it against the latest
    /// stored checkpoint.
    pub async fn load(
        storage: &Storage,
        signer: CheckpointSigner,
        checkpoint_every: u64,
    ) -> Result<Self, Error> {
        let pool = storage.pool();
        let mut tree = MerkleTree::new();
        let mut conn = pool.acquire().await?;
        catch_up(&mut tree, &mut conn).await?;
        drop(conn);
        let mut last = latest_checkpoint(pool).await?;
        if let Some(cp) = last.as_mut() {
            cp.origin = signer.name().to_owned();
            if cp.size > tree.len() {
                return Err(Error::Corrupt(format!(
                    "checkpoint of size {} but only {} entries stored",
                    cp.size,
                    tree.len()
                )));
            }
            let root = tree
                .root_at(cp.size)
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            if root != cp.root {
                return Err(Error::Corrupt(format!(
                    "stored entries do not hash to the signed checkpoint of size {}",
                    cp.size
                )));
            }
        }
        let origin = signer.name().to_owned();
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner { tree, last })),
            signer: Arc::new(signer),
            origin,
            checkpoint_every: checkpoint_every.max(1),
        })
    }

    /// The log's origin (the signing key's name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The signed-note verifier key.
    pub fn verifier_key(&self) -> String {
        self.signer.verifier_key_str()
    }

    /// Takes the writer lock for one database transaction. Writers use
    /// [`Storage::run_audited`], which takes it, locks, and commits; only
    /// a writer whose audit log is optional (rounds without charging,
    /// benches) takes it by hand.
    pub async fn begin(&self) -> AuditTx<'_> {
        let guard = self.inner.lock().await;
        let start = guard.tree.len();
        AuditTx {
            guard,
            start,
            synced: false,
            done: false,
        }
    }

    /// Entries appended so far.
    pub async fn size(&self) -> u64 {
        self.inner.lock().await.tree.len()
    }

    /// Signs a checkpoint at the current size (unless one exists at that
    /// size), after checking it is consistent with the previous checkpoint.
    pub async fn checkpoint(
        &self,
        storage: &Storage,
        now_ms: i64,
    ) -> Result<(Checkpoint, String), Error> {
        let mut inner = self.inner.lock().await;
        self.checkpoint_locked(&mut inner, storage.pool(), now_ms)
            .await
    }

    async fn checkpoint_locked(
        &self,
        inner: &mut Inner,
        pool: &AnyPool,
        now_ms: i64,
    ) -> Result<(Checkpoint, String), Error> {
        // Other replicas (or a CLI process) may have appended and signed
        // since: sign over the shared log, never over a stale prefix, and
        // check against the latest checkpoint whoever signed it.
        let mut conn = pool.acquire().await?;
        catch_up(&mut inner.tree, &mut conn).await?;
        drop(conn);
        if let Some(mut stored) = latest_checkpoint(pool).await?
            && inner.last.as_ref().is_none_or(|l| stored.size > l.size)
        {
            stored.origin = self.origin.clone();
            if stored.size > inner.tree.len()
                || inner
                    .tree
                    .root_at(stored.size)
                    .map_err(|e| Error::Corrupt(e.to_string()))?
                    != stored.root
            {
                return Err(Error::Corrupt(format!(
                    "stored checkpoint of size {} does not match the stored entries",
                    stored.size
                )));
            }
            inner.last = Some(stored);
        }
        let size = inner.tree.len();
        if let Some(last) = &inner.last
            && last.size == size
        {
            let note: String =
                sqlx::query_scalar("-- checkpoint()\nSELECT note FROM checkpoints WHERE size = $1")
                    .bind(i64::try_from(size).unwrap_or(i64::MAX))
                    .fetch_one(pool)
                    .await?;
            return Ok((last.clone(), note));
        }
        let new = Checkpoint {
            origin: self.origin.clone(),
            size,
            root: inner.tree.root(),
        };
        if let Some(last) = &inner.last {
            let proof = inner
                .tree
                .consistency_proof(last.size, size)
                .map_err(|e| Error::Corrupt(e.to_string()))?;
            check_consistent(last, &new, &proof)?;
        }
        let note = self.signer.sign_checkpoint(&new)?;
        sqlx::query("-- checkpoint()\nINSERT INTO checkpoints (size, root, note, created_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (size) DO NOTHING")
            .bind(i64::try_from(size).unwrap_or(i64::MAX))
            .bind(new.root.as_bytes().to_vec())
            .bind(&note)
            .bind(now_ms)
            .execute(pool)
            .await?;
        inner.last = Some(new.clone());
        Ok((new, note))
    }

    /// Signs a checkpoint if `checkpoint_every` entries accumulated since the last.
    pub async fn maybe_checkpoint(&self, storage: &Storage, now_ms: i64) -> Result<(), Error> {
        let mut inner = self.inner.lock().await;
        let last = inner.last.as_ref().map_or(0, |c| c.size);
        if inner.tree.len() >= last + self.checkpoint_every {
            self.checkpoint_locked(&mut inner, storage.pool(), now_ms)
                .await?;
        }
        Ok(())
    }

    /// Exports entries `from..=to` (everything when `range` is `None`) with
    /// a fresh checkpoint; a partial export carries inclusion proofs.
    pub async fn export(
        &self,
        storage: &Storage,
        range: Option<(u64, u64)>,
        now_ms: i64,
    ) -> Result<Export, Error> {
        let pool = storage.pool();
        let mut inner = self.inner.lock().await;
        let (checkpoint, note) = self.checkpoint_locked(&mut inner, pool, now_ms).await?;
        let size = checkpoint.size;
        let (from, to, partial) = match range {
            None => (0, size, false),
            Some((a, b)) => {
                if a > b || b >= size {
                    return Err(Error::Corrupt(format!(
                        "range {a}..={b} is outside the log (size {size})"
                    )));
                }
                (a, b + 1, !(a == 0 && b + 1 == size))
            }
        };
        let rows = sqlx::query("-- AuditLog::export()\nSELECT entry FROM audit_log WHERE seq >= $1 AND seq < $2 ORDER BY seq")
            .bind(i64::try_from(from).unwrap_or(i64::MAX))
            .bind(i64::try_from(to).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let line: String = row.try_get("entry")?;
            entries.push(AuditEntry::parse_canonical(&line)?);
        }
        let proofs = if partial {
            let mut ps: Vec<InclusionProof> = Vec::with_capacity(entries.len());
            for i in from..to {
                ps.push(
                    inner
                        .tree
                        .inclusion_proof(i, size)
                        .map_err(|e| Error::Corrupt(e.to_string()))?,
                );
            }
            Some(inclusion_proofs_to_json(&ps))
        } else {
            None
        };
        Ok(Export {
            entries_jsonl: entries_to_jsonl(&entries)?,
            checkpoint: note,
            proofs_json: proofs,
            size,
            root: checkpoint.root,
        })
    }
}

/// An export's files.
#[derive(Debug, Clone)]
pub struct Export {
    /// `entries.jsonl`.
    pub entries_jsonl: String,
    /// `checkpoint` (signed note).
    pub checkpoint: String,
    /// `proofs.json` for partial exports.
    pub proofs_json: Option<String>,
    /// Tree size of the checkpoint.
    pub size: u64,
    /// Merkle root of the checkpoint (the one inside the signed note).
    pub root: veil_privacy::audit::Hash,
}

impl Export {
    /// Writes `entries.jsonl`, `checkpoint` and (partial) `proofs.json` into `dir`.
    pub fn write(&self, dir: &std::path::Path) -> Result<(), Error> {
        let io = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| Error::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let p = dir.join("entries.jsonl");
        std::fs::write(&p, &self.entries_jsonl).map_err(io(&p))?;
        let p = dir.join("checkpoint");
        std::fs::write(&p, &self.checkpoint).map_err(io(&p))?;
        let p = dir.join("proofs.json");
        match &self.proofs_json {
            Some(proofs) => std::fs::write(&p, proofs).map_err(io(&p))?,
            None => {
                if p.exists() {
                    std::fs::remove_file(&p).map_err(io(&p))?;
                }
            }
        }
        Ok(())
    }
}

async fn latest_checkpoint(pool: &AnyPool) -> Result<Option<Checkpoint>, Error> {
    let row = sqlx::query(
        "-- latest_checkpoint()\nSELECT size, root FROM checkpoints ORDER BY size DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let size: i64 = row.try_get("size")?;
    let root: Vec<u8> = row.try_get("root")?;
    let root: [u8; 32] = root
        .try_into()
        .map_err(|_| Error::Corrupt("checkpoint root is not 32 bytes".into()))?;
    Ok(Some(Checkpoint {
        origin: String::new(),
        size: u64::try_from(size).unwrap_or(0),
        root: Hash(root),
    }))
}

impl AuditTx<'_> {
    /// Appends one entry inside `tx`; returns its sequence number.
    pub async fn append(
        &mut self,
        tx: &mut AnyConnection,
        e: NewEntry,
        now_ms: i64,
    ) -> Result<u64, Error> {
        self.append_many(tx, vec![e], now_ms).await
    }

    /// Appends `entries` in order inside `tx`, a multi-row `INSERT` per
    /// [`APPEND_CHUNK`]; returns the sequence number of the first.
    pub async fn append_many(
        &mut self,
        tx: &mut AnyConnection,
        entries: Vec<NewEntry>,
        now_ms: i64,
    ) -> Result<u64, Error> {
        self.lock(tx).await?;
        let first = self.guard.tree.len();
        let mut rows: Vec<(i64, String, Hash)> = Vec::with_capacity(entries.len());
        for (i, e) in entries.into_iter().enumerate() {
            let seq = first + i as u64;
            let entry = AuditEntry {
                seq,
                time_ms: now_ms,
                actor: e.actor,
                venue: e.venue,
                action: e.action.to_owned(),
                decision: if e.allow { "allow" } else { "deny" }.to_owned(),
                reason: e.reason,
                policy_hash: e.policy_hash,
                epsilon: e.epsilon,
                rho: e.rho,
                release_sha256: e.release_sha256,
            };
            let line = entry.to_canonical_json()?;
            let leaf = veil_privacy::audit::merkle::leaf_hash(line.as_bytes());
            rows.push((i64::try_from(seq).unwrap_or(i64::MAX), line, leaf));
        }
        for chunk in rows.chunks(APPEND_CHUNK) {
            let sql = crate::storage::values_sql(
                Backend::of(tx),
                "-- AuditTx::append_many()\nINSERT INTO audit_log (seq, entry, leaf_hash) VALUES ",
                3,
                chunk.len(),
                "",
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .persistent(chunk.len() == APPEND_CHUNK || chunk.len() == 1);
            for (seq, line, leaf) in chunk {
                q = q.bind(*seq).bind(line).bind(leaf.as_bytes().to_vec());
            }
            q.execute(&mut *tx).await?;
            // Full chunks and single entries (one per call of `append`) reuse
            // a prepared statement; other sizes are prepared once and dropped.
            // The tree grows only with rows the database took, so a failed
            // insert leaves nothing to roll back but what `Drop` truncates.
            for (_, _, leaf) in chunk {
                self.guard.tree.push(*leaf);
            }
        }
        Ok(first)
    }

    /// Takes the database side of the writer lock inside `tx` and brings
    /// the in-memory tree up to date with entries other replicas (or
    /// processes) committed. Idempotent; [`AuditTx::append`] calls it.
    ///
    /// Concurrency: on PostgreSQL every transaction that appends holds the
    /// transaction-scoped advisory lock [`AUDIT_LOCK_KEY`] from here until
    /// it commits or rolls back, so appends from all replicas form one
    /// linear, gap-free sequence: the holder reads every committed entry
    /// (READ COMMITTED sees all commits that released the lock before),
    /// extends its tree and appends at the true end. Callers that also
    /// lock rows (ledger, leases, rounds) call this first, right after
    /// `BEGIN`, so the lock order is always audit lock then rows and
    /// replicas cannot deadlock. On SQLite the database write lock plays
    /// this part (one writer at a time); the catch-up still matters when a
    /// CLI command appended while the server runs.
    pub async fn lock(&mut self, tx: &mut AnyConnection) -> Result<(), Error> {
        if self.synced {
            return Ok(());
        }
        if Backend::of(tx) == Backend::Postgres {
            sqlx::query("-- AuditTx::lock()\nSELECT pg_advisory_xact_lock($1)")
                .bind(AUDIT_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
        }
        let before = self.guard.tree.len();
        catch_up(&mut self.guard.tree, tx).await?;
        if self.guard.tree.len() != before {
            // Entries of other writers are committed: never roll them back.
            self.start = self.guard.tree.len();
        }
        self.synced = true;
        Ok(())
    }

    /// The database transaction committed: keep the appended leaves.
    pub fn committed(mut self) {
        self.done = true;
    }
}

impl Drop for AuditTx<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.guard.tree.truncate(self.start);
        }
    }
}
