//! `veil-aggregator pki init`: a development PKI.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PkiCommand {
    /// Write a CA, a server certificate, node and role certificates.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Venue name.
        #[arg(long)]
        venue: String,
        /// Number of node certificates (node-1 ... node-N).
        #[arg(long, default_value_t = 3)]
        nodes: u32,
    },
}

/// Runs a `pki` subcommand.
pub fn run(command: PkiCommand) -> anyhow::Result<()> {
    let PkiCommand::Init { out, venue, nodes } = command;
    let l = veil_aggregator::pki::init(&out, &venue, nodes)?;
    println!(
        "Wrote dev PKI for venue {} ({} nodes) to {}",
        l.venue,
        l.nodes.len(),
        l.dir.display()
    );
    Ok(())
}
