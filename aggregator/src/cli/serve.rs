//! `veil-aggregator serve --config FILE`: serve gRPC (and the dashboard and
//! metrics listeners, when configured) until SIGTERM/SIGINT.

use std::path::PathBuf;

use clap::Args;

/// Serve gRPC until SIGTERM/SIGINT.
#[derive(Args)]
pub struct ServeArgs {
    /// Aggregator config file (TOML).
    #[arg(long)]
    config: PathBuf,
}

/// Binds, prints the address, serves until a shutdown signal.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = veil_aggregator::Config::load(&args.config)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let bound = veil_aggregator::bind(config).await?;
        println!("listening on {}", bound.local_addr());
        bound.serve(veil_aggregator::shutdown_signal()).await?;
        Ok(())
    })
}
