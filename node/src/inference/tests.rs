use super::*;

fn frame(level: f64, peak: f64, bands: [f64; 8]) -> AudioFeatures {
    AudioFeatures::new(level, peak, &bands)
}

#[test]
fn embedded_models_load_and_match_their_specs() {
    let m = Models::load_embedded().unwrap();
    assert_eq!(m.audio().spec().parameters(), 10 * 16 + 16 + 16 * 5 + 5);
    assert_eq!(m.forecaster().spec().parameters(), 8 * 16 + 16 + 16 + 1);
    // Round trip through the file format is exact.
    let bytes = m.forecaster().to_safetensors().unwrap();
    let again = Mlp::from_safetensors(FORECASTER_SPEC, &bytes).unwrap();
    assert_eq!(
        again.parameters().unwrap(),
        m.forecaster().parameters().unwrap()
    );
    // A file for the other model is refused with a reason.
    let err = Mlp::from_safetensors(AUDIO_SPEC, &bytes).unwrap_err();
    assert!(err.to_string().contains("tensor"), "{err}");
    assert!(Mlp::from_safetensors(AUDIO_SPEC, b"not a file").is_err());
}

#[test]
fn audio_classifier_on_fixed_frames() {
    let m = Models::load_embedded().unwrap();
    // Band profiles of the simulator's scenes, at typical levels.
    let music = frame(97.0, 106.0, [0.24, 0.2, 0.15, 0.12, 0.1, 0.09, 0.06, 0.04]);
    let applause = frame(
        102.0,
        114.0,
        [0.04, 0.06, 0.09, 0.13, 0.17, 0.2, 0.18, 0.13],
    );
    let speech = frame(86.5, 97.0, [0.03, 0.1, 0.24, 0.27, 0.18, 0.1, 0.05, 0.03]);
    let crowd = frame(72.0, 80.0, [0.08, 0.14, 0.2, 0.2, 0.16, 0.11, 0.07, 0.04]);
    let clipping = frame(97.0, 125.0, [0.24, 0.2, 0.15, 0.12, 0.1, 0.09, 0.06, 0.04]);
    let got = m
        .classify(&[applause, music, speech, crowd, clipping])
        .unwrap();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    let counts = m
        .classify_frames(&[music, music, clipping, speech])
        .unwrap();
    assert_eq!(counts.get("music"), 2);
    assert_eq!(counts.get("clipping"), 1);
    assert_eq!(counts.get("speech"), 1);
    assert_eq!(counts.0.iter().sum::<u64>(), 4);
    assert_eq!(m.classify_frames(&[]).unwrap(), AudioCounts::default());
}

#[test]
fn forecaster_on_fixed_histories() {
    let m = Models::load_embedded().unwrap();
    let mut empty = ZoneHistory::new();
    assert_eq!(m.forecast(&empty).unwrap(), None);
    // A steady zone stays near its level.
    for i in 0..30 {
        empty.record(1_767_200_400_000 + i * 60_000, 60, 500.0);
    }
    let steady = m.forecast(&empty).unwrap().unwrap();
    assert!(
        (250.0..=750.0).contains(&steady),
        "steady forecast {steady}"
    );
    // Deterministic.
    assert_eq!(m.forecast(&empty).unwrap(), Some(steady));
    // 10 s windows are averaged into minutes.
    let mut h = ZoneHistory::new();
    for i in 0..6 {
        h.record(1_767_200_400_000 + i * 10_000, 10, 100.0 + i as f64);
    }
    assert_eq!(h.series().len(), 1);
    assert!((h.series()[0] - 102.5).abs() < 1e-9);
    let out = m.run_window(&[], [("hub", &empty)]).unwrap();
    assert_eq!(out.forecasts.get("hub"), Some(&steady));
}

#[test]
fn history_is_bounded_and_gaps_are_filled() {
    let mut h = ZoneHistory::new();
    h.record(0, 60, 10.0);
    h.record(3 * 60_000, 60, 40.0);
    assert_eq!(h.series(), vec![10.0, 10.0, 10.0, 40.0]);
    for i in 0..(HISTORY_MAX_MIN as i64 + 50) {
        h.record(i * 60_000, 60, 1.0);
    }
    let (s, off) = h.series_with_offset();
    assert_eq!(s.len(), HISTORY_MAX_MIN);
    assert_eq!(off, 50);
    h.record(0, 60, f64::NAN);
}

#[test]
fn features_and_dataset_shapes() {
    let series: Vec<f64> = (0..40).map(|i| f64::from(i) * 10.0).collect();
    let (x, y) = forecast_dataset(&series, 0);
    assert_eq!(y.len(), 40 - FORECAST_HORIZON_MIN);
    assert_eq!(x.len(), y.len() * 8);
    let (f, scale) = forecast_features(&series, 20, 0).unwrap();
    assert_eq!(scale, 200.0);
    let (_, small) = forecast_features(&series, 2, 0).unwrap();
    assert_eq!(small, 50.0);
    assert!((f[5] - 1.0).abs() < 1e-6);
    assert!((y[20] - 300.0 / 200.0).abs() < 1e-6);
    assert!(forecast_features(&series, 40, 0).is_none());
}
