//! The event day a privacy budget is kept per: the UTC date
//! `YYYY-MM-DD` of a release window's start. Node (asking for a lease) and
//! aggregator (charging it) must compute it identically.

/// UTC day "YYYY-MM-DD" of a Unix-ms time.
pub fn day_of(ms: i64) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The event day "YYYY-MM-DD" of a Unix-ms time in a venue's calendar:
/// days cut at 00:00 after adding `offset_s` (the policy's UTC offset minus
/// its day start, so a show past midnight keeps its day). `offset_s = 0` is
/// [`day_of`].
pub fn event_day_of(ms: i64, offset_s: i32) -> String {
    day_of(ms.saturating_add(i64::from(offset_s) * 1000))
}

/// Whether `s` is a valid "YYYY-MM-DD".
pub fn valid_day(s: &str) -> bool {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &fmt).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates_and_parse_back() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(-1), "1969-12-31");
        assert_eq!(day_of(1_700_000_000_000), "2023-11-14");
        assert!(valid_day(&day_of(1_700_000_000_000)));
        assert!(!valid_day("2023-13-01"));
    }

    #[test]
    fn event_days_start_at_the_day_start() {
        let offset = 3600 - 6 * 3600; // UTC+1, day starts 06:00 local = 05:00 UTC
        let d = 1_699_920_000_000; // 2023-11-14T00:00:00Z
        assert_eq!(
            event_day_of(d + 4 * 3_600_000 + 59 * 60_000, offset),
            "2023-11-13"
        );
        assert_eq!(event_day_of(d + 5 * 3_600_000, offset), "2023-11-14");
    }
}
