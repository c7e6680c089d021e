//! `veil-aggregator token issue|revoke|list`: organizer dashboard tokens.

pub use veil_aggregator::dashboard::cli::TokenCommand;

/// Runs a `token` subcommand.
pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    let path = command.config().to_path_buf();
    super::with_config(&path, |cfg| async move {
        veil_aggregator::dashboard::cli::run(&cfg, command).await
    })
}
