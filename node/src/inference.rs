//! On-device inference with candle: an audio-frame classifier and a
//! zone-occupancy forecaster, both small MLPs whose weights ship inside the
//! binary as safetensors (trained by `veil-node model train-initial` from the
//! simulator) and load with candle's safe buffered loader. Nothing is
//! downloaded at run time.
//!
//! * [`Models::classify_frames`] labels each audio feature frame of a window
//!   as applause, music, speech, crowd noise or clipping and returns the
//!   per-class counts.
//! * [`Models::forecast`] predicts a zone's occupancy
//!   [`FORECAST_HORIZON_MIN`] minutes ahead from its recent per-minute
//!   history ([`ZoneHistory`]).
//!
//! Model inputs and outputs stay on the node; this module never logs them.
//! Inference is synchronous CPU work of well under a millisecond per window:
//! callers on an async runtime run it in `spawn_blocking` so ingest is never
//! blocked.

pub mod live;
pub mod mlp;
pub mod train;

use std::{collections::BTreeMap, time::Instant};

pub use mlp::{Mlp, MlpSpec, Task};

use crate::event::{AUDIO_BANDS, Body};

/// Errors loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// candle failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A weights file is malformed or does not match the model.
    #[error("model file: {0}")]
    Format(String),
    /// Inputs of the wrong shape.
    #[error("shape: {0}")]
    Shape(String),
}

/// The audio classes, in output order.
pub const AUDIO_CLASSES: [&str; 5] = ["applause", "music", "speech", "crowd_noise", "clipping"];

/// The audio-frame classifier: 10 features -> 16 -> 5 classes.
pub const AUDIO_SPEC: MlpSpec = MlpSpec {
    name: "audio-classifier",
    dims: &[10, 16, 5],
    task: Task::Classification,
};

/// The occupancy forecaster: 8 features -> 16 -> 1.
pub const FORECASTER_SPEC: MlpSpec = MlpSpec {
    name: "occupancy-forecaster",
    dims: &[8, 16, 1],
    task: Task::Regression,
};

/// Minutes ahead the forecaster predicts.
pub const FORECAST_HORIZON_MIN: usize = 10;
/// Per-minute occupancy values the forecaster looks at.
pub const FORECAST_LAGS: usize = 6;
/// Largest forecast, in units of the zone's recent maximum.
pub const FORECAST_MAX_RATIO: f64 = 4.0;
/// Minutes of history a [`ZoneHistory`] keeps.
pub const HISTORY_MAX_MIN: usize = 24 * 60;

const EMBEDDED_AUDIO: &[u8] = include_bytes!("../models/audio-classifier.safetensors");
const EMBEDDED_FORECASTER: &[u8] = include_bytes!("../models/occupancy-forecaster.safetensors");

/// The shipped weights of a model, by spec name.
pub fn embedded_weights(name: &str) -> Option<&'static [u8]> {
    match name {
        n if n == AUDIO_SPEC.name => Some(EMBEDDED_AUDIO),
        n if n == FORECASTER_SPEC.name => Some(EMBEDDED_FORECASTER),
        _ => None,
    }
}

/// The features of one audio frame, as the classifier sees them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AudioFeatures {
    /// RMS level, dB SPL.
    pub level_db: f32,
    /// Peak level, dB SPL.
    pub peak_db: f32,
    /// Relative band energies (0..=1).
    pub bands: [f32; AUDIO_BANDS],
}

impl AudioFeatures {
    /// The features of an `audio` event body; `None` for other kinds.
    pub fn from_body(body: &Body<'_>) -> Option<Self> {
        match body {
            Body::Audio {
                level_db,
                peak_db,
                bands,
            } => Some(Self::new(*level_db, *peak_db, bands)),
            _ => None,
        }
    }

    /// From raw values (missing bands are 0).
    pub fn new(level_db: f64, peak_db: f64, bands: &[f64]) -> Self {
        let mut b = [0.0f32; AUDIO_BANDS];
        for (o, i) in b.iter_mut().zip(bands) {
            *o = *i as f32;
        }
        Self {
            level_db: level_db as f32,
            peak_db: peak_db as f32,
            bands: b,
        }
    }

    /// The model input: level / 100, (peak - level) / 20, bands * 4.
    pub fn input(&self) -> [f32; 10] {
        let mut x = [0.0f32; 10];
        x[0] = self.level_db / 100.0;
        x[1] = (self.peak_db - self.level_db) / 20.0;
        for (o, b) in x[2..].iter_mut().zip(self.bands) {
            *o = b * 4.0;
        }
        x
    }
}

/// Per-class frame counts of one window (order of [`AUDIO_CLASSES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AudioCounts(pub [u64; 5]);

impl AudioCounts {
    /// Frames labelled `class` (one of [`AUDIO_CLASSES`]); 0 if unknown.
    pub fn get(&self, class: &str) -> u64 {
        AUDIO_CLASSES
            .iter()
            .position(|c| *c == class)
            .map_or(0, |i| self.0[i])
    }

    /// (class, count) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        AUDIO_CLASSES.iter().copied().zip(self.0.iter().copied())
    }
}

/// A zone's occupancy per minute (mean of the windows that fall in each
/// minute), at most [`HISTORY_MAX_MIN`] minutes, oldest dropped first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ZoneHistory {
    minutes: BTreeMap<i64, (f64, u32)>,
    first_minute: Option<i64>,
}

impl ZoneHistory {
    /// Empty.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a closed window's occupancy (people). Windows longer than a
    /// minute fill every minute they cover; shorter ones are averaged.
    pub fn record(&mut self, window_start_ms: i64, length_s: u32, occupancy: f64) {
        if !occupancy.is_finite() {
            return;
        }
        let occupancy = occupancy.max(0.0);
        let first = window_start_ms.div_euclid(60_000);
        let minutes = i64::from(length_s.div_ceil(60).max(1));
        for m in first..first + minutes {
            let e = self.minutes.entry(m).or_insert((0.0, 0));
            e.0 += occupancy;
            e.1 += 1;
        }
        self.first_minute = Some(self.first_minute.map_or(first, |f| f.min(first)));
        while self.minutes.len() > HISTORY_MAX_MIN {
            self.minutes.pop_first();
        }
    }

    /// Minutes since the first recorded window (clock of the event).
    pub fn elapsed_min(&self) -> usize {
        match (self.first_minute, self.minutes.last_key_value()) {
            (Some(f), Some((&l, _))) => usize::try_from(l - f).unwrap_or(0),
            _ => 0,
        }
    }

    /// The per-minute series from the oldest kept minute to the newest,
    /// gaps filled with the previous value.
    pub fn series(&self) -> Vec<f64> {
        self.series_with_offset().0
    }

    /// [`Self::series`] and the event minute (minutes since the first
    /// recorded window) of its first value.
    pub fn series_with_offset(&self) -> (Vec<f64>, usize) {
        let mut out = Vec::with_capacity(self.minutes.len());
        let mut prev: Option<(i64, f64)> = None;
        for (&m, &(s, n)) in &self.minutes {
            let v = s / f64::from(n.max(1));
            if let Some((pm, pv)) = prev {
                // Long gaps are capped: the series never exceeds 2x the cap.
                let gap = usize::try_from(m - pm - 1)
                    .unwrap_or(0)
                    .min(HISTORY_MAX_MIN);
                out.extend(std::iter::repeat_n(pv, gap));
            }
            out.push(v);
            prev = Some((m, v));
        }
        let first = match (self.first_minute, self.minutes.first_key_value()) {
            (Some(f), Some((&k, _))) => usize::try_from(k - f).unwrap_or(0),
            _ => 0,
        };
        let skip = out.len().saturating_sub(HISTORY_MAX_MIN);
        (out.split_off(skip), first + skip)
    }
}

/// The forecaster's input at minute `t` of `series` (values before the
/// series start repeat its first value), with the scale the target is
/// expressed in. `elapsed0` is the event minute of `series[0]`.
///
/// Features: the last [`FORECAST_LAGS`] values / scale, ln(1 + scale) / 10,
/// event minute / 180; scale = max(50, max of the last 10 minutes).
pub fn forecast_features(series: &[f64], t: usize, elapsed0: usize) -> Option<([f32; 8], f64)> {
    if t >= series.len() {
        return None;
    }
    let lo = t.saturating_sub(9);
    let scale = series[lo..=t].iter().copied().fold(50.0f64, f64::max);
    let mut x = [0.0f32; 8];
    for (k, o) in x[..FORECAST_LAGS].iter_mut().enumerate() {
        let i = (t + k + 1).saturating_sub(FORECAST_LAGS);
        *o = (series[i] / scale) as f32;
    }
    x[6] = ((1.0 + scale).ln() / 10.0) as f32;
    x[7] = ((elapsed0 + t) as f64 / 180.0) as f32;
    Some((x, scale))
}

/// Supervised pairs from a per-minute series: input at minute t, target
/// occupancy at t + [`FORECAST_HORIZON_MIN`] in units of the input's scale,
/// capped at [`FORECAST_MAX_RATIO`] (surges from an empty zone would
/// otherwise dominate the squared error).
pub fn forecast_dataset(series: &[f64], elapsed0: usize) -> (Vec<f32>, Vec<f32>) {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for t in 0..series.len().saturating_sub(FORECAST_HORIZON_MIN) {
        if let Some((f, scale)) = forecast_features(series, t, elapsed0) {
            x.extend_from_slice(&f);
            y.push((series[t + FORECAST_HORIZON_MIN] / scale).min(FORECAST_MAX_RATIO) as f32);
        }
    }
    (x, y)
}

/// The loaded models.
#[derive(Debug, Clone)]
pub struct Models {
    audio: Mlp,
    forecaster: Mlp,
}

impl Models {
    /// The weights shipped in the binary.
    pub fn load_embedded() -> Result<Self, InferenceError> {
        Self::from_bytes(EMBEDDED_AUDIO, EMBEDDED_FORECASTER)
    }

    /// From two safetensors files (audio classifier, forecaster).
    pub fn from_bytes(audio: &[u8], forecaster: &[u8]) -> Result<Self, InferenceError> {
        Ok(Self {
            audio: Mlp::from_safetensors(AUDIO_SPEC, audio)?,
            forecaster: Mlp::from_safetensors(FORECASTER_SPEC, forecaster)?,
        })
    }

    /// Replaces the forecaster (e.g. by a newer federated version).
    pub fn set_forecaster(&mut self, bytes: &[u8]) -> Result<(), InferenceError> {
        self.forecaster = Mlp::from_safetensors(FORECASTER_SPEC, bytes)?;
        Ok(())
    }

    /// The audio classifier.
    pub fn audio(&self) -> &Mlp {
        &self.audio
    }

    /// The forecaster.
    pub fn forecaster(&self) -> &Mlp {
        &self.forecaster
    }

    /// The most likely class index of each frame.
    pub fn classify(&self, frames: &[AudioFeatures]) -> Result<Vec<usize>, InferenceError> {
        let rows: Vec<f32> = frames.iter().flat_map(|f| f.input()).collect();
        let out = self.audio.predict(&rows)?;
        Ok(out
            .iter()
            .map(|logits| {
                logits
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                        if v > best.1 { (i, v) } else { best }
                    })
                    .0
            })
            .collect())
    }

    /// Per-class counts of a window's audio frames.
    pub fn classify_frames(&self, frames: &[AudioFeatures]) -> Result<AudioCounts, InferenceError> {
        let mut counts = AudioCounts::default();
        for c in self.classify(frames)? {
            if let Some(n) = counts.0.get_mut(c) {
                *n += 1;
            }
        }
        Ok(counts)
    }

    /// Predicted occupancy (people, >= 0) [`FORECAST_HORIZON_MIN`] minutes
    /// after the newest minute of `history`; `None` when it is empty.
    pub fn forecast(&self, history: &ZoneHistory) -> Result<Option<f64>, InferenceError> {
        let (series, elapsed0) = history.series_with_offset();
        let Some(t) = series.len().checked_sub(1) else {
            return Ok(None);
        };
        self.forecast_series(&series, t, elapsed0)
    }

    /// Predicted occupancy at minute `t + horizon` of `series`.
    pub fn forecast_series(
        &self,
        series: &[f64],
        t: usize,
        elapsed0: usize,
    ) -> Result<Option<f64>, InferenceError> {
        let Some((x, scale)) = forecast_features(series, t, elapsed0) else {
            return Ok(None);
        };
        let out = self.forecaster.predict(&x)?;
        let y = out.first().and_then(|r| r.first()).copied().unwrap_or(0.0);
        Ok(Some(f64::from(y).clamp(0.0, FORECAST_MAX_RATIO) * scale))
    }

    /// Runs both models for one closed window: classifies `frames` and
    /// forecasts every zone in `histories`. Returns the outputs and the wall
    /// time it took (the per-window inference latency metric).
    pub fn run_window<'a>(
        &self,
        frames: &[AudioFeatures],
        histories: impl IntoIterator<Item = (&'a str, &'a ZoneHistory)>,
    ) -> Result<WindowInference, InferenceError> {
        let started = Instant::now();
        let audio = self.classify_frames(frames)?;
        let mut forecasts = BTreeMap::new();
        for (zone, h) in histories {
            if let Some(f) = self.forecast(h)? {
                forecasts.insert(zone.to_owned(), f);
            }
        }
        Ok(WindowInference {
            audio,
            forecasts,
            latency: started.elapsed(),
        })
    }
}

/// What [`Models::run_window`] produced.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowInference {
    /// Audio class counts.
    pub audio: AudioCounts,
    /// Per zone, predicted occupancy in [`FORECAST_HORIZON_MIN`] minutes.
    pub forecasts: BTreeMap<String, f64>,
    /// Inference wall time.
    pub latency: std::time::Duration,
}

#[cfg(test)]
mod tests;
