//! `veil-node bench pipeline|noise`: benchmarks that print figures.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
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

/// Runs a `bench` subcommand.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    let report = match command {
        BenchCommand::Pipeline { events } => veil_node::bench::pipeline(events)?,
        BenchCommand::Noise { values, mechanism } => {
            veil_node::bench::noise(values, mechanism.parse()?)?
        }
    };
    print!("{}", report.render());
    Ok(())
}
