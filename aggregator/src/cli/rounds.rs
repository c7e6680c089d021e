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
        /// Event day (YYYY-MM-DD) of the data the nodes train on; venue
        /// ledgers are charged on it (default: today, UTC).
        #[arg(long)]
        event_day: Option<String>,
        /// Secure aggregation (SecAgg+): the aggregator sees only the sum.
        #[arg(long)]
        secure: bool,
        /// Secure rounds: Shamir threshold per neighbourhood (default: the
        /// graph's).
        #[arg(long, requires = "secure")]
        threshold: Option<u32>,
        /// Secure rounds: longest time each stage stays open (default: a
        /// quarter of the deadline).
        #[arg(long, requires = "secure")]
        stage_timeout: Option<humantime::Duration>,
        /// Secure rounds: close the key advertisements once this many nodes
        /// advertised (default: every registered node).
        #[arg(long, requires = "secure")]
        target_nodes: Option<u32>,
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
        event_day,
        secure,
        threshold,
        stage_timeout,
        target_nodes,
    } = c;
    super::with_config(&config, |cfg| async move {
        let registered: usize = cfg.venues.iter().map(|v| v.nodes.len()).sum();
        let p = veil_aggregator::rounds::OpenParams {
            model,
            min_nodes,
            clip_norm: clip,
            noise_multiplier,
            local_steps,
            learning_rate: lr,
            deadline: deadline.into(),
            secure: secure.then(|| veil_aggregator::rounds::SecureOpen {
                threshold,
                stage_timeout: stage_timeout.map(Into::into),
                n_max: u32::try_from(registered).unwrap_or(u32::MAX),
                target_nodes,
            }),
            event_day,
        };
        veil_aggregator::rounds::cli::rounds_open(&cfg, p)
            .await
            .map_err(|e| anyhow::anyhow!(e))
    })
}
