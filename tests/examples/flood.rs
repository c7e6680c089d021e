//! Measures the aggregator's memory under request floods (issue 19 item 6),
//! against a real `veil-aggregator` process, loopback only:
//!
//! ```text
//! cargo run -p veil-tests --example flood -- AGGREGATOR_BIN held|held-organizer|parallel|connections [EXTRA_TOML]
//! ```
//!
//! - `held`: one connection of node-1 opens 16 `SubmitUpdate` streams, each
//!   announcing a 63 MiB message and sending all of it but the last byte;
//! - `held-organizer`: the same with the organizer's certificate (may not
//!   call `SubmitUpdate`), 24 streams;
//! - `parallel`: 32 concurrent whole 60 MB `SubmitUpdate` calls of node-1;
//! - `connections`: 1,100 TCP connections that never send a ClientHello and
//!   500 that finish TLS and then stay silent, against an aggregator started
//!   under a 1,024 file-descriptor limit (`prlimit`).
//!
//! Meanwhile a valid client (node-2) checks health every 50 ms over its own
//! connection. Prints the aggregator's peak RSS (VmHWM) before and after and
//! the valid client's slowest answer. `EXTRA_TOML` is added to the config
//! (e.g. `[requests]` keys, to compare with the budgets out of the way).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use veil_tests::{ARENA_POLICY, VENUE, channel_with, raw_h2::H2, write_aggregator_config_with};

fn vm(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
        / 1024
}

struct Aggregator(Child);

impl Drop for Aggregator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn health_latency(
    endpoint: String,
    pki: std::path::PathBuf,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Duration, u32, u32) {
    let ch = channel_with(
        &endpoint,
        &pki.join("ca.pem"),
        Some((pki.join("node-2.pem"), pki.join("node-2.key"))),
    )
    .await
    .expect("connect node-2");
    let mut client = tonic_health::pb::health_client::HealthClient::new(ch);
    let (mut worst, mut ok, mut failed) = (Duration::ZERO, 0, 0);
    while !*stop.borrow() {
        let t = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            client.check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            }),
        )
        .await;
        worst = worst.max(t.elapsed());
        match r {
            Ok(Ok(_)) => ok += 1,
            _ => failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (worst, ok, failed)
}

async fn held(addr: std::net::SocketAddr, pki: &Path, who: &str, streams: usize) -> (usize, usize) {
    let mut conn = H2::connect(addr, pki, who).await;
    let mut calls = Vec::new();
    let len: u32 = 63 << 20;
    for _ in 0..streams {
        calls.push(
            conn.announce("/veil.v1.Federated/SubmitUpdate", len, 0)
                .await,
        );
    }
    // Every admitted body is sent but its last byte, each stream by its own
    // task, as fast as the server's flow control lets it.
    let mut refused = 0;
    let mut senders = Vec::new();
    let mut responses = Vec::new();
    for mut call in calls {
        if let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_millis(20), &mut call.response).await
        {
            if resp.headers().get("grpc-status").is_some() {
                refused += 1;
            }
            continue;
        }
        let mut body = call.body;
        responses.push(call.response);
        senders.push(tokio::spawn(async move {
            let chunk = Bytes::from(vec![0u8; 1 << 20]);
            let mut left: usize = (63 << 20) - 1;
            while left > 0 {
                body.reserve_capacity(left.min(chunk.len()));
                match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                    Some(Ok(c)) if c > 0 => {
                        let c = c.min(left).min(chunk.len());
                        if body.send_data(chunk.slice(..c), false).is_err() {
                            break;
                        }
                        left -= c;
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            body
        }));
    }
    let admitted = senders.len();
    let mut bodies = Vec::new();
    for t in senders {
        if let Ok(Ok(b)) = tokio::time::timeout(Duration::from_secs(25), t).await {
            bodies.push(b);
        }
    }
    // Hold them (the server's request timeout ends them at 30 s).
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop((bodies, responses, conn));
    (admitted, refused)
}

async fn connections(addr: std::net::SocketAddr, pki: &Path) -> (usize, usize) {
    let mut tcp = Vec::new();
    for _ in 0..1100 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
        {
            tcp.push(s);
        }
    }
    let mut tls = Vec::new();
    for _ in 0..500 {
        let pki = pki.to_owned();
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(2), async move {
            veil_tests::raw_h2::try_tls(addr, &pki, "node-1").await
        })
        .await
        {
            tls.push(s);
        }
    }
    let opened = (tcp.len(), tls.len());
    tokio::time::sleep(Duration::from_secs(15)).await;
    opened
}

async fn parallel(endpoint: &str, pki: &Path) -> (usize, usize) {
    let ch = channel_with(
        endpoint,
        &pki.join("ca.pem"),
        Some((pki.join("node-1.pem"), pki.join("node-1.key"))),
    )
    .await
    .expect("connect node-1");
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut c = veil_proto::federated_client::FederatedClient::new(ch.clone())
            .max_encoding_message_size(usize::MAX);
        tasks.push(tokio::spawn(async move {
            c.submit_update(veil_proto::SubmitUpdateRequest {
                round_id: "flood".into(),
                update: vec![0u8; 60_000_000],
                examples: 1,
            })
            .await
        }));
    }
    let (mut busy, mut other) = (0, 0);
    for t in tasks {
        match t.await.expect("join") {
            Err(s) if s.code() == tonic::Code::ResourceExhausted => busy += 1,
            _ => other += 1,
        }
    }
    (busy, other)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(bin), Some(mode)) = (args.get(1), args.get(2)) else {
        eprintln!(
            "usage: flood AGGREGATOR_BIN held|held-organizer|parallel|connections [EXTRA_TOML]"
        );
        std::process::exit(2);
    };
    let extra = args.get(3).cloned().unwrap_or_default();
    veil_tests::install_crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    veil_aggregator::pki::init(&pki, VENUE, 2).expect("pki");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let cfg = write_aggregator_config_with(
        dir.path(),
        &["node-1", "node-2"],
        &format!("127.0.0.1:{port}"),
        ARENA_POLICY,
        &extra.replace("\\n", "\n"),
    );
    let child = Command::new("prlimit")
        .args(["--nofile=1024:1024", "--"])
        .arg(bin)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aggregator");
    let agg = Aggregator(child);
    let pid = agg.0.id();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let endpoint = format!("https://127.0.0.1:{port}");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base = vm(pid, "VmHWM:");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let prober = tokio::spawn(health_latency(endpoint.clone(), pki.clone(), stop_rx));
    let started = Instant::now();
    let outcome = match mode.as_str() {
        "held" => {
            let (a, r) = held(addr, &pki, "node-1", 16).await;
            format!("held streams: {a} admitted, {r} refused at once")
        }
        "held-organizer" => {
            let (a, r) = held(addr, &pki, "organizer", 24).await;
            format!("held streams: {a} admitted, {r} refused at once")
        }
        "connections" => {
            let (t, l) = connections(addr, &pki).await;
            format!("connections: {t} plain TCP opened, {l} TLS handshakes finished")
        }
        "parallel" => {
            let (b, o) = parallel(&endpoint, &pki).await;
            format!("parallel calls: {b} busy, {o} answered otherwise")
        }
        m => panic!("unknown mode {m}"),
    };
    let _ = stop_tx.send(true);
    let (worst, ok, failed) = prober.await.expect("prober");
    println!("mode                   {mode}");
    println!("outcome                {outcome}");
    println!(
        "flood_s                {:.1}",
        started.elapsed().as_secs_f64()
    );
    println!("peak_rss_before_mib    {base}");
    println!("peak_rss_after_mib     {}", vm(pid, "VmHWM:"));
    println!("valid_client_worst_ms  {}", worst.as_millis());
    println!("valid_client_calls     {ok} ok, {failed} failed");
    let _ = agg;
}
