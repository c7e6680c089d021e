//! The post-event report (`veil-aggregator report`): one self-contained HTML
//! file with inline SVG. Post-processing of stored DP releases, alerts, the
//! ledger and the audit log only; it spends no budget.

use std::collections::BTreeMap;

use sqlx::Row;
use veil_privacy::policy::Reader;

use crate::{alerts::AlertRecord, audit::AuditLog, query::SeriesPoint, storage::Storage};

use serde::Deserialize;

/// `[report]` in `aggregator.toml`: limits the report measures time above.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Sound level limit, dB (minutes above it are reported per zone).
    #[serde(default)]
    pub sound_limit_db: Option<f64>,
    /// Occupancy (people) limit per zone, from the zone's area and the
    /// density the venue allows, e.g. `{ floor = 1800 }`.
    #[serde(default)]
    pub occupancy_limits: BTreeMap<String, f64>,
}

impl Config {
    /// Semantic checks: (key, reason) of the first problem.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(l) = self.sound_limit_db
            && !(l.is_finite() && (0.0..=200.0).contains(&l))
        {
            return Err(("report.sound_limit_db", "must be in 0..=200".into()));
        }
        for (zone, l) in &self.occupancy_limits {
            if !crate::identity::valid_name(zone) {
                return Err((
                    "report.occupancy_limits",
                    format!("zone {zone:?} must be 1..=64 bytes of [a-z0-9_-]"),
                ));
            }
            if !(l.is_finite() && *l > 0.0) {
                return Err((
                    "report.occupancy_limits",
                    format!("limit of {zone} must be a positive number"),
                ));
            }
        }
        Ok(())
    }
}

/// What the report reads, resolved by the application's config
/// ([`crate::config::Config::report_sources`]).
#[derive(Debug)]
pub struct Sources {
    /// Policies in force per venue.
    pub policies: veil_aggregator_core::policy::Policies,
    /// The database.
    pub storage: veil_aggregator_core::storage::StorageOptions,
    /// The audit log's checkpoint signer (loading the log checks the stored
    /// tree against its latest signed checkpoint).
    pub signer: veil_privacy::audit::CheckpointSigner,
    /// Checkpoint interval, entries.
    pub checkpoint_every: u64,
    /// `[report]` limits.
    pub limits: Config,
}

/// Everything the report shows, gathered from the database.
#[derive(Debug)]
pub struct ReportData {
    /// Venue.
    pub venue: String,
    /// Day.
    pub day: String,
    /// Alerts whose first window is on the day, by window.
    pub incidents: Vec<AlertRecord>,
    /// Per zone KPIs.
    pub zones: Vec<ZoneKpi>,
    /// Occupancy series per zone (for the charts).
    pub occupancy: BTreeMap<String, Vec<SeriesPoint>>,
    /// The ledger's day report.
    pub budget: crate::ledger::BudgetReport,
    /// Releases per (metric, purpose) on the day, with their summed cost.
    pub releases: Vec<(String, String, u64, f64, f64)>,
    /// Policy hashes the day's releases were made under, with counts.
    pub policies: Vec<(String, u64)>,
    /// The policy in force now: (name, schema version, hash).
    pub policy_now: (String, u32, String),
    /// The policy's guarantee in one sentence (per attendee-day, or per
    /// person-window for policies without a privacy unit).
    pub guarantee: String,
    /// Latest signed checkpoint: (size, base64 root, signed note).
    pub checkpoint: Option<(u64, String, String)>,
    /// Entries in the audit log when the report was made.
    pub audit_size: u64,
    /// Sound limit used, dB.
    pub sound_limit_db: Option<f64>,
}

/// KPIs of one zone; every figure a DP estimate with its 95% bound.
#[derive(Debug, Clone, Default)]
pub struct ZoneKpi {
    /// Zone.
    pub zone: String,
    /// Peak combined occupancy and its 95% half-width, and when.
    pub peak: Option<(f64, f64, i64)>,
    /// Minutes from the first occupancy window to the first at or above
    /// 90% of the peak (lower and upper bound from the error bands).
    pub to_90: Option<f64>,
    /// Occupancy limit from `[report.occupancy_limits]`.
    pub occupancy_limit: Option<f64>,
    /// Minutes above the occupancy limit: (estimate, certain at 95%).
    pub over_occupancy: (f64, f64),
    /// Minutes above the sound limit: (estimate, certain at 95%).
    pub over_sound: (f64, f64),
    /// Peak sound level (mean over nodes) and its 95% half-width.
    pub peak_sound: Option<(f64, f64)>,
}

fn day_bounds(day: &str) -> anyhow::Result<(i64, i64)> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(day, &fmt)
        .map_err(|_| anyhow::anyhow!("--day must be YYYY-MM-DD, got {day:?}"))?;
    let start = d.midnight().assume_utc().unix_timestamp() * 1000;
    Ok((start, start + 86_400_000))
}

async fn all_points(
    storage: &Storage,
    policy: &veil_privacy::policy::LoadedPolicy,
    venue: &str,
    metric: &str,
    (from_ms, to_ms): (i64, i64),
) -> anyhow::Result<Vec<SeriesPoint>> {
    let mut q = crate::query::SeriesQuery {
        venue: venue.to_owned(),
        zone: None,
        metric: metric.to_owned(),
        from_ms,
        to_ms,
        page_size: crate::query::MAX_PAGE_SIZE,
        page_token: String::new(),
    };
    let mut out = Vec::new();
    loop {
        let page = match crate::query::series(storage, policy, Reader::Organizer, &q).await {
            Ok(p) => p,
            Err(crate::query::Error::NotReadable(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        out.extend(page.points);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        q.page_token = page.next_page_token;
    }
}

/// Minutes a series spends above `limit`: by the estimate, and with the
/// whole 95% interval above it.
fn minutes_above(points: &[&SeriesPoint], limit: f64) -> (f64, f64) {
    let mut est = 0.0;
    let mut sure = 0.0;
    for p in points.iter().filter(|p| !p.suppressed) {
        let m = f64::from(p.window_len_s) / 60.0;
        if p.value > limit {
            est += m;
        }
        if p.value - p.error95 > limit {
            sure += m;
        }
    }
    (est, sure)
}

/// Computes the KPIs of each zone from its occupancy and sound series.
pub fn zone_kpis(
    occupancy: &BTreeMap<String, Vec<SeriesPoint>>,
    sound: &[SeriesPoint],
    cfg: &Config,
) -> Vec<ZoneKpi> {
    let mut zones: Vec<String> = occupancy.keys().cloned().collect();
    for p in sound {
        if !zones.contains(&p.zone) {
            zones.push(p.zone.clone());
        }
    }
    zones.sort();
    zones
        .into_iter()
        .map(|zone| {
            let occ: Vec<&SeriesPoint> = occupancy
                .get(&zone)
                .map(|v| v.iter().filter(|p| !p.suppressed).collect())
                .unwrap_or_default();
            let peak = occ
                .iter()
                .max_by(|a, b| a.value.total_cmp(&b.value))
                .map(|p| (p.value, p.error95, p.window_start_ms));
            let to_90 = peak.and_then(|(pv, _, _)| {
                let first = occ.first()?.window_start_ms;
                let hit = occ.iter().find(|p| p.value >= 0.9 * pv)?;
                Some((hit.window_start_ms - first) as f64 / 60_000.0)
            });
            let limit = cfg.occupancy_limits.get(&zone).copied();
            let snd: Vec<&SeriesPoint> = sound.iter().filter(|p| p.zone == zone).collect();
            ZoneKpi {
                peak,
                to_90,
                occupancy_limit: limit,
                over_occupancy: limit.map_or((0.0, 0.0), |l| minutes_above(&occ, l)),
                over_sound: cfg
                    .sound_limit_db
                    .map_or((0.0, 0.0), |l| minutes_above(&snd, l)),
                peak_sound: snd
                    .iter()
                    .filter(|p| !p.suppressed)
                    .max_by(|a, b| a.value.total_cmp(&b.value))
                    .map(|p| (p.value, p.error95)),
                zone,
            }
        })
        .collect()
}

/// Gathers the report's data for `venue` on `day`.
pub async fn gather(src: Sources, venue: &str, day: &str) -> anyhow::Result<ReportData> {
    let bounds = day_bounds(day)?;
    let policy = src
        .policies
        .get(venue)
        .ok_or_else(|| anyhow::anyhow!("--venue {venue:?} is not a venue of this config"))?
        .clone();
    let storage = Storage::open_with(&src.storage).await?;
    // Loading the audit log checks the stored tree against its latest
    // signed checkpoint: the report is only made from a consistent log.
    let audit = AuditLog::load(&storage, src.signer, src.checkpoint_every).await?;
    let audit_size = audit.size().await;
    let checkpoint = sqlx::query(
        "-- report_checkpoint()\nSELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1",
    )
    .fetch_optional(storage.reads())
    .await?
    .map(|r| -> anyhow::Result<(u64, String, String)> {
        use base64::Engine as _;
        let size: i64 = r.try_get("size")?;
        let root: Vec<u8> = r.try_get("root")?;
        Ok((
            u64::try_from(size).unwrap_or(0),
            base64::engine::general_purpose::STANDARD.encode(root),
            r.try_get("note")?,
        ))
    })
    .transpose()?;
    let occ = all_points(&storage, &policy, venue, "occupancy", bounds).await?;
    let mut occupancy: BTreeMap<String, Vec<SeriesPoint>> = BTreeMap::new();
    for p in occ {
        occupancy.entry(p.zone.clone()).or_default().push(p);
    }
    let sound = all_points(&storage, &policy, venue, "sound_level_db", bounds).await?;
    let zones = zone_kpis(&occupancy, &sound, &src.limits);
    let incidents = sqlx::query(
        "-- report_incidents()\nSELECT alert_id, venue, zone, metric, source, severity, state, window_start_ms, \
         window_len_s, last_window_ms, runbook, detail, raised_ms, resolved_ms, acked_by, acked_ms \
         FROM alerts WHERE venue = $1 AND window_start_ms >= $2 AND window_start_ms < $3 \
         ORDER BY window_start_ms, zone, source",
    )
    .bind(venue)
    .bind(bounds.0)
    .bind(bounds.1)
    .fetch_all(storage.reads())
    .await?
    .iter()
    .map(crate::alerts::row_to_alert)
    .collect::<Result<Vec<_>, _>>()?;
    let budget = crate::ledger::report(storage.reads(), venue, day, Some(policy.as_ref())).await?;
    let releases = sqlx::query(
        "-- report_releases()\nSELECT metric, purpose, COUNT(*) AS n, SUM(epsilon) AS eps, SUM(rho) AS rho \
         FROM releases WHERE venue = $1 AND window_start_ms >= $2 AND window_start_ms < $3 \
         GROUP BY metric, purpose ORDER BY metric, purpose",
    )
    .bind(venue)
    .bind(bounds.0)
    .bind(bounds.1)
    .fetch_all(storage.reads())
    .await?
    .iter()
    .map(|r| -> Result<_, sqlx::Error> {
        Ok((
            r.try_get::<String, _>("metric")?,
            r.try_get::<String, _>("purpose")?,
            u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
            r.try_get::<f64, _>("eps")?,
            r.try_get::<f64, _>("rho")?,
        ))
    })
    .collect::<Result<Vec<_>, _>>()?;
    let policies_used = sqlx::query(
        "-- report_policies()\nSELECT policy_hash, COUNT(*) AS n FROM releases \
         WHERE venue = $1 AND window_start_ms >= $2 AND window_start_ms < $3 GROUP BY policy_hash ORDER BY n DESC",
    )
    .bind(venue)
    .bind(bounds.0)
    .bind(bounds.1)
    .fetch_all(storage.reads())
    .await?
    .iter()
    .map(|r| -> Result<_, sqlx::Error> {
        Ok((
            r.try_get::<String, _>("policy_hash")?,
            u64::try_from(r.try_get::<i64, _>("n")?).unwrap_or(0),
        ))
    })
    .collect::<Result<Vec<_>, _>>()?;
    storage.close().await;
    Ok(ReportData {
        venue: venue.to_owned(),
        day: day.to_owned(),
        incidents,
        zones,
        occupancy,
        budget,
        releases,
        policies: policies_used,
        policy_now: (
            policy.policy.name.clone(),
            policy.policy.version,
            policy.hash.clone(),
        ),
        guarantee: policy.guarantee(),
        checkpoint,
        audit_size,
        sound_limit_db: src.limits.sound_limit_db,
    })
}

/// Writes the report of `venue` on `day` to `out` in `format` (`html`;
/// `pdf` is refused with how to get one); returns what to print.
pub async fn write(
    src: Sources,
    venue: &str,
    day: &str,
    out: &std::path::Path,
    format: &str,
) -> anyhow::Result<String> {
    match format {
        "html" => {}
        "pdf" => anyhow::bail!(
            "--format pdf is not offered: there is no PDF engine in this binary and none is \
             downloaded at run time. Write HTML and print it to PDF from a browser \
             (e.g. chromium --headless --print-to-pdf=report.pdf report.html)"
        ),
        other => anyhow::bail!("--format must be html (pdf is not offered), got {other:?}"),
    }
    if !crate::ledger::valid_day(day) {
        anyhow::bail!("--day must be YYYY-MM-DD, got {day:?}");
    }
    let data = gather(src, venue, day).await?;
    let html = render(&data);
    std::fs::write(out, html).map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
    Ok(format!(
        "Wrote the report of venue {} on {} to {} ({} incidents, {} zones; audit checkpoint size {})",
        data.venue,
        data.day,
        out.display(),
        data.incidents.len(),
        data.zones.len(),
        data.checkpoint.as_ref().map_or(0, |c| c.0)
    ))
}

mod render;
pub use render::render;

#[cfg(test)]
mod tests;
