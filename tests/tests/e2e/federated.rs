//! Federated rounds end to end: training across three simulated venues
//! improves the forecaster's held-out error, the model card's epsilon
//! matches an independent accountant, and the gRPC flow (nodes submit, ml
//! pulls) works over mTLS with refusals.

use veil_aggregator::rounds::{self, OpenParams, Rounds, kernel};
use veil_node::{
    federated,
    inference::{
        FORECASTER_SPEC, Mlp, embedded_weights,
        train::{self, Dataset, forecast_dataset_from, sim_config},
    },
    simulate::VenueKind,
};
use veil_privacy::model_update::RoundPrivacy;

/// Independent (epsilon, delta) of rho-zCDP (Canonne-Kamath-Steinke):
/// min over alpha > 1 of rho*a + (ln(1/d) + (a-1) ln(1-1/a) - ln a)/(a-1).
fn cks_epsilon(rho: f64, delta: f64) -> f64 {
    let f = |a: f64| {
        rho * a + ((1.0 / delta).ln() + (a - 1.0) * (1.0 - 1.0 / a).ln() - a.ln()) / (a - 1.0)
    };
    let mut best = f64::INFINITY;
    let mut a = 1.0001;
    while a < 1e5 {
        best = best.min(f(a));
        a *= 1.0002;
    }
    best
}

fn held_out_mse(model_bytes: &[u8], data: &Dataset) -> f64 {
    let m = Mlp::from_safetensors(FORECASTER_SPEC, model_bytes).expect("model loads");
    train::loss(&m, data).expect("loss")
}

#[tokio::test]
async fn federated_rounds_across_three_venues_improve_the_forecaster() {
    let dir = tempfile::tempdir().unwrap();
    let url = match veil_tests::postgres_url() {
        Some(server) => veil_tests::create_database(&server),
        None => format!("sqlite://{}", dir.path().join("agg.db").display()),
    };
    let storage = veil_aggregator::storage::Storage::open(&url).await.unwrap();
    let store = Rounds::new(storage.clone(), 1e-6);
    let initial = embedded_weights(FORECASTER_SPEC.name).unwrap();
    store
        .import_model(FORECASTER_SPEC.name, initial, None, 0)
        .await
        .unwrap();

    // Twelve arena venues (the initial model never saw an arena), 90
    // minutes each, small crowds to keep the debug build quick; another
    // held out. The averaged update's noise std is z*C/n: with n = 6, 2 of
    // 13 runs lost most of the gain (held-out mse 0.89 and 0.94 against the
    // 0.88 bar: a flaky CI), with n = 12, 24 runs gave 0.667-0.757.
    let venues: Vec<Dataset> = (0..12)
        .map(|i| forecast_dataset_from(sim_config(VenueKind::Arena, 100 + i, 90, 1_500)).unwrap())
        .collect();
    let held_out = forecast_dataset_from(sim_config(VenueKind::Arena, 999, 90, 1_500)).unwrap();
    let before = held_out_mse(initial, &held_out);

    let (clip, z, rounds_n) = (0.5, 0.5, 8u32);
    let mut now = 1_000;
    for _ in 0..rounds_n {
        let round = store
            .open(
                &OpenParams {
                    model: FORECASTER_SPEC.name.into(),
                    min_nodes: venues.len() as u32,
                    clip_norm: clip,
                    noise_multiplier: z,
                    local_steps: 20,
                    learning_rate: 0.1,
                    deadline: std::time::Duration::from_secs(60),
                    secure: None,
                    event_day: None,
                },
                now,
            )
            .await
            .unwrap();
        let (global, _) = store
            .version(&round.model, round.base_version)
            .await
            .unwrap();
        for (i, data) in venues.iter().enumerate() {
            let (bytes, _) = federated::build_submission(&round.to_proto(), &global, data).unwrap();
            let out = store
                .submit(
                    &round.round_id,
                    &format!("venue-{i}"),
                    "node-1",
                    &bytes,
                    now + 1,
                )
                .await
                .unwrap();
            assert!(
                matches!(out, rounds::SubmitOutcome::Accepted { .. }),
                "{out:?}"
            );
        }
        let closed = rounds::close_due(&store, None, now + 60_000).await.unwrap();
        assert_eq!(closed[0].state, "published");
        now += 120_000;
    }
    let latest = store.latest(FORECASTER_SPEC.name).await.unwrap();
    assert_eq!(latest, 1 + rounds_n);
    let (after_bytes, card) = store.version(FORECASTER_SPEC.name, latest).await.unwrap();
    let after = held_out_mse(&after_bytes, &held_out);
    let card: serde_json::Value = serde_json::from_str(&card).unwrap();
    let eps = card["epsilon"].as_f64().unwrap();
    println!(
        "held-out forecaster mse: initial {before:.4} -> after {rounds_n} rounds {after:.4} \
         (clip {clip}, z {z}, {} venues, epsilon {eps:.2} at delta 1e-6)",
        venues.len()
    );
    assert!(
        after < 0.8 * before,
        "no 20% improvement: {before} -> {after}"
    );

    // The card's epsilon matches an independent accountant.
    assert_eq!(card["rounds"], rounds_n);
    let rho = f64::from(rounds_n) / (2.0 * z * z);
    assert!((card["privacy"]["rho"].as_f64().unwrap() - rho).abs() < 1e-9);
    let indep = cks_epsilon(rho, 1e-6);
    assert!(
        (eps - indep).abs() / indep < 2e-3,
        "card {eps} vs independent {indep}"
    );
    let p = RoundPrivacy::new(clip, z, 3).unwrap();
    assert!((p.round_rho().unwrap().get() - 1.0 / (2.0 * z * z)).abs() < 1e-9);

    // The published file loads as a model and in a generic safetensors reader.
    Mlp::from_safetensors(FORECASTER_SPEC, &after_bytes).unwrap();
    assert_eq!(
        kernel::parse(&after_bytes).unwrap().values.len(),
        FORECASTER_SPEC.parameters()
    );
}

/// A round over the real aggregator: the `ml` role opens it, both registered
/// nodes participate over mTLS, the deadline ticker publishes it and charges
/// the venue's ledger, `ml` pulls the version; other identities are refused.
#[tokio::test]
async fn a_round_over_mtls_grpc_publishes_charges_and_is_pulled_by_ml() {
    use tonic::Code;
    use veil_proto::{
        ListModelsRequest, ListOpenRoundsRequest, OpenRoundRequest, PullModelRequest,
        federated_client::FederatedClient,
    };
    use veil_tests::{TestEnv, VENUE};

    let env = TestEnv::start().await;
    let initial = embedded_weights(FORECASTER_SPEC.name).unwrap();
    Rounds::new(env.storage.clone(), 1e-6)
        .import_model(FORECASTER_SPEC.name, initial, None, 0)
        .await
        .unwrap();
    let client = |ch| FederatedClient::new(ch).max_decoding_message_size(64 << 20);
    let mut ml = client(env.channel(Some("ml")).await.unwrap());
    let mut organizer = client(env.channel(Some("organizer")).await.unwrap());
    let mut node1 = client(env.channel(Some("node-1")).await.unwrap());

    // Role rules: only ml opens rounds and pulls models; only nodes list
    // open rounds.
    let open = OpenRoundRequest {
        model: FORECASTER_SPEC.name.into(),
        min_nodes: 2,
        clip_norm: 0.5,
        noise_multiplier: 1.0,
        local_steps: 5,
        learning_rate: 0.1,
        deadline_s: 8,
        ..OpenRoundRequest::default()
    };
    for c in [&mut organizer, &mut node1] {
        let e = c.open_round(open.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    let pull = PullModelRequest {
        model: FORECASTER_SPEC.name.into(),
        version: 0,
    };
    for c in [&mut organizer, &mut node1] {
        let e = c.pull_model(pull.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    }
    let e = ml
        .list_open_rounds(ListOpenRoundsRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Local data first, so the round's deadline covers training only.
    let data: Vec<Dataset> = (0..2)
        .map(|i| forecast_dataset_from(sim_config(VenueKind::Arena, 40 + i, 30, 600)).unwrap())
        .collect();
    let round = ml.open_round(open.clone()).await.unwrap().into_inner();
    assert_eq!(round.base_version, 1);
    for (node, d) in ["node-1", "node-2"].into_iter().zip(data) {
        let out = federated::participate(env.channel(Some(node)).await.unwrap(), d, 10)
            .await
            .unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].accepted, "{node}: {out:?}");
    }

    // The ticker closes the round at its deadline and publishes version 2.
    let mut versions = Vec::new();
    for _ in 0..40 {
        versions = ml
            .list_models(ListModelsRequest {
                model: FORECASTER_SPEC.name.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .versions;
        if versions.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(versions.len(), 2, "round not published in time");

    let art = ml.pull_model(pull).await.unwrap().into_inner();
    assert_eq!(art.version, 2);
    let st = safetensors::SafeTensors::deserialize(&art.safetensors).unwrap();
    let params: usize = st
        .tensors()
        .iter()
        .map(|(_, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F32);
            t.shape().iter().product::<usize>()
        })
        .sum();
    assert_eq!(params, FORECASTER_SPEC.parameters());
    let card: serde_json::Value = serde_json::from_str(&art.card_json).unwrap();
    for key in [
        "model",
        "version",
        "parent",
        "rounds",
        "participants",
        "clip_norm",
        "noise_multiplier",
        "epsilon",
        "delta",
        "metric",
    ] {
        assert!(card.get(key).is_some(), "model card lacks {key}: {card}");
    }
    assert_eq!(card["model"], FORECASTER_SPEC.name);
    assert_eq!(card["version"], 2);
    assert_eq!(card["parent"], 1);
    assert_eq!(card["participants"], 2);
    assert_eq!(card["rounds"], 1);
    let rho = 1.0 / (2.0 * 1.0 * 1.0);
    assert!((cks_epsilon(rho, 1e-6) - card["epsilon"].as_f64().unwrap()).abs() < 0.01);

    // The venue's ledger was charged on the round's event day (today):
    // each of two updates is m / (2 z^2) = 1 as the aggregator sees it, at
    // an attendee's sensitivity 2C that is 4 each, 8 in all.
    let day = veil_aggregator::ledger::day_of(veil_common::now_ms());
    let rep = veil_aggregator::ledger::report(env.storage.reads(), VENUE, &day, None)
        .await
        .unwrap();
    let line = rep
        .lines
        .iter()
        .find(|l| l.0 == format!("model:{}", FORECASTER_SPEC.name))
        .unwrap_or_else(|| panic!("no model line in {rep:?}"));
    assert_eq!(line.1, rounds::TRAINING_PURPOSE);
    assert!((line.3 - 8.0).abs() < 1e-9, "{rep:?}");
    assert!(rep.spent_epsilon > 0.0);
    let charges: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE entry LIKE '%\"action\":\"round.charge\"%'",
    )
    .fetch_one(env.storage.reads())
    .await
    .unwrap();
    assert_eq!(charges, 1);
    env.stop().await;
}
