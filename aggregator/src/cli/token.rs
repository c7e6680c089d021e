//! `veil-aggregator token issue|revoke|list`: organizer dashboard tokens,
//! written to the aggregator's database directly (a running aggregator sees
//! them on the next request; nothing needs a restart).

use std::path::PathBuf;

use veil_aggregator::{Config, dashboard::tokens, storage::Storage};

/// Runs a `token` subcommand.
pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    let path = command.config().to_path_buf();
    super::with_config(&path, |cfg| async move { run_with(&cfg, command).await })
}

/// `veil-aggregator token ...`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Issue a venue-scoped organizer token; prints it once (only its
    /// SHA-256 is stored).
    Issue {
        /// Aggregator config file.
        #[arg(long)]
        config: PathBuf,
        /// Venue the token may see.
        #[arg(long)]
        venue: String,
        /// Lifetime (at most 31 days).
        #[arg(long, default_value = "12h")]
        ttl: humantime::Duration,
        /// Who or what it is for (shown by `token list`).
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a token by its id (the `veil_<id>_` part, or from `token list`).
    Revoke {
        /// Aggregator config file.
        #[arg(long)]
        config: PathBuf,
        /// Token id (16 hex digits).
        #[arg(long)]
        id: String,
    },
    /// List tokens (never their secrets).
    List {
        /// Aggregator config file.
        #[arg(long)]
        config: PathBuf,
        /// Only this venue's.
        #[arg(long)]
        venue: Option<String>,
    },
}

impl TokenCommand {
    /// The config file the command names.
    fn config(&self) -> &std::path::Path {
        match self {
            TokenCommand::Issue { config, .. }
            | TokenCommand::Revoke { config, .. }
            | TokenCommand::List { config, .. } => config,
        }
    }
}

fn ms_to_rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Runs a token command on the database of `cfg`; returns what to print.
async fn run_with(cfg: &Config, cmd: TokenCommand) -> anyhow::Result<String> {
    let storage = Storage::open(&cfg.database_url()).await?;
    let now = veil_common::now_ms();
    let out = match cmd {
        TokenCommand::Issue {
            venue, ttl, label, ..
        } => {
            if !cfg.venues.iter().any(|v| v.name == venue) {
                anyhow::bail!("--venue {venue:?} is not a venue of this aggregator's config");
            }
            let t =
                tokens::issue(storage.unaudited_tables(), &venue, &label, ttl.into(), now).await?;
            let url = cfg
                .dashboard
                .as_ref()
                .map(|d| format!("https://{}/?token={}", d.listen, t.token));
            format!(
                "Issued dashboard token {} for venue {} (expires {}). It is shown only now; \
                 only its SHA-256 is stored.\n{}\n{}",
                t.id,
                t.venue,
                ms_to_rfc3339(t.expires_ms),
                t.token,
                url.map(|u| format!("dashboard: {u}")).unwrap_or_default()
            )
        }
        TokenCommand::Revoke { id, .. } => {
            if tokens::revoke(storage.unaudited_tables(), &id, now).await? {
                format!("Revoked dashboard token {id}.")
            } else {
                anyhow::bail!("no unrevoked token with id {id:?}")
            }
        }
        TokenCommand::List { venue, .. } => {
            use std::fmt::Write as _;
            let mut s = format!(
                "{:<16} {:<12} {:<25} {:<25} {:<9} label\n",
                "id", "venue", "created", "expires", "state"
            );
            for t in tokens::list(storage.reads(), venue.as_deref()).await? {
                let state = if t.revoked_ms != 0 {
                    "revoked"
                } else if t.expires_ms <= now {
                    "expired"
                } else {
                    "valid"
                };
                writeln!(
                    s,
                    "{:<16} {:<12} {:<25} {:<25} {:<9} {}",
                    t.id,
                    t.venue,
                    ms_to_rfc3339(t.created_ms),
                    ms_to_rfc3339(t.expires_ms),
                    state,
                    t.label
                )?;
            }
            s
        }
    };
    storage.close().await;
    Ok(out)
}
