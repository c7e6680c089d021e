//! Caller identity, taken only from the verified client certificate.
//!
//! Node certificates carry the URI SAN `spiffe://veil/venue/<venue>/node/<node>`,
//! role certificates `spiffe://veil/role/<compliance|ml|organizer>/<name>`.
//! A certificate must carry exactly one such URI.

use std::fmt;

use x509_parser::{extensions::GeneralName, prelude::FromDer};

/// A role a human-facing client can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Compliance officer: audit export, budget reports.
    Compliance,
    /// ML team: model pulls.
    Ml,
    /// Event organizer: queries, alerts, dashboard.
    Organizer,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "compliance" => Some(Role::Compliance),
            "ml" => Some(Role::Ml),
            "organizer" => Some(Role::Organizer),
            _ => None,
        }
    }
    /// The role's name in SPIFFE ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Compliance => "compliance",
            Role::Ml => "ml",
            Role::Organizer => "organizer",
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// An edge node of a venue.
    Node {
        /// Venue name.
        venue: String,
        /// Node id.
        node: String,
    },
    /// A human-facing role.
    Role {
        /// Which role.
        role: Role,
        /// Principal name.
        name: String,
    },
}

pub use veil_common::name::valid_name;

impl Identity {
    /// Parses a Veil SPIFFE id.
    pub fn from_spiffe(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://veil/")?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["venue", venue, "node", node] if valid_name(venue) && valid_name(node) => {
                Some(Identity::Node {
                    venue: (*venue).to_owned(),
                    node: (*node).to_owned(),
                })
            }
            ["role", role, name] if valid_name(name) => Some(Identity::Role {
                role: Role::parse(role)?,
                name: (*name).to_owned(),
            }),
            _ => None,
        }
    }

    /// Extracts the identity from a DER certificate: exactly one Veil SPIFFE URI SAN.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| format!("unparsable client certificate: {e}"))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("bad subjectAltName: {e}"))?
            .ok_or_else(|| "client certificate has no subjectAltName".to_owned())?;
        let mut found = None;
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && uri.starts_with("spiffe://")
            {
                if found.is_some() {
                    return Err("client certificate has more than one SPIFFE id".into());
                }
                found = Some(
                    Identity::from_spiffe(uri)
                        .ok_or_else(|| format!("unrecognised SPIFFE id {uri}"))?,
                );
            }
        }
        found.ok_or_else(|| "client certificate has no SPIFFE id".into())
    }

    /// The SPIFFE id string.
    pub fn spiffe(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node { venue, node } => write!(f, "spiffe://veil/venue/{venue}/node/{node}"),
            Identity::Role { role, name } => {
                write!(f, "spiffe://veil/role/{}/{name}", role.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_spiffe_ids() {
        for s in [
            "spiffe://veil/venue/arena/node/node-1",
            "spiffe://veil/role/compliance/officer",
        ] {
            assert_eq!(Identity::from_spiffe(s).unwrap().to_string(), s);
        }
        for bad in [
            "spiffe://other/venue/a/node/b",
            "spiffe://veil/venue/A/node/b",
            "spiffe://veil/role/admin/x",
            "spiffe://veil/venue/a/node/b/extra",
            "spiffe://veil/venue/a/node/",
        ] {
            assert!(Identity::from_spiffe(bad).is_none(), "{bad}");
        }
    }
}
