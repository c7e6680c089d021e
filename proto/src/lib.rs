//! Veil wire protocol, package `veil.v1`: messages and gRPC services generated
//! from `proto/veil/v1/*.proto`. No logic and no I/O live here.
//!
//! Identity is never carried in a message: the aggregator takes it from the
//! caller's verified client certificate.
#![allow(missing_docs)]

/// Generated code for `veil.v1`.
pub mod v1 {
    #![allow(clippy::all, rust_2018_idioms)]
    tonic::include_proto!("veil.v1");
}

pub use v1::*;

pub mod secagg;
