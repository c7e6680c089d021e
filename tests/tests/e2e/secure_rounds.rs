//! Secure rounds (SecAgg+) end to end over real mTLS gRPC: nodes run the
//! stages with their own certificates, the aggregator learns only the sum;
//! the unmasked sum is the plain FedAvg of the clipped updates within the
//! fixed-point error plus the distributed noise; dropouts at each stage up
//! to the threshold's tolerance recover and more fail without unmasking;
//! replayed, wrong-round, wrong-shape and out-of-range messages and
//! substituted keys are refused with a status naming what was wrong.

// The stage drivers below are test helpers: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use tonic::{Code, Status, transport::Channel};
use veil_aggregator::rounds::Rounds;
use veil_node::{
    federated::{self, secure::SecureIdentity},
    inference::{
        FORECASTER_SPEC, embedded_weights,
        train::{Dataset, forecast_dataset_from, sim_config},
    },
    simulate::VenueKind,
};
use veil_proto::{
    AdvertiseKeysRequest, ListModelsRequest, OpenRoundRequest, PullModelRequest, Round,
    SecureRoundRef, federated_client::FederatedClient, secagg as wire,
};
use veil_secagg::{Client, KeyAdvertisement, SecAggError};
use veil_tests::{ARENA_POLICY, TestEnv, VENUE};

/// The per-window test policy with the largest day budget a policy may
/// state, so that rounds with little noise can be charged.
fn big_budget_policy() -> String {
    ARENA_POLICY.replace("epsilon_per_day = 2500.0", "epsilon_per_day = 100000.0")
}

type Fed = FederatedClient<Channel>;

async fn fed(env: &TestEnv, name: &str) -> Fed {
    FederatedClient::new(env.channel(Some(name)).await.unwrap()).max_decoding_message_size(64 << 20)
}

fn identity(env: &TestEnv, node: &str) -> SecureIdentity {
    let read = |f: String| std::fs::read(env.pki.join(f)).unwrap();
    SecureIdentity::from_pem(
        VENUE,
        node,
        &read(format!("{node}.pem")),
        &read(format!("{node}.key")),
        &read("ca.pem".into()),
    )
    .unwrap()
}

async fn import_forecaster(env: &TestEnv) {
    Rounds::new(env.storage.clone(), 1e-6)
        .import_model(
            FORECASTER_SPEC.name,
            embedded_weights(FORECASTER_SPEC.name).unwrap(),
            None,
            0,
        )
        .await
        .unwrap();
}

fn secure_open(min_nodes: u32, z: f64, threshold: u32, stage_s: u32) -> OpenRoundRequest {
    OpenRoundRequest {
        model: FORECASTER_SPEC.name.into(),
        min_nodes,
        clip_norm: 0.5,
        noise_multiplier: z,
        local_steps: 5,
        learning_rate: 0.1,
        deadline_s: 60,
        secure: true,
        threshold,
        stage_timeout_s: stage_s,
        event_day: "2026-03-14".into(),
        ..OpenRoundRequest::default()
    }
}

/// Calls `f` again while it answers UNAVAILABLE (stage still open).
async fn poll<T, F, Fut>(mut f: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
{
    for _ in 0..20 {
        match f().await {
            Err(s) if s.code() == Code::Unavailable => {}
            other => return other.map(tonic::Response::into_inner),
        }
    }
    Err(Status::deadline_exceeded("stage never closed"))
}

fn rref(round: &Round) -> SecureRoundRef {
    SecureRoundRef {
        round_id: round.round_id.clone(),
    }
}

/// One node driven stage by stage (so a test can stop it anywhere).
struct Party {
    id: SecureIdentity,
    c: Fed,
    sa: Option<Client>,
    adv: Option<KeyAdvertisement>,
}

impl Party {
    async fn new(env: &TestEnv, node: &str) -> Self {
        Self {
            id: identity(env, node),
            c: fed(env, node).await,
            sa: None,
            adv: None,
        }
    }

    async fn advertise(&mut self, round: &Round) -> Result<(), Status> {
        let cfg = federated::secure::round_config(round).unwrap();
        let (sa, adv) = Client::new(cfg, self.id.signer(), self.id.ca().clone()).unwrap();
        self.sa = Some(sa);
        self.adv = Some(adv.clone());
        self.c
            .advertise_keys(AdvertiseKeysRequest {
                advertisement: Some(wire::advert_to(&adv)),
            })
            .await
            .map(|_| ())
    }

    async fn share(&mut self, round: &Round) -> Result<(), Status> {
        let c = self.c.clone();
        let nk = poll(|| {
            let mut c = c.clone();
            let r = rref(round);
            async move { c.fetch_neighbour_keys(r).await }
        })
        .await?;
        let roster: Vec<_> = nk
            .roster
            .iter()
            .map(|s| veil_secagg::NodeIdentity::parse(s).unwrap())
            .collect();
        let keys: Vec<_> = nk
            .keys
            .into_iter()
            .map(|k| wire::advert_from(k).unwrap())
            .collect();
        let sa = self.sa.as_mut().unwrap();
        let msg = sa
            .share_keys_with(&roster, &keys, rustls_pki_types::UnixTime::now())
            .unwrap();
        self.c
            .submit_shares(wire::shares_to(&msg))
            .await
            .map(|_| ())
    }

    async fn mask(&mut self, round: &Round, update: &[f32]) -> Result<(), Status> {
        let c = self.c.clone();
        let d = poll(|| {
            let mut c = c.clone();
            let r = rref(round);
            async move { c.fetch_shares(r).await }
        })
        .await?;
        let d = wire::delivery_from(self.id.node(), d).unwrap();
        let sa = self.sa.as_mut().unwrap();
        sa.receive_shares(&d).unwrap();
        let enc = federated::secure::round_config(round).unwrap().encoding;
        let encoded = veil_secagg::encode(update, &enc).unwrap();
        let masked = sa.masked_input(&encoded).unwrap();
        self.c
            .submit_masked_input(wire::masked_to(&masked))
            .await
            .map(|_| ())
    }

    async fn unmask(&mut self, round: &Round) -> Result<(), Status> {
        let c = self.c.clone();
        let req = poll(|| {
            let mut c = c.clone();
            let r = rref(round);
            async move { c.fetch_unmask_request(r).await }
        })
        .await?;
        let req = wire::unmask_request_from(req).unwrap();
        let resp = self.sa.as_mut().unwrap().unmask(&req).unwrap();
        self.c
            .submit_unmask_shares(wire::unmask_to(&resp))
            .await
            .map(|_| ())
    }
}

async fn result(c: &Fed, round: &Round) -> veil_proto::SecureResult {
    let c = c.clone();
    poll(|| {
        let mut c = c.clone();
        let r = rref(round);
        async move { c.fetch_secure_result(r).await }
    })
    .await
    .unwrap()
}

/// A deterministic float update of the forecaster's size; node `i`'s is
/// long enough to be clipped when `i` is odd.
fn update(i: usize) -> Vec<f32> {
    let d = FORECASTER_SPEC.parameters();
    let scale = if i % 2 == 1 { 0.2 } else { 0.02 };
    (0..d)
        .map(|j| (((i * 31 + j * 17) % 23) as f32 / 11.0 - 1.0) * scale)
        .collect()
}

fn clipped(u: &[f32], c: f64) -> Vec<f64> {
    let norm = u.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
    let s = if norm > c { c / norm } else { 1.0 };
    u.iter().map(|&x| f64::from(x) * s).collect()
}

async fn weights(ml: &mut Fed, version: u32) -> Vec<f32> {
    let a = ml
        .pull_model(PullModelRequest {
            model: FORECASTER_SPEC.name.into(),
            version,
        })
        .await
        .unwrap()
        .into_inner();
    veil_aggregator::rounds::kernel::parse(&a.safetensors)
        .unwrap()
        .values
}

async fn card(ml: &mut Fed, version: u32) -> serde_json::Value {
    let a = ml
        .pull_model(PullModelRequest {
            model: FORECASTER_SPEC.name.into(),
            version,
        })
        .await
        .unwrap()
        .into_inner();
    serde_json::from_str(&a.card_json).unwrap()
}

/// Five nodes run a whole secure round with their own training
/// (`participate_with`, concurrently); then a second round with known
/// updates checks the unmasked average against plain FedAvg, the ledger
/// charge on the event day and the audit trail.
#[tokio::test]
async fn a_secure_round_over_mtls_publishes_the_fedavg_of_clipped_updates_and_charges_the_event_day()
 {
    let env = TestEnv::start_with_nodes(&big_budget_policy(), "", 5).await;
    import_forecaster(&env).await;
    let mut ml = fed(&env, "ml").await;
    let nodes: Vec<String> = (1..=5).map(|i| format!("node-{i}")).collect();

    // Round 1: the node library end to end (training, encoding, masking).
    let data: Vec<Dataset> = (0..5)
        .map(|i| forecast_dataset_from(sim_config(VenueKind::Arena, 60 + i, 30, 400)).unwrap())
        .collect();
    let round = ml
        .open_round(secure_open(3, 0.5, 0, 10))
        .await
        .unwrap()
        .into_inner();
    assert!(round.secure);
    assert_eq!(round.event_day, "2026-03-14");
    assert_eq!(
        round.secure_params.as_ref().unwrap().stage,
        "advertise_keys"
    );
    let mut tasks = Vec::new();
    for (node, d) in nodes.iter().zip(data) {
        let ch = env.channel(Some(node)).await.unwrap();
        let id = identity(&env, node);
        tasks.push(tokio::spawn(async move {
            federated::participate_with(ch, move |_| d.clone(), 10, Some(&id)).await
        }));
    }
    for t in tasks {
        let out = t.await.unwrap().unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].accepted, "{out:?}");
    }
    let c1 = card(&mut ml, 2).await;
    assert_eq!(
        c1["secure_aggregation"], "secagg+ (threshold 4 of 5)",
        "{c1}"
    );
    assert_eq!(c1["participants"], 5);
    assert_eq!(c1["event_day"], "2026-03-14");
    assert!(
        c1["privacy"]
            .get("per_update_rho_seen_by_aggregator")
            .is_none()
    );

    // Round 2: known updates, little noise.
    let round = ml
        .open_round(secure_open(3, 0.05, 0, 10))
        .await
        .unwrap()
        .into_inner();
    let mut parties = Vec::new();
    for n in &nodes {
        parties.push(Party::new(&env, n).await);
    }
    for p in &mut parties {
        p.advertise(&round).await.unwrap();
    }
    for p in &mut parties {
        p.share(&round).await.unwrap();
    }
    for (i, p) in parties.iter_mut().enumerate() {
        p.mask(&round, &update(i)).await.unwrap();
    }
    for p in &mut parties {
        p.unmask(&round).await.unwrap();
    }
    let res = result(&parties[0].c, &round).await;
    assert_eq!(res.version, 3, "{res:?}");
    assert_eq!((res.contributors, res.dropped), (5, 0));
    let before = weights(&mut ml, 2).await;
    let after = weights(&mut ml, 3).await;
    let enc = federated::secure::round_config(&round).unwrap().encoding;
    let mut want = vec![0f64; before.len()];
    for i in 0..5 {
        for (w, x) in want.iter_mut().zip(clipped(&update(i), 0.5)) {
            *w += x;
        }
    }
    // The residual of the unmasked sum against the plain sum of the
    // clipped updates: the rounding error (below n * gamma per coordinate)
    // plus the sum of five discrete Gaussian shares, std
    // sqrt(5) * node_sigma * gamma. Garbage from a mask left in would be of
    // the order of 2^31 gamma.
    let sigma = 5f64.sqrt() * enc.node_sigma() * enc.gamma();
    let resid: Vec<f64> = after
        .iter()
        .zip(&before)
        .zip(&want)
        .map(|((a, b), w)| f64::from(a - b) * 5.0 - w)
        .collect();
    let rms = (resid.iter().map(|r| r * r).sum::<f64>() / resid.len() as f64).sqrt();
    let mean = resid.iter().sum::<f64>() / resid.len() as f64;
    assert!(
        rms < 1.5 * sigma + 5.0 * enc.gamma() && rms > 0.5 * sigma,
        "residual rms {rms}, noise std {sigma}"
    );
    assert!(mean.abs() < 4.0 * sigma / (resid.len() as f64).sqrt() + 5.0 * enc.gamma());
    let c2 = card(&mut ml, 3).await;
    let round_rho = c2["privacy"]["round_rho"].as_f64().unwrap();
    // The DDG bound is the central Gaussian's 1/(2 z^2) up to a tiny term.
    assert!((200.0..202.0).contains(&round_rho), "{round_rho}");

    // The venue's five nodes were charged (2 * 5)^2 * round_rho per round
    // on the round's event day, nothing today.
    let rep = veil_aggregator::ledger::report(env.storage.reads(), VENUE, "2026-03-14", None)
        .await
        .unwrap();
    let line = rep
        .lines
        .iter()
        .find(|l| l.0 == format!("model:{}", FORECASTER_SPEC.name))
        .unwrap_or_else(|| panic!("no model line on the event day: {rep:?}"));
    let r1 = c1["privacy"]["round_rho"].as_f64().unwrap();
    let want_rho = 100.0 * (r1 + round_rho);
    assert!((line.3 - want_rho).abs() < 1e-6 * want_rho, "{rep:?}");
    let today = veil_aggregator::ledger::day_of(veil_common::now_ms());
    let rep = veil_aggregator::ledger::report(env.storage.reads(), VENUE, &today, None)
        .await
        .unwrap();
    assert!(
        !rep.lines.iter().any(|l| l.0.starts_with("model:")),
        "{rep:?}"
    );

    // The audit log records each stage, without key material.
    let entries: Vec<String> = sqlx::query_scalar("SELECT entry FROM audit_log ORDER BY seq")
        .fetch_all(env.storage.reads())
        .await
        .unwrap();
    for action in [
        "round.secure.keys",
        "round.secure.shares",
        "round.secure.masked",
        "round.secure.unmask",
        "round.publish",
        "round.charge",
    ] {
        let n = entries
            .iter()
            .filter(|e| e.contains(&format!("\"action\":\"{action}\"")))
            .count();
        assert_eq!(n, 2, "{action}: {n} entries");
    }
    let keys: Vec<String> = parties
        .iter()
        .flat_map(|p| {
            let a = p.adv.as_ref().unwrap();
            [hex(&a.mask_public), hex(&a.encryption_public)]
        })
        .collect();
    for e in entries.iter().filter(|e| e.contains("round.secure")) {
        assert!(!keys.iter().any(|k| e.contains(k)), "key material in {e}");
    }
    let versions = ml
        .list_models(ListModelsRequest {
            model: FORECASTER_SPEC.name.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(versions.len(), 3);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Which parties stop, and where.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// Advertised, then never shared.
    Shares,
    /// Shared, then never masked.
    Mask,
    /// Masked, then never answered the unmask request.
    Unmask,
}

/// Runs one secure round of five nodes (threshold 3 over the complete
/// graph, min_nodes 3) where the first `k` stop at `at`.
async fn round_with_drops(
    env: &TestEnv,
    ml: &mut Fed,
    at: Stop,
    k: usize,
) -> (Round, veil_proto::SecureResult) {
    let round = ml
        .open_round(secure_open(3, 1.0, 3, 1))
        .await
        .unwrap()
        .into_inner();
    let mut parties = Vec::new();
    for i in 1..=5 {
        parties.push(Party::new(env, &format!("node-{i}")).await);
    }
    let stops =
        |i: usize, d: Stop| i < k && std::mem::discriminant(&at) == std::mem::discriminant(&d);
    for p in &mut parties {
        p.advertise(&round).await.unwrap();
    }
    for (i, p) in parties.iter_mut().enumerate() {
        if !stops(i, Stop::Shares) {
            p.share(&round).await.unwrap();
        }
    }
    let alive = |i: usize| !(i < k && matches!(at, Stop::Shares | Stop::Mask));
    let mut failed_early = None;
    for (i, p) in parties.iter_mut().enumerate() {
        if alive(i)
            && let Err(e) = p.mask(&round, &update(i)).await
        {
            failed_early = Some(e);
            break;
        }
    }
    if failed_early.is_none() {
        for (i, p) in parties.iter_mut().enumerate() {
            if alive(i)
                && !stops(i, Stop::Unmask)
                && let Err(e) = p.unmask(&round).await
            {
                failed_early = Some(e);
                break;
            }
        }
    }
    let res = result(&parties[4].c, &round).await;
    if let Some(e) = failed_early {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("failed"), "{e:?}");
    }
    (round, res)
}

/// Dropouts at each stage up to n - t = 2 of 5 recover; three after
/// masking leave too few unmasking shares, three before masking too few
/// inputs: the round fails, nothing is unmasked or published.
#[tokio::test]
async fn secure_round_dropouts_up_to_the_threshold_recover_and_more_fail_cleanly() {
    let env = TestEnv::start_with_nodes(&big_budget_policy(), "", 5).await;
    import_forecaster(&env).await;
    let mut ml = fed(&env, "ml").await;
    let mut version = 1;
    for (at, contributors) in [(Stop::Shares, 3), (Stop::Mask, 3), (Stop::Unmask, 5)] {
        let (round, res) = round_with_drops(&env, &mut ml, at, 2).await;
        let r = res.round.clone().unwrap();
        assert_eq!(r.state, "published", "{at:?}: {res:?}");
        version += 1;
        assert_eq!(res.version, version, "{at:?}");
        assert_eq!(res.contributors, contributors, "{at:?}: {res:?}");
        let c = card(&mut ml, version).await;
        assert_eq!(c["secure_aggregation"], "secagg+ (threshold 3 of 5)");
        assert_eq!(c["round_id"], round.round_id);
    }
    for (at, stage) in [(Stop::Mask, "masked inputs"), (Stop::Unmask, "unmasking")] {
        let (_, res) = round_with_drops(&env, &mut ml, at, 3).await;
        let r = res.round.unwrap();
        assert_eq!(r.state, "failed", "{at:?}");
        assert!(r.reason.contains(stage), "{at:?}: {}", r.reason);
        assert!(r.reason.contains("nothing"), "{}", r.reason);
        assert_eq!(res.version, 0);
    }
    // Nothing was published by the failed rounds.
    let versions = ml
        .list_models(ListModelsRequest {
            model: FORECASTER_SPEC.name.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .versions;
    assert_eq!(versions.len(), 4);
}

/// Every refusal names what was wrong; nothing a peer sends breaks the
/// round for the others.
#[tokio::test]
async fn secure_round_refuses_replays_wrong_rounds_wrong_shapes_out_of_range_and_substituted_keys()
{
    let env = TestEnv::start_with_nodes(&big_budget_policy(), "", 3).await;
    import_forecaster(&env).await;
    let mut ml = fed(&env, "ml").await;
    let round = ml
        .open_round(secure_open(3, 1.0, 0, 5))
        .await
        .unwrap()
        .into_inner();
    let other = ml
        .open_round(secure_open(3, 1.0, 0, 5))
        .await
        .unwrap()
        .into_inner();
    let mut p: Vec<Party> = Vec::new();
    for i in 1..=3 {
        p.push(Party::new(&env, &format!("node-{i}")).await);
    }
    let refused = |r: Result<(), Status>, code: Code, words: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(
            e.message().contains(words),
            "{:?} does not say {words:?}",
            e.message()
        );
    };

    // A substituted key: node-1's advertisement with another mask key.
    let cfg = federated::secure::round_config(&round).unwrap();
    let (_, adv) = Client::new(cfg.clone(), p[0].id.signer(), p[0].id.ca().clone()).unwrap();
    let mut swapped = wire::advert_to(&adv);
    swapped.mask_public = vec![9; 32];
    refused(
        p[0].c
            .advertise_keys(AdvertiseKeysRequest {
                advertisement: Some(swapped),
            })
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "signature does not verify",
    );
    // Wrong shape: a 31-byte key.
    let mut short = wire::advert_to(&adv);
    short.encryption_public.pop();
    refused(
        p[0].c
            .advertise_keys(AdvertiseKeysRequest {
                advertisement: Some(short),
            })
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "expected 32 bytes",
    );
    // Wrong round: round 1's signed keys sent to round 2.
    let mut moved = wire::advert_to(&adv);
    moved.round_id = other.round_id.clone();
    refused(
        p[0].c
            .advertise_keys(AdvertiseKeysRequest {
                advertisement: Some(moved),
            })
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "signature does not verify",
    );
    // Another node's signed advertisement over this node's connection.
    refused(
        p[1].c
            .advertise_keys(AdvertiseKeysRequest {
                advertisement: Some(wire::advert_to(&adv)),
            })
            .await
            .map(|_| ()),
        Code::PermissionDenied,
        "certificate",
    );
    // A masked input before its stage.
    refused(
        p[0].c
            .submit_masked_input(veil_proto::SubmitMaskedInputRequest {
                round_id: round.round_id.clone(),
                values: vec![0; 4 * FORECASTER_SPEC.parameters()],
            })
            .await
            .map(|_| ()),
        Code::FailedPrecondition,
        "stage",
    );
    // A plain round and an unknown one have no secure stages.
    let plain = ml
        .open_round(OpenRoundRequest {
            secure: false,
            ..secure_open(1, 1.0, 0, 0)
        })
        .await
        .unwrap()
        .into_inner();
    refused(
        p[0].c.fetch_neighbour_keys(rref(&plain)).await.map(|_| ()),
        Code::FailedPrecondition,
        "not a secure round",
    );
    refused(
        p[0].c
            .fetch_neighbour_keys(SecureRoundRef {
                round_id: "no-such-round".into(),
            })
            .await
            .map(|_| ()),
        Code::FailedPrecondition,
        "unknown round",
    );
    // An unregistered node (valid certificate, unknown identity).
    let mut stranger = fed(&env, "node-4").await;
    let e = stranger
        .fetch_neighbour_keys(rref(&round))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // The genuine advertisements; a replay is refused.
    for q in &mut p {
        q.advertise(&round).await.unwrap();
    }
    let again = p[0].adv.clone().unwrap();
    refused(
        p[0].c
            .advertise_keys(AdvertiseKeysRequest {
                advertisement: Some(wire::advert_to(&again)),
            })
            .await
            .map(|_| ()),
        Code::FailedPrecondition,
        "stage",
    );

    // A substituted key in the roster the node fetches is detected by the
    // node itself.
    let mut nk = p[0]
        .c
        .fetch_neighbour_keys(rref(&round))
        .await
        .unwrap()
        .into_inner();
    let roster: Vec<_> = nk
        .roster
        .iter()
        .map(|s| veil_secagg::NodeIdentity::parse(s).unwrap())
        .collect();
    let victim = nk
        .keys
        .iter()
        .position(|k| k.node != p[0].id.node().as_str())
        .unwrap();
    nk.keys[victim].mask_public = vec![5; 32];
    let keys: Vec<_> = nk
        .keys
        .into_iter()
        .map(|k| wire::advert_from(k).unwrap())
        .collect();
    let (mut probe, _) = Client::new(cfg, p[0].id.signer(), p[0].id.ca().clone()).unwrap();
    let err = probe
        .share_keys_with(&roster, &keys, rustls_pki_types::UnixTime::now())
        .unwrap_err();
    assert!(matches!(err, SecAggError::BadAdvertisement { .. }), "{err}");

    // Wrong shape: shares of the wrong length or for too few neighbours.
    for q in &mut p[1..] {
        q.share(&round).await.unwrap();
    }
    let c = p[0].c.clone();
    let nk = poll(|| {
        let mut c = c.clone();
        let r = rref(&round);
        async move { c.fetch_neighbour_keys(r).await }
    })
    .await
    .unwrap();
    let roster: Vec<_> = nk
        .roster
        .iter()
        .map(|s| veil_secagg::NodeIdentity::parse(s).unwrap())
        .collect();
    let keys: Vec<_> = nk
        .keys
        .into_iter()
        .map(|k| wire::advert_from(k).unwrap())
        .collect();
    let msg = p[0]
        .sa
        .as_mut()
        .unwrap()
        .share_keys_with(&roster, &keys, rustls_pki_types::UnixTime::now())
        .unwrap();
    let mut bad = wire::shares_to(&msg);
    bad.shares[0].ciphertext.pop();
    refused(
        p[0].c.submit_shares(bad).await.map(|_| ()),
        Code::InvalidArgument,
        "expected length",
    );
    let mut fewer = wire::shares_to(&msg);
    fewer.shares.pop();
    refused(
        p[0].c.submit_shares(fewer).await.map(|_| ()),
        Code::InvalidArgument,
        "expected length",
    );
    p[0].c.submit_shares(wire::shares_to(&msg)).await.unwrap();
    refused(
        p[0].c
            .submit_shares(wire::shares_to(&msg))
            .await
            .map(|_| ()),
        Code::FailedPrecondition,
        "stage",
    );

    // Masked inputs: wrong length, then the real one, then a replay.
    let d = poll(|| {
        let mut c = c.clone();
        let r = rref(&round);
        async move { c.fetch_shares(r).await }
    })
    .await
    .unwrap();
    let d = wire::delivery_from(p[0].id.node(), d).unwrap();
    let sa = p[0].sa.as_mut().unwrap();
    sa.receive_shares(&d).unwrap();
    let enc = federated::secure::round_config(&round).unwrap().encoding;
    let masked = sa
        .masked_input(&veil_secagg::encode(&update(0), &enc).unwrap())
        .unwrap();
    let mut wrong = wire::masked_to(&masked);
    wrong.values.truncate(4 * 10);
    refused(
        p[0].c.submit_masked_input(wrong).await.map(|_| ()),
        Code::InvalidArgument,
        "expected length",
    );
    let mut ragged = wire::masked_to(&masked);
    ragged.values.pop();
    refused(
        p[0].c.submit_masked_input(ragged).await.map(|_| ()),
        Code::InvalidArgument,
        "whole number",
    );
    p[0].c
        .submit_masked_input(wire::masked_to(&masked))
        .await
        .unwrap();
    refused(
        p[0].c
            .submit_masked_input(wire::masked_to(&masked))
            .await
            .map(|_| ()),
        Code::AlreadyExists,
        "replayed",
    );
    for (i, q) in p.iter_mut().enumerate().skip(1) {
        q.mask(&round, &update(i)).await.unwrap();
    }

    // Unmasking shares: an out-of-range kind, a wrong length, then the
    // real ones; the round still publishes.
    let req = poll(|| {
        let mut c = c.clone();
        let r = rref(&round);
        async move { c.fetch_unmask_request(r).await }
    })
    .await
    .unwrap();
    let req = wire::unmask_request_from(req).unwrap();
    let resp = p[0].sa.as_mut().unwrap().unmask(&req).unwrap();
    let mut kind = wire::unmask_to(&resp);
    kind.shares[0].kind = 7;
    refused(
        p[0].c.submit_unmask_shares(kind).await.map(|_| ()),
        Code::InvalidArgument,
        "kind",
    );
    let mut short = wire::unmask_to(&resp);
    short.shares[0].share.pop();
    refused(
        p[0].c.submit_unmask_shares(short).await.map(|_| ()),
        Code::InvalidArgument,
        "expected length",
    );
    p[0].c
        .submit_unmask_shares(wire::unmask_to(&resp))
        .await
        .unwrap();
    for q in &mut p[1..] {
        q.unmask(&round).await.unwrap();
    }
    let res = result(&p[0].c, &round).await;
    assert_eq!(res.round.as_ref().unwrap().state, "published", "{res:?}");

    // Refusals are audited.
    let refusals: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE entry LIKE '%\"action\":\"round.secure.refuse\"%'",
    )
    .fetch_one(env.storage.reads())
    .await
    .unwrap();
    assert!(refusals >= 8, "{refusals} refusals audited");
}
