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
    ];
    for (line, want) in cases {
        let err = parse_line(line).unwrap_err().to_string();
        assert!(err.contains(want), "{line}: {err}");
    }
}
