//! `veil-node bench`: measures the node's own stages on this machine and
//! prints a table, then one `name value unit` line per figure.
//!
//! Benchmarks never touch the network, a ledger or an outbox: the pipeline
//! bench runs parse, validate, pseudonymise, window, bound, plan and
//! privatize (intake on one thread, releases on a second, as `veil-node
//! run` does), under the repository's arena policy, with fake
//! lease ids (no budget is charged because nothing leaves the process).

use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{BufRead, BufReader, BufWriter, Write},
    time::{Duration, Instant},
};

use veil_privacy::{Cost, Rho, mechanisms::ContinualStream, policy::LoadedPolicy};

use crate::{
    config::Config,
    event::parse_line,
    release::{Input, plan_window, privatize, privatize_stream, stream_params},
    run::Pseudonyms,
    simulate::{SimConfig, Simulation, VenueKind, ZoneRole},
    window::{ClosedWindow, Windower},
};

/// The policy the pipeline bench releases under (the repository's arena policy).
const ARENA_POLICY: &str = include_str!("../../policies/arena.toml");

/// Lease id named by every charged release of the pipeline bench. No ledger
/// is involved: the bench never uploads, so nothing is charged or spent.
pub const FAKE_LEASE: &str = "bench-fake-lease";

/// Errors of a bench run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad parameters.
    #[error("{0}")]
    Invalid(String),
    /// Temporary file I/O.
    #[error("bench i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A privacy-crate error (policy, pseudonyms, mechanisms).
    #[error(transparent)]
    Privacy(#[from] veil_privacy::PrivacyError),
    /// The arena policy did not parse.
    #[error("policy: {0}")]
    Policy(#[from] veil_privacy::policy::PolicyError),
    /// The simulator refused its parameters.
    #[error("simulator: {0}")]
    Sim(#[from] crate::simulate::SimError),
    /// The bench node config did not parse.
    #[error("config: {0}")]
    Config(#[from] crate::config::ConfigError),
}

/// One measured figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Figure name (a contract: scripts compare runs by it).
    pub name: &'static str,
    /// Value.
    pub value: f64,
    /// Unit.
    pub unit: &'static str,
}

/// A bench's report: a human-readable table, then the figures.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Title line.
    pub title: String,
    /// `(label, value)` rows of the table.
    pub rows: Vec<(String, String)>,
    /// The figures.
    pub figures: Vec<Figure>,
}

impl Report {
    /// The table, a blank line, then one `name value unit` line per figure.
    pub fn render(&self) -> String {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut s = format!("{}\n", self.title);
        for (label, value) in &self.rows {
            let _ = writeln!(s, "  {label:<width$}  {value}");
        }
        s.push('\n');
        for f in &self.figures {
            let _ = writeln!(s, "{} {} {}", f.name, fmt_value(f.value), f.unit);
        }
        s
    }
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Peak resident set size of this process (`VmHWM` of
/// `/proc/self/status`), MiB; 0 where unavailable.
pub fn peak_rss_mib() -> f64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0.0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Prints a progress line to stderr at most every two seconds.
struct Progress {
    what: &'static str,
    total: u64,
    last: Instant,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Self {
        Self {
            what,
            total,
            last: Instant::now(),
        }
    }

    fn tick(&mut self, done: u64) {
        if self.last.elapsed() >= Duration::from_secs(2) {
            self.last = Instant::now();
            let pct = if self.total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / self.total as f64
            };
            eprintln!("bench: {} {done}/{} ({pct:.0}%)", self.what, self.total);
        }
    }
}

/// The node config of the pipeline bench: every arena zone, one node,
/// 1-minute windows with 30 s lateness, the default contribution bounds.
/// The aggregator and outbox entries are placeholders that are never used.
fn bench_config(sim: &Simulation) -> Result<Config, BenchError> {
    let mut zones = String::new();
    for z in sim.node_zones(0) {
        let gate = z.role == ZoneRole::Gate;
        let _ = write!(
            zones,
            "\n[[zone]]\nname = \"{}\"\ngate = {gate}\ncameras = {}\n",
            z.name,
            u32::from(!gate)
        );
    }
    let text = format!(
        "venue = \"arena\"\nnode_id = \"node-1\"\n\n\
         [aggregator]\nendpoint = \"https://127.0.0.1:1\"\n\
         ca = \"unused.pem\"\ncert = \"unused.pem\"\nkey = \"unused.key\"\n\n\
         [input]\npath = \"unused.jsonl\"\n\n\
         [windows]\nlength = \"1m\"\nlateness = \"30s\"\n\n\
         [outbox]\npath = \"unused.db\"\n{zones}"
    );
    Ok(Config::parse(&text, std::path::Path::new("bench.toml"))?)
}

/// What the timed part of the pipeline bench did.
#[derive(Debug, Default)]
struct PipelineCounts {
    lines: u64,
    invalid: u64,
    windows: u64,
    releases: u64,
    charged: u64,
}

/// `veil-node bench pipeline --events N`: simulator events (written to a
/// temporary file first, untimed) through parse, validate, pseudonyms,
/// windows and contribution bounds on one thread, release planning and noise
/// on a second.
pub fn pipeline(events: u64) -> Result<Report, BenchError> {
    if events == 0 {
        return Err(BenchError::Invalid("--events must be at least 1".into()));
    }
    // Untimed: generate enough simulator lines, in consecutive 2-hour
    // segments (new seed each), into a temporary file.
    // A 2-hour arena segment is about a million lines; smaller runs use
    // shorter segments (at least the simulator's 5 minutes).
    let segment = Duration::from_secs((events / 8_000 + 5).min(120) * 60);
    let start_ms: i64 = 1_780_333_200_000; // 2026-06-01T17:00:00Z
    let mut file = tempfile::tempfile()?;
    let mut written = 0u64;
    let mut seed = 1u64;
    let mut first: Option<Simulation> = None;
    {
        let mut w = BufWriter::with_capacity(1 << 20, &mut file);
        let mut progress = Progress::new("generating events", events);
        while written < events {
            let offset = i64::try_from(seed - 1).unwrap_or(0) * 3 * 3600 * 1000;
            let sim = Simulation::new(SimConfig::new(
                VenueKind::Arena,
                seed,
                segment,
                start_ms + offset,
            ))?;
            let stats = sim.write_events(0, &mut w)?;
            if stats.lines() == 0 {
                return Err(BenchError::Invalid("the simulator wrote no events".into()));
            }
            written += stats.lines();
            seed += 1;
            if first.is_none() {
                first = Some(sim);
            }
            progress.tick(written);
        }
        w.flush()?;
    }
    let sim = first.ok_or_else(|| BenchError::Invalid("no simulation".into()))?;
    let cfg = bench_config(&sim)?;
    let policy = LoadedPolicy::parse(ARENA_POLICY)?;
    use std::io::Seek;
    file.seek(std::io::SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);

    let started = Instant::now();
    let counts = run_pipeline(&cfg, &policy, &mut reader, events)?;
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let rss = peak_rss_mib();
    let eps = counts.lines as f64 / elapsed;
    Ok(Report {
        title: "veil-node bench pipeline: parse + validate + pseudonymise + window + bound on one thread, plan + noise on a second (as veil-node run), no network".into(),
        rows: vec![
            ("policy".into(), "policies/arena.toml (embedded)".into()),
            (
                "leases".into(),
                format!("fake id {FAKE_LEASE:?}: no ledger, nothing leaves the process"),
            ),
            ("events (lines) processed".into(), counts.lines.to_string()),
            ("invalid lines (simulated)".into(), counts.invalid.to_string()),
            ("windows closed".into(), counts.windows.to_string()),
            (
                "releases drawn".into(),
                format!("{} ({} charged to the fake lease)", counts.releases, counts.charged),
            ),
            ("elapsed".into(), format!("{elapsed:.3} s")),
            ("events per second".into(), format!("{eps:.0}")),
            ("peak RSS (VmHWM)".into(), format!("{rss:.1} MiB")),
        ],
        figures: vec![
            Figure {
                name: "events_per_s",
                value: eps,
                unit: "events/s",
            },
            Figure {
                name: "peak_rss_mib",
                value: rss,
                unit: "MiB",
            },
        ],
    })
}

fn run_pipeline(
    cfg: &Config,
    policy: &LoadedPolicy,
    reader: &mut impl BufRead,
    limit: u64,
) -> Result<PipelineCounts, BenchError> {
    // Two stages, as in `veil-node run`: intake (read, parse, pseudonymise,
    // window, bound) on this thread, releases (plan, noise) on another, fed
    // closed windows through a short queue so neither waits on the other.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<ClosedWindow>>(RELEASE_QUEUE);
    std::thread::scope(|scope| {
        let releaser = scope.spawn(move || {
            let mut counts = PipelineCounts::default();
            let mut streams = HashMap::new();
            for closed in rx {
                release(cfg, policy, &closed, &mut counts, &mut streams)?;
            }
            Ok::<_, BenchError>(counts)
        });
        let intake = intake(cfg, policy, reader, limit, &tx);
        drop(tx);
        let released = releaser
            .join()
            .map_err(|_| BenchError::Invalid("the release thread panicked".into()))?;
        // A release error is the cause of the intake's "stopped early".
        let released = released?;
        let mut counts = intake?;
        counts.windows = released.windows;
        counts.releases = released.releases;
        counts.charged = released.charged;
        Ok(counts)
    })
}

/// Closed windows the intake stage may run ahead of the release stage.
const RELEASE_QUEUE: usize = 4;

/// The intake stage of [`run_pipeline`]: counts lines and invalid lines,
/// hands every closed window to `releases`.
fn intake(
    cfg: &Config,
    policy: &LoadedPolicy,
    reader: &mut impl BufRead,
    limit: u64,
    releases: &std::sync::mpsc::SyncSender<Vec<ClosedWindow>>,
) -> Result<PipelineCounts, BenchError> {
    let stopped = || BenchError::Invalid("the release stage stopped early".into());
    let mut windower = Windower::for_node(cfg, policy)?;
    let mut pseudonyms = Pseudonyms::new(policy.event_day_offset_seconds(), Vec::new());
    let mut counts = PipelineCounts::default();
    let mut spill = Vec::new();
    let mut progress = Progress::new("pipeline events", limit);
    // Lines are parsed where they lie in the reader's buffer; only a line
    // that straddles two buffer fills is copied out first.
    while counts.lines < limit {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let (line, used) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => {
                spill.clear();
                reader.read_until(b'\n', &mut spill)?;
                if spill.last() == Some(&b'\n') {
                    spill.pop();
                }
                (&spill[..], None)
            }
        };
        counts.lines += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match std::str::from_utf8(line).map(parse_line) {
            Ok(Ok(ev)) => {
                let key = pseudonyms.key(ev.ts_ms)?;
                windower.add(&ev, |id| key.pseudonym(id.as_bytes()));
            }
            _ => counts.invalid += 1,
        }
        if let Some(used) = used {
            reader.consume(used);
        }
        let closed = windower.drain_closed();
        if !closed.is_empty() {
            releases.send(closed).map_err(|_| stopped())?;
        }
        if counts.lines % 65_536 == 0 {
            progress.tick(counts.lines);
        }
    }
    releases.send(windower.flush()).map_err(|_| stopped())?;
    Ok(counts)
}

/// Streams of the bench, by (event day, metric, zone), in memory.
type BenchStreams = HashMap<(u32, &'static str, String), ContinualStream>;

fn release(
    cfg: &Config,
    policy: &LoadedPolicy,
    closed: &[ClosedWindow],
    counts: &mut PipelineCounts,
    streams: &mut BenchStreams,
) -> Result<(), BenchError> {
    for w in closed {
        counts.windows += 1;
        for p in plan_window(cfg, policy, w)? {
            let lease = if matches!(p.cost, Cost::Free) {
                ""
            } else {
                counts.charged += 1;
                FAKE_LEASE
            };
            let r = match p.input {
                Input::Stream { day, horizon, .. } => {
                    let key = (day, p.metric, p.zone.clone());
                    let stream = match streams.entry(key) {
                        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::hash_map::Entry::Vacant(e) => e.insert(
                            ContinualStream::new(stream_params(policy, p.metric, horizon)?)?,
                        ),
                    };
                    privatize_stream(&p, stream, lease)?
                }
                _ => privatize(&p, lease)?,
            };
            std::hint::black_box(&r);
            counts.releases += 1;
        }
    }
    Ok(())
}

/// Noise mechanism of `veil-node bench noise`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseMechanism {
    /// `noise_vec_discrete_gaussian` (rho-zCDP).
    DiscreteGaussian,
    /// `noise_vec_discrete_laplace` (epsilon-DP).
    DiscreteLaplace,
    /// `model_update::privatize_update`: clip + OpenDP Gaussian over f32
    /// (the federated model-update path).
    GaussianF32,
}

impl NoiseMechanism {
    fn name(self) -> &'static str {
        match self {
            Self::DiscreteGaussian => "discrete-gaussian",
            Self::DiscreteLaplace => "discrete-laplace",
            Self::GaussianF32 => "gaussian-f32",
        }
    }

    fn params(self) -> &'static str {
        match self {
            Self::DiscreteGaussian => "rho 0.5, sensitivity 1: sigma 1",
            Self::DiscreteLaplace => "epsilon 1, sensitivity 1: b 1",
            Self::GaussianF32 => {
                "clip 1, noise multiplier 1, 10 nodes: sigma 0.316 on a 2^-149 grid"
            }
        }
    }
}

impl std::str::FromStr for NoiseMechanism {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "discrete-gaussian" => Ok(Self::DiscreteGaussian),
            "discrete-laplace" => Ok(Self::DiscreteLaplace),
            "gaussian-f32" => Ok(Self::GaussianF32),
            other => Err(BenchError::Invalid(format!(
                "unknown --mechanism {other:?}: use discrete-gaussian, discrete-laplace or gaussian-f32"
            ))),
        }
    }
}

/// Values noised per call of the vector measurement (progress granularity;
/// each call is split over the cores inside `veil_privacy`).
const NOISE_CHUNK: usize = 1 << 16;

/// `veil-node bench noise --values N --mechanism M`: the production noise
/// paths (OpenDP vector measurements with its OpenSSL-backed exact samplers,
/// `veil_privacy::noise_vec_*` and `model_update::privatize_update`).
pub fn noise(values: usize, mechanism: NoiseMechanism) -> Result<Report, BenchError> {
    if values == 0 {
        return Err(BenchError::Invalid("--values must be at least 1".into()));
    }
    let input: Vec<i64> = (0..values).map(|i| (i % 1000) as i64).collect();
    let floats: Vec<f32> = input.iter().map(|&x| x as f32 * 1e-6).collect();
    let rho = Rho::new(0.5)?;
    let eps = veil_privacy::Epsilon::new(1.0)?;
    let round = veil_privacy::model_update::RoundPrivacy::new(1.0, 1.0, 10)?;
    let mut progress = Progress::new("noise values", values as u64);
    let mut checksum = 0f64;
    let started = Instant::now();
    for (i, range) in (0..values).step_by(NOISE_CHUNK).enumerate() {
        let chunk = range..values.min(range + NOISE_CHUNK);
        let sum = match mechanism {
            NoiseMechanism::DiscreteGaussian => {
                veil_privacy::noise_vec_discrete_gaussian(&input[chunk], 1, rho)?
                    .iter()
                    .sum::<i64>() as f64
            }
            NoiseMechanism::DiscreteLaplace => {
                veil_privacy::noise_vec_discrete_laplace(&input[chunk], 1, eps)?
                    .iter()
                    .sum::<i64>() as f64
            }
            NoiseMechanism::GaussianF32 => {
                veil_privacy::model_update::privatize_update(floats[chunk].to_vec(), &round)?
                    .values()
                    .iter()
                    .map(|&x| f64::from(x))
                    .sum::<f64>()
            }
        };
        checksum += sum;
        progress.tick(values.min((i + 1) * NOISE_CHUNK) as u64);
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    std::hint::black_box(checksum);
    let per_s = values as f64 / elapsed;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    Ok(Report {
        title: format!(
            "veil-node bench noise: OpenDP exact samplers (OpenSSL secure RNG), long vectors split over {cores} core(s)"
        ),
        rows: vec![
            (
                "mechanism".into(),
                format!("{} ({})", mechanism.name(), mechanism.params()),
            ),
            ("values".into(), values.to_string()),
            (
                "calls".into(),
                format!(
                    "{} of up to {NOISE_CHUNK} values",
                    values.div_ceil(NOISE_CHUNK)
                ),
            ),
            ("elapsed".into(), format!("{elapsed:.3} s")),
            ("values per second".into(), format!("{per_s:.0}")),
            (
                "1M-parameter update".into(),
                format!("{:.2} s", 1e6 / per_s.max(1e-9)),
            ),
        ],
        figures: vec![Figure {
            name: "noise_values_per_s",
            value: per_s,
            unit: "values/s",
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_tiny_run_reports_figures() {
        let r = pipeline(2_000).expect("pipeline");
        let text = r.render();
        assert!(text.contains("events_per_s "));
        assert!(text.contains("peak_rss_mib "));
    }

    #[test]
    fn noise_mechanism_names_round_trip_and_unknown_ones_are_named() {
        for m in [
            NoiseMechanism::DiscreteGaussian,
            NoiseMechanism::DiscreteLaplace,
            NoiseMechanism::GaussianF32,
        ] {
            assert_eq!(m.name().parse::<NoiseMechanism>().ok(), Some(m));
        }
        let e = "gaussian".parse::<NoiseMechanism>().unwrap_err();
        assert!(e.to_string().contains("\"gaussian\""), "{e}");
    }

    #[test]
    fn noise_tiny_run_reports_figures() {
        for m in [
            NoiseMechanism::DiscreteGaussian,
            NoiseMechanism::DiscreteLaplace,
            NoiseMechanism::GaussianF32,
        ] {
            let r = noise(100, m).expect("noise");
            assert!(r.render().contains("noise_values_per_s "));
        }
    }
}
