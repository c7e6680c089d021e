//! The gRPC server: tonic over rustls with client certificates required,
//! health service, graceful shutdown.

use std::{future::Future, net::SocketAddr};

use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::transport::Server;

use veil_proto::{
    audit_server::AuditServer, ingest_server::IngestServer, ledger_server::LedgerServer,
    policy_server::PolicyServer,
};

use veil_aggregator_core::{
    Core, SystemClock,
    audit::{AuditLog, NewEntry, SELF_ACTOR, action},
    storage::Storage,
};

use crate::{
    config::Config,
    grpc::{
        audit::AuditService, ingest::IngestService, ledger::LedgerService, policy::PolicyService,
    },
    state::State,
};

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading TLS files failed.
    #[error("reading {what} {path}: {source}")]
    Tls {
        /// Which file.
        what: &'static str,
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Policy loading failed.
    #[error("policy: {0}")]
    Policy(String),
    /// Storage failed to open.
    #[error(transparent)]
    Storage(#[from] veil_aggregator_core::storage::Error),
    /// The audit log failed to load or the signing key is unusable.
    #[error(transparent)]
    Audit(#[from] veil_aggregator_core::audit::Error),
    /// The audit log could not be opened from `[audit]`.
    #[error(transparent)]
    AuditOpen(#[from] crate::config::AuditOpenError),
    /// Recording the policies in force failed.
    #[error(transparent)]
    Core(#[from] veil_aggregator_core::Error),
    /// The `[alerts]` config is invalid.
    #[error("alerts: {0}")]
    Alerts(String),
    /// Binding a listener failed (the cause follows in the error chain).
    #[error(
        "cannot listen on {addr} (`{key}` in the config): if another process uses the port, \
         stop it or set `{key}` to a free address (port 0 picks one)"
    )]
    Bind {
        /// The config key of the address.
        key: &'static str,
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The dashboard could not start.
    #[error(transparent)]
    Dashboard(#[from] crate::dashboard::Error),
    /// TLS material (CA, server certificate and key, CRLs) is unusable.
    #[error(transparent)]
    TlsConfig(#[from] crate::tls::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A bound, not yet serving aggregator.
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    /// The client-certificate rules, and the CRL files they reload.
    clients: (Arc<crate::tls::ClientPolicy>, Vec<std::path::PathBuf>),
    connections: crate::tls::ConnectionLimits,
    /// Request message limits and in-flight budgets (`[requests]`).
    requests: (
        crate::grpc::admission::inflight::RequestLimits,
        crate::grpc::admission::inflight::MethodLimits,
    ),
    state: Arc<State>,
    refusals: tokio::sync::mpsc::Receiver<veil_aggregator_core::auth::Refusal>,
    rounds: crate::rounds::RoundsConfig,
    /// The node CA (DER): secure rounds verify key advertisements with it.
    node_ca: Vec<u8>,
    // The alert task's inputs.
    alert_task: (
        crate::alerts::HubReceiver,
        Vec<crate::alerts::config::Rule>,
        crate::alerts::Config,
    ),
    /// Organizer surface: dashboard and metrics listeners.
    web: WebListeners,
}

/// The dashboard (HTTPS) and metrics (HTTP) listeners, when configured.
#[derive(Default)]
struct WebListeners {
    dashboard: Option<crate::dashboard::Bound>,
    metrics: Option<TcpListener>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn read(cfg: &Config, what: &'static str, p: &std::path::Path) -> Result<Vec<u8>, Error> {
    let path = cfg.resolve(p);
    std::fs::read(&path).map_err(|source| Error::Tls {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Opens storage, loads TLS material and policies, binds the listener.
pub async fn bind(config: Config) -> Result<Bound, Error> {
    let ca = read(&config, "CA certificate", &config.tls.ca)?;
    let node_ca = {
        use rustls_pki_types::pem::PemObject as _;
        rustls_pki_types::CertificateDer::from_pem_slice(&ca)
            .map(|c| c.to_vec())
            .unwrap_or_default()
    };
    let cert = read(&config, "server certificate", &config.tls.cert)?;
    let key = read(&config, "server key", &config.tls.key)?;
    let crl_paths: Vec<_> = config.tls.crls.iter().map(|p| config.resolve(p)).collect();
    let (refusal_tx, refusals) = tokio::sync::mpsc::channel(1024);
    let clients = Arc::new(crate::tls::ClientPolicy::new(
        &config.resolve(&config.tls.ca),
        &ca,
        crate::tls::read_crls(&crl_paths)?,
        Some(refusal_tx.clone()),
    )?);
    let tls = Arc::new(clients.server_config(
        &config.resolve(&config.tls.cert),
        &cert,
        &config.resolve(&config.tls.key),
        &key,
    )?);
    let policies = config.policies().map_err(Error::Policy)?;
    let storage = Storage::open_with(&config.storage_options()).await?;
    let audit = config.open_audit(&storage).await?;
    let clock: Arc<dyn veil_aggregator_core::Clock> = Arc::new(SystemClock);
    // Record which policy versions are in force from now on.
    {
        let now = clock.now_ms();
        let mut venues: Vec<_> = policies.iter().collect();
        venues.sort_by(|a, b| a.0.cmp(b.0));
        storage
            .run_audited(&audit, "record_policies", |tx, atx| {
                Box::pin(async move {
                    for (venue, p) in venues {
                        atx.append(
                            tx,
                            NewEntry {
                                actor: SELF_ACTOR.into(),
                                venue: venue.clone(),
                                action: action::POLICY_LOAD,
                                allow: true,
                                reason: format!("policy \"{}\" in force", p.policy.name),
                                policy_hash: p.hash.clone(),
                                ..NewEntry::default()
                            },
                            now,
                        )
                        .await?;
                    }
                    Ok::<_, veil_aggregator_core::Error>(())
                })
            })
            .await?;
        audit.checkpoint(&storage, now).await?;
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            key: "listen",
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        key: "listen",
        addr: config.listen,
        source,
    })?;
    // Organizer surface: bind before serving so a port conflict fails start-up.
    let web = WebListeners {
        dashboard: match config.dashboard() {
            Some(d) => Some(crate::dashboard::bind(&d).await?),
            None => None,
        },
        metrics: match &config.metrics {
            Some(m) => Some(
                crate::metrics::bind(m)
                    .await
                    .map_err(|source| Error::Bind {
                        key: "metrics.listen",
                        addr: m.listen,
                        source,
                    })?,
            ),
            None => None,
        },
    };
    let registry = config.registry().with_refusal_sink(refusal_tx);
    // Organizer alerts.
    let rules = config.alerts.check().map_err(Error::Alerts)?;
    let (alerts, alert_rx) = crate::alerts::AlertHub::new(&config.alerts);
    Ok(Bound {
        alert_task: (alert_rx, rules, config.alerts.clone()),
        listener,
        addr,
        tls,
        clients: (clients, crl_paths),
        connections: config.connections.clone(),
        requests: (config.requests.clone(), config.method_limits()),
        refusals,
        rounds: config.rounds.clone(),
        node_ca,
        web,
        state: Arc::new(State {
            core: Arc::new(Core {
                registry,
                policies,
                storage,
                audit,
                limits: config.ingest.limits(),
                clock,
            }),
            metrics: crate::metrics::Metrics::new(),
            alerts,
        }),
    })
}

/// Writes an `auth` deny entry for every refused caller.
async fn audit_refusals(
    st: Arc<State>,
    mut rx: tokio::sync::mpsc::Receiver<veil_aggregator_core::auth::Refusal>,
) {
    while let Some((actor, reason)) = rx.recv().await {
        st.metrics.auth_refused("grpc");
        let now = st.now_ms();
        let entry = NewEntry {
            actor,
            action: action::AUTH,
            allow: false,
            reason,
            ..NewEntry::default()
        };
        let result = st
            .storage
            .run_audited(&st.audit, "audit_refusal", |tx, atx| {
                Box::pin(async move {
                    atx.append(tx, entry, now).await?;
                    Ok::<_, veil_aggregator_core::Error>(())
                })
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "Auditing a refused caller failed.");
        }
    }
}

impl Bound {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The dashboard's HTTPS address, when `[dashboard]` is configured.
    pub fn dashboard_addr(&self) -> Option<SocketAddr> {
        self.web.dashboard.as_ref().map(|d| d.local_addr())
    }

    /// The `/metrics` address, when `[metrics]` is configured.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.web.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The storage handle.
    pub fn storage(&self) -> &Storage {
        &self.state.storage
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.state.audit
    }

    /// The shared state (the web dashboard serves from it).
    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls and
    /// closes the database.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let st = self.state.clone();
        let refusal_auditor = tokio::spawn(audit_refusals(st.clone(), self.refusals));
        // The alert task and the organizer Query service.
        let (alert_rx, rules, alerts_cfg) = self.alert_task;
        let alert_task = tokio::spawn(crate::alerts::run(
            st.core.clone(),
            st.alerts.clone(),
            rules,
            alerts_cfg,
            alert_rx,
        ));
        let query = crate::grpc::query::QueryService::new(st.clone());
        let (ingest, committer) = IngestService::new(st.clone());
        let policy = PolicyService { state: st.clone() };
        let ledger = LedgerService { state: st.clone() };
        let audit = AuditService { state: st.clone() };
        // Federated rounds: the service and its deadline/schedule ticker.
        let rounds = Arc::new(
            crate::rounds::Rounds::new(st.storage.clone(), self.rounds.delta).with_charging(
                crate::rounds::Charging {
                    policies: st.policies.clone(),
                    audit: st.audit.clone(),
                },
            ),
        );
        // Secure rounds verify key advertisements against the node CA.
        let registered = st.registry.node_count();
        let secure = match veil_secagg::TrustedCa::new(self.node_ca) {
            Ok(ca) => crate::rounds::secure::SecureRounds::new(
                rounds.clone(),
                Some(st.audit.clone()),
                ca,
                registered,
            )
            .map(Arc::new)
            .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let secure = secure
            .inspect_err(|e| tracing::warn!(error = %e, "Secure rounds unavailable."))
            .ok();
        let rounds_ticker = crate::rounds::spawn_ticker(
            rounds.clone(),
            Some(st.audit.clone()),
            self.rounds.schedule.clone(),
            secure.clone(),
            u32::try_from(registered).unwrap_or(u32::MAX),
        );
        let federated = crate::grpc::rounds::FederatedService::new(
            rounds,
            st.registry.clone(),
            Some(st.audit.clone()),
        )
        .with_secure(secure);
        health_reporter
            .set_serving::<IngestServer<IngestService>>()
            .await;
        health_reporter
            .set_serving::<PolicyServer<PolicyService>>()
            .await;
        health_reporter
            .set_serving::<LedgerServer<LedgerService>>()
            .await;
        health_reporter
            .set_serving::<AuditServer<AuditService>>()
            .await;
        health_reporter
            .set_serving::<veil_proto::query_server::QueryServer<crate::grpc::query::QueryService>>(
            )
            .await;
        health_reporter
            .set_serving::<veil_proto::federated_server::FederatedServer<
                crate::grpc::rounds::FederatedService,
            >>()
            .await;
        // Organizer surface: dashboard and metrics stop with the server.
        let (web_stop, web_stopped) = tokio::sync::watch::channel(false);
        let web_tasks = spawn_web(self.web, st.clone(), web_stopped);
        let shutdown = async move {
            shutdown.await;
            let _ = web_stop.send(true);
        };
        tracing::info!(addr = %self.addr, "Aggregator serving.");
        let (clients, crl_paths) = self.clients;
        let crl_reloader =
            (!crl_paths.is_empty()).then(|| crate::tls::spawn_crl_reloader(clients, crl_paths));
        let max_streams = self.connections.max_streams;
        let (request_limits, methods) = self.requests;
        let budgets = Arc::new(crate::grpc::admission::inflight::Budgets::new(
            request_limits,
            methods.clone(),
            Some(st.metrics.clone()),
        ));
        // Pings make a live but quiet client answer within the idle timeout
        // (see `tls`); one that does not answer is dropped.
        let ping = self.connections.idle_timeout / 2;
        Server::builder()
            .timeout(std::time::Duration::from_secs(30))
            .max_concurrent_streams(max_streams)
            .http2_keepalive_interval(Some(ping))
            .http2_keepalive_timeout(Some(ping.min(std::time::Duration::from_secs(20))))
            .layer(crate::grpc::admission::AdmissionLayer::new(
                st.registry.clone(),
                Some(budgets),
            ))
            .add_service(health_service)
            .add_service(
                IngestServer::new(ingest).max_decoding_message_size(
                    usize::try_from(methods.releases).unwrap_or(usize::MAX),
                ),
            )
            .add_service(PolicyServer::new(policy))
            .add_service(LedgerServer::new(ledger))
            .add_service(AuditServer::new(audit))
            .add_service(veil_proto::query_server::QueryServer::new(query))
            .add_service(
                veil_proto::federated_server::FederatedServer::new(federated)
                    .max_decoding_message_size(
                        usize::try_from(methods.largest()).unwrap_or(usize::MAX),
                    ),
            )
            .serve_with_incoming_shutdown(
                crate::tls::incoming(self.listener, self.tls, self.connections),
                {
                    // Live streams end at shutdown, or they would hold it up.
                    let hub = st.alerts.clone();
                    async move {
                        shutdown.await;
                        hub.close();
                    }
                },
            )
            .await?;
        for t in web_tasks {
            let _ = t.await;
        }
        // The service is dropped with the server: the committer finishes
        // what was queued (nothing acked is left uncommitted) and stops.
        let _ = committer.await;
        rounds_ticker.abort();
        if let Some(t) = crl_reloader {
            t.abort();
        }
        refusal_auditor.abort();
        alert_task.abort();
        // A final checkpoint covers everything acknowledged.
        if let Err(e) = st.audit.checkpoint(&st.storage, st.now_ms()).await {
            tracing::error!(error = %e, "Final audit checkpoint failed.");
        }
        st.storage.close().await;
        tracing::info!("Aggregator stopped.");
        Ok(())
    }
}

/// Starts the dashboard and metrics listeners; they end when
/// `stop` turns true.
fn spawn_web(
    web: WebListeners,
    st: Arc<State>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(d) = web.dashboard {
        tasks.push(tokio::spawn(crate::dashboard::serve(
            d,
            st.clone(),
            stop.clone(),
        )));
    }
    if let Some(l) = web.metrics {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "Metrics serving (plain HTTP, GET /metrics).");
        }
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let until = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let scrape = move || {
                let st = st.clone();
                async move {
                    crate::metrics::refresh_budget(&st.core, &st.metrics).await;
                    st.metrics.sync_hub(&st.alerts.stats());
                    st.metrics.encode()
                }
            };
            if let Err(e) = crate::metrics::serve(l, scrape, until).await {
                tracing::error!(error = %e, "Metrics listener failed.");
            }
        }));
    }
    tasks
}
