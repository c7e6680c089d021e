//! Organizer queries over stored releases: time series per venue, zone and
//! metric, combined across the venue's nodes, each value with its mechanism
//! and a 95% error bound from the public noise parameters ([`noise`]).
//!
//! Everything here is post-processing of stored DP releases (and of values
//! the policy declares non-personal): it reads nothing else and spends no
//! budget. It applies the policy's reader-facing rules: a metric is shown
//! only to the roles in its `readers`, and combined values below its
//! `suppress_below` are hidden.

pub mod noise;

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;
use veil_privacy::policy::{LoadedPolicy, Reader};

use crate::storage::Storage;

pub use noise::Noise;

/// Largest page a series query returns.
pub const MAX_PAGE_SIZE: u32 = 10_000;
/// Page size when the caller gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 1_000;

/// Level metrics: nodes' values are averaged, not added (two sensors in one
/// room do not make it twice as loud). Every other metric is a count, summed.
pub const MEAN_METRICS: &[&str] = &["sound_level_db", "co2_ppm", "temperature_c"];

/// Query errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is wrong (gRPC InvalidArgument).
    #[error("{0}")]
    InvalidArgument(String),
    /// The policy does not let this reader see the metric (PermissionDenied).
    #[error("{0}")]
    NotReadable(String),
    /// Database error (Internal; details logged, not echoed).
    #[error("query database: {0}")]
    Db(#[from] sqlx::Error),
}

/// How nodes' values of one (zone, window) are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// Sum of the nodes' values (counts).
    Sum,
    /// Mean of the nodes' values (levels, see [`MEAN_METRICS`]).
    Mean,
}

impl Combine {
    /// For a metric name.
    pub fn of(metric: &str) -> Self {
        if MEAN_METRICS.contains(&metric) {
            Combine::Mean
        } else {
            Combine::Sum
        }
    }
    /// "sum" or "mean".
    pub fn as_str(self) -> &'static str {
        match self {
            Combine::Sum => "sum",
            Combine::Mean => "mean",
        }
    }
}

/// One combined point: a venue's releases of one metric for one zone and window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// Venue.
    pub venue: String,
    /// Zone.
    pub zone: String,
    /// Metric.
    pub metric: String,
    /// Window start, Unix ms.
    pub window_start_ms: i64,
    /// Window length, s.
    pub window_len_s: u32,
    /// Combined value (0 when suppressed).
    pub value: f64,
    /// 95% half-width of the combined value's noise (0 when suppressed).
    pub error95: f64,
    /// Proto mechanism name when all releases share one, else
    /// "MECHANISM_UNSPECIFIED".
    pub mechanism: String,
    /// Node releases combined.
    pub releases: u32,
    /// Sum or mean.
    pub combine: Combine,
    /// Hidden by the policy's `suppress_below`.
    pub suppressed: bool,
}

impl SeriesPoint {
    /// The proto message.
    pub fn to_proto(&self) -> veil_proto::SeriesPoint {
        veil_proto::SeriesPoint {
            venue: self.venue.clone(),
            zone: self.zone.clone(),
            metric: self.metric.clone(),
            window: Some(veil_proto::Window {
                start_ms: self.window_start_ms,
                length_s: self.window_len_s,
            }),
            value: self.value,
            error95: self.error95,
            mechanism: veil_proto::Mechanism::from_str_name(&self.mechanism)
                .unwrap_or(veil_proto::Mechanism::Unspecified) as i32,
            releases: self.releases,
            combine: self.combine.as_str().to_owned(),
            suppressed: self.suppressed,
        }
    }
}

/// Accumulates the releases of one (zone, window) into a point.
#[derive(Debug, Clone, Default)]
pub struct Combiner {
    sum: f64,
    noise: Vec<Noise>,
    mechanism: Option<String>,
    mixed: bool,
}

impl Combiner {
    /// Adds one release.
    pub fn add(&mut self, mechanism: &str, value: f64, scale: f64) {
        self.sum += value;
        self.noise.push(Noise::from_release(mechanism, scale));
        match &self.mechanism {
            None => self.mechanism = Some(mechanism.to_owned()),
            Some(m) if m != mechanism => self.mixed = true,
            Some(_) => {}
        }
    }

    /// Releases added.
    pub fn releases(&self) -> u32 {
        u32::try_from(self.noise.len()).unwrap_or(u32::MAX)
    }

    /// Combined value for `combine`.
    pub fn value(&self, combine: Combine) -> f64 {
        match combine {
            Combine::Sum => self.sum,
            Combine::Mean => self.sum / f64::from(self.releases().max(1)),
        }
    }

    /// Variance of the combined value's noise.
    pub fn noise_variance(&self, combine: Combine) -> f64 {
        let v = noise::variance(&self.noise);
        match combine {
            Combine::Sum => v,
            Combine::Mean => v / f64::from(self.releases().max(1)).powi(2),
        }
    }

    /// The point, with the policy's suppression applied.
    #[allow(clippy::too_many_arguments)]
    pub fn point(
        &self,
        venue: &str,
        zone: &str,
        metric: &str,
        window_start_ms: i64,
        window_len_s: u32,
        suppress_below: f64,
        cache: &mut Error95Cache,
    ) -> SeriesPoint {
        let combine = Combine::of(metric);
        let value = self.value(combine);
        let suppressed = suppress_below > 0.0 && value < suppress_below;
        let error95 = if suppressed {
            0.0
        } else {
            let e = cache.error95(&self.noise);
            match combine {
                Combine::Sum => e,
                Combine::Mean => e / f64::from(self.releases().max(1)),
            }
        };
        SeriesPoint {
            venue: venue.to_owned(),
            zone: zone.to_owned(),
            metric: metric.to_owned(),
            window_start_ms,
            window_len_s,
            value: if suppressed { 0.0 } else { value },
            error95,
            mechanism: match (&self.mechanism, self.mixed) {
                (Some(m), false) => m.clone(),
                _ => "MECHANISM_UNSPECIFIED".to_owned(),
            },
            releases: self.releases(),
            combine,
            suppressed,
        }
    }
}

/// Memoises [`noise::error95`] by the (sorted) noise components: the points
/// of one series nearly always share them.
#[derive(Debug, Default)]
pub struct Error95Cache {
    map: HashMap<Vec<(u8, u64)>, f64>,
}

impl Error95Cache {
    /// Error bound of the sum of `components`.
    pub fn error95(&mut self, components: &[Noise]) -> f64 {
        let mut key: Vec<(u8, u64)> = components
            .iter()
            .map(|n| match *n {
                Noise::DiscreteLaplace(s) => (1, s.to_bits()),
                Noise::DiscreteGaussian(s) => (2, s.to_bits()),
                Noise::LaplaceSum(s) => (3, s.to_bits()),
                Noise::GaussianSum(s) => (4, s.to_bits()),
                Noise::None => (0, 0),
            })
            .collect();
        key.sort_unstable();
        if self.map.len() > 4096 {
            self.map.clear();
        }
        *self
            .map
            .entry(key)
            .or_insert_with(|| noise::error95(components))
    }
}

/// A series query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesQuery {
    /// Venue.
    pub venue: String,
    /// One zone, or every zone when `None`.
    pub zone: Option<String>,
    /// Metric.
    pub metric: String,
    /// Window start at or after, Unix ms; 0 = unbounded.
    pub from_ms: i64,
    /// Window start before, Unix ms; 0 = unbounded.
    pub to_ms: i64,
    /// 1..=10000; 0 means [`DEFAULT_PAGE_SIZE`].
    pub page_size: u32,
    /// Token from a previous page, or "".
    pub page_token: String,
}

/// One page of a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPage {
    /// Points ordered by zone, window start, window length.
    pub points: Vec<SeriesPoint>,
    /// Token for the next page; "" on the last page.
    pub next_page_token: String,
}

/// Whether `reader` may read `metric` under `policy`; returns the metric's
/// `suppress_below`. Metrics the policy does not name are not readable.
pub fn readable(policy: &LoadedPolicy, reader: Reader, metric: &str) -> Result<f64, Error> {
    let m = policy.metric(metric).ok_or_else(|| {
        Error::NotReadable(format!("metric `{metric}` is not in the venue's policy"))
    })?;
    if !m.readers.contains(&reader) {
        return Err(Error::NotReadable(format!(
            "the venue's policy does not list this role as a reader of `{metric}`"
        )));
    }
    Ok(m.suppress_below)
}

fn check_names(venue: &str, zone: Option<&str>, metric: &str) -> Result<(), Error> {
    if !crate::identity::valid_name(venue) {
        return Err(Error::InvalidArgument(
            "venue must be 1..=64 bytes of [a-z0-9_-]".into(),
        ));
    }
    if let Some(z) = zone
        && !crate::identity::valid_name(z)
    {
        return Err(Error::InvalidArgument(
            "zone must be empty or 1..=64 bytes of [a-z0-9_-]".into(),
        ));
    }
    if !veil_common::name::valid_metric(metric) {
        return Err(Error::InvalidArgument(
            "metric must be 1..=64 bytes of [a-z0-9_]".into(),
        ));
    }
    Ok(())
}

/// Position after which the next page starts: (zone, window start, length).
type Cursor = (String, i64, u32);

fn query_hash(q: &SeriesQuery) -> String {
    let text = format!(
        "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        q.venue,
        q.zone.as_deref().unwrap_or(""),
        q.metric,
        q.from_ms,
        q.to_ms
    );
    crate::policy::sha256_hex(text.as_bytes())[..16].to_owned()
}

/// Encodes a page token (opaque to callers).
fn encode_token(q: &SeriesQuery, c: &Cursor) -> String {
    hex::encode(format!("v1|{}|{}|{}|{}", c.0, c.1, c.2, query_hash(q)))
}

/// Decodes and checks a page token against the query it must belong to.
fn decode_token(q: &SeriesQuery) -> Result<Option<Cursor>, Error> {
    if q.page_token.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| {
        Error::InvalidArgument(format!(
            "page_token is not valid: {why}; pass the next_page_token of the previous response \
             of the same query, or an empty token for the first page"
        ))
    };
    if q.page_token.len() > 512 {
        return Err(bad("too long"));
    }
    let bytes = hex::decode(&q.page_token).map_err(|_| bad("not a token"))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not a token"))?;
    let parts: Vec<&str> = text.split('|').collect();
    let ["v1", zone, start, len, hash] = parts.as_slice() else {
        return Err(bad("not a token"));
    };
    if *hash != query_hash(q) {
        return Err(bad("it belongs to a different query"));
    }
    if !crate::identity::valid_name(zone) {
        return Err(bad("not a token"));
    }
    let start: i64 = start.parse().map_err(|_| bad("not a token"))?;
    let len: u32 = len.parse().map_err(|_| bad("not a token"))?;
    Ok(Some(((*zone).to_owned(), start, len)))
}

/// One page of the combined series `q` asks for, as `reader` may see it
/// under the venue's `policy`.
pub async fn series(
    storage: &Storage,
    policy: &LoadedPolicy,
    reader: Reader,
    q: &SeriesQuery,
) -> Result<SeriesPage, Error> {
    check_names(&q.venue, q.zone.as_deref(), &q.metric)?;
    if q.page_size > MAX_PAGE_SIZE {
        return Err(Error::InvalidArgument(format!(
            "page_size must be in 1..={MAX_PAGE_SIZE} (0 for the default {DEFAULT_PAGE_SIZE}), got {}",
            q.page_size
        )));
    }
    if q.from_ms < 0 || q.to_ms < 0 || (q.to_ms != 0 && q.from_ms > q.to_ms) {
        return Err(Error::InvalidArgument(
            "from_ms and to_ms must be >= 0 (0 = unbounded) with from_ms <= to_ms".into(),
        ));
    }
    let suppress_below = readable(policy, reader, &q.metric)?;
    let page_size = if q.page_size == 0 {
        DEFAULT_PAGE_SIZE
    } else {
        q.page_size
    };
    let after = decode_token(q)?.unwrap_or_else(|| (String::new(), 0, 0));
    let zone = q.zone.clone().unwrap_or_default();
    let keys = sqlx::query(
        "-- series_keys()\nSELECT zone, window_start_ms, window_len_s FROM releases \
         WHERE venue = $1 AND metric = $2 AND ($3 = '' OR zone = $3) \
         AND ($4 = 0 OR window_start_ms >= $4) AND ($5 = 0 OR window_start_ms < $5) \
         AND (zone > $6 OR (zone = $6 AND (window_start_ms > $7 OR (window_start_ms = $7 AND window_len_s > $8)))) \
         GROUP BY zone, window_start_ms, window_len_s \
         ORDER BY zone, window_start_ms, window_len_s LIMIT $9",
    )
    .bind(&q.venue)
    .bind(&q.metric)
    .bind(&zone)
    .bind(q.from_ms)
    .bind(q.to_ms)
    .bind(&after.0)
    .bind(after.1)
    .bind(i64::from(after.2))
    .bind(i64::from(page_size) + 1)
    .fetch_all(storage.reads())
    .await?;
    let cursor = |row: &sqlx::any::AnyRow| -> Result<Cursor, sqlx::Error> {
        Ok((
            row.try_get("zone")?,
            row.try_get("window_start_ms")?,
            u32::try_from(row.try_get::<i64, _>("window_len_s")?).unwrap_or(0),
        ))
    };
    let more = keys.len() > page_size as usize;
    let keys: Vec<Cursor> = keys
        .iter()
        .take(page_size as usize)
        .map(cursor)
        .collect::<Result<_, _>>()?;
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return Ok(SeriesPage {
            points: Vec::new(),
            next_page_token: String::new(),
        });
    };
    let rows = sqlx::query(
        "-- series_rows()\nSELECT zone, window_start_ms, window_len_s, mechanism, value, scale FROM releases \
         WHERE venue = $1 AND metric = $2 AND ($3 = '' OR zone = $3) \
         AND ($4 = 0 OR window_start_ms >= $4) AND ($5 = 0 OR window_start_ms < $5) \
         AND (zone > $6 OR (zone = $6 AND (window_start_ms > $7 OR (window_start_ms = $7 AND window_len_s >= $8)))) \
         AND (zone < $9 OR (zone = $9 AND (window_start_ms < $10 OR (window_start_ms = $10 AND window_len_s <= $11)))) \
         ORDER BY zone, window_start_ms, window_len_s, node",
    )
    .bind(&q.venue)
    .bind(&q.metric)
    .bind(&zone)
    .bind(q.from_ms)
    .bind(q.to_ms)
    .bind(&first.0)
    .bind(first.1)
    .bind(i64::from(first.2))
    .bind(&last.0)
    .bind(last.1)
    .bind(i64::from(last.2))
    .fetch_all(storage.reads())
    .await?;
    let points = combine_rows(&q.venue, &q.metric, suppress_below, &rows)?;
    Ok(SeriesPage {
        next_page_token: if more {
            encode_token(q, last)
        } else {
            String::new()
        },
        points,
    })
}

/// Groups rows ordered by (zone, window start, length) into points.
fn combine_rows(
    venue: &str,
    metric: &str,
    suppress_below: f64,
    rows: &[sqlx::any::AnyRow],
) -> Result<Vec<SeriesPoint>, Error> {
    let mut cache = Error95Cache::default();
    let mut points = Vec::new();
    let mut current: Option<(Cursor, Combiner)> = None;
    for row in rows {
        let key: Cursor = (
            row.try_get("zone")?,
            row.try_get("window_start_ms")?,
            u32::try_from(row.try_get::<i64, _>("window_len_s")?).unwrap_or(0),
        );
        let mechanism: String = row.try_get("mechanism")?;
        let (value, scale): (f64, f64) = (row.try_get("value")?, row.try_get("scale")?);
        match &mut current {
            Some((k, c)) if *k == key => c.add(&mechanism, value, scale),
            _ => {
                if let Some((k, c)) = current.take() {
                    points.push(c.point(venue, &k.0, metric, k.1, k.2, suppress_below, &mut cache));
                }
                let mut c = Combiner::default();
                c.add(&mechanism, value, scale);
                current = Some((key, c));
            }
        }
    }
    if let Some((k, c)) = current {
        points.push(c.point(venue, &k.0, metric, k.1, k.2, suppress_below, &mut cache));
    }
    Ok(points)
}

/// Zones of `venue` with releases of any metric `reader` may read, sorted.
pub async fn zones(
    storage: &Storage,
    policy: &LoadedPolicy,
    reader: Reader,
    venue: &str,
) -> Result<Vec<String>, Error> {
    if !crate::identity::valid_name(venue) {
        return Err(Error::InvalidArgument(
            "venue must be 1..=64 bytes of [a-z0-9_-]".into(),
        ));
    }
    let rows = sqlx::query(
        "-- zones()\nSELECT DISTINCT metric, zone FROM releases WHERE venue = $1 ORDER BY zone",
    )
    .bind(venue)
    .fetch_all(storage.reads())
    .await?;
    let mut out: Vec<String> = Vec::new();
    for row in rows {
        let metric: String = row.try_get("metric")?;
        let zone: String = row.try_get("zone")?;
        if readable(policy, reader, &metric).is_ok() && out.last() != Some(&zone) {
            out.push(zone);
        }
    }
    out.dedup();
    Ok(out)
}

/// The newest combined point of `metric` per zone of `venue` (a heat grid),
/// ordered by zone.
pub async fn latest(
    storage: &Storage,
    policy: &LoadedPolicy,
    reader: Reader,
    venue: &str,
    metric: &str,
) -> Result<Vec<SeriesPoint>, Error> {
    check_names(venue, None, metric)?;
    let suppress_below = readable(policy, reader, metric)?;
    let rows = sqlx::query(
        "-- latest()\nSELECT r.zone, r.window_start_ms, r.window_len_s, r.mechanism, r.value, r.scale \
         FROM releases r JOIN (SELECT zone, MAX(window_start_ms) AS newest FROM releases \
         WHERE venue = $1 AND metric = $2 GROUP BY zone) m \
         ON r.zone = m.zone AND r.window_start_ms = m.newest \
         WHERE r.venue = $1 AND r.metric = $2 \
         ORDER BY r.zone, r.window_start_ms, r.window_len_s, r.node",
    )
    .bind(venue)
    .bind(metric)
    .fetch_all(storage.reads())
    .await?;
    combine_rows(venue, metric, suppress_below, &rows)
}

#[cfg(test)]
mod tests;
