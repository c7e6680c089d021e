//! `veil-aggregator rounds open`: federated training rounds.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum RoundsCommand {
    /// Open a federated round on the latest version of a model.
    Open {
        /// Aggregator config file.
        #[arg(long)]
        config: PathBuf,
        /// Model name.
        #[arg(long)]
        model: String,
        /// Minimum participants.
        #[arg(long)]
        min_nodes: u32,
        /// L2 clip norm C of each update.
        #[arg(long)]
        clip: f64,
        /// Noise multiplier z (the summed noise has std z*C).
        #[arg(long)]
        noise_multiplier: f64,
        /// Local SGD steps per node.
        #[arg(long)]
        local_steps: u32,
        /// Local learning rate.
        #[arg(long)]
        lr: f64,
        /// Deadline from now, e.g. "10m".
        #[arg(long, default_value = "10m")]
        deadline: humantime::Duration,
    },
}

/// Runs a `rounds` subcommand.
pub fn run(c: RoundsCommand) -> anyhow::Result<()> {
    let RoundsCommand::Open {
        config,
        model,
        min_nodes,
        clip,
        noise_multiplier,
        local_steps,
        lr,
        deadline,
    } = c;
    super::with_config(&config, |cfg| async move {
        let p = veil_aggregator::rounds::OpenParams {
            model,
            min_nodes,
            clip_norm: clip,
            noise_multiplier,
            local_steps,
            learning_rate: lr,
            deadline: deadline.into(),
        };
        veil_aggregator::rounds::cli::rounds_open(&cfg, p)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    })
}
