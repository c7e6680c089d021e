//! # veil-aggregator
//!
//! The aggregator receives differentially private releases from venue nodes
//! over mutual-TLS gRPC, checks who is calling from the client certificate
//! only, validates every release, and stores it durably before acknowledging.
//! It never receives raw events or identifiers.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod identity;
pub mod ingest;
pub mod ledger;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod query;
pub mod report;
pub mod rounds;
pub mod server;
pub mod state;
pub mod storage;

pub use config::Config;
pub use server::{Bound, bind};

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "Cannot listen for Ctrl-C.");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "Cannot listen for SIGTERM.");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("Shutdown signal received.");
}
