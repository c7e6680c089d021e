//! `veil-aggregator bench fedavg|ingest|sqlite-floor|audit`: benchmarks
//! that print figures.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// FedAvg kernel throughput and per-round time.
    Fedavg {
        /// Updates averaged.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Parameters per update.
        #[arg(long, default_value_t = 1_000_000)]
        params: usize,
        /// Also run the round with secure aggregation (SecAgg+, in process)
        /// and print its figures next to the plain round's.
        #[arg(long)]
        secure: bool,
        /// With --secure: fraction of nodes that drop after sharing their
        /// keys (their masks are rebuilt from shares).
        #[arg(long, default_value_t = 0.0, requires = "secure")]
        dropout: f64,
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

/// Runs a `bench` subcommand.
pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Fedavg {
            nodes,
            params,
            secure: false,
            ..
        } => {
            println!(
                "{}",
                veil_aggregator::rounds::cli::bench_fedavg(nodes, params)
            );
            Ok(())
        }
        BenchCommand::Fedavg {
            nodes,
            params,
            secure: true,
            dropout,
        } => {
            use veil_aggregator::rounds::bench_secure;
            let reps = 3;
            let f = bench_secure::bench_secure(nodes, params, dropout, reps)
                .map_err(anyhow::Error::msg)?;
            println!("{}", bench_secure::report(&f, reps));
            Ok(())
        }
        BenchCommand::Ingest {
            nodes,
            duration,
            batch,
            db,
            replicas,
            group_max_releases,
            transport_only,
            pattern,
        } => report(veil_aggregator::bench::ingest(
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
        BenchCommand::SqliteFloor {
            nodes,
            batch,
            duration,
            dir,
            pattern,
        } => report(veil_aggregator::bench::sqlite_floor(
            veil_aggregator::bench::FloorParams {
                nodes,
                batch,
                duration: std::time::Duration::from_secs(duration),
                dir,
                pattern,
            },
        )),
        BenchCommand::Audit { entries } => report(veil_aggregator::bench::audit(entries)),
    }
}

/// Runs a bench on a multi-threaded runtime and prints its report.
fn report(
    f: impl std::future::Future<Output = anyhow::Result<veil_aggregator::bench::Report>>,
) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(f)?;
    print!("{}", report.render());
    Ok(())
}
