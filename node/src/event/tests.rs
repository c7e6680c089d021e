use super::*;

#[test]
fn parses_every_kind() {
    let lines = [
        r#"{"ts":"2026-06-01T18:00:00Z","sensor":"cam-1","zone":"floor","kind":"occupancy","count":412}"#,
        r#"{"ts":"2026-06-01T18:00:01Z","sensor":"gate-a-1","zone":"gate-a","kind":"gate_scan","direction":"in","ticket":"T-0042"}"#,
        r#"{"ts":"2026-06-01T18:00:02Z","sensor":"mic-1","zone":"floor","kind":"audio","level_db":96.5,"peak_db":104.0,"bands":[0.1,0.2,0.3,0.2,0.1,0.05,0.03,0.02]}"#,
        r#"{"ts":"2026-06-01T18:00:03Z","sensor":"env-1","zone":"concourse","kind":"environment","co2_ppm":820.0,"temperature_c":23.5}"#,
        r#"{"ts":"2026-06-01T18:00:04Z","sensor":"ap-3","zone":"concourse","kind":"probe","device":"a4:5e:60:1b:22:9c","rssi_dbm":-67}"#,
        r#"{"ts":"2026-06-01T18:00:05Z","sensor":"app","zone":"merch","kind":"app","subject":"u-1234","action":"view_menu","consent":["analytics"]}"#,
    ];
    for l in lines {
        parse_line(l).unwrap_or_else(|e| panic!("{l}: {e}"));
    }
}

#[test]
fn rejects_with_reasons() {
    let cases = [
        ("not json", "malformed JSON"),
        (
            r#"{"ts":"yesterday","sensor":"c","zone":"z","kind":"occupancy","count":1}"#,
            "field `ts`",
        ),
        (
            r#"{"ts":"2026-06-01T18:00:00Z","sensor":"c","zone":"Z!","kind":"occupancy","count":1}"#,
            "field `zone`",
        ),
        (
            r#"{"ts":"2026-06-01T18:00:00Z","sensor":"c","zone":"z","kind":"environment","co2_ppm":-5,"temperature_c":20}"#,
            "field `co2_ppm`",
        ),
        (
            r#"{"ts":"2026-06-01T18:00:00Z","sensor":"c","zone":"z","kind":"teleport"}"#,
            "malformed JSON",
        ),
        // A sensor with an unset clock: before the epoch, by either path.
        (
            r#"{"ts":"1969-12-31T23:59:59Z","sensor":"c","zone":"z","kind":"occupancy","count":1}"#,
            "on or after 1970-01-01",
        ),
        (
            r#"{"ts":"1969-12-31T23:59:59+00:00","sensor":"c","zone":"z","kind":"occupancy","count":1}"#,
            "on or after 1970-01-01",
        ),
    ];
    for (line, want) in cases {
        let err = parse_line(line).unwrap_err().to_string();
        assert!(err.contains(want), "{line}: {err}");
    }
}

/// The fast readers accept only what the general ones accept, with the same
/// result; whatever they refuse goes to the general ones.
fn assert_paths_agree(line: &str) {
    if let Some(fast) = fast::event(line) {
        assert_eq!(parse_event_general(line).as_ref(), Ok(&fast), "{line}");
    }
}

fn assert_ts_agree(ts: &str) {
    if let Some(ms) = fast::utc_millis(ts) {
        assert_eq!(parse_ts_general(ts), Ok(ms), "{ts}");
    }
}

const KINDS: [&str; 11] = [
    r#"{"ts":"2026-06-01T18:00:00Z","sensor":"cam-1","zone":"floor","kind":"occupancy","count":412}"#,
    r#"{"ts":"2026-06-01T18:00:01Z","sensor":"gate-a-1","zone":"gate-a","firmware":"1.2","kind":"gate_scan","direction":"in","ticket":"T-0042"}"#,
    r#"{"ts":"2026-06-01T18:00:02Z","sensor":"mic-1","zone":"floor","kind":"audio","level_db":96.5,"peak_db":104,"bands":[0.1,0.2,0.3,0.2,0.1,0.05,0.03,2e-2]}"#,
    r#"{"ts":"2026-06-01T18:00:03Z","sensor":"env-1","zone":"concourse","kind":"environment","co2_ppm":820.0,"temperature_c":-23.5}"#,
    r#"{"ts":"2026-06-01T18:00:04Z","sensor":"ap-3","zone":"concourse","kind":"probe","device":"a4:5e:60:1b:22:9c","rssi_dbm":-67}"#,
    r#"{"ts":"2026-06-01T18:00:05Z","sensor":"app","zone":"merch","kind":"app","subject":"u-1234","action":"view_menu","consent":["analytics","ads"]}"#,
    r#"{"kind":"app","subject":"u-1","action":"a","zone":"merch","sensor":"app","ts":"2026-06-01T18:00:05.123456789Z"}"#,
    r#"{"ts":"2026-06-01T18:00:06Z","sensor":"cam-7","zone":"floor","kind":"crossing","track":"trk-81","from":"concourse","to":"floor"}"#,
    r#"{"ts":"2026-06-01T18:00:07Z","sensor":"cam-7","zone":"floor","kind":"crossing","track":"trk-82","to":"floor"}"#,
    r#"{"to":"floor","track":"trk-83","kind":"crossing","sensor":"cam-7","zone":"floor","ts":"2026-06-01T18:00:08Z","from":"concourse"}"#,
    r#"{"ts":"2026-06-01T18:00:09Z","sensor":"cam-7","zone":"floor","kind":"crossing","track":"trk-84","from":"floor"}"#,
];

#[test]
fn fast_path_reads_compact_lines_as_serde_does() {
    for line in KINDS {
        let fast = fast::event(line).unwrap_or_else(|| panic!("fast path refused {line}"));
        assert_eq!(parse_event_general(line), Ok(fast));
    }
}

#[test]
fn the_general_path_gives_what_parse_line_gives_without_borrowing() {
    use std::borrow::Cow;
    for line in KINDS {
        let general = parse_line_general(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(matches!(general.event.sensor, Cow::Owned(_)), "{line}");
        assert_eq!(parse_line(line), Ok(general));
    }
}

#[test]
fn fast_path_hands_other_forms_to_serde() {
    let base = KINDS[0];
    let cases = [
        base.replace(",", ", "),
        base.replace(":", " :"),
        format!(" {base}"),
        format!("{base} "),
        base.replace("cam-1", "cam\\u002d1"),
        base.replace("\"zone\"", "\"zo\\u006ee\""),
        base.replace("412}", "412,\"count\":413}"),
        base.replace("412}", "412,\"extra\":true}"),
        base.replace("412}", "412,\"ticket\":\"T-1\"}"),
        base.replace("\"count\":412", "\"count\":412.0"),
        base.replace("\"count\":412", "\"count\":0412"),
        base.replace("\"count\":412", "\"count\":-412"),
        base.replace("\"count\":412", "\"count\":4e2"),
        base.replace("\"count\":412", "\"count\":4294967296"),
        base.replace("\"count\":412", "\"count\":\"412\""),
        base.replace("\"occupancy\"", "\"Occupancy\""),
        base.replace(",\"count\":412", ""),
        base.replace("\"ts\":\"2026-06-01T18:00:00Z\",", ""),
        base.replace("\"sensor\":\"cam-1\"", "\"sensor\":null"),
        KINDS[1].replace("\"1.2\"", "null"),
        KINDS[1].replace("\"in\"", "\"sideways\""),
        KINDS[2].replace("[0.1,", "[ 0.1,"),
        KINDS[2].replace("[0.1,", "[0.1,,"),
        KINDS[2].replace("[0.1,", "[[0.1],"),
        KINDS[2].replace("96.5", "96."),
        KINDS[2].replace("96.5", ".5"),
        KINDS[2].replace("96.5", "+96.5"),
        KINDS[2].replace("96.5", "1e999"),
        KINDS[2].replace("96.5", "NaN"),
        KINDS[4].replace("-67", "-0"),
        KINDS[4].replace("-67", "-2147483649"),
        KINDS[5].replace("\"ads\"", "\"a,ds\""),
        KINDS[5].replace("\"ads\"", "\"a]ds\""),
        KINDS[5].replace("\"ads\"", "7"),
        KINDS[5].replace("\"view_menu\"", "\"view\tmenu\""),
        KINDS[7].replace(",\"from\":\"concourse\",\"to\":\"floor\"", ""),
        KINDS[7].replace("\"concourse\"", "null"),
        KINDS[7].replace("\"trk-81\"", "81"),
        KINDS[7].replace("}", ",\"count\":1}"),
        KINDS[7].replace(",\"track\":\"trk-81\"", ""),
        KINDS[8].replace("}", ",\"to\":\"stage\"}"),
        base[..base.len() - 1].to_owned(),
        format!("{base}}}"),
        String::new(),
        "{}".to_owned(),
    ];
    for line in &cases {
        assert!(fast::event(line).is_none(), "fast path accepted {line}");
        assert_paths_agree(line);
    }
}

#[test]
fn fast_floats_agree_with_serde_json() {
    for token in [
        "0",
        "-0",
        "0.0",
        "-0.0",
        "96.5",
        "104",
        "-23.5",
        "0.05",
        "2e-2",
        "1e999",
        "0.1",
        "0.30000000000000004",
        "123456789012345",
        "1234567890123456",
        "9007199254740993",
        "-40.000000000000001",
        "179.99999999999999",
        "0.000000000000001",
    ] {
        let serde = serde_json::from_str::<f64>(token).ok().map(f64::to_bits);
        assert_eq!(fast::float(token).map(f64::to_bits), serde, "{token}");
    }
}

#[test]
fn fast_timestamps_agree_with_time() {
    for ts in [
        "2026-06-01T18:00:00Z",
        "1970-01-01T00:00:00Z",
        "2024-02-29T23:59:59.999Z",
        "2000-02-29T12:00:00.5Z",
        "2026-06-01T18:00:00.123456789Z",
        "9999-12-31T23:59:59.999999999Z",
    ] {
        assert!(fast::utc_millis(ts).is_some(), "{ts}");
        assert_ts_agree(ts);
    }
    for ts in [
        "2023-02-29T00:00:00Z",
        "1900-02-29T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-06-31T00:00:00Z",
        "2026-06-01T24:00:00Z",
        "2026-06-01T18:60:00Z",
        "2016-12-31T23:59:60Z",
        "2026-06-01t18:00:00Z",
        "2026-06-01T18:00:00z",
        "2026-06-01T18:00:00+00:00",
        "2026-06-01T18:00:00.Z",
        "2026-06-01T18:00:00.1234567890Z",
        "1969-12-31T23:59:59Z",
        "2026-06-01 18:00:00Z",
        "+2026-06-01T18:00:00Z",
        "2026-6-01T18:00:00Z",
    ] {
        assert!(fast::utc_millis(ts).is_none(), "{ts}");
        assert_ts_agree(ts);
    }
}

proptest::proptest! {
    #[test]
    fn fast_floats_are_serde_json_floats_bit_for_bit(
        negative in proptest::prelude::any::<bool>(),
        int in proptest::prop_oneof![0u64..1000, proptest::prelude::any::<u64>()],
        frac in "[0-9]{0,20}",
        exp in proptest::option::of(-30i32..30),
    ) {
        let mut token = format!("{}{int}", if negative { "-" } else { "" });
        if !frac.is_empty() {
            token = format!("{token}.{frac}");
        }
        if let Some(e) = exp {
            token = format!("{token}e{e}");
        }
        let serde = serde_json::from_str::<f64>(&token).ok().map(f64::to_bits);
        proptest::prop_assert_eq!(fast::float(&token).map(f64::to_bits), serde, "{}", token);
    }

    #[test]
    fn fast_timestamps_match_time_everywhere(
        secs in 0i64..253_402_300_800,
        nanos in 0u32..1_000_000_000,
        digits in 0usize..10,
    ) {
        let t = OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let mut ts = t.format(&Rfc3339).unwrap();
        if digits > 0 {
            let frac = format!("{nanos:09}");
            ts = ts.replace('Z', &format!(".{}Z", &frac[..digits]));
        }
        proptest::prop_assert!(fast::utc_millis(&ts).is_some(), "{}", ts);
        assert_ts_agree(&ts);
    }

    #[test]
    fn fast_event_agrees_on_byte_changes(
        which in 0usize..7,
        pos in proptest::prelude::any::<proptest::sample::Index>(),
        byte in proptest::prelude::any::<u8>(),
        op in 0u8..3,
    ) {
        let mut bytes = KINDS[which].as_bytes().to_vec();
        let i = pos.index(bytes.len());
        match op {
            0 => bytes[i] = byte,
            1 => bytes.insert(i, byte),
            _ => {
                bytes.remove(i);
            }
        }
        if let Ok(line) = String::from_utf8(bytes) {
            assert_paths_agree(&line);
            let ts = line.split('"').nth(3).unwrap_or_default().to_owned();
            assert_ts_agree(&ts);
        }
    }
}

#[test]
fn compact_lines_are_read_without_copying_their_strings() {
    use std::borrow::Cow;
    let borrowed = |s: &Cow<'_, str>| matches!(s, Cow::Borrowed(_));
    for line in KINDS {
        let v = parse_line(line).unwrap();
        let e = &v.event;
        assert!(
            borrowed(&e.ts) && borrowed(&e.sensor) && borrowed(&e.zone),
            "{line}"
        );
        assert!(e.firmware.as_ref().is_none_or(borrowed), "{line}");
        match &e.body {
            Body::GateScan { ticket: id, .. } | Body::Probe { device: id, .. } => {
                assert!(borrowed(id))
            }
            Body::App {
                subject,
                action,
                consent,
            } => assert!(borrowed(subject) && borrowed(action) && consent.iter().all(borrowed)),
            _ => {}
        }
        // Detached from the line, it is the same event.
        assert_eq!(v.clone().into_owned(), v);
    }
    // Other forms are read by serde_json and own their strings.
    let spaced = KINDS[4].replace(",", ", ");
    let v = parse_line(&spaced).unwrap();
    assert!(!borrowed(&v.event.sensor));
    assert_eq!(v, parse_line(KINDS[4]).unwrap());
}
