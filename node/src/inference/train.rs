//! Training the on-device models with candle autograd (`Var`, backward,
//! candle-nn optimizers): the initial weights from the simulator
//! (`veil-node model train-initial`), and local steps for federated rounds.
//!
//! Training data never leaves the node; this module never logs it.

use std::{path::Path, time::Duration};

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, SGD, VarMap};
use rand::{SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

use super::{
    AUDIO_SPEC, AudioFeatures, FORECASTER_SPEC, InferenceError, Mlp, MlpSpec, Task,
    forecast_dataset,
};
use crate::simulate::{self, Metric, SimConfig, Simulation, VenueKind};

/// Inputs (row-major, `spec.input()` wide) and targets: a value per row for
/// regression, a class index (as f32) per row for classification.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Dataset {
    /// Inputs, row-major.
    pub x: Vec<f32>,
    /// Targets.
    pub y: Vec<f32>,
}

impl Dataset {
    /// Rows.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Appends another dataset.
    pub fn extend(&mut self, other: &Dataset) {
        self.x.extend_from_slice(&other.x);
        self.y.extend_from_slice(&other.y);
    }

    fn tensors(&self, spec: &MlpSpec, rows: &[usize]) -> Result<(Tensor, Tensor), InferenceError> {
        let d = spec.input();
        if self.x.len() != self.y.len() * d {
            return Err(InferenceError::Shape(format!(
                "{} inputs for {} rows of width {d}",
                self.x.len(),
                self.y.len()
            )));
        }
        let mut xs = Vec::with_capacity(rows.len() * d);
        let mut ys = Vec::with_capacity(rows.len());
        for &r in rows {
            xs.extend_from_slice(&self.x[r * d..(r + 1) * d]);
            ys.push(self.y[r]);
        }
        let x = Tensor::from_vec(xs, (rows.len(), d), &Device::Cpu)?;
        let y = match spec.task {
            Task::Regression => Tensor::from_vec(ys, (rows.len(), 1), &Device::Cpu)?,
            Task::Classification => {
                let idx: Vec<u32> = ys.iter().map(|&v| v.max(0.0) as u32).collect();
                Tensor::from_vec(idx, rows.len(), &Device::Cpu)?
            }
        };
        Ok((x, y))
    }
}

fn loss_of(model: &Mlp, x: &Tensor, y: &Tensor) -> Result<Tensor, InferenceError> {
    let out = model.forward(x)?;
    Ok(match model.spec().task {
        Task::Regression => candle_nn::loss::mse(&out, y)?,
        Task::Classification => candle_nn::loss::cross_entropy(&out, y)?,
    })
}

/// Mean loss of `model` on `data` (MSE in target units, or cross-entropy).
pub fn loss(model: &Mlp, data: &Dataset) -> Result<f64, InferenceError> {
    if data.is_empty() {
        return Ok(0.0);
    }
    let rows: Vec<usize> = (0..data.len()).collect();
    let (x, y) = data.tensors(model.spec(), &rows)?;
    Ok(f64::from(loss_of(model, &x, &y)?.to_scalar::<f32>()?))
}

/// Fraction of rows classified correctly (classification models).
pub fn accuracy(model: &Mlp, data: &Dataset) -> Result<f64, InferenceError> {
    if data.is_empty() {
        return Ok(0.0);
    }
    let rows: Vec<usize> = (0..data.len()).collect();
    let (x, y) = data.tensors(model.spec(), &rows)?;
    let pred = model.forward(&x)?.argmax(D::Minus1)?;
    let hits = pred
        .eq(&y)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()?;
    Ok(f64::from(hits) / data.len() as f64)
}

type StepFn = dyn FnMut(&Tensor) -> Result<(), InferenceError>;

/// Which optimizer to train with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optim {
    /// Plain SGD at this learning rate (federated local steps).
    Sgd(f64),
    /// AdamW at this learning rate (initial training).
    AdamW(f64),
}

/// How to train.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainParams {
    /// Optimizer steps.
    pub steps: usize,
    /// Optimizer.
    pub optim: Optim,
    /// Rows per step; `None` for the whole dataset every step.
    pub batch: Option<usize>,
    /// Seed of the mini-batch order (not a privacy RNG).
    pub seed: u64,
}

/// Trains `spec` from `init` (a safetensors file) or from candle's default
/// initialisation, and returns the trained model (detached copy).
pub fn train(
    spec: MlpSpec,
    init: Option<&[u8]>,
    data: &Dataset,
    params: TrainParams,
) -> Result<Mlp, InferenceError> {
    let mut varmap = VarMap::new();
    let model = Mlp::fresh(spec, &varmap)?;
    if let Some(bytes) = init {
        super::mlp::check_file(&spec, bytes)?;
        for (name, shape, values) in super::mlp::decode(bytes)? {
            let t = Tensor::from_vec(values, shape, &Device::Cpu)?;
            varmap.set_one(&name, &t)?;
        }
    }
    if !data.is_empty() && params.steps > 0 {
        let vars = varmap.all_vars();
        let mut opt: Box<StepFn> = match params.optim {
            Optim::Sgd(lr) => {
                let mut o = SGD::new(vars, lr)?;
                Box::new(move |l| Ok(o.backward_step(l)?))
            }
            Optim::AdamW(lr) => {
                let mut o = AdamW::new(
                    vars,
                    ParamsAdamW {
                        lr,
                        weight_decay: 1e-4,
                        ..ParamsAdamW::default()
                    },
                )?;
                Box::new(move |l| Ok(o.backward_step(l)?))
            }
        };
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let mut order: Vec<usize> = (0..data.len()).collect();
        let batch = params.batch.unwrap_or(data.len()).clamp(1, data.len());
        let mut pos = data.len();
        let full = data.tensors(&spec, &order)?;
        for _ in 0..params.steps {
            let (x, y) = if batch == data.len() {
                full.clone()
            } else {
                if pos + batch > order.len() {
                    order.shuffle(&mut rng);
                    pos = 0;
                }
                let t = data.tensors(&spec, &order[pos..pos + batch])?;
                pos += batch;
                t
            };
            let l = loss_of(&model, &x, &y)?;
            opt(&l)?;
        }
    }
    Mlp::from_safetensors(spec, &model.to_safetensors()?)
}

/// Labelled audio frames from the simulator's microphone model.
pub fn audio_dataset(seed: u64, n: usize) -> Dataset {
    let mut d = Dataset::default();
    for f in simulate::labelled_audio_frames(seed, n) {
        let feats = AudioFeatures::new(f.level_db, f.peak_db, &f.bands);
        d.x.extend_from_slice(&feats.input());
        d.y.push(f.label as f32);
    }
    d
}

/// Per-minute camera occupancy series of every camera zone of a simulated
/// event (what a node's windows see), keyed by zone.
pub fn simulated_series(cfg: SimConfig) -> Result<Vec<(String, Vec<f64>)>, simulate::SimError> {
    let sim = Simulation::new(cfg)?;
    let truth = sim.ground_truth();
    Ok(sim
        .zones()
        .iter()
        .map(|z| {
            let s: Vec<f64> = truth
                .series(z.name, Metric::OccupancyCamera)
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            (z.name.to_owned(), s)
        })
        .filter(|(_, s)| !s.is_empty())
        .collect())
}

/// Forecaster examples of every zone of a simulated event.
pub fn forecast_dataset_from(cfg: SimConfig) -> Result<Dataset, simulate::SimError> {
    let mut d = Dataset::default();
    for (_, series) in simulated_series(cfg)? {
        let (x, y) = forecast_dataset(&series, 0);
        d.x.extend(x);
        d.y.extend(y);
    }
    Ok(d)
}

/// A simulated event config used for training and tests.
pub fn sim_config(venue: VenueKind, seed: u64, minutes: u64, attendees: u32) -> SimConfig {
    let mut c = SimConfig::new(
        venue,
        seed,
        Duration::from_secs(minutes * 60),
        1_767_200_400_000,
    );
    c.attendees = Some(attendees);
    c.malformed_per_10k = 0;
    c
}

/// What `train-initial` produced.
#[derive(Debug, Clone, PartialEq)]
pub struct InitialReport {
    /// Audio classifier accuracy on held-out frames.
    pub audio_accuracy: f64,
    /// Forecaster held-out MSE (in units of the zone's recent maximum).
    pub forecaster_mse: f64,
    /// Sizes of the two files, bytes.
    pub bytes: (usize, usize),
}

/// Trains both models from the simulator (deterministic in `seed`) and
/// writes `audio-classifier.safetensors` and
/// `occupancy-forecaster.safetensors` into `out`.
///
/// The forecaster learns from festivals and conferences only; arenas are
/// left for federated rounds to teach it (and for the tests to show that
/// they do).
pub fn train_initial(out: &Path, seed: u64) -> Result<InitialReport, Box<dyn std::error::Error>> {
    let audio_train = audio_dataset(seed, 6_000);
    let audio_test = audio_dataset(seed + 1, 2_000);
    let audio = train(
        AUDIO_SPEC,
        None,
        &audio_train,
        TrainParams {
            steps: 1_500,
            optim: Optim::AdamW(0.01),
            batch: Some(256),
            seed,
        },
    )?;
    let audio_accuracy = accuracy(&audio, &audio_test)?;

    let mut fc_train = Dataset::default();
    for (i, venue) in [VenueKind::Festival, VenueKind::Conference]
        .into_iter()
        .enumerate()
    {
        let minutes = if venue == VenueKind::Festival {
            360
        } else {
            240
        };
        fc_train.extend(&forecast_dataset_from(sim_config(
            venue,
            seed + i as u64,
            minutes,
            3_000,
        ))?);
    }
    let fc_test = forecast_dataset_from(sim_config(VenueKind::Conference, seed + 10, 240, 3_000))?;
    let forecaster = train(
        FORECASTER_SPEC,
        None,
        &fc_train,
        TrainParams {
            steps: 1_500,
            optim: Optim::AdamW(0.01),
            batch: Some(256),
            seed,
        },
    )?;
    let forecaster_mse = loss(&forecaster, &fc_test)?;

    std::fs::create_dir_all(out)?;
    let a = audio.to_safetensors()?;
    let f = forecaster.to_safetensors()?;
    std::fs::write(out.join(format!("{}.safetensors", AUDIO_SPEC.name)), &a)?;
    std::fs::write(
        out.join(format!("{}.safetensors", FORECASTER_SPEC.name)),
        &f,
    )?;
    Ok(InitialReport {
        audio_accuracy,
        forecaster_mse,
        bytes: (a.len(), f.len()),
    })
}
