//! The organizer surface over mTLS: the Query service is for organizers
//! only (every RPC refuses node, ml and compliance callers), series come
//! back combined across nodes with their 95% error bounds, alerts raised by
//! ingested releases reach WatchAlerts, and a client that never reads its
//! stream does not hold ingest up.

use tokio_stream::StreamExt as _;
use tonic::transport::Channel;
use veil_proto::{
    AckStatus, AcknowledgeAlertRequest, LatestPointsRequest, ListAlertsRequest, ListZonesRequest,
    QuerySeriesRequest, SubmitReleasesRequest, WatchAlertsRequest, WatchSeriesRequest,
    ingest_client::IngestClient, query_client::QueryClient,
};
use veil_tests::{ARENA_POLICY, TestEnv, lease, release_with_lease};

const ALERTS: &str = "[alerts.anomaly]\nenabled = false\n\n\
    [[alerts.rules]]\nname = \"crowded\"\nseverity = \"critical\"\n\
    runbook = \"Open gate 4 and redirect foot traffic.\"\nmetric = \"occupancy\"\nabove = 100.0\n";

async fn submit(ch: Channel, node: &str, values: &[(i64, f64)], seq0: u64) {
    let lease_id = lease(ch.clone(), "occupancy", values.len() as u32)
        .await
        .expect("lease");
    let releases = values
        .iter()
        .enumerate()
        .map(|(i, (w, v))| {
            release_with_lease(node, "occupancy", *w, *v, seq0 + i as u64, &lease_id)
        })
        .collect();
    let acks = IngestClient::new(ch)
        .submit_releases(SubmitReleasesRequest { releases })
        .await
        .expect("submit")
        .into_inner()
        .acks;
    assert!(
        acks.iter().all(|a| a.status == AckStatus::Accepted as i32),
        "{acks:?}"
    );
}

/// Calls every Query RPC; returns the status codes of the refusals (or Ok).
async fn every_rpc(ch: Channel) -> Vec<Result<(), tonic::Code>> {
    let mut q = QueryClient::new(ch);
    let venue = || "arena".to_owned();
    let code = |r: Result<(), tonic::Status>| r.map_err(|s| s.code());
    vec![
        code(
            q.query_series(QuerySeriesRequest {
                venue: venue(),
                metric: "occupancy".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        code(
            q.watch_series(WatchSeriesRequest {
                venue: venue(),
                metric: String::new(),
            })
            .await
            .map(drop),
        ),
        code(
            q.watch_alerts(WatchAlertsRequest { venue: venue() })
                .await
                .map(drop),
        ),
        code(
            q.list_alerts(ListAlertsRequest {
                venue: venue(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        code(
            q.list_zones(ListZonesRequest { venue: venue() })
                .await
                .map(drop),
        ),
        code(
            q.latest_points(LatestPointsRequest {
                venue: venue(),
                metric: "occupancy".into(),
            })
            .await
            .map(drop),
        ),
        // A well-formed id that does not exist: NotFound for an organizer.
        code(
            q.acknowledge_alert(AcknowledgeAlertRequest {
                venue: venue(),
                alert_id: "0".repeat(32),
            })
            .await
            .map(drop),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_service_is_for_organizers_only() {
    let env = TestEnv::start().await;
    for who in ["node-1", "ml", "compliance"] {
        let results = every_rpc(env.channel(Some(who)).await.expect("connect")).await;
        assert_eq!(results.len(), 7);
        for r in results {
            assert_eq!(r, Err(tonic::Code::PermissionDenied), "{who}");
        }
    }
    let results = every_rpc(env.channel(Some("organizer")).await.expect("connect")).await;
    assert!(results[..6].iter().all(Result::is_ok), "{results:?}");
    assert_eq!(results[6], Err(tonic::Code::NotFound));
    // Another venue is out of scope for this organizer.
    let err = QueryClient::new(env.channel(Some("organizer")).await.expect("connect"))
        .list_zones(ListZonesRequest {
            venue: "stadium".into(),
        })
        .await
        .expect_err("other venue");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Refusals are audited (by a task of their own, after the refusal is
    // answered: wait for it, boundedly).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let export = env
            .audit
            .export(&env.storage, None, 0)
            .await
            .expect("export");
        if export.entries_jsonl.lines().any(|l| {
            l.contains("\"action\":\"auth\"")
                && l.contains("spiffe://veil/role/ml/ml-team")
                && l.contains("requires role organizer")
        }) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the ml principal's refusal was not audited:\n{}",
            export.entries_jsonl
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_combine_two_nodes_and_alerts_reach_the_stream() {
    let env = TestEnv::start_with(ARENA_POLICY, ALERTS).await;
    let org = env.channel(Some("organizer")).await.expect("connect");
    let mut query = QueryClient::new(org.clone());
    let mut alerts = query
        .watch_alerts(WatchAlertsRequest {
            venue: "arena".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut series = query
        .watch_series(WatchSeriesRequest {
            venue: "arena".into(),
            metric: "occupancy".into(),
        })
        .await
        .expect("watch series")
        .into_inner();
    let n1 = env.channel(Some("node-1")).await.expect("connect");
    let n2 = env.channel(Some("node-2")).await.expect("connect");
    submit(n1, "node-1", &[(60_000, 40.0), (120_000, 70.0)], 1).await;
    submit(n2, "node-2", &[(60_000, 20.0), (120_000, 50.0)], 1).await;

    let page = query
        .query_series(QuerySeriesRequest {
            venue: "arena".into(),
            metric: "occupancy".into(),
            ..Default::default()
        })
        .await
        .expect("series")
        .into_inner();
    assert_eq!(page.points.len(), 2);
    let (a, b) = (&page.points[0], &page.points[1]);
    assert_eq!((a.value, a.releases), (60.0, 2));
    assert_eq!((b.value, b.releases), (120.0, 2));
    // Two discrete Laplace releases of scale 1: the 95% bound of their sum
    // (computed exactly) is 4.
    assert_eq!(a.error95, 4.0);
    assert_eq!(a.mechanism, veil_proto::Mechanism::DiscreteLaplace as i32);
    assert_eq!(a.combine, "sum");

    // 40 + 20 = 60 is under the limit; 70 + 50 = 120 is above it once
    // node-2's release is combined: the rule fires for window 120000.
    let ev = tokio::time::timeout(std::time::Duration::from_secs(30), alerts.next())
        .await
        .expect("an alert within 30 s")
        .expect("stream open")
        .expect("alert");
    assert_eq!(ev.event, "raised");
    assert_eq!(ev.source, "rule:crowded");
    assert_eq!(ev.zone, "floor");
    assert_eq!(ev.severity, "critical");
    assert_eq!(ev.window.as_ref().map(|w| w.start_ms), Some(120_000));
    assert!(ev.runbook.contains("gate 4"));
    // Series points arrive live too.
    let p = series.next().await.expect("open").expect("point");
    assert_eq!(p.metric, "occupancy");

    // Stored, listed, acknowledged (once) and audited.
    // A raise is published before it is stored: wait for the row.
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = query
            .list_alerts(ListAlertsRequest {
                venue: "arena".into(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .alerts;
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, "raised");
    let acked = query
        .acknowledge_alert(AcknowledgeAlertRequest {
            venue: "arena".into(),
            alert_id: ev.alert_id.clone(),
        })
        .await
        .expect("ack")
        .into_inner();
    assert_eq!(acked.acked_by, "spiffe://veil/role/organizer/organizer");
    let ack_ev = alerts.next().await.expect("open").expect("ack event");
    assert_eq!(ack_ev.event, "acknowledged");
    let export = env
        .audit
        .export(&env.storage, None, 0)
        .await
        .expect("export");
    for action in ["alert.raise", "alert.ack"] {
        assert!(
            export
                .entries_jsonl
                .contains(&format!("\"action\":\"{action}\"")),
            "{action} not audited"
        );
    }
    // Bad page tokens are refused clearly.
    let err = query
        .query_series(QuerySeriesRequest {
            venue: "arena".into(),
            metric: "occupancy".into(),
            page_token: "not-a-token".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("page_token"), "{}", err.message());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_stream_does_not_stall_ingest() {
    // Tiny buffers so the unread streams overflow quickly.
    let extra = "[alerts]\nstream_buffer = 4\nqueue = 8\n";
    let env = TestEnv::start_with(ARENA_POLICY, extra).await;
    let org = env.channel(Some("organizer")).await.expect("connect");
    let mut query = QueryClient::new(org);
    // Opened and never read.
    let _series = query
        .watch_series(WatchSeriesRequest {
            venue: "arena".into(),
            metric: String::new(),
        })
        .await
        .expect("watch series")
        .into_inner();
    let _alerts = query
        .watch_alerts(WatchAlertsRequest {
            venue: "arena".into(),
        })
        .await
        .expect("watch alerts")
        .into_inner();
    let ch = env.channel(Some("node-1")).await.expect("connect");
    // All windows on the lease day 1970-01-01 (1440 one-minute windows).
    let batches = 28u64;
    let per = 50u64;
    for b in 0..batches {
        let values: Vec<(i64, f64)> = (0..per)
            .map(|i| (((b * per + i) as i64 + 1) * 60_000, 1000.0 + (i % 7) as f64))
            .collect();
        submit(ch.clone(), "node-1", &values, b * per + 1).await;
    }
    assert_eq!(
        env.storage.count_releases().await.expect("count"),
        batches * per
    );
    env.stop().await;
}
