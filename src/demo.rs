//! The demo: a dev PKI, an aggregator on a loopback port with an SQLite
//! file, and simulated nodes of one venue uploading DP releases over mTLS.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
};

use anyhow::Context;
use veil_aggregator::storage::StoredRelease;
use veil_node::simulate::{GroundTruth, Metric, SimConfig, Simulation, VenueKind, ZoneRole};

/// `veil demo` options.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep everything the demo makes here (PKI, configs, databases, events);
    /// default: a temporary directory removed at exit.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Simulation seed.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Length of the simulated event.
    #[arg(long, default_value = "2h")]
    duration: humantime::Duration,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Attendees (default: the arena's).
    #[arg(long)]
    attendees: Option<u32>,
    /// After the run, keep the aggregator (gRPC, dashboard, /metrics)
    /// serving the demo's database until Ctrl-C.
    #[arg(long)]
    serve: bool,
}

const VENUE: &str = "arena";
/// The arena policy shipped in `policies/`.
const POLICY: &str = include_str!("../policies/arena.toml");
/// The show starts at 17:00 UTC yesterday: recent enough for the
/// aggregator's window-age limit whatever the date, and a whole past day.
fn show_start() -> time::OffsetDateTime {
    let yesterday = time::OffsetDateTime::now_utc().date() - time::Duration::days(1);
    yesterday
        .with_hms(17, 0, 0)
        .unwrap_or(time::PrimitiveDateTime::MIN)
        .assume_utc()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn toml_path(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let tmp;
    let dir = match &args.out {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            // A previous run's database would mix two runs' releases and
            // ledgers: the demo only writes into an empty directory.
            if std::fs::read_dir(d)?.next().is_some() {
                anyhow::bail!(
                    "--out {}: the directory is not empty (a previous demo?); remove it or choose a new one",
                    d.display()
                );
            }
            d.canonicalize()?
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    let started = std::time::Instant::now();
    println!(
        "Veil demo: venue `{VENUE}`, {} nodes, {} simulated event, seed {}",
        args.nodes, args.duration, args.seed
    );
    println!("  working directory: {}", dir.display());

    // 1. PKI.
    let pki = veil_aggregator::pki::init(&dir.join("pki"), VENUE, args.nodes)?;
    println!(
        "  [1/5] dev PKI: CA, server, {} node and 3 role certificates in pki/",
        pki.nodes.len()
    );

    // 2. Simulated events, one file per node, and ground truth.
    let start = show_start();
    let mut sim_cfg = SimConfig::new(
        VenueKind::Arena,
        args.seed,
        args.duration.into(),
        i64::try_from(start.unix_timestamp_nanos() / 1_000_000)?,
    );
    sim_cfg.nodes = args.nodes;
    sim_cfg.attendees = args.attendees;
    let sim = Simulation::new(sim_cfg)?;
    let mut total_events = 0;
    let mut malformed = 0;
    for i in 0..args.nodes {
        let path = dir.join(format!("events-node-{}.jsonl", i + 1));
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let stats = sim.write_events(i, &mut w)?;
        std::io::Write::flush(&mut w)?;
        total_events += stats.events;
        malformed += stats.malformed;
    }
    let mut gt = std::io::BufWriter::new(std::fs::File::create(dir.join("ground-truth.jsonl"))?);
    sim.write_ground_truth(None, &mut gt)?;
    std::io::Write::flush(&mut gt)?;
    let truth = sim.ground_truth();
    println!(
        "  [2/5] simulated {total_events} sensor events (+{malformed} malformed lines on purpose)"
    );

    // 3. Configs.
    std::fs::write(dir.join("policy.toml"), POLICY)?;
    std::fs::copy(dir.join("pki/audit.vkey"), dir.join("audit.vkey"))?;
    let port = free_port()?;
    let dash_port = free_port()?;
    let metrics_port = free_port()?;
    let agg_cfg_path = dir.join("aggregator.toml");
    let node_names: Vec<String> = pki.nodes.iter().map(|n| format!("\"{n}\"")).collect();
    std::fs::write(
        &agg_cfg_path,
        format!(
            "# Written by `veil demo`. Start again with: veil-aggregator serve --config {cfg}\n\
             listen = \"127.0.0.1:{port}\"\n\
             database = \"sqlite://aggregator.db\"\n\n\
             [tls]\nca = \"pki/ca.pem\"\ncert = \"pki/server.pem\"\nkey = \"pki/server.key\"\ncrls = [\"pki/crl.pem\"]\n\n\
             [audit]\nsigning_key = \"pki/audit.key\"\ncheckpoint_every = 1000\n\n\
             [[venue]]\nname = \"{VENUE}\"\nnodes = [{nodes}]\npolicy = \"policy.toml\"\n\n\
             [[principal]]\nid = \"spiffe://veil/role/compliance/officer\"\n\n\
             [[principal]]\nid = \"spiffe://veil/role/ml/ml-team\"\n\n\
             [[principal]]\nid = \"spiffe://veil/role/organizer/organizer\"\nvenues = [\"{VENUE}\"]\n\n\
             {web}",
            cfg = toml_path(&agg_cfg_path),
            nodes = node_names.join(", "),
            web = crate::demo_web::config_toml(&sim, dash_port, metrics_port),
        ),
    )?;
    let mut node_cfgs = Vec::new();
    for (i, node) in pki.nodes.iter().enumerate() {
        let idx = u32::try_from(i)?;
        let mut zones = String::new();
        for z in sim.node_zones(idx) {
            let gate = z.role == ZoneRole::Gate;
            writeln!(
                zones,
                "\n[[zone]]\nname = \"{}\"\ngate = {gate}\ncameras = {}\ncapacity = {}",
                z.name,
                if gate { 0 } else { 1 },
                z.capacity
            )?;
        }
        let path = dir.join(format!("{node}.toml"));
        std::fs::write(
            &path,
            format!(
                "# Written by `veil demo`. Run again with: veil-node run --config {cfg}\n\
                 venue = \"{VENUE}\"\nnode_id = \"{node}\"\n\n\
                 [aggregator]\nendpoint = \"https://127.0.0.1:{port}\"\nserver_name = \"localhost\"\n\
                 ca = \"pki/ca.pem\"\ncert = \"pki/{node}.pem\"\nkey = \"pki/{node}.key\"\n\n\
                 [input]\npath = \"events-{node}.jsonl\"\n\n\
                 [windows]\nlength = \"1m\"\nlateness = \"30s\"\n\n\
                 [privacy]\nmax_events_per_window = 1\nmax_zones_per_window = 1\nlease_windows = 10\n\n\
                 [outbox]\npath = \"{node}-outbox.db\"\n{zones}",
                cfg = toml_path(&path),
            ),
        )?;
        node_cfgs.push(veil_node::Config::load(&path)?);
    }
    println!(
        "  [3/5] wrote aggregator.toml and {} node configs",
        node_cfgs.len()
    );

    // 4. Aggregator + nodes over real mTLS on loopback.
    let rt = tokio::runtime::Runtime::new()?;
    let (releases, reports, alerts, dashboard) = rt.block_on(async {
        let agg_cfg = veil_aggregator::Config::load(&agg_cfg_path)?;
        let bound = veil_aggregator::bind(agg_cfg).await?;
        let addr = bound.local_addr();
        let storage = bound.storage().clone();
        let bound_state = bound.state().clone();
        let dashboard = bound.dashboard_addr();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bound.serve(async {
            let _ = stop_rx.await;
        }));
        println!("  [4/5] aggregator listening on https://{addr} (mTLS, SQLite aggregator.db); running nodes...");
        let token = crate::demo_web::issue_token(&bound_state, VENUE).await?;
        if let Some(d) = dashboard {
            println!("        organizer dashboard, up only while this run lasts (`--serve` keeps one up after it): https://{d}/?token={token}");
        }
        println!("        dashboard token (12 h, stored hashed): {token}");
        let mut tasks = Vec::new();
        for cfg in node_cfgs.clone() {
            tasks.push(tokio::spawn(veil_node::run(cfg, std::future::pending())));
        }
        let mut reports = Vec::new();
        for t in tasks {
            reports.push(t.await??);
        }
        let releases = storage.releases_for_venue(VENUE).await?;
        // The alert task works off the ack path; let it drain.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let alerts = veil_aggregator::alerts::list(&storage, VENUE, 0, 0, 1000).await?;
        let _ = stop_tx.send(());
        server.await??;
        anyhow::Ok((releases, reports, alerts, dashboard))
    })?;

    // The arena's ledger on the show's day, as its streams left it.
    let agg_cfg = veil_aggregator::Config::load(&agg_cfg_path)?;
    let day = veil_aggregator::ledger::day_of(releases.first().map_or(0, |r| r.window_start_ms));
    let budget = rt.block_on(veil_aggregator::commands::budget_show(
        &agg_cfg,
        VENUE,
        Some(&day),
    ))?;
    let arena_left = budget
        .lines()
        .find_map(|l| l.strip_prefix("budget_remaining_epsilon "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);

    // Federated training: secure rounds over partner arenas.
    let fl = crate::demo_federated::run(
        &rt,
        &dir,
        &agg_cfg_path,
        start.date(),
        (pki.nodes.len(), arena_left),
        args.seed,
    )?;

    // Audit export (as a compliance officer gets it) and offline verification.
    let agg_cfg = veil_aggregator::Config::load(&agg_cfg_path)?;
    let export_msg = rt.block_on(veil_aggregator::commands::audit_export(
        &agg_cfg,
        &dir.join("audit"),
        None,
    ))?;
    let verified = veil_aggregator::commands::audit_verify(
        &dir.join("audit"),
        &dir.join("audit.vkey"),
        None,
        None,
    )?;

    // Post-event report, from the database the demo filled.
    let report_msg = rt.block_on(veil_aggregator::report::write(
        agg_cfg.report_sources().map_err(anyhow::Error::msg)?,
        VENUE,
        &day,
        &dir.join("report.html"),
        "html",
    ))?;

    // 5. Summary.
    println!("  [5/5] done in {:.1} s\n", started.elapsed().as_secs_f64());
    print_summary(&releases, &reports, &truth);
    print_attendee_day(&node_cfgs, &releases, &reports, &truth, &sim)?;
    print_alerts(&alerts, releases.first().map_or(0, |r| r.window_start_ms));
    println!("\nPrivacy budget (the aggregator's ledger, composed under zCDP)");
    for line in budget.lines().filter(|l| !l.starts_with("budget_")) {
        println!("  {line}");
    }
    println!("\nFederated training (forecaster, secure aggregation over mTLS)");
    for line in fl.lines() {
        println!("  {line}");
    }
    println!("\nAudit log");
    println!("  {export_msg}");
    for line in verified.lines() {
        println!("  {line}");
    }
    println!("\nOrganizer surface");
    println!("  {report_msg}");
    if args.serve {
        return crate::demo_web::serve(&rt, &agg_cfg_path, VENUE);
    }
    println!(
        "  the dashboard at https://{} stopped with this run: rerun with `--serve` to keep the aggregator, dashboard and /metrics up (it prints a fresh URL and token)",
        dashboard.map_or_else(|| "-".into(), |a| a.to_string())
    );
    if args.out.is_some() {
        println!("\nEverything is kept in {}.", dir.display());
        println!(
            "  target/release/veil-aggregator serve --config {}",
            agg_cfg_path.display()
        );
        println!(
            "  target/release/veil-node run --config {}   # a re-run releases nothing new and charges nothing",
            dir.join("node-1.toml").display()
        );
        println!(
            "  target/release/veil-aggregator audit verify {} --key {}",
            dir.join("audit").display(),
            dir.join("audit.vkey").display()
        );
    }
    Ok(())
}

fn print_summary(
    releases: &[StoredRelease],
    reports: &[veil_node::RunReport],
    truth: &GroundTruth,
) {
    println!("Nodes");
    println!(
        "  {:<8} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8} {:>10}",
        "node", "lines", "invalid", "late", "bounded", "releases", "stored", "epsilon"
    );
    for (i, r) in reports.iter().enumerate() {
        println!(
            "  node-{:<3} {:>9} {:>8} {:>9} {:>9} {:>9} {:>8} {:>10.1}",
            i + 1,
            r.lines,
            r.invalid_lines,
            r.windows.late,
            r.windows.bounded_out,
            r.releases,
            r.upload.accepted,
            r.epsilon_spent
        );
    }
    let refused: u64 = reports.iter().map(|r| r.upload.rejected).sum();
    let invalid: u64 = reports.iter().map(|r| r.invalid_lines).sum();
    println!(
        "  invalid input lines: {invalid} (counted and skipped); releases refused by the aggregator: {refused}"
    );
    if let Some(bad) = reports.iter().flat_map(|r| r.first_invalid.first()).next() {
        println!("  e.g. line {}: {}", bad.line, bad.reason);
    }

    println!("\nOn-device inference (candle; audio classes released, forecasts kept on the node)");
    println!(
        "  {:<8} {:>8} {:>8} {:>10} {:>10} {:>14} {:>16}",
        "node", "windows", "skipped", "p50 us", "p99 us", "audio releases", "local alerts"
    );
    for (i, r) in reports.iter().enumerate() {
        let alerts: Vec<String> = r
            .inference
            .alerts_raised
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        println!(
            "  node-{:<3} {:>8} {:>8} {:>10} {:>10} {:>14} {:>16}",
            i + 1,
            r.inference.windows,
            r.inference.skipped,
            r.inference.latency_p50_us,
            r.inference.latency_p99_us,
            r.inference.audio_releases,
            if alerts.is_empty() {
                "none".to_owned()
            } else {
                alerts.join(" ")
            }
        );
    }

    let mut per_metric: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
    for r in releases {
        let e = per_metric.entry(r.metric.as_str()).or_default();
        e.0 += 1;
        e.1 += r.epsilon;
    }
    println!("\nStored releases per metric (aggregator.db)");
    for (m, (n, eps)) in &per_metric {
        println!("  {m:<16} {n:>7} releases   epsilon spent {eps:>9.1}");
    }
    let total_eps: f64 = releases.iter().map(|r| r.epsilon).sum();
    println!(
        "  sum of per-release epsilons: {total_eps:.1} (the ledger below composes them more tightly under zCDP)"
    );

    // Released running totals against ground truth (privacy noise, the
    // bounds and the sensors together; the attendee-day section below keeps
    // them apart).
    println!(
        "\nReleased running totals against the simulator's ground truth (mean absolute error per window)"
    );
    for (metric, gt_metric) in [
        ("occupancy", Metric::Presence),
        ("ingress", Metric::IngressCumulative),
        ("egress", Metric::EgressCumulative),
        ("unique_devices", Metric::DevicesPresent),
        ("app_users", Metric::AppUsersPresent),
        ("co2_ppm", Metric::Co2Ppm),
    ] {
        let mut n = 0u64;
        let mut abs = 0.0;
        let mut mean_truth = 0.0;
        for r in releases.iter().filter(|r| r.metric == metric) {
            // The window's value at its end is the next window's start.
            let end = r.window_start_ms + i64::from(r.window_len_s) * 1000;
            let t = if gt_metric == Metric::Co2Ppm {
                truth.get(&r.zone, gt_metric, r.window_start_ms)
            } else {
                truth
                    .get(&r.zone, gt_metric, r.window_start_ms)
                    .or_else(|| truth.get(&r.zone, gt_metric, end))
            };
            if let Some(t) = t {
                n += 1;
                abs += (r.value - t).abs();
                mean_truth += t;
            }
        }
        if n > 0 {
            println!(
                "  {metric:<16} MAE {:>8.2} over {n:>5} windows (mean true value {:>8.1})",
                abs / n as f64,
                mean_truth / n as f64
            );
        }
    }

    // A few zone time series next to ground truth.
    for zone in ["concourse", "merch", "floor"] {
        let series: Vec<&StoredRelease> = releases
            .iter()
            .filter(|r| r.metric == "occupancy" && r.zone == zone)
            .collect();
        if series.is_empty() {
            continue;
        }
        println!("\nZone `{zone}`: released occupancy vs truth (every 10th 1-minute window)");
        println!(
            "  {:<6} {:>9} {:>9} {:>8}",
            "time", "released", "truth", "noise sd"
        );
        for r in series.iter().step_by(10) {
            let t = truth.get(zone, Metric::Presence, r.window_start_ms);
            let hhmm = time::OffsetDateTime::from_unix_timestamp(r.window_start_ms / 1000)
                .map(|t| format!("{:02}:{:02}", t.hour(), t.minute()))
                .unwrap_or_default();
            println!(
                "  {hhmm:<6} {:>9.0} {:>9} {:>8.1}",
                r.value,
                t.map_or("-".to_owned(), |t| format!("{t:.0}")),
                r.scale
            );
        }
    }
}

/// Alerts the aggregator raised during the run (anomaly detection on the
/// combined DP series; no rules are configured in the demo).
fn print_alerts(alerts: &[veil_aggregator::alerts::AlertRecord], first_window_ms: i64) {
    println!(
        "\nAlerts raised on the aggregator during the run: {} (3-sigma over the DP noise and a rolling baseline)",
        alerts.len()
    );
    let mut sorted: Vec<_> = alerts.iter().collect();
    sorted.sort_by_key(|a| (a.window_start_ms, a.zone.clone()));
    for a in sorted.iter().take(8) {
        println!(
            "  minute {:>3}  {:<13} {:<10} {:<9} {}  ({})",
            (a.window_start_ms - first_window_ms) / 60_000,
            a.zone,
            a.metric,
            a.state.as_str(),
            a.severity,
            a.detail
        );
    }
}

/// The attendee-day guarantee and its two errors, kept apart: privacy error
/// (released minus the exact value the node would have released without
/// noise, from a noise-free replay of each node's input) and sensor error
/// (that exact value minus the people really present, from the simulator).
fn print_attendee_day(
    node_cfgs: &[veil_node::Config],
    releases: &[StoredRelease],
    reports: &[veil_node::RunReport],
    truth: &GroundTruth,
    sim: &Simulation,
) -> anyhow::Result<()> {
    use veil_node::units::Family;
    use veil_privacy::mechanisms::{ContinualStream, StreamMechanism};
    let policy = veil_privacy::policy::LoadedPolicy::parse(POLICY)?;
    let Some(unit) = policy.privacy_unit() else {
        return Ok(());
    };
    println!("\nAttendee-day privacy (policies/arena.toml)");
    println!("  guarantee: {}", policy.guarantee());
    println!(
        "  bounds per attendee-day, enforced on each node: {} zone visits ({} per zone), {} gate passes per direction",
        unit.max_zone_visits, unit.max_visits_per_zone, unit.max_gate_passes
    );
    let mut kinds = Vec::new();
    let mut all = veil_node::units::UnitStats::default();
    for (family, name) in [
        (Family::Tracks, "camera tracks"),
        (Family::Devices, "devices"),
        (Family::AppUsers, "app users"),
        (Family::Tickets, "tickets"),
    ] {
        let mut s = veil_node::units::UnitStats::default();
        for r in reports {
            s.add(&r.units[family as usize]);
        }
        all.add(&s);
        kinds.push(format!("{name} {:.2}%", 100.0 * s.bounded_share()));
    }
    println!(
        "  events dropped by the bounds: {:.2}% ({})",
        100.0 * all.bounded_share(),
        kinds.join(", ")
    );
    let visits = sim.unit_stats();
    println!(
        "  simulated attendees: {}, {} left and came back",
        visits.attendees, visits.reentered
    );

    // Noise-free replay of every node's input: the exact running totals.
    let mut exact: BTreeMap<(String, String), Vec<(i64, i64)>> = BTreeMap::new();
    for cfg in node_cfgs {
        let path = cfg.resolve(&cfg.input.path);
        let mut input = std::io::BufReader::new(std::fs::File::open(&path)?);
        let e = veil_node::evaluate::exact_streams(cfg, &policy, &mut input)?;
        exact.extend(e.totals);
    }
    let exact_at = |metric: &str, zone: &str, start: i64| -> Option<i64> {
        let v = exact.get(&(metric.to_owned(), zone.to_owned()))?;
        v.binary_search_by_key(&start, |(s, _)| *s)
            .ok()
            .map(|i| v[i].1)
    };
    // Zone size: its largest true presence over the event.
    let peak = |zone: &str| -> f64 {
        truth
            .series(zone, Metric::Presence)
            .iter()
            .map(|(_, v)| *v)
            .fold(0.0, f64::max)
    };
    println!("  occupancy error per zone-minute, by zone size (peak true presence):");
    println!(
        "    {:<22} {:>6} {:>16} {:>18} {:>16}",
        "zones", "mins", "privacy MAE sqrt", "privacy MAE tree*", "sensor MAE"
    );
    let occupancy: Vec<&StoredRelease> = releases
        .iter()
        .filter(|r| r.metric == "occupancy")
        .collect();
    let zones: std::collections::BTreeSet<&str> =
        occupancy.iter().map(|r| r.zone.as_str()).collect();
    let horizon = 86_400 / 60;
    for (label, lo, hi) in [
        ("holding >= 1000", 1000.0, f64::INFINITY),
        ("holding 100..1000", 100.0, 1000.0),
        ("holding < 100", 0.0, 100.0),
    ] {
        let (mut n, mut privacy, mut tree, mut sensor) = (0u64, 0.0, 0.0, 0.0);
        for zone in zones.iter().filter(|z| (lo..hi).contains(&peak(z))) {
            // The tree at equal rho over the same exact increments
            // (in-process evaluation, never released).
            let params = veil_node::release::stream_params(&policy, "occupancy", horizon)?;
            let mut tree_params = params;
            tree_params.mechanism = StreamMechanism::Tree;
            let mut tree_stream = ContinualStream::new(tree_params)?;
            if !exact.contains_key(&("occupancy".to_owned(), (*zone).to_owned())) {
                continue;
            }
            let mut prev = 0;
            for r in occupancy.iter().filter(|r| r.zone == *zone) {
                let Some(x) = exact_at("occupancy", zone, r.window_start_ms) else {
                    continue;
                };
                let offset = policy.event_day_offset_seconds();
                let day = veil_privacy::pseudonym::EventDay::from_unix_seconds(
                    r.window_start_ms.div_euclid(1000),
                    offset,
                )?;
                let day_start_ms =
                    i64::from(day.days_since_epoch()) * 86_400_000 - i64::from(offset) * 1000;
                let day_step = u32::try_from((r.window_start_ms - day_start_ms) / 60_000)?;
                let t = tree_stream.release(day_step, x - prev)?.value();
                prev = x;
                n += 1;
                privacy += (r.value - x as f64).abs();
                tree += (t - x as f64).abs();
                let end = r.window_start_ms + i64::from(r.window_len_s) * 1000;
                if let Some(truth) = truth
                    .get(zone, Metric::Presence, end)
                    .or_else(|| truth.get(zone, Metric::Presence, r.window_start_ms))
                {
                    sensor += (x as f64 - truth).abs();
                }
            }
        }
        if n > 0 {
            let m = n as f64;
            println!(
                "    {label:<22} {n:>6} {:>16.1} {:>18.1} {:>16.1}",
                privacy / m,
                tree / m,
                sensor / m
            );
        }
    }
    println!(
        "    (* the binary tree at the same rho over the same exact increments, evaluated here, never released;"
    );
    println!(
        "       privacy error: released minus the exact value the node would release without noise;"
    );
    println!("       sensor error: that exact value minus the people really present)");
    Ok(())
}
