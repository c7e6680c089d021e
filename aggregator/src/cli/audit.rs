//! `veil-aggregator audit export|verify|keygen`: the tamper-evident audit log.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Export entries with a fresh signed checkpoint (and inclusion proofs for a range).
    Export {
        /// Aggregator config file.
        #[arg(long)]
        config: PathBuf,
        /// Output directory (new or empty; a non-empty one is refused).
        #[arg(long)]
        out: PathBuf,
        /// First sequence number (inclusive).
        #[arg(long, requires = "to")]
        from: Option<u64>,
        /// Last sequence number (inclusive).
        #[arg(long, requires = "from")]
        to: Option<u64>,
    },
    /// Verify an export offline; exits non-zero naming the first thing wrong.
    Verify {
        /// Export directory (entries.jsonl, checkpoint, [proofs.json], [consistency.json]).
        dir: PathBuf,
        /// Verifier key file (`name+keyid+base64`).
        #[arg(long)]
        key: PathBuf,
        /// An earlier checkpoint the export must be consistent with.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Expected log origin (default: the key's name).
        #[arg(long)]
        origin: Option<String>,
    },
    /// Generate a checkpoint signing key and its verifier key.
    Keygen {
        /// Private key output (written 0600).
        #[arg(long)]
        key: PathBuf,
        /// Verifier key output.
        #[arg(long)]
        vkey: PathBuf,
        /// Key name (the log origin).
        #[arg(long, default_value = veil_aggregator::pki::AUDIT_KEY_NAME)]
        name: String,
    },
}

/// Runs an `audit` subcommand.
pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Export {
            config,
            out,
            from,
            to,
        } => super::with_config(&config, |cfg| async move {
            veil_aggregator::commands::audit_export(&cfg, &out, from.zip(to)).await
        }),
        AuditCommand::Verify {
            dir,
            key,
            previous,
            origin,
        } => {
            let s = veil_aggregator::commands::audit_verify(
                &dir,
                &key,
                previous.as_deref(),
                origin.as_deref(),
            )?;
            println!("{s}");
            Ok(())
        }
        AuditCommand::Keygen { key, vkey, name } => {
            veil_aggregator::pki::audit_keygen(&key, &vkey, &name)?;
            println!("Wrote {} (0600) and {}", key.display(), vkey.display());
            Ok(())
        }
    }
}
