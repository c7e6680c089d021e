//! `veil-aggregator`: command-line entry point.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: ingest allocates and frees many small
/// buffers per release on several threads, and glibc spent a fifth of the
/// server's CPU in `malloc`/`free` (fastbin consolidation) under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "veil-aggregator",
    version,
    about = "Veil aggregator: mTLS ingest of DP releases, policy, storage"
)]
struct Cli {
    /// Log format: "text" or "json" (default: json when stderr is not a terminal).
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC until SIGTERM/SIGINT.
    Serve {
        /// Aggregator config file (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Development PKI.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Consent/privacy policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The privacy-budget ledger.
    Budget {
        #[command(subcommand)]
        command: BudgetCommand,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Federated training rounds.
    Rounds {
        #[command(subcommand)]
        command: RoundsCommand,
    },
    /// Published federated model versions.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// Organizer dashboard tokens (issue 9).
    Token {
        #[command(subcommand)]
        command: veil_aggregator::dashboard::cli::TokenCommand,
    },
    /// Post-event report as one self-contained HTML file (issue 9).
    Report(veil_aggregator::report::ReportArgs),
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum RoundsCommand {
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

#[derive(Subcommand)]
enum ModelCommand {
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

#[derive(Subcommand)]
enum BenchCommand {
    /// FedAvg kernel throughput and per-round time.
    Fedavg {
        /// Updates averaged.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Parameters per update.
        #[arg(long, default_value_t = 1_000_000)]
        params: usize,
    },
    /// Durable ingest throughput and ack latency: an in-process aggregator
    /// on loopback and N concurrent mTLS node clients.
    Ingest {
        /// Concurrent node clients.
        #[arg(long, default_value_t = 100)]
        nodes: u32,
        /// Seconds the clients submit for.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Releases per SubmitReleases call.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Database: "sqlite" (a temporary file) or a PostgreSQL server
        /// URL, on which a temporary database is created and dropped.
        #[arg(long, default_value = "sqlite")]
        db: String,
        /// Aggregator replicas sharing the database (PostgreSQL only).
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// `ingest.group_max_releases` of the bench aggregator (default:
        /// the config default). Set it to --batch to commit every call
        /// alone (group commit off) for a baseline in the same run.
        #[arg(long)]
        group_max_releases: Option<usize>,
        /// Measure the transport ceiling instead (NOT durable): the same
        /// clients submit to a bench-only endpoint that authenticates,
        /// validates and policy-checks each release and acks it without
        /// storing. Prints `transport_*` figures.
        #[arg(long)]
        transport_only: bool,
        /// Shape of each node's release stream: `series` (consecutive
        /// windows of one zone per call) or `windows` (one window of
        /// --batch zones per call, as a live node sends).
        #[arg(long, default_value = "series")]
        pattern: veil_aggregator::bench::Pattern,
    },
    /// The limit of this machine for durable ingest on SQLite: the writes
    /// of `bench ingest`'s group commits made straight through SQLite's C
    /// API (Veil's schema and settings, nothing else). An upper bound for
    /// `bench ingest` with the same --nodes and --batch on the same disk.
    SqliteFloor {
        /// Nodes; each commit holds one call of every node.
        #[arg(long, default_value_t = 100)]
        nodes: u32,
        /// Releases per call.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Seconds to commit for.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Directory for the temporary database (default: the system's
        /// temporary directory); use the disk the aggregator will use.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Shape of each node's release stream: `series` (consecutive
        /// windows of one zone per call) or `windows` (one window of
        /// --batch zones per call, as a live node sends).
        #[arg(long, default_value = "series")]
        pattern: veil_aggregator::bench::Pattern,
    },
    /// Audit-log append and offline verification throughput.
    Audit {
        /// Entries appended.
        #[arg(long, default_value_t = 200_000)]
        entries: u64,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file; print its hash and a plain-language summary.
    Check {
        /// Policy file (TOML).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum BudgetCommand {
    /// Spent and remaining budget per metric and purpose.
    Show {
        /// Aggregator config file.
        #[arg(long)]
        config: PathBuf,
        /// Venue.
        #[arg(long)]
        venue: String,
        /// Event day, YYYY-MM-DD (default: today, UTC).
        #[arg(long)]
        day: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Export entries with a fresh signed checkpoint (and inclusion proofs for a range).
    Export {
        /// Aggregator config file.
        #[arg(long)]
        config: PathBuf,
        /// Output directory.
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

#[derive(Subcommand)]
enum PkiCommand {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format.as_deref());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match cli.command {
        Command::Serve { config } => serve(config),
        Command::Pki {
            command: PkiCommand::Init { out, venue, nodes },
        } => veil_aggregator::pki::init(&out, &venue, nodes)
            .map(|l| {
                println!(
                    "Wrote dev PKI for venue {} ({} nodes) to {}",
                    l.venue,
                    l.nodes.len(),
                    l.dir.display()
                )
            })
            .map_err(anyhow::Error::from),
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => veil_aggregator::commands::policy_check(&file).map(|s| print!("{s}")),
        Command::Budget {
            command: BudgetCommand::Show { config, venue, day },
        } => with_config(&config, |cfg| async move {
            veil_aggregator::commands::budget_show(&cfg, &venue, day.as_deref()).await
        }),
        Command::Audit { command } => match command {
            AuditCommand::Export {
                config,
                out,
                from,
                to,
            } => with_config(&config, |cfg| async move {
                veil_aggregator::commands::audit_export(&cfg, &out, from.zip(to)).await
            }),
            AuditCommand::Verify {
                dir,
                key,
                previous,
                origin,
            } => veil_aggregator::commands::audit_verify(
                &dir,
                &key,
                previous.as_deref(),
                origin.as_deref(),
            )
            .map(|s| println!("{s}")),
            AuditCommand::Keygen { key, vkey, name } => {
                veil_aggregator::pki::audit_keygen(&key, &vkey, &name)
                    .map(|()| println!("Wrote {} (0600) and {}", key.display(), vkey.display()))
                    .map_err(anyhow::Error::from)
            }
        },
        Command::Token { command } => {
            let path = command.config().to_path_buf();
            with_config(&path, |cfg| async move {
                veil_aggregator::dashboard::cli::run(&cfg, command).await
            })
        }
        Command::Report(args) => with_config(&args.config.clone(), |cfg| async move {
            veil_aggregator::report::run(&cfg, args).await
        }),
        Command::Rounds { command } => rounds_command(command),
        Command::Model { command } => model_command(command),
        Command::Bench {
            command: BenchCommand::Fedavg { nodes, params },
        } => {
            println!(
                "{}",
                veil_aggregator::rounds::cli::bench_fedavg(nodes, params)
            );
            Ok(())
        }
        Command::Bench {
            command:
                BenchCommand::Ingest {
                    nodes,
                    duration,
                    batch,
                    db,
                    replicas,
                    group_max_releases,
                    transport_only,
                    pattern,
                },
        } => bench(veil_aggregator::bench::ingest(
            veil_aggregator::bench::IngestParams {
                nodes,
                duration: std::time::Duration::from_secs(duration),
                batch,
                db,
                replicas,
                group_max_releases,
                transport_only,
                pattern,
            },
        )),
        Command::Bench {
            command:
                BenchCommand::SqliteFloor {
                    nodes,
                    batch,
                    duration,
                    dir,
                    pattern,
                },
        } => bench(veil_aggregator::bench::sqlite_floor(
            veil_aggregator::bench::FloorParams {
                nodes,
                batch,
                duration: std::time::Duration::from_secs(duration),
                dir,
                pattern,
            },
        )),
        Command::Bench {
            command: BenchCommand::Audit { entries },
        } => bench(veil_aggregator::bench::audit(entries)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn rounds_command(c: RoundsCommand) -> anyhow::Result<()> {
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
    with_config(&config, |cfg| async move {
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

fn model_command(c: ModelCommand) -> anyhow::Result<()> {
    use veil_aggregator::rounds::cli;
    match c {
        ModelCommand::Import {
            config,
            name,
            file,
            eval,
        } => with_config(&config, |cfg| async move {
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
        } => with_config(&config, |cfg| async move {
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

/// Runs a bench on a multi-threaded runtime and prints its report.
fn bench(
    f: impl std::future::Future<Output = anyhow::Result<veil_aggregator::bench::Report>>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(f)?;
    print!("{}", report.render());
    Ok(())
}

/// Loads the config and runs an async command that returns what to print.
fn with_config<F, Fut>(config: &std::path::Path, f: F) -> anyhow::Result<()>
where
    F: FnOnce(veil_aggregator::Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let cfg = veil_aggregator::Config::load(config)?;
    let rt = tokio::runtime::Runtime::new()?;
    let out = rt.block_on(f(cfg))?;
    println!("{}", out.trim_end());
    Ok(())
}

fn serve(config: PathBuf) -> anyhow::Result<()> {
    let config = veil_aggregator::Config::load(&config)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let bound = veil_aggregator::bind(config).await?;
        println!("listening on {}", bound.local_addr());
        bound.serve(veil_aggregator::shutdown_signal()).await?;
        Ok(())
    })
}

/// Installs the tracing subscriber: `RUST_LOG` filter (default info), JSON
/// when asked or when stderr is not a terminal.
fn init_tracing(format: Option<&str>) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        Some(f) => f == "json",
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
