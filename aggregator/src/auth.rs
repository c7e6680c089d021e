//! Authentication (identity from the verified client certificate) and
//! authorisation (which identities may call what).

use std::collections::{HashMap, HashSet};

use tonic::{Request, Status};

use crate::{
    config::Config,
    identity::{Identity, Role},
};

/// A refused caller, for the audit log: (actor SPIFFE id, reason).
pub type Refusal = (String, String);

/// Who may call the aggregator, built from the config.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    nodes: HashSet<(String, String)>,
    principals: HashMap<String, Vec<String>>,
    refusals: Option<tokio::sync::mpsc::Sender<Refusal>>,
}

/// Actor recorded for a certificate that carries no usable Veil identity.
pub const UNKNOWN_ACTOR: &str = "spiffe://veil/unknown";

impl Registry {
    /// From the config's `[[venue]]` and `[[principal]]` tables.
    pub fn from_config(cfg: &Config) -> Self {
        let mut nodes = HashSet::new();
        for v in &cfg.venues {
            for n in &v.nodes {
                nodes.insert((v.name.clone(), n.clone()));
            }
        }
        let principals = cfg
            .principals
            .iter()
            .map(|p| (p.id.clone(), p.venues.clone()))
            .collect();
        Self {
            nodes,
            principals,
            refusals: None,
        }
    }

    /// Sends every refusal to `sink` (the server audits them). A full sink
    /// drops the report (counted in the log) rather than slow a caller down.
    pub fn with_refusal_sink(mut self, sink: tokio::sync::mpsc::Sender<Refusal>) -> Self {
        self.refusals = Some(sink);
        self
    }

    fn refuse(&self, actor: String, status: Status) -> Status {
        if let Some(sink) = &self.refusals
            && sink.try_send((actor, status.message().to_owned())).is_err()
        {
            tracing::warn!("Refusal not audited: the audit queue is full.");
        }
        status
    }

    /// The caller's identity from its certificate, refused if unknown.
    pub fn identify<T>(&self, req: &Request<T>) -> Result<Identity, Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let id = Identity::from_cert_der(leaf.as_ref())
            .map_err(|e| self.refuse(UNKNOWN_ACTOR.into(), Status::permission_denied(e)))?;
        let known = match &id {
            Identity::Node { venue, node } => self.nodes.contains(&(venue.clone(), node.clone())),
            Identity::Role { .. } => self.principals.contains_key(&id.spiffe()),
        };
        if !known {
            tracing::warn!(identity = %id, "Refused unknown identity.");
            return Err(self.refuse(
                id.spiffe(),
                Status::permission_denied(format!(
                    "identity {id} is not registered with this aggregator"
                )),
            ));
        }
        Ok(id)
    }

    /// Requires a registered node; returns (venue, node).
    pub fn require_node<T>(&self, req: &Request<T>) -> Result<(String, String), Status> {
        match self.identify(req)? {
            Identity::Node { venue, node } => Ok((venue, node)),
            other => Err(self.refuse(
                other.spiffe(),
                Status::permission_denied(format!("{other} may not call this: nodes only")),
            )),
        }
    }

    /// Requires one of `roles`; returns the identity.
    pub fn require_role<T>(&self, req: &Request<T>, roles: &[Role]) -> Result<Identity, Status> {
        let id = self.identify(req)?;
        match &id {
            Identity::Role { role, .. } if roles.contains(role) => Ok(id),
            _ => Err(self.refuse(
                id.spiffe(),
                Status::permission_denied(format!(
                    "{id} may not call this: requires role {}",
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                )),
            )),
        }
    }

    /// Refuses (audited) unless `id` may see `venue`.
    pub fn require_venue(&self, id: &Identity, venue: &str) -> Result<(), Status> {
        if self.may_see_venue(id, venue) {
            Ok(())
        } else {
            Err(self.refuse(
                id.spiffe(),
                Status::permission_denied(format!("{id} may not see venue {venue:?}")),
            ))
        }
    }

    /// Whether a role principal may see `venue`.
    pub fn may_see_venue(&self, id: &Identity, venue: &str) -> bool {
        match id {
            Identity::Node { venue: v, .. } => v == venue,
            Identity::Role { .. } => self
                .principals
                .get(&id.spiffe())
                .is_some_and(|vs| vs.is_empty() || vs.iter().any(|v| v == venue)),
        }
    }
}
