//! Key derivation and mask expansion.
//!
//! * Pairwise mask seed of nodes u < v: HKDF-SHA256 (ring) of the X25519
//!   agreement of their mask keys, salt [`PAIR_SALT`], info = round id and
//!   both identities (length-prefixed, lower first), so a seed is bound to
//!   one round and one pair.
//! * Share-encryption key of u and v: the same over their encryption keys
//!   with salt [`SHARE_SALT`]; each direction uses its own nonce, and each
//!   key encrypts one message per direction.
//! * Self mask of u: HKDF of its random 32-byte seed b_u, bound to the round
//!   and u.
//! * A mask is the ChaCha20 keystream (20 rounds, `chacha20::ChaCha20Rng`
//!   seeded with the derived key) read as little-endian u32 words, added or
//!   subtracted modulo 2^32 coordinate by coordinate.

use chacha20::{
    ChaCha20Rng,
    rand_core::{Rng, SeedableRng},
};
use ring::hkdf;
use zeroize::Zeroizing;

use crate::{NodeIdentity, RoundId};

/// HKDF salt of pairwise mask seeds.
pub const PAIR_SALT: &[u8] = b"veil-secagg/v1/pairwise-mask";
/// HKDF salt of share-encryption keys.
pub const SHARE_SALT: &[u8] = b"veil-secagg/v1/share-encryption";
/// HKDF salt of self-mask keys.
pub const SELF_SALT: &[u8] = b"veil-secagg/v1/self-mask";

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn push_lp(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths here are bounded (round id <= 128, identity <= 160 bytes).
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn expand(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; 32]> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    let parts = [info];
    // Invariant: 32 bytes is far below HKDF-SHA256's 255 * 32 byte limit,
    // so expand and fill cannot fail.
    #[allow(clippy::expect_used)]
    prk.expand(&parts, Len32)
        .and_then(|okm| okm.fill(out.as_mut_slice()))
        .expect("HKDF-SHA256 output of 32 bytes");
    out
}

/// Info string binding a pair key to the round and the (ordered) pair.
fn pair_info(round: &RoundId, a: &NodeIdentity, b: &NodeIdentity) -> Vec<u8> {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut info = Vec::with_capacity(300);
    push_lp(&mut info, round.as_str().as_bytes());
    push_lp(&mut info, lo.as_str().as_bytes());
    push_lp(&mut info, hi.as_str().as_bytes());
    info
}

/// Pairwise mask key of `a` and `b` from their shared secret.
pub fn pair_mask_key(
    shared: &[u8; 32],
    round: &RoundId,
    a: &NodeIdentity,
    b: &NodeIdentity,
) -> Zeroizing<[u8; 32]> {
    expand(PAIR_SALT, shared, &pair_info(round, a, b))
}

/// Share-encryption key of `a` and `b` from their shared secret.
pub fn share_key(
    shared: &[u8; 32],
    round: &RoundId,
    a: &NodeIdentity,
    b: &NodeIdentity,
) -> Zeroizing<[u8; 32]> {
    expand(SHARE_SALT, shared, &pair_info(round, a, b))
}

/// Self-mask key of `node` from its seed.
pub fn self_mask_key(seed: &[u8; 32], round: &RoundId, node: &NodeIdentity) -> Zeroizing<[u8; 32]> {
    let mut info = Vec::with_capacity(300);
    push_lp(&mut info, round.as_str().as_bytes());
    push_lp(&mut info, node.as_str().as_bytes());
    expand(SELF_SALT, seed, &info)
}

/// Whether a mask is added or subtracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// acc += mask.
    Add,
    /// acc -= mask.
    Sub,
}

/// Words of keystream produced per block.
const BLOCK_WORDS: usize = 2048;

/// Adds (or subtracts) the mask expanded from `key` to `acc`, modulo 2^32.
pub fn apply_mask(acc: &mut [u32], key: &[u8; 32], sign: Sign) {
    apply_mask_at(acc, key, sign, 0);
}

/// [`apply_mask`] on the part of a vector that starts at coordinate
/// `offset`: `acc[i]` gets word `offset + i` of the keystream (ChaCha20 is
/// seekable, so parts of one vector can be masked on different threads).
pub fn apply_mask_at(acc: &mut [u32], key: &[u8; 32], sign: Sign, offset: usize) {
    let mut rng = ChaCha20Rng::from_seed(*key);
    rng.set_word_pos(offset as u128);
    let mut buf = Zeroizing::new([0u8; 4 * BLOCK_WORDS]);
    for chunk in acc.chunks_mut(BLOCK_WORDS) {
        let bytes = &mut buf[..4 * chunk.len()];
        rng.fill_bytes(bytes);
        let words = bytes
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        match sign {
            Sign::Add => chunk
                .iter_mut()
                .zip(words)
                .for_each(|(a, m)| *a = a.wrapping_add(m)),
            Sign::Sub => chunk
                .iter_mut()
                .zip(words)
                .for_each(|(a, m)| *a = a.wrapping_sub(m)),
        }
    }
}

/// Applies every mask of `masks` to `acc`, the coordinates split into
/// contiguous parts over up to `threads` scoped threads (each thread
/// expands every key over its part only). Same result as applying them one
/// after the other with [`apply_mask`].
pub fn apply_masks(acc: &mut [u32], masks: &[(Zeroizing<[u8; 32]>, Sign)], threads: usize) {
    // Parts are whole ChaCha blocks (16 words) and at least 64 Ki words.
    let part = acc
        .len()
        .div_ceil(threads.max(1))
        .next_multiple_of(16)
        .max(1 << 16);
    if part >= acc.len() {
        for (key, sign) in masks {
            apply_mask(acc, key, *sign);
        }
        return;
    }
    std::thread::scope(|s| {
        for (i, chunk) in acc.chunks_mut(part).enumerate() {
            s.spawn(move || {
                for (key, sign) in masks {
                    apply_mask_at(chunk, key, *sign, i * part);
                }
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_in_parts_on_threads_equals_masking_in_one_go() {
        let keys: Vec<(Zeroizing<[u8; 32]>, Sign)> = (0..5u8)
            .map(|i| {
                let sign = if i % 2 == 0 { Sign::Add } else { Sign::Sub };
                (Zeroizing::new([i; 32]), sign)
            })
            .collect();
        let n = (1 << 17) + 37;
        let mut one = vec![7u32; n];
        for (k, s) in &keys {
            apply_mask(&mut one, k, *s);
        }
        for threads in [1, 2, 3] {
            let mut parts = vec![7u32; n];
            apply_masks(&mut parts, &keys, threads);
            assert_eq!(parts, one, "{threads} threads");
        }
        // A part starting mid-stream sees the same words.
        let mut tail = vec![7u32; 100];
        apply_mask_at(&mut tail, &keys[0].0, Sign::Add, 1000);
        let mut whole = vec![7u32; 1100];
        apply_mask(&mut whole, &keys[0].0, Sign::Add);
        assert_eq!(tail, whole[1000..]);
    }

    #[test]
    fn add_then_sub_cancels_and_keys_are_bound() {
        let r = RoundId::new("r1").unwrap();
        let a = NodeIdentity::new("v", "a").unwrap();
        let b = NodeIdentity::new("v", "b").unwrap();
        let k = pair_mask_key(&[1; 32], &r, &a, &b);
        assert_eq!(*k, *pair_mask_key(&[1; 32], &r, &b, &a));
        assert_ne!(
            *k,
            *pair_mask_key(&[1; 32], &RoundId::new("r2").unwrap(), &a, &b)
        );
        assert_ne!(*k, *share_key(&[1; 32], &r, &a, &b));
        let mut v: Vec<u32> = (0..5000).collect();
        apply_mask(&mut v, &k, Sign::Add);
        assert_ne!(v[..10], (0..10).collect::<Vec<u32>>()[..]);
        apply_mask(&mut v, &k, Sign::Sub);
        assert_eq!(v, (0..5000).collect::<Vec<u32>>());
    }
}
