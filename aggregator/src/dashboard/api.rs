//! The dashboard's JSON API. Every handler takes a [`Credential`] first, so
//! nothing is read before the caller is known, and then checks the venue.

use axum::{
    extract::{Query, State as AxState},
    response::Response,
};
use serde::{Deserialize, Serialize};

use super::{ApiError, Credential, Ctx, json};
use crate::ledger;

/// `?venue=` (optional when the credential sees one venue).
#[derive(Debug, Default, Deserialize)]
pub struct VenueParam {
    /// Venue.
    pub venue: Option<String>,
}

/// `GET /api/session`.
#[derive(Debug, Serialize)]
pub struct Session {
    /// Audit actor of this credential.
    pub actor: String,
    /// `certificate` or `token`.
    pub method: &'static str,
    /// Venues it may see.
    pub venues: Vec<String>,
    /// Token expiry (Unix ms), 0 for certificates.
    pub expires_ms: i64,
}

/// Who is signed in and which venues they may see.
pub async fn session(AxState(ctx): AxState<Ctx>, cred: Credential) -> Response {
    let (method, expires_ms) = match &cred {
        Credential::Cert(_) => ("certificate", 0),
        Credential::Token { info, .. } => ("token", info.expires_ms),
    };
    json(
        &ctx.state,
        &Session {
            actor: cred.actor(),
            method,
            venues: cred.venues(&ctx.state),
            expires_ms,
        },
    )
}

/// `?venue=&day=` for the budget.
#[derive(Debug, Deserialize)]
pub struct BudgetParams {
    /// Venue.
    pub venue: Option<String>,
    /// YYYY-MM-DD (default: today, UTC).
    pub day: Option<String>,
}

/// One ledger line.
#[derive(Debug, Serialize)]
pub struct BudgetLine {
    /// Metric (or `model:<name>`).
    pub metric: String,
    /// Purpose.
    pub purpose: String,
    /// Epsilon charged (pure DP part).
    pub epsilon: f64,
    /// Rho charged (zCDP part).
    pub rho: f64,
}

/// The venue's budget for a day.
#[derive(Debug, Serialize)]
pub struct Budget {
    /// Venue.
    pub venue: String,
    /// Day.
    pub day: String,
    /// Day budget, epsilon at `delta`.
    pub budget_epsilon: f64,
    /// Delta.
    pub delta: f64,
    /// Spent (composed), epsilon at `delta`.
    pub spent_epsilon: f64,
    /// Left.
    pub remaining_epsilon: f64,
    /// What it was spent on.
    pub lines: Vec<BudgetLine>,
}

/// `GET /api/budget`: spent/left of the venue's day (the ledger's report).
pub async fn budget(
    AxState(ctx): AxState<Ctx>,
    cred: Credential,
    Query(p): Query<BudgetParams>,
) -> Result<Response, ApiError> {
    let venue = cred.venue(&ctx, p.venue.as_deref())?;
    let day = p
        .day
        .unwrap_or_else(|| ledger::day_of(crate::state::now_ms()));
    if !ledger::valid_day(&day) {
        return Err(ApiError::bad_request("day must be YYYY-MM-DD"));
    }
    let policy = ctx
        .state
        .policies
        .get(&venue)
        .ok_or_else(|| ApiError::not_found("the venue has no policy in force"))?;
    let r = ledger::report(
        ctx.state.storage.pool(),
        &venue,
        &day,
        Some(policy.as_ref()),
    )
    .await
    .map_err(|e| ApiError::internal(&ctx.state, &e))?;
    Ok(json(
        &ctx.state,
        &Budget {
            venue: r.venue,
            day: r.day,
            budget_epsilon: r.budget_epsilon,
            delta: r.delta,
            spent_epsilon: r.spent_epsilon,
            remaining_epsilon: r.remaining_epsilon,
            lines: r
                .lines
                .into_iter()
                .map(|(metric, purpose, epsilon, rho)| BudgetLine {
                    metric,
                    purpose,
                    epsilon,
                    rho,
                })
                .collect(),
        },
    ))
}
