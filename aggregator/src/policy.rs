//! Policies in force per venue and the `Policy` gRPC service.
//!
//! A policy file is distributed verbatim; its identity is the lowercase hex
//! SHA-256 of its bytes. A venue without a policy file has the empty hash,
//! which releases must then carry.

use std::collections::HashMap;

use tonic::{Request, Response, Status};
use veil_proto::{GetPolicyRequest, PolicyDocument, policy_server};

use crate::{auth::Registry, config::Config};

/// A loaded policy document.
#[derive(Debug, Clone)]
pub struct LoadedPolicy {
    /// Lowercase hex SHA-256 of `text`.
    pub hash: String,
    /// The TOML text.
    pub text: String,
}

/// Policies per venue.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    by_venue: HashMap<String, LoadedPolicy>,
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

impl Policies {
    /// Loads every venue's policy file named in the config.
    pub fn load(cfg: &Config) -> Result<Self, String> {
        let mut by_venue = HashMap::new();
        for v in &cfg.venues {
            if let Some(p) = &v.policy {
                let path = cfg.resolve(p);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!("venue {}: reading policy {}: {e}", v.name, path.display())
                })?;
                let hash = sha256_hex(text.as_bytes());
                by_venue.insert(v.name.clone(), LoadedPolicy { hash, text });
            }
        }
        Ok(Self { by_venue })
    }

    /// The hash in force for `venue` ("" when the venue has no policy file).
    pub fn hash(&self, venue: &str) -> &str {
        self.by_venue.get(venue).map_or("", |p| p.hash.as_str())
    }

    /// The policy of `venue`, if any.
    pub fn get(&self, venue: &str) -> Option<&LoadedPolicy> {
        self.by_venue.get(venue)
    }
}

/// The `veil.v1.Policy` service.
#[derive(Debug, Clone)]
pub struct PolicyService {
    pub(crate) registry: Registry,
    pub(crate) policies: Policies,
}

#[tonic::async_trait]
impl policy_server::Policy for PolicyService {
    async fn get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> Result<Response<PolicyDocument>, Status> {
        let (venue, _node) = self.registry.require_node(&request)?;
        let doc = match self.policies.get(&venue) {
            Some(p) => PolicyDocument {
                venue,
                hash: p.hash.clone(),
                toml: p.text.clone(),
            },
            None => PolicyDocument {
                venue,
                hash: String::new(),
                toml: String::new(),
            },
        };
        Ok(Response::new(doc))
    }
}
