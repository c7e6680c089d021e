//! Policies in force per venue and the `Policy` gRPC service.
//!
//! Every venue has a policy file (see `policies/`); it is parsed and
//! validated at start-up (the aggregator refuses to start otherwise), and
//! its SHA-256 is the hash every release and lease must name.

use std::{collections::HashMap, sync::Arc};

use tonic::{Request, Response, Status};
use veil_privacy::policy::LoadedPolicy;
use veil_proto::{GetPolicyRequest, PolicyDocument, policy_server};

use crate::{config::Config, state::State};

/// Policies per venue.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    by_venue: HashMap<String, Arc<LoadedPolicy>>,
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    veil_privacy::policy::sha256_hex(bytes)
}

impl Policies {
    /// Loads and validates every venue's policy file.
    pub fn load(cfg: &Config) -> Result<Self, String> {
        let mut by_venue = HashMap::new();
        for v in &cfg.venues {
            let path = cfg.resolve(&v.policy);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("venue {}: reading policy {}: {e}", v.name, path.display()))?;
            let policy = LoadedPolicy::parse(&text)
                .map_err(|e| format!("venue {}: policy {}: {e}", v.name, path.display()))?;
            by_venue.insert(v.name.clone(), Arc::new(policy));
        }
        Ok(Self { by_venue })
    }

    /// Policies from already loaded documents (tools and tests).
    pub fn from_loaded(venues: impl IntoIterator<Item = (String, LoadedPolicy)>) -> Self {
        Self {
            by_venue: venues.into_iter().map(|(v, p)| (v, Arc::new(p))).collect(),
        }
    }

    /// The policy of `venue`, if any (fail closed when `None`).
    pub fn get(&self, venue: &str) -> Option<&Arc<LoadedPolicy>> {
        self.by_venue.get(venue)
    }

    /// Every (venue, policy).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<LoadedPolicy>)> {
        self.by_venue.iter()
    }
}

/// The `veil.v1.Policy` service.
#[derive(Debug, Clone)]
pub struct PolicyService {
    pub(crate) state: Arc<State>,
}

#[tonic::async_trait]
impl policy_server::Policy for PolicyService {
    async fn get_policy(
        &self,
        request: Request<GetPolicyRequest>,
    ) -> Result<Response<PolicyDocument>, Status> {
        let (venue, _node) = self.state.registry.require_node(&request)?;
        let p = self.state.policies.get(&venue).ok_or_else(|| {
            Status::failed_precondition(format!("venue {venue} has no policy in force"))
        })?;
        Ok(Response::new(PolicyDocument {
            venue,
            hash: p.hash.clone(),
            toml: p.text.clone(),
        }))
    }
}
