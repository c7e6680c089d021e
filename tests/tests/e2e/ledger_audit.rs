//! Policies, the budget ledger and the audit log, end to end: every
//! decision is enforced, charged and audited, and the export verifies
//! offline with the pinned key.

use std::{process::Command, time::Duration};

use veil_proto::{
    AckStatus, Mechanism, PrivacyCost, SubmitReleasesRequest, ingest_client::IngestClient,
};
use veil_tests::{ARENA_POLICY, TestEnv, bin, lease, release, release_with_lease};

fn small_budget_policy(epsilon_per_day: f64) -> String {
    ARENA_POLICY.replace(
        "epsilon_per_day = 2500.0",
        &format!("epsilon_per_day = {epsilon_per_day}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_refusals_are_denied_with_reasons_and_audited() {
    let env = TestEnv::start().await;
    let ch = env.channel(Some("node-1")).await.expect("connect");
    let l = lease(ch.clone(), "occupancy", 10).await.expect("lease");
    let mut client = IngestClient::new(ch);
    let mut unknown_metric = release_with_lease("node-1", "heart_rate", 60_000, 1.0, 1, &l);
    unknown_metric.idempotency_key = "arena/node-1/heart_rate/floor/60000/0".into();
    let mut fake_non_personal = release_with_lease("node-1", "occupancy", 120_000, 10.0, 2, &l);
    fake_non_personal.mechanism = Mechanism::NonPersonal as i32;
    fake_non_personal.cost = Some(PrivacyCost::default());
    fake_non_personal.scale = 0.0;
    let mut cheap = release_with_lease("node-1", "occupancy", 180_000, 10.0, 3, &l);
    cheap.cost = Some(PrivacyCost {
        epsilon: 5.0,
        rho: 0.0,
    });
    let mut wrong_purpose = release_with_lease("node-1", "occupancy", 240_000, 10.0, 4, &l);
    wrong_purpose.purpose = "marketing".into();
    let mut old_policy = release_with_lease("node-1", "occupancy", 300_000, 10.0, 5, &l);
    old_policy.policy_hash = "00".repeat(32);
    let no_lease = release("node-1", "occupancy", 360_000, 10.0, 6);
    let resp = client
        .submit_releases(SubmitReleasesRequest {
            releases: vec![
                unknown_metric,
                fake_non_personal,
                cheap,
                wrong_purpose,
                old_policy,
                no_lease,
            ],
        })
        .await
        .expect("submit")
        .into_inner();
    let expect = [
        "not allowed by the venue's policy",
        "not declared non-personal",
        "differs from the policy's per-release cost",
        "purpose `marketing` is not allowed",
        "the policy in force is",
        "no budget was charged",
    ];
    for (ack, want) in resp.acks.iter().zip(expect) {
        assert_eq!(ack.status, AckStatus::Denied as i32, "{ack:?}");
        assert!(
            ack.reason.contains(want),
            "{} should say {want}",
            ack.reason
        );
    }
    assert_eq!(env.storage.count_releases().await.expect("count"), 0);
    let export = env
        .audit
        .export(&env.storage, None, 0)
        .await
        .expect("export");
    let denies: Vec<&str> = export
        .entries_jsonl
        .lines()
        .filter(|l| l.contains("\"action\":\"release\"") && l.contains("\"decision\":\"deny\""))
        .collect();
    assert_eq!(denies.len(), expect.len(), "{}", export.entries_jsonl);
    for want in expect {
        assert!(
            denies.iter().any(|l| l.contains(want)),
            "no audited refusal saying {want}"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_covers_exactly_its_releases() {
    let env = TestEnv::start().await;
    let ch = env.channel(Some("node-1")).await.expect("connect");
    let l = lease(ch.clone(), "occupancy", 1).await.expect("lease");
    let mut client = IngestClient::new(ch);
    let resp = client
        .submit_releases(SubmitReleasesRequest {
            releases: vec![
                release_with_lease("node-1", "occupancy", 60_000, 1.0, 1, &l),
                release_with_lease("node-1", "occupancy", 120_000, 1.0, 2, &l),
            ],
        })
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(resp.acks[0].status, AckStatus::Accepted as i32);
    assert_eq!(resp.acks[1].status, AckStatus::Denied as i32);
    assert!(
        resp.acks[1].reason.contains("used up"),
        "{}",
        resp.acks[1].reason
    );
    // node-2 cannot spend node-1's lease.
    let mut other = IngestClient::new(env.channel(Some("node-2")).await.expect("connect"));
    let resp = other
        .submit_releases(SubmitReleasesRequest {
            releases: vec![release_with_lease(
                "node-2",
                "occupancy",
                180_000,
                1.0,
                1,
                &l,
            )],
        })
        .await
        .expect("submit")
        .into_inner();
    assert_eq!(resp.acks[0].status, AckStatus::Denied as i32);
    assert!(
        resp.acks[0].reason.contains("another node"),
        "{}",
        resp.acks[0].reason
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_budget_refuses_leases_with_resource_exhausted() {
    let env = TestEnv::start_with_policy(&small_budget_policy(5.0)).await;
    let ch = env.channel(Some("node-1")).await.expect("connect");
    lease(ch.clone(), "occupancy", 4).await.expect("4 of 5");
    let err = lease(ch.clone(), "occupancy", 2)
        .await
        .expect_err("would exceed");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    lease(ch.clone(), "ingress", 1)
        .await
        .expect("exactly the rest");
    let err = lease(ch, "egress", 1).await.expect_err("nothing left");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    let report = veil_aggregator::ledger::report(env.storage.reads(), "arena", "1970-01-01", None)
        .await
        .expect("report");
    assert!((report.spent_epsilon - 5.0).abs() < 1e-9, "{report:?}");
    assert_eq!(report.remaining_epsilon, 0.0);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_leases_never_overspend() {
    let env = TestEnv::start_with_policy(&small_budget_policy(10.0)).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { "node-1" } else { "node-2" };
        let ch = env.channel(Some(node)).await.expect("connect");
        tasks.push(tokio::spawn(async move { lease(ch, "occupancy", 1).await }));
    }
    let mut granted = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => granted += 1,
            Err(e) => assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}"),
        }
    }
    assert_eq!(granted, 10, "exactly the affordable leases succeed");
    let report = veil_aggregator::ledger::report(env.storage.reads(), "arena", "1970-01-01", None)
        .await
        .expect("report");
    assert!(report.spent_epsilon <= 10.0 + 1e-9);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_verifies_offline_and_tampering_is_named() {
    let env = TestEnv::start().await;
    let ch = env.channel(Some("node-1")).await.expect("connect");
    let l = lease(ch.clone(), "occupancy", 20).await.expect("lease");
    let mut client = IngestClient::new(ch);
    let releases = (1..=20)
        .map(|i| release_with_lease("node-1", "occupancy", 60_000 * i, i as f64, i as u64, &l))
        .collect();
    client
        .submit_releases(SubmitReleasesRequest { releases })
        .await
        .expect("submit");
    let out = env.dir.path().join("audit");
    let export = Command::new(bin("veil-aggregator"))
        .args(["audit", "export", "--config"])
        .arg(&env.config)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("audit export");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let vkey = env.pki.join("audit.vkey");
    let verify = |dir: &std::path::Path| {
        Command::new(bin("veil-aggregator"))
            .args(["audit", "verify"])
            .arg(dir)
            .arg("--key")
            .arg(&vkey)
            .output()
            .expect("audit verify")
    };
    let ok = verify(&out);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.starts_with("OK"), "{stdout}");
    // 1 policy.load + 1 lease + 20 releases.
    let entries = std::fs::read_to_string(out.join("entries.jsonl")).expect("entries");
    assert_eq!(entries.lines().count(), 22);

    // A flipped byte in an entry.
    let bad = env.dir.path().join("tampered");
    std::fs::create_dir_all(&bad).expect("mkdir");
    std::fs::copy(out.join("checkpoint"), bad.join("checkpoint")).expect("copy");
    std::fs::write(
        bad.join("entries.jsonl"),
        entries.replacen("\"value", "\"valuf", 1).replacen(
            "occupancy charged",
            "occupancz charged",
            1,
        ),
    )
    .expect("write");
    let failed = verify(&bad);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("verification FAILED"), "{err}");

    // A deleted entry.
    let mut lines: Vec<&str> = entries.lines().collect();
    lines.remove(5);
    std::fs::write(bad.join("entries.jsonl"), format!("{}\n", lines.join("\n"))).expect("write");
    let failed = verify(&bad);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("FAILED"));

    // A partial export carries inclusion proofs and verifies too.
    let part = env.dir.path().join("partial");
    let export = Command::new(bin("veil-aggregator"))
        .args(["audit", "export", "--from", "3", "--to", "7", "--config"])
        .arg(&env.config)
        .arg("--out")
        .arg(&part)
        .output()
        .expect("partial export");
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    assert!(part.join("proofs.json").exists());
    let ok = verify(&part);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    env.stop().await;
}

#[test]
fn every_shipped_policy_passes_policy_check() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("policies/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = Command::new(bin("veil-aggregator"))
                .args(["policy", "check"])
                .arg(&path)
                .output()
                .expect("policy check");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let text = std::fs::read(&path).expect("read");
            assert!(
                stdout.contains(&veil_privacy::policy::sha256_hex(&text)),
                "{stdout}"
            );
            n += 1;
        }
    }
    assert!(n >= 3, "arena, festival and conference examples");
}

#[test]
fn policy_check_names_the_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        ARENA_POLICY.replace(
            "epsilon = 0.5\nsuppress_below",
            "epsilon = 50.0\nsuppress_below",
        ),
    )
    .expect("write");
    let out = Command::new(bin("veil-aggregator"))
        .args(["policy", "check"])
        .arg(&p)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("metric[unique_devices].epsilon") && err.contains("line"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compliance_exports_over_grpc_and_others_are_refused() {
    use veil_proto::{ExportRequest, VerifierKeyRequest, audit_client::AuditClient};
    let env = TestEnv::start().await;
    let ch = env.channel(Some("node-1")).await.expect("connect");
    lease(ch.clone(), "occupancy", 3).await.expect("lease");
    let err = AuditClient::new(ch)
        .export(ExportRequest {
            from_seq: 0,
            to_seq: 0,
        })
        .await
        .expect_err("a node may not export the audit log");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let organizer = env.channel(Some("organizer")).await.expect("connect");
    let err = AuditClient::new(organizer)
        .verifier_key(VerifierKeyRequest {})
        .await
        .expect_err("an organizer may not either");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    let mut client = AuditClient::new(env.channel(Some("compliance")).await.expect("connect"));
    let vkey = client
        .verifier_key(VerifierKeyRequest {})
        .await
        .expect("vkey")
        .into_inner()
        .vkey;
    let pinned = std::fs::read_to_string(env.pki.join("audit.vkey")).expect("vkey file");
    assert_eq!(vkey, pinned.trim());
    // Refusals reach the log through a bounded background sink: export
    // until both are in (or give up after a generous deadline).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let v = loop {
        let mut stream = client
            .export(ExportRequest {
                from_seq: 0,
                to_seq: 0,
            })
            .await
            .expect("export")
            .into_inner();
        let mut lines = Vec::new();
        let mut checkpoint = None;
        while let Some(chunk) = stream.message().await.expect("chunk") {
            lines.extend(chunk.entries);
            if let Some(cp) = chunk.checkpoint {
                checkpoint = Some(cp);
            }
        }
        let entries = format!("{}\n", lines.join("\n"));
        let cp = checkpoint.expect("checkpoint on the last chunk");
        let note = cp.note;
        let v = veil_privacy::audit::verify_export(veil_privacy::audit::ExportInput {
            entries_jsonl: &entries,
            checkpoint: &note,
            proofs_json: None,
            vkey: pinned.trim(),
            origin: "veil-audit",
            previous_checkpoint: None,
            consistency_proof: None,
        })
        .expect("the gRPC export verifies offline");
        // The message's own fields say what the signed note says: a client
        // reading `root` and `size` gets the checkpoint's (32 bytes).
        assert_eq!(cp.root.len(), 32, "Checkpoint.root is the 32-byte root");
        assert_eq!(cp.root, v.root.as_bytes().to_vec());
        assert_eq!(cp.size, v.size);
        if v.size >= 4 || std::time::Instant::now() > deadline {
            // The verified entries borrow from `entries`: count here.
            let refusals = v
                .entries
                .iter()
                .filter(|e| e.action == "auth" && e.decision == "deny")
                .count();
            break (v.size, refusals);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (size, refusals) = v;
    assert_eq!(size, 4, "policy.load + lease + two audited refusals");
    assert_eq!(
        refusals, 2,
        "the node's and the organizer's refused calls are audited"
    );
    env.stop().await;
}
