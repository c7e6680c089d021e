//! Why an audit operation or an export verification failed.
//!
//! Each variant's message names the first thing found wrong, in words a
//! compliance officer can act on. Messages never contain key material.

use std::fmt;

use super::entry::EntryError;
use super::merkle::{Hash, MerkleError};

/// Which signed note an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointRole {
    /// The checkpoint an export is verified against.
    Checkpoint,
    /// An earlier checkpoint the new one must be consistent with.
    PreviousCheckpoint,
    /// A signed note that is not (yet) read as a checkpoint.
    Note,
}

impl fmt::Display for CheckpointRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CheckpointRole::Checkpoint => "checkpoint",
            CheckpointRole::PreviousCheckpoint => "previous checkpoint",
            CheckpointRole::Note => "note",
        })
    }
}

/// Why an audit operation or an export verification failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditError {
    // ---- keys -------------------------------------------------------------
    /// A verifier key string is malformed or its key id does not match it.
    #[error("verifier key: {reason}")]
    VerifierKeyMalformed {
        /// What is wrong.
        reason: String,
    },
    /// A signer (private) key string is malformed. The reason never quotes it.
    #[error("signer key: {reason}")]
    SignerKeyMalformed {
        /// What is wrong.
        reason: String,
    },
    /// A key name is empty or contains a space, a `+` or a control character.
    #[error(
        "invalid key name {name:?}: must be non-empty, without spaces, '+' or control characters"
    )]
    InvalidKeyName {
        /// The rejected name.
        name: String,
    },
    /// The system random number generator failed while generating a key.
    #[error("key generation failed: the system random number generator is unavailable")]
    KeyGeneration,

    // ---- notes and checkpoints ---------------------------------------------
    /// A checkpoint to be signed has an unusable origin.
    #[error("invalid checkpoint origin {origin:?}: {reason}")]
    InvalidOrigin {
        /// The rejected origin.
        origin: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A note is not a well-formed signed note (structure or signature lines).
    #[error("{role}: malformed signed note: {reason}")]
    NoteMalformed {
        /// Which note.
        role: CheckpointRole,
        /// What is wrong.
        reason: String,
    },
    /// A signature line from the pinned key is present but does not verify:
    /// the note text was changed after signing.
    #[error("{role}: signature does not verify with key {key}")]
    SignatureInvalid {
        /// Which note.
        role: CheckpointRole,
        /// `name+keyid` of the pinned key.
        key: String,
    },
    /// No signature line in the note is from the pinned key (name and key id).
    #[error("{role}: not signed by key {key} (signatures present from: {present})")]
    NotSignedByKey {
        /// Which note.
        role: CheckpointRole,
        /// `name+keyid` of the pinned key.
        key: String,
        /// `name+keyid` of each signature present, comma separated.
        present: String,
    },
    /// The signed note text is not a well-formed checkpoint body.
    #[error("{role}: malformed checkpoint body: {reason}")]
    CheckpointMalformed {
        /// Which checkpoint.
        role: CheckpointRole,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint is for another log.
    #[error("{role} origin is {found:?}, expected {expected:?}")]
    OriginMismatch {
        /// Which checkpoint.
        role: CheckpointRole,
        /// The origin line found.
        found: String,
        /// The origin the verifier expects.
        expected: String,
    },
    /// Two checkpoints compared for consistency are from different logs.
    #[error("checkpoints are from different logs: {old:?} and {new:?}")]
    OriginsDiffer {
        /// Origin of the older checkpoint.
        old: String,
        /// Origin of the newer checkpoint.
        new: String,
    },

    // ---- entries -------------------------------------------------------------
    /// The entries file does not end with a newline, so its last line may be cut.
    #[error("entries: last line (line {line}) is not terminated by a newline (truncated file?)")]
    EntriesNotTerminated {
        /// 1-based number of the unterminated line.
        line: usize,
    },
    /// One line of the entries file is not a valid canonical audit entry.
    #[error("entry {index} (line {line}): {source}")]
    EntryInvalid {
        /// 0-based position of the entry in the file.
        index: u64,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        #[source]
        source: EntryError,
    },
    /// An entry's sequence number skips one that appears nowhere in the file.
    #[error("entry {index} (line {line}): sequence gap: expected seq {expected}, found {found}")]
    SequenceGap {
        /// 0-based position of the entry in the file.
        index: u64,
        /// 1-based line number.
        line: usize,
        /// The sequence number that should be here.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// An entry's sequence number repeats an earlier one.
    #[error("entry {index} (line {line}): duplicate seq {found} (first at line {first_line})")]
    SequenceDuplicate {
        /// 0-based position of the entry in the file.
        index: u64,
        /// 1-based line number.
        line: usize,
        /// The repeated sequence number.
        found: u64,
        /// Line where that sequence number first appeared.
        first_line: usize,
    },
    /// Entries are out of order: the expected one appears later in the file.
    #[error(
        "entry {index} (line {line}): out of order: expected seq {expected}, found {found} (seq {expected} is at line {expected_line})"
    )]
    SequenceOutOfOrder {
        /// 0-based position of the entry in the file.
        index: u64,
        /// 1-based line number.
        line: usize,
        /// The sequence number that should be here.
        expected: u64,
        /// The sequence number found.
        found: u64,
        /// Line where the expected sequence number is.
        expected_line: usize,
    },

    // ---- tree ------------------------------------------------------------------
    /// A full export does not have exactly as many entries as the checkpoint's tree.
    #[error("tree size: checkpoint says {checkpoint}, export has {entries} entries")]
    TreeSizeMismatch {
        /// Tree size in the checkpoint.
        checkpoint: u64,
        /// Number of entries in the export.
        entries: u64,
    },
    /// The entries hash to a different Merkle root than the checkpoint's.
    #[error("root mismatch: entries hash to {computed}, checkpoint says {checkpoint}")]
    RootMismatch {
        /// Root recomputed from the entries.
        computed: Hash,
        /// Root in the checkpoint.
        checkpoint: Hash,
    },
    /// A partial export carries no entries.
    #[error("partial export has no entries")]
    EmptyPartialExport,
    /// An entry of a partial export lies beyond the checkpoint's tree.
    #[error("entry {index} (line {line}): seq {seq} is beyond the checkpoint's tree size {size}")]
    EntryBeyondTree {
        /// 0-based position of the entry in the file.
        index: u64,
        /// 1-based line number.
        line: usize,
        /// The entry's sequence number.
        seq: u64,
        /// Tree size in the checkpoint.
        size: u64,
    },

    // ---- inclusion proofs ------------------------------------------------------
    /// The inclusion proofs file is not valid.
    #[error("proofs: {reason}")]
    ProofsMalformed {
        /// What is wrong.
        reason: String,
    },
    /// A partial export has a different number of proofs than entries.
    #[error("proofs: {proofs} inclusion proofs for {entries} entries")]
    ProofCountMismatch {
        /// Number of proofs.
        proofs: u64,
        /// Number of entries.
        entries: u64,
    },
    /// The n-th proof is for another leaf than the n-th entry.
    #[error(
        "proofs: proof {position} is for index {proof_index}, but entry {position} has seq {seq}"
    )]
    ProofIndexMismatch {
        /// 0-based position in both files.
        position: u64,
        /// Leaf index the proof claims.
        proof_index: u64,
        /// Sequence number of the entry at that position.
        seq: u64,
    },
    /// An inclusion proof is for another tree size than the checkpoint's.
    #[error(
        "inclusion proof for index {index} is for tree size {proof_size}, checkpoint says {checkpoint_size}"
    )]
    ProofTreeSizeMismatch {
        /// Leaf index.
        index: u64,
        /// Tree size the proof claims.
        proof_size: u64,
        /// Tree size in the checkpoint.
        checkpoint_size: u64,
    },
    /// An inclusion proof does not lead from the entry to the checkpoint's root.
    #[error("inclusion proof for index {index} does not verify")]
    InclusionProofInvalid {
        /// Leaf index.
        index: u64,
    },

    // ---- previous checkpoint and consistency ----------------------------------------
    /// The previous checkpoint covers more entries than the new one.
    #[error("previous checkpoint (size {previous}) is larger than new (size {new})")]
    PreviousLarger {
        /// Size of the previous checkpoint.
        previous: u64,
        /// Size of the new checkpoint.
        new: u64,
    },
    /// The new tree does not extend the previous one: history was rewritten or forked.
    #[error("new checkpoint (size {new}) is not consistent with previous (size {previous})")]
    Inconsistent {
        /// Size of the previous checkpoint.
        previous: u64,
        /// Size of the new checkpoint.
        new: u64,
    },
    /// A partial export with a previous checkpoint lacks a consistency proof.
    #[error(
        "consistency proof missing: a partial export needs one to check the previous checkpoint (size {previous})"
    )]
    ConsistencyProofMissing {
        /// Size of the previous checkpoint.
        previous: u64,
    },
    /// A consistency proof was given but no previous checkpoint to use it with.
    #[error("consistency proof given without a previous checkpoint")]
    UnexpectedConsistencyProof,
    /// The consistency proof file is not valid.
    #[error("consistency proof: {reason}")]
    ConsistencyProofMalformed {
        /// What is wrong.
        reason: String,
    },
    /// The consistency proof is between other sizes than the two checkpoints.
    #[error(
        "consistency proof is from size {proof_old} to {proof_new}, checkpoints are sizes {previous} and {new}"
    )]
    ConsistencyProofSizeMismatch {
        /// Old size the proof claims.
        proof_old: u64,
        /// New size the proof claims.
        proof_new: u64,
        /// Size of the previous checkpoint.
        previous: u64,
        /// Size of the new checkpoint.
        new: u64,
    },

    // ---- tree operations ---------------------------------------------------------
    /// A Merkle tree operation was asked for something out of range.
    #[error(transparent)]
    Merkle(#[from] MerkleError),
}
