//! Authentication (identity from the verified client certificate) and
//! authorisation (which identities may call what). Transport-free: the
//! caller hands over the leaf certificate the TLS layer verified; refusals
//! come back as [`Error::Unauthenticated`] or [`Error::PermissionDenied`]
//! and are reported to the refusal sink, which the server audits.

use std::collections::{HashMap, HashSet};

use crate::{
    Error,
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
    /// From the registered (venue, node) pairs and the role principals
    /// (SPIFFE id, venues it may see; empty = all).
    pub fn new(
        nodes: impl IntoIterator<Item = (String, String)>,
        principals: impl IntoIterator<Item = (String, Vec<String>)>,
    ) -> Self {
        Self {
            nodes: nodes.into_iter().collect::<HashSet<_>>(),
            principals: principals.into_iter().collect(),
            refusals: None,
        }
    }

    /// How many nodes are registered.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Sends every refusal to `sink` (the server audits them). A full sink
    /// drops the report (counted in the log) rather than slow a caller down.
    pub fn with_refusal_sink(mut self, sink: tokio::sync::mpsc::Sender<Refusal>) -> Self {
        self.refusals = Some(sink);
        self
    }

    fn refuse(&self, actor: String, reason: String) -> Error {
        if let Some(sink) = &self.refusals
            && sink.try_send((actor, reason.clone())).is_err()
        {
            tracing::warn!("Refusal not audited: the audit queue is full.");
        }
        Error::PermissionDenied(reason)
    }

    /// The caller's identity from its verified leaf certificate (DER),
    /// refused if absent or unknown.
    pub fn identify_cert(&self, leaf: Option<&[u8]>) -> Result<Identity, Error> {
        let leaf =
            leaf.ok_or_else(|| Error::Unauthenticated("a client certificate is required".into()))?;
        let id = Identity::from_cert_der(leaf).map_err(|e| self.refuse(UNKNOWN_ACTOR.into(), e))?;
        let known = match &id {
            Identity::Node { venue, node } => self.nodes.contains(&(venue.clone(), node.clone())),
            Identity::Role { .. } => self.principals.contains_key(&id.spiffe()),
        };
        if !known {
            tracing::warn!(identity = %id, "Refused unknown identity.");
            return Err(self.refuse(
                id.spiffe(),
                format!("identity {id} is not registered with this aggregator"),
            ));
        }
        Ok(id)
    }

    /// Requires a registered node; returns (venue, node).
    pub fn node_of_cert(&self, leaf: Option<&[u8]>) -> Result<(String, String), Error> {
        match self.identify_cert(leaf)? {
            Identity::Node { venue, node } => Ok((venue, node)),
            other => Err(self.refuse(
                other.spiffe(),
                format!("{other} may not call this: nodes only"),
            )),
        }
    }

    /// Requires one of `roles`; returns the identity.
    pub fn role_of_cert(&self, leaf: Option<&[u8]>, roles: &[Role]) -> Result<Identity, Error> {
        let id = self.identify_cert(leaf)?;
        match &id {
            Identity::Role { role, .. } if roles.contains(role) => Ok(id),
            _ => Err(self.refuse(
                id.spiffe(),
                format!(
                    "{id} may not call this: requires role {}",
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            )),
        }
    }

    /// Refuses (audited) unless `id` may see `venue`.
    pub fn authorize_venue(&self, id: &Identity, venue: &str) -> Result<(), Error> {
        if self.may_see_venue(id, venue) {
            Ok(())
        } else {
            Err(self.refuse(id.spiffe(), format!("{id} may not see venue {venue:?}")))
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
