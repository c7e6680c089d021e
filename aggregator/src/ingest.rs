//! The `Ingest` service: validates node releases, stores them durably, and
//! acknowledges each item only after commit. Concurrent calls share one
//! transaction per group ([`commit`]): many acks per fsync.
//!
//! The venue and node of every release come from the caller's certificate;
//! the idempotency key must name the same venue and node.

use prost::Message;
use tonic::{Request, Response, Status};
use veil_proto::{
    AckStatus, Mechanism, Release, ReleaseAck, SubmitReleasesRequest, SubmitReleasesResponse,
    ingest_server,
};

use std::sync::Arc;

use veil_privacy::{
    Cost,
    policy::{LoadedPolicy, PolicyMechanism},
};

use crate::{
    audit::NewEntry, config::IngestConfig, ledger, policy::sha256_hex, state::State,
    storage::StoredRelease,
};

mod commit;

/// The `veil.v1.Ingest` service.
#[derive(Debug, Clone)]
pub struct IngestService {
    pub(crate) state: Arc<State>,
    committer: commit::Committer,
}

impl IngestService {
    /// The service and its group committer task (see [`commit`]); the task
    /// ends after the last clone of the service is dropped and what was
    /// queued is committed.
    pub fn new(state: Arc<State>) -> (Self, tokio::task::JoinHandle<()>) {
        let (committer, task) = commit::spawn(state.clone());
        (Self { state, committer }, task)
    }
}

pub(crate) fn valid_metric(s: &str) -> bool {
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

/// Checks a valid release against the venue's policy: the metric must be
/// allowed for its purpose, with the policy's mechanism and exactly the
/// policy's per-release cost; a non-personal claim must be the policy's.
pub fn check_policy(r: &StoredRelease, policy: &LoadedPolicy) -> Result<Cost, Refusal> {
    let denied = |reason: String| (AckStatus::Denied, reason);
    let m = policy.metric(&r.metric).ok_or_else(|| {
        denied(format!(
            "metric `{}` is not allowed by the venue's policy",
            r.metric
        ))
    })?;
    if !m.purposes.iter().any(|p| p == &r.purpose) {
        return Err(denied(format!(
            "purpose `{}` is not allowed for metric `{}`",
            r.purpose, r.metric
        )));
    }
    let expected = match m.mechanism {
        PolicyMechanism::DiscreteLaplace => "MECHANISM_DISCRETE_LAPLACE",
        PolicyMechanism::DiscreteGaussian => "MECHANISM_DISCRETE_GAUSSIAN",
        PolicyMechanism::NonPersonal => "MECHANISM_NON_PERSONAL",
    };
    if r.mechanism != expected {
        return Err(denied(if r.mechanism == "MECHANISM_NON_PERSONAL" {
            format!(
                "metric `{}` is not declared non-personal by the policy",
                r.metric
            )
        } else {
            format!(
                "metric `{}` must use {} under the policy, not {}",
                r.metric, expected, r.mechanism
            )
        }));
    }
    let cost =
        ledger::policy_cost(policy, &r.metric, &r.purpose).map_err(|e| denied(e.to_string()))?;
    if r.epsilon != cost.epsilon() || r.rho != cost.rho() {
        return Err(denied(format!(
            "cost (epsilon {}, rho {}) differs from the policy's per-release cost (epsilon {}, rho {})",
            r.epsilon,
            r.rho,
            cost.epsilon(),
            cost.rho()
        )));
    }
    Ok(cost)
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

/// Refuses a window older than the dedup-key retention
/// (`ingest.max_window_age`) or starting further in the future than
/// `ingest.max_future_skew`, both against the aggregator's clock `now_ms`.
pub fn check_window_time(
    r: &StoredRelease,
    now_ms: i64,
    limits: &IngestConfig,
) -> Result<(), Refusal> {
    let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let end = r
        .window_start_ms
        .saturating_add(i64::from(r.window_len_s).saturating_mul(1000));
    if end < now_ms.saturating_sub(ms(limits.max_window_age)) {
        return Err(invalid(format!(
            "window ended {} s ago, older than the retention of idempotency keys \
             (ingest.max_window_age = {} s): refused so a replay cannot be counted twice",
            (now_ms - end) / 1000,
            limits.max_window_age.as_secs()
        )));
    }
    if r.window_start_ms > now_ms.saturating_add(ms(limits.max_future_skew)) {
        return Err(invalid(format!(
            "window starts {} s in the future, beyond ingest.max_future_skew = {} s: \
             check the node's clock",
            (r.window_start_ms - now_ms) / 1000,
            limits.max_future_skew.as_secs()
        )));
    }
    Ok(())
}

/// A `SubmitReleases` call past its first checks.
pub(crate) struct Admitted {
    /// The caller's venue and node, from its certificate.
    pub venue: String,
    pub node: String,
    /// 1..=`ingest.max_batch` releases, not yet validated.
    pub releases: Vec<Release>,
    /// The venue's policy in force.
    pub policy: Arc<LoadedPolicy>,
}

/// What every `SubmitReleases` call must pass before any release is looked
/// at: a node certificate of a configured venue, a batch of
/// 1..=`ingest.max_batch` releases, and a policy in force for the venue.
pub(crate) fn admit(
    st: &State,
    request: Request<SubmitReleasesRequest>,
) -> Result<Admitted, Status> {
    let (venue, node) = st.registry.require_node(&request)?;
    let releases = request.into_inner().releases;
    if releases.is_empty() || releases.len() > st.limits.max_batch {
        return Err(Status::invalid_argument(format!(
            "a batch holds 1..={} releases, got {}",
            st.limits.max_batch,
            releases.len()
        )));
    }
    let policy = st
        .policies
        .get(&venue)
        .ok_or_else(|| {
            Status::failed_precondition(format!("venue {venue} has no policy in force"))
        })?
        .clone();
    Ok(Admitted {
        venue,
        node,
        releases,
        policy,
    })
}

#[tonic::async_trait]
impl ingest_server::Ingest for IngestService {
    async fn submit_releases(
        &self,
        request: Request<SubmitReleasesRequest>,
    ) -> Result<Response<SubmitReleasesResponse>, Status> {
        let st = &self.state;
        let started = std::time::Instant::now();
        let Admitted {
            venue,
            node,
            releases,
            policy,
        } = admit(st, request)?;
        // Validation and policy checks need no database: done here, on the
        // caller's task, so the committer only decides what needs the
        // stored state (duplicates, leases) and writes.
        let items = releases
            .iter()
            .map(|r| {
                let ack = ReleaseAck {
                    idempotency_key: r.idempotency_key.clone(),
                    status: AckStatus::Unspecified as i32,
                    reason: String::new(),
                };
                let checked = validate(r, &venue, &node, &policy.hash, &st.limits).and_then(|s| {
                    let cost = check_policy(&s, &policy)?;
                    Ok((s, cost))
                });
                (ack, checked)
            })
            .collect();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = commit::Job {
            venue,
            node,
            policy,
            items,
            reply,
        };
        let stopping = || {
            Status::unavailable(
                "the aggregator is stopping; nothing from this batch was stored, retry",
            )
        };
        self.committer.submit(job).await.map_err(|()| stopping())?;
        let acks = match answer.await.map_err(|_| stopping())? {
            Ok(acks) => acks,
            Err(e) => {
                tracing::error!(error = %e, "Storing a batch failed; nothing acknowledged.");
                return Err(Status::unavailable(
                    "storage failed; nothing from this batch was stored, retry",
                ));
            }
        };
        st.metrics.record_acks(&acks, started.elapsed());
        Ok(Response::new(SubmitReleasesResponse { acks }))
    }
}

/// A failure that aborts a whole batch (nothing is acknowledged).
#[derive(Debug, thiserror::Error)]
enum IngestFailure {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditLogError),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
}

/// A deny entry.
pub fn deny(
    actor: &str,
    venue: &str,
    action: &'static str,
    reason: &str,
    policy_hash: &str,
) -> NewEntry {
    NewEntry {
        actor: actor.to_owned(),
        venue: venue.to_owned(),
        action,
        allow: false,
        reason: reason.to_owned(),
        policy_hash: policy_hash.to_owned(),
        ..NewEntry::default()
    }
}
