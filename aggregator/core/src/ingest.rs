//! Ingest of node releases: validation against the caller's identity and
//! the ingest limits, the policy check, and durable storage with one audit
//! entry per decision, each item acknowledged only after commit.
//! Concurrent calls share one transaction per group ([`commit`]): many acks
//! per fsync.
//!
//! The venue and node of every release come from the caller's certificate;
//! the idempotency key must name the same venue and node. Knows nothing of
//! the transport: the gRPC service hands it validated jobs.

use std::time::Duration;

use prost::Message;
use veil_proto::{AckStatus, Mechanism, Release};

use veil_privacy::{
    Cost,
    policy::{LoadedPolicy, PolicyMechanism},
};

use crate::{audit::NewEntry, ledger, policy::sha256_hex, storage::StoredRelease};

mod commit;

pub use commit::{Checked, CommitObserver, Committer, Job, Refused, spawn};
use veil_common::name::valid_metric;

/// Ingest limits (`[ingest]` of the config file, as a plain struct).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most releases in one SubmitReleases call.
    pub max_batch: usize,
    /// Largest accepted per-release epsilon (or rho).
    pub max_release_cost: f64,
    /// Oldest accepted window, by the aggregator's clock: a release whose
    /// window ended longer ago is refused, so a replay cannot outlive the
    /// idempotency keys that would catch it.
    pub max_window_age: Duration,
    /// How far in the future (aggregator's clock) a window may start.
    pub max_future_skew: Duration,
    /// Most releases decided and stored in one group commit across
    /// concurrent calls. A call is never split.
    pub group_max_releases: usize,
    /// Calls waiting for the group committer beyond which a new call is
    /// answered `RESOURCE_EXHAUSTED` with a retry hint instead of waiting.
    pub max_queued_calls: usize,
    /// Calls per second one node may make (a token bucket holding one
    /// second's worth); 0: no limit.
    pub max_calls_per_node_per_s: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            max_release_cost: 10.0,
            max_window_age: Duration::from_secs(400 * 86_400),
            max_future_skew: Duration::from_secs(86_400),
            group_max_releases: 4096,
            max_queued_calls: 1024,
            max_calls_per_node_per_s: 0.0,
        }
    }
}

/// Why an item was not accepted: its ack status and reason.
pub type Refusal = (AckStatus, String);

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
        PolicyMechanism::ContinualSqrt => "MECHANISM_CONTINUAL_SQRT",
        PolicyMechanism::ContinualTree => "MECHANISM_CONTINUAL_TREE",
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
    if let Some(step) = r.stream_step {
        // The node numbers a stream's windows from the start of the event
        // day the policy defines; a step that disagrees with the window
        // would put the release at another point of the stream's noise.
        // The start is reduced to its day before the offset is added: a
        // peer may send any start up to i64::MAX, and a venue east of UTC
        // has a positive offset (same index: the remainder commutes with
        // the addition).
        const DAY_MS: i64 = 86_400_000;
        let offset_ms = i64::from(policy.event_day_offset_seconds()) * 1000;
        // Validation refuses a zero-length window before this point;
        // the check stays closed if that ever changes.
        let expected = (r.window_start_ms.rem_euclid(DAY_MS) + offset_ms)
            .rem_euclid(DAY_MS)
            .checked_div(i64::from(r.window_len_s) * 1000)
            .ok_or_else(|| invalid("window length must be positive"))?;
        if i64::from(step) != expected {
            return Err(invalid(format!(
                "stream.step {step} is not the window's index in its event day under the policy ({expected})"
            )));
        }
    }
    Ok(cost)
}

/// The content hash of a release as `venue`/`node` sent it (hex SHA-256 of
/// its protobuf encoding and the caller's `venue/node/` prefix): what
/// duplicates are compared by and audit entries name.
pub fn content_sha256(r: &Release, venue: &str, node: &str) -> String {
    let mut hashed = r.encode_to_vec();
    hashed.extend_from_slice(format!("{venue}/{node}/").as_bytes());
    sha256_hex(&hashed)
}

/// Validates one release against the caller's identity and the ingest limits.
pub fn validate(
    r: &Release,
    venue: &str,
    node: &str,
    policy_hash: &str,
    limits: &Limits,
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
    if !veil_common::name::valid_name(&r.zone) {
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
        Mechanism::ContinualSqrt | Mechanism::ContinualTree => {
            cost.rho > 0.0 && cost.epsilon == 0.0 && r.scale > 0.0
        }
    };
    if !shape_ok {
        return Err(invalid(format!(
            "mechanism {} does not match its cost/scale (pure: epsilon > 0; zCDP: rho > 0; non-personal: no cost, no noise)",
            mechanism.as_str_name()
        )));
    }
    let continual = matches!(
        mechanism,
        Mechanism::ContinualSqrt | Mechanism::ContinualTree
    );
    match (&r.stream, continual) {
        (Some(s), true) => {
            if u64::from(s.horizon) * u64::from(w.length_s) != 86_400 {
                return Err(invalid(
                    "stream.horizon must be the windows in one event day (86400 / window.length_s)",
                ));
            }
            if s.step >= s.horizon {
                return Err(invalid("stream.step must be below stream.horizon"));
            }
        }
        (None, true) => {
            return Err(invalid(
                "a continual-release running total needs its stream step",
            ));
        }
        (Some(_), false) => {
            return Err(invalid(
                "only continual-release mechanisms carry a stream step",
            ));
        }
        (None, false) => {}
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
    Ok(StoredRelease {
        idempotency_key: key.clone(),
        content_sha256: content_sha256(r, venue, node),
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
        stream_step: r.stream.as_ref().map(|s| s.step),
        sequence: r.sequence,
    })
}

/// Refuses a window older than the dedup-key retention
/// (`ingest.max_window_age`) or starting further in the future than
/// `ingest.max_future_skew`, both against the aggregator's clock `now_ms`.
pub fn check_window_time(r: &StoredRelease, now_ms: i64, limits: &Limits) -> Result<(), Refusal> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn arena() -> LoadedPolicy {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../policies/arena.toml"
        ))
        .expect("arena policy");
        LoadedPolicy::parse(&text).expect("arena policy parses")
    }

    /// An occupancy running total of the arena (event day from 06:00 UTC,
    /// one-minute windows) at `window_start_ms` with stream step `step`.
    fn occupancy(policy: &LoadedPolicy, window_start_ms: i64, step: u32) -> StoredRelease {
        let m = policy.metric("occupancy").expect("occupancy metric");
        StoredRelease {
            metric: "occupancy".into(),
            zone: "floor".into(),
            window_start_ms,
            window_len_s: 60,
            mechanism: "MECHANISM_CONTINUAL_SQRT".into(),
            rho: m.rho.unwrap_or_default(),
            purpose: m.purposes[0].clone(),
            stream_step: Some(step),
            ..StoredRelease::default()
        }
    }

    /// A window at the end of time under a venue east of UTC (its event day
    /// offset is positive): the step check must refuse it, not overflow.
    #[test]
    fn a_window_at_the_end_of_time_is_refused_without_overflow() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../policies/arena.toml"
        ))
        .expect("arena policy")
        .replace(r#"utc_offset = "+00:00""#, r#"utc_offset = "+09:00""#);
        let policy = LoadedPolicy::parse(&text).expect("the arena policy at UTC+09:00 parses");
        assert_eq!(policy.event_day_offset_seconds(), 3 * 3600);
        let last = i64::MAX - i64::MAX % 60_000;
        let expected = (last % 86_400_000 + 3 * 3_600_000) % 86_400_000 / 60_000;
        let step = u32::try_from(expected).expect("a step of the day");
        assert!(check_policy(&occupancy(&policy, last, step), &policy).is_ok());
        let (status, reason) = check_policy(&occupancy(&policy, last, step + 1), &policy)
            .expect_err("a wrong step is refused");
        assert_eq!(status, AckStatus::Invalid);
        assert!(reason.contains("stream.step"), "{reason}");
    }

    /// The step check divides by the window length: a zero-length window
    /// that reached it would be refused, not divide by zero.
    #[test]
    fn a_zero_length_window_is_refused_by_the_step_check() {
        let policy = arena();
        let mut r = occupancy(&policy, 1_780_293_600_000, 0);
        r.window_len_s = 0;
        let (status, reason) = check_policy(&r, &policy).expect_err("refused");
        assert_eq!(status, AckStatus::Invalid);
        assert!(reason.contains("window length"), "{reason}");
    }

    #[test]
    fn a_stream_step_must_be_the_windows_index_in_its_event_day() {
        let policy = arena();
        // 2026-06-01T06:00Z opens the event day: step 0. 18:30 is step 750.
        let day_start = 1_780_293_600_000;
        assert!(check_policy(&occupancy(&policy, day_start, 0), &policy).is_ok());
        let evening = day_start + 750 * 60_000;
        assert!(check_policy(&occupancy(&policy, evening, 750), &policy).is_ok());
        // 02:00 the next morning still belongs to the same event day.
        let night = day_start + 20 * 3_600_000;
        assert!(check_policy(&occupancy(&policy, night, 1200), &policy).is_ok());
        for (start, step) in [
            (evening, 749),
            (evening, 751),
            (night, 1200 - 360),
            (day_start, 1440),
        ] {
            let (status, reason) = check_policy(&occupancy(&policy, start, step), &policy)
                .expect_err("a wrong step is refused");
            assert_eq!(status, AckStatus::Invalid);
            assert!(reason.contains("stream.step"), "{reason}");
        }
    }
}
