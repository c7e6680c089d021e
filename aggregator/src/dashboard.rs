//! The organizer dashboard: its own HTTPS listener (rustls, optional client
//! certificates), a JSON API, Server-Sent Events, and one embedded page.
//!
//! Access needs organizer credentials: a registered organizer client
//! certificate, or a venue-scoped bearer token ([`tokens`]) given as
//! `Authorization: Bearer`, or exchanged once (`/?token=` or the login
//! form) for an `HttpOnly; Secure; SameSite=Strict` cookie. Without them
//! every `/api/` call is 401 and the page shows only its login form.
//!
//! Everything shown is post-processing of stored DP releases (through
//! [`crate::query`]), the venue's ledger and stored alerts: this module
//! never reads anything a node did not release and spends no budget.

pub mod api;
pub mod live;
pub mod sessions;
pub mod tokens;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{FromRequestParts, Query, State as AxState},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::watch};

use veil_common::now_ms;

use crate::{
    audit::{NewEntry, action},
    identity::{Identity, Role},
    state::State,
};

/// The page, its script and its style sheet, embedded in the binary.
const INDEX_HTML: &str = include_str!("dashboard/assets/index.html");
const APP_JS: &str = include_str!("dashboard/assets/app.js");
const APP_CSS: &str = include_str!("dashboard/assets/app.css");

/// Name of the session cookie (it holds a session id, never the token).
pub const COOKIE: &str = "veil_session";

/// `[dashboard]` in `aggregator.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTPS listen address, e.g. "127.0.0.1:8443" (port 0 picks one).
    pub listen: SocketAddr,
    /// Certificate chain (PEM); default: `tls.cert` (the gRPC server's).
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Private key (PEM); default: `tls.key`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// CA whose organizer client certificates are accepted (optional client
    /// auth); default: `tls.ca`.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

impl Config {
    /// Semantic checks: (key, reason) of the first problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.cert.is_some() != self.key.is_some() {
            return Err((
                "dashboard.cert",
                "dashboard.cert and dashboard.key go together".into(),
            ));
        }
        Ok(())
    }
}

/// Errors starting the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TLS material unreadable or unusable.
    #[error("dashboard TLS: {0}")]
    Tls(String),
    /// Binding failed.
    #[error(
        "cannot listen on {addr} (`dashboard.listen` in the config): if another process uses the \
         port, stop it or set `dashboard.listen` to a free address (port 0 picks one)"
    )]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// A bound, not yet serving dashboard listener.
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    occupancy_limits: Arc<std::collections::BTreeMap<String, f64>>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Bound {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Where the dashboard listens and its TLS files (paths resolved), as the
/// application's config hands them over.
#[derive(Debug, Clone)]
pub struct Settings {
    /// HTTPS listen address.
    pub listen: SocketAddr,
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA whose organizer client certificates are accepted.
    pub client_ca: PathBuf,
    /// Occupancy limit (people) per zone, `[report.occupancy_limits]`: the
    /// zone grid colours a zone by it.
    pub occupancy_limits: std::collections::BTreeMap<String, f64>,
}

/// Builds the TLS config: the server certificate, optional client
/// certificates from `client_ca`, HTTP/1.1 only.
fn tls_config(s: &Settings) -> Result<rustls::ServerConfig, Error> {
    let (cert_path, key_path, ca_path) = (s.cert.as_path(), s.key.as_path(), s.client_ca.as_path());
    let err = |what: &str, p: &std::path::Path, e: &dyn std::fmt::Display| {
        Error::Tls(format!("{what} {}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| err("certificate", cert_path, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| err("certificate", cert_path, &e))?;
    if certs.is_empty() {
        return Err(err("certificate", cert_path, &"no certificate in file"));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| err("key", key_path, &e))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_path).map_err(|e| err("client CA", ca_path, &e))? {
        let c = c.map_err(|e| err("client CA", ca_path, &e))?;
        roots.add(c).map_err(|e| err("client CA", ca_path, &e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| err("client CA", ca_path, &e))?;
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| err("certificate/key", cert_path, &e))?;
    sc.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(sc)
}

/// Loads TLS material and binds the dashboard listener.
pub async fn bind(d: &Settings) -> Result<Bound, Error> {
    let tls = Arc::new(tls_config(d)?);
    let listener = TcpListener::bind(d.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: d.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: d.listen,
        source,
    })?;
    Ok(Bound {
        listener,
        addr,
        tls,
        occupancy_limits: Arc::new(d.occupancy_limits.clone()),
    })
}

/// What handlers share.
#[derive(Clone)]
pub struct Ctx {
    /// The aggregator's state.
    pub state: Arc<State>,
    /// Flips to `true` at shutdown (ends event streams).
    pub shutdown: watch::Receiver<bool>,
    refusals: tokio::sync::mpsc::Sender<(String, String, String)>,
    /// Open sign-in sessions.
    sessions: Arc<sessions::Sessions>,
    /// Occupancy limit per zone (`[report.occupancy_limits]`).
    pub occupancy_limits: Arc<std::collections::BTreeMap<String, f64>>,
}

/// The organizer identity a connection's client certificate proved (if any).
#[derive(Debug, Clone)]
struct PeerIdentity(Option<Identity>);

/// Serves the dashboard until `shutdown` turns `true`. Streams end and
/// connections close gracefully (each given a few seconds) at shutdown.
pub async fn serve(bound: Bound, state: Arc<State>, shutdown: watch::Receiver<bool>) {
    let (refusal_tx, refusal_rx) = tokio::sync::mpsc::channel(256);
    let auditor = tokio::spawn(audit_refusals(state.clone(), refusal_rx));
    let ctx = Ctx {
        state,
        shutdown: shutdown.clone(),
        refusals: refusal_tx,
        sessions: Arc::default(),
        occupancy_limits: bound.occupancy_limits.clone(),
    };
    let app = router(ctx);
    let acceptor = tokio_rustls::TlsAcceptor::from(bound.tls);
    tracing::info!(addr = %bound.addr, "Dashboard serving (HTTPS).");
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            a = bound.listener.accept() => a,
            _ = stop.changed() => break,
        };
        let (tcp, _peer) = match accepted {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "Dashboard accept failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Live views and alerts are small server-sent events: without
        // TCP_NODELAY, Nagle holds one back until the browser's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "Setting TCP_NODELAY on a dashboard connection failed.");
        }
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "Dashboard TLS handshake failed.");
                        return;
                    }
                    Err(_) => return,
                };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| Identity::from_cert_der(c.as_ref()).ok());
            let svc = app.layer(axum::Extension(PeerIdentity(peer)));
            let svc = hyper_util::service::TowerToHyperService::new(svc);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(15))
                .serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "Dashboard connection ended with an error.");
                    }
                }
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    auditor.abort();
    tracing::info!("Dashboard stopped.");
}

/// The routes.
pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/api/session", get(api::session))
        .route("/api/budget", get(api::budget))
        .route("/api/zones", get(api::zones))
        .route("/api/series", get(api::series))
        .route("/api/alerts", get(api::alerts))
        .route("/api/alerts/{id}/ack", post(api::acknowledge))
        .route("/api/stream", get(live::stream))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ctx)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.entry(k).or_insert(HeaderValue::from_static(v));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    r
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// `?token=` on the page URL.
#[derive(Debug, Deserialize)]
struct TokenParam {
    token: Option<String>,
}

/// `GET /`: the page (no data). With `?token=`, a valid token is exchanged
/// for the session cookie and the browser is sent back to `/`, so the token
/// leaves the address bar and history.
async fn index(AxState(ctx): AxState<Ctx>, Query(q): Query<TokenParam>) -> Response {
    match q.token {
        None => asset("text/html; charset=utf-8", INDEX_HTML),
        Some(t) => exchange_token(&ctx, &t).await,
    }
}

/// The login form's body.
#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /login` (form): exchanges a token for the session cookie.
async fn login(AxState(ctx): AxState<Ctx>, axum::Form(f): axum::Form<LoginForm>) -> Response {
    exchange_token(&ctx, f.token.trim()).await
}

async fn exchange_token(ctx: &Ctx, token: &str) -> Response {
    let now = now_ms();
    match tokens::verify(ctx.state.storage.reads(), token, now).await {
        Ok(Ok(info)) => {
            let session = match ctx.sessions.open(&info.id, info.expires_ms, now) {
                Ok(s) => s,
                Err(e) => return ApiError::internal(&ctx.state, &e).into_response(),
            };
            let max_age = (info.expires_ms - now) / 1000;
            let cookie = format!(
                "{COOKIE}={session}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
            );
            ctx.state.metrics.dashboard_request("ok");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, cookie),
                    (header::LOCATION, "/".to_owned()),
                ],
            )
                .into_response()
        }
        Ok(Err(refused)) => {
            refuse_audited(ctx, token_actor_hint(token), "", refused.as_str());
            (
                StatusCode::UNAUTHORIZED,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                format!(
                    "<!doctype html><meta charset=utf-8><title>Veil</title><p>Sign-in refused: {}. \
                     <a href=\"/\">Back</a></p>",
                    refused.as_str()
                ),
            )
                .into_response()
        }
        Err(e) => ApiError::internal(&ctx.state, &e).into_response(),
    }
}

/// `POST /logout`: closes the session on the server and clears the cookie
/// (a copy of the cookie no longer signs anyone in).
async fn logout(AxState(ctx): AxState<Ctx>, headers: HeaderMap) -> Response {
    if let Some(id) = session_cookie(&headers) {
        ctx.sessions.close(&id);
    }
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"),
            ),
            (header::LOCATION, "/".to_owned()),
        ],
    )
        .into_response()
}

/// An API error: a status and a message naming what was wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl ApiError {
    /// 400.
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: m.into(),
        }
    }
    /// 401.
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            message: m.into(),
        }
    }
    /// 403.
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: m.into(),
        }
    }
    /// 404.
    pub fn not_found(m: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: m.into(),
        }
    }
    /// 500: details logged, not echoed.
    pub fn internal(st: &State, e: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %e, "Dashboard request failed.");
        st.metrics.dashboard_request("error");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error (see the aggregator's log)".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_string(&ErrorBody {
            error: &self.message,
        })
        .unwrap_or_else(|_| "{\"error\":\"error\"}".into());
        let mut r = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"veil-dashboard\""),
            );
        }
        r
    }
}

/// A JSON response.
pub fn json<T: Serialize>(st: &State, v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(s) => {
            st.metrics.dashboard_request("ok");
            ([(header::CONTENT_TYPE, "application/json")], s).into_response()
        }
        Err(e) => ApiError::internal(st, &e).into_response(),
    }
}

/// How a caller proved to be an organizer.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A registered organizer client certificate.
    Cert(Identity),
    /// A venue-scoped bearer token (or a session signed in with one).
    Token {
        /// The stored token record.
        info: tokens::TokenInfo,
        /// Whether it came from the cookie (state-changing calls then need
        /// the `X-Veil-Request` header, on top of SameSite=Strict).
        from_cookie: bool,
    },
}

impl Credential {
    /// The actor recorded in audit entries: the certificate's SPIFFE id, or
    /// `spiffe://veil/role/organizer/token-<id>` (the token's public id).
    pub fn actor(&self) -> String {
        match self {
            Credential::Cert(id) => id.spiffe(),
            Credential::Token { info, .. } => {
                format!("spiffe://veil/role/organizer/token-{}", info.id)
            }
        }
    }

    /// Venues this credential may see, in name order.
    pub fn venues(&self, st: &State) -> Vec<String> {
        let mut v: Vec<String> = match self {
            Credential::Token { info, .. } => vec![info.venue.clone()],
            Credential::Cert(id) => st
                .policies
                .iter()
                .map(|(v, _)| v.clone())
                .filter(|v| st.registry.may_see_venue(id, v))
                .collect(),
        };
        v.sort();
        v
    }

    /// The venue a request is about: `requested`, or the only one this
    /// credential may see. Refusals are audited.
    pub fn venue(&self, ctx: &Ctx, requested: Option<&str>) -> Result<String, ApiError> {
        let venues = self.venues(&ctx.state);
        match requested {
            Some(v) if venues.iter().any(|x| x == v) => Ok(v.to_owned()),
            Some(v) => {
                refuse_audited(ctx, self.actor(), v, "venue outside the credential's scope");
                Err(ApiError::forbidden(format!(
                    "this credential may not see venue {v:?}"
                )))
            }
            None if venues.len() == 1 => Ok(venues[0].clone()),
            None if venues.is_empty() => Err(ApiError::forbidden(
                "this credential may see no configured venue",
            )),
            None => Err(ApiError::bad_request(format!(
                "several venues: add ?venue= (one of {})",
                venues.join(", ")
            ))),
        }
    }
}

/// The token's public id, for audit entries about refused tokens (never
/// the secret part): `token-<id>` when well formed, else `unknown`.
fn token_actor_hint(token: &str) -> String {
    if tokens::well_formed(token) {
        format!("spiffe://veil/role/organizer/token-{}", &token[5..21])
    } else {
        crate::auth::UNKNOWN_ACTOR.to_owned()
    }
}

/// Counts and audits (asynchronously, bounded, dropped when full) a refusal
/// of presented credentials. Requests without any credential are counted
/// only: the login page itself makes them.
fn refuse_audited(ctx: &Ctx, actor: String, venue: &str, reason: &str) {
    ctx.state.metrics.auth_refused("dashboard");
    if ctx
        .refusals
        .try_send((actor, venue.to_owned(), format!("dashboard: {reason}")))
        .is_err()
    {
        tracing::warn!("Dashboard refusal not audited: the audit queue is full.");
    }
}

async fn audit_refusals(
    st: Arc<State>,
    mut rx: tokio::sync::mpsc::Receiver<(String, String, String)>,
) {
    while let Some((actor, venue, reason)) = rx.recv().await {
        let now = st.now_ms();
        let entry = NewEntry {
            actor,
            venue,
            action: action::AUTH,
            allow: false,
            reason,
            ..NewEntry::default()
        };
        let result = st
            .storage
            .run_audited(&st.audit, "audit_dashboard_refusal", |tx, atx| {
                Box::pin(async move {
                    atx.append(tx, entry, now).await?;
                    Ok::<_, veil_aggregator_core::Error>(())
                })
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "Auditing a refused dashboard caller failed.");
        }
    }
}

/// What a request presents: a bearer token, or the session cookie.
enum Presented {
    Bearer(String),
    Session(String),
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    for c in headers.get_all(header::COOKIE) {
        let Ok(c) = c.to_str() else { continue };
        for kv in c.split(';') {
            if let Some(t) = kv
                .trim()
                .strip_prefix(COOKIE)
                .and_then(|r| r.strip_prefix('='))
                && !t.is_empty()
            {
                return Some(t.to_owned());
            }
        }
    }
    None
}

fn presented(parts: &Parts) -> Option<Presented> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let t = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))?;
        return Some(Presented::Bearer(t.trim().to_owned()));
    }
    session_cookie(&parts.headers).map(Presented::Session)
}

impl FromRequestParts<Ctx> for Credential {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, Self::Rejection> {
        // 1. An organizer client certificate registered as a principal.
        if let Some(PeerIdentity(Some(id))) = parts.extensions.get::<PeerIdentity>() {
            let registered = ctx.state.registry.may_see_venue(id, "")
                || ctx
                    .state
                    .policies
                    .iter()
                    .any(|(v, _)| ctx.state.registry.may_see_venue(id, v));
            match id {
                Identity::Role {
                    role: Role::Organizer,
                    ..
                } if registered => return Ok(Credential::Cert(id.clone())),
                _ if presented(parts).is_none() => {
                    refuse_audited(
                        ctx,
                        id.spiffe(),
                        "",
                        "client certificate is not a registered organizer",
                    );
                    return Err(ApiError::forbidden(format!(
                        "{id} is not a registered organizer"
                    )));
                }
                _ => {}
            }
        }
        // 2. A bearer token, or the session cookie of a token sign-in.
        let now = now_ms();
        let (checked, from_cookie, hint) = match presented(parts) {
            None => {
                ctx.state.metrics.dashboard_request("unauthorized");
                return Err(ApiError::unauthorized(
                    "organizer credentials required: a client certificate or a token",
                ));
            }
            Some(Presented::Bearer(token)) => (
                tokens::verify(ctx.state.storage.reads(), &token, now).await,
                false,
                token_actor_hint(&token),
            ),
            Some(Presented::Session(id)) => match ctx.sessions.token_of(&id, now) {
                Some(token_id) => (
                    tokens::by_id(ctx.state.storage.reads(), &token_id, now).await,
                    true,
                    format!("spiffe://veil/role/organizer/token-{token_id}"),
                ),
                None => {
                    ctx.state.metrics.dashboard_request("unauthorized");
                    return Err(ApiError::unauthorized(
                        "session ended (signed out, expired or the aggregator restarted): sign in again",
                    ));
                }
            },
        };
        match checked {
            Ok(Ok(info)) => Ok(Credential::Token { info, from_cookie }),
            Ok(Err(refused)) => {
                ctx.state.metrics.dashboard_request("unauthorized");
                refuse_audited(ctx, hint, "", refused.as_str());
                Err(ApiError::unauthorized(refused.as_str()))
            }
            Err(e) => Err(ApiError::internal(&ctx.state, &e)),
        }
    }
}

#[cfg(test)]
mod tests;
