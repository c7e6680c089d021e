//! Veil end-to-end tests: real certificates, real sockets, real SQLite files,
//! real binaries.

mod binaries;
mod ingest;
mod node_pipeline;
mod refusals;
