//! Turns simulated events into JSON lines of [`crate::event::Event`], and
//! breaks a few of them on purpose.

use std::{borrow::Cow, io};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::plan::{Payload, Pending, Plan, Sensor};
use crate::event::{Body, Event};

/// RFC 3339 UTC with milliseconds, e.g. `2026-06-01T18:00:00.250Z`.
///
/// `ms` must be in 0..=253402300799999 (years 1970..=9999), which
/// [`Plan::new`] guarantees for every event time.
pub(crate) fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The event a pending line stands for; `None` for a malformed line.
pub(crate) fn event<'p>(plan: &'p Plan, p: &'p Pending) -> Option<Event<'p>> {
    let zone = plan.model.zones.get(p.zone as usize)?;
    let sensors = plan.sensors.get(p.zone as usize)?;
    let (sensor, firmware) = match p.sensor {
        Sensor::Cam => (sensors.cam.as_str(), Some(sensors.cam_firmware)),
        Sensor::Mic => (sensors.mic.as_str(), Some("aud-1.9.0")),
        Sensor::Env => (sensors.env.as_str(), Some("env-3.1.2")),
        Sensor::Ap(k) => (sensors.aps.get(k as usize)?.as_str(), Some("ap-7.0.3")),
        Sensor::Lane(k) => (sensors.lanes.get(k as usize)?.as_str(), Some("gs-5.2.0")),
        Sensor::App => ("app", None),
        Sensor::Counter(z) => (
            plan.sensors.get(z as usize)?.counter.as_str(),
            Some("pc-4.2.0"),
        ),
    };
    let person = |i: u32| plan.people.get(i as usize);
    let body = match &p.payload {
        Payload::Occupancy { count } => Body::Occupancy { count: *count },
        Payload::Gate {
            direction,
            person: i,
        } => Body::GateScan {
            direction: *direction,
            ticket: Cow::Borrowed(&person(*i)?.ticket),
        },
        Payload::Audio {
            level_db,
            peak_db,
            bands,
        } => Body::Audio {
            level_db: *level_db,
            peak_db: *peak_db,
            bands: bands.to_vec(),
        },
        Payload::Environment {
            co2_ppm,
            temperature_c,
        } => Body::Environment {
            co2_ppm: *co2_ppm,
            temperature_c: *temperature_c,
        },
        Payload::Probe {
            person: i,
            rssi_dbm,
        } => Body::Probe {
            device: Cow::Borrowed(&person(*i)?.device.as_ref()?.mac),
            rssi_dbm: *rssi_dbm,
        },
        Payload::App { person: i, action } => {
            let app = person(*i)?.app.as_ref()?;
            Body::App {
                subject: Cow::Borrowed(&app.subject),
                action: Cow::Borrowed(*action),
                consent: app.consent.iter().map(|c| Cow::Borrowed(*c)).collect(),
            }
        }
        Payload::Crossing {
            person: i,
            from,
            to,
        } => {
            let name = |z: u8| {
                plan.model
                    .zones
                    .get(z as usize)
                    .map(|z| Cow::Borrowed(z.name))
            };
            Body::Crossing {
                track: Cow::Borrowed(&person(*i)?.track),
                from: name(*from),
                to: name(*to),
            }
        }
        Payload::Malformed(_) => return None,
    };
    Some(Event {
        ts: Cow::Owned(rfc3339(p.ts_ms)),
        sensor: Cow::Borrowed(sensor),
        zone: Cow::Borrowed(zone.name),
        firmware: firmware.map(Cow::Borrowed),
        body,
    })
}

/// Appends one line to `buf`; returns whether it is a valid event.
pub(crate) fn write_line(plan: &Plan, p: &Pending, buf: &mut Vec<u8>) -> io::Result<bool> {
    let valid = match (&p.payload, event(plan, p)) {
        (Payload::Malformed(line), _) => {
            buf.extend_from_slice(line.as_bytes());
            false
        }
        (_, Some(e)) => {
            serde_json::to_writer(&mut *buf, &e)?;
            true
        }
        // Unreachable by construction: pending events refer to existing
        // zones, sensors and people. Report it rather than panic.
        (_, None) => return Err(io::Error::other("simulator event refers to nothing")),
    };
    buf.push(b'\n');
    Ok(valid)
}

/// A broken line standing in for `p`: it fails [`crate::event::parse_line`].
pub(crate) fn corrupt(plan: &Plan, p: &Pending, r: &mut ChaCha8Rng) -> String {
    let Some(event) = event(plan, p) else {
        return "{\"ts\":".to_owned();
    };
    let Ok(Value::Object(mut obj)) = serde_json::to_value(&event) else {
        return "{\"ts\":".to_owned();
    };
    match r.random_range(0..5u8) {
        0 => {
            // Truncated line: any strict prefix of a JSON object is invalid.
            let line = Value::Object(obj).to_string();
            let cut = r.random_range(1..line.len().max(2));
            return line[..cut.min(line.len() - 1)].to_owned();
        }
        1 => {
            // A value out of range for its kind.
            let (key, bad) = match event.body.kind() {
                "occupancy" => ("count", json!(250_000)),
                "gate_scan" => ("ticket", json!("")),
                "audio" => ("level_db", json!(412.5)),
                "environment" => ("co2_ppm", json!(-35.0)),
                "probe" => ("rssi_dbm", json!(17)),
                "crossing" => ("track", json!("")),
                _ => ("action", json!("")),
            };
            obj.insert(key.to_owned(), bad);
        }
        2 => {
            const BAD_ZONES: [&str; 4] = ["Stands Upper", "", "merch!", "FLOOR"];
            let zone = BAD_ZONES[r.random_range(0..BAD_ZONES.len())];
            obj.insert("zone".to_owned(), json!(zone));
        }
        3 => {
            const REQUIRED: [&str; 3] = ["ts", "sensor", "kind"];
            obj.remove(REQUIRED[r.random_range(0..REQUIRED.len())]);
        }
        _ => {
            const BAD_TS: [&str; 3] = ["yesterday", "2026-13-45T25:61:00Z", "1717264800"];
            obj.insert(
                "ts".to_owned(),
                json!(BAD_TS[r.random_range(0..BAD_TS.len())]),
            );
        }
    }
    Value::Object(obj).to_string()
}
