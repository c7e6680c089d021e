//! The one way the core writes what must be audited: a database
//! transaction that holds the audit log's writer lock, runs a body that
//! writes rows and appends audit entries, and commits both or neither.

use std::{future::Future, pin::Pin};

use sqlx::AnyConnection;

use crate::{
    audit::{AuditLog, AuditTx},
    storage::Storage,
};

impl Storage {
    /// Runs `body` in one database transaction that holds the audit log's
    /// writer lock, then commits; the entries `body` appended are kept only
    /// if the commit succeeds. On `Err` the transaction is rolled back
    /// while the lock is still held, so the next writer never waits on its
    /// row locks. `name` names the transaction in logs.
    ///
    /// Lock order (every audited writer, on every replica): the in-process
    /// audit mutex, then the database's audit lock (taken here, right after
    /// `BEGIN`, see [`AuditTx::lock`]), then any row `body` touches. Keeping
    /// one order is what lets replicas share a PostgreSQL database without
    /// deadlocks.
    ///
    /// `body` may borrow anything that outlives the call (`'env`): the
    /// transaction and the audit writer it gets live shorter (`'a`).
    pub async fn run_audited<'env, T, E, F>(
        &self,
        audit: &'env AuditLog,
        name: &'static str,
        body: F,
    ) -> Result<T, E>
    where
        E: From<sqlx::Error> + From<crate::audit::Error> + std::fmt::Display,
        F: for<'a> FnOnce(&'a mut AnyConnection, &'a mut AuditTx<'env>) -> TxFuture<'a, T, E>,
    {
        let mut atx = audit.begin().await;
        let mut tx = self.pool().begin().await?;
        let outcome = match atx.lock(&mut tx).await {
            Ok(()) => body(&mut tx, &mut atx).await,
            Err(e) => Err(E::from(e)),
        };
        match outcome {
            Ok(v) => {
                tx.commit().await?;
                atx.committed();
                Ok(v)
            }
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(tx = name, error = %rb, "Rolling back a failed transaction failed.");
                }
                tracing::debug!(tx = name, error = %e, "Transaction rolled back.");
                Err(e)
            }
        }
    }
}

/// What the body of [`Storage::run_audited`] returns: a boxed future
/// borrowing the transaction and the audit writer.
pub type TxFuture<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;
