//! # veil-aggregator
//!
//! The aggregator application: the file config ([`config`]), the gRPC
//! services ([`grpc`]), the organizer layer on top of the core (query,
//! alerts, report: read only, spend nothing), federated [`rounds`], the
//! [`dashboard`], Prometheus [`metrics`], the server that composes them ([`server`]),
//! and its listener's client-certificate rules and connection limits ([`tls`]). What decides and writes (identity, policies, ledger, audit
//! log, storage, ingest) is the core crate, `veil-aggregator-core`,
//! re-exported here under its module names.
//!
//! The aggregator receives differentially private releases from venue nodes
//! over mutual-TLS gRPC, checks who is calling from the client certificate
//! only, validates every release, and stores it durably before
//! acknowledging. It never receives raw events or identifiers.

pub use veil_aggregator_core::{audit, auth, identity, ingest, ledger, policy, storage};

pub mod alerts;
pub mod bench;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod grpc;
pub mod metrics;
pub mod pki;
pub mod query;
pub mod report;
pub mod rounds;
pub mod server;
pub mod state;
pub mod tls;

pub use config::Config;
pub use server::{Bound, bind};
pub use veil_common::shutdown_signal;
