//! `veil-aggregator bench ingest|audit|sqlite-floor`: measures the aggregator on this
//! machine and prints a table, then one `name value unit` line per figure.
//!
//! Everything runs in a temporary directory with a fresh dev PKI and SQLite
//! database that are deleted afterwards; nothing touches a real deployment.
//! The ingest bench goes through the real server (mTLS on loopback, the
//! ledger, one durable transaction per batch with its audit entries), so
//! every ack it counts came after a commit.

use std::{
    fmt::Write as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use veil_privacy::audit::{CheckpointSigner, ExportInput, verify_export};
use veil_proto::{
    AckStatus, Mechanism, PrivacyCost, Release, SubmitReleasesRequest, Window,
    ingest_client::IngestClient, ledger_client::LedgerClient, policy_client::PolicyClient,
};

use crate::{
    audit::{AuditLog, NewEntry, SELF_ACTOR, action},
    ingest::{check_policy, validate},
    pki,
    storage::Storage,
};

mod floor;
pub use floor::{FloorParams, sqlite_floor};

/// One measured figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// Figure name (a contract: scripts compare runs by it).
    pub name: &'static str,
    /// Value.
    pub value: f64,
    /// Unit.
    pub unit: &'static str,
}

/// A bench's report: a human-readable table, then the figures.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Title line.
    pub title: String,
    /// `(label, value)` rows of the table.
    pub rows: Vec<(String, String)>,
    /// The figures.
    pub figures: Vec<Figure>,
}

impl Report {
    /// The table, a blank line, then one `name value unit` line per figure.
    pub fn render(&self) -> String {
        let width = self.rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        let mut s = format!("{}\n", self.title);
        for (label, value) in &self.rows {
            let _ = writeln!(s, "  {label:<width$}  {value}");
        }
        s.push('\n');
        for f in &self.figures {
            let v = if f.value.fract() == 0.0 || f.value.abs() >= 100.0 {
                format!("{:.0}", f.value)
            } else {
                format!("{:.3}", f.value)
            };
            let _ = writeln!(s, "{} {v} {}", f.name, f.unit);
        }
        s
    }
}

const VENUE: &str = "bench";
/// Per-release epsilon of the bench policy: small enough that 100 nodes
/// can each hold a full lease within the largest day budget a policy allows.
const BENCH_EPSILON: f64 = 0.001;
/// The bench day: in the past on any machine that runs this (so no window
/// is refused as future), with `max_window_age = "100y"` so none is too old.
/// Window starts are 13-digit epoch milliseconds, like a real node's: the
/// idempotency keys of one series then sort in time order. (With 1970
/// windows the starts had 1 to 8 digits, so each new key landed at a
/// scattered place in the key index: one more random page per release.)
const BENCH_DAY: &str = "2020-01-01";
/// Epoch milliseconds of [`BENCH_DAY`] 00:00 UTC.
const BENCH_DAY_MS: i64 = 1_577_836_800_000;
/// Releases per lease (the ledger's maximum).
const LEASE_RELEASES: u32 = 100_000;
/// One-minute windows in the bench day.
const WINDOWS_PER_DAY: u64 = 1440;

/// The bench venue's policy: one DP metric, a cost that lets every node
/// lease the ledger's maximum, and the largest day budget allowed.
const BENCH_POLICY: &str = "version = 1\nname = \"veil-aggregator bench ingest\"\n\n\
[budget]\nepsilon_per_day = 100000.0\ndelta = 1e-6\n\n\
[retention]\nreleases_days = 1\n\n\
[[metric]]\nname = \"occupancy\"\nsignal = \"camera\"\npurposes = [\"crowd_safety\"]\n\
mechanism = \"discrete_laplace\"\nepsilon = 0.001\nreaders = [\"organizer\", \"compliance\"]\n";

/// Bench alert rule: fires when a zone's value first goes above
/// [`ALERT_ABOVE`] (a zone's values climb by 1 per window and wrap at 500;
/// every node has zones of its own) and resolves when the values wrap, so
/// alerts keep coming under load. The latency clock starts at the ack of the
/// call that carried that release.
const ALERT_ABOVE: f64 = 450.0;
/// The value whose release raises a bench alert.
const ALERT_VALUE: f64 = 451.0;

/// Parameters of `bench ingest`.
#[derive(Debug, Clone)]
pub struct IngestParams {
    /// Concurrent node clients (each with its own certificate and connection).
    pub nodes: u32,
    /// How long the clients submit.
    pub duration: Duration,
    /// Releases per SubmitReleases call.
    pub batch: usize,
    /// Database: "sqlite" (a temporary file) or a PostgreSQL server URL
    /// `postgres://USER@HOST:PORT/DB`, on which a temporary database
    /// `veil_bench_*` is created for the run and dropped afterwards.
    pub db: String,
    /// In-process aggregator replicas sharing the database (PostgreSQL
    /// only); node clients are spread round-robin over them.
    pub replicas: u32,
    /// `ingest.group_max_releases` of the bench aggregator (`None`: the
    /// config default); `Some(batch)` commits every call alone.
    pub group_max_releases: Option<usize>,
    /// Measure the transport ceiling instead: the same clients submit to
    /// a bench-only Ingest endpoint that authenticates, validates and
    /// policy-checks every release and acks it without storing anything.
    /// Its figures are named `transport_*` so no script mistakes them for
    /// durable ones.
    pub transport_only: bool,
    /// Shape of each node's release stream.
    pub pattern: Pattern,
}

#[derive(Debug, Default)]
struct ClientResult {
    accepted: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_ms: Vec<f64>,
}

fn tls_channel(
    endpoint: &str,
    pki_dir: &Path,
    node: &str,
) -> anyhow::Result<(Endpoint, ClientTlsConfig)> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&pki_dir.join("ca.pem"))?))
        .domain_name("localhost")
        .identity(Identity::from_pem(
            read(&pki_dir.join(format!("{node}.pem")))?,
            read(&pki_dir.join(format!("{node}.key")))?,
        ));
    Ok((Endpoint::from_shared(endpoint.to_owned())?, tls))
}

async fn acquire(channel: &Channel, policy_hash: &str) -> anyhow::Result<String> {
    let lease = LedgerClient::new(channel.clone())
        .acquire_lease(veil_proto::AcquireLeaseRequest {
            day: BENCH_DAY.into(),
            metric: "occupancy".into(),
            purpose: "crowd_safety".into(),
            cost_per_release: Some(PrivacyCost {
                epsilon: BENCH_EPSILON,
                rho: 0.0,
            }),
            releases: LEASE_RELEASES,
            policy_hash: policy_hash.to_owned(),
            stream: None,
        })
        .await
        .context("acquiring a lease")?
        .into_inner();
    Ok(lease.lease_id)
}

/// The shape of the release stream of `bench ingest` and `bench sqlite-floor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pattern {
    /// Each call carries consecutive windows of one zone (a node catching
    /// up one series): a call's keys and series entries sit next to each
    /// other in the indexes, the cheap case for the database.
    #[default]
    Series,
    /// Each call carries one window of `--batch` zones, as a live node
    /// sends when a window closes across its zones: every release of a call
    /// goes to a different series, so to a different index page.
    Windows,
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "series" => Ok(Self::Series),
            "windows" => Ok(Self::Windows),
            other => Err(format!(
                "unknown pattern {other:?}: use `series` (consecutive windows of one zone per call) \
                 or `windows` (one window of --batch zones per call)"
            )),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Series => "series",
            Self::Windows => "windows",
        })
    }
}

/// Release number `i` (0-based) of `node` in `pattern` with `batch`
/// releases per call: a distinct (zone, window) per number, so every key
/// is new. Zones belong to one node, so each alert series has one node and
/// a bench alert is raised by exactly one release.
fn bench_release(
    node: &str,
    i: u64,
    (pattern, batch): (Pattern, usize),
    lease_id: &str,
    policy_hash: &str,
) -> Release {
    let (zone, window, value) = match pattern {
        Pattern::Series => (i / WINDOWS_PER_DAY, i % WINDOWS_PER_DAY, i % 500),
        Pattern::Windows => {
            let b = batch.max(1) as u64;
            let w = i / b;
            // Zones start at different values so alerts begin within
            // seconds, not after 451 windows.
            let z = i % b;
            (
                z + b * (w / WINDOWS_PER_DAY),
                w % WINDOWS_PER_DAY,
                (w + 47 * z) % 500,
            )
        }
    };
    let zone = format!("{node}-z{zone}");
    let start_ms = BENCH_DAY_MS + i64::try_from(window * 60_000).unwrap_or(0);
    Release {
        idempotency_key: format!("{VENUE}/{node}/occupancy/{zone}/{start_ms}/0"),
        metric: "occupancy".into(),
        zone,
        window: Some(Window {
            start_ms,
            length_s: 60,
        }),
        mechanism: Mechanism::DiscreteLaplace as i32,
        value: value as f64,
        scale: 1.0 / BENCH_EPSILON,
        cost: Some(PrivacyCost {
            epsilon: BENCH_EPSILON,
            rho: 0.0,
        }),
        purpose: "crowd_safety".into(),
        policy_hash: policy_hash.to_owned(),
        lease_id: lease_id.to_owned(),
        sequence: i + 1,
        stream: None,
    }
}

struct Client {
    node: String,
    /// Policy and leases (the aggregator).
    channel: Channel,
    /// SubmitReleases (the aggregator, or the transport-only endpoint).
    submit: Channel,
    lease: String,
    policy_hash: String,
    /// (zone, window) of alert-raising releases -> when the first ack of one arrived.
    acks: AckTimes,
}

type AckTimes = Arc<std::sync::Mutex<std::collections::HashMap<(String, i64), Instant>>>;

async fn run_client(
    c: Client,
    (pattern, batch): (Pattern, usize),
    deadline: Instant,
) -> ClientResult {
    let mut out = ClientResult::default();
    let mut ingest = IngestClient::new(c.submit.clone());
    let mut lease = c.lease;
    let mut used_in_lease = 0u64;
    let mut next = 0u64;
    while Instant::now() < deadline {
        let n = (batch as u64).min(u64::from(LEASE_RELEASES) - used_in_lease);
        if n == 0 {
            match acquire(&c.channel, &c.policy_hash).await {
                Ok(l) => {
                    lease = l;
                    used_in_lease = 0;
                    continue;
                }
                Err(e) => {
                    out.errors += 1;
                    out.first_error.get_or_insert(format!("{e:#}"));
                    break;
                }
            }
        }
        let releases: Vec<Release> = (next..next + n)
            .map(|i| bench_release(&c.node, i, (pattern, batch), &lease, &c.policy_hash))
            .collect();
        let raising: Vec<(String, i64)> = releases
            .iter()
            .filter(|r| r.value == ALERT_VALUE)
            .map(|r| (r.zone.clone(), r.window.map_or(0, |w| w.start_ms)))
            .collect();
        let sent = Instant::now();
        let resp = ingest
            .submit_releases(SubmitReleasesRequest { releases })
            .await;
        let acked = Instant::now();
        out.latencies_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
        if resp.is_ok() && !raising.is_empty() {
            let mut acks = c
                .acks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for k in raising {
                let at = acks.entry(k).or_insert(acked);
                *at = (*at).max(acked);
            }
        }
        match resp {
            Ok(r) => {
                for ack in r.into_inner().acks {
                    if ack.status == AckStatus::Accepted as i32 {
                        out.accepted += 1;
                    } else {
                        out.errors += 1;
                        out.first_error.get_or_insert(format!(
                            "{:?}: {}",
                            ack.status(),
                            ack.reason
                        ));
                    }
                }
            }
            Err(s) => {
                out.errors += n;
                out.first_error
                    .get_or_insert(format!("{:?}: {}", s.code(), s.message()));
            }
        }
        next += n;
        used_in_lease += n;
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Writes the bench aggregator config (`listen` on an ephemeral loopback
/// port) and policy into `dir`; the PKI must be in `dir/pki`.
fn write_config(
    dir: &Path,
    nodes: &[String],
    database: &str,
    max_connections: u32,
    group_max_releases: Option<usize>,
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::write(dir.join("policy.toml"), BENCH_POLICY)?;
    let list: Vec<String> = nodes.iter().map(|n| format!("\"{n}\"")).collect();
    let text = format!(
        "listen = \"127.0.0.1:0\"\n\n[storage]\nurl = \"{database}\"\nmax_connections = {max_connections}\n\n\
         [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\n\n\
         [audit]\nsigning_key = \"pki/audit.key\"\ncheckpoint_every = 1000\n\n\
         [ingest]\nmax_window_age = \"100y\"\n{group}\n\
         [[venue]]\nname = \"{VENUE}\"\nnodes = [{}]\npolicy = \"policy.toml\"\n\n\
         [[principal]]\nid = \"spiffe://veil/role/compliance/officer\"\n\n\
         [[principal]]\nid = \"spiffe://veil/role/organizer/organizer\"\nvenues = [\"{VENUE}\"]\n\n\
         [alerts.anomaly]\nenabled = false\n\n\
         [[alerts.rules]]\nname = \"bench-high\"\nseverity = \"info\"\n\
         runbook = \"Bench rule: nothing to do.\"\nmetric = \"occupancy\"\nabove = {ALERT_ABOVE:?}\n",
        list.join(", "),
        group =
            group_max_releases.map_or_else(String::new, |n| format!("group_max_releases = {n}\n")),
    );
    let path = dir.join("aggregator.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `veil-aggregator bench ingest`: an in-process aggregator on loopback
/// with a temporary dev PKI and SQLite file; N concurrent mTLS node
/// clients each take a lease, then submit batches of valid releases until
/// the duration ends. Latency is per SubmitReleases call (every release of
/// a call is acked after its transaction commits).
pub async fn ingest(p: IngestParams) -> anyhow::Result<Report> {
    let postgres = p.db.starts_with("postgres://") || p.db.starts_with("postgresql://");
    if p.db != "sqlite" && !postgres {
        anyhow::bail!(
            "--db {:?} is not supported: use --db sqlite (a temporary file) or --db postgres://USER@HOST:PORT/DB",
            p.db
        );
    }
    if p.replicas == 0 || (p.replicas > 1 && !postgres) {
        anyhow::bail!("--replicas must be 1, or more only with --db postgres://...");
    }
    if p.nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    if p.batch == 0 || p.batch > 1000 {
        anyhow::bail!("--batch must be in 1..=1000");
    }
    let dir = tempfile::tempdir()?;
    eprintln!(
        "bench: writing a dev PKI with {} node certificates",
        p.nodes
    );
    let layout = pki::init(&dir.path().join("pki"), VENUE, p.nodes)?;
    let temp_db = if postgres {
        Some(TempPgDatabase::create(&p.db).await?)
    } else {
        None
    };
    let database = temp_db
        .as_ref()
        .map_or_else(|| "sqlite://aggregator.db".to_owned(), |t| t.url.clone());
    let cfg_path = write_config(
        dir.path(),
        &layout.nodes,
        &database,
        16,
        p.group_max_releases,
    )?;
    let mut servers = Vec::new();
    let mut endpoints = Vec::new();
    let mut storage = None;
    let mut state = None;
    let mut metrics = Vec::new();
    for _ in 0..p.replicas {
        let cfg = crate::Config::load(&cfg_path)?;
        let bound = crate::bind(cfg).await?;
        endpoints.push(format!("https://127.0.0.1:{}", bound.local_addr().port()));
        storage.get_or_insert_with(|| bound.storage().clone());
        state.get_or_insert_with(|| bound.state().clone());
        metrics.push(bound.state().metrics.clone());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bound.serve(async {
            let _ = stop_rx.await;
        }));
        servers.push((stop_tx, server));
    }
    let storage = storage.context("no replica started")?;
    let addr = endpoints.join(", ");
    let transport = if p.transport_only {
        Some(TransportOnly::start(&layout.dir, state.clone().context("no replica started")?).await?)
    } else {
        None
    };

    // Alert latency: an organizer watches the alert stream over mTLS.
    let (ep, tls) = tls_channel(&endpoints[0], &layout.dir, "organizer")?;
    let org = ep.tls_config(tls)?.connect().await?;
    let mut alert_stream = veil_proto::query_client::QueryClient::new(org)
        .watch_alerts(veil_proto::WatchAlertsRequest {
            venue: VENUE.into(),
        })
        .await?
        .into_inner();
    let watcher = tokio::spawn(async move {
        let mut seen: Vec<((String, i64), Instant)> = Vec::new();
        while let Ok(Some(a)) = alert_stream.message().await {
            if a.event == "raised" {
                seen.push((
                    (a.zone.clone(), a.window.map_or(0, |w| w.start_ms)),
                    Instant::now(),
                ));
            }
        }
        seen
    });
    let acks: AckTimes = Arc::default();

    eprintln!("bench: connecting {} mTLS clients and leasing", p.nodes);
    let mut clients = Vec::with_capacity(layout.nodes.len());
    for (i, node) in layout.nodes.iter().enumerate() {
        let (ep, tls) = tls_channel(&endpoints[i % endpoints.len()], &layout.dir, node)?;
        let channel = ep.tls_config(tls)?.connect().await?;
        let policy_hash = PolicyClient::new(channel.clone())
            .get_policy(veil_proto::GetPolicyRequest {})
            .await?
            .into_inner()
            .hash;
        let lease = acquire(&channel, &policy_hash).await?;
        let submit = match &transport {
            Some(t) => {
                let (ep, tls) = tls_channel(&t.endpoint, &layout.dir, node)?;
                ep.tls_config(tls)?.connect().await?
            }
            None => channel.clone(),
        };
        clients.push(Client {
            node: node.clone(),
            submit,
            channel,
            lease,
            policy_hash,
            acks: acks.clone(),
        });
    }

    eprintln!(
        "bench: {} clients submitting batches of {} for {:?}",
        p.nodes, p.batch, p.duration
    );
    let started = Instant::now();
    let deadline = started + p.duration;
    let mut tasks = Vec::with_capacity(clients.len());
    for c in clients {
        tasks.push(tokio::spawn(run_client(c, (p.pattern, p.batch), deadline)));
    }
    let ticker = tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(2));
        t.tick().await;
        loop {
            t.tick().await;
            eprintln!(
                "bench: {:.0} s of {:?} elapsed",
                started.elapsed().as_secs_f64(),
                deadline - started
            );
        }
    });
    let mut total = ClientResult::default();
    for t in tasks {
        let r = t.await?;
        total.accepted += r.accepted;
        total.errors += r.errors;
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
        total.latencies_ms.extend(r.latencies_ms);
    }
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    ticker.abort();
    let stored = storage.count_releases().await?;
    if let Some(t) = transport {
        t.stop().await?;
    }
    // Let the alert task drain what was committed last.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (stop_tx, server) in servers {
        let _ = stop_tx.send(());
        server.await??;
    }
    if let Some(t) = temp_db {
        t.drop_database().await?;
    }
    let seen = watcher.await?;
    let mut alert_ms: Vec<f64> = {
        let acks = acks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.iter()
            .filter_map(|(k, at)| {
                let ack = acks.get(k)?;
                Some(if at >= ack {
                    at.duration_since(*ack).as_secs_f64() * 1000.0
                } else {
                    -(ack.duration_since(*at).as_secs_f64() * 1000.0)
                })
            })
            .collect()
    };
    alert_ms.sort_by(f64::total_cmp);
    let alert_p50 = percentile(&alert_ms, 50.0);
    let alert_p99 = percentile(&alert_ms, 99.0);

    total.latencies_ms.sort_by(f64::total_cmp);
    let p50 = percentile(&total.latencies_ms, 50.0);
    let p99 = percentile(&total.latencies_ms, 99.0);
    let per_s = total.accepted as f64 / elapsed;
    // Group commit: how many calls and releases each transaction carried.
    let (mut commits, mut grouped_calls, mut grouped_releases) = (0u64, 0.0, 0.0);
    for m in &metrics {
        let (c, calls, releases) = m.commit_totals();
        commits += c;
        grouped_calls += calls as f64;
        grouped_releases += releases as f64;
    }
    let per_commit = |x: f64| {
        if commits == 0 {
            0.0
        } else {
            x / commits as f64
        }
    };
    let mut rows: Vec<(String, String)> = vec![
        (
            "aggregator".into(),
            format!(
                "{} in-process replica(s) ({addr}), temporary dev PKI",
                p.replicas
            ),
        ),
        (
            "database".into(),
            if postgres {
                "PostgreSQL (temporary database)".into()
            } else {
                "SQLite (WAL, synchronous FULL)".into()
            },
        ),
        (
            "group commits (transactions)".into(),
            format!(
                "{commits}: {:.1} calls, {:.0} releases each on average (group_max_releases {})",
                per_commit(grouped_calls),
                per_commit(grouped_releases),
                p.group_max_releases
                    .map_or_else(|| "default".to_owned(), |n| n.to_string())
            ),
        ),
        (
            "node clients".into(),
            format!("{} (mTLS, one connection each)", p.nodes),
        ),
        ("batch".into(), format!("{} releases per call", p.batch)),
        ("pattern".into(), p.pattern.to_string()),
        ("calls".into(), total.latencies_ms.len().to_string()),
        ("releases accepted".into(), total.accepted.to_string()),
        ("releases stored (count)".into(), stored.to_string()),
        ("errors".into(), total.errors.to_string()),
        ("elapsed".into(), format!("{elapsed:.3} s")),
        ("releases per second".into(), format!("{per_s:.0}")),
        ("call latency p50".into(), format!("{p50:.2} ms")),
        ("call latency p99".into(), format!("{p99:.2} ms")),
        (
            "alerts on the stream (matched to an ack)".into(),
            format!("{} of {}", alert_ms.len(), seen.len()),
        ),
        (
            "alert latency after ack p50 / p99".into(),
            format!("{alert_p50:.2} / {alert_p99:.2} ms (negative: the alert came before the ack)"),
        ),
    ];
    if let Some(e) = &total.first_error {
        rows.push(("first error".into(), e.clone()));
    }
    if p.transport_only {
        rows.retain(|(label, _)| {
            !label.starts_with("group commits") && !label.starts_with("alert")
        });
        rows.insert(
            1,
            (
                "ingest endpoint".into(),
                "transport only: mTLS + validation + policy check, acked WITHOUT storing".into(),
            ),
        );
        return Ok(Report {
            title:
                "veil-aggregator bench ingest --transport-only: the transport ceiling (NOT durable)"
                    .into(),
            rows,
            figures: vec![
                Figure {
                    name: "transport_releases_per_s",
                    value: per_s,
                    unit: "releases/s",
                },
                Figure {
                    name: "transport_ack_p50_ms",
                    value: p50,
                    unit: "ms",
                },
                Figure {
                    name: "transport_ack_p99_ms",
                    value: p99,
                    unit: "ms",
                },
                Figure {
                    name: "errors",
                    value: total.errors as f64,
                    unit: "count",
                },
            ],
        });
    }
    Ok(Report {
        title: "veil-aggregator bench ingest: N mTLS node clients on loopback, ack after durable commit".into(),
        rows,
        figures: vec![
            Figure {
                name: "releases_per_s",
                value: per_s,
                unit: "releases/s",
            },
            Figure {
                name: "ack_p50_ms",
                value: p50,
                unit: "ms",
            },
            Figure {
                name: "ack_p99_ms",
                value: p99,
                unit: "ms",
            },
            Figure {
                name: "alert_latency_p50_ms",
                value: alert_p50,
                unit: "ms",
            },
            Figure {
                name: "alert_latency_p99_ms",
                value: alert_p99,
                unit: "ms",
            },
            Figure {
                name: "calls_per_commit",
                value: per_commit(grouped_calls),
                unit: "calls",
            },
            Figure {
                name: "releases_per_commit",
                value: per_commit(grouped_releases),
                unit: "releases",
            },
            Figure {
                name: "errors",
                value: total.errors as f64,
                unit: "count",
            },
        ],
    })
}

/// The endpoint of `bench ingest --transport-only`: the front half of the
/// aggregator's Ingest service (caller identity from the client
/// certificate, batch limits, [`validate`] and [`check_policy`] per
/// release) on its own mTLS listener with the aggregator's certificate and
/// CA, acking every valid release at once. It stores nothing and is never
/// part of a running aggregator: it exists to show how much of the ack
/// latency and throughput the durable path costs.
struct TransportOnly {
    endpoint: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

struct TransportOnlyIngest {
    state: Arc<crate::state::State>,
}

impl TransportOnly {
    async fn start(pki_dir: &Path, state: Arc<crate::state::State>) -> anyhow::Result<Self> {
        use tonic::transport::{Server, ServerTlsConfig, server::TcpIncoming};
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(
                read(&pki_dir.join("server.pem"))?,
                read(&pki_dir.join("server.key"))?,
            ))
            .client_ca_root(Certificate::from_pem(read(&pki_dir.join("ca.pem"))?))
            .client_auth_optional(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = Server::builder().tls_config(tls)?.add_service(
            veil_proto::ingest_server::IngestServer::new(TransportOnlyIngest { state }),
        );
        let server = tokio::spawn(router.serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            endpoint,
            stop,
            server,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }
}

#[tonic::async_trait]
impl veil_proto::ingest_server::Ingest for TransportOnlyIngest {
    async fn submit_releases(
        &self,
        request: tonic::Request<SubmitReleasesRequest>,
    ) -> Result<tonic::Response<veil_proto::SubmitReleasesResponse>, tonic::Status> {
        let st = &self.state;
        let crate::grpc::ingest::Admitted {
            venue,
            node,
            releases,
            policy,
        } = crate::grpc::ingest::admit(st, request)?;
        let acks = releases
            .iter()
            .map(|r| {
                let (status, reason) = match validate(r, &venue, &node, &policy.hash, &st.limits)
                    .and_then(|s| check_policy(&s, &policy))
                {
                    Ok(_) => (AckStatus::Accepted, String::new()),
                    Err(refusal) => refusal,
                };
                veil_proto::ReleaseAck {
                    idempotency_key: r.idempotency_key.clone(),
                    status: status as i32,
                    reason,
                }
            })
            .collect();
        Ok(tonic::Response::new(veil_proto::SubmitReleasesResponse {
            acks,
        }))
    }
}

/// A database made for one bench run on a PostgreSQL server, dropped after.
struct TempPgDatabase {
    admin: String,
    name: String,
    url: String,
}

impl TempPgDatabase {
    async fn create(server: &str) -> anyhow::Result<Self> {
        let (name, url) = veil_common::test_util::create_database(server, "veil_bench")
            .await
            .with_context(|| {
                format!(
                    "creating a bench database on {}",
                    crate::storage::redact_url(server)
                )
            })?;
        eprintln!("bench: created temporary database {name}");
        Ok(Self {
            admin: server.to_owned(),
            url,
            name,
        })
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        veil_common::test_util::drop_database(&self.admin, &self.name)
            .await
            .context("dropping the bench database")
    }
}

/// Audit entries per database transaction in `bench audit` (as ingest
/// appends one entry per release of a batch in one transaction).
pub const AUDIT_BATCH: u64 = 100;

/// `veil-aggregator bench audit --entries N`: appends N entries through
/// [`AuditLog`] into a temporary SQLite database ([`AUDIT_BATCH`] per
/// transaction, a signed checkpoint every 1000 entries), exports the whole
/// log with a fresh checkpoint and verifies the export offline.
pub async fn audit(entries: u64) -> anyhow::Result<Report> {
    if entries == 0 {
        anyhow::bail!("--entries must be at least 1");
    }
    let dir = tempfile::tempdir()?;
    let storage = Storage::open(&format!(
        "sqlite://{}",
        dir.path().join("audit.db").display()
    ))
    .await?;
    let signer = CheckpointSigner::generate(pki::AUDIT_KEY_NAME)?;
    let vkey = signer.verifier_key_str();
    let log = Arc::new(AuditLog::load(&storage, signer, 1000).await?);
    let origin = log.origin().to_owned();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    };

    let started = Instant::now();
    let mut last_progress = Instant::now();
    let mut done = 0u64;
    while done < entries {
        let n = AUDIT_BATCH.min(entries - done);
        let t = now();
        storage
            .run_audited(&log, "bench_audit", |tx, atx| {
                Box::pin(async move {
                    for i in done..done + n {
                        atx.append(
                            tx,
                            NewEntry {
                                actor: SELF_ACTOR.into(),
                                venue: VENUE.into(),
                                action: action::RELEASE,
                                allow: true,
                                reason: String::new(),
                                policy_hash: "0".repeat(64),
                                epsilon: BENCH_EPSILON,
                                rho: 0.0,
                                release_sha256: format!("{i:064x}"),
                            },
                            t,
                        )
                        .await?;
                    }
                    Ok::<_, anyhow::Error>(())
                })
            })
            .await?;
        log.maybe_checkpoint(&storage, t).await?;
        done += n;
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            eprintln!("bench: audit entries appended {done}/{entries}");
        }
    }
    let append_s = started.elapsed().as_secs_f64().max(1e-9);

    let t0 = Instant::now();
    let export = log.export(&storage, None, now()).await?;
    let export_s = t0.elapsed().as_secs_f64();
    eprintln!("bench: verifying the export of {} entries", export.size);
    let t1 = Instant::now();
    let verified = verify_export(ExportInput {
        entries_jsonl: &export.entries_jsonl,
        checkpoint: &export.checkpoint,
        proofs_json: None,
        vkey: &vkey,
        origin: &origin,
        previous_checkpoint: None,
        consistency_proof: None,
    })?;
    let verify_s = t1.elapsed().as_secs_f64().max(1e-9);
    storage.close().await;
    let append_per_s = entries as f64 / append_s;
    let verify_per_s = verified.size as f64 / verify_s;
    Ok(Report {
        title: "veil-aggregator bench audit: AuditLog append into SQLite, export, offline verify"
            .into(),
        rows: vec![
            (
                "database".into(),
                format!(
                    "temporary SQLite (WAL, synchronous FULL), {AUDIT_BATCH} entries per transaction"
                ),
            ),
            ("checkpoints".into(), "signed every 1000 entries".into()),
            ("entries appended".into(), entries.to_string()),
            (
                "append".into(),
                format!("{append_s:.3} s ({append_per_s:.0} entries/s)"),
            ),
            (
                "export".into(),
                format!(
                    "{export_s:.3} s ({} bytes of entries.jsonl)",
                    export.entries_jsonl.len()
                ),
            ),
            (
                "verify (full export)".into(),
                format!(
                    "{verify_s:.3} s ({verify_per_s:.0} entries/s), tree size {}",
                    verified.size
                ),
            ),
        ],
        figures: vec![
            Figure {
                name: "audit_append_per_s",
                value: append_per_s,
                unit: "entries/s",
            },
            Figure {
                name: "audit_verify_per_s",
                value: verify_per_s,
                unit: "entries/s",
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::Limits;

    fn stream(pattern: Pattern, batch: usize, n: u64) -> Vec<Release> {
        (0..n)
            .map(|i| bench_release("node-7", i, (pattern, batch), "lease", "hash"))
            .collect()
    }

    /// Every release of either stream is valid, new (distinct key and
    /// (zone, window)) and stays on the bench day, across day wraps.
    #[test]
    fn bench_streams_are_valid_and_never_repeat_a_key() {
        let limits = Limits::default();
        for (pattern, batch) in [
            (Pattern::Series, 10),
            (Pattern::Windows, 10),
            (Pattern::Windows, 7),
        ] {
            let releases = stream(pattern, batch, 3 * WINDOWS_PER_DAY * batch as u64);
            let mut keys = std::collections::HashSet::new();
            let mut cells = std::collections::HashSet::new();
            for r in &releases {
                validate(r, VENUE, "node-7", "hash", &limits).unwrap();
                let start = r.window.unwrap().start_ms;
                assert!((BENCH_DAY_MS..BENCH_DAY_MS + 86_400_000).contains(&start));
                assert!(
                    keys.insert(r.idempotency_key.clone()),
                    "{pattern}: repeated key"
                );
                assert!(
                    cells.insert((r.zone.clone(), start)),
                    "{pattern}: repeated cell"
                );
            }
        }
    }

    /// `windows`: one call is one window across `batch` zones (as a live
    /// node sends); `series`: one call is consecutive windows of one zone.
    #[test]
    fn patterns_shape_each_call_as_documented() {
        // (distinct windows, distinct zones) of call `i` (10 releases).
        let shape = |pattern, i: usize| {
            let call = &stream(pattern, 10, 40)[i * 10..(i + 1) * 10];
            let starts: std::collections::HashSet<i64> =
                call.iter().map(|r| r.window.unwrap().start_ms).collect();
            let zones: std::collections::HashSet<&str> =
                call.iter().map(|r| r.zone.as_str()).collect();
            (starts.len(), zones.len())
        };
        for i in 0..4 {
            assert_eq!(shape(Pattern::Windows, i), (1, 10));
            assert_eq!(shape(Pattern::Series, i), (10, 1));
        }
    }

    /// Under both patterns some zone reaches the alert value within the
    /// first 100 calls of a node, so a 10-second bench sees alerts.
    #[test]
    fn alerts_start_early_in_both_patterns() {
        for pattern in [Pattern::Series, Pattern::Windows] {
            assert!(
                stream(pattern, 10, 1000)
                    .iter()
                    .any(|r| r.value == ALERT_VALUE),
                "{pattern}"
            );
        }
    }
}
