//! The gRPC services, one file each, over the shared [`crate::state::State`].
//! They authenticate the caller from its certificate ([`auth`]), call the
//! core or the analytics, and map errors to status ([`status`]); they hold
//! no decisions of their own.

pub mod admission;
pub mod audit;
pub mod auth;
pub mod ingest;
pub mod ledger;
pub mod policy;
pub mod query;
pub mod rounds;
pub mod secure;
pub mod status;
