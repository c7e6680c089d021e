//! The one mapping from the core's [`Error`] to gRPC status: refusals keep
//! their message; database trouble is Unavailable (retry); budget is
//! ResourceExhausted, policy PermissionDenied, bad input InvalidArgument;
//! anything else is Internal, with details logged and not echoed.

use tonic::Status;
use veil_aggregator_core::{Error, audit, ledger};

/// `RESOURCE_EXHAUSTED` meaning "busy, nothing of this call was kept: try
/// again": `message` and a `retry-after-ms` hint in the metadata, which
/// nodes follow. (A ledger's "budget exhausted" carries no hint.)
pub fn busy(message: String, retry_ms: u64) -> Status {
    let mut s = Status::resource_exhausted(message);
    if let Ok(v) = retry_ms.to_string().parse() {
        s.metadata_mut().insert("retry-after-ms", v);
    }
    s
}

/// `e` as a status, for a caller that has no more specific wording.
pub fn status(e: Error) -> Status {
    match e {
        Error::Unauthenticated(m) => Status::unauthenticated(m),
        Error::PermissionDenied(m) => Status::permission_denied(m),
        Error::Ledger(e) => ledger_status(e),
        e if e.is_unavailable() => {
            tracing::warn!(error = %e, "Database unavailable.");
            Status::unavailable("database unavailable, retry")
        }
        e => {
            tracing::error!(error = %e, "Request failed.");
            Status::internal("internal error")
        }
    }
}

/// A refused or failed lease.
pub fn ledger_status(e: ledger::Error) -> Status {
    match e {
        ledger::Error::Exhausted(m) => Status::resource_exhausted(m),
        ledger::Error::Denied(m) => Status::permission_denied(m),
        ledger::Error::Invalid(m) => Status::invalid_argument(m),
        ledger::Error::Db(e) if veil_aggregator_core::storage::is_unavailable(&e) => {
            Status::unavailable("ledger unavailable; retry")
        }
        e => {
            tracing::error!(error = %e, "Ledger error.");
            Status::internal("ledger error")
        }
    }
}

/// A failed audit export or checkpoint (`what` names it in the log).
pub fn audit_status(e: audit::Error, what: &'static str) -> Status {
    match e {
        audit::Error::Corrupt(m) if m.starts_with("range") => Status::out_of_range(m),
        audit::Error::Db(e) if veil_aggregator_core::storage::is_unavailable(&e) => {
            tracing::warn!(error = %e, "{what}: database unavailable.");
            Status::unavailable("audit database unavailable, retry")
        }
        other => {
            tracing::error!(error = %other, "{what} failed.");
            Status::internal(format!("{} failed", what.to_lowercase()))
        }
    }
}
