//! Federated rounds: the round state machine (open -> published | failed),
//! validation of node updates, the FedAvg kernel, the model store with model
//! cards, the deadline/schedule ticker.
//!
//! A round trains from the latest published version of a model. Enrolled
//! nodes (every node registered with the aggregator) fetch that version,
//! train locally, clip their update to L2 norm C and add their share of
//! Gaussian noise (see [`veil_privacy::model_update`]). Each update is
//! validated (safetensors, the global model's tensor names and shapes, dtype
//! F32, finite, norm at most C plus the noise share's high-probability bound)
//! and added to the round's running sum; individual updates are never
//! stored. At the deadline a round with at least `min_nodes` participants
//! publishes version v+1 = v + sum / participants with a model card; with
//! fewer it fails and publishes nothing. The gRPC `Federated` service over
//! it lives with the other services (`grpc/rounds.rs`).
//!
//! The aggregator never sees raw events or local examples; nothing a peer
//! sends can panic it.

pub mod cli;
pub mod kernel;
pub mod store;

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use sqlx::AnyConnection;

use veil_privacy::{Cost, Rho};

pub use store::{OpenParams, RoundError, RoundRow, Rounds, SubmitOutcome};
use veil_aggregator_core::{
    audit::{AuditLog, AuditTx, NewEntry, SELF_ACTOR},
    ledger,
    policy::Policies,
};
use veil_common::now_ms;

/// Audit action names of federated rounds.
pub mod action {
    /// A round was opened.
    pub const ROUND_OPEN: &str = "round.open";
    /// A node update was accepted into a round.
    pub const ROUND_UPDATE: &str = "round.update";
    /// A node update was refused.
    pub const ROUND_REFUSE: &str = "round.refuse";
    /// A round published a new model version.
    pub const ROUND_PUBLISH: &str = "round.publish";
    /// A round closed without a new version.
    pub const ROUND_FAIL: &str = "round.fail";
    /// A venue ledger is charged for a published round.
    pub const ROUND_CHARGE: &str = "round.charge";
    /// A model version was pulled.
    pub const MODEL_PULL: &str = "model.pull";
}

/// `[rounds]` in `aggregator.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoundsConfig {
    /// delta at which model cards state epsilon.
    #[serde(default = "default_delta")]
    pub delta: f64,
    /// Rounds opened on a schedule.
    #[serde(default)]
    pub schedule: Vec<ScheduledRound>,
}

fn default_delta() -> f64 {
    1e-6
}

impl Default for RoundsConfig {
    fn default() -> Self {
        Self {
            delta: default_delta(),
            schedule: Vec::new(),
        }
    }
}

/// A round opened every `every_s` seconds (when none of the model is open).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduledRound {
    /// Model name.
    pub model: String,
    /// Seconds between rounds.
    pub every_s: u64,
    /// Minimum participants.
    pub min_nodes: u32,
    /// L2 clip norm C.
    pub clip_norm: f64,
    /// Noise multiplier z.
    pub noise_multiplier: f64,
    /// Local SGD steps.
    pub local_steps: u32,
    /// Local learning rate.
    pub learning_rate: f64,
    /// Deadline, seconds after opening.
    pub deadline_s: u32,
}

impl ScheduledRound {
    fn params(&self) -> OpenParams {
        OpenParams {
            model: self.model.clone(),
            min_nodes: self.min_nodes,
            clip_norm: self.clip_norm,
            noise_multiplier: self.noise_multiplier,
            local_steps: self.local_steps,
            learning_rate: self.learning_rate,
            deadline: Duration::from_secs(u64::from(self.deadline_s)),
        }
    }
}

/// Appends one audit entry for a round event in its own transaction. Does
/// nothing without an audit log (library use in tests and benches).
pub async fn record_round_event(
    rounds: &Rounds,
    audit: Option<&AuditLog>,
    entry: NewEntry,
) -> Result<(), RoundError> {
    let Some(audit) = audit else {
        return Ok(());
    };
    let now = now_ms();
    rounds
        .storage()
        .run_audited(audit, "record_round_event", |tx, atx| {
            Box::pin(async move {
                atx.append(tx, entry, now).await?;
                Ok::<_, RoundError>(())
            })
        })
        .await
}

/// Purpose under which rounds charge venue ledgers.
pub const TRAINING_PURPOSE: &str = "model_training";

/// Ledger metric under which rounds of `model` charge venue ledgers.
pub fn ledger_metric(model: &str) -> String {
    format!("model:{model}")
}

/// What a serving aggregator needs to charge venue ledgers for rounds: the
/// venues' policies (day budgets) and the audit log the charges go into.
/// Without it (library use in tests and benches) rounds charge nothing.
#[derive(Debug, Clone)]
pub struct Charging {
    /// Policies in force per venue.
    pub policies: Policies,
    /// The audit log.
    pub audit: AuditLog,
}

impl Charging {
    /// Whether `venue`'s day budget still covers its accepted updates in
    /// `round` plus one more: `Err(reason)` refuses the update. Checked
    /// (and rolled back) when an update arrives, so that the charge at
    /// publication normally succeeds.
    pub async fn affordable(
        &self,
        pool: &sqlx::AnyPool,
        round: &RoundRow,
        venue: &str,
        accepted_before: u32,
        now: i64,
    ) -> Result<Result<(), String>, RoundError> {
        let Some(policy) = self.policies.get(venue) else {
            return Ok(Err(format!("venue {venue} has no policy in force")));
        };
        let rho = round.privacy()?.node_rho()?.get() * f64::from(accepted_before + 1);
        let cost = Cost::Zcdp(Rho::new(rho)?);
        let mut tx = pool.begin().await?;
        let out = ledger::charge_direct(
            &mut tx,
            venue,
            &ledger::day_of(now),
            &ledger_metric(&round.model),
            TRAINING_PURPOSE,
            cost,
            policy,
        )
        .await;
        tx.rollback().await?;
        ledger_outcome(out).map(|r| r.map(|_| ()))
    }
}

fn ledger_outcome(
    out: Result<ledger::Granted, ledger::Error>,
) -> Result<Result<ledger::Granted, String>, RoundError> {
    match out {
        Ok(g) => Ok(Ok(g)),
        Err(ledger::Error::Db(e)) => Err(RoundError::Db(e)),
        Err(ledger::Error::Accounting(e)) => Err(RoundError::Privacy(e)),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Charges each participating venue's ledger with the round's cost inside
/// `tx` (the transaction that publishes the version), with one
/// `round.charge` audit entry per venue in the same transaction.
///
/// `venues` holds one entry per accepted update. The cost charged per
/// update is the per-update zCDP rho (`m / (2 z^2)`): what the aggregator
/// itself could learn from one node's noised update until secure
/// aggregation lands; a venue with k updates in the round is charged k
/// times that, on the UTC day the round closes, under metric
/// `model:<name>` and purpose `model_training`. The published model's own
/// cost (`1 / (2 z^2)` per round) is on the model card.
///
/// Returns `Ok(Err(reason))` when a venue has no policy or its budget
/// cannot cover the charge: the caller rolls back and fails the round (no
/// version is published, nothing is charged).
pub async fn charge_round_ledgers(
    tx: &mut AnyConnection,
    atx: &mut AuditTx<'_>,
    policies: &Policies,
    round: &RoundRow,
    venues: &[String],
    now: i64,
) -> Result<Result<(), String>, RoundError> {
    let node_rho = round.privacy()?.node_rho()?.get();
    let day = ledger::day_of(now);
    let metric = ledger_metric(&round.model);
    let mut grouped: Vec<(&str, u32)> = Vec::new();
    for v in venues {
        match grouped.last_mut() {
            Some((last, n)) if *last == v.as_str() => *n += 1,
            _ => grouped.push((v.as_str(), 1)),
        }
    }
    for (venue, updates) in grouped {
        let Some(policy) = policies.get(venue) else {
            return Ok(Err(format!("venue {venue} has no policy in force")));
        };
        let cost = Cost::Zcdp(Rho::new(node_rho * f64::from(updates))?);
        let out =
            ledger::charge_direct(tx, venue, &day, &metric, TRAINING_PURPOSE, cost, policy).await;
        let granted = match ledger_outcome(out)? {
            Ok(g) => g,
            Err(reason) => return Ok(Err(reason)),
        };
        atx.append(
            tx,
            NewEntry {
                actor: SELF_ACTOR.into(),
                venue: venue.to_owned(),
                action: action::ROUND_CHARGE,
                allow: true,
                reason: format!(
                    "round {} of {}: {updates} update(s) charged to {metric} for {TRAINING_PURPOSE} on {day}, {:.4} epsilon left",
                    round.round_id, round.model, granted.remaining_epsilon
                ),
                policy_hash: policy.hash.clone(),
                rho: granted.rho,
                ..NewEntry::default()
            },
            now,
        )
        .await
        .map_err(|e| RoundError::Audit(e.to_string()))?;
    }
    Ok(Ok(()))
}

/// Closes every round past its deadline (publishing or failing it) and
/// records the outcome; returns the closed rounds.
pub async fn close_due(
    rounds: &Rounds,
    audit: Option<&AuditLog>,
    now: i64,
) -> Result<Vec<RoundRow>, RoundError> {
    let mut out = Vec::new();
    for id in rounds.due(now).await? {
        match close_and_record(rounds, audit, &id, now).await {
            Ok(row) => out.push(row),
            // Another replica closed it first.
            Err(RoundError::Closed(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Closes one round now (whatever its deadline) and records the outcome.
pub async fn close_and_record(
    rounds: &Rounds,
    audit: Option<&AuditLog>,
    round_id: &str,
    now: i64,
) -> Result<RoundRow, RoundError> {
    let (row, _venues) = rounds.close(round_id, now).await?;
    let published = row.state == "published";
    record_round_event(
        rounds,
        audit,
        NewEntry {
            actor: SELF_ACTOR.into(),
            action: if published {
                action::ROUND_PUBLISH
            } else {
                action::ROUND_FAIL
            },
            allow: published,
            reason: format!("round {} of {}: {}", row.round_id, row.model, row.reason),
            ..NewEntry::default()
        },
    )
    .await?;
    tracing::info!(round = %row.round_id, model = %row.model, state = %row.state, participants = row.participants, "Round closed.");
    Ok(row)
}

/// Closes due rounds and opens scheduled ones, every second, until the
/// returned handle is aborted.
pub fn spawn_ticker(
    rounds: Arc<Rounds>,
    audit: Option<AuditLog>,
    schedule: Vec<ScheduledRound>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_open: Vec<i64> = vec![0; schedule.len()];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = now_ms();
            if let Err(e) = close_due(&rounds, audit.as_ref(), now).await {
                tracing::warn!(error = %e, "Closing due rounds failed.");
            }
            for (s, last) in schedule.iter().zip(last_open.iter_mut()) {
                let every = i64::try_from(s.every_s.saturating_mul(1000)).unwrap_or(i64::MAX);
                if now.saturating_sub(*last) < every {
                    continue;
                }
                match rounds.open(&s.params(), now).await {
                    Ok(r) => {
                        *last = now;
                        tracing::info!(round = %r.round_id, model = %r.model, "Scheduled round opened.");
                    }
                    Err(e) => {
                        tracing::warn!(model = %s.model, error = %e, "Scheduled round not opened.")
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests;
