//! Sensor events as they arrive on a node: one JSON object per line.
//!
//! Every event carries its event time (`ts`, RFC 3339), the `sensor` id and
//! the `zone` it observes, optional `firmware` provenance, and a `kind` with
//! kind-specific fields. Identifiers (`ticket`, `device`, `subject`) are raw
//! personal data: they are pseudonymised in memory and never leave the node.
//!
//! ```json
//! {"ts":"2026-06-01T18:00:00Z","sensor":"cam-1","zone":"floor","kind":"occupancy","count":412}
//! {"ts":"2026-06-01T18:00:01Z","sensor":"gate-a-1","zone":"gate-a","kind":"gate_scan","direction":"in","ticket":"T-0042"}
//! {"ts":"2026-06-01T18:00:02Z","sensor":"mic-1","zone":"floor","kind":"audio","level_db":96.5,"peak_db":104.0,"bands":[0.1,0.2,0.3,0.2,0.1,0.05,0.03,0.02]}
//! {"ts":"2026-06-01T18:00:03Z","sensor":"env-1","zone":"concourse","kind":"environment","co2_ppm":820.0,"temperature_c":23.5}
//! {"ts":"2026-06-01T18:00:04Z","sensor":"ap-3","zone":"concourse","kind":"probe","device":"a4:5e:60:1b:22:9c","rssi_dbm":-67}
//! {"ts":"2026-06-01T18:00:05Z","sensor":"app","zone":"merch","kind":"app","subject":"u-1234","action":"view_menu","consent":["analytics"]}
//! {"ts":"2026-06-01T18:00:06Z","sensor":"cam-7","zone":"floor","kind":"crossing","track":"trk-81","from":"concourse","to":"floor"}
//! ```
//!
//! A `crossing` is what an edge people-tracking camera emits when a tracked
//! person crosses a counting line: the zone left (`from`) and the zone
//! entered (`to`); either is absent at the edge of the tracked area (coming
//! in from, or leaving to, outside). `track` is the id the camera system
//! assigns to the person's track (an identifier: pseudonymised at once).
//! The attendee-day guarantee assumes the camera system keeps one track per
//! attendee over the day (re-identification on re-entry); see the README.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// Number of audio feature bands in an `audio` event.
pub const AUDIO_BANDS: usize = 8;

/// A sensor event after parsing and validation.
///
/// Its strings borrow from the input line where the line is in the compact
/// form sensors write (see [`parse_line`]), so the hot path allocates
/// nothing per event; [`Event::into_owned`] detaches it from the line. The
/// `serde` forms are those of plain `String`s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event<'a> {
    /// Event time, RFC 3339 (UTC or with offset).
    pub ts: Cow<'a, str>,
    /// Sensor id (provenance), 1..=64 bytes.
    pub sensor: Cow<'a, str>,
    /// Zone the sensor observes, 1..=64 bytes of [a-z0-9_-].
    pub zone: Cow<'a, str>,
    /// Firmware version of the sensor (provenance), optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Cow<'a, str>>,
    /// Kind-specific payload.
    #[serde(flatten)]
    pub body: Body<'a>,
}

impl Event<'_> {
    /// The same event owning all its strings.
    pub fn into_owned(self) -> Event<'static> {
        Event {
            ts: Cow::Owned(self.ts.into_owned()),
            sensor: Cow::Owned(self.sensor.into_owned()),
            zone: Cow::Owned(self.zone.into_owned()),
            firmware: self.firmware.map(|f| Cow::Owned(f.into_owned())),
            body: self.body.into_owned(),
        }
    }
}

/// Kind-specific event payloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body<'a> {
    /// People counted in the zone by edge computer vision.
    Occupancy {
        /// People in view, 0..=100000.
        count: u32,
    },
    /// A ticket scanned at a gate.
    GateScan {
        /// "in" or "out".
        direction: Direction,
        /// Ticket id (personal identifier).
        ticket: Cow<'a, str>,
    },
    /// An audio feature frame.
    Audio {
        /// RMS level, dB SPL, 0..=160.
        level_db: f64,
        /// Peak level, dB SPL, 0..=180.
        peak_db: f64,
        /// Relative energies of `AUDIO_BANDS` bands, each 0..=1.
        bands: Vec<f64>,
    },
    /// Environment readings.
    Environment {
        /// CO2, ppm, 0..=10000.
        co2_ppm: f64,
        /// Temperature, degrees Celsius, -40..=80.
        temperature_c: f64,
    },
    /// A Wi-Fi/BLE probe from a device.
    Probe {
        /// Device identifier, e.g. a MAC address (personal identifier).
        device: Cow<'a, str>,
        /// Received signal strength, dBm, -120..=0.
        rssi_dbm: i32,
    },
    /// App telemetry from a subject.
    App {
        /// App user id (personal identifier).
        subject: Cow<'a, str>,
        /// What the user did, 1..=64 bytes.
        action: Cow<'a, str>,
        /// Consent scopes the user granted, e.g. "analytics".
        #[serde(default)]
        consent: Vec<Cow<'a, str>>,
    },
    /// A tracked person crossed a counting line between two zones.
    Crossing {
        /// Track id from the people-tracking system (personal identifier).
        track: Cow<'a, str>,
        /// Zone left; absent when coming in from outside the tracked area.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Cow<'a, str>>,
        /// Zone entered; absent when leaving the tracked area.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Cow<'a, str>>,
    },
}

/// Gate scan direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Entering.
    In,
    /// Leaving.
    Out,
}

impl Body<'_> {
    /// The same payload owning all its strings.
    pub fn into_owned(self) -> Body<'static> {
        let own = |s: Cow<'_, str>| Cow::Owned(s.into_owned());
        match self {
            Body::Occupancy { count } => Body::Occupancy { count },
            Body::GateScan { direction, ticket } => Body::GateScan {
                direction,
                ticket: own(ticket),
            },
            Body::Audio {
                level_db,
                peak_db,
                bands,
            } => Body::Audio {
                level_db,
                peak_db,
                bands,
            },
            Body::Environment {
                co2_ppm,
                temperature_c,
            } => Body::Environment {
                co2_ppm,
                temperature_c,
            },
            Body::Probe { device, rssi_dbm } => Body::Probe {
                device: own(device),
                rssi_dbm,
            },
            Body::App {
                subject,
                action,
                consent,
            } => Body::App {
                subject: own(subject),
                action: own(action),
                consent: consent.into_iter().map(own).collect(),
            },
            Body::Crossing { track, from, to } => Body::Crossing {
                track: own(track),
                from: from.map(own),
                to: to.map(own),
            },
        }
    }

    /// The `kind` string of this payload.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Occupancy { .. } => "occupancy",
            Body::GateScan { .. } => "gate_scan",
            Body::Audio { .. } => "audio",
            Body::Environment { .. } => "environment",
            Body::Probe { .. } => "probe",
            Body::App { .. } => "app",
            Body::Crossing { .. } => "crossing",
        }
    }
}

/// Why a line was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    /// Not valid JSON or not an event object.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// A field is out of range or malformed.
    #[error("field `{field}`: {reason}")]
    Field {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A validated event with its parsed event time.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidEvent<'a> {
    /// Event time, Unix milliseconds.
    pub ts_ms: i64,
    /// The event.
    pub event: Event<'a>,
}

impl ValidEvent<'_> {
    /// The same event owning all its strings.
    pub fn into_owned(self) -> ValidEvent<'static> {
        ValidEvent {
            ts_ms: self.ts_ms,
            event: self.event.into_owned(),
        }
    }
}

/// A JSON error described without echoing input values: they may be
/// identifiers, which must never reach a log.
fn json_error(e: serde_json::Error) -> EventError {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => "not valid JSON",
        Category::Data => "not a valid event (unknown kind, missing or mistyped field)",
    };
    EventError::Json(format!("{what} at column {}", e.column()))
}

fn field(field: &'static str, reason: impl Into<String>) -> EventError {
    EventError::Field {
        field,
        reason: reason.into(),
    }
}

fn check_name(name: &'static str, v: &str) -> Result<(), EventError> {
    if v.is_empty() || v.len() > 64 {
        return Err(field(name, "must be 1..=64 bytes"));
    }
    Ok(())
}

fn check_range(name: &'static str, v: f64, lo: f64, hi: f64) -> Result<(), EventError> {
    if !v.is_finite() {
        return Err(field(name, "must be a finite number"));
    }
    if v < lo || v > hi {
        return Err(field(name, format!("{v} is outside {lo}..={hi}")));
    }
    Ok(())
}

/// Parses and validates one JSON line.
///
/// Compact lines (as sensors and the simulator write them) and `...Z`
/// timestamps are read by [`fast`], and the event's strings borrow from
/// `line`; everything else, and every error, comes from `serde_json` and
/// `time` (the event then owns its strings), so both paths accept the same
/// lines with the same result.
pub fn parse_line(line: &str) -> Result<ValidEvent<'_>, EventError> {
    parse(line, true)
}

/// [`parse_line`] by the general parsers alone (`serde_json` and `time`),
/// never the fast path: the reference [`parse_line`] must agree with on
/// every line (the `event_line` fuzz target compares them).
pub fn parse_line_general(line: &str) -> Result<ValidEvent<'_>, EventError> {
    parse(line, false)
}

fn parse(line: &str, use_fast: bool) -> Result<ValidEvent<'_>, EventError> {
    let event = match use_fast.then(|| fast::event(line)).flatten() {
        Some(event) => event,
        None => parse_event_general(line)?,
    };
    let ts_ms = match use_fast.then(|| fast::utc_millis(&event.ts)).flatten() {
        Some(ms) => ms,
        None => parse_ts_general(&event.ts)?,
    };
    if ts_ms < 0 {
        // Event days (and their pseudonym keys) start at the Unix epoch; a
        // sensor with an unset clock sends 1970 or earlier.
        return Err(field("ts", "must be on or after 1970-01-01T00:00:00Z"));
    }
    check_name("sensor", &event.sensor)?;
    if !veil_common::name::valid_name(&event.zone) {
        return Err(field("zone", "must be 1..=64 bytes of [a-z0-9_-]"));
    }
    if let Some(fw) = &event.firmware {
        check_name("firmware", fw)?;
    }
    match &event.body {
        Body::Occupancy { count } => {
            if *count > 100_000 {
                return Err(field("count", format!("{count} is above 100000")));
            }
        }
        Body::GateScan { ticket, .. } => check_name("ticket", ticket)?,
        Body::Audio {
            level_db,
            peak_db,
            bands,
        } => {
            check_range("level_db", *level_db, 0.0, 160.0)?;
            check_range("peak_db", *peak_db, 0.0, 180.0)?;
            if bands.len() != AUDIO_BANDS {
                return Err(field(
                    "bands",
                    format!("expected {AUDIO_BANDS} values, got {}", bands.len()),
                ));
            }
            for b in bands {
                check_range("bands", *b, 0.0, 1.0)?;
            }
        }
        Body::Environment {
            co2_ppm,
            temperature_c,
        } => {
            check_range("co2_ppm", *co2_ppm, 0.0, 10_000.0)?;
            check_range("temperature_c", *temperature_c, -40.0, 80.0)?;
        }
        Body::Probe { device, rssi_dbm } => {
            check_name("device", device)?;
            if !(-120..=0).contains(rssi_dbm) {
                return Err(field("rssi_dbm", format!("{rssi_dbm} is outside -120..=0")));
            }
        }
        Body::App {
            subject,
            action,
            consent,
        } => {
            check_name("subject", subject)?;
            check_name("action", action)?;
            if consent.len() > 16 {
                return Err(field("consent", "at most 16 scopes"));
            }
            for c in consent {
                check_name("consent", c)?;
            }
        }
        Body::Crossing { track, from, to } => {
            check_name("track", track)?;
            for (name, z) in [("from", from), ("to", to)] {
                if let Some(z) = z
                    && !veil_common::name::valid_name(z)
                {
                    return Err(field(name, "must be 1..=64 bytes of [a-z0-9_-]"));
                }
            }
            match (from, to) {
                (None, None) => return Err(field("to", "a crossing needs `from`, `to` or both")),
                (Some(a), Some(b)) if a == b => {
                    return Err(field("to", "must differ from `from`"));
                }
                _ => {}
            }
        }
    }
    Ok(ValidEvent { ts_ms, event })
}

/// The event in `line`, by `serde_json` and the derived deserialiser.
fn parse_event_general(line: &str) -> Result<Event<'static>, EventError> {
    serde_json::from_str(line).map_err(json_error)
}

/// Unix milliseconds of an RFC 3339 timestamp, by `time`'s parser.
fn parse_ts_general(ts: &str) -> Result<i64, EventError> {
    let ts = OffsetDateTime::parse(ts, &Rfc3339)
        .map_err(|e| field("ts", format!("not RFC 3339: {e}")))?;
    i64::try_from(ts.unix_timestamp_nanos() / 1_000_000).map_err(|_| field("ts", "out of range"))
}

mod fast;

#[cfg(test)]
mod tests;
