//! `veil-aggregator`: command-line entry point.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "veil-aggregator",
    version,
    about = "Veil aggregator: mTLS ingest of DP releases, policy, storage"
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
    /// Serve gRPC until SIGTERM/SIGINT.
    Serve {
        /// Aggregator config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Write a CA, a server certificate, node and role certificates.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Venue name.
        #[arg(long)]
        venue: String,
        /// Number of node certificates (node-1 ... node-N).
        #[arg(long, default_value_t = 3)]
        nodes: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format.as_deref());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Pki {
            command: PkiCommand::Init { out, venue, nodes },
        } => veil_aggregator::pki::init(&out, &venue, nodes)
            .map(|l| {
                println!(
                    "Wrote dev PKI for venue {} ({} nodes) to {}",
                    l.venue,
                    l.nodes.len(),
                    l.dir.display()
                )
            })
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

fn serve(config: PathBuf) -> anyhow::Result<()> {
    let config = veil_aggregator::Config::load(&config)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let bound = veil_aggregator::bind(config).await?;
        println!("listening on {}", bound.local_addr());
        bound.serve(veil_aggregator::shutdown_signal()).await?;
        Ok(())
    })
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
