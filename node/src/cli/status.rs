//! `veil-node status`: outbox depth, oldest pending window, last upload and
//! connection state.

use std::path::PathBuf;

/// `veil-node status` arguments.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// Node config file (TOML).
    #[arg(long)]
    config: PathBuf,
}

/// Prints the node's status (exits 0 even when the aggregator is
/// unreachable).
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let cfg = veil_node::Config::load(&args.config)?;
    let rt = tokio::runtime::Runtime::new()?;
    let st = rt.block_on(veil_node::run::status(
        &cfg,
        std::time::Duration::from_secs(3),
    ))?;
    print!("{}", st.render());
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    Ok(())
}
