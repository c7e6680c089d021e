//! Rounds and model versions in SQLite: opening, accepting updates into a
//! round's running sum, closing (publish or fail), and the model store with
//! its model cards.

use std::{collections::HashMap, time::Duration};

use serde_json::json;
use sqlx::{AnyPool, Row};

use crate::storage::{Backend, Storage};
use tokio::sync::Mutex;
use veil_privacy::{
    Rho,
    model_update::{ModelPrivacy, RoundPrivacy},
};
use veil_proto::Round;

use super::kernel;

/// Errors of the round machinery.
#[derive(Debug, thiserror::Error)]
pub enum RoundError {
    /// Bad parameters or input (caller's fault).
    #[error("{0}")]
    Invalid(String),
    /// Unknown round, model or version.
    #[error("{0}")]
    NotFound(String),
    /// The round is not open.
    #[error("{0}")]
    Closed(String),
    /// Database failure.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Privacy accounting failed.
    #[error("privacy: {0}")]
    Privacy(#[from] veil_privacy::PrivacyError),
    /// A stored model file is corrupt.
    #[error("stored model: {0}")]
    Corrupt(String),
    /// Appending to the audit log failed.
    #[error("audit: {0}")]
    Audit(String),
}

impl From<veil_aggregator_core::audit::Error> for RoundError {
    fn from(e: veil_aggregator_core::audit::Error) -> Self {
        RoundError::Audit(e.to_string())
    }
}

/// Parameters of a new round.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenParams {
    /// Model name (must have a published version).
    pub model: String,
    /// Minimum participants, >= 1.
    pub min_nodes: u32,
    /// L2 clip norm C, > 0.
    pub clip_norm: f64,
    /// Noise multiplier z, > 0.
    pub noise_multiplier: f64,
    /// Local SGD steps, 1..=10000.
    pub local_steps: u32,
    /// Local learning rate, in (0, 10].
    pub learning_rate: f64,
    /// Time until the deadline, 1 s..=1 day.
    pub deadline: Duration,
    /// Secure aggregation (SecAgg+), or a plain round.
    pub secure: Option<SecureOpen>,
    /// Event day (YYYY-MM-DD) the round's data belongs to: nodes train on
    /// that day's data and venue ledgers are charged on it (`None`: the
    /// UTC day of opening).
    pub event_day: Option<String>,
}

/// How a secure round is opened.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureOpen {
    /// Threshold t over each closed neighbourhood (`None`: the default of
    /// the graph's degree).
    pub threshold: Option<u32>,
    /// Longest time each stage stays open (`None`: a quarter of the
    /// deadline).
    pub stage_timeout: Option<Duration>,
    /// Registered nodes: the most that can contribute.
    pub n_max: u32,
    /// The advertisement stage closes as soon as this many nodes advertised
    /// (and accepts no more); `None`: every registered node. Also bounds
    /// the modulus (n_max).
    pub target_nodes: Option<u32>,
}

/// The public parameters of a secure round, fixed when it opens (stored as
/// JSON in `rounds.secure_json`; nothing secret).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecureSpec {
    /// Threshold override.
    pub threshold: Option<u32>,
    /// Public graph seed, hex of 32 bytes.
    pub public_seed: String,
    /// Fixed-point granularity.
    pub gamma: f64,
    /// Most contributors.
    pub n_max: u32,
    /// Parameters of the model.
    pub dimension: usize,
    /// Longest time each stage stays open, seconds.
    pub stage_timeout_s: u32,
}

impl SecureSpec {
    /// The encoding the nodes use.
    pub fn encoding(&self, row: &RoundRow) -> Result<veil_secagg::EncodingParams, RoundError> {
        veil_secagg::EncodingParams::new(
            row.clip_norm,
            row.noise_multiplier,
            row.min_nodes,
            self.n_max,
            self.dimension,
            self.gamma,
        )
        .map_err(|e| RoundError::Invalid(e.to_string()))
    }

    /// The protocol configuration every party derives.
    pub fn round_config(&self, row: &RoundRow) -> Result<veil_secagg::RoundConfig, RoundError> {
        let id = veil_secagg::RoundId::new(row.round_id.clone())
            .map_err(|e| RoundError::Invalid(e.to_string()))?;
        let seed: [u8; 32] = hex::decode(&self.public_seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| RoundError::Corrupt("secure round seed is not 32 bytes".into()))?;
        let mut c = veil_secagg::RoundConfig::new(id, seed, self.encoding(row)?);
        c.threshold = self.threshold.map(|t| t as usize);
        Ok(c)
    }
}

/// A round as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRow {
    /// Round id.
    pub round_id: String,
    /// Model.
    pub model: String,
    /// Version trained from.
    pub base_version: u32,
    /// Minimum participants.
    pub min_nodes: u32,
    /// Clip norm C.
    pub clip_norm: f64,
    /// Noise multiplier z.
    pub noise_multiplier: f64,
    /// Local steps.
    pub local_steps: u32,
    /// Learning rate.
    pub learning_rate: f64,
    /// Deadline, Unix ms.
    pub deadline_ms: i64,
    /// "open", "published" or "failed".
    pub state: String,
    /// Accepted updates.
    pub participants: u32,
    /// Why it closed as it did.
    pub reason: String,
    /// Event day (YYYY-MM-DD) the round's data belongs to; empty for rounds
    /// opened before it was recorded (charged on the closing day).
    pub event_day: String,
    /// Secure aggregation parameters, or `None` for a plain round.
    pub secure: Option<SecureSpec>,
}

impl RoundRow {
    /// The ledger day the round charges: its event day (the closing day's
    /// UTC date for rounds opened before event days were recorded).
    pub fn charge_day(&self, now: i64) -> String {
        if self.event_day.is_empty() {
            crate::ledger::day_of(now)
        } else {
            self.event_day.clone()
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> Round {
        Round {
            round_id: self.round_id.clone(),
            model: self.model.clone(),
            base_version: self.base_version,
            min_nodes: self.min_nodes,
            clip_norm: self.clip_norm,
            noise_multiplier: self.noise_multiplier,
            local_steps: self.local_steps,
            learning_rate: self.learning_rate,
            deadline_ms: self.deadline_ms,
            state: self.state.clone(),
            participants: self.participants,
            secure: self.secure.is_some(),
            secure_params: self.secure.as_ref().map(|s| veil_proto::SecureParams {
                threshold: s.threshold.unwrap_or(0),
                public_seed: hex::decode(&s.public_seed).unwrap_or_default(),
                gamma: s.gamma,
                n_max: s.n_max,
                dimension: s.dimension as u64,
                stage_timeout_s: s.stage_timeout_s,
                stage: String::new(),
            }),
            event_day: self.event_day.clone(),
            reason: self.reason.clone(),
        }
    }

    /// The round's privacy parameters.
    pub fn privacy(&self) -> Result<RoundPrivacy, RoundError> {
        Ok(RoundPrivacy::new(
            self.clip_norm,
            self.noise_multiplier,
            self.min_nodes,
        )?)
    }

    fn from_row(r: &sqlx::any::AnyRow) -> Result<Self, sqlx::Error> {
        let u = |v: i64| u32::try_from(v).unwrap_or(0);
        Ok(Self {
            round_id: r.try_get("round_id")?,
            model: r.try_get("model")?,
            base_version: u(r.try_get("base_version")?),
            min_nodes: u(r.try_get("min_nodes")?),
            clip_norm: r.try_get("clip_norm")?,
            noise_multiplier: r.try_get("noise_multiplier")?,
            local_steps: u(r.try_get("local_steps")?),
            learning_rate: r.try_get("learning_rate")?,
            deadline_ms: r.try_get("deadline_ms")?,
            state: r.try_get("state")?,
            participants: u(r.try_get("participants")?),
            reason: r.try_get("reason")?,
            event_day: r
                .try_get::<Option<String>, _>("event_day")?
                .unwrap_or_default(),
            // A row that does not parse is refused where it is used (its
            // encoding fails): never silently treated as a plain round.
            secure: r.try_get::<Option<String>, _>("secure_json")?.map(|j| {
                serde_json::from_str(&j).unwrap_or(SecureSpec {
                    threshold: None,
                    public_seed: String::new(),
                    gamma: f64::NAN,
                    n_max: 0,
                    dimension: 0,
                    stage_timeout_s: 0,
                })
            }),
        })
    }
}

/// The result of a submission.
#[derive(Debug, Clone, PartialEq)]
pub enum SubmitOutcome {
    /// Added to the round's sum.
    Accepted {
        /// Accepted updates so far.
        participants: u32,
    },
    /// Refused, with the reason sent back to the node.
    Refused(String),
}

/// Extra norm an honest noised update may have: with probability at least
/// 1 - 1e-9 the norm of a `P`-dimensional N(0, sigma^2 I) vector is below
/// sigma * (sqrt(P) + sqrt(2 ln 1e9)) (Gaussian concentration of the
/// Lipschitz norm), so an update is refused above
/// `C + sigma_node * (sqrt(P) + 6.44)`.
pub fn norm_bound(privacy: &RoundPrivacy, params: usize) -> f64 {
    let tail = (2.0 * (1e9f64).ln()).sqrt();
    privacy.clip_norm() + privacy.node_sigma() * ((params as f64).sqrt() + tail)
}

/// Validates a secure round's parameters and fixes its public ones: the
/// finest granularity that cannot wrap the modulus for `n_max` nodes, a
/// fresh public graph seed, the stage timeout.
fn secure_spec(p: &OpenParams, s: &SecureOpen, dimension: usize) -> Result<SecureSpec, RoundError> {
    use ring::rand::SecureRandom as _;
    let invalid = |m: String| RoundError::Invalid(m);
    if p.min_nodes < 2 {
        return Err(invalid(
            "a secure round needs min_nodes >= 2 (a sum of one update is that update)".into(),
        ));
    }
    if s.n_max < p.min_nodes {
        return Err(invalid(format!(
            "a secure round needs at least min_nodes = {} registered nodes, there are {}",
            p.min_nodes, s.n_max
        )));
    }
    let n_max = match s.target_nodes {
        Some(t) if t < p.min_nodes || t > s.n_max => {
            return Err(invalid(format!(
                "target_nodes must be in min_nodes..=registered nodes ({}..={}), got {t}",
                p.min_nodes, s.n_max
            )));
        }
        Some(t) => t,
        None => s.n_max,
    };
    let stage = s.stage_timeout.unwrap_or(p.deadline / 4).as_secs();
    if stage == 0 || stage.saturating_mul(4) > p.deadline.as_secs() {
        return Err(invalid(format!(
            "stage_timeout_s must be in 1..=deadline/4 ({} s), got {stage}",
            p.deadline.as_secs() / 4
        )));
    }
    if let Some(t) = s.threshold {
        // The largest neighbourhood the roster can have: every check
        // against the actual roster happens when advertisements close.
        let k = veil_secagg::graph::default_degree(n_max as usize);
        let t = t as usize;
        if t == 0 || t > k + 1 || 2 * t <= k + 1 {
            return Err(invalid(format!(
                "threshold must satisfy (k + 1) / 2 < t <= k + 1 with k = {k} neighbours for {n_max} nodes, got {t}"
            )));
        }
    }
    let enc = veil_secagg::EncodingParams::with_finest_gamma(
        p.clip_norm,
        p.noise_multiplier,
        p.min_nodes,
        n_max,
        dimension,
    )
    .map_err(|e| invalid(e.to_string()))?;
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| RoundError::Corrupt("system randomness unavailable".into()))?;
    Ok(SecureSpec {
        threshold: s.threshold,
        public_seed: hex::encode(seed),
        gamma: enc.gamma(),
        n_max,
        dimension,
        stage_timeout_s: u32::try_from(stage).unwrap_or(u32::MAX),
    })
}

const SELECT_ROUND: &str = "SELECT round_id, model, base_version, min_nodes, clip_norm, noise_multiplier, local_steps, learning_rate, deadline_ms, state, participants, reason, event_day, secure_json FROM rounds";

/// The rounds and model store of one aggregator database.
#[derive(Debug)]
pub struct Rounds {
    storage: Storage,
    pool: AnyPool,
    delta: f64,
    lock: Mutex<()>,
    charging: Option<super::Charging>,
}

impl Rounds {
    /// Over the aggregator's database (migration 0003 applied); model
    /// cards state epsilon at `delta`.
    pub fn new(storage: Storage, delta: f64) -> Self {
        Self {
            pool: storage.unaudited_tables().clone(),
            storage,
            delta,
            lock: Mutex::new(()),
            charging: None,
        }
    }

    /// The ledger charging, if configured.
    pub fn charging(&self) -> Option<&super::Charging> {
        self.charging.as_ref()
    }

    /// Charges venue ledgers for rounds (see [`super::charge_round_ledgers`]):
    /// an update is refused when its venue's day budget cannot cover it, and
    /// publication charges every participating venue in the same
    /// transaction, with its audit entries.
    pub fn with_charging(mut self, charging: super::Charging) -> Self {
        self.charging = Some(charging);
        self
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The database.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Stores `weights` as the next version of `model` with no training
    /// rounds (an imported initial model) and, optionally, its public
    /// evaluation set. Returns the version.
    pub async fn import_model(
        &self,
        model: &str,
        weights: &[u8],
        eval: Option<&[u8]>,
        now: i64,
    ) -> Result<u32, RoundError> {
        if !crate::identity::valid_name(model) {
            return Err(RoundError::Invalid(format!("invalid model name {model:?}")));
        }
        let flat = kernel::parse(weights).map_err(RoundError::Invalid)?;
        if let Some(e) = eval {
            let ev = kernel::parse(e).map_err(RoundError::Invalid)?;
            kernel::evaluate(&flat, &ev).map_err(RoundError::Invalid)?;
        }
        let _g = self.lock.lock().await;
        let version = self.latest_opt(model).await?.map_or(1, |v| v + 1);
        let metric = match eval {
            Some(e) => kernel::evaluate(&flat, &kernel::parse(e).map_err(RoundError::Invalid)?)
                .ok()
                .map(|(n, v)| json!({ "name": n, "before": v, "after": v })),
            None => None,
        };
        let card = json!({
            "model": model,
            "version": version,
            "parent": null,
            "rounds": 0,
            "participants": 0,
            "clip_norm": null,
            "noise_multiplier": null,
            "epsilon": 0.0,
            "delta": self.delta,
            "privacy": { "rho": 0.0, "note": "imported: trained on synthetic simulator data only" },
            "metric": metric,
            "parameters": flat.values.len(),
            "format": "safetensors (F32, PyTorch nn.Linear names)",
            "created_ms": now,
        });
        let mut tx = self.pool.begin().await?;
        sqlx::query("-- Rounds::import_model()\nINSERT INTO model_versions (model, version, parent, weights, card_json, created_ms) VALUES ($1, $2, NULL, $3, $4, $5)")
            .bind(model)
            .bind(i64::from(version))
            .bind(weights)
            .bind(card.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        if let Some(e) = eval {
            sqlx::query("-- Rounds::import_model()\nINSERT INTO model_evals (model, eval) VALUES ($1, $2) ON CONFLICT (model) DO UPDATE SET eval = excluded.eval")
                .bind(model)
                .bind(e)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(version)
    }

    async fn latest_opt(&self, model: &str) -> Result<Option<u32>, RoundError> {
        let v: Option<i64> = sqlx::query_scalar(
            "-- Rounds::latest_opt()\nSELECT MAX(version) FROM model_versions WHERE model = $1",
        )
        .bind(model)
        .fetch_one(&self.pool)
        .await?;
        Ok(v.and_then(|v| u32::try_from(v).ok()))
    }

    /// Latest published version of `model`.
    pub async fn latest(&self, model: &str) -> Result<u32, RoundError> {
        self.latest_opt(model)
            .await?
            .ok_or_else(|| RoundError::NotFound(format!("no versions of model {model:?}")))
    }

    /// (weights, card JSON) of a version.
    pub async fn version(
        &self,
        model: &str,
        version: u32,
    ) -> Result<(Vec<u8>, String), RoundError> {
        let row = sqlx::query("-- Rounds::version()\nSELECT weights, card_json FROM model_versions WHERE model = $1 AND version = $2")
            .bind(model)
            .bind(i64::from(version))
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| RoundError::NotFound(format!("model {model:?} has no version {version}")))?;
        Ok((row.try_get("weights")?, row.try_get("card_json")?))
    }

    /// (version, card JSON) of every version of `model`, oldest first.
    pub async fn versions(&self, model: &str) -> Result<Vec<(u32, String)>, RoundError> {
        let rows = sqlx::query("-- Rounds::versions()\nSELECT version, card_json FROM model_versions WHERE model = $1 ORDER BY version")
            .bind(model)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let v: i64 = r.try_get("version")?;
                Ok((u32::try_from(v).unwrap_or(0), r.try_get("card_json")?))
            })
            .collect()
    }

    /// Opens a round on the latest version of `p.model`.
    pub async fn open(&self, p: &OpenParams, now: i64) -> Result<RoundRow, RoundError> {
        RoundPrivacy::new(p.clip_norm, p.noise_multiplier, p.min_nodes)
            .map_err(|e| RoundError::Invalid(e.to_string()))?;
        if !(1..=10_000).contains(&p.local_steps) {
            return Err(RoundError::Invalid(
                "local_steps must be in 1..=10000".into(),
            ));
        }
        if !(p.learning_rate.is_finite() && p.learning_rate > 0.0 && p.learning_rate <= 10.0) {
            return Err(RoundError::Invalid(
                "learning_rate must be in (0, 10]".into(),
            ));
        }
        let secs = p.deadline.as_secs();
        if !(1..=86_400).contains(&secs) {
            return Err(RoundError::Invalid("deadline must be 1 s ..= 1 day".into()));
        }
        let event_day = match &p.event_day {
            Some(d) if !crate::ledger::valid_day(d) => {
                return Err(RoundError::Invalid(format!(
                    "event_day must be YYYY-MM-DD, got {d:?}"
                )));
            }
            Some(d) => d.clone(),
            None => crate::ledger::day_of(now),
        };
        let _g = self.lock.lock().await;
        let base = self.latest(&p.model).await?;
        let secure = match &p.secure {
            Some(s) => {
                let (weights, _) = self.version(&p.model, base).await?;
                let dimension = kernel::parse(&weights)
                    .map_err(RoundError::Corrupt)?
                    .values
                    .len();
                Some(secure_spec(p, s, dimension)?)
            }
            None => None,
        };
        let secure_json = secure
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| RoundError::Invalid(e.to_string()))?;
        let n: i64 = sqlx::query_scalar("-- Rounds::open()\nSELECT COUNT(*) FROM rounds")
            .fetch_one(&self.pool)
            .await?;
        let round_id = format!("{}-r{}", p.model, n + 1);
        let deadline_ms = now.saturating_add(i64::try_from(secs * 1000).unwrap_or(i64::MAX));
        sqlx::query("-- Rounds::open()\nINSERT INTO rounds (round_id, model, base_version, min_nodes, clip_norm, noise_multiplier, local_steps, learning_rate, opened_ms, deadline_ms, state, event_day, secure_json) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'open', $11, $12)")
            .bind(&round_id)
            .bind(&p.model)
            .bind(i64::from(base))
            .bind(i64::from(p.min_nodes))
            .bind(p.clip_norm)
            .bind(p.noise_multiplier)
            .bind(i64::from(p.local_steps))
            .bind(p.learning_rate)
            .bind(now)
            .bind(deadline_ms)
            .bind(&event_day)
            .bind(secure_json)
            .execute(&self.pool)
            .await?;
        self.round(&round_id).await
    }

    /// Claims the secure round `round_id` for the aggregator process
    /// `owner` (its stages run in that process's memory): true if `owner`
    /// holds it now, false if another process does.
    pub async fn claim_secure(&self, round_id: &str, owner: &str) -> Result<bool, RoundError> {
        sqlx::query("-- Rounds::claim_secure()\nUPDATE rounds SET secure_owner = $1 WHERE round_id = $2 AND secure_owner IS NULL AND secure_json IS NOT NULL")
            .bind(owner)
            .bind(round_id)
            .execute(&self.pool)
            .await?;
        let holder: Option<Option<String>> = sqlx::query_scalar(
            "-- Rounds::claim_secure()\nSELECT secure_owner FROM rounds WHERE round_id = $1",
        )
        .bind(round_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(holder.flatten().as_deref() == Some(owner))
    }

    /// Fails the open round `round_id` with `reason` (nothing is published
    /// or charged by this call). Returns false if it was not open.
    pub async fn fail(&self, round_id: &str, reason: &str, now: i64) -> Result<bool, RoundError> {
        let _g = self.lock.lock().await;
        let failed = sqlx::query("-- Rounds::fail()\nUPDATE rounds SET state = 'failed', closed_ms = $1, reason = $2, update_sum = NULL WHERE round_id = $3 AND state = 'open'")
            .bind(now)
            .bind(reason)
            .bind(round_id)
            .execute(&self.pool)
            .await?;
        Ok(failed.rows_affected() == 1)
    }

    /// One round.
    pub async fn round(&self, round_id: &str) -> Result<RoundRow, RoundError> {
        let q = sqlx::AssertSqlSafe(format!(
            "-- Rounds::round()\n{SELECT_ROUND} WHERE round_id = $1"
        ));
        let row = sqlx::query(q)
            .bind(round_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| RoundError::NotFound(format!("unknown round {round_id:?}")))?;
        Ok(RoundRow::from_row(&row)?)
    }

    /// Open rounds before their deadline that this node has not joined.
    pub async fn open_for(
        &self,
        venue: &str,
        node: &str,
        now: i64,
    ) -> Result<Vec<RoundRow>, RoundError> {
        let q = sqlx::AssertSqlSafe(format!(
            "-- Rounds::open_for()\n{SELECT_ROUND} WHERE state = 'open' AND deadline_ms > $1 AND round_id NOT IN (SELECT round_id FROM round_participants WHERE venue = $2 AND node = $3) ORDER BY round_id"
        ));
        let rows = sqlx::query(q)
            .bind(now)
            .bind(venue)
            .bind(node)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(RoundRow::from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Ids of open rounds whose deadline has passed.
    pub async fn due(&self, now: i64) -> Result<Vec<String>, RoundError> {
        Ok(sqlx::query_scalar("-- Rounds::due()\nSELECT round_id FROM rounds WHERE state = 'open' AND deadline_ms <= $1 ORDER BY round_id")
            .bind(now)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Validates a node's update and adds it to the round's running sum.
    pub async fn submit(
        &self,
        round_id: &str,
        venue: &str,
        node: &str,
        update: &[u8],
        now: i64,
    ) -> Result<SubmitOutcome, RoundError> {
        let _g = self.lock.lock().await;
        let round = self.round(round_id).await?;
        if round.state != "open" || now >= round.deadline_ms {
            return Ok(SubmitOutcome::Refused(format!(
                "round {round_id} is closed"
            )));
        }
        if round.secure.is_some() {
            return Ok(SubmitOutcome::Refused(format!(
                "round {round_id} is secure: updates go through the SecAgg+ stages (AdvertiseKeys ...), never in the clear"
            )));
        }
        let joined: Option<i64> = sqlx::query_scalar("-- Rounds::submit()\nSELECT 1 FROM round_participants WHERE round_id = $1 AND venue = $2 AND node = $3")
            .bind(round_id)
            .bind(venue)
            .bind(node)
            .fetch_optional(&self.pool)
            .await?;
        if joined.is_some() {
            return Ok(SubmitOutcome::Refused(
                "this node already submitted an update for the round".into(),
            ));
        }
        let (weights, _) = self.version(&round.model, round.base_version).await?;
        let global = kernel::parse(&weights).map_err(RoundError::Corrupt)?;
        let bound = norm_bound(&round.privacy()?, global.values.len());
        let values = match kernel::validate_update(update, &global.layout, bound) {
            Ok(v) => v,
            Err(reason) => return Ok(SubmitOutcome::Refused(reason)),
        };
        if let Some(c) = &self.charging {
            let before: i64 = sqlx::query_scalar("-- Rounds::submit()\nSELECT COUNT(*) FROM round_participants WHERE round_id = $1 AND venue = $2")
                .bind(round_id)
                .bind(venue)
                .fetch_one(&self.pool)
                .await?;
            let before = u32::try_from(before).unwrap_or(u32::MAX);
            if let Err(reason) = c.affordable(&self.pool, &round, venue, before, now).await? {
                return Ok(SubmitOutcome::Refused(format!(
                    "the venue's privacy budget cannot cover this update: {reason}"
                )));
            }
        }
        // Read-modify-write of the running sum under the round's row lock
        // (PostgreSQL `FOR UPDATE`; SQLite's single writer otherwise), so
        // updates accepted at once by several replicas all count.
        let mut tx = self.pool.begin().await?;
        let select = match Backend::of(&tx) {
            Backend::Sqlite => {
                "-- Rounds::submit()\nSELECT state, participants, update_sum FROM rounds WHERE round_id = $1"
            }
            Backend::Postgres => {
                "-- Rounds::submit()\nSELECT state, participants, update_sum FROM rounds WHERE round_id = $1 FOR UPDATE"
            }
        };
        let locked = sqlx::query(select)
            .bind(round_id)
            .fetch_one(&mut *tx)
            .await?;
        if locked.try_get::<String, _>("state")? != "open" {
            return Ok(SubmitOutcome::Refused(format!(
                "round {round_id} is closed"
            )));
        }
        let sum: Option<Vec<u8>> = locked.try_get("update_sum")?;
        let participants: i64 = locked.try_get("participants")?;
        let mut acc = match sum {
            Some(b) if b.len() == values.len() * 4 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Some(_) => {
                return Err(RoundError::Corrupt(
                    "running sum has the wrong length".into(),
                ));
            }
            None => vec![0.0f32; values.len()],
        };
        kernel::accumulate(&mut acc, &values);
        let bytes: Vec<u8> = acc.iter().flat_map(|x| x.to_le_bytes()).collect();
        let participants = u32::try_from(participants)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        sqlx::query("-- Rounds::submit()\nINSERT INTO round_participants (round_id, venue, node, received_ms) VALUES ($1, $2, $3, $4)")
            .bind(round_id)
            .bind(venue)
            .bind(node)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("-- Rounds::submit()\nUPDATE rounds SET update_sum = $1, participants = $2 WHERE round_id = $3")
            .bind(bytes)
            .bind(i64::from(participants))
            .bind(round_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(SubmitOutcome::Accepted { participants })
    }

    /// Closes an open round now: publishes version v+1 when it has at least
    /// `min_nodes` participants, else fails it. With charging, publication
    /// and the venues' ledger charges commit together, and a refused charge
    /// fails the round instead. Returns the round and the participating
    /// venues, one entry per accepted update.
    pub async fn close(
        &self,
        round_id: &str,
        now: i64,
    ) -> Result<(RoundRow, Vec<String>), RoundError> {
        let _g = self.lock.lock().await;
        let round = self.round(round_id).await?;
        if round.state != "open" {
            return Err(RoundError::Closed(format!(
                "round {round_id} is already {}",
                round.state
            )));
        }
        let venues: Vec<String> = sqlx::query_scalar("-- Rounds::close()\nSELECT venue FROM round_participants WHERE round_id = $1 ORDER BY venue")
            .bind(round_id)
            .fetch_all(&self.pool)
            .await?;
        if round.secure.is_some() || round.participants < round.min_nodes {
            let reason = if round.secure.is_some() {
                "secure round not finished by its deadline (its stages run in the memory of the aggregator that ran them): nothing was unmasked or published".to_owned()
            } else {
                format!(
                    "{} participants, fewer than the minimum {}: no new version",
                    round.participants, round.min_nodes
                )
            };
            let failed = sqlx::query("-- Rounds::close()\nUPDATE rounds SET state = 'failed', closed_ms = $1, reason = $2, update_sum = NULL WHERE round_id = $3 AND state = 'open'")
                .bind(now)
                .bind(&reason)
                .bind(round_id)
                .execute(&self.pool)
                .await?;
            if failed.rows_affected() == 0 {
                return Err(RoundError::Closed(format!(
                    "round {round_id} was closed concurrently"
                )));
            }
            return Ok((self.round(round_id).await?, venues));
        }
        let sum: Option<Vec<u8>> = sqlx::query_scalar(
            "-- Rounds::close()\nSELECT update_sum FROM rounds WHERE round_id = $1",
        )
        .bind(round_id)
        .fetch_one(&self.pool)
        .await?;
        let sum: Vec<f32> = sum
            .ok_or_else(|| RoundError::Corrupt("no running sum".into()))?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let privacy = round.privacy()?;
        let card_privacy = json!({
            "unit": "one node's local data (all its windows of the event day) per round",
            "accountant": "zCDP: Gaussian sum with std z*C at L2 sensitivity C is 1/(2 z^2)-zCDP per round; rounds add (no subsampling amplification); epsilon by the Canonne-Kamath-Steinke conversion (OpenDP)",
            "assumption": "each of at least min_nodes participants added Gaussian noise of std z*C/sqrt(min_nodes)",
            "round_rho": privacy.round_rho()?.get(),
            "per_update_rho_seen_by_aggregator": privacy.node_rho()?.get(),
        });
        let out = self
            .publish(
                &round,
                Publication {
                    sum,
                    contributors: round.participants,
                    round_rho: privacy.round_rho()?,
                    card_privacy,
                    card_extra: json!({}),
                    charge: true,
                    record: None,
                },
                &venues,
                now,
            )
            .await?;
        Ok((out, venues))
    }

    /// Publishes a secure round from its unmasked sum (the float sum of the
    /// contributors' updates): version v+1 with its model card, the
    /// contributors recorded as participants. The ledgers were charged when
    /// the shares closed (before any node drew its noise), so nothing is
    /// charged here. `contributors` are (venue, node) pairs.
    pub async fn publish_secure(
        &self,
        round_id: &str,
        p: SecurePublication,
        now: i64,
    ) -> Result<RoundRow, RoundError> {
        let SecurePublication {
            sum,
            contributors,
            round_rho,
            card_privacy,
            card_extra,
        } = p;
        let contributors = contributors.as_slice();
        let _g = self.lock.lock().await;
        let round = self.round(round_id).await?;
        if round.state != "open" {
            return Err(RoundError::Closed(format!(
                "round {round_id} is already {}",
                round.state
            )));
        }
        let venues: Vec<String> = contributors.iter().map(|(v, _)| v.clone()).collect();
        self.publish(
            &round,
            Publication {
                sum,
                contributors: u32::try_from(contributors.len()).unwrap_or(u32::MAX),
                round_rho,
                card_privacy,
                card_extra,
                charge: false,
                record: Some(contributors),
            },
            &venues,
            now,
        )
        .await
    }

    /// Publication proper (the caller holds the lock): version v+1 =
    /// v + sum / contributors with its model card, in one transaction with
    /// the ledger charges (plain rounds) or the contributors' rows (secure
    /// rounds); a refused charge fails the round instead.
    async fn publish(
        &self,
        round: &RoundRow,
        p: Publication<'_>,
        venues: &[String],
        now: i64,
    ) -> Result<RoundRow, RoundError> {
        let round_id = round.round_id.as_str();
        let (weights, parent_card) = self.version(&round.model, round.base_version).await?;
        let global = kernel::parse(&weights).map_err(RoundError::Corrupt)?;
        if p.sum.len() != global.values.len() {
            return Err(RoundError::Corrupt(
                "running sum has the wrong length".into(),
            ));
        }
        let next = kernel::apply_mean(&global.values, &p.sum, p.contributors);
        let next_bytes = kernel::encode(&global.layout, &next, global.metadata.clone())
            .map_err(RoundError::Corrupt)?;
        let version = self.latest(&round.model).await?.saturating_add(1);

        // Privacy: the parent's accumulated rho plus this round's.
        let parent: serde_json::Value =
            serde_json::from_str(&parent_card).map_err(|e| RoundError::Corrupt(e.to_string()))?;
        let prior = ModelPrivacy {
            rho: parent["privacy"]["rho"].as_f64().unwrap_or(0.0),
            rounds: parent["rounds"]
                .as_u64()
                .and_then(|r| u32::try_from(r).ok())
                .unwrap_or(0),
        };
        let total = prior.after_round_rho(p.round_rho)?;
        let epsilon = total.epsilon(self.delta)?;
        let metric = self.metric(&round.model, &global, &next, &next_bytes).await;
        let mut privacy = p.card_privacy;
        privacy["rho"] = json!(total.rho);
        let mut card = json!({
            "model": round.model,
            "version": version,
            "parent": round.base_version,
            "round_id": round.round_id,
            "event_day": round.event_day,
            "rounds": total.rounds,
            "participants": p.contributors,
            "min_nodes": round.min_nodes,
            "clip_norm": round.clip_norm,
            "noise_multiplier": round.noise_multiplier,
            "local_steps": round.local_steps,
            "learning_rate": round.learning_rate,
            "epsilon": epsilon,
            "delta": self.delta,
            "secure_aggregation": "none (the aggregator saw each noised update)",
            "privacy": privacy,
            "metric": metric,
            "parameters": next.len(),
            "format": "safetensors (F32, PyTorch nn.Linear names)",
            "created_ms": now,
        });
        if let (Some(card), Some(extra)) = (card.as_object_mut(), p.card_extra.as_object()) {
            for (k, v) in extra {
                card.insert(k.clone(), v.clone());
            }
        }
        let reason = format!(
            "published version {version} from {} participants",
            p.contributors
        );
        // The audit lock before the database transaction, as every writer
        // of the audit log takes them.
        let mut atx = match (&self.charging, p.charge) {
            (Some(c), true) => Some(c.audit.begin().await),
            _ => None,
        };
        let mut tx = self.pool.begin().await?;
        if let Some(a) = atx.as_mut() {
            a.lock(&mut tx)
                .await
                .map_err(|e| RoundError::Audit(e.to_string()))?;
        }
        // Claim the round first: of several replicas closing it at once,
        // one publishes; the others find it no longer open (or changed by
        // an update accepted meanwhile) and roll back. The model_versions
        // primary key is the second guard against a double publication.
        let claimed = sqlx::query("-- Rounds::publish()\nUPDATE rounds SET state = 'published', closed_ms = $1, reason = $2, update_sum = NULL, participants = $4 WHERE round_id = $3 AND state = 'open' AND participants = $5")
            .bind(now)
            .bind(&reason)
            .bind(round_id)
            .bind(i64::from(p.contributors))
            .bind(i64::from(round.participants))
            .execute(&mut *tx)
            .await?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await?;
            return Err(RoundError::Closed(format!(
                "round {round_id} was closed or changed concurrently"
            )));
        }
        if let Some(contributors) = p.record {
            for (venue, node) in contributors {
                sqlx::query("-- Rounds::publish()\nINSERT INTO round_participants (round_id, venue, node, received_ms) VALUES ($1, $2, $3, $4)")
                    .bind(round_id)
                    .bind(venue)
                    .bind(node)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        if let (Some(c), Some(a)) = (&self.charging, atx.as_mut()) {
            let charged =
                super::charge_round_ledgers(&mut tx, a, &c.policies, round, venues, now).await?;
            if let Err(refusal) = charged {
                tx.rollback().await?;
                drop(atx);
                let reason = format!("ledger refused the charge ({refusal}): no new version");
                sqlx::query("-- Rounds::publish()\nUPDATE rounds SET state = 'failed', closed_ms = $1, reason = $2, update_sum = NULL WHERE round_id = $3 AND state = 'open'")
                    .bind(now)
                    .bind(&reason)
                    .bind(round_id)
                    .execute(&self.pool)
                    .await?;
                return self.round(round_id).await;
            }
        }
        sqlx::query("-- Rounds::publish()\nINSERT INTO model_versions (model, version, parent, weights, card_json, created_ms) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&round.model)
            .bind(i64::from(version))
            .bind(i64::from(round.base_version))
            .bind(&next_bytes)
            .bind(card.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if let Some(a) = atx {
            a.committed();
        }
        self.round(round_id).await
    }

    /// The model's metric on its public evaluation set before/after, if it
    /// has one.
    async fn metric(
        &self,
        model: &str,
        before: &kernel::Flat,
        _after: &[f32],
        after_bytes: &[u8],
    ) -> Option<serde_json::Value> {
        let eval: Vec<u8> = sqlx::query_scalar(
            "-- Rounds::metric()\nSELECT eval FROM model_evals WHERE model = $1",
        )
        .bind(model)
        .fetch_optional(&self.pool)
        .await
        .ok()??;
        let ev = kernel::parse(&eval).ok()?;
        let after = kernel::parse(after_bytes).ok()?;
        let (name, b) = kernel::evaluate(before, &ev).ok()?;
        let (_, a) = kernel::evaluate(&after, &ev).ok()?;
        Some(
            json!({ "name": name, "set": "public synthetic evaluation set", "before": b, "after": a }),
        )
    }
}

/// What a secure round publishes ([`Rounds::publish_secure`]).
#[derive(Debug, Clone)]
pub struct SecurePublication {
    /// The unmasked, decoded sum of the contributors' updates.
    pub sum: Vec<f32>,
    /// (venue, node) of each contributor.
    pub contributors: Vec<(String, String)>,
    /// The round's zCDP cost (the distributed discrete Gaussian bound).
    pub round_rho: Rho,
    /// The card's `privacy` object.
    pub card_privacy: serde_json::Value,
    /// More card fields.
    pub card_extra: serde_json::Value,
}

/// What [`Rounds::publish`] publishes.
struct Publication<'a> {
    /// Sum of the contributors' updates (float units).
    sum: Vec<f32>,
    /// How many updates are in `sum`.
    contributors: u32,
    /// The round's zCDP cost added to the model's.
    round_rho: Rho,
    /// The card's `privacy` object (`rho` is filled in).
    card_privacy: serde_json::Value,
    /// More card fields (override the defaults).
    card_extra: serde_json::Value,
    /// Charge the venue ledgers in the publishing transaction (plain
    /// rounds).
    charge: bool,
    /// (venue, node) rows to record as participants (secure rounds).
    record: Option<&'a [(String, String)]>,
}

/// Metadata helper for tests and tools.
pub fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
