//! The `rounds`, `model` and `bench fedavg` commands (used by `main.rs`).

use std::{path::Path, time::Duration};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use veil_proto::{PullModelRequest, federated_client::FederatedClient};

use super::{OpenParams, Rounds, action, kernel, record_round_event};
use veil_common::now_ms;

use crate::{audit::NewEntry, config::Config, storage::Storage};

async fn open_store(
    cfg: &Config,
) -> Result<(Storage, Rounds), Box<dyn std::error::Error + Send + Sync>> {
    let storage = Storage::open_with(&cfg.storage_options()).await?;
    let rounds = Rounds::new(storage.clone(), cfg.rounds.delta);
    Ok((storage, rounds))
}

/// `rounds open`: opens a round directly in the database (the serving
/// aggregator's ticker closes it at its deadline). Returns what to print.
pub async fn rounds_open(
    cfg: &Config,
    p: OpenParams,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let (storage, rounds) = open_store(cfg).await?;
    let audit = cfg.open_audit(&storage).await?;
    let row = rounds.open(&p, now_ms()).await?;
    record_round_event(
        &rounds,
        Some(&audit),
        NewEntry {
            actor: crate::audit::SELF_ACTOR.into(),
            action: action::ROUND_OPEN,
            allow: true,
            reason: format!("round {} of {} (command line)", row.round_id, row.model),
            ..NewEntry::default()
        },
    )
    .await?;
    storage.close().await;
    Ok(format!(
        "opened round {} of {} from version {} (min nodes {}, clip {}, noise multiplier {}, deadline {} ms)",
        row.round_id,
        row.model,
        row.base_version,
        row.min_nodes,
        row.clip_norm,
        row.noise_multiplier,
        row.deadline_ms
    ))
}

/// `model import`: stores a safetensors file as the next version of a model.
pub async fn model_import(
    cfg: &Config,
    name: &str,
    file: &Path,
    eval: Option<&Path>,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let (storage, rounds) = open_store(cfg).await?;
    let weights = std::fs::read(file)?;
    let eval = eval.map(std::fs::read).transpose()?;
    let v = rounds
        .import_model(name, &weights, eval.as_deref(), now_ms())
        .await?;
    storage.close().await;
    Ok(format!("imported {name} version {v}"))
}

/// Writes `model.safetensors` and `model_card.json` into `out`.
pub fn write_artifact(out: &Path, weights: &[u8], card: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("model.safetensors"), weights)?;
    let pretty = serde_json::from_str::<serde_json::Value>(card)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| card.to_owned());
    std::fs::write(out.join("model_card.json"), pretty + "\n")
}

/// `model pull --config`: reads a version from the database.
pub async fn model_pull_local(
    cfg: &Config,
    name: &str,
    version: Option<u32>,
    out: &Path,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let (storage, rounds) = open_store(cfg).await?;
    let v = match version {
        Some(v) if v > 0 => v,
        _ => rounds.latest(name).await?,
    };
    let (w, card) = rounds.version(name, v).await?;
    storage.close().await;
    write_artifact(out, &w, &card)?;
    Ok(format!("wrote {name} version {v} to {}", out.display()))
}

/// TLS files of an `ml` principal for `model pull --endpoint`.
#[derive(Debug, Clone)]
pub struct PullTls<'a> {
    /// CA certificate (PEM).
    pub ca: &'a Path,
    /// Client certificate (PEM).
    pub cert: &'a Path,
    /// Client key (PEM).
    pub key: &'a Path,
    /// Server name to verify (default "localhost").
    pub server_name: &'a str,
}

/// `model pull --endpoint`: pulls a version over mTLS gRPC (role `ml`).
/// Every failure says what went wrong and what to do, naming the endpoint
/// and the files involved (never tonic's raw status text).
pub async fn model_pull_remote(
    endpoint: &str,
    tls: PullTls<'_>,
    name: &str,
    version: Option<u32>,
    out: &Path,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let read = |what: &str, p: &Path| {
        std::fs::read(p).map_err(|e| format!("reading the {what} {}: {e}", p.display()))
    };
    let tls_cfg = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("CA certificate", tls.ca)?))
        .identity(Identity::from_pem(
            read("ml certificate", tls.cert)?,
            read("ml key", tls.key)?,
        ))
        .domain_name(tls.server_name);
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| format!("--endpoint {endpoint} is not a URL: {e}"))?
        .tls_config(tls_cfg)
        .map_err(|e| format!("TLS settings for {endpoint}: {}", veil_common::error_chain(&e)))?
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| {
            format!(
                "cannot reach the aggregator at {endpoint}: {}; is `veil-aggregator serve` running there, and does --ca {} sign its certificate?",
                veil_common::error_chain(&e),
                tls.ca.display()
            )
        })?;
    let a = FederatedClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .pull_model(PullModelRequest {
            model: name.to_owned(),
            version: version.unwrap_or(0),
        })
        .await
        .map_err(|s| pull_refusal(&s, endpoint, &tls, name, version))?
        .into_inner();
    write_artifact(out, &a.safetensors, &a.card_json)
        .map_err(|e| format!("writing {}: {e}", out.display()))?;
    Ok(format!(
        "wrote {} version {} to {}",
        a.model,
        a.version,
        out.display()
    ))
}

/// What a refused `PullModel` means for the person who ran `model pull`.
pub fn pull_refusal(
    s: &tonic::Status,
    endpoint: &str,
    tls: &PullTls<'_>,
    name: &str,
    version: Option<u32>,
) -> String {
    let what = match version {
        Some(v) if v > 0 => format!("{name} version {v}"),
        _ => format!("the latest version of {name}"),
    };
    let why = s.message();
    match s.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => format!(
            "the aggregator at {endpoint} refused to let {} pull models ({why}): model pull needs an `ml` role certificate (`veil-aggregator pki init` writes ml.pem and ml.key)",
            tls.cert.display()
        ),
        tonic::Code::NotFound => format!(
            "the aggregator at {endpoint} has no {what} ({why}); `veil-aggregator model import` stores a first version"
        ),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => format!(
            "the aggregator at {endpoint} did not answer ({why}); try again when it is serving"
        ),
        _ => format!("pulling {what} from {endpoint} failed: {why}"),
    }
}

/// `bench fedavg`: a human table, then `fedavg_gbps X GB/s`,
/// `round_ms X ms` and `mem_read_gbps X GB/s` lines. Uses every core
/// `std::thread::available_parallelism` reports.
pub fn bench_fedavg(nodes: usize, params: usize) -> String {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let f = kernel::bench_fedavg(nodes, params, 5, threads);
    format!(
        "FedAvg kernel (validate + average), {} threads, best of 5\n\
         {:<10} {:>12} {:>12} {:>12} {:>12} {:>14} {:>10}\n\
         {:<10} {:>12} {:>12.2} {:>12.2} {:>12.2} {:>14.2} {:>9.0}%\n\
         fedavg_gbps {:.2} GB/s\n\
         round_ms {:.2} ms\n\
         mem_read_gbps {:.2} GB/s",
        f.threads,
        "nodes",
        "params",
        "fedavg ms",
        "GB/s",
        "round ms",
        "read-only GB/s",
        "of read",
        f.nodes,
        f.params,
        f.fedavg_ms,
        f.fedavg_gbps,
        f.round_ms,
        f.mem_read_gbps,
        100.0 * f.fedavg_gbps / f.mem_read_gbps,
        f.fedavg_gbps,
        f.round_ms,
        f.mem_read_gbps
    )
}
