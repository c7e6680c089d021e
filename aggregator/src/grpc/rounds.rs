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
    AdvertiseKeysRequest, FetchGlobalModelRequest, ListModelsRequest, ListModelsResponse,
    ListOpenRoundsRequest, ListOpenRoundsResponse, ModelArtifact, ModelVersion, NeighbourKeys,
    OpenRoundRequest, PullModelRequest, Round, SecureResult, SecureRoundRef, SecureStageAck,
    ShareDelivery, SubmitMaskedInputRequest, SubmitSharesRequest, SubmitUnmaskSharesRequest,
    SubmitUpdateRequest, SubmitUpdateResponse, UnmaskRequest, federated_server::Federated,
    secagg as wire,
};
use veil_secagg::Stage;

use super::{auth::Authorize as _, secure as sec};
use crate::rounds::{
    OpenParams, RoundError, RoundRow, Rounds, SecureOpen, SubmitOutcome, action,
    record_round_event, secure::SecureRounds,
};

/// The `Federated` gRPC service.
#[derive(Debug, Clone)]
pub struct FederatedService {
    rounds: Arc<Rounds>,
    registry: Registry,
    audit: Option<AuditLog>,
    secure: Option<Arc<SecureRounds>>,
}

impl FederatedService {
    /// A service over `rounds`, authorising callers with `registry`.
    pub fn new(rounds: Arc<Rounds>, registry: Registry, audit: Option<AuditLog>) -> Self {
        Self {
            rounds,
            registry,
            audit,
            secure: None,
        }
    }

    /// Runs secure rounds with `secure` (without it, their stages answer
    /// UNAVAILABLE).
    pub fn with_secure(mut self, secure: Option<Arc<SecureRounds>>) -> Self {
        self.secure = secure;
        self
    }

    /// The wire form of `row`, with a secure round's current stage.
    async fn round_proto(&self, row: &RoundRow) -> Round {
        let mut p = row.to_proto();
        if let (Some(params), Some(s)) = (p.secure_params.as_mut(), &self.secure) {
            let stage = s
                .stage(&row.round_id)
                .await
                .unwrap_or(if row.state == "open" {
                    Stage::AdvertiseKeys
                } else {
                    Stage::Done
                });
            params.stage = crate::rounds::secure::stage_name(stage).to_owned();
        }
        p
    }
}

fn wire_err(m: String) -> Status {
    Status::invalid_argument(m)
}

fn status(e: RoundError) -> Status {
    round_status(e)
}

/// A round error as a status (bad input InvalidArgument, unknown NotFound,
/// closed FailedPrecondition, database trouble Unavailable, else Internal).
pub fn round_status(e: RoundError) -> Status {
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
        if r.secure && self.secure.is_none() {
            return Err(Status::failed_precondition(
                "secure rounds are not available on this aggregator (no node CA loaded)",
            ));
        }
        let params = OpenParams {
            model: r.model,
            min_nodes: r.min_nodes,
            clip_norm: r.clip_norm,
            noise_multiplier: r.noise_multiplier,
            local_steps: r.local_steps,
            learning_rate: r.learning_rate,
            deadline: Duration::from_secs(u64::from(r.deadline_s)),
            secure: r.secure.then(|| SecureOpen {
                threshold: (r.threshold > 0).then_some(r.threshold),
                stage_timeout: (r.stage_timeout_s > 0)
                    .then(|| Duration::from_secs(u64::from(r.stage_timeout_s))),
                n_max: u32::try_from(self.registry.node_count()).unwrap_or(u32::MAX),
                target_nodes: (r.target_nodes > 0).then_some(r.target_nodes),
            }),
            event_day: (!r.event_day.is_empty()).then_some(r.event_day),
        };
        let row = self.rounds.open(&params, now_ms()).await.map_err(status)?;
        record_round_event(
            &self.rounds,
            self.audit.as_ref(),
            NewEntry {
                actor: id.spiffe(),
                action: action::ROUND_OPEN,
                allow: true,
                reason: format!(
                    "round {} of {} on event day {}{}",
                    row.round_id,
                    row.model,
                    row.event_day,
                    if row.secure.is_some() {
                        " (secure aggregation)"
                    } else {
                        ""
                    }
                ),
                ..NewEntry::default()
            },
        )
        .await
        .map_err(status)?;
        Ok(Response::new(self.round_proto(&row).await))
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
        let me = veil_secagg::NodeIdentity::new(&venue, &node).ok();
        let mut out = Vec::with_capacity(rounds.len());
        for r in &rounds {
            // A secure round can be joined only while keys are advertised.
            if r.secure.is_some() {
                let joinable = match (&self.secure, &me) {
                    (Some(s), Some(me)) => s.joinable(r, me).await,
                    _ => false,
                };
                if !joinable {
                    continue;
                }
            }
            out.push(self.round_proto(r).await);
        }
        Ok(Response::new(ListOpenRoundsResponse { rounds: out }))
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

    async fn advertise_keys(
        &self,
        req: Request<AdvertiseKeysRequest>,
    ) -> Result<Response<SecureStageAck>, Status> {
        let (peer, leaf) = sec::caller(&self.registry, &req)?;
        let secure = sec::require(&self.secure)?;
        let adv = req
            .into_inner()
            .advertisement
            .ok_or_else(|| Status::invalid_argument("advertisement is missing"))?;
        let adv = wire::advert_from(adv).map_err(wire_err)?;
        let round_id = adv.round.to_string();
        let n = secure
            .advertise(&peer, &leaf, adv, now_ms())
            .await
            .map_err(sec::status)?;
        Ok(Response::new(sec::ack(&round_id, Stage::AdvertiseKeys, n)))
    }

    async fn fetch_neighbour_keys(
        &self,
        req: Request<SecureRoundRef>,
    ) -> Result<Response<NeighbourKeys>, Status> {
        let (peer, _) = sec::caller(&self.registry, &req)?;
        let secure = sec::require(&self.secure)?;
        let round_id = wire::round_id(&req.get_ref().round_id).map_err(wire_err)?;
        let (roster, keys) = secure
            .neighbour_keys(round_id.as_str(), &peer, now_ms())
            .await
            .map_err(sec::status)?;
        Ok(Response::new(NeighbourKeys {
            round_id: round_id.to_string(),
            roster: roster.iter().map(ToString::to_string).collect(),
            keys: keys.iter().map(wire::advert_to).collect(),
        }))
    }

    async fn submit_shares(
        &self,
        req: Request<SubmitSharesRequest>,
    ) -> Result<Response<SecureStageAck>, Status> {
        let (peer, _) = sec::caller(&self.registry, &req)?;
        let secure = sec::require(&self.secure)?;
        let msg = wire::shares_from(&peer, req.into_inner()).map_err(wire_err)?;
        let round_id = msg.round.to_string();
        let n = secure
            .submit_shares(&peer, msg, now_ms())
            .await
            .map_err(sec::status)?;
        Ok(Response::new(sec::ack(&round_id, Stage::ShareKeys, n)))
    }

    async fn fetch_shares(
        &self,
        req: Request<SecureRoundRef>,
    ) -> Result<Response<ShareDelivery>, Status> {
        let (peer, _) = sec::caller(&self.registry, &req)?;
        let secure = sec::require(&self.secure)?;
        let round_id = wire::round_id(&req.get_ref().round_id).map_err(wire_err)?;
        let d = secure
            .fetch_shares(round_id.as_str(), &peer, now_ms())
            .await
            .map_err(sec::status)?;
        Ok(Response::new(wire::delivery_to(&d)))
    }

    async fn submit_masked_input(
        &self,
        req: Request<SubmitMaskedInputRequest>,
    ) -> Result<Response<SecureStageAck>, Status> {
        let (peer, _) = sec::caller(&self.registry, &req)?;
        let secure = sec::require(&self.secure)?;
        let msg = wire::masked_from(&peer, req.into_inner(), None).map_err(wire_err)?;
        let round_id = msg.round.to_string();
        let n = secure
            .submit_masked(&peer, msg, now_ms())
            .await
            .map_err(sec::status)?;
        Ok(Response::new(sec::ack(&round_id, Stage::MaskedInput, n)))
    }

    async fn fetch_unmask_request(
        &self,
        req: Request<SecureRoundRef>,
    ) -> Result<Response<UnmaskRequest>, Status> {
        let (peer, _) = sec::caller(&self.registry, &req)?;
        let secure = sec::require(&self.secure)?;
        let round_id = wire::round_id(&req.get_ref().round_id).map_err(wire_err)?;
        let r = secure
            .fetch_unmask(round_id.as_str(), &peer, now_ms())
            .await
            .map_err(sec::status)?;
        Ok(Response::new(wire::unmask_request_to(&r)))
    }

    async fn submit_unmask_shares(
        &self,
        req: Request<SubmitUnmaskSharesRequest>,
    ) -> Result<Response<SecureStageAck>, Status> {
        let (peer, _) = sec::caller(&self.registry, &req)?;
        let secure = sec::require(&self.secure)?;
        let msg = wire::unmask_from(&peer, req.into_inner()).map_err(wire_err)?;
        let round_id = msg.round.to_string();
        let n = secure
            .submit_unmask(&peer, msg, now_ms())
            .await
            .map_err(sec::status)?;
        Ok(Response::new(sec::ack(&round_id, Stage::Unmask, n)))
    }

    async fn fetch_secure_result(
        &self,
        req: Request<SecureRoundRef>,
    ) -> Result<Response<SecureResult>, Status> {
        sec::caller(&self.registry, &req)?;
        let secure = sec::require(&self.secure)?;
        let round_id = wire::round_id(&req.get_ref().round_id).map_err(wire_err)?;
        let o = secure
            .result(round_id.as_str(), now_ms())
            .await
            .map_err(sec::status)?;
        Ok(Response::new(SecureResult {
            round: Some(self.round_proto(&o.row).await),
            version: o.version.unwrap_or(0),
            contributors: u32::try_from(o.contributors).unwrap_or(u32::MAX),
            dropped: u32::try_from(o.dropped).unwrap_or(u32::MAX),
        }))
    }
}
