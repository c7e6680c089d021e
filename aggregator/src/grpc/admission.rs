//! Who may send a request body at all, decided from the headers before
//! tonic reads (and buffers) the body.
//!
//! tonic decodes a unary request's whole message before the handler runs,
//! so a handler's own role check comes after up to `max_decoding_message_size`
//! bytes per stream are held in memory: a principal that may not call
//! `SubmitUpdate` could still make the aggregator buffer 64 MiB per stream.
//! The methods whose bodies are large or frequent (every `veil.v1.Ingest`
//! method, and the federated methods nodes send updates, keys and shares
//! with) are checked here first: the caller's certificate must name a
//! registered node, otherwise the call ends with `PERMISSION_DENIED` before
//! a byte of its body is read (and the refusal is audited as every refused
//! caller is). The handlers still run their own, finer checks.
//!
//! Every admitted request then passes [`inflight`]: its message's length is
//! checked against its method's limit and reserved against the connection's,
//! the principal's and the server's budgets of request bytes in flight.

pub mod inflight;

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{
    Status,
    body::Body,
    codegen::http,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use veil_aggregator_core::{auth::Registry, identity::Identity};

use inflight::Budgets;

/// Methods only registered nodes may call (full gRPC paths, or a service
/// prefix ending in `/`).
pub const NODE_ONLY: &[&str] = &[
    "/veil.v1.Ingest/",
    "/veil.v1.Federated/SubmitUpdate",
    "/veil.v1.Federated/AdvertiseKeys",
    "/veil.v1.Federated/SubmitShares",
    "/veil.v1.Federated/SubmitMaskedInput",
    "/veil.v1.Federated/SubmitUnmaskShares",
];

/// Whether `path` is only for registered nodes.
pub fn node_only(path: &str) -> bool {
    NODE_ONLY.iter().any(|m| {
        if m.ends_with('/') {
            path.starts_with(m)
        } else {
            path == *m
        }
    })
}

/// The layer to put in front of the gRPC routes.
#[derive(Clone)]
pub struct AdmissionLayer {
    registry: Registry,
    budgets: Option<Arc<Budgets>>,
}

impl AdmissionLayer {
    /// Admission decided by `registry`, request bytes held within `budgets`.
    pub fn new(registry: Registry, budgets: Option<Arc<Budgets>>) -> Self {
        Self { registry, budgets }
    }
}

impl<S> tower_layer::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            registry: self.registry.clone(),
            budgets: self.budgets.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Admission<S> {
    inner: S,
    registry: Registry,
    budgets: Option<Arc<Budgets>>,
}

/// The verified leaf certificate (DER) of the connection `req` came on.
fn leaf<B>(req: &http::Request<B>) -> Option<Vec<u8>> {
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .and_then(|c| c.first().map(|c| c.as_ref().to_vec()))
}

/// The peer address of the connection `req` came on (one connection's key
/// while it is open).
fn connection<B>(req: &http::Request<B>) -> Option<SocketAddr> {
    req.extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
}

/// Whose budget a request counts against: the SPIFFE id of its certificate
/// (registered or not: an unregistered caller is refused by the handler, and
/// its bytes meanwhile count against its own name).
fn principal(leaf: Option<&[u8]>) -> String {
    leaf.and_then(|der| Identity::from_cert_der(der).ok())
        .map_or_else(|| "(no identity)".to_owned(), |id| id.spiffe())
}

impl<S> Admission<S> {
    /// For a node-only method: the node's SPIFFE id, or the refusal. `None`
    /// for other methods.
    fn node_check<B>(
        &self,
        req: &http::Request<B>,
        leaf: Option<&[u8]>,
    ) -> Option<Result<String, Status>> {
        let path = req.uri().path();
        if !node_only(path) {
            return None;
        }
        Some(match self.registry.node_of_cert(leaf) {
            Ok((venue, node)) => Ok(Identity::Node { venue, node }.spiffe()),
            Err(e) => Err(Status::permission_denied(format!(
                "{path}: {e} (refused before reading the request body)"
            ))),
        })
    }
}

impl<S> tower_service::Service<http::Request<Body>> for Admission<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let leaf = leaf(&req);
        let node = match self.node_check(&req, leaf.as_deref()) {
            Some(Err(status)) => {
                // The body is dropped unread with the request.
                drop(req);
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
            Some(Ok(spiffe)) => Some(spiffe),
            None => None,
        };
        let Some(budgets) = self.budgets.clone() else {
            return Box::pin(self.inner.call(req));
        };
        // The inner service that was polled ready serves this call; a clone
        // takes its place for the next one.
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        let connection = connection(&req);
        // A node's identity is known from its check; others parse once.
        let principal = node.unwrap_or_else(|| principal(leaf.as_deref()));
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            match budgets
                .admit(parts.uri.path(), connection, &principal, body)
                .await
            {
                Err(status) => Ok(status.into_http()),
                Ok((body, reservation)) => {
                    let answer = inner.call(http::Request::from_parts(parts, body)).await;
                    // The message is released with the handler's answer.
                    drop(reservation);
                    answer
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_only_methods_are_matched_exactly_or_by_service() {
        assert!(super::node_only("/veil.v1.Ingest/SubmitReleases"));
        assert!(super::node_only("/veil.v1.Federated/SubmitUpdate"));
        assert!(super::node_only("/veil.v1.Federated/SubmitMaskedInput"));
        assert!(!super::node_only("/veil.v1.Federated/PullModel"));
        assert!(!super::node_only("/veil.v1.Federated/SubmitUpdateX"));
        assert!(!super::node_only("/veil.v1.Query/Zones"));
        assert!(!super::node_only("/grpc.health.v1.Health/Check"));
    }
}
