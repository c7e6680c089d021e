//! Signed notes (C2SP `signed-note`, Ed25519) and transparency-log
//! checkpoints (C2SP `tlog-checkpoint`).
//!
//! A checkpoint note is
//!
//! ```text
//! <origin>\n<tree size>\n<base64 root hash>\n\n— <key name> <base64(key id || Ed25519 signature)>\n
//! ```
//!
//! where the signature is over the note text (the three body lines including
//! the final newline) and the 4-byte big-endian key id is
//! `SHA-256(key name || "\n" || 0x01 || 32-byte public key)[..4]`.
//!
//! Key strings follow Go's `golang.org/x/mod/sumdb/note`, so keys and notes
//! interoperate with Go tooling:
//! - verifier key: `<name>+<key id, 8 lowercase hex>+<base64(0x01 || public key)>`;
//! - signer key (secret): `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || 32-byte seed)>`.
//!
//! Parsing is strict. Checkpoint bodies must be exactly the three lines:
//! extension lines (optional in C2SP, "NOT RECOMMENDED" there, and never
//! written by Veil) are rejected, so nothing unauditable rides along. Following
//! the signed-note rules, signatures from other keys (other name or key id, e.g.
//! witnesses or a rotated key) are ignored, at least one signature from the
//! pinned key must be present, and every signature from the pinned key must
//! verify.
//!
//! Checkpoints carry only an origin, a size and a hash: never personal data.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use super::error::{AuditError, CheckpointRole};
use super::merkle::Hash;

/// Signature type byte of Ed25519 in signed notes.
pub const ALG_ED25519: u8 = 0x01;

/// The em dash and space that open a signature line.
const SIG_PREFIX: &str = "\u{2014} ";

/// Most signature lines accepted in one note (C2SP requires at least 16; Go allows 100).
pub const MAX_SIGNATURES: usize = 100;

/// Whether `name` is a valid key name: non-empty, no Unicode whitespace, no
/// `+`, no control characters.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// The signed-note key id: `SHA-256(name || "\n" || 0x01 || public key)[..4]`, big-endian.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[ALG_ED25519]);
    ctx.update(public_key);
    let d = ctx.finish();
    let b = d.as_ref();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// A pinned Ed25519 verifier key.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    public_key: [u8; 32],
}

impl VerifierKey {
    /// Builds the key for `name` and a raw Ed25519 public key.
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, AuditError> {
        if !is_valid_key_name(name) {
            return Err(AuditError::InvalidKeyName {
                name: name.to_owned(),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, &public_key),
            public_key,
        })
    }

    /// Parses `<name>+<key id hex>+<base64(0x01 || public key)>`, checking the key id.
    pub fn parse(s: &str) -> Result<Self, AuditError> {
        let bad = |reason: &str| AuditError::VerifierKeyMalformed {
            reason: reason.to_owned(),
        };
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <name>+<key id>+<base64 key>"));
        };
        if !is_valid_key_name(name) {
            return Err(bad("invalid key name"));
        }
        let id =
            parse_key_id_hex(id_hex).ok_or_else(|| bad("key id must be 8 lowercase hex digits"))?;
        let key = decode_canonical_base64(key64).ok_or_else(|| bad("key is not valid base64"))?;
        let Some((&alg, public)) = key.split_first() else {
            return Err(bad("key is empty"));
        };
        if alg != ALG_ED25519 {
            return Err(bad(
                "unknown signature algorithm (only Ed25519, 0x01, is supported)",
            ));
        }
        let public_key: [u8; 32] = public
            .try_into()
            .map_err(|_| bad("Ed25519 public key must be 32 bytes"))?;
        let want = key_id(name, &public_key);
        if want != id {
            return Err(AuditError::VerifierKeyMalformed {
                reason: format!("key id {id:08x} does not match the key (expected {want:08x})"),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            id,
            public_key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// `name+keyid`, how errors name this key.
    pub fn label(&self) -> String {
        format!("{}+{:08x}", self.name, self.id)
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(msg, sig)
            .is_ok()
    }
}

impl fmt::Display for VerifierKey {
    /// The verifier key string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut key = Vec::with_capacity(33);
        key.push(ALG_ED25519);
        key.extend_from_slice(&self.public_key);
        write!(f, "{}+{:08x}+{}", self.name, self.id, BASE64.encode(key))
    }
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

fn parse_key_id_hex(s: &str) -> Option<u32> {
    if s.len() != 8
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

fn decode_canonical_base64(s: &str) -> Option<Vec<u8>> {
    let bytes = BASE64.decode(s).ok()?;
    (BASE64.encode(&bytes) == s).then_some(bytes)
}

/// An Ed25519 checkpoint signing key. `Debug` never shows the secret.
pub struct CheckpointSigner {
    name: String,
    seed: [u8; 32],
    key_pair: Ed25519KeyPair,
    verifier: VerifierKey,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("verifier", &self.verifier)
            .field("seed", &"<redacted>")
            .finish()
    }
}

impl CheckpointSigner {
    /// Generates a new key named `name` from the system's secure RNG.
    pub fn generate(name: &str) -> Result<Self, AuditError> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| AuditError::KeyGeneration)?;
        Self::from_seed(name, seed)
    }

    /// A signer from a raw 32-byte Ed25519 seed (RFC 8032 private key).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, AuditError> {
        if !is_valid_key_name(name) {
            return Err(AuditError::InvalidKeyName {
                name: name.to_owned(),
            });
        }
        let key_pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| {
            AuditError::SignerKeyMalformed {
                reason: "not a usable Ed25519 seed".to_owned(),
            }
        })?;
        let public_key: [u8; 32] = key_pair.public_key().as_ref().try_into().map_err(|_| {
            AuditError::SignerKeyMalformed {
                reason: "unexpected Ed25519 public key length".to_owned(),
            }
        })?;
        let verifier = VerifierKey::new(name, public_key)?;
        Ok(Self {
            name: name.to_owned(),
            seed,
            key_pair,
            verifier,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>` and checks
    /// the key id against the derived public key. Errors never quote the input.
    pub fn from_private_key_str(s: &str) -> Result<Self, AuditError> {
        let bad = |reason: &str| AuditError::SignerKeyMalformed {
            reason: reason.to_owned(),
        };
        let mut parts = s.splitn(5, '+');
        let (Some("PRIVATE"), Some("KEY"), Some(name), Some(id_hex), Some(key64)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad("expected PRIVATE+KEY+<name>+<key id>+<base64 key>"));
        };
        if !is_valid_key_name(name) {
            return Err(bad("invalid key name"));
        }
        let id =
            parse_key_id_hex(id_hex).ok_or_else(|| bad("key id must be 8 lowercase hex digits"))?;
        let key = decode_canonical_base64(key64).ok_or_else(|| bad("key is not valid base64"))?;
        let Some((&alg, seed)) = key.split_first() else {
            return Err(bad("key is empty"));
        };
        if alg != ALG_ED25519 {
            return Err(bad(
                "unknown signature algorithm (only Ed25519, 0x01, is supported)",
            ));
        }
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| bad("Ed25519 seed must be 32 bytes"))?;
        let signer = Self::from_seed(name, seed)?;
        if signer.verifier.id != id {
            return Err(bad("key id does not match the key"));
        }
        Ok(signer)
    }

    /// The secret key string `PRIVATE+KEY+<name>+<key id>+<base64(0x01 || seed)>`.
    /// Store it like any secret; never log it.
    pub fn private_key_str(&self) -> String {
        let mut key = Vec::with_capacity(33);
        key.push(ALG_ED25519);
        key.extend_from_slice(&self.seed);
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.verifier.id,
            BASE64.encode(key)
        )
    }

    /// The public verifier key string to pin in verifiers.
    pub fn verifier_key_str(&self) -> String {
        self.verifier.to_string()
    }

    /// The public verifier key.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.verifier
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signs arbitrary note text (must be non-empty and end with a newline,
    /// with no control characters other than newline); returns the signed note.
    pub fn sign_note(&self, text: &str) -> Result<String, AuditError> {
        if !text.ends_with('\n') || text.chars().any(|c| c < '\u{20}' && c != '\n') {
            return Err(AuditError::NoteMalformed {
                role: CheckpointRole::Note,
                reason: "text must end with a newline and contain no control characters".to_owned(),
            });
        }
        let sig = self.key_pair.sign(text.as_bytes());
        let mut raw = Vec::with_capacity(4 + 64);
        raw.extend_from_slice(&self.verifier.id.to_be_bytes());
        raw.extend_from_slice(sig.as_ref());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            BASE64.encode(raw)
        ))
    }

    /// Signs the checkpoint `(origin, size, root)`; returns the signed note.
    pub fn sign(&self, origin: &str, size: u64, root: &Hash) -> Result<String, AuditError> {
        let cp = Checkpoint {
            origin: origin.to_owned(),
            size,
            root: *root,
        };
        self.sign_note(&cp.body()?)
    }

    /// Signs a [`Checkpoint`]; returns the signed note.
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> Result<String, AuditError> {
        self.sign_note(&checkpoint.body()?)
    }
}

/// A tree head: which log, how many entries, and the Merkle root over them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line, e.g. `veil.example/audit/aggregator-1`.
    pub origin: String,
    /// Number of entries in the tree.
    pub size: u64,
    /// RFC 9162 Merkle root of those entries.
    pub root: Hash,
}

fn check_origin(origin: &str) -> Result<(), AuditError> {
    let bad = |reason| {
        Err(AuditError::InvalidOrigin {
            origin: origin.to_owned(),
            reason,
        })
    };
    if origin.is_empty() {
        return bad("must be non-empty");
    }
    if origin.chars().any(char::is_control) {
        return bad("must not contain newlines or control characters");
    }
    Ok(())
}

impl Checkpoint {
    /// The note text: `<origin>\n<size>\n<base64 root>\n`.
    pub fn body(&self) -> Result<String, AuditError> {
        check_origin(&self.origin)?;
        Ok(format!("{}\n{}\n{}\n", self.origin, self.size, self.root))
    }

    /// Parses a note text strictly as a checkpoint body (exactly three lines).
    pub fn parse_body(text: &str, role: CheckpointRole) -> Result<Self, AuditError> {
        let bad = |reason: String| AuditError::CheckpointMalformed { role, reason };
        let Some(body) = text.strip_suffix('\n') else {
            return Err(bad("text does not end with a newline".to_owned()));
        };
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(bad(format!(
                "expected 3 lines (origin, size, root), found {}",
                lines.len()
            )));
        }
        if lines.len() > 3 {
            return Err(bad(format!(
                "unexpected line 4 ({} extra lines): extension lines are not accepted",
                lines.len() - 3
            )));
        }
        let (origin, size, root) = (lines[0], lines[1], lines[2]);
        if origin.is_empty() {
            return Err(bad("origin line is empty".to_owned()));
        }
        let size_ok = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size: u64 = size.parse().ok().filter(|_| size_ok).ok_or_else(|| {
            bad(format!(
                "tree size {size:?} is not a decimal number without leading zeros"
            ))
        })?;
        let root = Hash::from_base64(root)
            .ok_or_else(|| bad(format!("root {root:?} is not a base64 SHA-256 hash")))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

/// Opens a signed note with the pinned key: checks its structure, requires at
/// least one signature line from `vkey` (same name and key id) and that every
/// such line verifies, ignores other keys' lines; returns the note text.
pub fn verify_note<'a>(note: &'a str, vkey: &VerifierKey) -> Result<&'a str, AuditError> {
    open_note(note, vkey, CheckpointRole::Note)
}

pub(crate) fn open_note<'a>(
    note: &'a str,
    vkey: &VerifierKey,
    role: CheckpointRole,
) -> Result<&'a str, AuditError> {
    let bad = |reason: &str| AuditError::NoteMalformed {
        role,
        reason: reason.to_owned(),
    };
    if note.chars().any(|c| c < '\u{20}' && c != '\n') {
        return Err(bad(
            "contains a control character other than newline (CRLF line endings?)",
        ));
    }
    let Some(split) = note.rfind("\n\n") else {
        return Err(bad("no blank line between text and signatures"));
    };
    let (text, sigs) = (&note[..=split], &note[split + 2..]);
    if sigs.is_empty() {
        return Err(bad("no signature lines"));
    }
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return Err(bad("last signature line is not terminated by a newline"));
    };
    let mut present = Vec::new();
    let mut verified = false;
    for (n, line) in sigs.split('\n').enumerate() {
        if n >= MAX_SIGNATURES {
            return Err(bad("too many signature lines"));
        }
        let Some(rest) = line.strip_prefix(SIG_PREFIX) else {
            return Err(bad(
                "signature line does not start with an em dash and a space",
            ));
        };
        let Some((name, sig64)) = rest.split_once(' ') else {
            return Err(bad(
                "signature line has no space between key name and signature",
            ));
        };
        if !is_valid_key_name(name) {
            return Err(bad("signature line has an invalid key name"));
        }
        let raw =
            decode_canonical_base64(sig64).ok_or_else(|| bad("signature is not valid base64"))?;
        if raw.len() < 5 {
            return Err(bad("signature is too short"));
        }
        let id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        present.push(format!("{name}+{id:08x}"));
        if name != vkey.name || id != vkey.id {
            continue; // Another key: ignored, per signed-note rules.
        }
        if !vkey.verify(text.as_bytes(), &raw[4..]) {
            return Err(AuditError::SignatureInvalid {
                role,
                key: vkey.label(),
            });
        }
        verified = true;
    }
    if !verified {
        return Err(AuditError::NotSignedByKey {
            role,
            key: vkey.label(),
            present: present.join(", "),
        });
    }
    Ok(text)
}

pub(crate) fn open_checkpoint(
    note: &str,
    vkey: &VerifierKey,
    expected_origin: &str,
    role: CheckpointRole,
) -> Result<Checkpoint, AuditError> {
    let text = open_note(note, vkey, role)?;
    let cp = Checkpoint::parse_body(text, role)?;
    if cp.origin != expected_origin {
        return Err(AuditError::OriginMismatch {
            role,
            found: cp.origin,
            expected: expected_origin.to_owned(),
        });
    }
    Ok(cp)
}

/// Parses a signed checkpoint note and verifies it with the verifier key
/// string `vkey` and the expected origin.
pub fn parse_and_verify_checkpoint(
    note: &str,
    vkey: &str,
    expected_origin: &str,
) -> Result<Checkpoint, AuditError> {
    let vkey = VerifierKey::parse(vkey)?;
    open_checkpoint(note, &vkey, expected_origin, CheckpointRole::Checkpoint)
}

#[cfg(test)]
mod tests;
