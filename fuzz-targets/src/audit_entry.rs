//! `audit_entry`: canonical audit entry lines,
//! [`AuditEntry::parse_canonical`] and [`AuditEntryRef::parse_canonical`].
//!
//! Invariants, per `\n`-separated line of the input: no line panics; the
//! owned and borrowing parsers agree (same entry or same error); an accepted
//! line is valid and is byte for byte the canonical encoding of its entry,
//! so its leaf hash is the hash of the line.

use veil_audit::{AuditEntry, AuditEntryRef, merkle};

/// Parses every line of the input as an audit entry.
pub fn audit_entry(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.split('\n') {
        let owned = AuditEntry::parse_canonical(line);
        let borrowed = AuditEntryRef::parse_canonical(line);
        match (&owned, &borrowed) {
            (Ok(a), Ok(b)) => assert!(b == a, "{line:?}: {a:?} != {b:?}"),
            (Err(a), Err(b)) => assert_eq!(a, b, "{line:?}"),
            _ => panic!("{line:?}: owned {owned:?}, borrowed {borrowed:?}"),
        }
        let Ok(entry) = owned else {
            continue;
        };
        assert_eq!(entry.validate(), Ok(()));
        assert_eq!(entry.to_canonical_json().as_deref(), Ok(line));
        assert_eq!(entry.leaf_hash(), Ok(merkle::leaf_hash(line.as_bytes())));
        let _ = entry.to_string();
    }
}
