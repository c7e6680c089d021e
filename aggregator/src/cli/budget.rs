//! `veil-aggregator budget show`: spent and remaining budget of a venue.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BudgetCommand {
    /// Spent and remaining budget per metric and purpose.
    Show {
        /// Aggregator config file.
        #[arg(long)]
        config: PathBuf,
        /// Venue.
        #[arg(long)]
        venue: String,
        /// Event day, YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        day: Option<String>,
    },
}

/// Runs a `budget` subcommand.
pub fn run(command: BudgetCommand) -> anyhow::Result<()> {
    let BudgetCommand::Show { config, venue, day } = command;
    super::with_config(&config, |cfg| async move {
        veil_aggregator::commands::budget_show(&cfg, &venue, day.as_deref()).await
    })
}
