use super::*;
use crate::rounds::kernel;
use crate::storage::Storage;

fn model_bytes(w: f32) -> Vec<u8> {
    let layout = vec![
        ("l0.bias".to_owned(), vec![2]),
        ("l0.weight".to_owned(), vec![2, 3]),
    ];
    kernel::encode(
        &layout,
        &[w; 8],
        store::metadata(&[("dims", "3,2"), ("task", "regression")]),
    )
    .unwrap()
}

fn update(values: &[f32]) -> Vec<u8> {
    let layout = vec![
        ("l0.bias".to_owned(), vec![2]),
        ("l0.weight".to_owned(), vec![2, 3]),
    ];
    kernel::encode(&layout, values, Default::default()).unwrap()
}

async fn rounds() -> (tempfile::TempDir, Rounds) {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::storage::open_test_storage(dir.path()).await;
    let r = Rounds::new(storage.clone(), 1e-6);
    r.import_model("m", &model_bytes(0.5), None, 0)
        .await
        .unwrap();
    (dir, r)
}

fn params(min_nodes: u32) -> OpenParams {
    OpenParams {
        model: "m".into(),
        min_nodes,
        clip_norm: 1.0,
        noise_multiplier: 0.01,
        local_steps: 1,
        learning_rate: 0.1,
        deadline: Duration::from_secs(60),
        secure: None,
        event_day: None,
    }
}

#[test]
fn fedavg_kernel_averages() {
    let a = vec![1.0f32; 10_000];
    let b: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
    let mut out = vec![0.0; 10_000];
    let verdicts = kernel::fedavg(&[&a, &b], f64::MAX, 2, &mut out);
    assert!(verdicts.iter().all(Result::is_ok));
    for (i, o) in out.iter().enumerate() {
        assert!((o - (1.0 + i as f32) / 2.0).abs() < 1e-3);
    }
    assert!((kernel::l2_norm(&[3.0, 4.0]) - 5.0).abs() < 1e-9);
    let f = kernel::bench_fedavg(3, 1000, 1, 2);
    assert!(f.fedavg_gbps > 0.0 && f.mem_read_gbps > 0.0);
}

/// Deterministic values in [-1, 1) (a 64-bit LCG; no RNG dependency).
fn pseudo(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn fedavg_is_bit_identical_for_any_thread_count_and_matches_f64() {
    // Neither the node count (11) nor the parameter count is a multiple of
    // the kernel's blocks, lanes or chunks.
    let params = 3 * kernel::CHUNK + 37;
    let updates: Vec<Vec<f32>> = (0..11).map(|n| pseudo(n, params)).collect();
    let refs: Vec<&[f32]> = updates.iter().map(Vec::as_slice).collect();
    let mut one = vec![0.0f32; params];
    let v1 = kernel::fedavg(&refs, f64::MAX, 1, &mut one);
    for threads in [2, 3, 4, 64] {
        let mut out = vec![0.0f32; params];
        let v = kernel::fedavg(&refs, f64::MAX, threads, &mut out);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&out), bits(&one), "{threads} threads");
        assert_eq!(v, v1, "{threads} threads");
    }
    for (i, o) in one.iter().enumerate() {
        let mean = refs.iter().map(|u| f64::from(u[i])).sum::<f64>() / refs.len() as f64;
        assert!((f64::from(*o) - mean).abs() <= 1e-6, "{i}: {o} vs {mean}");
    }
    for (u, v) in refs.iter().zip(&v1) {
        let norm = *v.as_ref().unwrap();
        let exact = u.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        assert!((norm - exact).abs() <= 1e-5 * exact, "{norm} vs {exact}");
        assert_eq!(norm.to_bits(), kernel::l2_norm(u).to_bits());
        assert_eq!(kernel::check_values(u, f64::MAX), Ok(norm));
    }
}

#[test]
fn fedavg_leaves_out_every_bad_update_and_averages_the_rest() {
    use kernel::UpdateRejected;
    let params = kernel::CHUNK + 5;
    let good_a = pseudo(1, params);
    let good_b = pseudo(2, params);
    let mut nan = pseudo(3, params);
    nan[kernel::CHUNK + 2] = f32::NAN;
    let mut inf = pseudo(4, params);
    inf[7] = f32::NEG_INFINITY;
    // Finite, but its square overflows f32: a norm refusal, not non-finite.
    let mut huge = pseudo(5, params);
    huge[9] = 1e30;
    let big = vec![2.0f32; params];
    let short = pseudo(6, params - 1);
    let bound = 100.0;
    let refs: Vec<&[f32]> = vec![&good_a, &nan, &inf, &huge, &big, &short, &good_b];
    for threads in [1, 2] {
        let mut out = vec![0.0f32; params];
        let v = kernel::fedavg(&refs, bound, threads, &mut out);
        assert!(v[0].is_ok() && v[6].is_ok(), "{v:?}");
        assert_eq!(
            v[1],
            Err(UpdateRejected::NonFinite {
                index: kernel::CHUNK + 2
            })
        );
        assert_eq!(v[2], Err(UpdateRejected::NonFinite { index: 7 }));
        assert!(
            matches!(v[3], Err(UpdateRejected::NormExceeded { norm, .. }) if norm >= 1e30),
            "{:?}",
            v[3]
        );
        assert!(matches!(v[4], Err(UpdateRejected::NormExceeded { .. })));
        assert_eq!(
            v[5],
            Err(UpdateRejected::WrongLength {
                got: params - 1,
                want: params
            })
        );
        let mut only_good = vec![0.0f32; params];
        kernel::fedavg(&[&good_a, &good_b], bound, 1, &mut only_good);
        assert_eq!(out, only_good);
        // The per-update check gives the same verdicts.
        assert_eq!(kernel::check_values(&nan, bound), v[1]);
        assert_eq!(kernel::check_values(&huge, bound), v[3]);
    }
    // A NaN bound fails closed; no updates leave zeros.
    let mut out = vec![1.0f32; params];
    let v = kernel::fedavg(&[&good_a], f64::NAN, 2, &mut out);
    assert!(v[0].is_err() && out.iter().all(|&x| x == 0.0));
    assert!(kernel::fedavg(&[], 1.0, 2, &mut out).is_empty());
}

#[tokio::test]
async fn bad_updates_are_refused_with_a_reason() {
    let (_d, r) = rounds().await;
    let round = r.open(&params(1), 1_000).await.unwrap();
    let id = &round.round_id;
    let mut nan = vec![0.01f32; 8];
    nan[3] = f32::NAN;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (update(&nan), "non-finite"),
        (update(&[10.0; 8]), "exceeds the bound"),
        (model_bytes(0.0)[..20].to_vec(), "not a safetensors"),
        (
            kernel::encode(
                &[("l0.bias".to_owned(), vec![8])],
                &[0.0; 8],
                Default::default(),
            )
            .unwrap(),
            "wrong shape",
        ),
    ];
    for (bytes, why) in cases {
        match r.submit(id, "v", "n", &bytes, 2_000).await.unwrap() {
            SubmitOutcome::Refused(reason) => assert!(reason.contains(why), "{reason} !~ {why}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    // A good update is accepted once; a replay is refused.
    let ok = update(&[0.1; 8]);
    assert_eq!(
        r.submit(id, "v", "n", &ok, 2_000).await.unwrap(),
        SubmitOutcome::Accepted { participants: 1 }
    );
    assert!(matches!(
        r.submit(id, "v", "n", &ok, 2_000).await.unwrap(),
        SubmitOutcome::Refused(_)
    ));
    // After the deadline nothing is accepted.
    assert!(matches!(
        r.submit(id, "v", "n2", &ok, 1_000 + 60_000).await.unwrap(),
        SubmitOutcome::Refused(_)
    ));
}

#[tokio::test]
async fn too_few_participants_publish_nothing() {
    let (_d, r) = rounds().await;
    let round = r.open(&params(2), 0).await.unwrap();
    r.submit(&round.round_id, "v", "n", &update(&[0.1; 8]), 10)
        .await
        .unwrap();
    assert!(r.due(59_999).await.unwrap().is_empty());
    let closed = close_due(&r, None, 60_000).await.unwrap();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].state, "failed");
    assert!(closed[0].reason.contains("fewer than the minimum"));
    assert_eq!(r.latest("m").await.unwrap(), 1);
}

#[tokio::test]
async fn a_round_publishes_the_average_with_a_card() {
    let (_d, r) = rounds().await;
    let round = r.open(&params(2), 0).await.unwrap();
    r.submit(&round.round_id, "v1", "n", &update(&[0.1; 8]), 10)
        .await
        .unwrap();
    r.submit(&round.round_id, "v2", "n", &update(&[0.3; 8]), 10)
        .await
        .unwrap();
    let (row, venues) = r.close(&round.round_id, 20).await.unwrap();
    assert_eq!(row.state, "published");
    assert_eq!(venues, vec!["v1".to_owned(), "v2".to_owned()]);
    let (w, card) = r.version("m", 2).await.unwrap();
    let flat = kernel::parse(&w).unwrap();
    assert!(flat.values.iter().all(|v| (v - 0.7).abs() < 1e-6));
    let card: serde_json::Value = serde_json::from_str(&card).unwrap();
    assert_eq!(card["version"], 2);
    assert_eq!(card["parent"], 1);
    assert_eq!(card["rounds"], 1);
    assert_eq!(card["participants"], 2);
    assert!(card["epsilon"].as_f64().unwrap() > 0.0);
}

fn policy_with_budget(epsilon_per_day: f64) -> veil_privacy::policy::LoadedPolicy {
    let text = include_str!("../../../tests/policies/per_window.toml").replace(
        "epsilon_per_day = 2500.0",
        &format!("epsilon_per_day = {epsilon_per_day:?}"),
    );
    veil_privacy::policy::LoadedPolicy::parse(&text).unwrap()
}

async fn charging_rounds(budgets: &[(&str, f64)]) -> (tempfile::TempDir, Rounds, Storage) {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::storage::open_test_storage(dir.path()).await;
    let signer = veil_privacy::audit::CheckpointSigner::generate("test-audit").unwrap();
    let audit = AuditLog::load(&storage, signer, 1000).await.unwrap();
    let policies = crate::policy::Policies::from_loaded(
        budgets
            .iter()
            .map(|(v, b)| ((*v).to_owned(), policy_with_budget(*b))),
    );
    let r = Rounds::new(storage.clone(), 1e-6).with_charging(Charging { policies, audit });
    r.import_model("m", &model_bytes(0.5), None, 0)
        .await
        .unwrap();
    (dir, r, storage)
}

fn charged_params(min_nodes: u32) -> OpenParams {
    // node rho = m / (2 z^2) = 0.25 per update with m = 2, z = 2; a venue
    // is charged 4x that per update (attendee sensitivity 2C).
    OpenParams {
        noise_multiplier: 2.0,
        ..params(min_nodes)
    }
}

#[tokio::test]
async fn published_rounds_charge_each_venue_ledger_and_refuse_overspending() {
    let (_d, r, storage) = charging_rounds(&[("v1", 100.0), ("v2", 9.0)]).await;
    let day = crate::ledger::day_of(10);
    let round = r.open(&charged_params(2), 0).await.unwrap();
    for v in ["v1", "v2"] {
        let out = r
            .submit(&round.round_id, v, "n", &update(&[0.1; 8]), 10)
            .await
            .unwrap();
        assert!(matches!(out, SubmitOutcome::Accepted { .. }), "{out:?}");
    }
    let row = close_and_record(&r, None, &round.round_id, 20)
        .await
        .unwrap();
    assert_eq!(row.state, "published");
    for v in ["v1", "v2"] {
        let rep = crate::ledger::report(storage.reads(), v, &day, None)
            .await
            .unwrap();
        assert_eq!(rep.lines.len(), 1, "{rep:?}");
        let (metric, purpose, eps, rho) = &rep.lines[0];
        assert_eq!(metric, "model:m");
        assert_eq!(purpose, TRAINING_PURPOSE);
        assert_eq!(*eps, 0.0);
        assert!((rho - 1.0).abs() < 1e-12, "{rho}");
        assert!(
            rep.spent_epsilon > 7.0 && rep.spent_epsilon < 9.0,
            "{rep:?}"
        );
    }
    let charges: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE entry LIKE '%\"action\":\"round.charge\"%'",
    )
    .fetch_one(storage.reads())
    .await
    .unwrap();
    assert_eq!(charges, 2);

    // v2's budget (9) cannot cover an update of rho 4 / (2 * 1^2) = 2
    // more (3 in all is over 15 at delta 1e-6): its update is refused, v1's
    // is accepted.
    let p = OpenParams {
        noise_multiplier: 1.0,
        ..params(1)
    };
    let round = r.open(&p, 100).await.unwrap();
    match r
        .submit(&round.round_id, "v2", "n", &update(&[0.1; 8]), 110)
        .await
        .unwrap()
    {
        SubmitOutcome::Refused(reason) => assert!(reason.contains("budget"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // An unknown venue has no policy: refused (fail closed).
    assert!(matches!(
        r.submit(&round.round_id, "v9", "n", &update(&[0.1; 8]), 110)
            .await
            .unwrap(),
        SubmitOutcome::Refused(_)
    ));
    assert!(matches!(
        r.submit(&round.round_id, "v1", "n", &update(&[0.1; 8]), 110)
            .await
            .unwrap(),
        SubmitOutcome::Accepted { .. }
    ));
    // v1's day budget is spent elsewhere (as by leases) before the round
    // closes: the charge is refused, so the round fails and publishes
    // nothing, and nothing is charged.
    sqlx::query("UPDATE ledger_days SET rho = rho + 60.0 WHERE venue = 'v1'")
        .execute(storage.dangerous_raw_pool())
        .await
        .unwrap();
    let row = close_and_record(&r, None, &round.round_id, 120)
        .await
        .unwrap();
    assert_eq!(row.state, "failed");
    assert!(row.reason.contains("ledger refused"), "{}", row.reason);
    assert_eq!(r.latest("m").await.unwrap(), 2);
    let rep = crate::ledger::report(storage.reads(), "v1", &day, None)
        .await
        .unwrap();
    let model_line = rep.lines.iter().find(|l| l.0 == "model:m").unwrap();
    assert!((model_line.3 - 1.0).abs() < 1e-12, "{rep:?}");
}
