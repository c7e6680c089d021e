//! `veil-node`: command-line entry point.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use veil_node::simulate::{SimConfig, Simulation, VenueKind};

#[derive(Parser)]
#[command(
    name = "veil-node",
    version,
    about = "Veil edge node: sensor events in, DP releases out over mTLS"
)]
struct Cli {
    /// Log format: "text" or "json" (default: json when stderr is not a terminal).
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Privacy tools.
    Privacy {
        #[command(subcommand)]
        command: PrivacyCommand,
    },
    /// Run the pipeline on the configured input until it ends (or SIGTERM).
    Run {
        /// Node config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Show outbox depth, oldest pending window, last successful upload and
    /// connection state (exits 0 even when the aggregator is unreachable).
    Status {
        /// Node config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Generate deterministic venue events (JSON Lines) and ground truth.
    Simulate {
        /// Venue kind: arena, festival or conference.
        #[arg(long, default_value = "arena")]
        venue: String,
        /// RNG seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Event length, e.g. "2h" or "20m".
        #[arg(long, default_value = "2h")]
        duration: humantime::Duration,
        /// Start time (RFC 3339) of the event.
        #[arg(long, default_value = "2026-06-01T17:00:00Z")]
        start: String,
        /// Nodes the venue's zones are split across.
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// Which node's events to write (1-based).
        #[arg(long, default_value_t = 1)]
        node: u32,
        /// Attendees (default depends on the venue kind).
        #[arg(long)]
        attendees: Option<u32>,
        /// Output file for events ("-" for stdout).
        #[arg(long)]
        out: PathBuf,
        /// Also write per-zone, per-minute ground truth (JSON Lines) here.
        #[arg(long)]
        ground_truth: Option<PathBuf>,
    },
    /// On-device models.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Parse + validate + window + bound + plan + noise of simulator events,
    /// one thread, no network (arena policy, fake lease ids).
    Pipeline {
        /// Events (input lines) processed.
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
    },
    /// The production noise path (OpenDP exact samplers).
    Noise {
        /// Values noised.
        #[arg(long, default_value_t = 200_000)]
        values: usize,
        /// discrete-gaussian, discrete-laplace or gaussian-f32 (model updates).
        #[arg(long, default_value = "discrete-gaussian")]
        mechanism: String,
    },
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Train the initial audio classifier and occupancy forecaster from the
    /// simulator and write their safetensors files (node/models is embedded).
    TrainInitial {
        /// Output directory.
        #[arg(long, default_value = "node/models")]
        out: PathBuf,
        /// Seed of the simulated training data.
        #[arg(long, default_value_t = 11)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum PrivacyCommand {
    /// Print N releases of VALUE, one integer per line, through the exact
    /// production code path, so anyone can test the mechanism empirically.
    Sample {
        /// discrete-laplace (needs --epsilon) or discrete-gaussian (needs --rho).
        #[arg(long)]
        mechanism: String,
        /// Pure DP epsilon (discrete-laplace).
        #[arg(long, conflicts_with = "rho")]
        epsilon: Option<f64>,
        /// zCDP rho (discrete-gaussian).
        #[arg(long)]
        rho: Option<f64>,
        /// Sensitivity of the count.
        #[arg(long, default_value_t = 1)]
        sensitivity: u32,
        /// The true value.
        #[arg(long)]
        value: i64,
        /// Number of releases.
        #[arg(long)]
        n: usize,
    },
    /// Print RUNS releases of a whole continual-release stream (one line
    /// each: T comma-separated running totals) through the node's production
    /// code path and calibration, so anyone can test the attendee-day
    /// guarantee empirically.
    StreamSample {
        /// Steps T (windows in the day); FILE must have exactly T lines.
        #[arg(long)]
        steps: u32,
        /// zCDP rho of the stream-day per attendee (joint over a node's zones).
        #[arg(long)]
        rho: f64,
        /// V: zone visits per attendee-day (the node calibrates to 2V events).
        #[arg(long)]
        max_visits: u32,
        /// K: visits to this one zone; only changes the guarantee stated for
        /// this stream alone (2 min(K, V) events), not the noise.
        #[arg(long)]
        max_zone_visits: Option<u32>,
        /// sqrt (square-root factorization, the default) or tree.
        #[arg(long, default_value = "sqrt")]
        mechanism: String,
        /// Independent runs.
        #[arg(long)]
        runs: usize,
        /// T lines: the zone's exact net change at each step (an integer).
        #[arg(long)]
        input: PathBuf,
    },
}

#[allow(clippy::too_many_arguments)]
fn privacy_stream_sample(
    steps: u32,
    rho: f64,
    max_visits: u32,
    max_zone_visits: Option<u32>,
    mechanism: &str,
    runs: usize,
    input: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    use veil_privacy::mechanisms::{Contribution, StreamMechanism, StreamParams};
    let mech = match mechanism {
        "sqrt" => StreamMechanism::SqrtFactorization,
        "tree" => StreamMechanism::Tree,
        other => anyhow::bail!("unknown --mechanism {other:?}: use sqrt or tree"),
    };
    if !(1..=1000).contains(&max_visits) {
        anyhow::bail!("--max-visits must be in 1..=1000");
    }
    if let Some(k) = max_zone_visits
        && !(1..=max_visits).contains(&k)
    {
        anyhow::bail!("--max-zone-visits must be in 1..=--max-visits");
    }
    if runs == 0 || runs > 1_000_000 {
        anyhow::bail!("--runs must be in 1..=1000000");
    }
    let text = std::fs::read_to_string(input)
        .map_err(|e| anyhow::anyhow!("reading --input {}: {e}", input.display()))?;
    let mut increments = Vec::with_capacity(steps as usize);
    for (i, line) in text.lines().enumerate() {
        let v: i64 = line.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "--input {} line {}: expected an integer (the zone's net change at that step)",
                input.display(),
                i + 1
            )
        })?;
        increments.push(v);
    }
    if increments.len() != steps as usize {
        anyhow::bail!(
            "--input {} has {} lines, --steps says {steps}",
            input.display(),
            increments.len()
        );
    }
    let rho = veil_privacy::Rho::new(rho)?;
    let params = StreamParams::new(
        mech,
        steps,
        Contribution::Alternating {
            events: max_visits * 2,
        },
        rho,
    )?;
    let cal = params.calibrate()?;
    let k = max_zone_visits.unwrap_or(max_visits).min(max_visits);
    eprintln!(
        "{} stream, T = {steps}, calibrated as a node calibrates presence under V = {max_visits}: E = {} events, noise sigma {:.4} (encoded x{}), std of the running total up to {:.3}; the stream-day costs rho {} per attendee jointly over a node's zones, this zone's stream alone (at most {} events, K = {k}) rho {:.6}",
        mech.as_str(),
        2 * max_visits,
        cal.sigma(),
        cal.gamma(),
        cal.max_std(),
        rho.get(),
        2 * k,
        rho.get() * f64::from(k) / f64::from(max_visits),
    );
    let out = veil_node::release::stream_sample(mech, rho, max_visits, &increments, runs)?;
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    for run in out {
        let line: Vec<String> = run.iter().map(|v| v.to_string()).collect();
        writeln!(w, "{}", line.join(","))?;
    }
    w.flush()?;
    Ok(())
}

fn privacy_sample(
    mechanism: &str,
    epsilon: Option<f64>,
    rho: Option<f64>,
    sensitivity: u32,
    value: i64,
    n: usize,
) -> anyhow::Result<()> {
    use std::io::Write;
    use veil_privacy::sample::{SampleMechanism, sample};
    let m = match (mechanism, epsilon, rho) {
        ("discrete-laplace", Some(e), None) => SampleMechanism::DiscreteLaplace {
            epsilon: veil_privacy::Epsilon::new(e)?,
        },
        ("discrete-gaussian", None, Some(r)) => SampleMechanism::DiscreteGaussian {
            rho: veil_privacy::Rho::new(r)?,
        },
        ("discrete-laplace", _, _) => {
            anyhow::bail!("--mechanism discrete-laplace needs --epsilon (and no --rho)")
        }
        ("discrete-gaussian", _, _) => {
            anyhow::bail!("--mechanism discrete-gaussian needs --rho (and no --epsilon)")
        }
        (other, _, _) => anyhow::bail!(
            "unknown --mechanism {other:?}: use discrete-laplace or discrete-gaussian"
        ),
    };
    let out = sample(m, sensitivity, value, n)?;
    let mut w = std::io::BufWriter::new(std::io::stdout().lock());
    for v in out {
        writeln!(w, "{v}")?;
    }
    w.flush()?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    veil_common::init_tracing(cli.log_format.as_deref(), "info");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::Status { config } => status(config),
        Command::Privacy {
            command:
                PrivacyCommand::Sample {
                    mechanism,
                    epsilon,
                    rho,
                    sensitivity,
                    value,
                    n,
                },
        } => privacy_sample(&mechanism, epsilon, rho, sensitivity, value, n),
        Command::Privacy {
            command:
                PrivacyCommand::StreamSample {
                    steps,
                    rho,
                    max_visits,
                    max_zone_visits,
                    mechanism,
                    runs,
                    input,
                },
        } => privacy_stream_sample(
            steps,
            rho,
            max_visits,
            max_zone_visits,
            &mechanism,
            runs,
            &input,
        ),
        Command::Simulate {
            venue,
            seed,
            duration,
            start,
            nodes,
            node,
            attendees,
            out,
            ground_truth,
        } => simulate(
            venue,
            seed,
            duration.into(),
            &start,
            nodes,
            node,
            attendees,
            out,
            ground_truth,
        ),
        Command::Model(ModelCommand::TrainInitial { out, seed }) => train_initial(&out, seed),
        Command::Bench(BenchCommand::Pipeline { events }) => {
            { veil_node::bench::pipeline(events).map(|r| print!("{}", r.render())) }
                .map_err(anyhow::Error::from)
        }
        Command::Bench(BenchCommand::Noise { values, mechanism }) => mechanism
            .parse()
            .and_then(|m| veil_node::bench::noise(values, m))
            .map(|r| print!("{}", r.render()))
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn train_initial(out: &std::path::Path, seed: u64) -> anyhow::Result<()> {
    let r = veil_node::inference::train::train_initial(out, seed)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "audio-classifier held-out accuracy {:.3}, occupancy-forecaster held-out mse {:.4}, {} + {} bytes in {}",
        r.audio_accuracy,
        r.forecaster_mse,
        r.bytes.0,
        r.bytes.1,
        out.display()
    );
    Ok(())
}

fn status(config: PathBuf) -> anyhow::Result<()> {
    let cfg = veil_node::Config::load(&config)?;
    let rt = tokio::runtime::Runtime::new()?;
    let st = rt.block_on(veil_node::run::status(
        &cfg,
        std::time::Duration::from_secs(3),
    ))?;
    print!("{}", st.render());
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}

fn run(config: PathBuf) -> anyhow::Result<()> {
    let cfg = veil_node::Config::load(&config)?;
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(veil_node::run(cfg, veil_common::shutdown_signal()));
    // A blocking stdin read must not hold the exit after shutdown.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    let report = report?;
    println!(
        "lines {} invalid {} releases {} accepted {} duplicate {} rejected {} outbox_depth {} corrupt {} outbox_full_waits {} inference_windows {} inference_skipped {} inference_p50_us {} inference_p99_us {} local_alerts {}",
        report.lines,
        report.invalid_lines,
        report.releases,
        report.upload.accepted,
        report.upload.duplicate,
        report.upload.rejected,
        report.outbox_depth,
        report.outbox_corrupt + report.upload.corrupt,
        report.outbox_full_waits,
        report.inference.windows,
        report.inference.skipped,
        report.inference.latency_p50_us,
        report.inference.latency_p99_us,
        report.inference.alerts_raised.values().sum::<u64>()
    );
    let bounded: veil_node::units::UnitStats =
        report.units.iter().fold(Default::default(), |mut a, u| {
            a.add(u);
            a
        });
    println!(
        "already_released_events {} stream_leases {} unit_events_bounded {} ({:.2}%)",
        report.windows.already_released,
        report.stream_leases,
        bounded.bounded,
        100.0 * bounded.bounded_share()
    );
    if report.windows.already_released > 0 && report.releases == 0 {
        println!(
            "Nothing new to release: every window of this input was released before (its noise drawn and its budget charged then); nothing was sent or charged again."
        );
    }
    if let Some(c) = report.attendee_day {
        println!(
            "Attendee-day guarantee of the venue's policy: epsilon {:.3} per attendee and event day ({} nodes x rho {:.4}).",
            c.epsilon, c.nodes, c.rho_per_node
        );
    }
    for bad in &report.first_invalid {
        println!("invalid line {}: {}", bad.line, bad.reason);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn simulate(
    venue: String,
    seed: u64,
    duration: std::time::Duration,
    start: &str,
    nodes: u32,
    node: u32,
    attendees: Option<u32>,
    out: PathBuf,
    ground_truth: Option<PathBuf>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let venue: VenueKind = venue.parse()?;
    let start = time::OffsetDateTime::parse(start, &time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow::anyhow!("--start: not RFC 3339: {e}"))?;
    if node == 0 || node > nodes {
        anyhow::bail!("--node must be in 1..={nodes}");
    }
    let mut cfg = SimConfig::new(
        venue,
        seed,
        duration,
        (start.unix_timestamp_nanos() / 1_000_000) as i64,
    );
    cfg.nodes = nodes;
    cfg.attendees = attendees;
    let sim = Simulation::new(cfg)?;
    let stats = if out.as_os_str() == "-" {
        let mut w = std::io::BufWriter::new(std::io::stdout().lock());
        let s = sim.write_events(node - 1, &mut w)?;
        w.flush()?;
        s
    } else {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&out)?);
        let s = sim.write_events(node - 1, &mut w)?;
        w.flush()?;
        s
    };
    if let Some(gt) = ground_truth {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&gt)?);
        sim.write_ground_truth(Some(node - 1), &mut w)?;
        w.flush()?;
    }
    eprintln!(
        "wrote {} events ({} malformed on purpose)",
        stats.events, stats.malformed
    );
    Ok(())
}
