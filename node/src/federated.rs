//! Federated training on the node: join the aggregator's open rounds, train
//! the global model locally with candle autograd on this node's own recent
//! windows (labels are what actually happened later), clip the update and add
//! this node's share of Gaussian noise (OpenDP, via
//! [`veil_privacy::model_update`]), then submit it.
//!
//! Only the clipped, noised update leaves the node; the local examples, the
//! raw update and its norm never do, and are never logged. In a secure
//! round ([`secure`]) the update leaves only encoded in integers, noised
//! and masked: the aggregator learns the sum of the nodes' updates alone.
//!
//! A round names the event day its data belongs to (`Round.event_day`):
//! the caller trains on that day's examples only, since the venue's ledger
//! is charged on that day.

pub mod secure;

use std::collections::HashMap;

use tonic::transport::Channel;
use veil_privacy::model_update::{RoundPrivacy, privatize_update};
use veil_proto::{
    FetchGlobalModelRequest, ListOpenRoundsRequest, Round, SubmitUpdateRequest,
    federated_client::FederatedClient,
};

use crate::inference::{
    AUDIO_SPEC, FORECASTER_SPEC, InferenceError, MlpSpec, ZoneHistory, forecast_dataset, mlp,
    train::{self, Dataset, Optim, TrainParams},
};

/// How long a node keeps re-sending an update the aggregator answered busy
/// (its request-byte budgets full); past it the round goes on without us.
const BUSY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// Errors of a federated round on the node.
#[derive(Debug, thiserror::Error)]
pub enum FederatedError {
    /// Training or model files failed.
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// Clipping or noise failed.
    #[error("privacy: {0}")]
    Privacy(#[from] veil_privacy::PrivacyError),
    /// The aggregator refused or failed a call.
    #[error("aggregator: {0}")]
    Rpc(#[from] tonic::Status),
    /// The round names a model this node cannot train.
    #[error("model {0} is not trainable on this node")]
    UnknownModel(String),
    /// A round parameter is out of range.
    #[error("round parameter: {0}")]
    Round(String),
    /// A blocking task failed.
    #[error("training task: {0}")]
    Task(String),
    /// The secure-aggregation protocol refused a step (a key that does not
    /// verify, a share that does not decrypt, an unsafe unmask request...).
    #[error("secure aggregation: {0}")]
    SecureAggregation(String),
}

/// The spec of a model the node knows, by name.
pub fn spec_by_name(name: &str) -> Option<MlpSpec> {
    [AUDIO_SPEC, FORECASTER_SPEC]
        .into_iter()
        .find(|s| s.name == name)
}

/// The forecaster's local training examples from this node's zone
/// histories: every minute whose occupancy 10 minutes later is known.
pub fn forecaster_dataset<'a>(histories: impl IntoIterator<Item = &'a ZoneHistory>) -> Dataset {
    let mut d = Dataset::default();
    for h in histories {
        let (series, elapsed0) = h.series_with_offset();
        let (x, y) = forecast_dataset(&series, elapsed0);
        d.x.extend(x);
        d.y.extend(y);
    }
    d
}

/// A local update before privatisation (stays on the node).
#[derive(Debug, Clone, PartialEq)]
pub struct LocalUpdate {
    /// Model name.
    pub model: String,
    /// (tensor name, shape, trained - global), canonical order.
    pub delta: Vec<mlp::NamedTensor>,
    /// Local loss before training.
    pub loss_before: f64,
    /// Local loss after training.
    pub loss_after: f64,
    /// Local examples used.
    pub examples: usize,
}

/// Trains `global` (safetensors) for `steps` full-batch SGD steps at `lr`
/// on `data`, and returns the difference of the weights.
pub fn local_update(
    spec: MlpSpec,
    global: &[u8],
    data: &Dataset,
    steps: usize,
    lr: f64,
) -> Result<LocalUpdate, FederatedError> {
    let start = crate::inference::Mlp::from_safetensors(spec, global)?;
    let loss_before = train::loss(&start, data)?;
    let trained = train::train(
        spec,
        Some(global),
        data,
        TrainParams {
            steps,
            optim: Optim::Sgd(lr),
            batch: None,
            seed: 0,
        },
    )?;
    let loss_after = train::loss(&trained, data)?;
    let before = start.parameters()?;
    let after = trained.parameters()?;
    let delta = before
        .into_iter()
        .zip(after)
        .map(|((name, shape, b), (_, _, a))| {
            let d = a.iter().zip(&b).map(|(a, b)| a - b).collect();
            (name, shape, d)
        })
        .collect();
    Ok(LocalUpdate {
        model: spec.name.to_owned(),
        delta,
        loss_before,
        loss_after,
        examples: data.len(),
    })
}

/// Clips the whole update (all tensors as one vector) to the round's L2
/// norm C, adds this node's noise share, and encodes it as safetensors.
pub fn privatize(update: &LocalUpdate, privacy: &RoundPrivacy) -> Result<Vec<u8>, FederatedError> {
    let flat: Vec<f32> = update
        .delta
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .collect();
    let noised = privatize_update(flat, privacy)?.into_values();
    let mut out = Vec::with_capacity(update.delta.len());
    let mut at = 0;
    for (name, shape, v) in &update.delta {
        let n = v.len();
        let slice = noised.get(at..at + n).ok_or_else(|| {
            FederatedError::Round("noised update is shorter than the update".into())
        })?;
        out.push((name.clone(), shape.clone(), slice.to_vec()));
        at += n;
    }
    let meta = HashMap::from([
        ("model".to_owned(), update.model.clone()),
        ("kind".to_owned(), "update".to_owned()),
    ]);
    Ok(mlp::encode(&meta, &out)?)
}

/// The privacy parameters of a round as announced by the aggregator.
pub fn round_privacy(round: &Round) -> Result<RoundPrivacy, FederatedError> {
    Ok(RoundPrivacy::new(
        round.clip_norm,
        round.noise_multiplier,
        round.min_nodes,
    )?)
}

/// What happened to one round this node looked at.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundOutcome {
    /// Round id.
    pub round_id: String,
    /// Model.
    pub model: String,
    /// Whether the aggregator accepted the update.
    pub accepted: bool,
    /// The aggregator's reason, or why the node skipped the round.
    pub reason: String,
    /// Local loss before/after (stays on the node).
    pub loss: Option<(f64, f64)>,
}

/// The update as one vector with its tensors in name order (byte order of
/// the names): the order in which the aggregator lays out a model's
/// safetensors file, so a secure round's sum lines up with the global
/// model's parameters.
pub fn flat_by_name(delta: &[mlp::NamedTensor]) -> Vec<f32> {
    let mut order: Vec<&mlp::NamedTensor> = delta.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    order
        .into_iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .collect()
}

/// Refuses local training parameters out of range.
fn check_training(round: &Round) -> Result<(), FederatedError> {
    if round.local_steps == 0 || round.local_steps > 10_000 {
        return Err(FederatedError::Round(
            "local_steps outside 1..=10000".into(),
        ));
    }
    if !(round.learning_rate.is_finite()
        && round.learning_rate > 0.0
        && round.learning_rate <= 10.0)
    {
        return Err(FederatedError::Round(
            "learning_rate outside (0, 10]".into(),
        ));
    }
    Ok(())
}

/// Builds the update for `round` from `global` and `data` (blocking CPU
/// work: call from `spawn_blocking`).
pub fn build_submission(
    round: &Round,
    global: &[u8],
    data: &Dataset,
) -> Result<(Vec<u8>, LocalUpdate), FederatedError> {
    let spec = spec_by_name(&round.model)
        .ok_or_else(|| FederatedError::UnknownModel(round.model.clone()))?;
    let privacy = round_privacy(round)?;
    check_training(round)?;
    let update = local_update(
        spec,
        global,
        data,
        round.local_steps as usize,
        round.learning_rate,
    )?;
    let bytes = privatize(&update, &privacy)?;
    Ok((bytes, update))
}

/// Joins every open round this node can train: fetches the global model,
/// trains on `data` (the forecaster's examples from this node's windows),
/// and submits a clipped, noised update. Rounds of models without local
/// labels (the audio classifier) are skipped, as are rounds when `data` has
/// fewer than `min_examples` rows, and secure rounds (see
/// [`participate_with`]).
pub async fn participate(
    channel: Channel,
    data: Dataset,
    min_examples: usize,
) -> Result<Vec<RoundOutcome>, FederatedError> {
    participate_with(channel, |_| data.clone(), min_examples, None).await
}

/// Like [`participate`], with the node's examples of each round's event day
/// from `data_for(round)`, and secure rounds run with `secure` (the node's
/// mTLS identity; without it they are skipped). A secure round blocks
/// until it closes.
pub async fn participate_with(
    channel: Channel,
    data_for: impl Fn(&Round) -> Dataset,
    min_examples: usize,
    secure: Option<&secure::SecureIdentity>,
) -> Result<Vec<RoundOutcome>, FederatedError> {
    let mut client = FederatedClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let rounds = client
        .list_open_rounds(ListOpenRoundsRequest {})
        .await?
        .into_inner()
        .rounds;
    let mut out = Vec::new();
    for round in rounds {
        let skip = |reason: &str| RoundOutcome {
            round_id: round.round_id.clone(),
            model: round.model.clone(),
            accepted: false,
            reason: reason.to_owned(),
            loss: None,
        };
        if round.model != FORECASTER_SPEC.name {
            out.push(skip("no local labels for this model"));
            continue;
        }
        if round.secure && secure.is_none() {
            out.push(skip("secure round: this node has no signing identity"));
            continue;
        }
        let data = std::sync::Arc::new(data_for(&round));
        if data.len() < min_examples.max(1) {
            out.push(skip("too few local examples of the round's event day"));
            continue;
        }
        let global = client
            .fetch_global_model(FetchGlobalModelRequest {
                round_id: round.round_id.clone(),
            })
            .await?
            .into_inner();
        if let (true, Some(id)) = (round.secure, secure) {
            let (r, d) = (round.clone(), data.clone());
            let update = tokio::task::spawn_blocking(move || {
                let spec = spec_by_name(&r.model)
                    .ok_or_else(|| FederatedError::UnknownModel(r.model.clone()))?;
                check_training(&r)?;
                local_update(
                    spec,
                    &global.safetensors,
                    &d,
                    r.local_steps as usize,
                    r.learning_rate,
                )
            })
            .await
            .map_err(|e| FederatedError::Task(e.to_string()))??;
            let flat = flat_by_name(&update.delta);
            let o = secure::run_round(&mut client, &round, flat, id).await?;
            tracing::info!(round = %round.round_id, model = %round.model, state = %o.state, contributors = o.contributors, "Secure round closed.");
            out.push(RoundOutcome {
                round_id: round.round_id.clone(),
                model: round.model.clone(),
                accepted: o.state == "published",
                reason: o.reason,
                loss: Some((update.loss_before, update.loss_after)),
            });
            continue;
        }
        let (r, d) = (round.clone(), data.clone());
        let (bytes, update) =
            tokio::task::spawn_blocking(move || build_submission(&r, &global.safetensors, &d))
                .await
                .map_err(|e| FederatedError::Task(e.to_string()))??;
        let req = SubmitUpdateRequest {
            round_id: round.round_id.clone(),
            update: bytes,
            examples: u32::try_from(update.examples).unwrap_or(u32::MAX),
        };
        // A busy aggregator (request bytes in flight at their limit) asks
        // for a retry; the update is sent again within the patience.
        let resp = crate::upload::retry_when_busy(BUSY_PATIENCE, || {
            let mut c = client.clone();
            let req = req.clone();
            async move { c.submit_update(req).await }
        })
        .await?
        .into_inner();
        tracing::info!(round = %round.round_id, model = %round.model, accepted = resp.accepted, "Federated update submitted.");
        out.push(RoundOutcome {
            round_id: round.round_id.clone(),
            model: round.model.clone(),
            accepted: resp.accepted,
            reason: resp.reason,
            loss: Some((update.loss_before, update.loss_after)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
