//! The command line: one module per subcommand, each with its arguments
//! and its `run`. Private to the binary.

mod bench;
mod model;
mod privacy;
mod run;
mod simulate;
mod status;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "veil-node",
    version,
    about = "Veil edge node: sensor events in, DP releases out over mTLS"
)]
pub struct Cli {
    /// Log format: "text" or "json" (default: json when stderr is not a terminal).
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Privacy tools.
    Privacy {
        #[command(subcommand)]
        command: privacy::PrivacyCommand,
    },
    /// Run the pipeline on the configured input until it ends (or SIGTERM).
    Run(run::RunArgs),
    /// Show outbox depth, oldest pending window, last successful upload and
    /// connection state (exits 0 even when the aggregator is unreachable).
    Status(status::StatusArgs),
    /// Generate deterministic venue events (JSON Lines) and ground truth.
    Simulate(simulate::SimulateArgs),
    /// On-device models.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Benchmarks that print figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Privacy { command } => privacy::run(command),
            Command::Run(args) => run::run(args),
            Command::Status(args) => status::run(args),
            Command::Simulate(args) => simulate::run(args),
            Command::Model(command) => model::run(command),
            Command::Bench(command) => bench::run(command),
        }
    }
}
