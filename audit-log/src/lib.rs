//! # veil-audit
//!
//! Audit-log primitives: canonical entries, an RFC 9162 Merkle tree, and
//! checkpoints signed in the C2SP signed-note format, plus offline
//! verification of an audit export.
//!
//! Everything here is pure: no I/O, no clock, no randomness except when a
//! signing key is generated. The aggregator appends one [`AuditEntry`] per
//! decision, feeds its [`AuditEntry::leaf_hash`] to a [`MerkleTree`], and signs
//! [`Checkpoint`]s with a [`CheckpointSigner`]; a compliance officer runs
//! [`verify_export`] over the exported files with a pinned verifier key.
//!
//! An audit entry never contains personal data: it names actors by their
//! workload identity (SPIFFE id), venues by their id, policies and releases by
//! their hashes, and carries the privacy cost charged. Raw events, device or
//! subject identifiers, and released values never appear in it.
//!
//! Layout:
//! - [`entry`]: the entry and its canonical JSON line;
//! - [`merkle`]: RFC 9162 hashing, proofs, and the incremental [`MerkleTree`];
//! - [`note`]: signed notes, key strings, and tlog checkpoints;
//! - [`export`]: the export file formats and [`verify_export`].

#![warn(missing_docs)]

pub mod entry;
pub mod error;
pub mod export;
pub mod merkle;
pub mod note;

pub use entry::{AuditEntry, AuditEntryRef, DECISION_ALLOW, DECISION_DENY, EntryError};
pub use error::{AuditError, CheckpointRole};
pub use export::{
    ExportInput, ExportKind, VerifiedExport, check_consistent, entries_to_jsonl,
    inclusion_proofs_to_json, parse_inclusion_proofs, verify_export,
};
pub use merkle::{ConsistencyProof, Hash, InclusionProof, MerkleError, MerkleTree};
pub use note::{
    Checkpoint, CheckpointSigner, VerifierKey, parse_and_verify_checkpoint, verify_note,
};
