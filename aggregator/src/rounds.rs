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

pub mod bench_secure;
pub mod cli;
pub mod kernel;
pub mod secure;
pub mod store;

use std::{sync::Arc, time::Duration};

use serde::Deserialize;
use sqlx::AnyConnection;

use veil_privacy::{Cost, Rho};

pub use store::{OpenParams, RoundError, RoundRow, Rounds, SecureOpen, SecureSpec, SubmitOutcome};
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
    /// Secure round: the key advertisements closed (how many, the graph).
    pub const SECURE_KEYS: &str = "round.secure.keys";
    /// Secure round: the encrypted shares closed (who committed).
    pub const SECURE_SHARES: &str = "round.secure.shares";
    /// Secure round: the masked inputs closed (survivors, dropped).
    pub const SECURE_MASKED: &str = "round.secure.masked";
    /// Secure round: the unmasking shares closed and the sum was (or was
    /// not) unmasked.
    pub const SECURE_UNMASK: &str = "round.secure.unmask";
    /// Secure round: a node's stage message was refused.
    pub const SECURE_REFUSE: &str = "round.secure.refuse";
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
    /// Secure aggregation (SecAgg+): the aggregator learns only the sum.
    #[serde(default)]
    pub secure: bool,
    /// Secure rounds: threshold over each closed neighbourhood (default:
    /// the graph degree's).
    #[serde(default)]
    pub threshold: Option<u32>,
    /// Secure rounds: longest time each stage stays open (default: a
    /// quarter of the deadline).
    #[serde(default)]
    pub stage_timeout_s: Option<u32>,
}

impl ScheduledRound {
    /// The round's parameters; `n_max` is the number of registered nodes.
    fn params(&self, n_max: u32) -> OpenParams {
        OpenParams {
            model: self.model.clone(),
            min_nodes: self.min_nodes,
            clip_norm: self.clip_norm,
            noise_multiplier: self.noise_multiplier,
            local_steps: self.local_steps,
            learning_rate: self.learning_rate,
            deadline: Duration::from_secs(u64::from(self.deadline_s)),
            secure: self.secure.then(|| SecureOpen {
                threshold: self.threshold,
                stage_timeout: self
                    .stage_timeout_s
                    .map(|s| Duration::from_secs(u64::from(s))),
                n_max,
                target_nodes: None,
            }),
            event_day: None,
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

/// How far one privacy unit of a venue (an attendee-day under the shipped
/// policies) can move one node's clipped update, in units of the clip norm
/// C: the update with and the update without the unit's data both lie in
/// the ball of radius C, so they differ by at most 2C in L2.
pub const UNIT_SENSITIVITY: f64 = 2.0;

/// The zCDP rho a round costs one venue's ledger when `k` of the venue's
/// nodes are in it.
///
/// # Privacy
/// One privacy unit (attendee-day) may be in the data of every one of the
/// venue's k nodes, and moves each node's clipped update by at most 2C
/// ([`UNIT_SENSITIVITY`]).
/// * Secure round: only the sum is seen; it moves by at most `2 k C`
///   against noise of std `z C` (the distributed discrete Gaussian bound
///   of `veil_secagg::EncodingParams::round_rho` at sensitivity C; the
///   bound scales at most quadratically in the sensitivity), so the venue
///   is charged `(2 k)^2 * round_rho` (`(2k)^2 / (2 z^2)` up to the DDG's
///   negligible term).
/// * Plain round: the aggregator sees each of the k updates with only its
///   own noise share (std `z C / sqrt(m)`): k Gaussian releases at
///   sensitivity 2C compose to `4 k * node_rho` (`4 k m / (2 z^2)`).
pub fn venue_rho(round: &RoundRow, k: u32) -> Result<f64, RoundError> {
    let s2 = UNIT_SENSITIVITY * UNIT_SENSITIVITY;
    let k = f64::from(k);
    Ok(match &round.secure {
        Some(spec) => {
            let rho = spec
                .encoding(round)?
                .round_rho()
                .map_err(|e| RoundError::Invalid(e.to_string()))?;
            s2 * k * k * rho.get()
        }
        None => s2 * k * round.privacy()?.node_rho()?.get(),
    })
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
        let rho = venue_rho(round, accepted_before + 1)?;
        let cost = Cost::Zcdp(Rho::new(rho)?);
        let mut tx = pool.begin().await?;
        let out = ledger::charge_direct(
            &mut tx,
            venue,
            &round.charge_day(now),
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
/// `tx` (the transaction that publishes a plain round's version, or the one
/// that closes a secure round's shares), with one `round.charge` audit
/// entry per venue in the same transaction.
///
/// `venues` holds one entry per node whose update is (or, for a secure
/// round, may be) in the round. A venue with k such nodes is charged
/// [`venue_rho`]`(round, k)` on the round's event day
/// ([`RoundRow::charge_day`]), under metric `model:<name>` and purpose
/// `model_training`. The published model's own cost is on the model card.
///
/// Returns `Ok(Err(reason))` when a venue has no policy or its budget
/// cannot cover the charge: the caller rolls back and fails the round
/// (nothing is published or charged).
pub async fn charge_round_ledgers(
    tx: &mut AnyConnection,
    atx: &mut AuditTx<'_>,
    policies: &Policies,
    round: &RoundRow,
    venues: &[String],
    now: i64,
) -> Result<Result<(), String>, RoundError> {
    let day = round.charge_day(now);
    let metric = ledger_metric(&round.model);
    let mut grouped: Vec<(&str, u32)> = Vec::new();
    let mut sorted: Vec<&String> = venues.iter().collect();
    sorted.sort();
    for v in sorted {
        match grouped.last_mut() {
            Some((last, n)) if *last == v.as_str() => *n += 1,
            _ => grouped.push((v.as_str(), 1)),
        }
    }
    for (venue, nodes) in grouped {
        let Some(policy) = policies.get(venue) else {
            return Ok(Err(format!("venue {venue} has no policy in force")));
        };
        let cost = Cost::Zcdp(Rho::new(venue_rho(round, nodes)?)?);
        let out =
            ledger::charge_direct(tx, venue, &day, &metric, TRAINING_PURPOSE, cost, policy).await;
        let granted = match ledger_outcome(out)? {
            Ok(g) => g,
            Err(reason) => return Ok(Err(reason)),
        };
        let what = if round.secure.is_some() {
            "node(s) in the secure sum"
        } else {
            "update(s)"
        };
        atx.append(
            tx,
            NewEntry {
                actor: SELF_ACTOR.into(),
                venue: venue.to_owned(),
                action: action::ROUND_CHARGE,
                allow: true,
                reason: format!(
                    "round {} of {}: {nodes} {what} charged to {metric} for {TRAINING_PURPOSE} on event day {day}, {:.4} epsilon left",
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

/// Closes due rounds (and the stages of secure rounds past their timeout)
/// and opens scheduled ones, every second, until the returned handle is
/// aborted. `registered` is the number of registered nodes (a scheduled
/// secure round's n_max).
pub fn spawn_ticker(
    rounds: Arc<Rounds>,
    audit: Option<AuditLog>,
    schedule: Vec<ScheduledRound>,
    secure: Option<Arc<secure::SecureRounds>>,
    registered: u32,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_open: Vec<i64> = vec![0; schedule.len()];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = now_ms();
            if let Some(s) = &secure {
                s.tick(now).await;
            }
            if let Err(e) = close_due(&rounds, audit.as_ref(), now).await {
                tracing::warn!(error = %e, "Closing due rounds failed.");
            }
            for (s, last) in schedule.iter().zip(last_open.iter_mut()) {
                let every = i64::try_from(s.every_s.saturating_mul(1000)).unwrap_or(i64::MAX);
                if now.saturating_sub(*last) < every {
                    continue;
                }
                match rounds.open(&s.params(registered), now).await {
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
