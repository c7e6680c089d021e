//! Veil end-to-end tests: real certificates, real sockets, real SQLite files,
//! real binaries.

mod alert_detection;
mod bench_cli;
mod binaries;
mod federated;
mod ingest;
mod ledger_audit;
mod node_pipeline;
mod query_alerts;
mod refusals;
mod resilience;
