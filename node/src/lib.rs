//! # veil-node
//!
//! The edge node: reads sensor events (JSON Lines), validates them, puts
//! identifiers through keyed pseudonyms, aggregates per zone in event-time
//! windows under contribution bounds, releases DP values through
//! `veil-privacy`, keeps them in a durable outbox, and uploads them to the
//! aggregator over mutual TLS.
//!
//! The node is the privacy boundary: raw events and identifiers never leave
//! it, and are never logged.

pub mod bench;
pub mod config;
pub mod evaluate;
pub mod event;
pub mod federated;
pub mod inference;
pub mod input;
pub mod lease;
pub mod metric;
pub mod metrics;
pub mod outbox;
pub mod release;
pub mod run;
pub mod simulate;
pub mod units;
pub mod upload;
pub mod window;

pub use config::Config;
pub use run::{RunReport, run};
