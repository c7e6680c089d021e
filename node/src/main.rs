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
