//! `veil-node run`: the pipeline on the configured input, and its summary.

use std::path::PathBuf;

/// `veil-node run` arguments.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Node config file (TOML).
    #[arg(long)]
    config: PathBuf,
}

/// Runs the node until its input ends (or SIGTERM) and prints the summary.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let cfg = veil_node::Config::load(&args.config)?;
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
        "already_released_events {} late_events {} stream_leases {} unit_events_bounded {} ({:.2}%)",
        report.windows.already_released,
        report.windows.late,
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
