//! Keyed pseudonyms: identifiers (device ids, subject ids) become
//! HMAC-SHA256 tags under a key that rotates per event day.
//!
//! The day key is derived with HKDF-SHA256 from a master secret generated in
//! memory from the OS CSPRNG; the secret can never be serialised, copied out
//! or printed (its `Debug` is redacted). Pseudonyms are stable within a day
//! (so contribution bounds work) and unlinkable across days (a new key per
//! day; without the master secret, two days' tags of one identifier look
//! independent). A restart generates a new master secret, so pseudonyms
//! never survive a restart either.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    hash::{BuildHasherDefault, Hash, Hasher},
};

use ::hmac::{Hmac, KeyInit, Mac};
use ring::{
    hkdf, hmac,
    rand::{SecureRandom, SystemRandom},
};
use sha2::Sha256;

use crate::PrivacyError;

const HKDF_SALT: &[u8] = b"veil/pseudonym/v1/salt";
const DAY_KEY_INFO: &[u8] = b"veil/pseudonym/v1/day-key";

/// An event day: days since 1970-01-01 in the venue's chosen calendar.
///
/// Which instant starts a day is the caller's choice (e.g. the venue's local
/// midnight, or the event's doors-open date so one night's concert keeps one
/// key past midnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventDay(u32);

impl EventDay {
    /// The day with this number (days since the Unix epoch).
    pub fn new(days_since_epoch: u32) -> Self {
        Self(days_since_epoch)
    }
    /// The day containing `unix_seconds` shifted by `utc_offset_seconds`
    /// (e.g. +3600 for UTC+1). Refuses instants before 1970 in that offset.
    pub fn from_unix_seconds(
        unix_seconds: i64,
        utc_offset_seconds: i32,
    ) -> Result<Self, PrivacyError> {
        let local = unix_seconds
            .checked_add(i64::from(utc_offset_seconds))
            .filter(|s| *s >= 0)
            .ok_or_else(|| PrivacyError::InvalidParameter {
                name: "unix_seconds",
                reason: "event day must be on or after 1970-01-01".into(),
            })?;
        u32::try_from(local / 86_400)
            .map(Self)
            .map_err(|_| PrivacyError::InvalidParameter {
                name: "unix_seconds",
                reason: "too far in the future".into(),
            })
    }
    /// Days since the Unix epoch.
    pub fn days_since_epoch(self) -> u32 {
        self.0
    }
}

/// A keyed pseudonym: HMAC-SHA256(day key, identifier). Its `Debug` is
/// redacted so it cannot end up in logs by accident.
///
/// It hashes as its first 8 bytes (one `write_u64`): the tag is already a
/// keyed, uniformly distributed hash of the identifier, so those bytes tell
/// pseudonyms apart in a table as well as all 32 would. Equal pseudonyms
/// have equal bytes, so this agrees with `Eq`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pseudonym([u8; 32]);

impl Hash for Pseudonym {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write_u64(u64::from_le_bytes([a, b, c, d, e, f, g, h]));
    }
}

/// The [`Hasher`] of [`PseudonymSet`] and [`PseudonymMap`]: one
/// multiply-rotate step per 8 bytes written (as rustc's `FxHasher`), so a
/// pseudonym costs one multiplication.
///
/// Tables keyed by pseudonyms need no keyed hash (the default SipHash)
/// against hash flooding: a pseudonym is an HMAC tag under a day key that
/// only this process holds, so whoever chooses identifiers (a spoofed MAC
/// address, a made-up ticket) cannot choose which tags, or which table
/// slots, they get. Do not key these tables by anything else.
#[derive(Debug, Clone, Copy, Default)]
pub struct PseudonymHasher(u64);

impl Hasher for PseudonymHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = fold(self.0, v);
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = fold(self.0, u64::from_le_bytes(word));
        }
    }
}

/// One multiply-rotate mixing step (rustc's `FxHasher`); from state 0 it is
/// a multiplication by an odd constant, a bijection that keeps a uniform
/// word uniform in its low (bucket) and high (tag) bits.
fn fold(state: u64, word: u64) -> u64 {
    (state.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
}

/// A set of pseudonyms, hashed by [`PseudonymHasher`].
pub type PseudonymSet = HashSet<Pseudonym, BuildHasherDefault<PseudonymHasher>>;

/// A map keyed by pseudonyms, hashed by [`PseudonymHasher`].
pub type PseudonymMap<V> = HashMap<Pseudonym, V, BuildHasherDefault<PseudonymHasher>>;

impl Pseudonym {
    /// The tag bytes (for in-memory keying only; never send or persist).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// A pseudonym this node computed and stored itself (its durable
    /// contribution-bound state), read back after a restart.
    pub fn from_stored(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// A pseudonym from raw bytes, for this crate's tests only.
    #[cfg(test)]
    pub(crate) fn dangerous_from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonym(<redacted>)")
    }
}

/// Holds the in-memory master secret and derives day keys from it.
/// Not `Clone`, not serialisable; `Debug` is redacted.
pub struct Pseudonymizer {
    master: hkdf::Prk,
}

impl fmt::Debug for Pseudonymizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonymizer { master: <redacted> }")
    }
}

impl Pseudonymizer {
    /// A new master secret (32 bytes from the OS CSPRNG via ring), kept only
    /// as an HKDF pseudorandom key.
    pub fn generate() -> Result<Self, PrivacyError> {
        let mut ikm = [0u8; 32];
        SystemRandom::new()
            .fill(&mut ikm)
            .map_err(|_| PrivacyError::Randomness)?;
        let master = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(&ikm);
        // Best effort: do not leave the secret on the stack.
        ikm.fill(0);
        Ok(Self { master })
    }

    /// The HMAC key for `day`: HKDF-Expand(master, info = label || day).
    pub fn day_key(&self, day: EventDay) -> Result<DayKey, PrivacyError> {
        let day_bytes = day.0.to_be_bytes();
        let info = [DAY_KEY_INFO, &day_bytes[..]];
        let okm = self.master.expand(&info, hmac::HMAC_SHA256).map_err(|_| {
            PrivacyError::InvalidParameter {
                name: "day key",
                reason: "HKDF expand failed".into(),
            }
        })?;
        // HMAC_SHA256's key length is 32, so `fill` takes these 32 bytes
        // (the same key `hmac::Key::from(okm)` would make).
        let mut bytes = [0u8; 32];
        okm.fill(&mut bytes)
            .map_err(|_| PrivacyError::InvalidParameter {
                name: "day key",
                reason: "HKDF fill failed".into(),
            })?;
        let sealed = SealedDayKey(bytes);
        bytes.fill(0);
        Ok(DayKey::unseal(day, &sealed))
    }

    /// Pseudonym of `identifier` on `day` (derives the day key each call; keep
    /// a [`DayKey`] for bulk use).
    pub fn pseudonym(&self, day: EventDay, identifier: &[u8]) -> Result<Pseudonym, PrivacyError> {
        Ok(self.day_key(day)?.pseudonym(identifier))
    }
}

/// The secret bytes of one day's key, for the node's own sealed store only.
/// `Debug` is redacted.
pub struct SealedDayKey([u8; 32]);

impl SealedDayKey {
    /// Reads stored bytes back (refuses a wrong length).
    pub fn from_stored(bytes: &[u8]) -> Result<Self, PrivacyError> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| PrivacyError::InvalidParameter {
                name: "day key",
                reason: format!("stored key has {} bytes, expected 32", bytes.len()),
            })
    }
    /// The bytes to store (0600, never sent).
    pub fn dangerous_secret_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SealedDayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealedDayKey(<redacted>)")
    }
}

/// One day's HMAC key. Not serialisable; `Debug` shows only the day.
///
/// Holds HMAC-SHA256 keyed once (RustCrypto's `hmac` over `sha2`, which
/// keeps the SHA-256 states after the key's inner and outer pads): a
/// pseudonym then costs two SHA-256 compressions (SHA-NI where the CPU has
/// it) and a copy of that state, where `ring::hmac::sign` spent about as
/// long again on its context set-up and digest formatting per tag. The
/// tags are the same bytes either way (a test checks them against ring and
/// RFC 4231), so stored pseudonyms stay valid.
pub struct DayKey {
    day: EventDay,
    mac: Hmac<Sha256>,
}

impl fmt::Debug for DayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DayKey")
            .field("day", &self.day)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl DayKey {
    /// The day this key is for.
    pub fn day(&self) -> EventDay {
        self.day
    }
    /// A fresh random key for `day` (32 bytes from the OS CSPRNG), with its
    /// bytes for the node's sealed store: a node keeps one key per event day
    /// on its own disk (file mode 0600, never logged or sent) so a restart
    /// within the day gives every identifier the same pseudonym, and the
    /// contribution bounds keep holding.
    pub fn generate(day: EventDay) -> Result<(Self, SealedDayKey), PrivacyError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| PrivacyError::Randomness)?;
        let sealed = SealedDayKey(bytes);
        Ok((Self::unseal(day, &sealed), sealed))
    }

    /// The key of `day` from the bytes [`generate`](Self::generate) gave.
    pub fn unseal(day: EventDay, sealed: &SealedDayKey) -> Self {
        Self {
            day,
            // Invariant: HMAC takes keys of any length.
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(&sealed.0)
                .expect("HMAC accepts a 32-byte key"),
        }
    }

    /// HMAC-SHA256(day key, `identifier`).
    pub fn pseudonym(&self, identifier: &[u8]) -> Pseudonym {
        let mut mac = self.mac.clone();
        mac.update(identifier);
        Pseudonym(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests;
