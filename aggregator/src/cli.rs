//! The command line: one module per subcommand, each with its arguments
//! and its `run`. Private to the binary.

mod audit;
mod bench;
mod budget;
mod model;
mod pki;
mod policy;
mod report;
mod rounds;
mod serve;
mod token;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "veil-aggregator",
    version,
    about = "Veil aggregator: mTLS ingest of DP releases, policy, storage"
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
    /// Serve gRPC until SIGTERM/SIGINT.
    Serve(serve::ServeArgs),
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        command: pki::PkiCommand,
    },
    /// Consent/privacy policies.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// The privacy-budget ledger.
    Budget {
        #[command(subcommand)]
        command: budget::BudgetCommand,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Federated training rounds.
    Rounds {
        #[command(subcommand)]
        command: rounds::RoundsCommand,
    },
    /// Published federated model versions.
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
    },
    /// Organizer dashboard tokens.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Post-event report as one self-contained HTML file.
    Report(report::ReportArgs),
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

impl Cli {
    /// Runs the chosen subcommand.
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve(args) => serve::run(args),
            Command::Pki { command } => pki::run(command),
            Command::Policy { command } => policy::run(command),
            Command::Budget { command } => budget::run(command),
            Command::Audit { command } => audit::run(command),
            Command::Rounds { command } => rounds::run(command),
            Command::Model { command } => model::run(command),
            Command::Token { command } => token::run(command),
            Command::Report(args) => report::run(args),
            Command::Bench { command } => bench::run(command),
        }
    }
}

/// Loads the config and runs an async command that returns what to print.
fn with_config<F, Fut>(config: &std::path::Path, f: F) -> anyhow::Result<()>
where
    F: FnOnce(veil_aggregator::Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let cfg = veil_aggregator::Config::load(config)?;
    let rt = tokio::runtime::Runtime::new()?;
    let out = rt.block_on(f(cfg))?;
    println!("{}", out.trim_end());
    Ok(())
}
