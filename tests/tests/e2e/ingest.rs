//! Ingest over mTLS: storing, per-item acks, duplicates and conflicts.

use veil_proto::{AckStatus, SubmitReleasesRequest, ingest_client::IngestClient};
use veil_tests::{TestEnv, lease, release_with_lease};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_release_is_stored_and_acknowledged() {
    let env = TestEnv::start().await;
    let ch = env.channel(Some("node-1")).await.expect("connect");
    let lease_id = lease(ch.clone(), "occupancy", 1).await.expect("lease");
    let mut client = IngestClient::new(ch);
    let resp = client
        .submit_releases(SubmitReleasesRequest {
            releases: vec![release_with_lease(
                "node-1",
                "occupancy",
                60_000,
                42.0,
                1,
                &lease_id,
            )],
        })
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(resp.acks.len(), 1);
    assert_eq!(
        resp.acks[0].status,
        AckStatus::Accepted as i32,
        "{:?}",
        resp.acks[0]
    );
    let stored = env
        .storage
        .releases_for_venue("arena")
        .await
        .expect("query");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].node, "node-1");
    assert_eq!(stored[0].value, 42.0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_is_acknowledged_once_and_conflict_keeps_original() {
    let env = TestEnv::start().await;
    let ch = env.channel(Some("node-1")).await.expect("connect");
    let lease_id = lease(ch.clone(), "ingress", 3).await.expect("lease");
    let mut client = IngestClient::new(ch);
    let r = release_with_lease("node-1", "ingress", 120_000, 7.0, 1, &lease_id);
    let submit = |rs| SubmitReleasesRequest { releases: rs };
    let first = client
        .submit_releases(submit(vec![r.clone()]))
        .await
        .expect("first")
        .into_inner();
    assert_eq!(first.acks[0].status, AckStatus::Accepted as i32);
    let again = client
        .submit_releases(submit(vec![r.clone()]))
        .await
        .expect("again")
        .into_inner();
    assert_eq!(again.acks[0].status, AckStatus::Duplicate as i32);
    let mut changed = r.clone();
    changed.value = 8.0;
    let conflict = client
        .submit_releases(submit(vec![changed]))
        .await
        .expect("conflict")
        .into_inner();
    assert_eq!(conflict.acks[0].status, AckStatus::Conflict as i32);
    let stored = env
        .storage
        .releases_for_venue("arena")
        .await
        .expect("query");
    assert_eq!(stored.len(), 1, "no second row");
    assert_eq!(stored[0].value, 7.0, "original kept");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_items_are_refused_with_reasons_and_valid_ones_kept() {
    let env = TestEnv::start().await;
    let ch = env.channel(Some("node-1")).await.expect("connect");
    let l = lease(ch.clone(), "occupancy", 5).await.expect("lease");
    let mut client = IngestClient::new(ch);
    let release = |node: &str, metric: &str, w: i64, v: f64, seq: u64| {
        release_with_lease(node, metric, w, v, seq, &l)
    };
    let good = release("node-1", "occupancy", 60_000, 10.0, 1);
    let mut nan = release("node-1", "occupancy", 120_000, f64::NAN, 2);
    nan.value = f64::NAN;
    let mut misaligned = release("node-1", "occupancy", 180_000, 3.0, 3);
    if let Some(w) = misaligned.window.as_mut() {
        w.start_ms += 1;
    }
    let mut fractional = release("node-1", "occupancy", 240_000, 3.5, 4);
    fractional.value = 3.5;
    let mut no_cost = release("node-1", "occupancy", 300_000, 3.0, 5);
    no_cost.cost = None;
    let resp = client
        .submit_releases(SubmitReleasesRequest {
            releases: vec![good, nan, misaligned, fractional, no_cost],
        })
        .await
        .expect("submit")
        .into_inner();
    let statuses: Vec<i32> = resp.acks.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses,
        vec![
            AckStatus::Accepted as i32,
            AckStatus::Invalid as i32,
            AckStatus::Invalid as i32,
            AckStatus::Invalid as i32,
            AckStatus::Invalid as i32
        ]
    );
    assert!(
        resp.acks[1].reason.contains("finite"),
        "{}",
        resp.acks[1].reason
    );
    assert!(
        resp.acks[2].reason.contains("multiple"),
        "{}",
        resp.acks[2].reason
    );
    assert_eq!(env.storage.count_releases().await.expect("count"), 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_empty_batches_are_refused() {
    let env = TestEnv::start().await;
    let mut client = IngestClient::new(env.channel(Some("node-1")).await.expect("connect"));
    let err = client
        .submit_releases(SubmitReleasesRequest { releases: vec![] })
        .await
        .expect_err("empty batch");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let many = (0..1001)
        .map(|i| {
            release_with_lease(
                "node-1",
                "occupancy",
                60_000 * (i + 1),
                1.0,
                i as u64 + 1,
                "x",
            )
        })
        .collect();
    let err = client
        .submit_releases(SubmitReleasesRequest { releases: many })
        .await
        .expect_err("oversized batch");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(env.storage.count_releases().await.expect("count"), 0);
    env.stop().await;
}

/// `ingest.max_calls_per_node_per_s`: a node over its rate is answered
/// RESOURCE_EXHAUSTED at once with a retry hint and nothing stored; other
/// nodes are not affected, and the same call succeeds after the hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_its_call_rate_is_told_when_to_retry_and_nothing_is_lost() {
    let env = TestEnv::start_edited(veil_tests::ARENA_POLICY, "", 2, &|t| {
        t.replacen(
            "max_window_age = \"100y\"\n",
            "max_window_age = \"100y\"\nmax_calls_per_node_per_s = 1\n",
            1,
        )
    })
    .await;
    let ch1 = env.channel(Some("node-1")).await.expect("connect");
    let ch2 = env.channel(Some("node-2")).await.expect("connect");
    let l1 = lease(ch1.clone(), "ingress", 3).await.expect("lease");
    let l2 = lease(ch2.clone(), "ingress", 3).await.expect("lease");
    let (mut n1, mut n2) = (IngestClient::new(ch1), IngestClient::new(ch2));
    let submit = |node: &str, start: i64, l: &str| SubmitReleasesRequest {
        releases: vec![release_with_lease(node, "ingress", start, 5.0, 1, l)],
    };
    let first = n1
        .submit_releases(submit("node-1", 60_000, &l1))
        .await
        .expect("first call within the rate")
        .into_inner();
    assert_eq!(first.acks[0].status, AckStatus::Accepted as i32);
    let refused = n1
        .submit_releases(submit("node-1", 120_000, &l1))
        .await
        .expect_err("second call in the same second");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("max_calls_per_node_per_s")
            && refused
                .message()
                .contains("nothing from this batch was stored"),
        "{refused:?}"
    );
    let retry_ms: u64 = refused
        .metadata()
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("retry-after-ms hint");
    assert!((1..=1000).contains(&retry_ms), "{retry_ms}");
    // Another node has its own rate.
    let other = n2
        .submit_releases(submit("node-2", 120_000, &l2))
        .await
        .expect("node-2 unaffected")
        .into_inner();
    assert_eq!(other.acks[0].status, AckStatus::Accepted as i32);
    // Nothing of the refused call was stored; after the hint it is.
    assert_eq!(
        env.storage
            .releases_for_venue("arena")
            .await
            .expect("q")
            .len(),
        2
    );
    tokio::time::sleep(std::time::Duration::from_millis(retry_ms + 50)).await;
    let again = n1
        .submit_releases(submit("node-1", 120_000, &l1))
        .await
        .expect("after the hint")
        .into_inner();
    assert_eq!(again.acks[0].status, AckStatus::Accepted as i32);
    assert_eq!(
        env.storage
            .releases_for_venue("arena")
            .await
            .expect("q")
            .len(),
        3
    );
    env.stop().await;
}
