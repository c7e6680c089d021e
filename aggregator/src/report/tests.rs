use super::*;

fn pt(zone: &str, minute: i64, value: f64, e: f64) -> SeriesPoint {
    SeriesPoint {
        venue: "arena".into(),
        zone: zone.into(),
        metric: "occupancy".into(),
        window_start_ms: minute * 60_000,
        window_len_s: 60,
        value,
        error95: e,
        mechanism: "MECHANISM_DISCRETE_LAPLACE".into(),
        releases: 1,
        combine: crate::query::Combine::Sum,
        suppressed: false,
    }
}

#[test]
fn kpis_from_fixed_series() {
    let mut occ = BTreeMap::new();
    occ.insert(
        "floor".to_owned(),
        vec![
            pt("floor", 0, 10.0, 3.0),
            pt("floor", 1, 50.0, 3.0),
            pt("floor", 2, 95.0, 3.0),
            pt("floor", 3, 100.0, 3.0),
            pt("floor", 4, 81.0, 3.0),
        ],
    );
    let cfg = Config {
        sound_limit_db: None,
        occupancy_limits: [("floor".to_owned(), 80.0)].into(),
    };
    let k = zone_kpis(&occ, &[], &cfg);
    assert_eq!(k.len(), 1);
    assert_eq!(k[0].peak, Some((100.0, 3.0, 180_000)));
    // 95 >= 90: two minutes after the first window.
    assert_eq!(k[0].to_90, Some(2.0));
    // 95, 100, 81 above 80 by the estimate; 81 - 3 is not above it for sure.
    assert_eq!(k[0].over_occupancy, (3.0, 2.0));
}

#[test]
fn escaping_and_pdf_refusal_wording() {
    assert_eq!(
        render::esc("<a href=\"x\">&'"),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
    );
}

#[test]
fn config_checks_name_the_key() {
    let bad = Config {
        sound_limit_db: Some(f64::NAN),
        ..Config::default()
    };
    assert_eq!(bad.check().unwrap_err().0, "report.sound_limit_db");
    let bad = Config {
        occupancy_limits: [("Floor!".to_owned(), 1.0)].into(),
        ..Config::default()
    };
    assert_eq!(bad.check().unwrap_err().0, "report.occupancy_limits");
}
