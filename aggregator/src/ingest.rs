//! The `Ingest` service: validates node releases, stores them durably in one
//! transaction per batch, and acknowledges each item only after commit.
//!
//! The venue and node of every release come from the caller's certificate;
//! the idempotency key must name the same venue and node.

use prost::Message;
use tonic::{Request, Response, Status};
use veil_proto::{
    AckStatus, Mechanism, Release, ReleaseAck, SubmitReleasesRequest, SubmitReleasesResponse,
    ingest_server,
};

use crate::{
    auth::Registry,
    config::IngestConfig,
    policy::{Policies, sha256_hex},
    storage::{Storage, StoreOutcome, StoredRelease},
};

/// The `veil.v1.Ingest` service.
#[derive(Debug, Clone)]
pub struct IngestService {
    pub(crate) registry: Registry,
    pub(crate) policies: Policies,
    pub(crate) storage: Storage,
    pub(crate) limits: IngestConfig,
}

/// Current wall-clock time, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn valid_metric(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Why an item was not accepted: its ack status and reason.
type Refusal = (AckStatus, String);

fn invalid(reason: impl Into<String>) -> Refusal {
    (AckStatus::Invalid, reason.into())
}

/// Validates one release against the caller's identity and the ingest limits.
pub fn validate(
    r: &Release,
    venue: &str,
    node: &str,
    policy_hash: &str,
    limits: &IngestConfig,
) -> Result<StoredRelease, Refusal> {
    let key = &r.idempotency_key;
    if key.is_empty() || key.len() > 256 || !key.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(invalid(
            "idempotency_key must be 1..=256 printable ASCII bytes",
        ));
    }
    let prefix = format!("{venue}/{node}/");
    if !key.starts_with(&prefix) {
        return Err((
            AckStatus::Denied,
            format!(
                "idempotency_key must start with {prefix}: a node submits only its own releases"
            ),
        ));
    }
    if !valid_metric(&r.metric) {
        return Err(invalid("metric must be 1..=64 bytes of [a-z0-9_]"));
    }
    if !crate::identity::valid_name(&r.zone) {
        return Err(invalid("zone must be 1..=64 bytes of [a-z0-9_-]"));
    }
    let w = r
        .window
        .as_ref()
        .ok_or_else(|| invalid("window is required"))?;
    if w.length_s == 0 || w.length_s > 86_400 {
        return Err(invalid("window.length_s must be in 1..=86400"));
    }
    if w.start_ms < 0 || w.start_ms % (i64::from(w.length_s) * 1000) != 0 {
        return Err(invalid(
            "window.start_ms must be >= 0 and a multiple of length_s * 1000",
        ));
    }
    if !r.value.is_finite() {
        return Err(invalid("value must be finite"));
    }
    if !r.scale.is_finite() || r.scale < 0.0 {
        return Err(invalid("scale must be finite and >= 0"));
    }
    let cost = r.cost.unwrap_or_default();
    if !cost.epsilon.is_finite() || cost.epsilon < 0.0 || !cost.rho.is_finite() || cost.rho < 0.0 {
        return Err(invalid("cost.epsilon and cost.rho must be finite and >= 0"));
    }
    let mechanism = Mechanism::try_from(r.mechanism).unwrap_or(Mechanism::Unspecified);
    let shape_ok = match mechanism {
        Mechanism::Unspecified => return Err(invalid("mechanism is required")),
        Mechanism::DiscreteLaplace | Mechanism::LaplaceSum => {
            cost.epsilon > 0.0 && cost.rho == 0.0 && r.scale > 0.0
        }
        Mechanism::DiscreteGaussian | Mechanism::GaussianSum => {
            cost.rho > 0.0 && cost.epsilon == 0.0 && r.scale > 0.0
        }
        Mechanism::NonPersonal => cost.epsilon == 0.0 && cost.rho == 0.0 && r.scale == 0.0,
    };
    if !shape_ok {
        return Err(invalid(format!(
            "mechanism {} does not match its cost/scale (pure: epsilon > 0; zCDP: rho > 0; non-personal: no cost, no noise)",
            mechanism.as_str_name()
        )));
    }
    if matches!(
        mechanism,
        Mechanism::DiscreteLaplace | Mechanism::DiscreteGaussian
    ) && r.value.fract() != 0.0
    {
        return Err(invalid("a count mechanism releases integers"));
    }
    if cost.epsilon > limits.max_release_cost || cost.rho > limits.max_release_cost {
        return Err((
            AckStatus::Denied,
            format!("cost above the per-release cap {}", limits.max_release_cost),
        ));
    }
    if r.purpose.is_empty() || r.purpose.len() > 64 {
        return Err(invalid("purpose must be 1..=64 bytes"));
    }
    if r.policy_hash != policy_hash {
        return Err((
            AckStatus::Denied,
            format!(
                "release made under policy {:?}, but the policy in force is {:?}",
                r.policy_hash, policy_hash
            ),
        ));
    }
    if r.sequence == 0 {
        return Err(invalid("sequence starts at 1"));
    }
    let mut hashed = r.encode_to_vec();
    hashed.extend_from_slice(prefix.as_bytes());
    Ok(StoredRelease {
        idempotency_key: key.clone(),
        content_sha256: sha256_hex(&hashed),
        venue: venue.to_owned(),
        node: node.to_owned(),
        metric: r.metric.clone(),
        zone: r.zone.clone(),
        window_start_ms: w.start_ms,
        window_len_s: w.length_s,
        mechanism: mechanism.as_str_name().to_owned(),
        value: r.value,
        scale: r.scale,
        epsilon: cost.epsilon,
        rho: cost.rho,
        purpose: r.purpose.clone(),
        policy_hash: r.policy_hash.clone(),
        lease_id: r.lease_id.clone(),
        sequence: r.sequence,
    })
}

#[tonic::async_trait]
impl ingest_server::Ingest for IngestService {
    async fn submit_releases(
        &self,
        request: Request<SubmitReleasesRequest>,
    ) -> Result<Response<SubmitReleasesResponse>, Status> {
        let (venue, node) = self.registry.require_node(&request)?;
        let releases = request.into_inner().releases;
        if releases.is_empty() || releases.len() > self.limits.max_batch {
            return Err(Status::invalid_argument(format!(
                "a batch holds 1..={} releases, got {}",
                self.limits.max_batch,
                releases.len()
            )));
        }
        let policy_hash = self.policies.hash(&venue);
        let mut acks: Vec<ReleaseAck> = Vec::with_capacity(releases.len());
        let mut to_store = Vec::new();
        let mut slots = Vec::new();
        for r in &releases {
            match validate(r, &venue, &node, policy_hash, &self.limits) {
                Ok(s) => {
                    slots.push(acks.len());
                    to_store.push(s);
                    acks.push(ReleaseAck {
                        idempotency_key: r.idempotency_key.clone(),
                        status: AckStatus::Unspecified as i32,
                        reason: String::new(),
                    });
                }
                Err((status, reason)) => {
                    tracing::warn!(%venue, %node, reason = %reason, "Release refused.");
                    acks.push(ReleaseAck {
                        idempotency_key: r.idempotency_key.clone(),
                        status: status as i32,
                        reason,
                    });
                }
            }
        }
        if !to_store.is_empty() {
            let outcomes = self
                .storage
                .store_batch(&to_store, now_ms())
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "Storing a batch failed; nothing acknowledged.");
                    Status::unavailable("storage failed; nothing from this batch was stored, retry")
                })?;
            for (slot, outcome) in slots.into_iter().zip(outcomes) {
                let ack = &mut acks[slot];
                match outcome {
                    StoreOutcome::Inserted => ack.status = AckStatus::Accepted as i32,
                    StoreOutcome::Duplicate => ack.status = AckStatus::Duplicate as i32,
                    StoreOutcome::Conflict => {
                        ack.status = AckStatus::Conflict as i32;
                        ack.reason =
                            "idempotency key already stored with different content; original kept"
                                .into();
                    }
                }
            }
        }
        Ok(Response::new(SubmitReleasesResponse { acks }))
    }
}
