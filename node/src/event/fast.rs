//! A one-pass reader for the compact event lines sensors and the simulator
//! write (no whitespace, no escapes), and for the fixed `...Z` form of RFC
//! 3339 timestamps.
//!
//! Both only ever *accept* input the general parsers (`serde_json` with the
//! derived [`Event`] deserialiser, and `time`'s RFC 3339 parser) accept with
//! the same result; anything else returns `None` and the caller runs the
//! general parser, which also produces the error message. So they change
//! speed, never what is accepted or how a bad line is described.

use std::borrow::Cow;

use super::{Body, Direction, Event};

/// The event in `line`, if `line` is a compact JSON object whose keys all
/// belong to its `kind`, without duplicates, escapes, whitespace or nulls;
/// otherwise `None`. Its strings borrow from `line`.
pub(super) fn event(line: &str) -> Option<Event<'_>> {
    let mut c = Cursor {
        s: line,
        b: line.as_bytes(),
        i: 0,
    };
    let mut f = Fields::default();
    c.lit(b'{')?;
    loop {
        let key = c.string()?;
        c.lit(b':')?;
        match key {
            "ts" => set(&mut f.ts, c.string()?)?,
            "sensor" => set(&mut f.sensor, c.string()?)?,
            "zone" => set(&mut f.zone, c.string()?)?,
            "firmware" => set(&mut f.firmware, c.string()?)?,
            "kind" => set(&mut f.kind, c.string()?)?,
            "direction" => set(&mut f.direction, c.string()?)?,
            "ticket" => set(&mut f.ticket, c.string()?)?,
            "device" => set(&mut f.device, c.string()?)?,
            "subject" => set(&mut f.subject, c.string()?)?,
            "action" => set(&mut f.action, c.string()?)?,
            "count" => set(&mut f.count, c.number()?)?,
            "rssi_dbm" => set(&mut f.rssi_dbm, c.number()?)?,
            "level_db" => set(&mut f.level_db, c.number()?)?,
            "peak_db" => set(&mut f.peak_db, c.number()?)?,
            "co2_ppm" => set(&mut f.co2_ppm, c.number()?)?,
            "temperature_c" => set(&mut f.temperature_c, c.number()?)?,
            "bands" => set(&mut f.bands, c.array()?)?,
            "consent" => set(&mut f.consent, c.array()?)?,
            "track" => set(&mut f.track, c.string()?)?,
            "from" => set(&mut f.from, c.string()?)?,
            "to" => set(&mut f.to, c.string()?)?,
            _ => return None,
        }
        match c.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    if c.i != c.b.len() {
        return None;
    }
    f.into_event()
}

/// Raw tokens of the known keys of one line.
#[derive(Default)]
struct Fields<'a> {
    ts: Option<&'a str>,
    sensor: Option<&'a str>,
    zone: Option<&'a str>,
    firmware: Option<&'a str>,
    kind: Option<&'a str>,
    direction: Option<&'a str>,
    ticket: Option<&'a str>,
    device: Option<&'a str>,
    subject: Option<&'a str>,
    action: Option<&'a str>,
    count: Option<&'a str>,
    rssi_dbm: Option<&'a str>,
    level_db: Option<&'a str>,
    peak_db: Option<&'a str>,
    co2_ppm: Option<&'a str>,
    temperature_c: Option<&'a str>,
    /// Array contents between the brackets.
    bands: Option<&'a str>,
    consent: Option<&'a str>,
    track: Option<&'a str>,
    from: Option<&'a str>,
    to: Option<&'a str>,
}

/// Stores a key's token; `None` on a duplicate key.
fn set<'a>(slot: &mut Option<&'a str>, v: &'a str) -> Option<()> {
    slot.replace(v).is_none().then_some(())
}

impl<'a> Fields<'a> {
    /// Number of keys present that are not common to every kind.
    fn kind_keys(&self) -> usize {
        [
            self.direction,
            self.ticket,
            self.device,
            self.subject,
            self.action,
            self.count,
            self.rssi_dbm,
            self.level_db,
            self.peak_db,
            self.co2_ppm,
            self.temperature_c,
            self.bands,
            self.consent,
            self.track,
            self.from,
            self.to,
        ]
        .iter()
        .filter(|v| v.is_some())
        .count()
    }

    fn into_event(self) -> Option<Event<'a>> {
        // Every kind-specific key present must belong to the kind: count the
        // ones each kind reads (all required, except `consent`).
        let kind_keys = self.kind_keys();
        let body = match self.kind? {
            "occupancy" => {
                (kind_keys == 1).then_some(())?;
                Body::Occupancy {
                    count: u32::try_from(uint(self.count?)?).ok()?,
                }
            }
            "gate_scan" => {
                (kind_keys == 2).then_some(())?;
                Body::GateScan {
                    direction: match self.direction? {
                        "in" => Direction::In,
                        "out" => Direction::Out,
                        _ => return None,
                    },
                    ticket: Cow::Borrowed(self.ticket?),
                }
            }
            "audio" => {
                (kind_keys == 3).then_some(())?;
                let bands = self.bands?;
                let bands = if bands.is_empty() {
                    Vec::new()
                } else {
                    bands.split(',').map(float).collect::<Option<Vec<f64>>>()?
                };
                Body::Audio {
                    level_db: float(self.level_db?)?,
                    peak_db: float(self.peak_db?)?,
                    bands,
                }
            }
            "environment" => {
                (kind_keys == 2).then_some(())?;
                Body::Environment {
                    co2_ppm: float(self.co2_ppm?)?,
                    temperature_c: float(self.temperature_c?)?,
                }
            }
            "probe" => {
                (kind_keys == 2).then_some(())?;
                Body::Probe {
                    device: Cow::Borrowed(self.device?),
                    rssi_dbm: i32::try_from(int(self.rssi_dbm?)?).ok()?,
                }
            }
            "app" => {
                (kind_keys == 2 + usize::from(self.consent.is_some())).then_some(())?;
                let consent = match self.consent {
                    None | Some("") => Vec::new(),
                    Some(items) => items
                        .split(',')
                        .map(string_item)
                        .collect::<Option<Vec<_>>>()?,
                };
                Body::App {
                    subject: Cow::Borrowed(self.subject?),
                    action: Cow::Borrowed(self.action?),
                    consent,
                }
            }
            "crossing" => {
                // `track` and at least one of `from` / `to`.
                let sides = usize::from(self.from.is_some()) + usize::from(self.to.is_some());
                (sides > 0 && kind_keys == 1 + sides).then_some(())?;
                Body::Crossing {
                    track: Cow::Borrowed(self.track?),
                    from: self.from.map(Cow::Borrowed),
                    to: self.to.map(Cow::Borrowed),
                }
            }
            _ => return None,
        };
        Some(Event {
            ts: Cow::Borrowed(self.ts?),
            sensor: Cow::Borrowed(self.sensor?),
            zone: Cow::Borrowed(self.zone?),
            firmware: self.firmware.map(Cow::Borrowed),
            body,
        })
    }
}

/// A position in a line.
struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> Option<u8> {
        let b = *self.b.get(self.i)?;
        self.i += 1;
        Some(b)
    }

    fn lit(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// A string without escapes or control characters; its contents.
    fn string(&mut self) -> Option<&'a str> {
        self.lit(b'"')?;
        let start = self.i;
        let len = veil_privacy::scan::find_stop(&self.b[start..], [b'"', b'\\'])?;
        if self.b[start + len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        // Quotes are ASCII, so both ends are char boundaries.
        self.s.get(start..start + len)
    }

    /// A number token (checked when it is converted).
    fn number(&mut self) -> Option<&'a str> {
        let start = self.i;
        let len = self.b[start..]
            .iter()
            .position(|&b| !(b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')))
            .unwrap_or(self.b.len() - start);
        self.i = start + len;
        (len > 0).then(|| self.s.get(start..start + len))?
    }

    /// An array of numbers or of plain strings, without nesting or
    /// whitespace; the text between the brackets (items are checked when
    /// converted, so `]` inside a string is refused here).
    fn array(&mut self) -> Option<&'a str> {
        self.lit(b'[')?;
        let start = self.i;
        let len = veil_privacy::scan::find_stop(&self.b[start..], [b']', b'[', b'{', b'\\'])?;
        if self.b[start + len] != b']' {
            return None;
        }
        self.i = start + len + 1;
        self.s.get(start..start + len)
    }
}

/// A JSON array item that is a plain string (no `,`, `]`, escapes or
/// control characters inside, as the split and [`Cursor::array`] ensure).
fn string_item(item: &str) -> Option<Cow<'_, str>> {
    let inner = item.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('"')).then_some(Cow::Borrowed(inner))
}

/// Digits of a JSON integer: `0` or no leading zero.
fn digits(token: &str) -> Option<u64> {
    let b = token.as_bytes();
    if b.is_empty() || (b[0] == b'0' && b.len() > 1) {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn uint(token: &str) -> Option<u64> {
    digits(token)
}

/// A negative JSON integer other than `-0` (whose reading has changed
/// between `serde_json` versions), or a non-negative one.
fn int(token: &str) -> Option<i64> {
    match token.strip_prefix('-') {
        Some(abs) => match digits(abs)? {
            0 => None,
            abs => 0i64.checked_sub_unsigned(abs),
        },
        None => i64::try_from(digits(token)?).ok(),
    }
}

/// A JSON number as an `f64`, as `serde_json` reads it (whose float parser
/// need not round like the standard library's), after checking the token is
/// a JSON number so that nothing but the number is read: short decimals by
/// [`short_decimal`], the rest by `serde_json` itself.
pub(super) fn float(token: &str) -> Option<f64> {
    if !is_json_number(token) {
        return None;
    }
    short_decimal(token).or_else(|| serde_json::from_str::<f64>(token).ok())
}

/// A JSON number without exponent and with at most 15 digits (sensor
/// readings such as `96.5` or `-23.5`), other than `-0`: its digits `m` are
/// exact in an `f64` (below 2^53), so are 10^k for its k <= 15 decimals, and
/// `m / 10^k` is one correctly rounded division. That is the value both of
/// `serde_json`'s float parsers return (the default one computes exactly
/// this division; `float_roundtrip` rounds correctly), so the two agree
/// bit for bit. `-0` is left to `serde_json`, whose reading of it changed
/// between versions.
fn short_decimal(token: &str) -> Option<f64> {
    const POW10: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let (negative, digits) = match token.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, token),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.len() + frac.len() > 15 {
        return None;
    }
    let m = int.bytes().chain(frac.bytes()).try_fold(0u64, |m, d| {
        d.is_ascii_digit().then(|| m * 10 + u64::from(d - b'0'))
    })?;
    if negative && m == 0 && frac.is_empty() {
        return None;
    }
    let v = m as f64 / POW10[frac.len()];
    Some(if negative { -v } else { v })
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
fn is_json_number(token: &str) -> bool {
    let b = token.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let run = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    let int_len = run(&mut i);
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if run(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if run(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Unix milliseconds of `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z` with a year from
/// 1970 to 9999 and a second below 60; `None` for every other form (offsets,
/// lowercase separators, leap seconds, invalid dates), which the general
/// RFC 3339 parser then reads or refuses.
pub(super) fn utc_millis(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' || *b.last()? != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b.get(range)?.iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let nanos = match b.len() {
        20 => 0,
        22..=30 if b[19] == b'.' => {
            let frac = num(20..b.len() - 1)?;
            frac * 10u32.pow(30 - b.len() as u32)
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(secs * 1000 + i64::from(nanos / 1_000_000))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
