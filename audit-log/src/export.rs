//! Offline verification of an audit export, and the export file formats.
//!
//! An export is a set of strings (files) a compliance officer verifies with a
//! pinned verifier key and the log's origin:
//!
//! - `entries.jsonl`: canonical [`AuditEntry`] lines, each terminated by `\n`,
//!   in `seq` order without gaps. An empty file is an empty export.
//! - `checkpoint`: the signed checkpoint note (see [`super::note`]).
//! - `proofs.json` (partial exports only): a JSON array with one inclusion
//!   proof per entry, in the same order:
//!   `[{"index":N,"tree_size":S,"path":["<base64 hash>",...]},...]`, path from
//!   leaf to root (RFC 9162 `PATH`), `tree_size` equal to the checkpoint's size,
//!   `index` equal to the entry's `seq`. Unknown fields are rejected.
//! - optionally an earlier `previous checkpoint` the new one must extend, and,
//!   for partial exports, `consistency.json`:
//!   `{"old_size":M,"new_size":N,"path":["<base64 hash>",...]}` (RFC 9162
//!   `PROOF` order), between the previous and the new checkpoint's sizes.
//!
//! A **full** export (no proofs file) holds entries `0..size`; the verifier
//! recomputes every leaf and the root, and checks an earlier checkpoint by
//! recomputing the root at its size. A **partial** export (with a proofs file)
//! holds entries `a..=b` with an inclusion proof each, and needs a consistency
//! proof to check an earlier checkpoint.
//!
//! Checks run in this order, and the first failure is returned: verifier key;
//! checkpoint (structure, signature, body, origin); previous checkpoint (the
//! same, then its size); presence of the consistency proof; entries (each line,
//! then sequence numbers); tree (size and root, or inclusion proofs);
//! consistency with the previous checkpoint. Nothing is reported as verified
//! unless every check passed.
//!
//! Exports hold audit entries, hashes and signatures only: never personal data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::entry::{AuditEntry, AuditEntryRef, EntryError, LineReader};
use super::error::{AuditError, CheckpointRole};
use super::merkle::{self, ConsistencyProof, Hash, InclusionProof, MerkleTree};
use super::note::{Checkpoint, VerifierKey, open_checkpoint};

/// The files of an export, as strings.
#[derive(Debug, Clone, Copy)]
pub struct ExportInput<'a> {
    /// `entries.jsonl`: canonical entry lines, each ending in `\n`.
    pub entries_jsonl: &'a str,
    /// The signed checkpoint note covering the whole log.
    pub checkpoint: &'a str,
    /// `proofs.json`: present for a partial export, absent for a full one.
    pub proofs_json: Option<&'a str>,
    /// The pinned verifier key string (`name+keyid+base64`).
    pub vkey: &'a str,
    /// The log origin the checkpoint must carry.
    pub origin: &'a str,
    /// An earlier signed checkpoint the new one must extend.
    pub previous_checkpoint: Option<&'a str>,
    /// `consistency.json` from the previous checkpoint to the new one
    /// (required for a partial export with a previous checkpoint).
    pub consistency_proof: Option<&'a str>,
}

/// Whether an export holds the whole log or a range of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    /// Entries `0..size`, verified by recomputing the root.
    Full,
    /// Entries `a..=b`, verified by inclusion proofs.
    Partial,
}

/// What a successful verification established. Entries borrow their text
/// from the verified `entries.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedExport<'a> {
    /// Full or partial.
    pub kind: ExportKind,
    /// Tree size of the verified checkpoint.
    pub size: u64,
    /// Root of the verified checkpoint.
    pub root: Hash,
    /// `seq` of the first entry (`None` for an empty export).
    pub first_seq: Option<u64>,
    /// `seq` of the last entry (`None` for an empty export).
    pub last_seq: Option<u64>,
    /// The verified checkpoint.
    pub checkpoint: Checkpoint,
    /// The previous checkpoint, verified consistent with the new one.
    pub previous: Option<Checkpoint>,
    /// The verified entries, in order (for reports).
    pub entries: Vec<AuditEntryRef<'a>>,
}

/// Serialises entries as `entries.jsonl` (each canonical line plus `\n`).
pub fn entries_to_jsonl(entries: &[AuditEntry]) -> Result<String, AuditError> {
    let mut out = String::new();
    for (i, e) in entries.iter().enumerate() {
        let line = e
            .to_canonical_json()
            .map_err(|source| AuditError::EntryInvalid {
                index: i as u64,
                line: i + 1,
                source,
            })?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// Serialises inclusion proofs as `proofs.json`.
pub fn inclusion_proofs_to_json(proofs: &[InclusionProof]) -> String {
    // Integers and base64 strings always serialise.
    serde_json::to_string(proofs).unwrap_or_default()
}

/// Parses `proofs.json` strictly.
pub fn parse_inclusion_proofs(s: &str) -> Result<Vec<InclusionProof>, AuditError> {
    serde_json::from_str(s).map_err(|e| AuditError::ProofsMalformed {
        reason: e.to_string(),
    })
}

/// Checks that `new` extends `old` with `proof`: same origin, `old.size <=
/// new.size`, the proof is between those sizes and verifies between the roots.
/// The aggregator calls this before signing a checkpoint, to refuse signing
/// one inconsistent with an earlier one.
pub fn check_consistent(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &ConsistencyProof,
) -> Result<(), AuditError> {
    if old.origin != new.origin {
        return Err(AuditError::OriginsDiffer {
            old: old.origin.clone(),
            new: new.origin.clone(),
        });
    }
    check_sizes(old, new)?;
    if proof.old_size != old.size || proof.new_size != new.size {
        return Err(AuditError::ConsistencyProofSizeMismatch {
            proof_old: proof.old_size,
            proof_new: proof.new_size,
            previous: old.size,
            new: new.size,
        });
    }
    proof
        .verify(&old.root, &new.root)
        .map_err(|_| AuditError::Inconsistent {
            previous: old.size,
            new: new.size,
        })
}

fn check_sizes(old: &Checkpoint, new: &Checkpoint) -> Result<(), AuditError> {
    if old.size > new.size {
        return Err(AuditError::PreviousLarger {
            previous: old.size,
            new: new.size,
        });
    }
    Ok(())
}

/// The parsed lines of an export, in file order (the line at position `i`
/// is line `i + 1` of the file), and their leaf hashes.
#[derive(Default)]
struct Lines<'a> {
    entries: Vec<AuditEntryRef<'a>>,
    leaves: Vec<Hash>,
}

/// Below this many bytes of entries, parsing stays on the calling thread.
const PARALLEL_MIN_BYTES: usize = 1 << 20;

/// Most threads [`parse_lines`] uses.
const MAX_THREADS: usize = 8;

/// Chunks per thread [`parse_lines`] splits a large export into.
const CHUNKS_PER_THREAD: usize = 4;

fn parse_lines(jsonl: &str) -> Result<Lines<'_>, AuditError> {
    if jsonl.is_empty() {
        return Ok(Lines::default());
    }
    let Some(body) = jsonl.strip_suffix('\n') else {
        return Err(AuditError::EntriesNotTerminated {
            line: jsonl.split('\n').count(),
        });
    };
    let threads = if body.len() < PARALLEL_MIN_BYTES {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
    };
    parse_body(body, threads)
}

/// Parses `body` (the entries without the last newline) on `threads` threads.
fn parse_body(body: &str, threads: usize) -> Result<Lines<'_>, AuditError> {
    if threads <= 1 {
        return parse_chunk(body, line_room(body)).map_err(|(i, source)| entry_invalid(i, source));
    }
    // More chunks than threads, each taken by whichever thread is free: on a
    // busy machine one slow thread does not hold up the others for long.
    let chunks = split_at_newlines(body, threads * CHUNKS_PER_THREAD);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            let Some(&chunk) = chunks.get(k) else {
                break;
            };
            // The other chunks are appended to the first one's lines: make
            // room for the whole file there.
            let room = line_room(if k == 0 { body } else { chunk });
            done.push((k, parse_chunk(chunk, room)));
        }
        done
    };
    let mut results: Vec<Option<ChunkResult<'_>>> = (0..chunks.len()).map(|_| None).collect();
    std::thread::scope(|scope| {
        let work = &work;
        // If a thread cannot be started, the others (and this one) take its share.
        let others: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("audit-verify".into())
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        for (k, r) in work() {
            results[k] = Some(r);
        }
        for handle in others {
            match handle.join() {
                Ok(done) => {
                    for (k, r) in done {
                        results[k] = Some(r);
                    }
                }
                // A panic in a parser thread is a bug: propagate it.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    // Chunks are in file order and each reports its first bad line, so the
    // first error of the first failing chunk is the first bad line of the file.
    let mut parsed = Vec::with_capacity(results.len());
    let mut before = 0;
    for result in results {
        // Every chunk index was taken by exactly one thread, which stored its
        // result before it returned, and every thread was joined.
        let Some(result) = result else {
            unreachable!("every chunk is parsed");
        };
        match result {
            Ok(chunk) => {
                before += chunk.entries.len();
                parsed.push(chunk);
            }
            Err((i, source)) => return Err(entry_invalid(before + i, source)),
        }
    }
    let mut parsed = parsed.into_iter();
    let mut lines = parsed.next().unwrap_or_default();
    lines.entries.reserve(before - lines.entries.len());
    lines.leaves.reserve(before - lines.leaves.len());
    for chunk in parsed {
        lines.entries.extend(chunk.entries);
        lines.leaves.extend_from_slice(&chunk.leaves);
    }
    Ok(lines)
}

/// Room for the lines of `text`, if they are about as long as its first.
fn line_room(text: &str) -> usize {
    let first_len = text.find('\n').unwrap_or(text.len()) + 1;
    let lines = text.len() / first_len;
    lines + lines / 16 + 1
}

/// The error for the bad line at 0-based position `i` of the file.
fn entry_invalid(i: usize, source: EntryError) -> AuditError {
    AuditError::EntryInvalid {
        index: i as u64,
        line: i + 1,
        source,
    }
}

/// Splits `body` into at most `parts` pieces of about equal size, each a run
/// of whole lines (cut just after a `\n`, which is dropped).
fn split_at_newlines(body: &str, parts: usize) -> Vec<&str> {
    let mut chunks = Vec::with_capacity(parts);
    let mut rest = body;
    for left in (2..=parts).rev() {
        let target = rest.len() / left;
        // The next newline at or after `target`: the cut stays on a line end.
        let Some(cut) = rest.as_bytes()[target..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let (head, tail) = rest.split_at(target + cut);
        chunks.push(head);
        rest = &tail[1..];
    }
    chunks.push(rest);
    chunks
}

/// The lines of one chunk, or the position in it of its first bad line.
type ChunkResult<'a> = Result<Lines<'a>, (usize, EntryError)>;

/// Parses and hashes the lines of one chunk (with room for `room` lines);
/// on failure, the 0-based position in the chunk of its first bad line, and
/// why.
fn parse_chunk(chunk: &str, room: usize) -> ChunkResult<'_> {
    let mut lines = Lines {
        entries: Vec::with_capacity(room),
        leaves: Vec::with_capacity(room),
    };
    let mut reader = LineReader::default();
    for (i, text) in chunk.split('\n').enumerate() {
        let entry = reader.read(text).map_err(|e| (i, e))?;
        lines.entries.push(entry);
        // The line is byte-identical to the canonical encoding.
        lines.leaves.push(merkle::leaf_hash(text.as_bytes()));
    }
    Ok(lines)
}

/// Checks `seq` runs `first, first + 1, ...`; names the first deviation.
fn check_sequence(lines: &[AuditEntryRef<'_>], first: u64) -> Result<(), AuditError> {
    let deviation = lines
        .iter()
        .enumerate()
        .find(|&(i, l)| first.checked_add(i as u64) != Some(l.seq));
    let Some((i, l)) = deviation else {
        return Ok(());
    };
    // Something is wrong at line `i + 1`: only now index where each seq
    // first appears, to say what kind of deviation it is.
    let mut first_line: HashMap<u64, usize> = HashMap::with_capacity(lines.len());
    for (j, other) in lines.iter().enumerate() {
        first_line.entry(other.seq).or_insert(j + 1);
    }
    let index = i as u64;
    let line = i + 1;
    let found = l.seq;
    let Some(expected) = first.checked_add(index) else {
        return Err(AuditError::SequenceGap {
            index,
            line,
            expected: u64::MAX,
            found,
        });
    };
    let earlier = first_line.get(&found).copied().filter(|&fl| fl < line);
    if let Some(first_line) = earlier {
        return Err(AuditError::SequenceDuplicate {
            index,
            line,
            found,
            first_line,
        });
    }
    if let Some(&expected_line) = first_line.get(&expected) {
        return Err(AuditError::SequenceOutOfOrder {
            index,
            line,
            expected,
            found,
            expected_line,
        });
    }
    Err(AuditError::SequenceGap {
        index,
        line,
        expected,
        found,
    })
}

/// Verifies an export offline; see the module docs for formats and the order
/// of checks. Returns what was verified, or the first thing wrong.
pub fn verify_export(input: ExportInput<'_>) -> Result<VerifiedExport<'_>, AuditError> {
    let vkey = VerifierKey::parse(input.vkey)?;
    let cp = open_checkpoint(
        input.checkpoint,
        &vkey,
        input.origin,
        CheckpointRole::Checkpoint,
    )?;

    let previous = match input.previous_checkpoint {
        Some(note) => {
            let prev = open_checkpoint(
                note,
                &vkey,
                input.origin,
                CheckpointRole::PreviousCheckpoint,
            )?;
            check_sizes(&prev, &cp)?;
            Some(prev)
        }
        None => None,
    };
    let kind = if input.proofs_json.is_some() {
        ExportKind::Partial
    } else {
        ExportKind::Full
    };
    let consistency = match (&previous, input.consistency_proof) {
        (None, Some(_)) => return Err(AuditError::UnexpectedConsistencyProof),
        (None, None) => None,
        (Some(prev), None) => {
            if kind == ExportKind::Partial {
                return Err(AuditError::ConsistencyProofMissing {
                    previous: prev.size,
                });
            }
            None
        }
        (Some(_), Some(json)) => Some(ConsistencyProof::from_json(json).map_err(|e| {
            AuditError::ConsistencyProofMalformed {
                reason: e.to_string(),
            }
        })?),
    };

    let Lines { entries, leaves } = parse_lines(input.entries_jsonl)?;
    let first = match kind {
        ExportKind::Full => 0,
        ExportKind::Partial => entries.first().map_or(0, |e| e.seq),
    };
    check_sequence(&entries, first)?;

    let tree = match input.proofs_json {
        None => Some(check_full(leaves, &cp)?),
        Some(json) => {
            check_partial(&entries, &leaves, &cp, json)?;
            None
        }
    };

    if let Some(prev) = &previous {
        let inconsistent = AuditError::Inconsistent {
            previous: prev.size,
            new: cp.size,
        };
        if let Some(tree) = &tree {
            // Full export: recompute the root at the previous size.
            if tree.root_at(prev.size)? != prev.root {
                return Err(inconsistent);
            }
        }
        if let Some(proof) = &consistency {
            check_consistent(prev, &cp, proof)?;
        }
    }

    Ok(VerifiedExport {
        kind,
        size: cp.size,
        root: cp.root,
        first_seq: entries.first().map(|e| e.seq),
        last_seq: entries.last().map(|e| e.seq),
        checkpoint: cp,
        previous,
        entries,
    })
}

fn check_full(leaves: Vec<Hash>, cp: &Checkpoint) -> Result<MerkleTree, AuditError> {
    let count = leaves.len() as u64;
    if count != cp.size {
        return Err(AuditError::TreeSizeMismatch {
            checkpoint: cp.size,
            entries: count,
        });
    }
    let tree = MerkleTree::from_leaf_vec(leaves);
    let computed = tree.root();
    if computed != cp.root {
        return Err(AuditError::RootMismatch {
            computed,
            checkpoint: cp.root,
        });
    }
    Ok(tree)
}

fn check_partial(
    entries: &[AuditEntryRef<'_>],
    leaves: &[Hash],
    cp: &Checkpoint,
    proofs_json: &str,
) -> Result<(), AuditError> {
    let proofs = parse_inclusion_proofs(proofs_json)?;
    if entries.is_empty() {
        return Err(AuditError::EmptyPartialExport);
    }
    if let Some((i, e)) = entries.iter().enumerate().find(|(_, e)| e.seq >= cp.size) {
        return Err(AuditError::EntryBeyondTree {
            index: i as u64,
            line: i + 1,
            seq: e.seq,
            size: cp.size,
        });
    }
    if proofs.len() != entries.len() {
        return Err(AuditError::ProofCountMismatch {
            proofs: proofs.len() as u64,
            entries: entries.len() as u64,
        });
    }
    for (position, ((e, leaf), proof)) in entries.iter().zip(leaves).zip(&proofs).enumerate() {
        if proof.index != e.seq {
            return Err(AuditError::ProofIndexMismatch {
                position: position as u64,
                proof_index: proof.index,
                seq: e.seq,
            });
        }
        if proof.tree_size != cp.size {
            return Err(AuditError::ProofTreeSizeMismatch {
                index: proof.index,
                proof_size: proof.tree_size,
                checkpoint_size: cp.size,
            });
        }
        if proof.verify(leaf, &cp.root).is_err() {
            return Err(AuditError::InclusionProofInvalid { index: proof.index });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
