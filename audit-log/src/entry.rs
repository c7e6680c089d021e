//! One audit-log entry and its canonical JSON line.
//!
//! Canonical form: a JSON object with exactly the fields of [`AuditEntry`],
//! keys in sorted (bytewise) order, no whitespace, no trailing newline;
//! strings escaped as `serde_json` escapes them (only `"`, `\` and control
//! characters; everything else verbatim UTF-8); integers in plain decimal;
//! floats by [`canonical_f64`]: the shortest digits that round-trip, as
//! `0.5`, `1.0`, `0.000001`, `1e-7`, `1e+21`. The canonical bytes are what
//! the Merkle tree hashes, so
//! [`AuditEntry::parse_canonical`] accepts a line only if re-serialising the
//! parsed entry gives back the very same bytes.
//!
//! An entry never contains personal data: actors are workload identities,
//! venues and policies are ids and hashes, releases are hashes. The `reason`
//! field is free text written by the aggregator from fixed messages; it must
//! never quote event contents.
//!
//! The field set is the format version: a line with a field this version
//! does not know is rejected, never silently dropped.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde_json::{Map, Value};

use super::merkle::{self, Hash};

/// `decision` of an entry that allowed the action.
pub const DECISION_ALLOW: &str = "allow";
/// `decision` of an entry that refused the action.
pub const DECISION_DENY: &str = "deny";

/// Prefix every `actor` must have.
pub const ACTOR_PREFIX: &str = "spiffe://";

/// Field names in canonical (sorted) order.
pub const FIELDS: [&str; 11] = [
    "action",
    "actor",
    "decision",
    "epsilon",
    "policy_hash",
    "reason",
    "release_sha256",
    "rho",
    "seq",
    "time_ms",
    "venue",
];

/// One decision written to the audit log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Position in the log, from 0 without gaps; equals the Merkle leaf index.
    pub seq: u64,
    /// Decision time, milliseconds since the Unix epoch (from the injected clock).
    pub time_ms: i64,
    /// Who asked: a SPIFFE id such as `spiffe://veil/venue/arena-1/node/gw-3`
    /// (must start with `spiffe://`).
    pub actor: String,
    /// Venue whose privacy budget the action concerns (`""` if none).
    pub venue: String,
    /// What was asked: an action name (`[a-z0-9_.-]+`), e.g. `release`.
    pub action: String,
    /// [`DECISION_ALLOW`] or [`DECISION_DENY`].
    pub decision: String,
    /// Why, in fixed words (never event contents).
    pub reason: String,
    /// Hash of the policy in force (`""` if none was loaded, e.g. a fail-closed deny).
    pub policy_hash: String,
    /// Pure-DP epsilon charged by this action (finite, `>= 0`, `0.0` if none).
    pub epsilon: f64,
    /// zCDP rho charged by this action (finite, `>= 0`, `0.0` if none).
    pub rho: f64,
    /// SHA-256 of the released bytes, 64 lowercase hex digits, or `""` if nothing was released.
    pub release_sha256: String,
}

/// Why an entry is not valid or not canonical.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryError {
    /// The line is not a JSON object.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// The object has a field this format does not know.
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// The object lacks a required field.
    #[error("missing field {0:?}")]
    MissingField(&'static str),
    /// A field has the wrong JSON type.
    #[error("field {field:?} must be {expected}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// The JSON type expected.
        expected: &'static str,
    },
    /// A field's value is out of its domain.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The line parses, but is not the canonical encoding of what it holds.
    #[error("not canonical JSON (first difference at byte {offset})")]
    NotCanonical {
        /// Byte offset of the first difference from the canonical encoding.
        offset: usize,
    },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EntryError {
    EntryError::InvalidField {
        field,
        reason: reason.into(),
    }
}

fn check_cost(field: &'static str, v: f64) -> Result<(), EntryError> {
    if !v.is_finite() {
        return Err(invalid(field, "must be finite"));
    }
    if v.is_sign_negative() {
        // Also rejects -0.0, which would otherwise have a second encoding.
        return Err(invalid(field, "must be >= 0 (and not -0.0)"));
    }
    Ok(())
}

/// Checks every field's domain (see the [`AuditEntry`] field docs); the
/// fields without a domain (`venue`, `reason`, `policy_hash`, `seq`,
/// `time_ms`) take any value.
fn validate_fields(
    actor: &str,
    action: &str,
    decision: &str,
    epsilon: f64,
    rho: f64,
    release_sha256: &str,
) -> Result<(), EntryError> {
    if !actor.starts_with(ACTOR_PREFIX) || actor.len() == ACTOR_PREFIX.len() {
        return Err(invalid("actor", "must be a SPIFFE id (spiffe://...)"));
    }
    if action.is_empty()
        || !action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
    {
        return Err(invalid("action", "must match [a-z0-9_.-]+"));
    }
    if decision != DECISION_ALLOW && decision != DECISION_DENY {
        return Err(invalid("decision", "must be \"allow\" or \"deny\""));
    }
    check_cost("epsilon", epsilon)?;
    check_cost("rho", rho)?;
    if !release_sha256.is_empty() && !merkle::is_hex_hash(release_sha256) {
        return Err(invalid(
            "release_sha256",
            "must be empty or 64 lowercase hex digits",
        ));
    }
    Ok(())
}

impl AuditEntry {
    /// Checks every field's domain (see the field docs).
    pub fn validate(&self) -> Result<(), EntryError> {
        validate_fields(
            &self.actor,
            &self.action,
            &self.decision,
            self.epsilon,
            self.rho,
            &self.release_sha256,
        )
    }

    /// The canonical JSON line (no trailing newline). Fails if a field is invalid.
    pub fn to_canonical_json(&self) -> Result<String, EntryError> {
        self.validate()?;
        let mut w = CanonicalWriter::default();
        w.string("action", &self.action)?;
        w.string("actor", &self.actor)?;
        w.string("decision", &self.decision)?;
        w.float("epsilon", self.epsilon);
        w.string("policy_hash", &self.policy_hash)?;
        w.string("reason", &self.reason)?;
        w.string("release_sha256", &self.release_sha256)?;
        w.float("rho", self.rho);
        w.raw("seq", &self.seq.to_string());
        w.raw("time_ms", &self.time_ms.to_string());
        w.string("venue", &self.venue)?;
        Ok(w.finish())
    }

    /// The Merkle leaf hash of the canonical line: `SHA-256(0x00 || line)`.
    pub fn leaf_hash(&self) -> Result<Hash, EntryError> {
        Ok(merkle::leaf_hash(self.to_canonical_json()?.as_bytes()))
    }

    /// Parses one canonical line (without its newline), strictly: unknown or
    /// missing fields, wrong types, invalid values and any non-canonical
    /// encoding (whitespace, key order, escapes, number forms, duplicate keys)
    /// are errors.
    ///
    /// A canonical line is read in one pass by [`LineReader::read_exact`];
    /// anything it does not accept goes through the general parser below,
    /// which finds and names what is wrong (so errors are the same whichever
    /// path ran).
    pub fn parse_canonical(line: &str) -> Result<Self, EntryError> {
        AuditEntryRef::parse_canonical(line).map(AuditEntryRef::into_owned)
    }

    /// The general strict parser: JSON parse, field checks, then a
    /// byte-for-byte comparison with the re-serialised entry.
    fn parse_general(line: &str) -> Result<Self, EntryError> {
        let map: Map<String, Value> =
            serde_json::from_str(line).map_err(|e| EntryError::Json(e.to_string()))?;
        let mut unknown: Vec<&String> = map
            .keys()
            .filter(|k| !FIELDS.contains(&k.as_str()))
            .collect();
        unknown.sort();
        if let Some(k) = unknown.first() {
            return Err(EntryError::UnknownField((*k).clone()));
        }
        if let Some(missing) = FIELDS.iter().find(|f| !map.contains_key(**f)) {
            return Err(EntryError::MissingField(missing));
        }
        let entry = AuditEntry {
            seq: get_u64(&map, "seq")?,
            time_ms: get_i64(&map, "time_ms")?,
            actor: get_string(&map, "actor")?,
            venue: get_string(&map, "venue")?,
            action: get_string(&map, "action")?,
            decision: get_string(&map, "decision")?,
            reason: get_string(&map, "reason")?,
            policy_hash: get_string(&map, "policy_hash")?,
            epsilon: get_f64(&map, line, "epsilon")?,
            rho: get_f64(&map, line, "rho")?,
            release_sha256: get_string(&map, "release_sha256")?,
        };
        let canonical = entry.to_canonical_json()?;
        if canonical != line {
            let offset = canonical
                .bytes()
                .zip(line.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| canonical.len().min(line.len()));
            return Err(EntryError::NotCanonical { offset });
        }
        Ok(entry)
    }
}

/// An [`AuditEntry`] read from a canonical line, with its strings borrowed
/// from the line (owned only where the line escapes a character, which the
/// general parser decodes). Verifying a large export yields these, so that
/// reading an entry costs no allocation.
///
/// Same fields and meaning as [`AuditEntry`]; compares equal to the
/// [`AuditEntry`] with the same field values.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntryRef<'a> {
    /// See [`AuditEntry::seq`].
    pub seq: u64,
    /// See [`AuditEntry::time_ms`].
    pub time_ms: i64,
    /// See [`AuditEntry::actor`].
    pub actor: Cow<'a, str>,
    /// See [`AuditEntry::venue`].
    pub venue: Cow<'a, str>,
    /// See [`AuditEntry::action`].
    pub action: Cow<'a, str>,
    /// See [`AuditEntry::decision`].
    pub decision: Cow<'a, str>,
    /// See [`AuditEntry::reason`].
    pub reason: Cow<'a, str>,
    /// See [`AuditEntry::policy_hash`].
    pub policy_hash: Cow<'a, str>,
    /// See [`AuditEntry::epsilon`].
    pub epsilon: f64,
    /// See [`AuditEntry::rho`].
    pub rho: f64,
    /// See [`AuditEntry::release_sha256`].
    pub release_sha256: Cow<'a, str>,
}

impl<'a> AuditEntryRef<'a> {
    /// Parses one canonical line (without its newline) exactly as
    /// [`AuditEntry::parse_canonical`] does: same acceptance, same errors.
    pub fn parse_canonical(line: &'a str) -> Result<Self, EntryError> {
        LineReader::default().read(line)
    }

    /// The owned entry.
    pub fn into_owned(self) -> AuditEntry {
        AuditEntry {
            seq: self.seq,
            time_ms: self.time_ms,
            actor: self.actor.into_owned(),
            venue: self.venue.into_owned(),
            action: self.action.into_owned(),
            decision: self.decision.into_owned(),
            reason: self.reason.into_owned(),
            policy_hash: self.policy_hash.into_owned(),
            epsilon: self.epsilon,
            rho: self.rho,
            release_sha256: self.release_sha256.into_owned(),
        }
    }

    /// Checks every field's domain, as [`AuditEntry::validate`].
    pub fn validate(&self) -> Result<(), EntryError> {
        validate_fields(
            &self.actor,
            &self.action,
            &self.decision,
            self.epsilon,
            self.rho,
            &self.release_sha256,
        )
    }
}

impl From<AuditEntry> for AuditEntryRef<'_> {
    fn from(e: AuditEntry) -> Self {
        Self {
            seq: e.seq,
            time_ms: e.time_ms,
            actor: Cow::Owned(e.actor),
            venue: Cow::Owned(e.venue),
            action: Cow::Owned(e.action),
            decision: Cow::Owned(e.decision),
            reason: Cow::Owned(e.reason),
            policy_hash: Cow::Owned(e.policy_hash),
            epsilon: e.epsilon,
            rho: e.rho,
            release_sha256: Cow::Owned(e.release_sha256),
        }
    }
}

impl PartialEq<AuditEntry> for AuditEntryRef<'_> {
    fn eq(&self, e: &AuditEntry) -> bool {
        self.seq == e.seq
            && self.time_ms == e.time_ms
            && self.actor == e.actor.as_str()
            && self.venue == e.venue.as_str()
            && self.action == e.action.as_str()
            && self.decision == e.decision.as_str()
            && self.reason == e.reason.as_str()
            && self.policy_hash == e.policy_hash.as_str()
            && self.epsilon == e.epsilon
            && self.rho == e.rho
            && self.release_sha256 == e.release_sha256.as_str()
    }
}

impl PartialEq<AuditEntryRef<'_>> for AuditEntry {
    fn eq(&self, e: &AuditEntryRef<'_>) -> bool {
        e == self
    }
}

/// Reads canonical lines of one buffer, one after the other. The log repeats
/// the same costs over and over, so it remembers the last float token it
/// accepted for `epsilon` and for `rho` with its value: the same token parses
/// to the same value and is canonical again, so it needs no second check.
#[derive(Default)]
pub(crate) struct LineReader<'a> {
    epsilon: Option<(&'a str, f64)>,
    rho: Option<(&'a str, f64)>,
}

impl<'a> LineReader<'a> {
    /// [`AuditEntryRef::parse_canonical`] of `line`: the fast path, else the
    /// general parser, which names what is wrong.
    pub(crate) fn read(&mut self, line: &'a str) -> Result<AuditEntryRef<'a>, EntryError> {
        if let Some(entry) = self.read_exact(line) {
            return Ok(entry);
        }
        AuditEntry::parse_general(line).map(AuditEntryRef::from)
    }

    /// Reads `line` if, and only if, it is byte for byte the canonical
    /// encoding of a valid entry; `None` for anything else (the caller then runs
    /// the general parser, which names the problem).
    ///
    /// Soundness: this accepts exactly the layout [`AuditEntry::to_canonical_json`]
    /// writes, with every key in [`FIELDS`] order, strings without escapes or
    /// control characters (so `serde_json` writes them verbatim), integers in
    /// plain decimal without leading zeros or `-0`, floats only if they are
    /// [`canonical_f64`] of the value they parse to, and nothing after the
    /// closing brace; then the entry must pass [`AuditEntry::validate`]. Every
    /// such line is one the general parser accepts with the same entry; any other
    /// line (escapes, whitespace, another key order, duplicates, other number
    /// forms) falls back to it. Tests compare both parsers on many mutations.
    fn read_exact(&mut self, line: &'a str) -> Option<AuditEntryRef<'a>> {
        let mut c = Cursor {
            b: line.as_bytes(),
            s: line,
            i: 0,
        };
        c.lit(b"{\"action\":")?;
        let action = c.string()?;
        c.lit(b",\"actor\":")?;
        let actor = c.string()?;
        c.lit(b",\"decision\":")?;
        let decision = c.string()?;
        c.lit(b",\"epsilon\":")?;
        let epsilon = c.float(&mut self.epsilon)?;
        c.lit(b",\"policy_hash\":")?;
        let policy_hash = c.string()?;
        c.lit(b",\"reason\":")?;
        let reason = c.string()?;
        c.lit(b",\"release_sha256\":")?;
        let release_sha256 = c.string()?;
        c.lit(b",\"rho\":")?;
        let rho = c.float(&mut self.rho)?;
        c.lit(b",\"seq\":")?;
        let seq = c.uint()?;
        c.lit(b",\"time_ms\":")?;
        let time_ms = c.int()?;
        c.lit(b",\"venue\":")?;
        let venue = c.string()?;
        c.lit(b"}")?;
        if c.i != c.b.len() {
            return None;
        }
        validate_fields(actor, action, decision, epsilon, rho, release_sha256).ok()?;
        Some(AuditEntryRef {
            seq,
            time_ms,
            actor: Cow::Borrowed(actor),
            venue: Cow::Borrowed(venue),
            action: Cow::Borrowed(action),
            decision: Cow::Borrowed(decision),
            reason: Cow::Borrowed(reason),
            policy_hash: Cow::Borrowed(policy_hash),
            epsilon,
            rho,
            release_sha256: Cow::Borrowed(release_sha256),
        })
    }
}

/// [`LineReader::read_exact`] of one line on its own (tests compare it with
/// the general parser).
#[cfg(test)]
fn parse_exact(line: &str) -> Option<AuditEntryRef<'_>> {
    LineReader::default().read_exact(line)
}

/// A position in a line for [`LineReader::read_exact`].
struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// Consumes exactly `lit`.
    fn lit(&mut self, lit: &[u8]) -> Option<()> {
        let rest = self.b.get(self.i..)?;
        rest.starts_with(lit).then(|| self.i += lit.len())
    }

    /// A string token whose canonical encoding is itself: no `\\` and no
    /// control characters inside the quotes. Returns the contents.
    fn string(&mut self) -> Option<&'a str> {
        self.lit(b"\"")?;
        let start = self.i;
        let len = veil_common::scan::find_stop(&self.b[start..], [b'"', b'\\'])?;
        if self.b[start + len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        // Both ends are ASCII quotes, so these are char boundaries.
        self.s.get(start..start + len)
    }

    /// The number token starting here: the bytes up to `,` or `}`.
    fn number(&mut self) -> Option<&'a str> {
        let start = self.i;
        let len = self.b[start..]
            .iter()
            .position(|&b| b == b',' || b == b'}')?;
        self.i = start + len;
        // `,` and `}` are ASCII, so this is a char boundary.
        self.s.get(start..start + len)
    }

    /// Digits of a canonical unsigned integer: `0`, or no leading zero.
    fn digits(token: &str) -> Option<u64> {
        let bytes = token.as_bytes();
        if bytes.is_empty() || (bytes[0] == b'0' && bytes.len() > 1) {
            return None;
        }
        bytes.iter().try_fold(0u64, |acc, &b| {
            if !b.is_ascii_digit() {
                return None;
            }
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
    }

    fn uint(&mut self) -> Option<u64> {
        Self::digits(self.number()?)
    }

    fn int(&mut self) -> Option<i64> {
        let token = self.number()?;
        match token.strip_prefix('-') {
            Some(abs) => {
                let abs = Self::digits(abs)?;
                // `-0` is not canonical; `i64::MIN` is `-(i64::MAX + 1)`.
                if abs == 0 {
                    return None;
                }
                0i64.checked_sub_unsigned(abs)
            }
            None => i64::try_from(Self::digits(token)?).ok(),
        }
    }

    /// A float token that is exactly [`canonical_f64`] of its value. Only
    /// the bytes of JSON numbers are let through to the standard parser, so
    /// `inf`, `NaN` and the like never reach it.
    ///
    /// `last` is the last token accepted for this field and its value: the
    /// same token again is accepted with that value without a second check.
    fn float(&mut self, last: &mut Option<(&'a str, f64)>) -> Option<f64> {
        let token = self.number()?;
        if token == "0.0" {
            return Some(0.0);
        }
        if let Some((t, v)) = *last
            && t == token
        {
            return Some(v);
        }
        let v = Self::canonical_float(token)?;
        *last = Some((token, v));
        Some(v)
    }

    /// The value of a float token other than `0.0`, if the token is exactly
    /// [`canonical_f64`] of it.
    fn canonical_float(token: &str) -> Option<f64> {
        if !token
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'-' | b'+'))
        {
            return None;
        }
        let v = token.parse::<f64>().ok()?;
        is_canonical_f64(token, v).then_some(v)
    }
}

impl fmt::Display for AuditEntry {
    /// The canonical line, or `<invalid audit entry: ...>` if a field is invalid.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_canonical_json() {
            Ok(s) => f.write_str(&s),
            Err(e) => write!(f, "<invalid audit entry: {e}>"),
        }
    }
}

#[derive(Default)]
struct CanonicalWriter {
    out: String,
}

impl CanonicalWriter {
    fn raw(&mut self, key: &str, value: &str) {
        self.out.push(if self.out.is_empty() { '{' } else { ',' });
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        self.out.push_str(value);
    }

    fn string(&mut self, key: &str, value: &str) -> Result<(), EntryError> {
        let s = serde_json::to_string(value).map_err(|e| EntryError::Json(e.to_string()))?;
        self.raw(key, &s);
        Ok(())
    }

    fn float(&mut self, key: &str, value: f64) {
        self.raw(key, &canonical_f64(value));
    }

    fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// The canonical text of a finite float: the shortest decimal digits that
/// read back as the same `f64` (Rust's `{:e}`), laid out as ECMAScript's
/// `Number.prototype.toString` does (plain decimal for `1e-7 < |v| < 1e21`,
/// else `d.ddde+N` / `d.ddde-N`), except that an integral value keeps a
/// trailing `.0`. Owned here, not by `serde_json`, whose float formatting
/// has changed between versions: the bytes of a logged line must never
/// depend on a dependency's version.
pub fn canonical_f64(v: f64) -> String {
    let mut out = String::new();
    // Writing into a `String` cannot fail, and `write_canonical_f64` only
    // fails when its sink does.
    let _ = write_canonical_f64(&mut out, v);
    out
}

/// Writes [`canonical_f64`]`(v)` to `out` without allocating.
fn write_canonical_f64(out: &mut impl fmt::Write, v: f64) -> fmt::Result {
    /// Enough zeros for any padding below (at most 20).
    const ZEROS: &str = "000000000000000000000";
    if v == 0.0 {
        return out.write_str(if v.is_sign_negative() { "-0.0" } else { "0.0" });
    }
    let mut sci = StackStr::default();
    write!(sci, "{v:e}")?;
    let sci = sci.as_str();
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return out.write_str(sci); // Not reached for finite values.
    };
    let Ok(exp) = exp.parse::<i32>() else {
        return out.write_str(sci); // Not reached: `{:e}` writes a decimal exponent.
    };
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    if !(-7 < exp && exp < 21) {
        let plus = if exp > 0 { "+" } else { "" };
        return write!(out, "{sign}{mantissa}e{plus}{exp}");
    }
    // `{:e}` writes one digit before the point: digits = `lead` + `frac`.
    let (lead, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    out.write_str(sign)?;
    if exp >= 0 {
        // 0 <= exp < 21, so these fit usize and `ZEROS`.
        let int_len = exp as usize + 1;
        let digits = lead.len() + frac.len();
        if digits <= int_len {
            out.write_str(lead)?;
            out.write_str(frac)?;
            out.write_str(&ZEROS[..int_len - digits])?;
            out.write_str(".0")
        } else {
            let (int_frac, rest) = frac.split_at(int_len - lead.len());
            out.write_str(lead)?;
            out.write_str(int_frac)?;
            out.write_str(".")?;
            out.write_str(rest)
        }
    } else {
        // -7 < exp < 0: at most 5 zeros after the point.
        out.write_str("0.")?;
        out.write_str(&ZEROS[..(-exp - 1) as usize])?;
        out.write_str(lead)?;
        out.write_str(frac)
    }
}

/// A small string on the stack for `{:e}` of an `f64` (at most 24 bytes).
#[derive(Default)]
struct StackStr {
    buf: [u8; 32],
    len: usize,
}

impl StackStr {
    fn as_str(&self) -> &str {
        // Only whole `&str`s are copied in, so this never fails.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A `fmt::Write` sink that only checks the written text is a prefix of
/// `rest` (and consumes it): compares against a canonical form without
/// building it.
struct Expect<'a> {
    rest: &'a [u8],
}

impl fmt::Write for Expect<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        match self.rest.strip_prefix(s.as_bytes()) {
            Some(rest) => {
                self.rest = rest;
                Ok(())
            }
            None => Err(fmt::Error),
        }
    }
}

/// Whether `token` is exactly [`canonical_f64`]`(v)`.
fn is_canonical_f64(token: &str, v: f64) -> bool {
    let mut e = Expect {
        rest: token.as_bytes(),
    };
    write_canonical_f64(&mut e, v).is_ok() && e.rest.is_empty()
}

fn field<'a>(map: &'a Map<String, Value>, name: &'static str) -> Result<&'a Value, EntryError> {
    map.get(name).ok_or(EntryError::MissingField(name))
}

fn get_string(map: &Map<String, Value>, name: &'static str) -> Result<String, EntryError> {
    field(map, name)?
        .as_str()
        .map(str::to_owned)
        .ok_or(EntryError::WrongType {
            field: name,
            expected: "a string",
        })
}

fn get_u64(map: &Map<String, Value>, name: &'static str) -> Result<u64, EntryError> {
    field(map, name)?.as_u64().ok_or(EntryError::WrongType {
        field: name,
        expected: "an unsigned 64-bit integer",
    })
}

fn get_i64(map: &Map<String, Value>, name: &'static str) -> Result<i64, EntryError> {
    field(map, name)?.as_i64().ok_or(EntryError::WrongType {
        field: name,
        expected: "a signed 64-bit integer",
    })
}

/// Floats are read from their literal text with the standard library's
/// correctly rounded parser: `serde_json`'s default float parser may be one
/// ulp off, which would make a canonical line fail its own round trip.
fn get_f64(map: &Map<String, Value>, line: &str, name: &'static str) -> Result<f64, EntryError> {
    let wrong_type = EntryError::WrongType {
        field: name,
        expected: "a number",
    };
    if !field(map, name)?.is_number() {
        return Err(wrong_type);
    }
    // Not found only if the line is not canonical (e.g. an escaped key); the
    // canonical comparison then rejects it, so the fallback value is never kept.
    match canonical_raw_value(line, name) {
        Some(raw) => raw.parse::<f64>().map_err(|_| wrong_type),
        None => field(map, name)?.as_f64().ok_or(wrong_type),
    }
}

/// The literal text of a top-level scalar value whose key is written as
/// `"name"` without escapes, in a line already known to be a valid JSON
/// object of scalars.
fn canonical_raw_value<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let bytes = line.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && matches!(bytes[*i], b' ' | b'\t' | b'\n' | b'\r') {
            *i += 1;
        }
    };
    // End (exclusive) of the string token starting at `start` (a quote).
    let string_end = |start: usize| -> Option<usize> {
        let mut j = start + 1;
        while j < bytes.len() {
            match bytes[j] {
                b'\\' => j += 2,
                b'"' => return Some(j + 1),
                _ => j += 1,
            }
        }
        None
    };
    skip_ws(&mut i);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(i)?;
        let key = &line[i + 1..key_end - 1];
        i = key_end;
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        skip_ws(&mut i);
        let value_start = i;
        if bytes.get(i) == Some(&b'"') {
            i = string_end(i)?;
        } else {
            while i < bytes.len() && !matches!(bytes[i], b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
        }
        if key == name {
            return line.get(value_start..i);
        }
        skip_ws(&mut i);
        match bytes.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests;
