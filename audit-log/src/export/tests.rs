//! The tamper matrix: every way an export can be altered fails with its own,
//! named error.

use super::*;
use crate::entry::{DECISION_ALLOW, DECISION_DENY, EntryError};
use crate::merkle::{empty_root, leaf_hash};
use crate::note::CheckpointSigner;

const ORIGIN: &str = "veil.example/audit/arena";
const SIZE: u64 = 12;
const OLD: u64 = 8;

fn entry(seq: u64) -> AuditEntry {
    let allow = seq % 3 != 2;
    AuditEntry {
        seq,
        time_ms: 1_700_000_000_000 + 1000 * seq as i64,
        actor: format!("spiffe://veil/venue/arena-1/node/gw-{}", seq % 4),
        venue: "arena-1".to_owned(),
        action: "release".to_owned(),
        decision: if allow { DECISION_ALLOW } else { DECISION_DENY }.to_owned(),
        reason: if allow {
            "within budget"
        } else {
            "budget exhausted"
        }
        .to_owned(),
        policy_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
        epsilon: if allow { 0.25 } else { 0.0 },
        rho: 0.0,
        release_sha256: if allow {
            leaf_hash(&seq.to_be_bytes()).to_hex()
        } else {
            String::new()
        },
    }
}

struct Fixture {
    signer: CheckpointSigner,
    vkey: String,
    entries: Vec<AuditEntry>,
    lines: Vec<String>,
    tree: MerkleTree,
    jsonl: String,
    checkpoint: String,
    previous: String,
}

impl Fixture {
    fn new() -> Self {
        let signer = CheckpointSigner::generate(ORIGIN).unwrap();
        let entries: Vec<AuditEntry> = (0..SIZE).map(entry).collect();
        let lines: Vec<String> = entries
            .iter()
            .map(|e| e.to_canonical_json().unwrap())
            .collect();
        let mut tree = MerkleTree::new();
        for e in &entries {
            tree.push(e.leaf_hash().unwrap());
        }
        let checkpoint = signer.sign(ORIGIN, SIZE, &tree.root()).unwrap();
        let previous = signer
            .sign(ORIGIN, OLD, &tree.root_at(OLD).unwrap())
            .unwrap();
        Self {
            vkey: signer.verifier_key_str(),
            jsonl: entries_to_jsonl(&entries).unwrap(),
            signer,
            entries,
            lines,
            tree,
            checkpoint,
            previous,
        }
    }

    fn full(&self) -> ExportInput<'_> {
        ExportInput {
            entries_jsonl: &self.jsonl,
            checkpoint: &self.checkpoint,
            proofs_json: None,
            vkey: &self.vkey,
            origin: ORIGIN,
            previous_checkpoint: None,
            consistency_proof: None,
        }
    }

    /// Entries 3..=7 of the log.
    fn partial_parts(&self) -> (String, String) {
        let jsonl = entries_to_jsonl(&self.entries[3..=7]).unwrap();
        let proofs: Vec<InclusionProof> = (3..=7)
            .map(|i| self.tree.inclusion_proof(i, SIZE).unwrap())
            .collect();
        (jsonl, inclusion_proofs_to_json(&proofs))
    }

    fn consistency_json(&self) -> String {
        self.tree.consistency_proof(OLD, SIZE).unwrap().to_json()
    }

    fn sign(&self, size: u64, root: &Hash) -> String {
        self.signer.sign(ORIGIN, size, root).unwrap()
    }
}

/// `s` with the first `from` replaced; panics if `from` is absent, so a
/// tamper can never silently be a no-op.
fn tamper(s: &str, from: &str, to: &str) -> String {
    assert!(s.contains(from), "{from:?} not found");
    s.replacen(from, to, 1)
}

fn to_jsonl(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn err(input: ExportInput<'_>) -> AuditError {
    match verify_export(input) {
        Ok(v) => panic!("tampered export verified: {v:?}"),
        Err(e) => e,
    }
}

#[test]
fn untampered_full_export_verifies() {
    let fx = Fixture::new();
    let v = verify_export(fx.full()).unwrap();
    assert_eq!(v.kind, ExportKind::Full);
    assert_eq!(v.size, SIZE);
    assert_eq!(v.root, fx.tree.root());
    assert_eq!(v.first_seq, Some(0));
    assert_eq!(v.last_seq, Some(SIZE - 1));
    assert_eq!(v.entries, fx.entries);
    assert_eq!(v.previous, None);

    // With the previous checkpoint (no proof needed: roots are recomputed).
    let v = verify_export(ExportInput {
        previous_checkpoint: Some(&fx.previous),
        ..fx.full()
    })
    .unwrap();
    assert_eq!(v.previous.unwrap().size, OLD);
    // A consistency proof, if given, is checked too.
    let proof = fx.consistency_json();
    verify_export(ExportInput {
        previous_checkpoint: Some(&fx.previous),
        consistency_proof: Some(&proof),
        ..fx.full()
    })
    .unwrap();
    // The same checkpoint as its own previous is consistent.
    verify_export(ExportInput {
        previous_checkpoint: Some(&fx.checkpoint),
        ..fx.full()
    })
    .unwrap();
}

#[test]
fn untampered_partial_export_verifies() {
    let fx = Fixture::new();
    let (jsonl, proofs) = fx.partial_parts();
    let consistency = fx.consistency_json();
    let v = verify_export(ExportInput {
        entries_jsonl: &jsonl,
        proofs_json: Some(&proofs),
        previous_checkpoint: Some(&fx.previous),
        consistency_proof: Some(&consistency),
        ..fx.full()
    })
    .unwrap();
    assert_eq!(v.kind, ExportKind::Partial);
    assert_eq!((v.first_seq, v.last_seq), (Some(3), Some(7)));
    assert_eq!(v.entries, fx.entries[3..=7].to_vec());
}

#[test]
fn empty_export() {
    let fx = Fixture::new();
    let cp0 = fx.sign(0, &empty_root());
    let v = verify_export(ExportInput {
        entries_jsonl: "",
        checkpoint: &cp0,
        ..fx.full()
    })
    .unwrap();
    assert_eq!((v.size, v.first_seq, v.last_seq), (0, None, None));
    // An empty export against a non-empty checkpoint is a truncation.
    let e = err(ExportInput {
        entries_jsonl: "",
        ..fx.full()
    });
    assert_eq!(
        e,
        AuditError::TreeSizeMismatch {
            checkpoint: SIZE,
            entries: 0
        }
    );
    // Size 0 with a root that is not the empty-tree root.
    let bad0 = fx.sign(0, &leaf_hash(b"x"));
    let e = err(ExportInput {
        entries_jsonl: "",
        checkpoint: &bad0,
        ..fx.full()
    });
    assert!(matches!(e, AuditError::RootMismatch { .. }), "{e}");
}

#[test]
fn flipped_byte_in_an_entry() {
    let fx = Fixture::new();
    // Inside a string value: still canonical JSON, but the leaf changes.
    let mut lines = fx.lines.clone();
    lines[4] = tamper(&lines[4], "within budget", "within budgeu");
    let tampered = to_jsonl(&lines);
    let e = err(ExportInput {
        entries_jsonl: &tampered,
        ..fx.full()
    });
    assert!(matches!(e, AuditError::RootMismatch { .. }), "{e}");
    assert!(
        e.to_string().starts_with("root mismatch: entries hash to "),
        "{e}"
    );
    assert!(
        e.to_string()
            .ends_with(&format!("checkpoint says {}", fx.tree.root()))
    );

    // In the epsilon: a different spend, same shape.
    let mut lines = fx.lines.clone();
    lines[4] = tamper(&lines[4], "\"epsilon\":0.25", "\"epsilon\":0.24");
    let tampered = to_jsonl(&lines);
    assert!(matches!(
        err(ExportInput {
            entries_jsonl: &tampered,
            ..fx.full()
        }),
        AuditError::RootMismatch { .. }
    ));

    // Breaking canonical form is named as such, with the line.
    let mut lines = fx.lines.clone();
    lines[4] = tamper(&lines[4], "\"epsilon\":0.25", "\"epsilon\":0.250");
    let tampered = to_jsonl(&lines);
    let e = err(ExportInput {
        entries_jsonl: &tampered,
        ..fx.full()
    });
    assert!(
        matches!(
            e,
            AuditError::EntryInvalid {
                index: 4,
                line: 5,
                source: EntryError::NotCanonical { .. }
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("entry 4 (line 5): not canonical JSON")
    );

    // Breaking JSON.
    let mut lines = fx.lines.clone();
    lines[2] = tamper(&lines[2], "{", "[");
    let tampered = to_jsonl(&lines);
    assert!(matches!(
        err(ExportInput {
            entries_jsonl: &tampered,
            ..fx.full()
        }),
        AuditError::EntryInvalid {
            index: 2,
            source: EntryError::Json(_),
            ..
        }
    ));
}

#[test]
fn deleted_entry() {
    let fx = Fixture::new();
    let mut lines = fx.lines.clone();
    lines.remove(5);
    let tampered = to_jsonl(&lines);
    let e = err(ExportInput {
        entries_jsonl: &tampered,
        ..fx.full()
    });
    assert_eq!(
        e,
        AuditError::SequenceGap {
            index: 5,
            line: 6,
            expected: 5,
            found: 6
        }
    );
    assert_eq!(
        e.to_string(),
        "entry 5 (line 6): sequence gap: expected seq 5, found 6"
    );
    // The first entry deleted.
    let tampered = to_jsonl(&fx.lines[1..]);
    assert!(matches!(
        err(ExportInput {
            entries_jsonl: &tampered,
            ..fx.full()
        }),
        AuditError::SequenceGap {
            index: 0,
            expected: 0,
            found: 1,
            ..
        }
    ));
}

#[test]
fn inserted_entry() {
    let fx = Fixture::new();
    // A copy of an existing entry.
    let mut lines = fx.lines.clone();
    lines.insert(4, lines[3].clone());
    let tampered = to_jsonl(&lines);
    let e = err(ExportInput {
        entries_jsonl: &tampered,
        ..fx.full()
    });
    assert_eq!(
        e,
        AuditError::SequenceDuplicate {
            index: 4,
            line: 5,
            found: 3,
            first_line: 4
        }
    );
    assert_eq!(
        e.to_string(),
        "entry 4 (line 5): duplicate seq 3 (first at line 4)"
    );

    // A forged entry with the later ones renumbered: one entry too many.
    let mut forged: Vec<AuditEntry> = fx.entries.clone();
    forged.insert(4, entry(4));
    for (i, e) in forged.iter_mut().enumerate() {
        e.seq = i as u64;
    }
    forged[4].reason = "forged".to_owned();
    let tampered = entries_to_jsonl(&forged).unwrap();
    let e = err(ExportInput {
        entries_jsonl: &tampered,
        ..fx.full()
    });
    assert_eq!(
        e,
        AuditError::TreeSizeMismatch {
            checkpoint: SIZE,
            entries: SIZE + 1
        }
    );
    assert_eq!(
        e.to_string(),
        "tree size: checkpoint says 12, export has 13 entries"
    );

    // ... and if the operator re-signs a checkpoint over the forged log, the
    // earlier checkpoint exposes the rewrite.
    let forged_tree = MerkleTree::from_leaves(forged.iter().map(|e| e.leaf_hash().unwrap()));
    let resigned = fx.sign(SIZE + 1, &forged_tree.root());
    verify_export(ExportInput {
        entries_jsonl: &tampered,
        checkpoint: &resigned,
        ..fx.full()
    })
    .unwrap();
    let e = err(ExportInput {
        entries_jsonl: &tampered,
        checkpoint: &resigned,
        previous_checkpoint: Some(&fx.previous),
        ..fx.full()
    });
    assert_eq!(
        e,
        AuditError::Inconsistent {
            previous: OLD,
            new: SIZE + 1
        }
    );
}

#[test]
fn reordered_entries() {
    let fx = Fixture::new();
    let mut lines = fx.lines.clone();
    lines.swap(6, 7);
    let tampered = to_jsonl(&lines);
    let e = err(ExportInput {
        entries_jsonl: &tampered,
        ..fx.full()
    });
    assert_eq!(
        e,
        AuditError::SequenceOutOfOrder {
            index: 6,
            line: 7,
            expected: 6,
            found: 7,
            expected_line: 8
        }
    );
    assert_eq!(
        e.to_string(),
        "entry 6 (line 7): out of order: expected seq 6, found 7 (seq 6 is at line 8)"
    );
    // Swapped contents but kept sequence numbers: the root changes.
    let mut swapped = fx.entries.clone();
    swapped.swap(6, 7);
    swapped[6].seq = 6;
    swapped[7].seq = 7;
    let tampered = entries_to_jsonl(&swapped).unwrap();
    assert!(matches!(
        err(ExportInput {
            entries_jsonl: &tampered,
            ..fx.full()
        }),
        AuditError::RootMismatch { .. }
    ));
}

#[test]
fn truncated_tail() {
    let fx = Fixture::new();
    let tampered = to_jsonl(&fx.lines[..10]);
    let e = err(ExportInput {
        entries_jsonl: &tampered,
        ..fx.full()
    });
    assert_eq!(
        e,
        AuditError::TreeSizeMismatch {
            checkpoint: SIZE,
            entries: 10
        }
    );
    // Cut in the middle of the last line.
    let cut = &fx.jsonl[..fx.jsonl.len() - 20];
    let e = err(ExportInput {
        entries_jsonl: cut,
        ..fx.full()
    });
    assert_eq!(e, AuditError::EntriesNotTerminated { line: 12 });
    // Only the final newline missing.
    let cut = &fx.jsonl[..fx.jsonl.len() - 1];
    assert_eq!(
        err(ExportInput {
            entries_jsonl: cut,
            ..fx.full()
        }),
        AuditError::EntriesNotTerminated { line: 12 }
    );
    // A blank line.
    let blank = format!("{}\n{}", to_jsonl(&fx.lines[..3]), to_jsonl(&fx.lines[3..]));
    assert!(matches!(
        err(ExportInput {
            entries_jsonl: &blank,
            ..fx.full()
        }),
        AuditError::EntryInvalid {
            index: 3,
            line: 4,
            source: EntryError::Json(_)
        }
    ));
}

#[test]
fn changed_size() {
    let fx = Fixture::new();
    // Edited checkpoint text: the signature fails.
    let edited = tamper(&fx.checkpoint, "\n12\n", "\n11\n");
    let e = err(ExportInput {
        checkpoint: &edited,
        ..fx.full()
    });
    assert!(matches!(
        e,
        AuditError::SignatureInvalid {
            role: CheckpointRole::Checkpoint,
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        format!(
            "checkpoint: signature does not verify with key {}",
            fx.signer.verifier_key().label()
        )
    );
    // A key holder signing a wrong size over the right root.
    let resigned = fx.sign(SIZE + 1, &fx.tree.root());
    assert_eq!(
        err(ExportInput {
            checkpoint: &resigned,
            ..fx.full()
        }),
        AuditError::TreeSizeMismatch {
            checkpoint: SIZE + 1,
            entries: SIZE
        }
    );
}

#[test]
fn replaced_root() {
    let fx = Fixture::new();
    let other = leaf_hash(b"another history");
    // Edited checkpoint text.
    let edited = tamper(
        &fx.checkpoint,
        &fx.tree.root().to_base64(),
        &other.to_base64(),
    );
    assert!(matches!(
        err(ExportInput {
            checkpoint: &edited,
            ..fx.full()
        }),
        AuditError::SignatureInvalid { .. }
    ));
    // A key holder signing another root.
    let resigned = fx.sign(SIZE, &other);
    let e = err(ExportInput {
        checkpoint: &resigned,
        ..fx.full()
    });
    assert_eq!(
        e,
        AuditError::RootMismatch {
            computed: fx.tree.root(),
            checkpoint: other
        }
    );
    assert_eq!(
        e.to_string(),
        format!(
            "root mismatch: entries hash to {}, checkpoint says {}",
            fx.tree.root(),
            other
        )
    );
}

#[test]
fn wrong_key() {
    let fx = Fixture::new();
    // Another key with the same name: its key id differs.
    let other = CheckpointSigner::generate(ORIGIN).unwrap();
    let other_vkey = other.verifier_key_str();
    let e = err(ExportInput {
        vkey: &other_vkey,
        ..fx.full()
    });
    assert!(
        matches!(
            e,
            AuditError::NotSignedByKey {
                role: CheckpointRole::Checkpoint,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().starts_with(&format!(
        "checkpoint: not signed by key {}",
        other.verifier_key().label()
    )));
    // A checkpoint signed by another key, verified with the pinned one.
    let forged = other.sign(ORIGIN, SIZE, &fx.tree.root()).unwrap();
    assert!(matches!(
        err(ExportInput {
            checkpoint: &forged,
            ..fx.full()
        }),
        AuditError::NotSignedByKey { .. }
    ));
    // A malformed pinned key.
    let mangled = tamper(&fx.vkey, "+", "-");
    assert!(matches!(
        err(ExportInput {
            vkey: &mangled,
            ..fx.full()
        }),
        AuditError::VerifierKeyMalformed { .. }
    ));
}

#[test]
fn wrong_origin() {
    let fx = Fixture::new();
    let e = err(ExportInput {
        origin: "veil.example/audit/other",
        ..fx.full()
    });
    assert_eq!(
        e.to_string(),
        format!("checkpoint origin is \"{ORIGIN}\", expected \"veil.example/audit/other\"")
    );
    assert!(matches!(
        e,
        AuditError::OriginMismatch {
            role: CheckpointRole::Checkpoint,
            ..
        }
    ));
}

fn partial_err(fx: &Fixture, jsonl: &str, proofs: &str) -> AuditError {
    err(ExportInput {
        entries_jsonl: jsonl,
        proofs_json: Some(proofs),
        ..fx.full()
    })
}

#[test]
fn flipped_proof_bit() {
    let fx = Fixture::new();
    let (jsonl, _) = fx.partial_parts();
    let mut proofs: Vec<InclusionProof> = (3..=7)
        .map(|i| fx.tree.inclusion_proof(i, SIZE).unwrap())
        .collect();
    proofs[2].path[1].0[9] ^= 0x20;
    let e = partial_err(&fx, &jsonl, &inclusion_proofs_to_json(&proofs));
    assert_eq!(e, AuditError::InclusionProofInvalid { index: 5 });
    assert_eq!(e.to_string(), "inclusion proof for index 5 does not verify");
    // A flipped entry byte in a partial export fails its proof the same way.
    let (jsonl, proofs) = fx.partial_parts();
    let tampered = tamper(&jsonl, "within budget", "within budgeu");
    assert_eq!(
        partial_err(&fx, &tampered, &proofs),
        AuditError::InclusionProofInvalid { index: 3 }
    );
    // A truncated path.
    let mut short: Vec<InclusionProof> = (3..=7)
        .map(|i| fx.tree.inclusion_proof(i, SIZE).unwrap())
        .collect();
    short[0].path.pop();
    let (jsonl, _) = fx.partial_parts();
    assert_eq!(
        partial_err(&fx, &jsonl, &inclusion_proofs_to_json(&short)),
        AuditError::InclusionProofInvalid { index: 3 }
    );
}

#[test]
fn proof_for_index_plus_minus_one() {
    let fx = Fixture::new();
    let (jsonl, _) = fx.partial_parts();
    for delta in [-1i64, 1] {
        // The neighbour's proof, labelled as such.
        let mut proofs: Vec<InclusionProof> = (3..=7)
            .map(|i| fx.tree.inclusion_proof(i, SIZE).unwrap())
            .collect();
        let neighbour = (5 + delta) as u64;
        proofs[2] = fx.tree.inclusion_proof(neighbour, SIZE).unwrap();
        let e = partial_err(&fx, &jsonl, &inclusion_proofs_to_json(&proofs));
        assert_eq!(
            e,
            AuditError::ProofIndexMismatch {
                position: 2,
                proof_index: neighbour,
                seq: 5
            }
        );
        assert_eq!(
            e.to_string(),
            format!("proofs: proof 2 is for index {neighbour}, but entry 2 has seq 5")
        );
        // The neighbour's path, relabelled with the right index.
        proofs[2].index = 5;
        assert_eq!(
            partial_err(&fx, &jsonl, &inclusion_proofs_to_json(&proofs)),
            AuditError::InclusionProofInvalid { index: 5 }
        );
    }
}

#[test]
fn partial_export_structure() {
    let fx = Fixture::new();
    let (jsonl, proofs) = fx.partial_parts();
    let all: Vec<InclusionProof> = (3..=7)
        .map(|i| fx.tree.inclusion_proof(i, SIZE).unwrap())
        .collect();
    // One proof missing.
    assert_eq!(
        partial_err(&fx, &jsonl, &inclusion_proofs_to_json(&all[..4])),
        AuditError::ProofCountMismatch {
            proofs: 4,
            entries: 5
        }
    );
    // Proof for another tree size.
    let mut other_size = all.clone();
    other_size[1] = fx.tree.inclusion_proof(4, SIZE - 1).unwrap();
    assert_eq!(
        partial_err(&fx, &jsonl, &inclusion_proofs_to_json(&other_size)),
        AuditError::ProofTreeSizeMismatch {
            index: 4,
            proof_size: SIZE - 1,
            checkpoint_size: SIZE
        }
    );
    // Malformed proofs file: unknown field, bad hash, not JSON.
    for bad in [
        tamper(&proofs, "\"index\"", "\"idx\""),
        tamper(&proofs, "\"path\":[\"", "\"path\":[\"!"),
        "nope".to_owned(),
        tamper(&proofs, "\"tree_size\":12", "\"tree_size\":12,\"extra\":1"),
    ] {
        assert!(
            matches!(
                partial_err(&fx, &jsonl, &bad),
                AuditError::ProofsMalformed { .. }
            ),
            "{bad}"
        );
    }
    // No entries.
    assert_eq!(partial_err(&fx, "", "[]"), AuditError::EmptyPartialExport);
    // Entries beyond the checkpoint's tree (valid entries, older checkpoint).
    let beyond = to_jsonl(&fx.lines[6..10]);
    let e = err(ExportInput {
        entries_jsonl: &beyond,
        checkpoint: &fx.previous,
        proofs_json: Some(&proofs),
        ..fx.full()
    });
    assert_eq!(
        e,
        AuditError::EntryBeyondTree {
            index: 2,
            line: 3,
            seq: 8,
            size: OLD
        }
    );
    assert_eq!(
        e.to_string(),
        "entry 2 (line 3): seq 8 is beyond the checkpoint's tree size 8"
    );
    // Gaps inside a partial export are still gaps.
    let gappy = format!("{}{}", to_jsonl(&fx.lines[3..5]), to_jsonl(&fx.lines[6..8]));
    assert!(matches!(
        partial_err(&fx, &gappy, &proofs),
        AuditError::SequenceGap {
            index: 2,
            expected: 5,
            found: 6,
            ..
        }
    ));
}

#[test]
fn smaller_previous_checkpoint_is_fine_but_later_one_is_not() {
    let fx = Fixture::new();
    for old in 0..=SIZE {
        let prev = fx.sign(old, &fx.tree.root_at(old).unwrap());
        verify_export(ExportInput {
            previous_checkpoint: Some(&prev),
            ..fx.full()
        })
        .unwrap();
    }
    // A later checkpoint given as the previous one.
    let mut longer = fx.tree.clone();
    longer.push(entry(SIZE).leaf_hash().unwrap());
    longer.push(entry(SIZE + 1).leaf_hash().unwrap());
    let later = fx.sign(SIZE + 2, &longer.root());
    let e = err(ExportInput {
        previous_checkpoint: Some(&later),
        ..fx.full()
    });
    assert_eq!(
        e,
        AuditError::PreviousLarger {
            previous: SIZE + 2,
            new: SIZE
        }
    );
    assert_eq!(
        e.to_string(),
        "previous checkpoint (size 14) is larger than new (size 12)"
    );
}

#[test]
fn forked_previous_checkpoint() {
    let fx = Fixture::new();
    // Same key, same size, another history: entry 2 said something else.
    let mut fork = fx.entries[..OLD as usize].to_vec();
    fork[2].reason = "rewritten".to_owned();
    let fork_tree = MerkleTree::from_leaves(fork.iter().map(|e| e.leaf_hash().unwrap()));
    let forked = fx.sign(OLD, &fork_tree.root());
    let e = err(ExportInput {
        previous_checkpoint: Some(&forked),
        ..fx.full()
    });
    assert_eq!(
        e,
        AuditError::Inconsistent {
            previous: OLD,
            new: SIZE
        }
    );
    assert_eq!(
        e.to_string(),
        "new checkpoint (size 12) is not consistent with previous (size 8)"
    );
    // Partial export: the (honest) consistency proof does not match the fork.
    let (jsonl, proofs) = fx.partial_parts();
    let consistency = fx.consistency_json();
    assert_eq!(
        err(ExportInput {
            entries_jsonl: &jsonl,
            proofs_json: Some(&proofs),
            previous_checkpoint: Some(&forked),
            consistency_proof: Some(&consistency),
            ..fx.full()
        }),
        AuditError::Inconsistent {
            previous: OLD,
            new: SIZE
        }
    );
    // Same size as the new one but another root.
    let same_size_fork = fx.sign(SIZE, &leaf_hash(b"fork"));
    assert_eq!(
        err(ExportInput {
            previous_checkpoint: Some(&same_size_fork),
            ..fx.full()
        }),
        AuditError::Inconsistent {
            previous: SIZE,
            new: SIZE
        }
    );
}

#[test]
fn previous_checkpoint_is_verified_like_the_new_one() {
    let fx = Fixture::new();
    let other = CheckpointSigner::generate(ORIGIN).unwrap();
    let foreign = other
        .sign(ORIGIN, OLD, &fx.tree.root_at(OLD).unwrap())
        .unwrap();
    assert!(matches!(
        err(ExportInput {
            previous_checkpoint: Some(&foreign),
            ..fx.full()
        }),
        AuditError::NotSignedByKey {
            role: CheckpointRole::PreviousCheckpoint,
            ..
        }
    ));
    let edited = tamper(&fx.previous, "\n8\n", "\n7\n");
    let e = err(ExportInput {
        previous_checkpoint: Some(&edited),
        ..fx.full()
    });
    assert!(
        e.to_string()
            .starts_with("previous checkpoint: signature does not verify")
    );
    let other_origin = fx
        .signer
        .sign(
            "veil.example/audit/other",
            OLD,
            &fx.tree.root_at(OLD).unwrap(),
        )
        .unwrap();
    assert_eq!(
        err(ExportInput {
            previous_checkpoint: Some(&other_origin),
            ..fx.full()
        })
        .to_string(),
        format!(
            "previous checkpoint origin is \"veil.example/audit/other\", expected \"{ORIGIN}\""
        )
    );
}

#[test]
fn consistency_proof_problems() {
    let fx = Fixture::new();
    let (jsonl, proofs) = fx.partial_parts();
    let partial = ExportInput {
        entries_jsonl: &jsonl,
        proofs_json: Some(&proofs),
        previous_checkpoint: Some(&fx.previous),
        ..fx.full()
    };
    assert_eq!(
        err(partial),
        AuditError::ConsistencyProofMissing { previous: OLD }
    );
    // A flipped bit.
    let mut proof = fx.tree.consistency_proof(OLD, SIZE).unwrap();
    proof.path[0].0[0] ^= 1;
    let flipped = proof.to_json();
    assert_eq!(
        err(ExportInput {
            consistency_proof: Some(&flipped),
            ..partial
        }),
        AuditError::Inconsistent {
            previous: OLD,
            new: SIZE
        }
    );
    // A proof between other sizes.
    let other = fx.tree.consistency_proof(OLD - 1, SIZE).unwrap().to_json();
    assert_eq!(
        err(ExportInput {
            consistency_proof: Some(&other),
            ..partial
        }),
        AuditError::ConsistencyProofSizeMismatch {
            proof_old: OLD - 1,
            proof_new: SIZE,
            previous: OLD,
            new: SIZE
        }
    );
    // Malformed.
    assert!(matches!(
        err(ExportInput {
            consistency_proof: Some("{}"),
            ..partial
        }),
        AuditError::ConsistencyProofMalformed { .. }
    ));
    // Given without a previous checkpoint.
    let good = fx.consistency_json();
    assert_eq!(
        err(ExportInput {
            consistency_proof: Some(&good),
            ..fx.full()
        }),
        AuditError::UnexpectedConsistencyProof
    );
    // For a full export a wrong proof is not ignored either.
    assert!(matches!(
        err(ExportInput {
            previous_checkpoint: Some(&fx.previous),
            consistency_proof: Some(&flipped),
            ..fx.full()
        }),
        AuditError::Inconsistent { .. }
    ));
}

#[test]
fn check_consistent_for_the_aggregator() {
    let fx = Fixture::new();
    let vkey = fx.vkey.clone();
    let old = crate::parse_and_verify_checkpoint(&fx.previous, &vkey, ORIGIN).unwrap();
    let new = crate::parse_and_verify_checkpoint(&fx.checkpoint, &vkey, ORIGIN).unwrap();
    let proof = fx.tree.consistency_proof(OLD, SIZE).unwrap();
    check_consistent(&old, &new, &proof).unwrap();
    // Refuses a new checkpoint that is not an extension.
    let mut forked = new.clone();
    forked.root = leaf_hash(b"fork");
    assert_eq!(
        check_consistent(&old, &forked, &proof),
        Err(AuditError::Inconsistent {
            previous: OLD,
            new: SIZE
        })
    );
    assert_eq!(
        check_consistent(&new, &old, &proof),
        Err(AuditError::PreviousLarger {
            previous: SIZE,
            new: OLD
        })
    );
    let mut elsewhere = new.clone();
    elsewhere.origin = "x.example/log".to_owned();
    assert!(matches!(
        check_consistent(&old, &elsewhere, &proof),
        Err(AuditError::OriginsDiffer { .. })
    ));
    let wrong_sizes = fx.tree.consistency_proof(OLD, SIZE - 1).unwrap();
    assert!(matches!(
        check_consistent(&old, &new, &wrong_sizes),
        Err(AuditError::ConsistencyProofSizeMismatch { .. })
    ));
}

#[test]
fn tamper_matrix_variants_are_distinct() {
    // One representative per tamper, collected from the tests above, must map
    // to pairwise different variants (by discriminant).
    let fx = Fixture::new();
    let mut seen = Vec::new();
    let mut record = |name: &str, e: AuditError| {
        let d = std::mem::discriminant(&e);
        if let Some((other, _)) = seen.iter().find(|(_, od)| *od == d) {
            panic!("{name} and {other} share a variant: {e}");
        }
        seen.push((name.to_owned(), d));
    };
    let mut lines = fx.lines.clone();
    lines[4] = tamper(&lines[4], "within budget", "within budgeu");
    let flipped = to_jsonl(&lines);
    record(
        "flipped entry byte",
        err(ExportInput {
            entries_jsonl: &flipped,
            ..fx.full()
        }),
    );
    let mut lines = fx.lines.clone();
    lines.remove(5);
    let deleted = to_jsonl(&lines);
    record(
        "deleted entry",
        err(ExportInput {
            entries_jsonl: &deleted,
            ..fx.full()
        }),
    );
    let mut lines = fx.lines.clone();
    lines.insert(4, lines[3].clone());
    let inserted = to_jsonl(&lines);
    record(
        "inserted entry",
        err(ExportInput {
            entries_jsonl: &inserted,
            ..fx.full()
        }),
    );
    let mut lines = fx.lines.clone();
    lines.swap(6, 7);
    let reordered = to_jsonl(&lines);
    record(
        "reordered entries",
        err(ExportInput {
            entries_jsonl: &reordered,
            ..fx.full()
        }),
    );
    let truncated = to_jsonl(&fx.lines[..10]);
    record(
        "truncated tail",
        err(ExportInput {
            entries_jsonl: &truncated,
            ..fx.full()
        }),
    );
    let cut = &fx.jsonl[..fx.jsonl.len() - 20];
    record(
        "cut line",
        err(ExportInput {
            entries_jsonl: cut,
            ..fx.full()
        }),
    );
    let edited = tamper(&fx.checkpoint, "\n12\n", "\n11\n");
    record(
        "edited checkpoint",
        err(ExportInput {
            checkpoint: &edited,
            ..fx.full()
        }),
    );
    let other = CheckpointSigner::generate(ORIGIN).unwrap();
    let other_vkey = other.verifier_key_str();
    record(
        "wrong key",
        err(ExportInput {
            vkey: &other_vkey,
            ..fx.full()
        }),
    );
    record(
        "wrong origin",
        err(ExportInput {
            origin: "x.example/log",
            ..fx.full()
        }),
    );
    let (pj, _) = fx.partial_parts();
    let mut proofs: Vec<InclusionProof> = (3..=7)
        .map(|i| fx.tree.inclusion_proof(i, SIZE).unwrap())
        .collect();
    let mut flipped_proofs = proofs.clone();
    flipped_proofs[2].path[0].0[0] ^= 1;
    let fp = inclusion_proofs_to_json(&flipped_proofs);
    record("flipped proof bit", partial_err(&fx, &pj, &fp));
    proofs[2] = fx.tree.inclusion_proof(6, SIZE).unwrap();
    let np = inclusion_proofs_to_json(&proofs);
    record("proof for index + 1", partial_err(&fx, &pj, &np));
    let mut longer = fx.tree.clone();
    longer.push(entry(SIZE).leaf_hash().unwrap());
    let later = fx.sign(SIZE + 1, &longer.root());
    record(
        "later previous",
        err(ExportInput {
            previous_checkpoint: Some(&later),
            ..fx.full()
        }),
    );
    let forked = fx.sign(OLD, &leaf_hash(b"fork"));
    record(
        "forked previous",
        err(ExportInput {
            previous_checkpoint: Some(&forked),
            ..fx.full()
        }),
    );
    let (_, good_proofs) = fx.partial_parts();
    record(
        "missing consistency proof",
        err(ExportInput {
            entries_jsonl: &pj,
            proofs_json: Some(&good_proofs),
            previous_checkpoint: Some(&fx.previous),
            ..fx.full()
        }),
    );
    let not_canonical = tamper(&fx.jsonl, "\"epsilon\":0.25", "\"epsilon\":0.250");
    record(
        "non-canonical entry",
        err(ExportInput {
            entries_jsonl: &not_canonical,
            ..fx.full()
        }),
    );
}

#[test]
fn split_at_newlines_keeps_every_line_once() {
    for body in [
        "",
        "a",
        "a\nb",
        "aaaa\nb\ncc\n\nddd",
        "\n\n\n",
        "x\ny\nz\nw\nv",
    ] {
        let want: Vec<&str> = body.split('\n').collect();
        for parts in 1..=5 {
            let chunks = split_at_newlines(body, parts);
            assert!(!chunks.is_empty() && chunks.len() <= parts, "{body:?}");
            let got: Vec<&str> = chunks.iter().flat_map(|c| c.split('\n')).collect();
            assert_eq!(got, want, "{body:?} in {parts} parts");
        }
    }
}

/// An export large enough to be parsed on several threads: the result, and
/// the first bad line reported, are those of a sequential read.
#[test]
fn large_export_reports_the_first_bad_line() {
    let fx = Fixture::new();
    let n = 2 * PARALLEL_MIN_BYTES as u64 / fx.lines[0].len() as u64 + 100;
    let entries: Vec<AuditEntry> = (0..n).map(entry).collect();
    let mut lines: Vec<String> = entries
        .iter()
        .map(|e| e.to_canonical_json().unwrap())
        .collect();
    let tree = MerkleTree::from_leaves(entries.iter().map(|e| e.leaf_hash().unwrap()));
    let checkpoint = fx.sign(n, &tree.root());
    let jsonl = to_jsonl(&lines);
    assert!(jsonl.len() > PARALLEL_MIN_BYTES);
    // What was verified, with the entries owned (they borrow from `jsonl`).
    let verify = |jsonl: &str| {
        verify_export(ExportInput {
            entries_jsonl: jsonl,
            checkpoint: &checkpoint,
            ..fx.full()
        })
        .map(|v| {
            let entries: Vec<AuditEntry> = v.entries.into_iter().map(|e| e.into_owned()).collect();
            (v.size, v.root, entries)
        })
    };
    let (size, root, verified) = verify(&jsonl).unwrap();
    assert_eq!((size, root), (n, tree.root()));
    assert_eq!(verified, entries);

    // Bad lines late in the file and early in the file: the early one is named.
    let late = n as usize - 3;
    let early = 5;
    lines[late] = lines[late].replacen(",", ", ", 1);
    let e = verify(&to_jsonl(&lines)).unwrap_err();
    assert!(
        matches!(e, AuditError::EntryInvalid { index, line, source: EntryError::NotCanonical { .. } }
            if index == late as u64 && line == late + 1),
        "{e:?}"
    );
    lines[early] = lines[early].replacen("\"seq\":", "\"seq\":-", 1);
    let e = verify(&to_jsonl(&lines)).unwrap_err();
    assert!(
        matches!(
            e,
            AuditError::EntryInvalid {
                index: 5,
                line: 6,
                ..
            }
        ),
        "{e:?}"
    );
    // A sequence fault across the chunk boundary is found too.
    let mut lines: Vec<String> = entries
        .iter()
        .map(|e| e.to_canonical_json().unwrap())
        .collect();
    lines.swap(n as usize / 2, n as usize / 2 + 1);
    let e = verify(&to_jsonl(&lines)).unwrap_err();
    assert!(
        matches!(e, AuditError::SequenceOutOfOrder { line, .. } if line == n as usize / 2 + 1),
        "{e:?}"
    );
}

/// `parse_body` on any number of threads gives the sequential result, and a
/// bad line in any chunk (first, middle or last line of it) is reported as
/// that line of the file; with several bad lines, the first one is.
#[test]
fn parallel_parse_names_the_bad_line_in_every_chunk() {
    let n = 300;
    let lines: Vec<String> = (0..n)
        .map(|i| entry(i).to_canonical_json().unwrap())
        .collect();
    let jsonl = to_jsonl(&lines);
    let body = jsonl.strip_suffix('\n').unwrap();
    let want = parse_body(body, 1).unwrap();
    assert_eq!(want.entries.len(), n as usize);
    for threads in 2..=5 {
        let got = parse_body(body, threads).unwrap();
        assert!(got.entries == want.entries && got.leaves == want.leaves);

        // The first line of each chunk `parse_body` makes, and the lines
        // either side of each cut.
        let chunks = split_at_newlines(body, threads * CHUNKS_PER_THREAD);
        let mut starts = vec![0];
        for c in &chunks[..chunks.len() - 1] {
            starts.push(starts.last().unwrap() + c.split('\n').count());
        }
        let mut bad_lines: Vec<usize> = starts
            .iter()
            .flat_map(|&s| [s.saturating_sub(1), s, s + 1])
            .chain([n as usize - 1])
            .collect();
        bad_lines.dedup();
        for &bad in &bad_lines {
            let mut tampered = lines.clone();
            tampered[bad] = tampered[bad].replacen("\"seq\":", "\"seq\": ", 1);
            let jsonl = to_jsonl(&tampered);
            let e = parse_body(jsonl.strip_suffix('\n').unwrap(), threads)
                .err()
                .unwrap();
            assert!(
                matches!(e, AuditError::EntryInvalid { index, line, source: EntryError::NotCanonical { .. } }
                    if index == bad as u64 && line == bad + 1),
                "{threads} threads, bad line {bad}: {e:?}"
            );
            // A later bad line in another chunk does not hide this one.
            if bad + 40 < n as usize {
                tampered[bad + 40] = "{}".to_owned();
                let jsonl = to_jsonl(&tampered);
                let e = parse_body(jsonl.strip_suffix('\n').unwrap(), threads)
                    .err()
                    .unwrap();
                assert!(
                    matches!(e, AuditError::EntryInvalid { index, .. } if index == bad as u64),
                    "{threads} threads, bad lines {bad} and {}: {e:?}",
                    bad + 40
                );
            }
        }
    }
}

/// Through `verify_export` on an export large enough to be read in parallel:
/// a changed entry anywhere in the file is named by its line.
#[test]
fn large_export_names_a_tampered_entry_anywhere() {
    let fx = Fixture::new();
    let n = 2 * PARALLEL_MIN_BYTES as u64 / fx.lines[0].len() as u64 + 77;
    let entries: Vec<AuditEntry> = (0..n).map(entry).collect();
    let lines: Vec<String> = entries
        .iter()
        .map(|e| e.to_canonical_json().unwrap())
        .collect();
    let tree = MerkleTree::from_leaves(entries.iter().map(|e| e.leaf_hash().unwrap()));
    let checkpoint = fx.sign(n, &tree.root());
    for k in 0..=16u64 {
        let bad = (k * (n - 1) / 16) as usize;
        let mut tampered = lines.clone();
        // Still canonical, but no longer what the checkpoint covers.
        tampered[bad] = tampered[bad].replacen("arena-1", "arena-9", 1);
        let jsonl = to_jsonl(&tampered);
        let e = verify_export(ExportInput {
            entries_jsonl: &jsonl,
            checkpoint: &checkpoint,
            ..fx.full()
        })
        .unwrap_err();
        assert!(matches!(e, AuditError::RootMismatch { .. }), "{e:?}");
        // Not canonical: named by its line.
        tampered[bad] = tampered[bad].replacen("\"rho\":0.0", "\"rho\":0.00", 1);
        let jsonl = to_jsonl(&tampered);
        let e = verify_export(ExportInput {
            entries_jsonl: &jsonl,
            checkpoint: &checkpoint,
            ..fx.full()
        })
        .unwrap_err();
        assert!(
            matches!(e, AuditError::EntryInvalid { index, line, .. } if index == bad as u64 && line == bad + 1),
            "bad line {bad}: {e:?}"
        );
    }
}
