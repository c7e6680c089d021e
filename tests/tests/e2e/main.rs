//! Veil end-to-end tests: real certificates, real sockets, real SQLite files,
//! real binaries.

mod bench_cli;
mod binaries;
mod dashboard;
mod federated;
mod ingest;
mod ledger_audit;
mod node_pipeline;
mod refusals;
mod resilience;
