//! The `veil.v1.Federated` service: ML principals open rounds and pull
//! models; nodes fetch the global model, list open rounds and submit
//! updates. Every decision is recorded through [`record_round_event`].

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};
use veil_aggregator_core::{
    audit::{AuditLog, NewEntry},
    auth::Registry,
    identity::{Identity, Role},
};
use veil_common::now_ms;
use veil_proto::{
    FetchGlobalModelRequest, ListModelsRequest, ListModelsResponse, ListOpenRoundsRequest,
    ListOpenRoundsResponse, ModelArtifact, ModelVersion, OpenRoundRequest, PullModelRequest, Round,
    SubmitUpdateRequest, SubmitUpdateResponse, federated_server::Federated,
};

use super::auth::Authorize as _;
use crate::rounds::{
    OpenParams, RoundError, RoundRow, Rounds, SubmitOutcome, action, record_round_event,
};

/// The `Federated` gRPC service.
#[derive(Debug, Clone)]
pub struct FederatedService {
    rounds: Arc<Rounds>,
    registry: Registry,
    audit: Option<AuditLog>,
}

impl FederatedService {
    /// A service over `rounds`, authorising callers with `registry`.
    pub fn new(rounds: Arc<Rounds>, registry: Registry, audit: Option<AuditLog>) -> Self {
        Self {
            rounds,
            registry,
            audit,
        }
    }
}

fn status(e: RoundError) -> Status {
    match e {
        RoundError::Invalid(m) => Status::invalid_argument(m),
        RoundError::NotFound(m) => Status::not_found(m),
        RoundError::Closed(m) => Status::failed_precondition(m),
        RoundError::Db(e) if veil_aggregator_core::storage::is_unavailable(&e) => {
            tracing::warn!(error = %e, "Federated call: database unavailable.");
            Status::unavailable("database unavailable, retry")
        }
        other => {
            tracing::error!(error = %other, "Federated call failed.");
            Status::internal("internal error")
        }
    }
}

#[tonic::async_trait]
impl Federated for FederatedService {
    async fn open_round(&self, req: Request<OpenRoundRequest>) -> Result<Response<Round>, Status> {
        let id = self.registry.require_role(&req, &[Role::Ml])?;
        let r = req.into_inner();
        let params = OpenParams {
            model: r.model,
            min_nodes: r.min_nodes,
            clip_norm: r.clip_norm,
            noise_multiplier: r.noise_multiplier,
            local_steps: r.local_steps,
            learning_rate: r.learning_rate,
            deadline: Duration::from_secs(u64::from(r.deadline_s)),
        };
        let row = self.rounds.open(&params, now_ms()).await.map_err(status)?;
        record_round_event(
            &self.rounds,
            self.audit.as_ref(),
            NewEntry {
                actor: id.spiffe(),
                action: action::ROUND_OPEN,
                allow: true,
                reason: format!("round {} of {}", row.round_id, row.model),
                ..NewEntry::default()
            },
        )
        .await
        .map_err(status)?;
        Ok(Response::new(row.to_proto()))
    }

    async fn list_open_rounds(
        &self,
        req: Request<ListOpenRoundsRequest>,
    ) -> Result<Response<ListOpenRoundsResponse>, Status> {
        let (venue, node) = self.registry.require_node(&req)?;
        let rounds = self
            .rounds
            .open_for(&venue, &node, now_ms())
            .await
            .map_err(status)?;
        Ok(Response::new(ListOpenRoundsResponse {
            rounds: rounds.iter().map(RoundRow::to_proto).collect(),
        }))
    }

    async fn fetch_global_model(
        &self,
        req: Request<FetchGlobalModelRequest>,
    ) -> Result<Response<ModelArtifact>, Status> {
        self.registry.require_node(&req)?;
        let round = self
            .rounds
            .round(&req.get_ref().round_id)
            .await
            .map_err(status)?;
        let (weights, card) = self
            .rounds
            .version(&round.model, round.base_version)
            .await
            .map_err(status)?;
        Ok(Response::new(ModelArtifact {
            model: round.model,
            version: round.base_version,
            safetensors: weights,
            card_json: card,
        }))
    }

    async fn submit_update(
        &self,
        req: Request<SubmitUpdateRequest>,
    ) -> Result<Response<SubmitUpdateResponse>, Status> {
        let (venue, node) = self.registry.require_node(&req)?;
        let actor = Identity::Node {
            venue: venue.clone(),
            node: node.clone(),
        }
        .spiffe();
        let r = req.into_inner();
        let outcome = self
            .rounds
            .submit(&r.round_id, &venue, &node, &r.update, now_ms())
            .await
            .map_err(status)?;
        let (accepted, reason) = match &outcome {
            SubmitOutcome::Accepted { participants } => {
                (true, format!("accepted ({participants} so far)"))
            }
            SubmitOutcome::Refused(reason) => (false, reason.clone()),
        };
        if !accepted {
            tracing::warn!(round = %r.round_id, venue = %venue, reason = %reason, "Update refused.");
        }
        record_round_event(
            &self.rounds,
            self.audit.as_ref(),
            NewEntry {
                actor,
                venue,
                action: if accepted {
                    action::ROUND_UPDATE
                } else {
                    action::ROUND_REFUSE
                },
                allow: accepted,
                reason: format!("round {}: {reason}", r.round_id),
                ..NewEntry::default()
            },
        )
        .await
        .map_err(status)?;
        Ok(Response::new(SubmitUpdateResponse { accepted, reason }))
    }

    async fn list_models(
        &self,
        req: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        self.registry.require_role(&req, &[Role::Ml])?;
        let versions = self
            .rounds
            .versions(&req.get_ref().model)
            .await
            .map_err(status)?;
        Ok(Response::new(ListModelsResponse {
            versions: versions
                .into_iter()
                .map(|(version, card_json)| ModelVersion {
                    model: req.get_ref().model.clone(),
                    version,
                    card_json,
                })
                .collect(),
        }))
    }

    async fn pull_model(
        &self,
        req: Request<PullModelRequest>,
    ) -> Result<Response<ModelArtifact>, Status> {
        let id = self.registry.require_role(&req, &[Role::Ml])?;
        let r = req.into_inner();
        let version = if r.version == 0 {
            self.rounds.latest(&r.model).await.map_err(status)?
        } else {
            r.version
        };
        let (weights, card) = self
            .rounds
            .version(&r.model, version)
            .await
            .map_err(status)?;
        record_round_event(
            &self.rounds,
            self.audit.as_ref(),
            NewEntry {
                actor: id.spiffe(),
                action: action::MODEL_PULL,
                allow: true,
                reason: format!("{} version {version}", r.model),
                ..NewEntry::default()
            },
        )
        .await
        .map_err(status)?;
        Ok(Response::new(ModelArtifact {
            model: r.model,
            version,
            safetensors: weights,
            card_json: card,
        }))
    }
}
