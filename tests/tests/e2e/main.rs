//! Veil end-to-end tests: real certificates, real sockets, real SQLite files
//! (or PostgreSQL databases with `VEIL_TEST_DATABASE_URL`),
//! real binaries.

mod alert_detection;
mod bench_cli;
mod binaries;
mod dashboard;
mod demo;
mod federated;
mod group_commit;
mod ingest;
mod ledger_audit;
mod node_pipeline;
mod query_alerts;
mod refusals;
mod replicas;
mod request_budgets;
mod resilience;
mod secure_rounds;
mod tls_admission;
