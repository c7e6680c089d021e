//! The gRPC server: tonic over rustls with client certificates required,
//! health service, graceful shutdown.

use std::{future::Future, net::SocketAddr};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity as TlsIdentity, Server, ServerTlsConfig};
use veil_proto::{ingest_server::IngestServer, policy_server::PolicyServer};

use crate::{
    auth::Registry,
    config::Config,
    ingest::IngestService,
    policy::{Policies, PolicyService},
    storage::Storage,
};

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
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
    Storage(#[from] crate::storage::StorageError),
    /// Binding the listener failed.
    #[error("binding {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A bound, not yet serving aggregator.
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    tls: ServerTlsConfig,
    storage: Storage,
    registry: Registry,
    policies: Policies,
    config: Config,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn read(cfg: &Config, what: &'static str, p: &std::path::Path) -> Result<Vec<u8>, ServerError> {
    let path = cfg.resolve(p);
    std::fs::read(&path).map_err(|source| ServerError::Tls {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Opens storage, loads TLS material and policies, binds the listener.
pub async fn bind(config: Config) -> Result<Bound, ServerError> {
    let ca = read(&config, "CA certificate", &config.tls.ca)?;
    let cert = read(&config, "server certificate", &config.tls.cert)?;
    let key = read(&config, "server key", &config.tls.key)?;
    let tls = ServerTlsConfig::new()
        .identity(TlsIdentity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(ca))
        .client_auth_optional(false);
    let policies = Policies::load(&config).map_err(ServerError::Policy)?;
    let storage = Storage::open(&config.database_url()).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let registry = Registry::from_config(&config);
    Ok(Bound {
        listener,
        addr,
        tls,
        storage,
        registry,
        policies,
        config,
    })
}

impl Bound {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The storage handle.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls and
    /// closes the database.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let ingest = IngestService {
            registry: self.registry.clone(),
            policies: self.policies.clone(),
            storage: self.storage.clone(),
            limits: self.config.ingest.clone(),
        };
        let policy = PolicyService {
            registry: self.registry.clone(),
            policies: self.policies.clone(),
        };
        health_reporter
            .set_serving::<IngestServer<IngestService>>()
            .await;
        health_reporter
            .set_serving::<PolicyServer<PolicyService>>()
            .await;
        tracing::info!(addr = %self.addr, "Aggregator serving.");
        Server::builder()
            .tls_config(self.tls)?
            .timeout(std::time::Duration::from_secs(30))
            .add_service(health_service)
            .add_service(IngestServer::new(ingest))
            .add_service(PolicyServer::new(policy))
            .serve_with_incoming_shutdown(TcpListenerStream::new(self.listener), shutdown)
            .await?;
        self.storage.close().await;
        tracing::info!("Aggregator stopped.");
        Ok(())
    }
}
