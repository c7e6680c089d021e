//! Group commit: one committer task turns the batches of many concurrent
//! `SubmitReleases` calls into one database transaction (one fsync, one
//! hold of the audit lock), then answers every call.
//!
//! Batching is natural, without a timer: while a group commits, new calls
//! queue; the next group takes everything queued (up to
//! `ingest.group_max_releases`). An idle aggregator therefore commits a
//! lone call at once, and a loaded one amortises each commit over many.
//!
//! Per release the decisions are exactly those of one call at a time, in
//! arrival order: validation and policy (done by the caller's handler,
//! before queueing), duplicate/conflict against stored keys and against
//! earlier releases of the same group, the window-age check, one use of a
//! charged lease; every refusal and every acceptance gets its audit entry.
//! Nothing is acknowledged before the group's transaction commits. If a
//! group's transaction fails and it held more than one call, each call is
//! retried alone, so one bad batch cannot fail its neighbours.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use veil_privacy::{Cost, policy::LoadedPolicy};
use veil_proto::{AckStatus, ReleaseAck};

use super::{Refusal, check_window_time, deny};
use crate::{
    Core, Error,
    audit::{AuditTx, NewEntry, action},
    ledger::{self, LeaseBook},
    storage::StoredRelease,
};

/// Who hears about committed groups (metrics, the alert engine), without
/// the committer knowing them. Called on the committer task: must not wait.
pub trait CommitObserver: Send + Sync + 'static {
    /// A group of `calls` calls holding `releases` releases committed
    /// (not called for the one-by-one retry of a failed group).
    fn group_committed(&self, calls: usize, releases: usize, took: Duration);
    /// Releases a commit stored, after their calls were answered.
    fn releases_stored(&self, releases: Vec<StoredRelease>);
}

/// A release that passed validation and policy, with its cost, or why not.
pub type Checked = Result<(StoredRelease, Cost), Refused>;

/// A release refused before the commit: why, and its content hash (as
/// [`crate::ingest::content_sha256`] computes it) for the audit entry.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Status and reason for the ack.
    pub refusal: Refusal,
    /// SHA-256 of the release as sent (hex).
    pub release_sha256: String,
}

/// One `SubmitReleases` call, validated and waiting for its commit.
#[derive(Debug)]
pub struct Job {
    /// The caller's venue, from its certificate.
    pub venue: String,
    /// The caller's node, from its certificate.
    pub node: String,
    /// The venue's policy in force.
    pub policy: Arc<LoadedPolicy>,
    /// Per release, in the call's order: the acknowledgement skeleton and
    /// either the checked release with its cost or why it was refused.
    pub items: Vec<(ReleaseAck, Checked)>,
    /// Where the acks go once the group committed (or why nothing was).
    pub reply: oneshot::Sender<Result<Vec<ReleaseAck>, Error>>,
}

/// Handle to the committer task: cheap to clone, one per service.
#[derive(Debug, Clone)]
pub struct Committer {
    queue: mpsc::Sender<Job>,
}

impl Committer {
    /// Queues `job`; `Err` only when the committer has stopped.
    pub async fn submit(&self, job: Job) -> Result<(), ()> {
        self.queue.send(job).await.map_err(|_| ())
    }

    /// Calls queued and not yet taken by the committer.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }
}

/// Calls that may wait for the committer; a full queue makes handlers wait
/// (backpressure), never drops anything.
const QUEUE_JOBS: usize = 4096;

/// Starts the committer. It stops when every [`Committer`] is dropped,
/// after committing what was queued.
pub fn spawn(
    core: Arc<Core>,
    observer: Arc<dyn CommitObserver>,
) -> (Committer, tokio::task::JoinHandle<()>) {
    let (queue, rx) = mpsc::channel(QUEUE_JOBS);
    let task = tokio::spawn(run(core, observer, rx));
    (Committer { queue }, task)
}

async fn run(st: Arc<Core>, observer: Arc<dyn CommitObserver>, mut rx: mpsc::Receiver<Job>) {
    let max = st.limits.group_max_releases.max(1);
    let mut carry: Option<Job> = None;
    loop {
        let first = match carry.take() {
            Some(j) => j,
            None => match rx.recv().await {
                Some(j) => j,
                None => break,
            },
        };
        let mut releases = first.items.len();
        let mut jobs = vec![first];
        while releases < max {
            match rx.try_recv() {
                Ok(j) if releases + j.items.len() > max => {
                    carry = Some(j);
                    break;
                }
                Ok(j) => {
                    releases += j.items.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        // A caller that gave up (deadline, cancelled) gets nothing stored:
        // its resend will be judged afresh.
        jobs.retain(|j| !j.reply.is_closed());
        if jobs.is_empty() {
            continue;
        }
        commit_and_answer(&st, observer.as_ref(), jobs).await;
    }
}

async fn commit_and_answer(st: &Core, observer: &dyn CommitObserver, jobs: Vec<Job>) {
    let started = std::time::Instant::now();
    let n_releases: usize = jobs.iter().map(|j| j.items.len()).sum();
    let n_jobs = jobs.len();
    let mut jobs = jobs;
    match commit_group(st, &jobs).await {
        Ok((acks, stored)) => {
            observer.group_committed(n_jobs, n_releases, started.elapsed());
            let committed = take_stored(&mut jobs, &stored);
            for (job, acks) in jobs.into_iter().zip(acks) {
                let _ = job.reply.send(Ok(acks));
            }
            // After the acks, off their path; never waits.
            observer.releases_stored(committed);
        }
        Err(e) if n_jobs > 1 => {
            tracing::warn!(error = %e, calls = n_jobs, "A group commit failed; committing its calls one by one.");
            for mut job in jobs {
                match commit_group(st, std::slice::from_ref(&job)).await {
                    Ok((mut acks, stored)) => {
                        let committed = take_stored(std::slice::from_mut(&mut job), &stored);
                        let _ = job.reply.send(Ok(acks.pop().unwrap_or_default()));
                        observer.releases_stored(committed);
                    }
                    Err(e) => {
                        let _ = job.reply.send(Err(e));
                    }
                }
            }
        }
        Err(e) => {
            if let Some(job) = jobs.into_iter().next() {
                let _ = job.reply.send(Err(e));
            }
        }
    }
    if let Err(e) = st.audit.maybe_checkpoint(&st.storage, st.now_ms()).await {
        tracing::error!(error = %e, "Signing an audit checkpoint failed.");
    }
}

/// Each job's acks, and where the stored releases are: (job, item) indices.
type GroupOutcome = (Vec<Vec<ReleaseAck>>, Vec<(usize, usize)>);

/// Moves the stored releases out of `jobs` (for the alert engine), once
/// their acks are decided.
fn take_stored(jobs: &mut [Job], stored: &[(usize, usize)]) -> Vec<StoredRelease> {
    stored
        .iter()
        .filter_map(|&(j, i)| match &mut jobs[j].items[i].1 {
            Ok((release, _)) => Some(std::mem::take(release)),
            Err(_) => None,
        })
        .collect()
}

/// Decides and stores every release of `jobs` in one transaction; returns
/// each job's acks and the releases stored. On `Err` nothing was stored.
async fn commit_group(st: &Core, jobs: &[Job]) -> Result<GroupOutcome, Error> {
    let now = st.now_ms();
    // A failed group rolls back while the audit lock is still held, so the
    // next transaction (perhaps this group's calls retried one by one)
    // never waits on this one's locks.
    st.storage
        .run_audited(&st.audit, "commit_group", |tx, audit| {
            Box::pin(decide_and_write(st, jobs, audit, tx, now))
        })
        .await
}

/// Everything of [`commit_group`] up to the commit, inside `tx`.
async fn decide_and_write(
    st: &Core,
    jobs: &[Job],
    audit: &mut AuditTx<'_>,
    tx: &mut sqlx::AnyConnection,
    now: i64,
) -> Result<GroupOutcome, Error> {
    // `run_audited` took the audit lock: lease rows after it.

    // What the database already holds for these keys and leases.
    let keys: Vec<&str> = jobs
        .iter()
        .flat_map(|j| j.items.iter())
        .filter_map(|(_, c)| c.as_ref().ok())
        .map(|(s, _)| s.idempotency_key.as_str())
        .collect();
    let stored = crate::storage::existing_many(&mut *tx, &keys).await?;
    let lease_ids: BTreeSet<&str> = jobs
        .iter()
        .flat_map(|j| j.items.iter())
        .filter_map(|(_, c)| c.as_ref().ok())
        .filter(|(_, cost)| !matches!(cost, Cost::Free))
        .map(|(s, _)| s.lease_id.as_str())
        .collect();
    let mut leases = LeaseBook::load(&mut *tx, &lease_ids).await?;

    // Content hash of every key accepted earlier in this group.
    let mut accepted_here: HashMap<&str, &str> = HashMap::new();
    let mut entries: Vec<NewEntry> = Vec::new();
    let mut inserts: Vec<&StoredRelease> = Vec::new();
    let mut stored_at: Vec<(usize, usize)> = Vec::new();
    let mut all_acks = Vec::with_capacity(jobs.len());
    for (j, job) in jobs.iter().enumerate() {
        let (venue, node, policy) = (&job.venue, &job.node, &job.policy);
        let actor = format!("spiffe://veil/venue/{venue}/node/{node}");
        let mut acks = Vec::with_capacity(job.items.len());
        for (i, (skeleton, checked)) in job.items.iter().enumerate() {
            let mut ack = skeleton.clone();
            // The audit entry names the refused release: its idempotency key
            // (venue/node/metric/zone/window: no personal data; only when it
            // is well formed and the caller's own, so a peer cannot write
            // arbitrary text into the log) and its content hash.
            let refuse = |ack: &mut ReleaseAck,
                          entries: &mut Vec<NewEntry>,
                          (status, reason): Refusal,
                          sha256: &str| {
                tracing::warn!(%venue, %node, reason = %reason, "Release refused.");
                let named = match auditable_key(&ack.idempotency_key, venue, node) {
                    Some(key) => format!("release {key} refused: {reason}"),
                    None => format!("release with a malformed key refused: {reason}"),
                };
                let mut e = deny(&actor, venue, action::RELEASE, &named, &policy.hash);
                e.release_sha256 = sha256.to_owned();
                entries.push(e);
                ack.status = status as i32;
                ack.reason = reason;
            };
            let (release, cost) = match checked {
                Ok(v) => v,
                Err(refused) => {
                    refuse(
                        &mut ack,
                        &mut entries,
                        refused.refusal.clone(),
                        &refused.release_sha256,
                    );
                    acks.push(ack);
                    continue;
                }
            };
            let key = release.idempotency_key.as_str();
            let known = accepted_here
                .get(key)
                .copied()
                .or_else(|| stored.get(key).map(String::as_str));
            if let Some(hash) = known {
                if hash == release.content_sha256 {
                    ack.status = AckStatus::Duplicate as i32;
                } else {
                    let reason =
                        "idempotency key already stored with different content; original kept"
                            .to_owned();
                    let mut e = deny(
                        &actor,
                        venue,
                        action::RELEASE_CONFLICT,
                        &reason,
                        &policy.hash,
                    );
                    e.release_sha256 = release.content_sha256.clone();
                    entries.push(e);
                    ack.status = AckStatus::Conflict as i32;
                    ack.reason = reason;
                }
                acks.push(ack);
                continue;
            }
            // After the dedup lookup, so a lost-ack resend of a stored
            // release still gets its DUPLICATE.
            if let Err(refusal) = check_window_time(release, now, &st.limits) {
                refuse(&mut ack, &mut entries, refusal, &release.content_sha256);
                acks.push(ack);
                continue;
            }
            if !matches!(cost, Cost::Free) {
                let day = ledger::release_day(policy, release.window_start_ms);
                if let Err(reason) = leases.take(
                    &release.lease_id,
                    venue,
                    node,
                    &release.metric,
                    &release.purpose,
                    &day,
                    *cost,
                ) {
                    refuse(
                        &mut ack,
                        &mut entries,
                        (AckStatus::Denied, reason),
                        &release.content_sha256,
                    );
                    acks.push(ack);
                    continue;
                }
            }
            entries.push(NewEntry {
                actor: actor.clone(),
                venue: venue.clone(),
                action: action::RELEASE,
                allow: true,
                reason: if matches!(cost, Cost::Free) {
                    format!("{} declared non-personal by policy", release.metric)
                } else {
                    format!("{} charged to lease {}", release.metric, release.lease_id)
                },
                policy_hash: policy.hash.clone(),
                epsilon: release.epsilon,
                rho: release.rho,
                release_sha256: release.content_sha256.clone(),
            });
            accepted_here.insert(key, &release.content_sha256);
            inserts.push(release);
            stored_at.push((j, i));
            ack.status = AckStatus::Accepted as i32;
            acks.push(ack);
        }
        all_acks.push(acks);
    }
    leases.flush(&mut *tx).await?;
    crate::storage::insert_many(&mut *tx, &inserts, now).await?;
    audit.append_many(&mut *tx, entries, now).await?;
    Ok((all_acks, stored_at))
}

/// `key` if it is one an honest node of `venue`/`node` writes (printable
/// ASCII, at most 256 bytes, the caller's own prefix): safe to quote in the
/// audit log.
fn auditable_key<'k>(key: &'k str, venue: &str, node: &str) -> Option<&'k str> {
    let well_formed = !key.is_empty()
        && key.len() <= 256
        && key.bytes().all(|b| (0x21..0x7f).contains(&b))
        && key
            .strip_prefix(venue)
            .and_then(|k| k.strip_prefix('/'))
            .and_then(|k| k.strip_prefix(node))
            .is_some_and(|k| k.starts_with('/'));
    well_formed.then_some(key)
}
