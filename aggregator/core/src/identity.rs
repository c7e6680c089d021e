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

    /// What a client certificate must be beyond chaining to the CA (which
    /// the TLS layer checks): an end entity (no `basicConstraints CA:TRUE`:
    /// a CA certificate is never a client, whatever its path length) whose
    /// extended key usage is present and includes `clientAuth`. RFC 5280
    /// reads an absent EKU as "any purpose"; Veil refuses it, so a
    /// certificate issued for something else cannot be used as a client.
    pub fn check_client_leaf(der: &[u8]) -> Result<(), String> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| format!("unparsable client certificate: {e}"))?;
        let bc = cert
            .basic_constraints()
            .map_err(|e| format!("bad basicConstraints: {e}"))?;
        if bc.is_some_and(|b| b.value.ca) {
            return Err("client certificate is a CA certificate (basicConstraints CA:TRUE)".into());
        }
        let eku = cert
            .extended_key_usage()
            .map_err(|e| format!("bad extendedKeyUsage: {e}"))?
            .ok_or_else(|| {
                "client certificate has no extendedKeyUsage (clientAuth is required)".to_owned()
            })?;
        if !eku.value.client_auth {
            return Err("client certificate's extendedKeyUsage lacks clientAuth".into());
        }
        Ok(())
    }

    /// The SPIFFE id a certificate claims, for naming a refused peer in
    /// logs and audit entries (unverified: never for authorisation).
    pub fn claimed_spiffe(der: &[u8]) -> Option<String> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|n| match n {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some((*uri).to_owned()),
            _ => None,
        })
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

    fn leaf(eku: Option<rcgen::ExtendedKeyUsagePurpose>, ca: bool) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![rcgen::SanType::URI(
            "spiffe://veil/venue/arena/node/node-1".try_into().unwrap(),
        )];
        p.extended_key_usages = eku.into_iter().collect();
        p.is_ca = if ca {
            rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
        } else {
            rcgen::IsCa::ExplicitNoCa
        };
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_client_leaf_needs_client_auth_and_must_not_be_a_ca() {
        use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
        assert_eq!(
            Identity::check_client_leaf(&leaf(Some(ClientAuth), false)),
            Ok(())
        );
        let no_eku = Identity::check_client_leaf(&leaf(None, false)).unwrap_err();
        assert!(no_eku.contains("no extendedKeyUsage"), "{no_eku}");
        let server = Identity::check_client_leaf(&leaf(Some(ServerAuth), false)).unwrap_err();
        assert!(server.contains("lacks clientAuth"), "{server}");
        let ca = Identity::check_client_leaf(&leaf(Some(ClientAuth), true)).unwrap_err();
        assert!(ca.contains("CA certificate"), "{ca}");
        assert!(Identity::check_client_leaf(b"not a certificate").is_err());
        assert_eq!(
            Identity::claimed_spiffe(&leaf(None, false)).as_deref(),
            Some("spiffe://veil/venue/arena/node/node-1")
        );
    }
}
