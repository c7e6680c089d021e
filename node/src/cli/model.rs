//! `veil-node model train-initial`: the on-device models' initial weights.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Train the initial audio classifier and occupancy forecaster from the
    /// simulator and write their safetensors files (node/models is embedded).
    TrainInitial {
        /// Output directory.
        #[arg(long, default_value = "node/models")]
        out: PathBuf,
        /// Seed of the simulated training data.
        #[arg(long, default_value_t = 11)]
        seed: u64,
    },
}

/// Runs a `model` subcommand.
pub fn run(command: ModelCommand) -> anyhow::Result<()> {
    let ModelCommand::TrainInitial { out, seed } = command;
    let r = veil_node::inference::train::train_initial(&out, seed)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "audio-classifier held-out accuracy {:.3}, occupancy-forecaster held-out mse {:.4}, {} + {} bytes in {}",
        r.audio_accuracy,
        r.forecaster_mse,
        r.bytes.0,
        r.bytes.1,
        out.display()
    );
    Ok(())
}
