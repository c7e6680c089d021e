//! The privacy-budget ledger: one row per venue and event day, composed
//! exactly (pure epsilon and zCDP rho kept apart, reported as epsilon at the
//! policy's delta). Nodes lease budget before drawing noise; the lease is
//! charged durably when granted, so no noisy value is ever computed with
//! budget that was not charged.

use sqlx::{AnyConnection, AnyPool, Row};

use crate::storage::Backend;
use veil_privacy::{
    Cost, Epsilon, Rho,
    accounting::Composition,
    policy::{LoadedPolicy, PolicyMechanism},
};

/// Most releases one lease may cover.
pub const MAX_LEASE_RELEASES: u32 = 100_000;

/// Why a lease or a lease use was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed.
    #[error("invalid lease request: {0}")]
    Invalid(String),
    /// The policy does not allow it.
    #[error("not allowed by policy: {0}")]
    Denied(String),
    /// The day's budget cannot cover it.
    #[error("budget exhausted: {0}")]
    Exhausted(String),
    /// Database error.
    #[error("ledger database: {0}")]
    Db(#[from] sqlx::Error),
    /// Accounting error.
    #[error("ledger accounting: {0}")]
    Accounting(#[from] veil_privacy::PrivacyError),
}

pub use veil_common::day::{day_of, valid_day};

/// A lease request after identity checks.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// Venue (from the certificate).
    pub venue: String,
    /// Node (from the certificate).
    pub node: String,
    /// Event day.
    pub day: String,
    /// Metric.
    pub metric: String,
    /// Purpose.
    pub purpose: String,
    /// Cost per release.
    pub cost: Cost,
    /// Releases covered.
    pub releases: u32,
    /// Policy hash the node holds.
    pub policy_hash: String,
    /// A stream lease (continual metric): (horizon, zones). Its cost is the
    /// whole stream-day's per privacy unit, charged once; `releases` bounds
    /// how many releases may name it (zones x horizon).
    pub stream: Option<(u32, u32)>,
}

/// A granted lease.
#[derive(Debug, Clone)]
pub struct Granted {
    /// Lease id.
    pub lease_id: String,
    /// Epsilon charged in total.
    pub epsilon: f64,
    /// Rho charged in total.
    pub rho: f64,
    /// Day budget left (epsilon at the policy's delta).
    pub remaining_epsilon: f64,
}

/// The policy's per-release cost for `metric`, checked against `cost`.
pub fn policy_cost(policy: &LoadedPolicy, metric: &str, purpose: &str) -> Result<Cost, Error> {
    let m = policy
        .metric(metric)
        .ok_or_else(|| Error::Denied(format!("metric `{metric}` is not in the venue's policy")))?;
    if !m.purposes.iter().any(|p| p == purpose) {
        return Err(Error::Denied(format!(
            "purpose `{purpose}` is not allowed for metric `{metric}`"
        )));
    }
    Ok(match m.mechanism {
        PolicyMechanism::DiscreteLaplace => Cost::Pure(Epsilon::new(m.epsilon.unwrap_or(0.0))?),
        PolicyMechanism::DiscreteGaussian
        | PolicyMechanism::ContinualSqrt
        | PolicyMechanism::ContinualTree => Cost::Zcdp(Rho::new(m.rho.unwrap_or(0.0))?),
        PolicyMechanism::NonPersonal => Cost::Free,
    })
}

/// The ledger's day of a release window under `policy`: its event day in the
/// policy's calendar (UTC days without a privacy unit).
pub fn release_day(policy: &LoadedPolicy, window_start_ms: i64) -> String {
    veil_common::day::event_day_of(window_start_ms, policy.event_day_offset_seconds())
}

fn same_cost(a: Cost, b: Cost) -> bool {
    a.epsilon() == b.epsilon() && a.rho() == b.rho()
}

async fn day_composition(
    tx: &mut AnyConnection,
    venue: &str,
    day: &str,
    policy: &LoadedPolicy,
) -> Result<(Composition, f64, f64), Error> {
    let b = &policy.policy.budget;
    sqlx::query(
        "-- day_composition()\nINSERT INTO ledger_days (venue, day, budget_epsilon, delta) VALUES ($1, $2, $3, $4) ON CONFLICT (venue, day) DO NOTHING",
    )
    .bind(venue)
    .bind(day)
    .bind(b.epsilon_per_day)
    .bind(b.delta)
    .execute(&mut *tx)
    .await?;
    // Concurrency: the day's composition is read, extended in Rust and
    // written back, so two charges must never interleave. On PostgreSQL
    // (several replicas) `FOR UPDATE` locks the (venue, day) row until the
    // transaction ends: a concurrent charge on any replica waits here and
    // then reads the committed total (READ COMMITTED re-reads the locked
    // row), so the budget check always sees every earlier charge. Row
    // locks rather than SERIALIZABLE-with-retry keep the charge exact
    // without a retry loop around a transaction that also writes the
    // audit log. On SQLite the single writer lock does the same.
    let select = match Backend::of(tx) {
        Backend::Sqlite => {
            "-- day_composition()\nSELECT budget_epsilon, delta, pure_epsilon, pure_as_rho, rho FROM ledger_days WHERE venue = $1 AND day = $2"
        }
        Backend::Postgres => {
            "-- day_composition()\nSELECT budget_epsilon, delta, pure_epsilon, pure_as_rho, rho FROM ledger_days WHERE venue = $1 AND day = $2 FOR UPDATE"
        }
    };
    let row = sqlx::query(select)
        .bind(venue)
        .bind(day)
        .fetch_one(&mut *tx)
        .await?;
    let comp = Composition::from_parts(
        row.try_get("pure_epsilon")?,
        row.try_get("pure_as_rho")?,
        row.try_get("rho")?,
        0.0,
        0.0,
    )?;
    Ok((comp, row.try_get("budget_epsilon")?, row.try_get("delta")?))
}

/// Charges and records a lease inside `tx` (the caller audits and commits).
pub async fn acquire(
    tx: &mut AnyConnection,
    req: &LeaseRequest,
    policy: &LoadedPolicy,
    lease_id: String,
    now_ms: i64,
) -> Result<Granted, Error> {
    if req.releases == 0 || req.releases > MAX_LEASE_RELEASES {
        return Err(Error::Invalid(format!(
            "releases must be in 1..={MAX_LEASE_RELEASES}"
        )));
    }
    if !valid_day(&req.day) {
        return Err(Error::Invalid("day must be YYYY-MM-DD".into()));
    }
    if req.policy_hash != policy.hash {
        return Err(Error::Denied(format!(
            "lease requested under policy {:?}, but the policy in force is {:?}",
            req.policy_hash, policy.hash
        )));
    }
    let cost = policy_cost(policy, &req.metric, &req.purpose)?;
    if matches!(cost, Cost::Free) {
        return Err(Error::Invalid(format!(
            "metric `{}` is declared non-personal and needs no lease",
            req.metric
        )));
    }
    if !same_cost(cost, req.cost) {
        return Err(Error::Denied(format!(
            "cost per release (epsilon {}, rho {}) differs from the policy's (epsilon {}, rho {})",
            req.cost.epsilon(),
            req.cost.rho(),
            cost.epsilon(),
            cost.rho()
        )));
    }
    let continual = policy
        .metric(&req.metric)
        .is_some_and(|m| m.mechanism.is_continual());
    // How many times the cost is charged: once for a stream-day, per
    // release otherwise.
    let charges = match (continual, req.stream) {
        (true, Some((horizon, zones))) => {
            if !(1..=10_000).contains(&horizon)
                || zones == 0
                || u64::from(req.releases) > u64::from(horizon) * u64::from(zones)
            {
                return Err(Error::Invalid(format!(
                    "stream lease: horizon must be in 1..=10000, zones >= 1 and releases <= zones x horizon (got {horizon}, {zones}, {})",
                    req.releases
                )));
            }
            1
        }
        (true, None) => {
            return Err(Error::Denied(format!(
                "metric `{}` is a continual stream under the policy: ask for a stream lease (its whole event day is charged once per attendee)",
                req.metric
            )));
        }
        (false, Some(_)) => {
            return Err(Error::Invalid(format!(
                "metric `{}` is released per window under the policy, not as a stream",
                req.metric
            )));
        }
        (false, None) => req.releases,
    };
    let (before, budget, delta) = day_composition(tx, &req.venue, &req.day, policy).await?;
    let after = before.compose_n(cost, charges)?;
    let spent = after.epsilon_at(delta)?;
    if spent > budget {
        let had = before.epsilon_at(delta)?;
        return Err(Error::Exhausted(format!(
            "venue {} day {}: {:.4} of {budget} epsilon spent, this lease would make it {spent:.4}",
            req.venue, req.day, had
        )));
    }
    sqlx::query(
        "-- acquire()\nUPDATE ledger_days SET pure_epsilon = $1, pure_as_rho = $2, rho = $3 WHERE venue = $4 AND day = $5",
    )
    .bind(after.pure_epsilon())
    .bind(after.pure_as_rho())
    .bind(after.rho())
    .bind(&req.venue)
    .bind(&req.day)
    .execute(&mut *tx)
    .await?;
    let n = f64::from(charges);
    let (eps, rho) = (cost.epsilon() * n, cost.rho() * n);
    sqlx::query(
        "-- acquire()\nINSERT INTO ledger_lines (venue, day, metric, purpose, epsilon, rho) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (venue, day, metric, purpose) DO UPDATE SET epsilon = ledger_lines.epsilon + excluded.epsilon, rho = ledger_lines.rho + excluded.rho",
    )
    .bind(&req.venue)
    .bind(&req.day)
    .bind(&req.metric)
    .bind(&req.purpose)
    .bind(eps)
    .bind(rho)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "-- acquire()\nINSERT INTO leases (lease_id, venue, node, day, metric, purpose, epsilon, rho, releases, used, policy_hash, created_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11)",
    )
    .bind(&lease_id)
    .bind(&req.venue)
    .bind(&req.node)
    .bind(&req.day)
    .bind(&req.metric)
    .bind(&req.purpose)
    .bind(cost.epsilon())
    .bind(cost.rho())
    .bind(i64::from(req.releases))
    .bind(&policy.hash)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    Ok(Granted {
        lease_id,
        epsilon: eps,
        rho,
        remaining_epsilon: (budget - spent).max(0.0),
    })
}

/// Charges `cost` to `venue`'s ledger on `day` under `metric` and
/// `purpose` inside `tx`, without a lease (the caller audits and commits).
///
/// For releases the aggregator itself makes on a venue's behalf, such as a
/// node's noised model update in a federated round (`metric` is
/// `model:<name>`, `purpose` `model_training`); they are not policy metrics,
/// so the policy supplies only the day budget. The budget check is the one
/// [`acquire`] makes: the day's composition after the charge, as epsilon at
/// the day's delta, may not exceed the budget, else [`Error::Exhausted`]
/// and nothing is written. The returned lease id is `direct:<metric>`.
pub async fn charge_direct(
    tx: &mut AnyConnection,
    venue: &str,
    day: &str,
    metric: &str,
    purpose: &str,
    cost: Cost,
    policy: &LoadedPolicy,
) -> Result<Granted, Error> {
    if !valid_day(day) {
        return Err(Error::Invalid("day must be YYYY-MM-DD".into()));
    }
    if metric.is_empty() || purpose.is_empty() {
        return Err(Error::Invalid(
            "a direct charge needs a metric and a purpose".into(),
        ));
    }
    if matches!(cost, Cost::Free) {
        return Err(Error::Invalid(
            "a direct charge needs a positive cost".into(),
        ));
    }
    let (before, budget, delta) = day_composition(tx, venue, day, policy).await?;
    let after = before.compose(cost)?;
    let spent = after.epsilon_at(delta)?;
    if spent > budget {
        let had = before.epsilon_at(delta)?;
        return Err(Error::Exhausted(format!(
            "venue {venue} day {day}: {had:.4} of {budget} epsilon spent, {metric} would make it {spent:.4}"
        )));
    }
    sqlx::query(
        "-- charge_direct()\nUPDATE ledger_days SET pure_epsilon = $1, pure_as_rho = $2, rho = $3 WHERE venue = $4 AND day = $5",
    )
    .bind(after.pure_epsilon())
    .bind(after.pure_as_rho())
    .bind(after.rho())
    .bind(venue)
    .bind(day)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "-- charge_direct()\nINSERT INTO ledger_lines (venue, day, metric, purpose, epsilon, rho) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (venue, day, metric, purpose) DO UPDATE SET epsilon = ledger_lines.epsilon + excluded.epsilon, rho = ledger_lines.rho + excluded.rho",
    )
    .bind(venue)
    .bind(day)
    .bind(metric)
    .bind(purpose)
    .bind(cost.epsilon())
    .bind(cost.rho())
    .execute(&mut *tx)
    .await?;
    Ok(Granted {
        lease_id: format!("direct:{metric}"),
        epsilon: cost.epsilon(),
        rho: cost.rho(),
        remaining_epsilon: (budget - spent).max(0.0),
    })
}

/// The leases touched by one ingest transaction, read once and used in
/// memory, then written back with one conditional UPDATE per lease
/// ([`LeaseBook::flush`]).
///
/// Only valid inside a transaction that holds the audit lock
/// ([`crate::audit::AuditTx::lock`]): every writer of `leases.used` holds
/// it, so the counts read here cannot change before the flush. The flush
/// is still conditional (`used + n <= releases`) and fails the whole
/// transaction if a row changed anyway, so a lease is never overdrawn.
#[derive(Debug, Default)]
pub struct LeaseBook {
    leases: std::collections::HashMap<String, BookedLease>,
}

#[derive(Debug)]
struct BookedLease {
    venue: String,
    node: String,
    day: String,
    metric: String,
    purpose: String,
    epsilon: f64,
    rho: f64,
    releases: i64,
    used: i64,
    /// Uses taken in this transaction, not yet written.
    taken: i64,
}

/// Lease ids per `IN (...)` lookup.
const LEASE_LOOKUP_CHUNK: usize = 256;

impl LeaseBook {
    /// Reads the leases named by `ids` (unknown ids are simply absent).
    pub async fn load(
        tx: &mut AnyConnection,
        ids: &std::collections::BTreeSet<&str>,
    ) -> Result<Self, Error> {
        let mut book = Self::default();
        let ids: Vec<&str> = ids.iter().copied().collect();
        for chunk in ids.chunks(LEASE_LOOKUP_CHUNK) {
            let sql = crate::storage::in_list_sql(
                Backend::of(tx),
                "-- LeaseBook::load()\nSELECT lease_id, venue, node, day, metric, purpose, epsilon, rho, releases, used FROM leases WHERE lease_id IN ",
                chunk.len(),
                "",
            );
            let mut q =
                sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() == LEASE_LOOKUP_CHUNK);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&mut *tx).await? {
                book.leases.insert(
                    row.try_get("lease_id")?,
                    BookedLease {
                        venue: row.try_get("venue")?,
                        node: row.try_get("node")?,
                        day: row.try_get("day")?,
                        metric: row.try_get("metric")?,
                        purpose: row.try_get("purpose")?,
                        epsilon: row.try_get("epsilon")?,
                        rho: row.try_get("rho")?,
                        releases: row.try_get("releases")?,
                        used: row.try_get("used")?,
                        taken: 0,
                    },
                );
            }
        }
        Ok(book)
    }

    /// Takes one use of `lease_id` for a release of `metric`/`purpose` on
    /// `day` at `cost` by `venue`/`node`, or says why it cannot (the
    /// reason goes into the ack and the audit log).
    #[allow(clippy::too_many_arguments)]
    pub fn take(
        &mut self,
        lease_id: &str,
        venue: &str,
        node: &str,
        metric: &str,
        purpose: &str,
        day: &str,
        cost: Cost,
    ) -> Result<(), String> {
        let Some(l) = self.leases.get_mut(lease_id) else {
            return Err(format!(
                "lease {lease_id:?} does not exist: no budget was charged for this release"
            ));
        };
        if l.venue != venue || l.node != node {
            return Err("the lease belongs to another node".into());
        }
        if l.metric != metric || l.purpose != purpose {
            return Err("the lease was granted for another metric or purpose".into());
        }
        if l.day != day {
            return Err("the lease was granted for another event day".into());
        }
        if l.epsilon != cost.epsilon() || l.rho != cost.rho() {
            return Err("the release's cost differs from its lease's".into());
        }
        if l.used + l.taken >= l.releases {
            return Err(format!("the lease's {} releases are used up", l.releases));
        }
        l.taken += 1;
        Ok(())
    }

    /// Writes the uses taken back, inside the same transaction.
    pub async fn flush(&self, tx: &mut AnyConnection) -> Result<(), Error> {
        for (id, l) in self.leases.iter().filter(|(_, l)| l.taken > 0) {
            let done = sqlx::query(
                "-- LeaseBook::flush()\nUPDATE leases SET used = used + $2 WHERE lease_id = $1 AND used = $3 AND used + $2 <= releases",
            )
            .bind(id)
            .bind(l.taken)
            .bind(l.used)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                // Every writer holds the audit lock, so this means a write
                // outside Veil: abort; the retry reads the lease again.
                return Err(Error::Invalid(format!(
                    "lease {id:?} changed during the transaction; nothing was stored"
                )));
            }
        }
        Ok(())
    }
}

/// Spent and remaining budget of a venue on a day.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetReport {
    /// Venue.
    pub venue: String,
    /// Day.
    pub day: String,
    /// Day budget (epsilon at `delta`).
    pub budget_epsilon: f64,
    /// Delta.
    pub delta: f64,
    /// Spent, epsilon at `delta`.
    pub spent_epsilon: f64,
    /// Remaining.
    pub remaining_epsilon: f64,
    /// (metric, purpose, epsilon, rho) charged.
    pub lines: Vec<(String, String, f64, f64)>,
}

/// The budget report of `venue` on `day`; `policy` supplies the budget when
/// nothing was spent yet.
pub async fn report(
    pool: &AnyPool,
    venue: &str,
    day: &str,
    policy: Option<&LoadedPolicy>,
) -> Result<BudgetReport, Error> {
    let row = sqlx::query(
        "-- report()\nSELECT budget_epsilon, delta, pure_epsilon, pure_as_rho, rho FROM ledger_days WHERE venue = $1 AND day = $2",
    )
    .bind(venue)
    .bind(day)
    .fetch_optional(pool)
    .await?;
    let (budget, delta, comp) = match row {
        Some(r) => (
            r.try_get("budget_epsilon")?,
            r.try_get("delta")?,
            Composition::from_parts(
                r.try_get("pure_epsilon")?,
                r.try_get("pure_as_rho")?,
                r.try_get("rho")?,
                0.0,
                0.0,
            )?,
        ),
        None => (
            policy.map_or(0.0, |p| p.policy.budget.epsilon_per_day),
            policy.map_or(0.0, |p| p.policy.budget.delta),
            Composition::new(),
        ),
    };
    let spent = comp.epsilon_at(delta)?;
    let lines = sqlx::query(
        "-- report()\nSELECT metric, purpose, epsilon, rho FROM ledger_lines WHERE venue = $1 AND day = $2 ORDER BY metric, purpose",
    )
    .bind(venue)
    .bind(day)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get("metric")?,
            r.try_get("purpose")?,
            r.try_get("epsilon")?,
            r.try_get("rho")?,
        ))
    })
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    Ok(BudgetReport {
        venue: venue.to_owned(),
        day: day.to_owned(),
        budget_epsilon: budget,
        delta,
        spent_epsilon: spent,
        remaining_epsilon: (budget - spent).max(0.0),
        lines,
    })
}
