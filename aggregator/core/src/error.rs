//! The core's one error type: what a request to the core can fail with.
//! The application maps it to a gRPC status in one place.

use crate::{audit, ledger, storage};

/// Why the core refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No client certificate.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is unknown or may not do this (audited as `auth`).
    #[error("{0}")]
    PermissionDenied(String),
    /// Opening or migrating the database.
    #[error(transparent)]
    Storage(#[from] storage::Error),
    /// The audit log.
    #[error(transparent)]
    Audit(#[from] audit::Error),
    /// The ledger.
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    /// A database statement.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

impl Error {
    /// Whether the database is unreachable or overloaded (retry later)
    /// rather than a bug or bad data.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Db(e)
            | Error::Audit(audit::Error::Db(e))
            | Error::Ledger(ledger::Error::Db(e)) => storage::is_unavailable(e),
            Error::Storage(storage::Error::Db(e)) => storage::is_unavailable(e),
            _ => false,
        }
    }
}
