//! The gRPC listener's transport: who may finish a TLS handshake, and how
//! long a connection may hold the aggregator's resources.
//!
//! # Client certificates ([`ClientPolicy`])
//! A client is let in only if its certificate
//! * chains to `tls.ca` (webpki, validity dates, signature, path length);
//! * is an end entity whose extended key usage includes `clientAuth`
//!   ([`Identity::check_client_leaf`]: an absent EKU and a CA certificate
//!   used as a client are refused);
//! * is on no CRL in `tls.crls` (the status of every certificate in the
//!   chain must be known from those CRLs once any is configured: fail
//!   closed). CRL files are re-read when they change on disk (checked every
//!   [`CRL_POLL`]), without a restart; a CRL that stops parsing keeps the
//!   last good set in force and is logged as an error.
//!
//! Every refused handshake is logged and sent to the refusal sink, which
//! writes an `auth` audit entry naming the SPIFFE id the certificate claims
//! and why it was refused.
//!
//! # Connections ([`incoming`])
//! * At most `connections.max_handshakes` handshakes in progress: when a new
//!   connection arrives with every slot taken, the **oldest** pending
//!   handshake is dropped, so a flood of silent TCP connections cannot keep
//!   a real client out (it always gets a slot and finishes in milliseconds).
//! * A handshake must finish within `connections.handshake_timeout`.
//! * At most `connections.max` established connections; beyond that a new one
//!   is closed after its handshake; at most `connections.max_streams`
//!   concurrent requests on each (the server composition sets it).
//! * A connection whose peer sends nothing for `connections.idle_timeout`
//!   is closed. The server pings every connection (HTTP/2 PING) at half that
//!   interval, so a live client answers even while it has no request to
//!   make (an open `WatchAlerts` stream stays up however quiet), while a
//!   peer that finished TLS and then says nothing is closed.
//!
//! Each limit logs a warning when it bites (at most once per
//! [`LOG_EVERY`], with the count since the last line).

use std::{
    collections::VecDeque,
    future::Future,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, RwLock},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime},
    server::{
        WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use rustls_pki_types::pem::PemObject as _;
use serde::Deserialize;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use veil_aggregator_core::{auth::Refusal, identity::Identity};

/// How often CRL files are checked for changes.
pub const CRL_POLL: Duration = Duration::from_secs(2);
/// A limit's warning is logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// `[connections]`: limits of the gRPC listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionLimits {
    /// Established connections at once.
    #[serde(default = "default_max")]
    pub max: usize,
    /// Concurrent requests (HTTP/2 streams) per connection, advertised to
    /// clients as `SETTINGS_MAX_CONCURRENT_STREAMS`.
    #[serde(default = "default_max_streams")]
    pub max_streams: u32,
    /// TLS handshakes in progress at once (the oldest is dropped for a new
    /// one when all are taken).
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
    /// Time a TLS handshake may take.
    #[serde(
        default = "default_handshake_timeout",
        with = "crate::config::humantime_duration"
    )]
    pub handshake_timeout: Duration,
    /// A connection whose peer sends nothing (not even the answer to the
    /// server's HTTP/2 ping) for this long is closed.
    #[serde(
        default = "default_idle_timeout",
        with = "crate::config::humantime_duration"
    )]
    pub idle_timeout: Duration,
}

fn default_max() -> usize {
    512
}
fn default_max_streams() -> u32 {
    32
}
fn default_max_handshakes() -> usize {
    64
}
fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max: default_max(),
            max_streams: default_max_streams(),
            max_handshakes: default_max_handshakes(),
            handshake_timeout: default_handshake_timeout(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

impl ConnectionLimits {
    /// Refuses limits that would stop the listener from serving anyone.
    pub fn check(&self) -> Result<(), String> {
        if self.max == 0 || self.max_handshakes == 0 || self.max_streams == 0 {
            return Err("max, max_streams and max_handshakes must be at least 1".into());
        }
        if self.handshake_timeout.is_zero() || self.idle_timeout.is_zero() {
            return Err("handshake_timeout and idle_timeout must be longer than 0".into());
        }
        Ok(())
    }
}

/// Reading TLS material failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {reason}")]
pub struct Error {
    /// Which file.
    pub what: &'static str,
    /// Its path.
    pub path: String,
    /// What was wrong.
    pub reason: String,
}

fn err(what: &'static str, path: &Path, reason: impl std::fmt::Display) -> Error {
    Error {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Reads every `X509 CRL` block of the files in `paths`.
pub fn read_crls(paths: &[PathBuf]) -> Result<Vec<CertificateRevocationListDer<'static>>, Error> {
    let mut out = Vec::new();
    for p in paths {
        let before = out.len();
        for crl in CertificateRevocationListDer::pem_file_iter(p).map_err(|e| err("CRL", p, e))? {
            out.push(crl.map_err(|e| err("CRL", p, e))?);
        }
        if out.len() == before {
            return Err(err("CRL", p, "no X509 CRL block in the file"));
        }
    }
    Ok(out)
}

/// The client-certificate rules of the gRPC listener (see the module
/// docs), with CRLs that can be replaced while serving.
pub struct ClientPolicy {
    roots: Arc<RootCertStore>,
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    refusals: Option<mpsc::Sender<Refusal>>,
}

impl std::fmt::Debug for ClientPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientPolicy")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl ClientPolicy {
    /// Clients must chain to a certificate of `ca_pem`, and be on no CRL
    /// in `crls`.
    pub fn new(
        ca_path: &Path,
        ca_pem: &[u8],
        crls: Vec<CertificateRevocationListDer<'static>>,
        refusals: Option<mpsc::Sender<Refusal>>,
    ) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem) {
            let c = c.map_err(|e| err("CA certificate", ca_path, e))?;
            roots
                .add(c)
                .map_err(|e| err("CA certificate", ca_path, e))?;
        }
        if roots.is_empty() {
            return Err(err("CA certificate", ca_path, "no certificate in the file"));
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = build(&roots, &provider, crls).map_err(|e| err("CRL", ca_path, e))?;
        Ok(Self {
            hints: roots.subjects(),
            roots,
            provider,
            current: RwLock::new(inner),
            refusals,
        })
    }

    /// Replaces the CRLs in force.
    pub fn set_crls(&self, crls: Vec<CertificateRevocationListDer<'static>>) -> Result<(), String> {
        let next = build(&self.roots, &self.provider, crls)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(())
    }

    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn refuse(&self, end_entity: &CertificateDer<'_>, reason: String) {
        let actor = Identity::claimed_spiffe(end_entity)
            .unwrap_or_else(|| "unidentified TLS client".to_owned());
        tracing::warn!(%actor, %reason, "TLS client certificate refused.");
        if let Some(tx) = &self.refusals {
            // Never block a handshake on the audit writer; a full queue is
            // already a flood, and the log line above stays.
            let _ = tx.try_send((actor, format!("TLS handshake refused: {reason}")));
        }
    }

    /// A rustls server config with this policy, `h2` over TLS 1.2/1.3.
    pub fn server_config(
        self: &Arc<Self>,
        cert_path: &Path,
        cert_pem: &[u8],
        key_path: &Path,
        key_pem: &[u8],
    ) -> Result<rustls::ServerConfig, Error> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| err("server certificate", cert_path, e))?;
        if certs.is_empty() {
            return Err(err(
                "server certificate",
                cert_path,
                "no certificate in the file",
            ));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| err("server key", key_path, e))?;
        let mut sc = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("server certificate", cert_path, e))?
            .with_client_cert_verifier(self.clone())
            .with_single_cert(certs, key)
            .map_err(|e| err("server certificate/key", cert_path, e))?;
        sc.alpn_protocols = vec![b"h2".to_vec()];
        Ok(sc)
    }
}

fn build(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .with_crls(crls)
        .build()
        .map_err(|e| e.to_string())
}

impl ClientCertVerifier for ClientPolicy {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Err(reason) = Identity::check_client_leaf(end_entity) {
            self.refuse(end_entity, reason);
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::InvalidPurpose,
            ));
        }
        self.inner()
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| self.refuse(end_entity, e.to_string()))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner().supported_verify_schemes()
    }
}

/// Re-reads `paths` every [`CRL_POLL`] and installs them in `policy` when
/// any file's modification time or size changed. Ends with the runtime.
pub fn spawn_crl_reloader(
    policy: Arc<ClientPolicy>,
    paths: Vec<PathBuf>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stamp = |paths: &[PathBuf]| -> Vec<Option<(SystemTime, u64)>> {
            paths
                .iter()
                .map(|p| {
                    std::fs::metadata(p)
                        .ok()
                        .and_then(|m| Some((m.modified().ok()?, m.len())))
                })
                .collect()
        };
        let mut seen = stamp(&paths);
        loop {
            tokio::time::sleep(CRL_POLL).await;
            let now = stamp(&paths);
            if now == seen {
                continue;
            }
            match read_crls(&paths)
                .map_err(|e| e.to_string())
                .and_then(|crls| {
                    let n = crls.len();
                    policy.set_crls(crls).map(|()| n)
                }) {
                Ok(n) => {
                    tracing::info!(
                        crls = n,
                        "CRLs reloaded; revoked certificates are refused from the next handshake."
                    );
                    seen = now;
                }
                Err(e) => {
                    // Keep the last good CRLs in force; retry on the next change.
                    tracing::error!(error = %e, "CRL reload failed; the previous CRLs stay in force. Fix the file.");
                    seen = now;
                }
            }
        }
    })
}

/// A warning that is logged at most once per [`LOG_EVERY`].
struct Throttled {
    what: &'static str,
    since_last: u64,
    last: Option<std::time::Instant>,
}

impl Throttled {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            since_last: 0,
            last: None,
        }
    }

    fn hit(&mut self, limit: usize) {
        self.since_last += 1;
        if self.last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::warn!(limit, count = self.since_last, "{}", self.what);
            self.since_last = 0;
            self.last = Some(std::time::Instant::now());
        }
    }
}

/// An accepted, TLS-established connection holding its slot; closed when
/// idle for the configured time.
pub struct Conn {
    io: TlsStream<TcpStream>,
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    _slot: OwnedSemaphorePermit,
}

impl Conn {
    /// The peer sent something: the idle clock starts again.
    fn touch(&mut self) {
        let at = tokio::time::Instant::now() + self.idle_timeout;
        self.idle.as_mut().reset(at);
    }

    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.idle.as_mut().poll(cx).is_ready()
    }
}

impl Connected for Conn {
    type ConnectInfo = TlsConnectInfo<TcpConnectInfo>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

fn idle_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection idle")
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.touch();
                Poll::Ready(r)
            }
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(idle_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(idle_error())),
            r => r,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending if this.idle_expired(cx) => Poll::Ready(Err(idle_error())),
            r => r,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The stream of established connections tonic serves: accepts TCP on
/// `listener`, runs TLS handshakes under `limits` (see the module docs) and
/// yields connections until the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: ConnectionLimits,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        let established = Arc::new(Semaphore::new(limits.max));
        let mut pending: VecDeque<oneshot::Sender<()>> = VecDeque::new();
        let mut evicted = Throttled::new(
            "TLS handshake slots full: dropped the oldest pending handshake for a new connection (connections.max_handshakes).",
        );
        let full = Arc::new(std::sync::Mutex::new(Throttled::new(
            "Connection limit reached: closed a new connection after its handshake (connections.max).",
        )));
        let mut accept_errors = Throttled::new(
            "Accepting a TCP connection failed (file descriptors exhausted?); retrying.",
        );
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = tx.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(_) => {
                    accept_errors.hit(0);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY, Nagle holds back the last small TLS
            // record of a response (the trailers) until the peer's delayed
            // ACK: +40 ms on every call.
            let _ = tcp.set_nodelay(true);
            pending.retain(|s| !s.is_closed());
            if pending.len() >= limits.max_handshakes {
                // Dropping the sender cancels that handshake.
                pending.pop_front();
                evicted.hit(limits.max_handshakes);
            }
            let (cancel_tx, cancel_rx) = oneshot::channel::<()>();
            pending.push_back(cancel_tx);
            let (acceptor, tx, established, full) = (
                acceptor.clone(),
                tx.clone(),
                established.clone(),
                full.clone(),
            );
            let limits = limits.clone();
            tokio::spawn(async move {
                let tls = tokio::select! {
                    r = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)) => r,
                    _ = cancel_rx => {
                        tracing::debug!(%peer, "Pending TLS handshake dropped for a newer connection.");
                        return;
                    }
                };
                let io = match tls {
                    Ok(Ok(io)) => io,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed.");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out.");
                        return;
                    }
                };
                let Ok(slot) = established.try_acquire_owned() else {
                    full.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .hit(limits.max);
                    return;
                };
                let conn = Conn {
                    io,
                    idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
                    idle_timeout: limits.idle_timeout,
                    _slot: slot,
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
