use super::*;
use crate::merkle::{empty_root, leaf_hash};

// Test vectors from golang.org/x/mod/sumdb/note (note_test.go).
const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const PETER_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

const ORIGIN: &str = "veil.example/audit/test";

#[test]
fn go_verifier_key_parses_and_key_id_formula_matches() {
    let v = VerifierKey::parse(PETER_VKEY).unwrap();
    assert_eq!(v.name(), "PeterNeumann");
    assert_eq!(v.id(), 0xc74f20a3);
    // The key id is SHA-256(name || "\n" || 0x01 || pubkey)[..4].
    assert_eq!(key_id("PeterNeumann", v.public_key()), 0xc74f20a3);
    assert_eq!(v.to_string(), PETER_VKEY);
    assert_eq!(v.label(), "PeterNeumann+c74f20a3");
    let e = VerifierKey::parse(ENOCH_VKEY).unwrap();
    assert_eq!(e.id(), 0xaf0cfe78);
}

#[test]
fn go_signer_key_derives_the_same_verifier_and_signature() {
    let s = CheckpointSigner::from_private_key_str(PETER_SKEY).unwrap();
    assert_eq!(s.verifier_key_str(), PETER_VKEY);
    assert_eq!(s.private_key_str(), PETER_SKEY);
    assert_eq!(s.name(), "PeterNeumann");
    // Ed25519 is deterministic: byte-identical to Go's note.Sign output.
    assert_eq!(s.sign_note(TEXT).unwrap(), format!("{TEXT}\n{PETER_SIG}"));
    assert!(!format!("{s:?}").contains("AYEKFALV"));
}

#[test]
fn go_signed_note_verifies() {
    let peter = VerifierKey::parse(PETER_VKEY).unwrap();
    let enoch = VerifierKey::parse(ENOCH_VKEY).unwrap();
    let note = format!("{TEXT}\n{PETER_SIG}");
    assert_eq!(verify_note(&note, &peter).unwrap(), TEXT);
    // Two signatures: each key finds its own and ignores the other.
    let both = format!("{TEXT}\n{PETER_SIG}{ENOCH_SIG}");
    assert_eq!(verify_note(&both, &peter).unwrap(), TEXT);
    assert_eq!(verify_note(&both, &enoch).unwrap(), TEXT);
    // Only Enoch's: not signed by Peter.
    let only_enoch = format!("{TEXT}\n{ENOCH_SIG}");
    assert_eq!(
        verify_note(&only_enoch, &peter),
        Err(AuditError::NotSignedByKey {
            role: CheckpointRole::Note,
            key: "PeterNeumann+c74f20a3".to_owned(),
            present: "EnochRoot+af0cfe78".to_owned(),
        })
    );
    // Corrupted signature (Go's test inserts "ABCD" at byte 60).
    let bad = format!("{TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
    assert_eq!(
        verify_note(&bad, &peter),
        Err(AuditError::SignatureInvalid {
            role: CheckpointRole::Note,
            key: "PeterNeumann+c74f20a3".to_owned(),
        })
    );
    // Changed text.
    let changed = format!("{}\n{PETER_SIG}", TEXT.replace("answer", "ANSWER"));
    assert!(matches!(
        verify_note(&changed, &peter),
        Err(AuditError::SignatureInvalid { .. })
    ));
}

#[test]
fn go_malformed_notes_are_rejected() {
    let peter = VerifierKey::parse(PETER_VKEY).unwrap();
    let bad = [
        TEXT.to_owned(),
        format!("{TEXT}\n"),
        format!("{TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
        format!("\u{1}{TEXT}\n{PETER_SIG}"),
        format!(
            "{TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        ),
        format!("{TEXT}\n{PETER_SIG}Unexpected line.\n"),
        format!("{TEXT}\n{}", PETER_SIG.replace('\n', "\r\n")),
        format!(
            "{TEXT}\n- PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        ),
        format!("{TEXT}\n\u{2014} PeterNeumann AAAA\n"),
        format!("{TEXT}\n\u{2014} PeterNeumann not-base64!\n"),
        format!("{TEXT}\n{}", PETER_SIG.repeat(MAX_SIGNATURES + 1)),
    ];
    for note in bad {
        assert!(
            matches!(
                verify_note(&note, &peter),
                Err(AuditError::NoteMalformed { .. })
            ),
            "{note:?}: {:?}",
            verify_note(&note, &peter)
        );
    }
}

#[test]
fn mangled_key_strings_are_rejected() {
    // Every proper substring and every single-byte increment (as Go's tests do).
    let b = PETER_VKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            if let Ok(s) = std::str::from_utf8(&b[i..j]) {
                assert!(VerifierKey::parse(s).is_err(), "{s}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] += 1;
        let s = String::from_utf8(m).unwrap();
        assert!(VerifierKey::parse(&s).is_err(), "{s}");
    }
    // Wrong key length with an adjusted key id; unknown algorithm with an adjusted key id.
    assert!(
        VerifierKey::parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
        .is_err()
    );
    assert!(
        VerifierKey::parse("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .is_err()
    );
    // Uppercase key id.
    assert!(VerifierKey::parse(&PETER_VKEY.replace("c74f20a3", "C74F20A3")).is_err());

    let b = PETER_SKEY.as_bytes();
    for i in 0..=b.len() {
        for j in i + 1..=b.len() {
            if i == 0 && j == b.len() {
                continue;
            }
            if let Ok(s) = std::str::from_utf8(&b[i..j]) {
                let err = CheckpointSigner::from_private_key_str(s).unwrap_err();
                // Errors never echo the secret.
                assert!(!err.to_string().contains("AYEKFALV"), "{err}");
            }
        }
    }
    for i in 0..b.len() {
        let mut m = b.to_vec();
        m[i] += 1;
        let s = String::from_utf8(m).unwrap();
        assert!(CheckpointSigner::from_private_key_str(&s).is_err(), "{s}");
    }
}

#[test]
fn generated_keys_round_trip() {
    let s = CheckpointSigner::generate(ORIGIN).unwrap();
    let again = CheckpointSigner::from_private_key_str(&s.private_key_str()).unwrap();
    assert_eq!(again.verifier_key_str(), s.verifier_key_str());
    let v = VerifierKey::parse(&s.verifier_key_str()).unwrap();
    assert_eq!(&v, s.verifier_key());
    assert_eq!(v.id(), key_id(ORIGIN, v.public_key()));
    assert!(
        s.private_key_str()
            .starts_with(&format!("PRIVATE+KEY+{ORIGIN}+"))
    );
    let other = CheckpointSigner::generate(ORIGIN).unwrap();
    assert_ne!(other.verifier_key_str(), s.verifier_key_str());
    for bad in ["", "a b", "a+b", "tab\there", "nl\n"] {
        assert!(matches!(
            CheckpointSigner::generate(bad),
            Err(AuditError::InvalidKeyName { .. })
        ));
    }
}

#[test]
fn checkpoint_sign_and_verify() {
    let s = CheckpointSigner::generate(ORIGIN).unwrap();
    let root = leaf_hash(b"x");
    let note = s.sign(ORIGIN, 42, &root).unwrap();
    let body = format!("{ORIGIN}\n42\n{}\n", root.to_base64());
    assert!(note.starts_with(&format!("{body}\n\u{2014} {ORIGIN} ")));
    assert!(note.ends_with('\n'));
    let cp = parse_and_verify_checkpoint(&note, &s.verifier_key_str(), ORIGIN).unwrap();
    assert_eq!(
        cp,
        Checkpoint {
            origin: ORIGIN.to_owned(),
            size: 42,
            root
        }
    );
    assert_eq!(s.sign_checkpoint(&cp).unwrap(), note);
    // Empty tree.
    let empty = s.sign(ORIGIN, 0, &empty_root()).unwrap();
    let cp0 = parse_and_verify_checkpoint(&empty, &s.verifier_key_str(), ORIGIN).unwrap();
    assert_eq!(cp0.size, 0);
    // A witness cosignature (unknown key) appended is ignored.
    let witness = CheckpointSigner::generate("witness.example").unwrap();
    let cosigned = witness.sign_note(&body).unwrap();
    let sig_line = cosigned.rsplit_once("\n\n").unwrap().1;
    let both = format!("{note}{sig_line}");
    assert_eq!(
        parse_and_verify_checkpoint(&both, &s.verifier_key_str(), ORIGIN).unwrap(),
        cp
    );
    // Origins with newlines cannot be signed.
    assert!(matches!(
        s.sign("a\nb", 1, &root),
        Err(AuditError::InvalidOrigin { .. })
    ));
    assert!(matches!(
        s.sign("", 1, &root),
        Err(AuditError::InvalidOrigin { .. })
    ));
}

#[test]
fn checkpoint_errors_are_distinct() {
    let s = CheckpointSigner::generate(ORIGIN).unwrap();
    let vkey = s.verifier_key_str();
    let root = leaf_hash(b"x");
    let note = s.sign(ORIGIN, 42, &root).unwrap();

    // Wrong origin.
    let err = parse_and_verify_checkpoint(&note, &vkey, "other.example/log").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("checkpoint origin is \"{ORIGIN}\", expected \"other.example/log\"")
    );
    // A key with the same name but another key id: not signed by it.
    let impostor = CheckpointSigner::generate(ORIGIN).unwrap();
    let err = parse_and_verify_checkpoint(&note, &impostor.verifier_key_str(), ORIGIN).unwrap_err();
    assert!(matches!(err, AuditError::NotSignedByKey { .. }), "{err}");
    // Changed size or root: the signature no longer verifies.
    let changed = note.replacen("\n42\n", "\n43\n", 1);
    let err = parse_and_verify_checkpoint(&changed, &vkey, ORIGIN).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "checkpoint: signature does not verify with key {}",
            s.verifier_key().label()
        )
    );
    // Malformed verifier key.
    assert!(matches!(
        parse_and_verify_checkpoint(&note, "nonsense", ORIGIN),
        Err(AuditError::VerifierKeyMalformed { .. })
    ));

    // Body strictness (each correctly signed, so only the body is at fault).
    let malformed = |text: &str| {
        let n = s.sign_note(text).unwrap();
        let err = parse_and_verify_checkpoint(&n, &vkey, ORIGIN).unwrap_err();
        assert!(
            matches!(err, AuditError::CheckpointMalformed { .. }),
            "{text:?}: {err}"
        );
    };
    let b64 = root.to_base64();
    malformed(&format!("{ORIGIN}\n42\n"));
    malformed(&format!("{ORIGIN}\n42\n{b64}\nextension line\n"));
    malformed(&format!("{ORIGIN}\n042\n{b64}\n"));
    malformed(&format!("{ORIGIN}\n+42\n{b64}\n"));
    malformed(&format!("{ORIGIN}\n-1\n{b64}\n"));
    malformed(&format!("{ORIGIN}\n4 2\n{b64}\n"));
    malformed(&format!("{ORIGIN}\n18446744073709551616\n{b64}\n"));
    malformed(&format!("{ORIGIN}\n\n{b64}\n"));
    malformed(&format!("{ORIGIN}\n42\n{}\n", b64.trim_end_matches('=')));
    malformed(&format!("{ORIGIN}\n42\n{}\n", root.to_hex()));
    malformed(&format!("{ORIGIN}\n42\nAAAA\n"));
    malformed(&format!("\n42\n{b64}\n"));
    // The largest size parses.
    let max = s.sign(ORIGIN, u64::MAX, &root).unwrap();
    assert_eq!(
        parse_and_verify_checkpoint(&max, &vkey, ORIGIN)
            .unwrap()
            .size,
        u64::MAX
    );
}
