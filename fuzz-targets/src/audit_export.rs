//! `audit_export`: offline verification of an audit export,
//! [`veil_audit::verify_export`].
//!
//! The first byte of the input picks a mode, the next three are numbers the
//! mode uses, and the rest is split at NUL bytes into the export's files.
//!
//! - **Raw** (bit 0 clear): every file comes from the input (entries,
//!   checkpoint, proofs, verifier key, origin, previous checkpoint,
//!   consistency proof), so the note, key and proof parsers see anything.
//!   Invariant: no panic, and an accepted export is consistent (below).
//! - **Signed** (bit 0 set): the input gives `entries.jsonl`; the harness
//!   plays an honest log over those lines (leaf = hash of the line), signs
//!   its checkpoint, and, by the flags, exports a range with inclusion
//!   proofs (bit 1), adds an earlier checkpoint with its consistency proof
//!   (bit 2), or takes the proofs (bit 3) or the consistency proof (bit 4)
//!   from the input instead. Unless a proof came from the input, the
//!   verifier must accept if, and only if, the file is terminated, every
//!   exported line is a canonical entry on its own, and each entry's `seq` is
//!   its position in the log.
//!
//! An accepted export is consistent: its entries are, in order, the
//! entries of its lines, each line the canonical encoding of its entry, and
//! a full export holds exactly the checkpoint's size.

use veil_audit::{
    AuditEntry, CheckpointSigner, ExportInput, ExportKind, MerkleTree, VerifiedExport,
    inclusion_proofs_to_json, merkle, verify_export,
};

const ORIGIN: &str = "veil.example/audit/fuzz";

/// Verifies an export built from the input (see the module docs).
pub fn audit_export(data: &[u8]) {
    let [flags, a, b, c, rest @ ..] = data else {
        return;
    };
    let Ok(rest) = std::str::from_utf8(rest) else {
        return;
    };
    let parts: Vec<&str> = rest.split('\0').collect();
    if flags & 1 == 0 {
        raw(&parts);
    } else {
        signed(*flags, [*a, *b, *c], &parts);
    }
}

fn raw(parts: &[&str]) {
    let part = |i: usize| parts.get(i).copied();
    let input = ExportInput {
        entries_jsonl: part(0).unwrap_or_default(),
        checkpoint: part(1).unwrap_or_default(),
        proofs_json: part(2).filter(|p| !p.is_empty()),
        vkey: part(3).unwrap_or_default(),
        origin: part(4).unwrap_or_default(),
        previous_checkpoint: part(5).filter(|p| !p.is_empty()),
        consistency_proof: part(6).filter(|p| !p.is_empty()),
    };
    if let Ok(verified) = verify_export(input) {
        check_verified(&verified, input.entries_jsonl);
    }
}

/// The lines of `entries.jsonl` (without the last newline).
fn lines(jsonl: &str) -> Vec<&str> {
    if jsonl.is_empty() {
        return Vec::new();
    }
    jsonl
        .strip_suffix('\n')
        .unwrap_or(jsonl)
        .split('\n')
        .collect()
}

fn signed(flags: u8, [a, b, c]: [u8; 3], parts: &[&str]) {
    let (partial, previous, own_proofs, own_consistency) = (
        flags & 2 != 0,
        flags & 4 != 0,
        flags & 8 != 0,
        flags & 16 != 0,
    );
    let part = |i: usize| parts.get(i).copied().unwrap_or_default();
    let jsonl = part(0);
    let log = lines(jsonl);
    let tree = MerkleTree::from_leaves(log.iter().map(|l| merkle::leaf_hash(l.as_bytes())));
    let n = tree.len();
    let signer = CheckpointSigner::from_seed(ORIGIN, [7; 32]).expect("a valid key name");
    let checkpoint = signer
        .sign(ORIGIN, n, &tree.root())
        .expect("a valid origin");
    // The exported range of the log: all of it, or lines first..=last.
    let (first, last) = if partial && n > 0 {
        let first = u64::from(a) % n;
        (first, first + u64::from(b) % (n - first))
    } else {
        (0, n.saturating_sub(1))
    };
    let range = usize::try_from(first).unwrap_or(usize::MAX)
        ..usize::try_from(last).map_or(usize::MAX, |l| l.saturating_add(1));
    let exported_text;
    let entries_jsonl = if partial {
        exported_text = log
            .get(range.clone())
            .unwrap_or_default()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        exported_text.as_str()
    } else {
        jsonl
    };
    let proofs_text;
    let proofs_json = match (partial, own_proofs) {
        (false, _) => None,
        (true, true) => Some(part(1)),
        (true, false) => {
            let proofs: Vec<_> = (first..=last)
                .filter(|_| n > 0)
                .map(|i| tree.inclusion_proof(i, n).expect("index within the tree"))
                .collect();
            proofs_text = inclusion_proofs_to_json(&proofs);
            Some(proofs_text.as_str())
        }
    };
    let old = u64::from(c) % (n + 1);
    let previous_note = previous.then(|| {
        let root = tree.root_at(old).expect("old size within the tree");
        signer.sign(ORIGIN, old, &root).expect("a valid origin")
    });
    let consistency_text;
    let consistency_proof = match (previous, own_consistency) {
        (false, _) => None,
        (true, true) => Some(part(2)),
        (true, false) => {
            let proof = tree
                .consistency_proof(old, n)
                .expect("sizes within the tree");
            consistency_text = proof.to_json();
            Some(consistency_text.as_str())
        }
    };
    let vkey = signer.verifier_key_str();
    let input = ExportInput {
        entries_jsonl,
        checkpoint: &checkpoint,
        proofs_json,
        vkey: &vkey,
        origin: ORIGIN,
        previous_checkpoint: previous_note.as_deref(),
        consistency_proof,
    };
    let result = verify_export(input);
    if let Ok(verified) = &result {
        check_verified(verified, entries_jsonl);
        assert_eq!(verified.size, n);
        assert_eq!(verified.root, tree.root());
    }
    if own_proofs || own_consistency {
        return;
    }
    let terminated = entries_jsonl.is_empty() || entries_jsonl.ends_with('\n');
    let honest = terminated
        && !(partial && n == 0)
        && log
            .get(range.clone())
            .unwrap_or_default()
            .iter()
            .zip(range.start as u64..)
            .all(|(line, position)| {
                AuditEntry::parse_canonical(line).is_ok_and(|e| e.seq == position)
            });
    assert_eq!(
        result.is_ok(),
        honest,
        "an honest export of {n} lines ({first}..={last}, partial {partial}, previous {previous}) verified as {result:?}"
    );
}

/// What an accepted export must be: its entries are those of its lines.
fn check_verified(verified: &VerifiedExport<'_>, entries_jsonl: &str) {
    let lines = lines(entries_jsonl);
    assert_eq!(verified.entries.len(), lines.len());
    for (entry, line) in verified.entries.iter().zip(&lines) {
        let parsed = AuditEntry::parse_canonical(line).expect("a verified line parses alone");
        assert!(*entry == parsed, "{line:?}: {entry:?} != {parsed:?}");
        assert_eq!(parsed.to_canonical_json().as_deref(), Ok(*line));
    }
    assert_eq!(verified.first_seq, verified.entries.first().map(|e| e.seq));
    assert_eq!(verified.last_seq, verified.entries.last().map(|e| e.seq));
    if verified.kind == ExportKind::Full {
        assert_eq!(verified.entries.len() as u64, verified.size);
    }
}
