//! Small shared helpers: key agreement, share encryption, commitments.

use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey},
    digest,
};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::{NodeIdentity, RoundId, SecAggError, prg};

/// X25519 agreement; refuses a non-contributory (low-order) peer key.
pub(crate) fn agree(
    secret: &StaticSecret,
    public: &[u8; 32],
    peer: &NodeIdentity,
) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    if !shared.was_contributory() {
        return Err(SecAggError::WeakKey { peer: peer.clone() });
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

fn aad(round: &RoundId, from: &NodeIdentity, to: &NodeIdentity) -> Vec<u8> {
    let mut a = Vec::with_capacity(300);
    for part in [round.as_str(), from.as_str(), to.as_str()] {
        a.extend_from_slice(&(part.len() as u32).to_be_bytes());
        a.extend_from_slice(part.as_bytes());
    }
    a
}

fn nonce(from: &NodeIdentity, to: &NodeIdentity) -> Nonce {
    // One key per (round, pair); one message per direction.
    let mut n = [0u8; 12];
    n[0] = u8::from(from > to);
    Nonce::assume_unique_for_key(n)
}

fn key(shared: &[u8; 32], round: &RoundId, from: &NodeIdentity, to: &NodeIdentity) -> LessSafeKey {
    let k = prg::share_key(shared, round, from, to);
    // Invariant: a 32-byte key is the right length for ChaCha20-Poly1305.
    #[allow(clippy::expect_used)]
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k.as_slice()).expect("32-byte key"))
}

/// Encrypts `plaintext` from `from` to `to`.
pub(crate) fn seal(
    shared: &[u8; 32],
    round: &RoundId,
    from: &NodeIdentity,
    to: &NodeIdentity,
    plaintext: &[u8],
) -> Result<Vec<u8>, SecAggError> {
    let mut buf = plaintext.to_vec();
    key(shared, round, from, to)
        .seal_in_place_append_tag(nonce(from, to), Aad::from(aad(round, from, to)), &mut buf)
        .map_err(|_| SecAggError::OutOfRange {
            what: "share plaintext",
            reason: "too long to encrypt".into(),
        })?;
    Ok(buf)
}

/// Decrypts a share sent by `from` to `to`.
pub(crate) fn open(
    shared: &[u8; 32],
    round: &RoundId,
    from: &NodeIdentity,
    to: &NodeIdentity,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SecAggError> {
    let mut buf = Zeroizing::new(ciphertext.to_vec());
    let len = key(shared, round, from, to)
        .open_in_place(nonce(from, to), Aad::from(aad(round, from, to)), &mut buf)
        .map_err(|_| SecAggError::BadShareCiphertext {
            from: from.clone(),
            to: to.clone(),
        })?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// Commitment to a self-mask seed: SHA-256(context, round, node, seed).
pub(crate) fn commit_seed(round: &RoundId, node: &NodeIdentity, seed: &[u8; 32]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"veil-secagg/v1/self-seed-commitment");
    for part in [round.as_str(), node.as_str()] {
        ctx.update(&(part.len() as u32).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    ctx.update(seed);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
