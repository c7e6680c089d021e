//! The caller of a gRPC request, from the client certificate the TLS layer
//! verified (never from a message field), checked by the core's
//! [`Registry`]; refusals come back as status.

use tonic::{Request, Status};
use veil_aggregator_core::{
    auth::Registry,
    identity::{Identity, Role},
};

use super::status::status;

/// The leaf client certificate of `req` (DER), if any.
fn leaf<T>(req: &Request<T>) -> Option<Vec<u8>> {
    req.peer_certs()
        .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
}

/// Authorisation of gRPC requests by the [`Registry`].
pub trait Authorize {
    /// The caller's identity from its certificate, refused if unknown.
    fn identify<T>(&self, req: &Request<T>) -> Result<Identity, Status>;
    /// Requires a registered node; returns (venue, node).
    fn require_node<T>(&self, req: &Request<T>) -> Result<(String, String), Status>;
    /// Requires one of `roles`; returns the identity.
    fn require_role<T>(&self, req: &Request<T>, roles: &[Role]) -> Result<Identity, Status>;
    /// Refuses (audited) unless `id` may see `venue`.
    fn require_venue(&self, id: &Identity, venue: &str) -> Result<(), Status>;
}

impl Authorize for Registry {
    fn identify<T>(&self, req: &Request<T>) -> Result<Identity, Status> {
        self.identify_cert(leaf(req).as_deref()).map_err(status)
    }

    fn require_node<T>(&self, req: &Request<T>) -> Result<(String, String), Status> {
        self.node_of_cert(leaf(req).as_deref()).map_err(status)
    }

    fn require_role<T>(&self, req: &Request<T>, roles: &[Role]) -> Result<Identity, Status> {
        self.role_of_cert(leaf(req).as_deref(), roles)
            .map_err(status)
    }

    fn require_venue(&self, id: &Identity, venue: &str) -> Result<(), Status> {
        self.authorize_venue(id, venue).map_err(status)
    }
}
