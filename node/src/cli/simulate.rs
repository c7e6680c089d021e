//! `veil-node simulate`: deterministic venue events (JSON Lines) and
//! ground truth.

use std::{io::Write as _, path::PathBuf};

use veil_node::simulate::{SimConfig, Simulation, VenueKind};

/// `veil-node simulate` arguments.
#[derive(clap::Args)]
pub struct SimulateArgs {
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
}

/// Writes the chosen node's events (and optionally the ground truth).
pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let SimulateArgs {
        venue,
        seed,
        duration,
        start,
        nodes,
        node,
        attendees,
        out,
        ground_truth,
    } = args;
    let duration: std::time::Duration = duration.into();
    let venue: VenueKind = venue.parse()?;
    let start = time::OffsetDateTime::parse(&start, &time::format_description::well_known::Rfc3339)
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
