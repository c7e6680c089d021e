//! Who may not submit: no certificate, a foreign CA, an unknown identity,
//! a role, or a node speaking for another node. Nothing is stored for any.

use veil_proto::{AckStatus, SubmitReleasesRequest, ingest_client::IngestClient};
use veil_tests::{TestEnv, channel_with, release};

async fn submit_refused(channel: Result<tonic::transport::Channel, tonic::transport::Error>) {
    // A refused handshake may surface at connect or on the first call
    // (as Unknown/Cancelled/Unavailable): either way it must be refused.
    let Ok(channel) = channel else { return };
    let result = IngestClient::new(channel)
        .submit_releases(SubmitReleasesRequest {
            releases: vec![release("node-1", "occupancy", 60_000, 1.0, 1)],
        })
        .await;
    assert!(result.is_err(), "call was accepted: {result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_refused() {
    let env = TestEnv::start().await;
    submit_refused(env.channel(None).await).await;
    assert_eq!(env.storage.count_releases().await.expect("count"), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_from_foreign_ca_is_refused() {
    let env = TestEnv::start().await;
    let foreign = tempfile::tempdir().expect("tempdir");
    veil_aggregator::pki::init(foreign.path(), "arena", 1).expect("foreign pki");
    // Trusts the real server CA, presents a node-1 certificate from another CA.
    let ch = channel_with(
        &env.endpoint(),
        &env.pki.join("ca.pem"),
        Some((
            foreign.path().join("node-1.pem"),
            foreign.path().join("node-1.key"),
        )),
    )
    .await;
    submit_refused(ch).await;
    assert_eq!(env.storage.count_releases().await.expect("count"), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_certificate_with_unknown_identity_is_permission_denied() {
    let env = TestEnv::start().await;
    // node-3 has a certificate from the right CA but is not registered.
    let mut client = IngestClient::new(env.channel(Some("node-3")).await.expect("connect"));
    let err = client
        .submit_releases(SubmitReleasesRequest {
            releases: vec![release("node-3", "occupancy", 60_000, 1.0, 1)],
        })
        .await
        .expect_err("unknown identity");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("not registered"),
        "{}",
        err.message()
    );
    assert_eq!(env.storage.count_releases().await.expect("count"), 0);
    // The refusal is an audit entry naming the refused identity.
    let mut audited = false;
    for _ in 0..50 {
        let export = env
            .audit
            .export(&env.storage, None, 0)
            .await
            .expect("export");
        if export.entries_jsonl.lines().any(|l| {
            l.contains("\"action\":\"auth\"")
                && l.contains("\"decision\":\"deny\"")
                && l.contains("spiffe://veil/venue/arena/node/node-3")
        }) {
            audited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(audited, "the refusal of node-3 is audited");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_certificate_may_not_submit_releases() {
    let env = TestEnv::start().await;
    let mut client = IngestClient::new(env.channel(Some("compliance")).await.expect("connect"));
    let err = client
        .submit_releases(SubmitReleasesRequest {
            releases: vec![release("node-1", "occupancy", 60_000, 1.0, 1)],
        })
        .await
        .expect_err("role");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert_eq!(env.storage.count_releases().await.expect("count"), 0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_cannot_submit_on_behalf_of_another_node() {
    let env = TestEnv::start().await;
    let mut client = IngestClient::new(env.channel(Some("node-1")).await.expect("connect"));
    let resp = client
        .submit_releases(SubmitReleasesRequest {
            releases: vec![release("node-2", "occupancy", 60_000, 1.0, 1)],
        })
        .await
        .expect("call")
        .into_inner();
    assert_eq!(resp.acks[0].status, AckStatus::Denied as i32);
    assert!(
        resp.acks[0].reason.contains("arena/node-1/"),
        "{}",
        resp.acks[0].reason
    );
    assert_eq!(env.storage.count_releases().await.expect("count"), 0);
    env.stop().await;
}

/// A refused release's audit entry names what was refused: its idempotency
/// key and its content hash, so a compliance officer can match it to what
/// the node sent; a key that is not the caller's own is not quoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_releases_are_audited_with_key_and_hash() {
    let env = TestEnv::start().await;
    let mut client = IngestClient::new(env.channel(Some("node-1")).await.expect("connect"));
    // No lease: refused at the commit. Bad zone: refused at validation.
    // Another node's key: refused, its key not quoted.
    let no_lease = release("node-1", "occupancy", 60_000, 1.0, 1);
    let mut bad_zone = release("node-1", "occupancy", 120_000, 1.0, 2);
    bad_zone.zone = "Floor!".into();
    bad_zone.idempotency_key = "arena/node-1/occupancy/bad-zone/120000/0".into();
    let foreign = release("node-2", "occupancy", 180_000, 1.0, 3);
    let sent = [no_lease.clone(), bad_zone.clone(), foreign.clone()];
    let acks = client
        .submit_releases(SubmitReleasesRequest {
            releases: sent.to_vec(),
        })
        .await
        .expect("call")
        .into_inner()
        .acks;
    assert!(
        acks.iter().all(|a| a.status != AckStatus::Accepted as i32),
        "{acks:?}"
    );
    let export = env
        .audit
        .export(&env.storage, None, 0)
        .await
        .expect("export");
    let denied: Vec<serde_json::Value> = export
        .entries_jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("entry json"))
        .filter(|e: &serde_json::Value| e["action"] == "release" && e["decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), 3, "{}", export.entries_jsonl);
    for (entry, r) in denied.iter().zip(&sent) {
        let sha = veil_aggregator::ingest::content_sha256(r, "arena", "node-1");
        assert_eq!(entry["release_sha256"], sha.as_str(), "{entry}");
        assert_eq!(sha.len(), 64);
    }
    let reason = |i: usize| denied[i]["reason"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason(0).contains(&format!("release {} refused", no_lease.idempotency_key)),
        "{}",
        reason(0)
    );
    assert!(
        reason(1).contains(&bad_zone.idempotency_key) && reason(1).contains("zone"),
        "{}",
        reason(1)
    );
    assert!(
        !reason(2).contains(&foreign.idempotency_key) && reason(2).contains("malformed key"),
        "{}",
        reason(2)
    );
    env.stop().await;
}
