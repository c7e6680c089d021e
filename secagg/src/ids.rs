//! Validated identifiers: the round and the node (its SPIFFE identity).

use std::fmt;

use crate::SecAggError;

/// Longest round id accepted.
pub const MAX_ROUND_ID_LEN: usize = 128;

/// A federated round's id (the aggregator's `round_id`): 1..=128 printable
/// ASCII bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoundId(String);

impl RoundId {
    /// Validates `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, SecAggError> {
        let s = s.into();
        if s.is_empty() || s.len() > MAX_ROUND_ID_LEN || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecAggError::InvalidParameter {
                name: "round_id",
                reason: format!("must be 1..={MAX_ROUND_ID_LEN} printable ASCII bytes"),
            });
        }
        Ok(Self(s))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RoundId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node's identity: `spiffe://veil/venue/<venue>/node/<node>`, each name
/// 1..=64 bytes of `[a-z0-9_-]` (the aggregator's identity rules). Ordered
/// by the string; the order decides mask signs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeIdentity(String);

const PREFIX: &str = "spiffe://veil/venue/";

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl NodeIdentity {
    /// The identity of node `node` at venue `venue`.
    pub fn new(venue: &str, node: &str) -> Result<Self, SecAggError> {
        Self::parse(&format!("{PREFIX}{venue}/node/{node}"))
    }

    /// Parses a SPIFFE URI.
    pub fn parse(uri: &str) -> Result<Self, SecAggError> {
        let bad = || SecAggError::InvalidParameter {
            name: "node identity",
            reason: "must be spiffe://veil/venue/<venue>/node/<node>".into(),
        };
        let rest = uri.strip_prefix(PREFIX).ok_or_else(bad)?;
        let (venue, node) = rest.split_once("/node/").ok_or_else(bad)?;
        if !valid_name(venue) || !valid_name(node) {
            return Err(bad());
        }
        Ok(Self(uri.to_owned()))
    }

    /// The SPIFFE URI.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
