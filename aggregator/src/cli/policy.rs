//! `veil-aggregator policy check FILE`: validate a policy file.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file; print its hash and a plain-language summary.
    Check {
        /// Policy file (TOML).
        file: PathBuf,
    },
}

/// Runs a `policy` subcommand.
pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    let PolicyCommand::Check { file } = command;
    print!("{}", veil_aggregator::commands::policy_check(&file)?);
    Ok(())
}
