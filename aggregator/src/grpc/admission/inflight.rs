//! How much memory request bodies may hold, decided from the gRPC message
//! prefix before a body is buffered.
//!
//! tonic reads a unary request's whole message into memory before its
//! handler runs, so without a bound whoever can open streams decides how
//! much the aggregator holds: sixteen 63 MiB `SubmitUpdate` streams left one
//! byte short held it at over 1 GiB until the request timeout. Every request
//! therefore passes here (after [`super`] checked who may send a body at
//! all). Its first five bytes, the gRPC message prefix (a compression flag
//! and the message length, big-endian), are read, and then:
//!
//! - a message longer than its method's limit ([`MethodLimits`]) ends the call
//!   with `OUT_OF_RANGE` naming the method, the length and the limit, its
//!   body unread;
//! - otherwise the message's length is reserved against three budgets: the
//!   connection's, the principal's (the caller's SPIFFE id, over all its
//!   connections) and the server's. If any of them would be exceeded the call
//!   ends with `RESOURCE_EXHAUSTED` and a `retry-after-ms` hint, its body
//!   unread: this is flow control, counted and logged (throttled), not a
//!   refusal of the caller, so it is not audited. The reservation is returned
//!   when the handler has answered and the body is dropped.
//!
//! A body that carries more than the message it announced (a second message
//! on a unary call, a prefix that understates the length) ends with an error
//! at the first byte past it. So what request bodies hold at once is at most
//! `max_in_flight_bytes`, plus one HTTP/2 stream window per open stream (at
//! most `connections.max_streams` per connection), plus messages whose
//! prefix has not arrived yet (at most one frame each).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use http_body::{Body as _, Frame};
use serde::Deserialize;
use tonic::{Status, body::Body};

use crate::metrics::Metrics;

/// The retry hint sent with a budget refusal: long enough for a held
/// message to finish or time out, short enough not to idle a node.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// `[requests]`: how large request messages may be and how many bytes of
/// them may be held at once.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLimits {
    /// Largest `SubmitUpdate` / `SubmitMaskedInput` message (a model
    /// update), in bytes.
    #[serde(default = "default_max_update_bytes")]
    pub max_update_bytes: u64,
    /// Request message bytes one connection may hold at once.
    #[serde(default = "default_per_caller")]
    pub max_in_flight_bytes_per_connection: u64,
    /// Request message bytes one principal (a node or role identity) may
    /// hold at once over all its connections.
    #[serde(default = "default_per_caller")]
    pub max_in_flight_bytes_per_principal: u64,
    /// Request message bytes the whole server may hold at once.
    #[serde(default = "default_total")]
    pub max_in_flight_bytes: u64,
}

fn default_max_update_bytes() -> u64 {
    64 << 20
}
fn default_per_caller() -> u64 {
    72 << 20
}
fn default_total() -> u64 {
    96 << 20
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_update_bytes: default_max_update_bytes(),
            max_in_flight_bytes_per_connection: default_per_caller(),
            max_in_flight_bytes_per_principal: default_per_caller(),
            max_in_flight_bytes: default_total(),
        }
    }
}

/// Largest message of every method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MethodLimits {
    /// `SubmitUpdate`, `SubmitMaskedInput`: `requests.max_update_bytes`.
    pub update: u64,
    /// `SubmitReleases`: `ingest.max_batch` releases of at most
    /// [`MethodLimits::RELEASE_BYTES`] each, plus [`MethodLimits::SMALL`].
    pub releases: u64,
    /// `SubmitShares`, `SubmitUnmaskShares`: Shamir shares for up to
    /// [`MethodLimits::MAX_SECURE_NODES`] neighbours.
    pub shares: u64,
    /// Every other method (queries, leases, policy, audit, round control).
    pub other: u64,
}

impl MethodLimits {
    /// Room for one release's strings, window, cost and stream step.
    pub const RELEASE_BYTES: u64 = 2048;
    /// Any other request: a few ids, names and times.
    pub const SMALL: u64 = 64 << 10;
    /// Most nodes of a secure round the share messages are sized for.
    pub const MAX_SECURE_NODES: u64 = 4096;
    /// One encrypted share bundle per neighbour (two shares, a nonce, a
    /// tag, ids), generously.
    pub const SHARE_BYTES: u64 = 1024;

    /// The limits under `requests` and `ingest.max_batch`.
    pub fn new(requests: &RequestLimits, max_batch: usize) -> Self {
        let batch = u64::try_from(max_batch).unwrap_or(u64::MAX);
        Self {
            update: requests.max_update_bytes,
            releases: batch
                .saturating_mul(Self::RELEASE_BYTES)
                .saturating_add(Self::SMALL),
            shares: Self::MAX_SECURE_NODES
                .saturating_mul(Self::SHARE_BYTES)
                .saturating_add(Self::SMALL),
            other: Self::SMALL,
        }
    }

    /// The largest message `path` (a gRPC method path) may carry.
    pub fn for_path(&self, path: &str) -> u64 {
        match path {
            "/veil.v1.Federated/SubmitUpdate" | "/veil.v1.Federated/SubmitMaskedInput" => {
                self.update
            }
            "/veil.v1.Ingest/SubmitReleases" => self.releases,
            "/veil.v1.Federated/SubmitShares" | "/veil.v1.Federated/SubmitUnmaskShares" => {
                self.shares
            }
            _ => self.other,
        }
    }

    /// The largest message of any method.
    pub fn largest(&self) -> u64 {
        self.update
            .max(self.releases)
            .max(self.shares)
            .max(self.other)
    }
}

impl RequestLimits {
    /// Refuses budgets under which some valid message could never be
    /// admitted.
    pub fn check(&self, methods: &MethodLimits) -> Result<(), String> {
        if self.max_update_bytes == 0 {
            return Err("max_update_bytes must be at least 1".into());
        }
        let largest = methods.largest();
        for (key, v) in [
            (
                "max_in_flight_bytes_per_connection",
                self.max_in_flight_bytes_per_connection,
            ),
            (
                "max_in_flight_bytes_per_principal",
                self.max_in_flight_bytes_per_principal,
            ),
            ("max_in_flight_bytes", self.max_in_flight_bytes),
        ] {
            if v < largest {
                return Err(format!(
                    "{key} = {v} is below the largest message a method accepts ({largest} bytes): \
                     that message could never be admitted"
                ));
            }
        }
        Ok(())
    }
}

/// Which budget refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The caller's connection.
    Connection,
    /// The caller's identity.
    Principal,
    /// The whole server.
    Server,
}

impl Scope {
    /// The metric reason.
    pub fn reason(self) -> &'static str {
        match self {
            Scope::Connection => "connection_budget",
            Scope::Principal => "principal_budget",
            Scope::Server => "server_budget",
        }
    }

    fn config_key(self) -> &'static str {
        match self {
            Scope::Connection => "requests.max_in_flight_bytes_per_connection",
            Scope::Principal => "requests.max_in_flight_bytes_per_principal",
            Scope::Server => "requests.max_in_flight_bytes",
        }
    }
}

#[derive(Debug, Default)]
struct Held {
    total: u64,
    connections: HashMap<SocketAddr, u64>,
    principals: HashMap<String, u64>,
}

/// The three budgets and what is held against them.
#[derive(Debug)]
pub struct Budgets {
    limits: RequestLimits,
    methods: MethodLimits,
    held: Mutex<Held>,
    metrics: Option<Metrics>,
    last_log_ms: AtomicU64,
}

/// Bytes held against the budgets; returned on drop.
#[derive(Debug)]
pub struct Reservation {
    budgets: Arc<Budgets>,
    connection: Option<SocketAddr>,
    principal: String,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut held = self.budgets.lock();
        held.total = held.total.saturating_sub(self.bytes);
        if let Some(c) = self.connection
            && let Some(v) = held.connections.get_mut(&c)
        {
            *v = v.saturating_sub(self.bytes);
            if *v == 0 {
                held.connections.remove(&c);
            }
        }
        if let Some(v) = held.principals.get_mut(&self.principal) {
            *v = v.saturating_sub(self.bytes);
            if *v == 0 {
                held.principals.remove(&self.principal);
            }
        }
    }
}

impl Budgets {
    /// Budgets under `limits`, message limits `methods`; refusals counted
    /// in `metrics`.
    pub fn new(limits: RequestLimits, methods: MethodLimits, metrics: Option<Metrics>) -> Self {
        Self {
            limits,
            methods,
            held: Mutex::new(Held::default()),
            metrics,
            last_log_ms: AtomicU64::new(0),
        }
    }

    /// The message limits.
    pub fn methods(&self) -> &MethodLimits {
        &self.methods
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // A panic while holding this lock leaves consistent numbers (every
        // update is a plain add or subtract), so a poisoned lock is used.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held now: (server, this connection, this principal).
    pub fn held(&self, connection: Option<SocketAddr>, principal: &str) -> (u64, u64, u64) {
        let held = self.lock();
        (
            held.total,
            connection
                .and_then(|c| held.connections.get(&c).copied())
                .unwrap_or(0),
            held.principals.get(principal).copied().unwrap_or(0),
        )
    }

    /// Reserves `bytes` for a request on `connection` by `principal`, or
    /// names the budget that has no room.
    pub fn reserve(
        self: &Arc<Self>,
        connection: Option<SocketAddr>,
        principal: &str,
        bytes: u64,
    ) -> Result<Reservation, Scope> {
        let mut held = self.lock();
        let on_conn = connection
            .and_then(|c| held.connections.get(&c).copied())
            .unwrap_or(0);
        let on_principal = held.principals.get(principal).copied().unwrap_or(0);
        let fits = |now: u64, limit: u64| now.saturating_add(bytes) <= limit;
        if connection.is_some() && !fits(on_conn, self.limits.max_in_flight_bytes_per_connection) {
            return Err(Scope::Connection);
        }
        if !fits(on_principal, self.limits.max_in_flight_bytes_per_principal) {
            return Err(Scope::Principal);
        }
        if !fits(held.total, self.limits.max_in_flight_bytes) {
            return Err(Scope::Server);
        }
        held.total += bytes;
        if let Some(c) = connection {
            *held.connections.entry(c).or_default() += bytes;
        }
        *held.principals.entry(principal.to_owned()).or_default() += bytes;
        Ok(Reservation {
            budgets: self.clone(),
            connection,
            principal: principal.to_owned(),
            bytes,
        })
    }

    fn refused(&self, reason: &'static str) {
        if let Some(m) = &self.metrics {
            m.request_refused(reason);
        }
    }

    /// Whether a refusal should be logged now (at most one line per
    /// [`crate::tls::LOG_EVERY`]; the metric counts every one).
    fn log_now(&self) -> bool {
        let now = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let every = u64::try_from(crate::tls::LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        let last = self.last_log_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= every
            && self
                .last_log_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Reads `body` up to its message prefix and admits it: the body to hand
    /// on (the frames read so far, then the rest, cut at the announced
    /// message) and the reservation to keep until the handler has answered,
    /// or the status that ends the call.
    pub async fn admit(
        self: &Arc<Self>,
        path: &str,
        connection: Option<SocketAddr>,
        principal: &str,
        mut body: Body,
    ) -> Result<(Body, Option<Arc<Reservation>>), Status> {
        let mut frames = VecDeque::new();
        let mut prefix = Vec::with_capacity(5);
        while prefix.len() < 5 {
            let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            let Some(frame) = next else { break };
            let frame = frame?;
            if let Some(data) = frame.data_ref() {
                let take = (5 - prefix.len()).min(data.len());
                prefix.extend_from_slice(&data[..take]);
            }
            frames.push_back(frame);
        }
        if prefix.len() < 5 {
            // No complete message: tonic answers that itself; nothing large
            // can be held by fewer than five bytes.
            let body = Replay {
                frames,
                rest: body,
                allowed: u64::MAX,
                path: path.to_owned(),
                _reservation: None,
            };
            return Ok((Body::new(body), None));
        }
        let len = u64::from(u32::from_be_bytes([
            prefix[1], prefix[2], prefix[3], prefix[4],
        ]));
        let limit = self.methods.for_path(path);
        if len > limit {
            self.refused("message_too_large");
            if self.log_now() {
                tracing::warn!(
                    method = path,
                    principal,
                    bytes = len,
                    limit,
                    "Request refused: message larger than its method's limit (logged at most every 10 s)."
                );
            }
            return Err(Status::out_of_range(format!(
                "{path}: a message of {len} bytes is larger than this method's limit of {limit} \
                 bytes (refused before reading it)"
            )));
        }
        let reservation = match self.reserve(connection, principal, len) {
            Ok(r) => Arc::new(r),
            Err(scope) => {
                self.refused(scope.reason());
                let limit = match scope {
                    Scope::Connection => self.limits.max_in_flight_bytes_per_connection,
                    Scope::Principal => self.limits.max_in_flight_bytes_per_principal,
                    Scope::Server => self.limits.max_in_flight_bytes,
                };
                if self.log_now() {
                    tracing::warn!(
                        method = path,
                        principal,
                        bytes = len,
                        budget = scope.config_key(),
                        limit,
                        "Request refused: request bytes in flight at their limit (logged at most every 10 s)."
                    );
                }
                let retry_ms = u64::try_from(RETRY_AFTER.as_millis()).unwrap_or(u64::MAX);
                return Err(crate::grpc::status::busy(
                    format!(
                        "{path}: {len} more request bytes would exceed {} = {limit}; \
                         retry after {retry_ms} ms",
                        scope.config_key(),
                    ),
                    retry_ms,
                ));
            }
        };
        let body = Replay {
            frames,
            rest: body,
            allowed: 5 + len,
            path: path.to_owned(),
            _reservation: Some(reservation.clone()),
        };
        Ok((Body::new(body), Some(reservation)))
    }
}

/// A body whose first frames were read for the prefix: those frames again,
/// then the rest, ended with an error past the announced message. Holds the
/// reservation (with the call) until tonic drops it.
struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    rest: Body,
    /// Data bytes the body may still carry.
    allowed: u64,
    path: String,
    _reservation: Option<Arc<Reservation>>,
}

impl Replay {
    fn count(&mut self, frame: Frame<Bytes>) -> Result<Frame<Bytes>, Status> {
        if let Some(d) = frame.data_ref() {
            let n = u64::try_from(d.remaining()).unwrap_or(u64::MAX);
            if n > self.allowed {
                return Err(Status::out_of_range(format!(
                    "{}: the request carries more bytes than the one message its prefix announced",
                    self.path
                )));
            }
            self.allowed -= n;
        }
        Ok(frame)
    }
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(f) = this.frames.pop_front() {
            return Poll::Ready(Some(this.count(f)));
        }
        match Pin::new(&mut this.rest).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => Poll::Ready(Some(this.count(f))),
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(conn: u64, principal: u64, total: u64) -> Arc<Budgets> {
        let limits = RequestLimits {
            max_update_bytes: 1000,
            max_in_flight_bytes_per_connection: conn,
            max_in_flight_bytes_per_principal: principal,
            max_in_flight_bytes: total,
        };
        let methods = MethodLimits::new(&limits, 10);
        Arc::new(Budgets::new(limits, methods, None))
    }

    fn addr(port: u16) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn each_budget_refuses_by_name_and_a_drop_returns_the_bytes() {
        let b = budgets(100, 150, 200);
        let a = b.reserve(addr(1), "node-1", 80).unwrap();
        assert_eq!(
            b.reserve(addr(1), "node-1", 30).unwrap_err(),
            Scope::Connection
        );
        // Another connection of the same principal: the principal's budget.
        let c = b.reserve(addr(2), "node-1", 60).unwrap();
        assert_eq!(
            b.reserve(addr(3), "node-1", 20).unwrap_err(),
            Scope::Principal
        );
        // Another principal: the server's budget.
        assert_eq!(b.reserve(addr(4), "node-2", 70).unwrap_err(), Scope::Server);
        let d = b.reserve(addr(4), "node-2", 60).unwrap();
        assert_eq!(b.held(addr(1), "node-1"), (200, 80, 140));
        drop(a);
        drop(c);
        assert_eq!(b.held(addr(1), "node-1"), (60, 0, 0));
        let e = b.reserve(addr(1), "node-1", 100).unwrap();
        drop((d, e));
        let held = b.lock();
        assert_eq!(held.total, 0);
        assert!(held.connections.is_empty() && held.principals.is_empty());
    }

    #[test]
    fn method_limits_follow_the_config() {
        let r = RequestLimits::default();
        let m = MethodLimits::new(&r, 1000);
        assert_eq!(m.for_path("/veil.v1.Federated/SubmitUpdate"), 64 << 20);
        assert_eq!(m.for_path("/veil.v1.Federated/SubmitMaskedInput"), 64 << 20);
        assert_eq!(
            m.for_path("/veil.v1.Ingest/SubmitReleases"),
            1000 * 2048 + (64 << 10)
        );
        assert_eq!(m.for_path("/veil.v1.Query/QuerySeries"), 64 << 10);
        assert_eq!(m.largest(), 64 << 20);
        assert!(r.check(&m).is_ok());
        let small = RequestLimits {
            max_in_flight_bytes: 1 << 20,
            ..RequestLimits::default()
        };
        let err = small.check(&m).unwrap_err();
        assert!(err.contains("max_in_flight_bytes = 1048576"), "{err}");
    }

    /// A body fed by the test: the prefix and then whatever the test sends.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        (tx, Body::new(StreamBody(stream)))
    }

    struct StreamBody(tokio_stream::wrappers::ReceiverStream<Bytes>);

    impl http_body::Body for StreamBody {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            use tokio_stream::Stream;
            Pin::new(&mut self.0)
                .poll_next(cx)
                .map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    fn prefix(len: u32) -> Bytes {
        let mut v = vec![0u8];
        v.extend_from_slice(&len.to_be_bytes());
        Bytes::from(v)
    }

    async fn read_all(mut body: Body) -> Result<Vec<u8>, Status> {
        let mut out = Vec::new();
        while let Some(f) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            if let Some(d) = f?.data_ref() {
                out.extend_from_slice(d);
            }
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_held_message_keeps_its_bytes_until_its_body_is_dropped() {
        let b = budgets(1500, 1500, 1500);
        let path = "/veil.v1.Federated/SubmitUpdate";
        // A 1000-byte update whose body stalls after the prefix (as a held
        // stream does): admitted, and its 1000 bytes are reserved.
        let (tx1, body1) = channel_body();
        tx1.send(prefix(1000)).await.unwrap();
        let (held, call) = b.admit(path, addr(1), "node-1", body1).await.unwrap();
        assert_eq!(b.held(addr(1), "node-1"), (1000, 1000, 1000));
        // A second one on the same connection does not fit: refused at once
        // with the hint, before its body is read.
        let (tx2, body2) = channel_body();
        tx2.send(prefix(1000)).await.unwrap();
        let refused = b.admit(path, addr(1), "node-1", body2).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused
                .message()
                .contains("max_in_flight_bytes_per_connection"),
            "{}",
            refused.message()
        );
        assert_eq!(refused.metadata().get("retry-after-ms").unwrap(), "1000");
        // The held one finishes: its body replays the prefix and the message.
        tx1.send(Bytes::from(vec![7u8; 1000])).await.unwrap();
        drop(tx1);
        let bytes = read_all(held).await.unwrap();
        assert_eq!(bytes.len(), 1005);
        assert_eq!(&bytes[1..5], &1000u32.to_be_bytes());
        // The decoded message lives on in the handler: still held until the
        // call has answered.
        assert_eq!(b.held(addr(1), "node-1"), (1000, 1000, 1000));
        drop(call);
        assert_eq!(b.held(addr(1), "node-1"), (0, 0, 0));
        // Now the second fits.
        let (tx3, body3) = channel_body();
        tx3.send(prefix(1000)).await.unwrap();
        assert!(b.admit(path, addr(1), "node-1", body3).await.is_ok());
    }

    #[tokio::test]
    async fn an_oversized_or_overlong_message_is_refused_by_name() {
        let b = budgets(1500, 1500, 1500);
        let (tx, body) = channel_body();
        tx.send(prefix(1001)).await.unwrap();
        let err = b
            .admit("/veil.v1.Federated/SubmitUpdate", addr(1), "n", body)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        assert!(
            err.message().contains("SubmitUpdate")
                && err.message().contains("1001 bytes")
                && err.message().contains("limit of 1000"),
            "{}",
            err.message()
        );
        assert_eq!(b.held(addr(1), "n"), (0, 0, 0));
        // A prefix announcing 10 bytes followed by 11: cut with an error.
        let (tx, body) = channel_body();
        tx.send(prefix(10)).await.unwrap();
        tx.send(Bytes::from(vec![0u8; 11])).await.unwrap();
        drop(tx);
        let (body, call) = b
            .admit("/veil.v1.Query/ListZones", addr(1), "n", body)
            .await
            .unwrap();
        let err = read_all(body).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange);
        drop(call);
        assert_eq!(b.held(addr(1), "n"), (0, 0, 0));
    }

    #[tokio::test]
    async fn a_prefix_split_over_frames_is_read_whole() {
        let b = budgets(1500, 1500, 1500);
        let (tx, body) = channel_body();
        let p = prefix(3);
        tx.send(p.slice(0..2)).await.unwrap();
        tx.send(p.slice(2..5)).await.unwrap();
        tx.send(Bytes::from_static(b"abc")).await.unwrap();
        drop(tx);
        let (body, call) = b
            .admit("/veil.v1.Query/ListZones", addr(9), "n", body)
            .await
            .unwrap();
        assert_eq!(b.held(addr(9), "n"), (3, 3, 3));
        let bytes = read_all(body).await.unwrap();
        assert_eq!(&bytes[5..], b"abc");
        drop(call);
        assert_eq!(b.held(addr(9), "n"), (0, 0, 0));
    }
}
