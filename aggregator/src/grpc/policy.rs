//! The `veil.v1.Policy` service: a node fetches its venue's policy in force.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use veil_proto::{GetPolicyRequest, PolicyDocument, policy_server};

use super::auth::Authorize as _;
use crate::state::State;

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
