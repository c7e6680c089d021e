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
    /// The policy's guarantee in one sentence (per attendee-day, or per
    /// person-window for a policy without a privacy unit).
    pub guarantee: String,
}

/// `GET /api/budget`: spent/left of the venue's day (the ledger's report).
pub async fn budget(
    AxState(ctx): AxState<Ctx>,
    cred: Credential,
    Query(p): Query<BudgetParams>,
) -> Result<Response, ApiError> {
    let venue = cred.venue(&ctx, p.venue.as_deref())?;
    let policy = ctx
        .state
        .policies
        .get(&venue)
        .ok_or_else(|| ApiError::not_found("the venue has no policy in force"))?;
    // Today is the policy's event day (a show past midnight stays one day).
    let day = p
        .day
        .unwrap_or_else(|| ledger::release_day(policy, veil_common::now_ms()));
    if !ledger::valid_day(&day) {
        return Err(ApiError::bad_request("day must be YYYY-MM-DD"));
    }
    let r = ledger::report(
        ctx.state.storage.reads(),
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
            guarantee: policy.guarantee(),
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

fn query_error(st: &crate::state::State, e: crate::query::Error) -> ApiError {
    use crate::query::Error;
    match e {
        Error::InvalidArgument(m) => ApiError::bad_request(m),
        Error::NotReadable(m) => ApiError::forbidden(m),
        e @ Error::Db(_) => ApiError::internal(st, &e),
    }
}

fn alert_error(st: &crate::state::State, e: crate::alerts::AlertError) -> ApiError {
    use crate::alerts::AlertError;
    match e {
        AlertError::InvalidArgument(m) => ApiError::bad_request(m),
        e @ AlertError::NotFound(_) => ApiError::not_found(e.to_string()),
        e => ApiError::internal(st, &e),
    }
}

fn policy_of(
    ctx: &Ctx,
    venue: &str,
) -> Result<std::sync::Arc<veil_privacy::policy::LoadedPolicy>, ApiError> {
    ctx.state
        .policies
        .get(venue)
        .cloned()
        .ok_or_else(|| ApiError::not_found("the venue has no policy in force"))
}

/// The metrics of `policy` organizers may read, in policy order.
pub fn organizer_metrics(policy: &veil_privacy::policy::LoadedPolicy) -> Vec<String> {
    policy
        .policy
        .metrics
        .iter()
        .map(|m| m.get_ref())
        .filter(|m| m.readers.contains(&Reader::Organizer))
        .map(|m| m.name.clone())
        .collect()
}

use veil_privacy::policy::Reader;

/// One tile of the heat grid.
#[derive(Debug, Serialize)]
pub struct ZoneTile {
    /// Zone.
    pub zone: String,
    /// Newest combined occupancy (None: no occupancy release in this zone).
    pub occupancy: Option<crate::query::SeriesPoint>,
    /// The zone's occupancy limit (people) from `[report.occupancy_limits]`,
    /// if configured: the grid colours the zone by it.
    pub capacity: Option<f64>,
}

/// `GET /api/zones` body.
#[derive(Debug, Serialize)]
pub struct Zones {
    /// Venue.
    pub venue: String,
    /// Metrics organizers may read under the venue's policy.
    pub metrics: Vec<String>,
    /// Zones with their current occupancy.
    pub zones: Vec<ZoneTile>,
    /// Newest occupancy window start, Unix ms (0: none).
    pub latest_ms: i64,
}

/// `GET /api/zones`: zones and their current occupancy (heat grid).
pub async fn zones(
    AxState(ctx): AxState<Ctx>,
    cred: Credential,
    Query(p): Query<VenueParam>,
) -> Result<Response, ApiError> {
    let venue = cred.venue(&ctx, p.venue.as_deref())?;
    let policy = policy_of(&ctx, &venue)?;
    let st = &ctx.state;
    let names = crate::query::zones(&st.storage, &policy, Reader::Organizer, &venue)
        .await
        .map_err(|e| query_error(st, e))?;
    let occupancy =
        match crate::query::latest(&st.storage, &policy, Reader::Organizer, &venue, "occupancy")
            .await
        {
            Ok(p) => p,
            Err(crate::query::Error::NotReadable(_)) => Vec::new(),
            Err(e) => return Err(query_error(st, e)),
        };
    let latest_ms = occupancy
        .iter()
        .map(|p| p.window_start_ms)
        .max()
        .unwrap_or(0);
    let zones = names
        .into_iter()
        .map(|zone| ZoneTile {
            occupancy: occupancy.iter().rev().find(|p| p.zone == zone).cloned(),
            capacity: ctx.occupancy_limits.get(&zone).copied(),
            zone,
        })
        .collect();
    Ok(json(
        st,
        &Zones {
            venue,
            metrics: organizer_metrics(&policy),
            zones,
            latest_ms,
        },
    ))
}

/// `GET /api/series` parameters.
#[derive(Debug, Deserialize)]
pub struct SeriesParams {
    /// Venue.
    pub venue: Option<String>,
    /// Zone (all zones when absent).
    pub zone: Option<String>,
    /// Metric.
    pub metric: String,
    /// Window start at or after, Unix ms.
    #[serde(default)]
    pub from_ms: i64,
    /// Window start before, Unix ms.
    #[serde(default)]
    pub to_ms: i64,
    /// Page size (default 2000, at most 10000).
    #[serde(default)]
    pub page_size: u32,
    /// Token from the previous page.
    #[serde(default)]
    pub page_token: String,
}

/// `GET /api/series`: a zone's combined series with 95% error bounds.
pub async fn series(
    AxState(ctx): AxState<Ctx>,
    cred: Credential,
    Query(p): Query<SeriesParams>,
) -> Result<Response, ApiError> {
    let venue = cred.venue(&ctx, p.venue.as_deref())?;
    let policy = policy_of(&ctx, &venue)?;
    let q = crate::query::SeriesQuery {
        venue,
        zone: p.zone,
        metric: p.metric,
        from_ms: p.from_ms,
        to_ms: p.to_ms,
        page_size: if p.page_size == 0 { 2000 } else { p.page_size },
        page_token: p.page_token,
    };
    let page = crate::query::series(&ctx.state.storage, &policy, Reader::Organizer, &q)
        .await
        .map_err(|e| query_error(&ctx.state, e))?;
    Ok(json(&ctx.state, &page))
}

/// `GET /api/alerts` parameters.
#[derive(Debug, Deserialize)]
pub struct AlertParams {
    /// Venue.
    pub venue: Option<String>,
    /// Raised at or after, Unix ms.
    #[serde(default)]
    pub from_ms: i64,
    /// Raised before, Unix ms.
    #[serde(default)]
    pub to_ms: i64,
    /// At most this many (default 200, at most 1000).
    #[serde(default)]
    pub limit: u32,
}

/// `GET /api/alerts` body.
#[derive(Debug, Serialize)]
pub struct Alerts {
    /// Newest first.
    pub alerts: Vec<crate::alerts::AlertRecord>,
}

/// `GET /api/alerts`: the venue's alert timeline, newest first.
pub async fn alerts(
    AxState(ctx): AxState<Ctx>,
    cred: Credential,
    Query(p): Query<AlertParams>,
) -> Result<Response, ApiError> {
    let venue = cred.venue(&ctx, p.venue.as_deref())?;
    let limit = if p.limit == 0 { 200 } else { p.limit };
    let alerts = crate::alerts::list(&ctx.state.storage, &venue, p.from_ms, p.to_ms, limit)
        .await
        .map_err(|e| alert_error(&ctx.state, e))?;
    Ok(json(&ctx.state, &Alerts { alerts }))
}

/// `POST /api/alerts/{id}/ack`: acknowledges an alert (audited with the
/// credential's actor). A cookie-authenticated call must also carry
/// `X-Veil-Request: 1` (a header a cross-site form cannot set).
pub async fn acknowledge(
    AxState(ctx): AxState<Ctx>,
    cred: Credential,
    axum::extract::Path(id): axum::extract::Path<String>,
    Query(p): Query<VenueParam>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    if matches!(
        cred,
        Credential::Token {
            from_cookie: true,
            ..
        }
    ) && headers.get("x-veil-request").and_then(|v| v.to_str().ok()) != Some("1")
    {
        return Err(ApiError::forbidden(
            "state-changing calls with the session cookie need the X-Veil-Request: 1 header",
        ));
    }
    let venue = cred.venue(&ctx, p.venue.as_deref())?;
    let alert = crate::alerts::acknowledge(
        &ctx.state.core,
        &ctx.state.alerts,
        &venue,
        &id,
        &cred.actor(),
    )
    .await
    .map_err(|e| alert_error(&ctx.state, e))?;
    Ok(json(&ctx.state, &alert))
}
