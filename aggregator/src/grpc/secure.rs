//! The secure-round stages of `veil.v1.Federated` (see
//! [`crate::rounds::secure`]): the caller's identity from its certificate,
//! and the one mapping of [`SecureError`] to gRPC status. Wire messages are
//! converted and checked by [`veil_proto::secagg`]; a conversion refusal is
//! INVALID_ARGUMENT naming the field.

use tonic::{Request, Status};
use veil_aggregator_core::auth::Registry;
use veil_proto as pb;
use veil_secagg::{NodeIdentity, SecAggError};

use super::auth::Authorize as _;
use crate::rounds::secure::{SecureError, SecureRounds, stage_name};

/// `e` as a status naming what was wrong.
pub fn status(e: SecureError) -> Status {
    match e {
        SecureError::Protocol(p) => protocol_status(p),
        SecureError::Invalid(m) => Status::invalid_argument(m),
        SecureError::NotSecure(m) | SecureError::Failed(m) => Status::failed_precondition(m),
        SecureError::StillOpen(m) | SecureError::Elsewhere(m) => Status::unavailable(m),
        SecureError::Denied(m) => Status::permission_denied(m),
        SecureError::Round(e) => super::rounds::round_status(e),
    }
}

fn protocol_status(e: SecAggError) -> Status {
    let m = e.to_string();
    match e {
        SecAggError::Replay { .. } => Status::already_exists(m),
        SecAggError::WrongSender { .. } => Status::permission_denied(m),
        SecAggError::WrongStage { .. }
        | SecAggError::NotParticipant { .. }
        | SecAggError::TooFewNodes { .. }
        | SecAggError::NotEnoughShares { .. }
        | SecAggError::UnsafeUnmaskRequest { .. } => Status::failed_precondition(m),
        SecAggError::InvalidParameter { .. }
        | SecAggError::WouldOverflow { .. }
        | SecAggError::WrongRound { .. }
        | SecAggError::WrongShape { .. }
        | SecAggError::OutOfRange { .. }
        | SecAggError::BadAdvertisement { .. }
        | SecAggError::BadShareCiphertext { .. }
        | SecAggError::InconsistentShares { .. }
        | SecAggError::WeakKey { .. } => Status::invalid_argument(m),
        other => {
            tracing::error!(error = %other, "Secure round failed.");
            Status::internal("internal error")
        }
    }
}

/// The calling node's identity (from its certificate) and its leaf
/// certificate.
pub fn caller<T>(registry: &Registry, req: &Request<T>) -> Result<(NodeIdentity, Vec<u8>), Status> {
    let (venue, node) = registry.require_node(req)?;
    let id = NodeIdentity::new(&venue, &node)
        .map_err(|e| Status::permission_denied(format!("node identity: {e}")))?;
    let leaf = req
        .peer_certs()
        .and_then(|c| c.first().map(|c| c.as_ref().to_vec()))
        .unwrap_or_default();
    Ok((id, leaf))
}

/// The acknowledgement of a stage message.
pub fn ack(round_id: &str, stage: veil_secagg::Stage, received: u32) -> pb::SecureStageAck {
    pb::SecureStageAck {
        round_id: round_id.to_owned(),
        stage: stage_name(stage).to_owned(),
        received,
    }
}

/// The service's secure rounds, or UNAVAILABLE when this aggregator has
/// none (no node CA loaded).
pub fn require(secure: &Option<std::sync::Arc<SecureRounds>>) -> Result<&SecureRounds, Status> {
    secure
        .as_deref()
        .ok_or_else(|| Status::unavailable("secure rounds are not available on this aggregator"))
}
