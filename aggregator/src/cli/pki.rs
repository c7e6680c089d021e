//! `veil-aggregator pki init|revoke`: a development PKI and its CRL.

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
    /// Revoke a certificate: add it to DIR/crl.pem, signed by DIR's CA. An
    /// aggregator whose `tls.crls` names that file refuses it from its next
    /// handshake, without a restart.
    Revoke {
        /// The PKI directory (holds ca.pem, ca.key and crl.pem).
        #[arg(long)]
        dir: PathBuf,
        /// The certificate to revoke (PEM).
        #[arg(long)]
        cert: PathBuf,
    },
}

/// Runs a `pki` subcommand.
pub fn run(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init { out, venue, nodes } => {
            let l = veil_aggregator::pki::init(&out, &venue, nodes)?;
            println!(
                "Wrote dev PKI for venue {} ({} nodes) to {}",
                l.venue,
                l.nodes.len(),
                l.dir.display()
            );
        }
        PkiCommand::Revoke { dir, cert } => {
            let (serial, n) = veil_aggregator::pki::revoke(&dir, &cert)?;
            println!(
                "Revoked {} (serial {serial}); {} now lists {n} certificate(s)",
                cert.display(),
                dir.join(veil_aggregator::pki::CRL_FILE).display()
            );
        }
    }
    Ok(())
}
