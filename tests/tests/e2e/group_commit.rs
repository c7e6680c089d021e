//! Group commit: concurrent SubmitReleases calls share
//! transactions, yet every release is decided exactly as if the calls had
//! come one at a time, and one failing call never fails the calls committed
//! with it.

use std::collections::HashMap;

use sqlx::Row;
use veil_privacy::audit::{AuditEntry, ExportInput, verify_export};
use veil_proto::{AckStatus, Release, SubmitReleasesRequest, ingest_client::IngestClient};
use veil_tests::{TestEnv, VENUE, lease, release_with_lease};

/// Submits every batch of `batches` at once (one task per call) and
/// returns each call's result in the same order.
async fn submit_all(
    client: &IngestClient<tonic::transport::Channel>,
    batches: Vec<Vec<Release>>,
) -> Vec<Result<Vec<veil_proto::ReleaseAck>, tonic::Status>> {
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|releases| {
            let mut c = client.clone();
            tokio::spawn(async move {
                c.submit_releases(SubmitReleasesRequest { releases })
                    .await
                    .map(|r| r.into_inner().acks)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

async fn lease_used(env: &TestEnv, lease_id: &str) -> i64 {
    sqlx::query("SELECT used FROM leases WHERE lease_id = $1")
        .bind(lease_id)
        .fetch_one(env.storage.reads())
        .await
        .expect("lease row")
        .try_get("used")
        .expect("used")
}

async fn exported_entries(env: &TestEnv) -> Vec<AuditEntry> {
    let export = env
        .audit
        .export(&env.storage, None, 0)
        .await
        .expect("export");
    let vkey = std::fs::read_to_string(env.pki.join("audit.vkey")).expect("vkey");
    let verified = verify_export(ExportInput {
        entries_jsonl: &export.entries_jsonl,
        checkpoint: &export.checkpoint,
        proofs_json: None,
        vkey: vkey.trim(),
        origin: env.audit.origin(),
        previous_checkpoint: None,
        consistency_proof: None,
    });
    assert!(verified.is_ok(), "the audit export verifies: {verified:?}");
    export
        .entries_jsonl
        .lines()
        .map(|l| AuditEntry::parse_canonical(l).expect("entry"))
        .collect()
}

fn count(acks: &[veil_proto::ReleaseAck], status: AckStatus) -> usize {
    acks.iter().filter(|a| a.status == status as i32).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_decided_as_if_they_came_one_at_a_time() {
    let env = TestEnv::start().await;
    let ch1 = env.channel(Some("node-1")).await.expect("connect");
    let ch2 = env.channel(Some("node-2")).await.expect("connect");
    // node-1 may make 30 releases; it sends 40 in 8 concurrent calls.
    let small = lease(ch1.clone(), "occupancy", 30).await.expect("lease");
    let node1 = IngestClient::new(ch1);
    let batches1: Vec<Vec<Release>> = (0..8)
        .map(|c| {
            (0..5)
                .map(|i| {
                    let w = (c * 5 + i) as i64 * 60_000;
                    release_with_lease(
                        "node-1",
                        "occupancy",
                        w,
                        10.0,
                        (c * 5 + i + 1) as u64,
                        &small,
                    )
                })
                .collect()
        })
        .collect();
    // node-2 sends each of 40 releases twice, in two different concurrent
    // calls (then, below, one of them a third time with other content).
    let big = lease(ch2.clone(), "ingress", 100).await.expect("lease");
    let node2 = IngestClient::new(ch2);
    let originals: Vec<Release> = (0..40)
        .map(|i| release_with_lease("node-2", "ingress", i * 60_000, 3.0, (i + 1) as u64, &big))
        .collect();
    let mut batches2: Vec<Vec<Release>> = originals.chunks(10).map(<[Release]>::to_vec).collect();
    batches2.extend(
        originals
            .iter()
            .rev()
            .cloned()
            .collect::<Vec<_>>()
            .chunks(10)
            .map(<[Release]>::to_vec),
    );

    let (r1, r2) = tokio::join!(submit_all(&node1, batches1), submit_all(&node2, batches2));
    let acks1: Vec<_> = r1
        .into_iter()
        .flat_map(|r| r.expect("node-1 call"))
        .collect();
    let acks2: Vec<_> = r2
        .into_iter()
        .flat_map(|r| r.expect("node-2 call"))
        .collect();

    // The lease covers exactly 30 of node-1's 40; the rest are refused
    // with the reason, whichever calls were grouped together.
    assert_eq!(count(&acks1, AckStatus::Accepted), 30, "{acks1:?}");
    assert_eq!(count(&acks1, AckStatus::Denied), 10);
    assert!(
        acks1
            .iter()
            .filter(|a| a.status == AckStatus::Denied as i32)
            .all(|a| a.reason.contains("used up")),
        "{acks1:?}"
    );
    assert_eq!(
        lease_used(&env, &small).await,
        30,
        "the ledger holds 30 uses"
    );
    // Each of node-2's keys: one ACCEPTED, one DUPLICATE; the changed copy
    // of key 7 is a CONFLICT; the original is kept.
    let mut by_key: HashMap<&str, Vec<i32>> = HashMap::new();
    for a in &acks2 {
        by_key
            .entry(a.idempotency_key.as_str())
            .or_default()
            .push(a.status);
    }
    assert_eq!(by_key.len(), 40);
    for (key, statuses) in &by_key {
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == AckStatus::Accepted as i32)
                .count(),
            1,
            "{key}: {statuses:?}"
        );
        assert!(
            statuses.contains(&(AckStatus::Duplicate as i32)),
            "{key}: {statuses:?}"
        );
    }
    let mut changed = originals[7].clone();
    changed.value = 4.0;
    let conflict = submit_all(&node2, vec![vec![changed]]).await;
    let conflict = conflict
        .into_iter()
        .next()
        .expect("one call")
        .expect("conflict call");
    assert_eq!(
        conflict[0].status,
        AckStatus::Conflict as i32,
        "{conflict:?}"
    );
    assert_eq!(
        lease_used(&env, &big).await,
        40,
        "a duplicate uses no budget"
    );

    let stored = env.storage.releases_for_venue(VENUE).await.expect("query");
    assert_eq!(stored.len(), 70, "30 + 40 rows, no duplicate row");
    let kept = stored
        .iter()
        .find(|r| r.idempotency_key == originals[7].idempotency_key)
        .expect("key 7 stored");
    assert_eq!(kept.value, 3.0, "the original content is kept");

    // One allow entry per stored release, one deny entry per refusal and
    // the conflict, in a log that verifies.
    let entries = exported_entries(&env).await;
    let releases: Vec<&AuditEntry> = entries.iter().filter(|e| e.action == "release").collect();
    assert_eq!(
        releases.iter().filter(|e| e.decision == "allow").count(),
        70
    );
    assert_eq!(releases.iter().filter(|e| e.decision == "deny").count(), 10);
    assert_eq!(
        entries
            .iter()
            .filter(|e| e.action == "release.conflict")
            .count(),
        1
    );
    env.stop().await;
}

/// Makes the database itself refuse any release whose key contains
/// `/poison/`, as a failing disk or a constraint would.
async fn install_poison(env: &TestEnv) {
    let pool = env.storage.dangerous_raw_pool();
    let postgres = veil_tests::aggregator_database_url(&env.config).starts_with("postgres");
    let statements: &[&'static str] = if postgres {
        &[
            "CREATE FUNCTION veil_test_poison() RETURNS trigger AS $$ BEGIN \
             IF NEW.idempotency_key LIKE '%/poison/%' THEN RAISE EXCEPTION 'poisoned row'; END IF; \
             RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER veil_test_poison BEFORE INSERT ON releases FOR EACH ROW \
             EXECUTE FUNCTION veil_test_poison()",
        ]
    } else {
        &["CREATE TRIGGER veil_test_poison BEFORE INSERT ON releases \
           WHEN NEW.idempotency_key LIKE '%/poison/%' \
           BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"]
    };
    for s in statements {
        sqlx::query(*s)
            .execute(pool)
            .await
            .expect("install trigger");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_database_refuses_does_not_fail_the_calls_grouped_with_it() {
    let env = TestEnv::start().await;
    install_poison(&env).await;
    let ch = env.channel(Some("node-1")).await.expect("connect");
    let lease_id = lease(ch.clone(), "occupancy", 1000).await.expect("lease");
    let client = IngestClient::new(ch);
    let mut window = 0i64;
    let mut good_sent = 0usize;
    for round in 0..10 {
        // One poisoned call among eight good ones, all at once.
        let mut batches = Vec::new();
        for call in 0..9 {
            let mut batch = Vec::new();
            for _ in 0..4 {
                window += 60_000;
                let mut r = release_with_lease(
                    "node-1",
                    "occupancy",
                    window,
                    1.0,
                    window as u64,
                    &lease_id,
                );
                if call == 4 {
                    r.idempotency_key = format!("{VENUE}/node-1/poison/{round}/{window}");
                } else {
                    good_sent += 1;
                }
                batch.push(r);
            }
            batches.push(batch);
        }
        for (call, result) in submit_all(&client, batches).await.into_iter().enumerate() {
            if call == 4 {
                let status = result.expect_err("the poisoned call fails");
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                assert!(
                    status
                        .message()
                        .contains("nothing from this batch was stored"),
                    "{status:?}"
                );
            } else {
                let acks = result.expect("a good call succeeds");
                assert_eq!(
                    count(&acks, AckStatus::Accepted),
                    4,
                    "round {round} call {call}: {acks:?}"
                );
            }
        }
    }
    let stored = env.storage.releases_for_venue(VENUE).await.expect("query");
    assert_eq!(stored.len(), good_sent, "every good release stored once");
    assert!(
        stored
            .iter()
            .all(|r| !r.idempotency_key.contains("/poison/"))
    );
    assert_eq!(
        lease_used(&env, &lease_id).await,
        good_sent as i64,
        "no budget used by rolled-back calls"
    );
    let entries = exported_entries(&env).await;
    let allowed = entries
        .iter()
        .filter(|e| e.action == "release" && e.decision == "allow")
        .count();
    assert_eq!(
        allowed, good_sent,
        "no audit entry of a rolled-back call survives"
    );
    env.stop().await;
}
