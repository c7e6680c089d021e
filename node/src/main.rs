//! `veil-node`: parses the command line, installs tracing and the rustls
//! crypto provider, and dispatches to one module per subcommand (`cli/`).

use std::process::ExitCode;

use clap::Parser as _;

mod cli;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    veil_common::init_tracing(cli.log_format.as_deref(), "info");
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
