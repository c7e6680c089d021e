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
    /// Run the pipeline on the configured input until it ends (or SIGTERM).
    Run {
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format.as_deref());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Run { config } => run(config),
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: PathBuf) -> anyhow::Result<()> {
    let cfg = veil_node::Config::load(&config)?;
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(veil_node::run(cfg, shutdown_signal()))?;
    println!(
        "lines {} invalid {} releases {} accepted {} duplicate {} rejected {} outbox_depth {}",
        report.lines,
        report.invalid_lines,
        report.releases,
        report.upload.accepted,
        report.upload.duplicate,
        report.upload.rejected,
        report.outbox_depth
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

async fn shutdown_signal() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}

/// Installs the tracing subscriber: `RUST_LOG` filter (default info), JSON
/// when asked or when stderr is not a terminal.
fn init_tracing(format: Option<&str>) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        Some(f) => f == "json",
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
