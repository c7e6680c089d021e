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
    let url = format!("sqlite://{}", dir.path().join("agg.db").display());
    let storage = veil_aggregator::storage::Storage::open(&url).await.unwrap();
    let store = Rounds::new(storage.pool().clone(), 1e-6);
    let initial = embedded_weights(FORECASTER_SPEC.name).unwrap();
    store
        .import_model(FORECASTER_SPEC.name, initial, None, 0)
        .await
        .unwrap();

    // Three arena venues (the initial model never saw an arena), 90 minutes
    // each, small crowds to keep the debug build quick; a fourth held out.
    let venues: Vec<Dataset> = (0..3)
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
                    min_nodes: 3,
                    clip_norm: clip,
                    noise_multiplier: z,
                    local_steps: 20,
                    learning_rate: 0.1,
                    deadline: std::time::Duration::from_secs(60),
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
         (clip {clip}, z {z}, 3 venues, epsilon {eps:.2} at delta 1e-6)"
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
