//! Shamir secret sharing of 32-byte secrets over the prime field
//! GF(p), p = 2^61 - 1 (a Mersenne prime: reduction is a shift and an add).
//!
//! A 32-byte secret is cut into [`LIMBS`] limbs of 7 bytes (the last one 4),
//! each below 2^56 < p, and each limb is shared with its own random
//! polynomial of degree `t - 1` (coefficients uniform in GF(p) from ring's
//! `SystemRandom`, by rejection sampling). A share is the evaluations of the
//! `LIMBS` polynomials at the holder's x-coordinate (1..=65535, never 0).
//! Any `t` shares give the secret by Lagrange interpolation at 0; any `t - 1`
//! shares are independent of it (each limb's shares are uniform given fewer
//! than `t` evaluation points).
//!
//! Shamir sharing is not verifiable: a wrong share gives a wrong secret.
//! The protocol detects it one level up (a reconstructed mask key must
//! match the advertised public key; a self-mask seed its commitment).
//!
//! # Citations
//! Shamir. How to Share a Secret (CACM 1979).

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroize;

use crate::SecAggError;

/// The field modulus 2^61 - 1.
pub const P: u64 = (1 << 61) - 1;
/// Field elements per 32-byte secret.
pub const LIMBS: usize = 5;
const LIMB_BYTES: usize = 7;
/// Bytes of a serialized share (its values; the x-coordinate is implied by
/// the holder).
pub const SHARE_BYTES: usize = 8 * LIMBS;

/// One holder's share of a 32-byte secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    /// The holder's x-coordinate (never 0).
    pub x: u16,
    /// The evaluations, each in `[0, p)`.
    pub y: [u64; LIMBS],
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share {{ x: {}, y: <redacted> }}", self.x)
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.y.zeroize();
    }
}

impl Share {
    /// Little-endian bytes of the values.
    pub fn to_bytes(&self) -> [u8; SHARE_BYTES] {
        let mut out = [0u8; SHARE_BYTES];
        for (chunk, y) in out.chunks_exact_mut(8).zip(self.y) {
            chunk.copy_from_slice(&y.to_le_bytes());
        }
        out
    }

    /// Parses values received from a peer; every value must be below p.
    pub fn from_bytes(x: u16, bytes: &[u8]) -> Result<Self, SecAggError> {
        if bytes.len() != SHARE_BYTES {
            return Err(SecAggError::WrongShape {
                what: "share",
                expected: SHARE_BYTES,
                got: bytes.len(),
            });
        }
        let mut y = [0u64; LIMBS];
        for (v, chunk) in y.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *v = u64::from_le_bytes(b);
            if *v >= P {
                return Err(SecAggError::OutOfRange {
                    what: "share value",
                    reason: "not below the field modulus 2^61 - 1".into(),
                });
            }
        }
        Self::checked(x, y)
    }

    fn checked(x: u16, y: [u64; LIMBS]) -> Result<Self, SecAggError> {
        if x == 0 {
            return Err(SecAggError::OutOfRange {
                what: "share x-coordinate",
                reason: "0 would reveal the secret".into(),
            });
        }
        Ok(Self { x, y })
    }
}

fn reduce(v: u128) -> u64 {
    // v < 2^122: fold twice.
    let lo = (v as u64) & P;
    let hi = (v >> 61) as u64;
    let s = lo + (hi & P) + (hi >> 61);
    let s = (s & P) + (s >> 61);
    if s >= P { s - P } else { s }
}

fn add(a: u64, b: u64) -> u64 {
    let s = a + b; // both < 2^61: no overflow
    if s >= P { s - P } else { s }
}

fn sub(a: u64, b: u64) -> u64 {
    if a >= b { a - b } else { a + P - b }
}

fn mul(a: u64, b: u64) -> u64 {
    reduce(u128::from(a) * u128::from(b))
}

fn pow(mut a: u64, mut e: u64) -> u64 {
    let mut r = 1;
    while e > 0 {
        if e & 1 == 1 {
            r = mul(r, a);
        }
        a = mul(a, a);
        e >>= 1;
    }
    r
}

fn inv(a: u64) -> u64 {
    // Fermat; callers never pass 0 (distinct nonzero x-coordinates).
    pow(a, P - 2)
}

fn random_element(rng: &SystemRandom) -> Result<u64, SecAggError> {
    loop {
        let mut b = [0u8; 8];
        rng.fill(&mut b).map_err(|_| SecAggError::Randomness)?;
        let v = u64::from_le_bytes(b) >> 3; // 61 bits
        if v < P {
            return Ok(v);
        }
    }
}

fn limbs(secret: &[u8; 32]) -> [u64; LIMBS] {
    let mut out = [0u64; LIMBS];
    for (limb, chunk) in out.iter_mut().zip(secret.chunks(LIMB_BYTES)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *limb = u64::from_le_bytes(b);
    }
    out
}

/// Splits `secret` into one share per x-coordinate in `xs` (distinct, not
/// 0); any `threshold` of them reconstruct it.
pub fn split(secret: &[u8; 32], threshold: usize, xs: &[u16]) -> Result<Vec<Share>, SecAggError> {
    if threshold == 0 || threshold > xs.len() {
        return Err(SecAggError::InvalidParameter {
            name: "threshold",
            reason: format!("need 1 <= t <= {} holders, got {threshold}", xs.len()),
        });
    }
    check_xs(xs)?;
    let rng = SystemRandom::new();
    let mut coeffs = vec![[0u64; LIMBS]; threshold];
    coeffs[0] = limbs(secret);
    for c in coeffs.iter_mut().skip(1) {
        for v in c.iter_mut() {
            *v = random_element(&rng)?;
        }
    }
    let shares = xs
        .iter()
        .map(|&x| {
            let mut y = [0u64; LIMBS];
            for (l, yl) in y.iter_mut().enumerate() {
                // Horner.
                *yl = coeffs
                    .iter()
                    .rev()
                    .fold(0, |acc, c| add(mul(acc, u64::from(x)), c[l]));
            }
            Share { x, y }
        })
        .collect();
    for c in coeffs.iter_mut() {
        c.zeroize();
    }
    Ok(shares)
}

fn check_xs(xs: &[u16]) -> Result<(), SecAggError> {
    let mut seen = std::collections::HashSet::with_capacity(xs.len());
    for &x in xs {
        if x == 0 || !seen.insert(x) {
            return Err(SecAggError::OutOfRange {
                what: "share x-coordinates",
                reason: "must be distinct and nonzero".into(),
            });
        }
    }
    Ok(())
}

/// Reconstructs the secret from `shares` (distinct x, at least one). With
/// fewer than the sharing threshold the result is garbage, not an error:
/// callers count shares first ([`crate::server`] refuses below t). A result
/// whose limbs do not fit their byte width proves inconsistent shares.
pub fn reconstruct(shares: &[Share]) -> Result<[u8; 32], SecAggError> {
    if shares.is_empty() {
        return Err(SecAggError::InvalidParameter {
            name: "shares",
            reason: "no shares".into(),
        });
    }
    let xs: Vec<u16> = shares.iter().map(|s| s.x).collect();
    check_xs(&xs)?;
    // Lagrange basis at 0: l_j = prod_{m != j} x_m / (x_m - x_j).
    let mut secret = [0u64; LIMBS];
    for (j, sj) in shares.iter().enumerate() {
        let xj = u64::from(sj.x);
        let (mut num, mut den) = (1u64, 1u64);
        for (m, sm) in shares.iter().enumerate() {
            if m != j {
                let xm = u64::from(sm.x);
                num = mul(num, xm);
                den = mul(den, sub(xm, xj));
            }
        }
        let l = mul(num, inv(den));
        for (acc, &y) in secret.iter_mut().zip(sj.y.iter()) {
            *acc = add(*acc, mul(l, y));
        }
    }
    let mut out = [0u8; 32];
    for (chunk, limb) in out.chunks_mut(LIMB_BYTES).zip(secret) {
        let width = chunk.len();
        if limb >> (8 * width) != 0 {
            return Err(SecAggError::OutOfRange {
                what: "reconstructed secret",
                reason: "shares are inconsistent".into(),
            });
        }
        chunk.copy_from_slice(&limb.to_le_bytes()[..width]);
    }
    secret.zeroize();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn field_arithmetic() {
        assert_eq!(mul(P - 1, P - 1), 1);
        assert_eq!(mul(inv(12345), 12345), 1);
        assert_eq!(reduce(u128::from(P) * 3), 0);
        assert_eq!(sub(0, 1), P - 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_t_shares_reconstruct(secret in any::<[u8; 32]>(), n in 1usize..12, t_frac in 0.0f64..1.0, pick in any::<u64>()) {
            let t = 1 + ((n - 1) as f64 * t_frac) as usize;
            let xs: Vec<u16> = (1..=n as u16).map(|i| i * 7).collect();
            let shares = split(&secret, t, &xs).unwrap();
            // Take t shares chosen by `pick` (rotate).
            let start = (pick as usize) % n;
            let subset: Vec<Share> = (0..t).map(|i| shares[(start + i) % n].clone()).collect();
            prop_assert_eq!(reconstruct(&subset).unwrap(), secret);
            // All n shares also work.
            prop_assert_eq!(reconstruct(&shares).unwrap(), secret);
        }

        #[test]
        fn serialization_round_trips(secret in any::<[u8; 32]>()) {
            let s = split(&secret, 2, &[3, 9]).unwrap();
            let back = Share::from_bytes(3, &s[0].to_bytes()).unwrap();
            prop_assert_eq!(back, s[0].clone());
        }
    }

    #[test]
    fn fewer_than_t_shares_give_a_different_secret() {
        let secret = [7u8; 32];
        let shares = split(&secret, 3, &[1, 2, 3, 4]).unwrap();
        let r = reconstruct(&shares[..2]);
        assert_ne!(r.ok(), Some(secret));
    }

    #[test]
    fn t_minus_one_shares_are_uniform_in_the_first_limb() {
        // With t = 2, one share's value is uniform whatever the secret: the
        // shares of two different secrets have the same distribution. Check
        // the top bit of the first limb is balanced for secret = 0.
        let n = 2000;
        let ones = (0..n)
            .filter(|_| split(&[0u8; 32], 2, &[1, 2]).unwrap()[0].y[0] >> 60 == 1)
            .count();
        // p's top bit (2^60) is set for just under half of GF(p).
        assert!((850..1150).contains(&ones), "{ones}");
    }

    #[test]
    fn malformed_shares_refused() {
        assert!(Share::from_bytes(1, &[0u8; 39]).is_err());
        assert!(Share::from_bytes(1, &[0xff; 40]).is_err());
        assert!(Share::from_bytes(0, &[0u8; 40]).is_err());
        assert!(split(&[0; 32], 3, &[1, 2]).is_err());
        assert!(split(&[0; 32], 1, &[1, 1]).is_err());
    }
}
