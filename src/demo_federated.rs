//! The demo's federated part: secure rounds (SecAgg+) over partner venues.
//!
//! After the arena's nodes finished, the aggregator serves again with
//! [`PARTNERS`] simulated partner arenas registered (one node each,
//! certificates from the demo's CA, the arena policy), imports the shipped
//! forecaster as version 1 with a public synthetic evaluation set, and the
//! `ml` role runs [`ROUNDS`] secure rounds over mTLS. Round r trains on the
//! partners' events of event day `D_r` (the days before the show): every
//! partner trains on its own occupancy history of that day, clips its
//! update, encodes it in integers with its share of discrete Gaussian
//! noise, masks it, and the aggregator learns only the sum. Then `ml` pulls
//! the last version into `DIR/models/<name>/<version>/`.
//!
//! # What it costs whom
//! * The model card: `ROUNDS / (2 z^2)` rho (node level: one venue's data
//!   of one round), epsilon at delta 1e-6.
//! * A partner's ledger, on each event day it trained: `(2 k)^2 rho_round`
//!   with k = 1 node, i.e. `2 / z^2` rho per attendee-day (see
//!   `veil_aggregator::rounds::venue_rho`).
//! * The arena itself does not train: its three nodes would cost its
//!   ledger `(2 * 3)^2 rho_round` on the show's day, more than its streams
//!   left. The demo prints both figures.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use veil_aggregator::rounds::{self, Charging, Rounds, kernel};
use veil_node::{
    federated::{self, secure::SecureIdentity},
    inference::{
        FORECASTER_SPEC, embedded_weights,
        train::{Dataset, forecast_dataset_from, sim_config},
    },
    simulate::VenueKind,
};
use veil_proto::{OpenRoundRequest, PullModelRequest, federated_client::FederatedClient};

/// Partner arenas, one node each.
pub const PARTNERS: usize = 24;
/// Secure rounds, one per event day.
pub const ROUNDS: usize = 5;
/// L2 clip norm C.
const CLIP: f64 = 0.5;
/// Noise multiplier z: a partner's ledger is charged `2 / z^2` rho per
/// round on the round's event day (epsilon 3.3 of the arena policy's 4.0 at
/// z = 3).
const NOISE_MULTIPLIER: f64 = 3.0;
const LOCAL_STEPS: u32 = 20;
const LEARNING_RATE: f64 = 0.1;
/// Size of each partner's simulated event (minutes, attendees): a whole
/// show (shorter ones teach the forecaster little about the evaluation
/// set's 90-minute arena show).
const EVENT_MINUTES: u64 = 90;
const EVENT_ATTENDEES: u32 = 1_500;

/// What the demo's rounds produced.
#[derive(Debug, Default)]
pub struct FederatedSummary {
    /// Model name.
    pub model: String,
    /// Rounds published / run.
    pub published: usize,
    /// Reasons of failed rounds.
    pub failures: Vec<String>,
    /// Final version.
    pub version: Option<u32>,
    /// The card's secure_aggregation line.
    pub secure_label: String,
    /// Epsilon and delta from the final model card.
    pub epsilon: Option<(f64, f64)>,
    /// (metric, before the first round, after the last).
    pub metric: Option<(String, f64, f64)>,
    /// A partner's ledger on its first training day: (day, model rho,
    /// spent epsilon, budget).
    pub partner_ledger: Option<(String, f64, f64, f64)>,
    /// What one round would cost the arena's ledger (rho), and what its
    /// streams left on the show's day (epsilon).
    pub arena: Option<(f64, f64)>,
    /// Where the pulled version was written.
    pub written: Option<std::path::PathBuf>,
    /// First and last event days.
    pub days: (String, String),
    /// Seconds taken.
    pub seconds: f64,
}

impl FederatedSummary {
    /// Human-readable lines.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "{PARTNERS} partner arenas (one node each) x {ROUNDS} secure rounds, one per event day {} .. {}: \
             {} of {ROUNDS} published by {} in {:.1} s (clip {CLIP}, z {NOISE_MULTIPLIER}, {LOCAL_STEPS} local steps)",
            self.days.0, self.days.1, self.published, self.secure_label, self.seconds
        )];
        for f in &self.failures {
            out.push(format!("failed: {f}"));
        }
        if let Some((name, before, after)) = &self.metric {
            out.push(format!(
                "{name} on the public synthetic evaluation set: {before:.4} before -> {after:.4} after ({:+.0}%)",
                100.0 * (after - before) / before
            ));
        }
        if let Some((eps, delta)) = self.epsilon {
            out.push(format!(
                "model card: epsilon {eps:.2} at delta {delta:e} after {} rounds (node level: one venue's data per round; \
                 distributed discrete Gaussian, zCDP); the aggregator saw only sums",
                self.published
            ));
        }
        if let Some((day, rho, spent, budget)) = &self.partner_ledger {
            out.push(format!(
                "each partner's ledger, per round, on that round's event day: rho {rho:.4} under model:{} \
                 (partner-01 on {day}: epsilon {spent:.2} of its {budget} per attendee-day)",
                self.model
            ));
        }
        if let Some((rho, left)) = self.arena {
            out.push(format!(
                "the arena's own nodes do not train: a round would cost its ledger rho {rho:.3} on the show's day \
                 ((2 x its nodes)^2 x the round's rho), more than the epsilon {left:.2} its streams left"
            ));
        }
        if let Some(p) = &self.written {
            out.push(format!(
                "pulled as role ml: {}/model.safetensors + model_card.json",
                p.display()
            ));
        }
        out
    }
}

/// A public evaluation set (tensors `x`, `y`) from a separate simulated
/// arena event, so the card can state the metric before and after.
fn eval_set(seed: u64) -> anyhow::Result<Vec<u8>> {
    let d = forecast_dataset_from(sim_config(VenueKind::Arena, seed, 90, 2_000))?;
    let n = d.y.len();
    anyhow::ensure!(n > 0, "empty evaluation set");
    let dim = d.x.len() / n;
    let values: Vec<f32> = d.x.iter().chain(&d.y).copied().collect();
    kernel::encode(
        &[("x".to_owned(), vec![n, dim]), ("y".to_owned(), vec![n])],
        &values,
        Default::default(),
    )
    .map_err(anyhow::Error::msg)
}

/// Each partner's simulated event of each round's day, `[round][partner]`,
/// on two threads.
fn partner_events(seed: u64) -> anyhow::Result<Vec<Vec<Dataset>>> {
    let jobs: Vec<(usize, usize)> = (0..ROUNDS)
        .flat_map(|r| (0..PARTNERS).map(move |p| (r, p)))
        .collect();
    let half = jobs.len().div_ceil(2);
    let run = |part: &[(usize, usize)]| -> anyhow::Result<Vec<Dataset>> {
        part.iter()
            .map(|&(r, p)| {
                let s = seed
                    .wrapping_mul(1_000_003)
                    .wrapping_add((r * PARTNERS + p) as u64 + 20_000);
                Ok(forecast_dataset_from(sim_config(
                    VenueKind::Arena,
                    s,
                    EVENT_MINUTES,
                    EVENT_ATTENDEES,
                ))?)
            })
            .collect()
    };
    let (a, b) = std::thread::scope(|s| {
        let h = s.spawn(|| run(&jobs[half..]));
        let a = run(&jobs[..half]);
        (a, h.join())
    });
    let b = b.map_err(|_| anyhow::anyhow!("simulation thread panicked"))?;
    let mut all = a?;
    all.extend(b?);
    let mut out: Vec<Vec<Dataset>> = (0..ROUNDS).map(|_| Vec::with_capacity(PARTNERS)).collect();
    for ((r, _), d) in jobs.into_iter().zip(all) {
        out[r].push(d);
    }
    Ok(out)
}

async fn channel(
    addr: std::net::SocketAddr,
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> anyhow::Result<Channel> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost")
        .identity(Identity::from_pem(cert, key));
    Ok(Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect()
        .await?)
}

/// Runs the secure rounds against the aggregator of `agg_cfg_path` (served
/// again on a free loopback port, with the partners appended to its
/// config). `show_day` is the arena's event day; `arena_nodes` its nodes
/// and `arena_left` the epsilon its streams left on that day.
pub fn run(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    agg_cfg_path: &Path,
    show_day: time::Date,
    (arena_nodes, arena_left): (usize, f64),
    seed: u64,
) -> anyhow::Result<FederatedSummary> {
    let started = std::time::Instant::now();
    let model = FORECASTER_SPEC.name;
    let initial = embedded_weights(model).context("no embedded forecaster")?;
    let pki = dir.join("pki");
    let ca_pem = std::fs::read(pki.join("ca.pem")).context("reading pki/ca.pem")?;
    let venue = |i: usize| format!("partner-{:02}", i + 1);
    let ids: Vec<String> = (0..PARTNERS)
        .map(|i| format!("spiffe://veil/venue/{}/node/node-1", venue(i)))
        .collect();
    let certs = veil_aggregator::pki::issue_clients_in_memory(&pki, &ids)?;
    let mut cfg_text = std::fs::read_to_string(agg_cfg_path)?;
    for i in 0..PARTNERS {
        cfg_text.push_str(&format!(
            "\n[[venue]]\nname = \"{}\"\nnodes = [\"node-1\"]\npolicy = \"policy.toml\"\n",
            venue(i)
        ));
    }
    std::fs::write(agg_cfg_path, cfg_text)?;
    let days: Vec<String> = (0..ROUNDS)
        .map(|r| (show_day - time::Duration::days((ROUNDS - r) as i64)).to_string())
        .collect();
    let eval = eval_set(seed.wrapping_add(1_000))?;
    let events = partner_events(seed)?;
    rt.block_on(async {
        let mut cfg = veil_aggregator::Config::load(agg_cfg_path)?;
        cfg.listen = "127.0.0.1:0".parse()?;
        let policies = cfg.policies().map_err(anyhow::Error::msg)?;
        let delta = cfg.rounds.delta;
        let bound = veil_aggregator::bind(cfg).await?;
        let addr = bound.local_addr();
        let audit = bound.audit().clone();
        let store = Rounds::new(bound.storage().clone(), delta).with_charging(Charging {
            policies,
            audit: audit.clone(),
        });
        if store.latest(model).await.is_err() {
            store
                .import_model(model, initial, Some(&eval), veil_common::now_ms())
                .await?;
        }
        let first_version = store.latest(model).await?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bound.serve(async {
            let _ = stop_rx.await;
        }));
        let result = async {
            let read =
                |f: &str| std::fs::read(pki.join(f)).with_context(|| format!("reading pki/{f}"));
            let mut ml = FederatedClient::new(
                channel(addr, &ca_pem, &read("ml.pem")?, &read("ml.key")?).await?,
            )
            .max_decoding_message_size(64 << 20);
            let mut partners = Vec::with_capacity(PARTNERS);
            for (i, (cert, key)) in certs.iter().enumerate() {
                let id = SecureIdentity::from_pem(
                    &venue(i),
                    "node-1",
                    cert.as_bytes(),
                    key.as_bytes(),
                    &ca_pem,
                )?;
                let ch = channel(addr, &ca_pem, cert.as_bytes(), key.as_bytes()).await?;
                partners.push((ch, Arc::new(id)));
            }
            let mut summary = FederatedSummary {
                model: model.to_owned(),
                days: (days[0].clone(), days[ROUNDS - 1].clone()),
                ..FederatedSummary::default()
            };
            let mut round_rho = 0.0;
            for (r, day_events) in events.into_iter().enumerate() {
                let round = ml
                    .open_round(OpenRoundRequest {
                        model: model.into(),
                        min_nodes: u32::try_from(PARTNERS)?,
                        clip_norm: CLIP,
                        noise_multiplier: NOISE_MULTIPLIER,
                        local_steps: LOCAL_STEPS,
                        learning_rate: LEARNING_RATE,
                        deadline_s: 120,
                        secure: true,
                        stage_timeout_s: 30,
                        event_day: days[r].clone(),
                        target_nodes: u32::try_from(PARTNERS)?,
                        ..OpenRoundRequest::default()
                    })
                    .await?
                    .into_inner();
                let mut tasks = Vec::with_capacity(PARTNERS);
                for ((ch, id), data) in partners.iter().zip(day_events) {
                    let (ch, id) = (ch.clone(), id.clone());
                    tasks.push(tokio::spawn(async move {
                        federated::participate_with(ch, move |_| data.clone(), 10, Some(&id)).await
                    }));
                }
                let mut published = None;
                for t in tasks {
                    for o in t.await?? {
                        if o.round_id == round.round_id {
                            published = Some((o.accepted, o.reason));
                        }
                    }
                }
                match published {
                    Some((true, _)) => summary.published += 1,
                    Some((false, why)) => {
                        summary.failures.push(format!("{}: {why}", round.round_id))
                    }
                    None => summary
                        .failures
                        .push(format!("{}: no partner joined", round.round_id)),
                }
            }
            let art = ml
                .pull_model(PullModelRequest {
                    model: model.into(),
                    version: 0,
                })
                .await?
                .into_inner();
            let card: serde_json::Value = serde_json::from_str(&art.card_json)?;
            if art.version > first_version {
                let out = dir.join("models").join(model).join(art.version.to_string());
                rounds::cli::write_artifact(&out, &art.safetensors, &art.card_json)?;
                summary.written = Some(out);
                summary.version = Some(art.version);
                summary.epsilon = card["epsilon"].as_f64().zip(card["delta"].as_f64());
                summary.secure_label = card["secure_aggregation"].as_str().unwrap_or("").to_owned();
                round_rho = card["privacy"]["round_rho"].as_f64().unwrap_or(0.0);
                // Before the first round (version 1) and after the last.
                let ev = kernel::parse(&eval).map_err(anyhow::Error::msg)?;
                let (w1, _) = store.version(model, first_version).await?;
                let before =
                    kernel::evaluate(&kernel::parse(&w1).map_err(anyhow::Error::msg)?, &ev)
                        .map_err(anyhow::Error::msg)?;
                let after = kernel::evaluate(
                    &kernel::parse(&art.safetensors).map_err(anyhow::Error::msg)?,
                    &ev,
                )
                .map_err(anyhow::Error::msg)?;
                summary.metric = Some((before.0, before.1, after.1));
            }
            let rep =
                veil_aggregator::ledger::report(store.pool(), &venue(0), &days[0], None).await?;
            if let Some(line) = rep
                .lines
                .iter()
                .find(|l| l.0 == rounds::ledger_metric(model))
            {
                summary.partner_ledger = Some((
                    days[0].clone(),
                    line.3,
                    rep.spent_epsilon,
                    rep.budget_epsilon,
                ));
            }
            let k = (2 * arena_nodes) as f64;
            summary.arena = Some((k * k * round_rho, arena_left));
            anyhow::Ok(summary)
        }
        .await;
        let _ = stop_tx.send(());
        server.await??;
        let mut summary = result?;
        summary.seconds = started.elapsed().as_secs_f64();
        Ok(summary)
    })
}
