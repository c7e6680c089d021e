//! `submit_releases`: a SubmitReleases request as the aggregator reads it:
//! the protobuf decode, the batch limit, then per release
//! [`ingest::validate`] against the caller's identity and
//! [`ingest::check_policy`] against the venue's policy (what
//! `grpc/ingest.rs` runs before the committer), and the window-time check
//! the committer adds.
//!
//! The caller is node `node-1` of venue `arena` (the demo's first node);
//! every release is checked under each policy in `policies/`, and under the
//! arena's moved to UTC+09:00 (every example venue is at UTC, so its event
//! day starts after UTC midnight; this one's starts before).
//!
//! Invariants: no input panics; a decoded request re-encodes to bytes that
//! decode to the same encoding; a validated release keeps the caller's
//! identity, its idempotency key and content hash, a window that is whole
//! and within a day, finite values and costs within the cap, and a stream
//! step within its horizon; a release the policy accepts costs exactly what
//! the policy charges.

use std::sync::OnceLock;

use prost::Message;
use veil_aggregator_core::ingest::{self, Limits};
use veil_privacy::policy::LoadedPolicy;
use veil_proto::SubmitReleasesRequest;

/// The caller's venue and node, as its certificate names them.
const VENUE: &str = "arena";
const NODE: &str = "node-1";
/// The aggregator's clock: 2026-12-01T00:00:00Z.
const NOW_MS: i64 = 1_795_996_800_000;

const POLICIES: [&str; 3] = [
    include_str!("../../policies/arena.toml"),
    include_str!("../../policies/conference.toml"),
    include_str!("../../policies/festival.toml"),
];

fn policies() -> &'static [LoadedPolicy] {
    static LOADED: OnceLock<Vec<LoadedPolicy>> = OnceLock::new();
    LOADED.get_or_init(|| {
        let east = POLICIES[0].replace(r#"utc_offset = "+00:00""#, r#"utc_offset = "+09:00""#);
        assert_ne!(east, POLICIES[0], "the arena policy names its UTC offset");
        POLICIES
            .iter()
            .copied()
            .chain([east.as_str()])
            .map(|text| LoadedPolicy::parse(text).expect("the policies parse"))
            .collect()
    })
}

/// Decodes the input as a SubmitReleases request and checks each release.
pub fn submit_releases(data: &[u8]) {
    let Ok(request) = SubmitReleasesRequest::decode(data) else {
        return;
    };
    let encoded = request.encode_to_vec();
    let again = SubmitReleasesRequest::decode(encoded.as_slice()).expect("re-encoded decodes");
    assert_eq!(again.encode_to_vec(), encoded);
    let limits = Limits::default();
    if request.releases.is_empty() || request.releases.len() > limits.max_batch {
        return;
    }
    let prefix = format!("{VENUE}/{NODE}/");
    for policy in policies() {
        for r in &request.releases {
            let stored = match ingest::validate(r, VENUE, NODE, &policy.hash, &limits) {
                Ok(stored) => stored,
                Err(_) => {
                    // A refusal is audited with the release's hash.
                    let _ = ingest::content_sha256(r, VENUE, NODE);
                    continue;
                }
            };
            assert_eq!((stored.venue.as_str(), stored.node.as_str()), (VENUE, NODE));
            assert!(stored.idempotency_key.starts_with(&prefix));
            assert_eq!(stored.idempotency_key, r.idempotency_key);
            assert_eq!(
                stored.content_sha256,
                ingest::content_sha256(r, VENUE, NODE)
            );
            assert_eq!(stored.policy_hash, policy.hash);
            assert!((1..=86_400).contains(&stored.window_len_s));
            assert!(stored.window_start_ms >= 0);
            assert_eq!(
                stored.window_start_ms % (i64::from(stored.window_len_s) * 1000),
                0
            );
            assert!(stored.value.is_finite() && stored.scale.is_finite());
            for cost in [stored.epsilon, stored.rho] {
                assert!(cost.is_finite() && (0.0..=limits.max_release_cost).contains(&cost));
            }
            if let (Some(step), Some(stream)) = (stored.stream_step, &r.stream) {
                assert!(step < stream.horizon);
            }
            let _ = ingest::check_window_time(&stored, NOW_MS, &limits);
            if let Ok(cost) = ingest::check_policy(&stored, policy) {
                assert_eq!((cost.epsilon(), cost.rho()), (stored.epsilon, stored.rho));
            }
        }
    }
}
