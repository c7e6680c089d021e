//! The `veil.v1.Ingest` service: admits a call (node certificate, batch
//! size, policy in force), validates and policy-checks its releases on the
//! caller's task, and hands them to the core's group committer; answers
//! with the acks once they are committed.
//!
//! Admission control: a call is answered `RESOURCE_EXHAUSTED` at once,
//! with nothing stored and a `retry-after-ms` hint in its metadata (and in
//! the message), when `ingest.max_queued_calls` calls already wait for the
//! committer, or when its node has used its `ingest.max_calls_per_node_per_s`
//! (a token bucket holding one second's worth). Nodes treat it as
//! transient and retry with backoff; nothing they sent is lost.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use tonic::{Request, Response, Status};
use veil_aggregator_core::ingest::{
    self, Committer, Job, Refused, check_policy, content_sha256, validate,
};
use veil_privacy::policy::LoadedPolicy;
use veil_proto::{
    AckStatus, Release, ReleaseAck, SubmitReleasesRequest, SubmitReleasesResponse, ingest_server,
};

use super::auth::Authorize as _;
use crate::state::State;

/// The `veil.v1.Ingest` service.
#[derive(Debug, Clone)]
pub struct IngestService {
    pub(crate) state: Arc<State>,
    committer: Committer,
    /// Per node (venue, node): its call-rate bucket.
    buckets: Arc<Mutex<HashMap<(String, String), Bucket>>>,
}

/// A token bucket: tokens left and when they were counted.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl IngestService {
    /// The service and its group committer task (see
    /// [`veil_aggregator_core::ingest::spawn`]); the task ends after the
    /// last clone of the service is dropped and what was queued is
    /// committed. Committed groups are reported to the state's metrics and
    /// alert engine.
    pub fn new(state: Arc<State>) -> (Self, tokio::task::JoinHandle<()>) {
        let (committer, task) = ingest::spawn(state.core.clone(), state.clone());
        (
            Self {
                state,
                committer,
                buckets: Arc::default(),
            },
            task,
        )
    }

    /// Takes a token of `venue/node`'s bucket; `Err(ms)` to wait for one.
    fn take_token(&self, venue: &str, node: &str, rate: f64) -> Result<(), u64> {
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = rate.max(1.0);
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let b = buckets
            .entry((venue.to_owned(), node.to_owned()))
            .or_insert(Bucket {
                tokens: burst,
                at: now,
            });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - b.tokens) / rate) * 1000.0).ceil() as u64)
        }
    }
}

/// `RESOURCE_EXHAUSTED` with a retry hint; nothing of the call was stored.
fn busy(why: &str, retry_ms: u64) -> Status {
    super::status::busy(
        format!("{why}; nothing from this batch was stored, retry in {retry_ms} ms"),
        retry_ms,
    )
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
        if let Err(retry_ms) = self.take_token(&venue, &node, st.limits.max_calls_per_node_per_s) {
            st.metrics.admission_refused("node_rate");
            return Err(busy(
                &format!(
                    "node {venue}/{node} is over ingest.max_calls_per_node_per_s ({})",
                    st.limits.max_calls_per_node_per_s
                ),
                retry_ms,
            ));
        }
        let queued = self.committer.queued();
        if queued >= st.limits.max_queued_calls {
            st.metrics.admission_refused("queue_full");
            return Err(busy(
                &format!(
                    "the aggregator is busy: {queued} calls wait for storage (ingest.max_queued_calls)"
                ),
                250,
            ));
        }
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
                let checked = match validate(r, &venue, &node, &policy.hash, &st.limits) {
                    Ok(s) => match check_policy(&s, &policy) {
                        Ok(cost) => Ok((s, cost)),
                        Err(refusal) => Err(Refused {
                            refusal,
                            release_sha256: s.content_sha256.clone(),
                        }),
                    },
                    Err(refusal) => Err(Refused {
                        refusal,
                        release_sha256: content_sha256(r, &venue, &node),
                    }),
                };
                (ack, checked)
            })
            .collect();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
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
