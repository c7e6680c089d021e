//! The `veil.v1.Ledger` service: budget leases for nodes (charged and
//! audited in one transaction before any noise is drawn) and budget
//! reports for nodes, compliance and organizers.

use std::sync::Arc;

use veil_aggregator_core::{
    Error,
    audit::{NewEntry, action},
    identity::{Identity, Role},
    ingest::deny,
    ledger::{LeaseRequest, acquire, day_of, report, valid_day},
};
use veil_privacy::{Cost, Epsilon, Rho};

use super::{auth::Authorize as _, status::ledger_status};
use crate::state::State;

/// The `veil.v1.Ledger` service.
#[derive(Debug, Clone)]
pub struct LedgerService {
    pub(crate) state: Arc<State>,
}

fn new_lease_id() -> Result<String, tonic::Status> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| tonic::Status::internal("no randomness for a lease id"))?;
    Ok(hex::encode(b))
}

#[tonic::async_trait]
impl veil_proto::ledger_server::Ledger for LedgerService {
    async fn acquire_lease(
        &self,
        request: tonic::Request<veil_proto::AcquireLeaseRequest>,
    ) -> Result<tonic::Response<veil_proto::Lease>, tonic::Status> {
        let st = &self.state;
        let (venue, node) = st.registry.require_node(&request)?;
        let r = request.into_inner();
        let policy = st
            .policies
            .get(&venue)
            .ok_or_else(|| {
                tonic::Status::failed_precondition(format!("venue {venue} has no policy in force"))
            })?
            .clone();
        let c = r.cost_per_release.unwrap_or_default();
        let cost = match (c.epsilon > 0.0, c.rho > 0.0) {
            (true, false) => Epsilon::new(c.epsilon).map(Cost::Pure),
            (false, true) => Rho::new(c.rho).map(Cost::Zcdp),
            _ => {
                return Err(tonic::Status::invalid_argument(
                    "cost_per_release needs exactly one of epsilon > 0 or rho > 0",
                ));
            }
        }
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let req = LeaseRequest {
            venue: venue.clone(),
            node: node.clone(),
            day: r.day.clone(),
            metric: r.metric.clone(),
            purpose: r.purpose.clone(),
            cost,
            releases: r.releases,
            policy_hash: r.policy_hash.clone(),
            stream: r.stream.map(|s| (s.horizon, s.zones)),
        };
        let actor = format!("spiffe://veil/venue/{venue}/node/{node}");
        let now = st.now_ms();
        let lease_id = new_lease_id()?;
        let committed = st
            .storage
            .run_audited(&st.audit, "acquire_lease", |tx, audit| {
                let (req, policy) = (&req, &policy);
                Box::pin(async move {
                    let outcome = acquire(tx, req, policy, lease_id, now).await;
                    let entry = match &outcome {
                        Ok(g) => NewEntry {
                            actor,
                            venue: venue.clone(),
                            action: action::LEASE,
                            allow: true,
                            reason: match req.stream {
                                Some((horizon, zones)) => format!(
                                    "stream lease: {} on {} for {}, {zones} zone(s) x {horizon} windows, whole event day charged once per attendee (lease {})",
                                    req.metric, req.day, req.purpose, g.lease_id
                                ),
                                None => format!(
                                    "{} releases of {} for {} on {} (lease {})",
                                    req.releases, req.metric, req.purpose, req.day, g.lease_id
                                ),
                            },
                            policy_hash: policy.hash.clone(),
                            epsilon: g.epsilon,
                            rho: g.rho,
                            release_sha256: String::new(),
                        },
                        Err(e) => deny(&actor, &venue, action::LEASE, &e.to_string(), &policy.hash),
                    };
                    audit.append(tx, entry, now).await?;
                    Ok::<_, Error>(outcome)
                })
            })
            .await;
        let outcome = match committed {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(error = %e, "Ledger transaction failed; no lease granted.");
                return Err(tonic::Status::unavailable(
                    "ledger unavailable; no lease granted, retry",
                ));
            }
        };
        let _ = st.audit.maybe_checkpoint(&st.storage, now).await;
        match outcome {
            Ok(g) => Ok(tonic::Response::new(veil_proto::Lease {
                lease_id: g.lease_id,
                day: req.day,
                cost_per_release: Some(veil_proto::PrivacyCost {
                    epsilon: cost.epsilon(),
                    rho: cost.rho(),
                }),
                releases: req.releases,
                remaining_epsilon: g.remaining_epsilon,
            })),
            Err(e) => Err(ledger_status(e)),
        }
    }

    async fn get_budget(
        &self,
        request: tonic::Request<veil_proto::GetBudgetRequest>,
    ) -> Result<tonic::Response<veil_proto::BudgetReport>, tonic::Status> {
        let st = &self.state;
        let id = st.registry.identify(&request)?;
        let r = request.into_inner();
        let venue = match &id {
            Identity::Node { venue, .. } => venue.clone(),
            Identity::Role {
                role: Role::Compliance | Role::Organizer,
                ..
            } => {
                if !st.registry.may_see_venue(&id, &r.venue) {
                    return Err(tonic::Status::permission_denied(format!(
                        "{id} may not see venue {}",
                        r.venue
                    )));
                }
                r.venue.clone()
            }
            Identity::Role { .. } => {
                return Err(tonic::Status::permission_denied(format!(
                    "{id} may not call this: requires a node, compliance or organizer"
                )));
            }
        };
        let day = if r.day.is_empty() {
            day_of(st.now_ms())
        } else {
            r.day
        };
        if !valid_day(&day) {
            return Err(tonic::Status::invalid_argument("day must be YYYY-MM-DD"));
        }
        let rep = report(
            st.storage.reads(),
            &venue,
            &day,
            st.policies.get(&venue).map(|p| p.as_ref()),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "Budget report failed.");
            tonic::Status::unavailable("ledger unavailable")
        })?;
        Ok(tonic::Response::new(veil_proto::BudgetReport {
            venue: rep.venue,
            day: rep.day,
            budget_epsilon: rep.budget_epsilon,
            delta: rep.delta,
            spent_epsilon: rep.spent_epsilon,
            remaining_epsilon: rep.remaining_epsilon,
            lines: rep
                .lines
                .into_iter()
                .map(|(metric, purpose, epsilon, rho)| veil_proto::BudgetLine {
                    metric,
                    purpose,
                    epsilon,
                    rho,
                })
                .collect(),
        }))
    }
}
