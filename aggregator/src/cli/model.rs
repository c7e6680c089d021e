//! `veil-aggregator model pull|import`: published federated model versions.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write model.safetensors and model_card.json of a version to DIR.
    Pull {
        /// Read from this aggregator's database directly.
        #[arg(long, conflicts_with = "endpoint")]
        config: Option<PathBuf>,
        /// Or pull over mTLS gRPC (role ml) from this endpoint.
        #[arg(long, requires_all = ["cert", "key", "ca"])]
        endpoint: Option<String>,
        /// Client certificate (PEM) of an ml principal.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Client key (PEM).
        #[arg(long)]
        key: Option<PathBuf>,
        /// CA certificate (PEM).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Model name.
        #[arg(long)]
        name: String,
        /// Version (default: latest).
        #[arg(long)]
        version: Option<u32>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Store a safetensors file as the next version of a model (e.g. the
    /// node's shipped initial weights), with an optional public eval set.
    Import {
        /// Aggregator config file.
        #[arg(long)]
        config: PathBuf,
        /// Model name.
        #[arg(long)]
        name: String,
        /// Weights (safetensors).
        #[arg(long)]
        file: PathBuf,
        /// Public evaluation set (safetensors with x and y).
        #[arg(long)]
        eval: Option<PathBuf>,
    },
}

/// Runs a `model` subcommand.
pub fn run(c: ModelCommand) -> anyhow::Result<()> {
    use veil_aggregator::rounds::cli;
    match c {
        ModelCommand::Import {
            config,
            name,
            file,
            eval,
        } => super::with_config(&config, |cfg| async move {
            cli::model_import(&cfg, &name, &file, eval.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!(e))
        }),
        ModelCommand::Pull {
            config: Some(config),
            name,
            version,
            out,
            ..
        } => super::with_config(&config, |cfg| async move {
            cli::model_pull_local(&cfg, &name, version, &out)
                .await
                .map_err(|e| anyhow::anyhow!(e))
        }),
        ModelCommand::Pull {
            config: None,
            endpoint,
            cert,
            key,
            ca,
            name,
            version,
            out,
        } => {
            let (Some(endpoint), Some(cert), Some(key), Some(ca)) = (endpoint, cert, key, ca)
            else {
                anyhow::bail!(
                    "model pull needs --config FILE, or --endpoint with --cert, --key and --ca"
                );
            };
            let rt = tokio::runtime::Runtime::new()?;
            let tls = cli::PullTls {
                ca: &ca,
                cert: &cert,
                key: &key,
                server_name: "localhost",
            };
            let s = rt
                .block_on(cli::model_pull_remote(&endpoint, tls, &name, version, &out))
                .map_err(|e| anyhow::anyhow!(e))?;
            println!("{s}");
            Ok(())
        }
    }
}
