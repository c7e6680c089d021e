//! Uploads the outbox over mutual-TLS gRPC in batches, in order, deleting a
//! record only after the aggregator acknowledged it.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use veil_proto::{
    AckStatus, GetPolicyRequest, SubmitReleasesRequest, ingest_client::IngestClient,
    policy_client::PolicyClient,
};

use crate::{config::Config, outbox::Outbox};

/// Upload errors.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// TLS files could not be read.
    #[error("reading {path}: {source}")]
    Tls {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Bad endpoint or TLS config.
    #[error("endpoint: {0}")]
    Endpoint(#[from] tonic::transport::Error),
    /// The aggregator refused us for a reason retrying will not fix
    /// (certificate, identity, permission): an operator must act.
    #[error("refused by the aggregator, operator action needed: {0}")]
    Refused(String),
    /// A transient failure (network, aggregator down or overloaded).
    #[error("transient upload failure: {0}")]
    Transient(String),
    /// The aggregator is busy (`RESOURCE_EXHAUSTED` with a `retry-after-ms`
    /// hint): nothing of the call was kept; try again after the hint.
    #[error("the aggregator is busy, retry after {} ms: {message}", retry_after.as_millis())]
    Busy {
        /// The aggregator's hint (at most [`MAX_RETRY_HINT`]).
        retry_after: Duration,
        /// The aggregator's message.
        message: String,
    },
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
}

/// The longest retry hint a node follows; a larger one (a misconfigured or
/// hostile peer) is cut to this.
pub const MAX_RETRY_HINT: Duration = Duration::from_secs(60);

impl UploadError {
    /// Whether trying again later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, UploadError::Transient(_) | UploadError::Busy { .. })
    }

    /// How long the aggregator asked us to wait, if it did.
    pub fn retry_hint(&self) -> Option<Duration> {
        match self {
            UploadError::Busy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The `retry-after-ms` hint of a `RESOURCE_EXHAUSTED` answer that says
/// "busy, try again" (a budget refusal of the ledger carries none), capped
/// at [`MAX_RETRY_HINT`].
pub fn retry_hint(status: &tonic::Status) -> Option<Duration> {
    if status.code() != tonic::Code::ResourceExhausted {
        return None;
    }
    let ms: u64 = status
        .metadata()
        .get("retry-after-ms")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_millis(ms).min(MAX_RETRY_HINT))
}

/// Calls `call` again while the aggregator answers busy (with a retry
/// hint), waiting the hint each time, for at most `patience`; any other
/// answer (or a busy one after `patience`) is returned.
pub async fn retry_when_busy<T, F, Fut>(patience: Duration, mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let started = std::time::Instant::now();
    loop {
        match call().await {
            Err(status) => match retry_hint(&status) {
                Some(hint) if started.elapsed() + hint <= patience => {
                    tracing::info!(retry_in_ms = hint.as_millis() as u64, reason = %status.message(), "The aggregator is busy; trying again after its hint.");
                    tokio::time::sleep(hint).await;
                }
                _ => return Err(status),
            },
            ok => return ok,
        }
    }
}

/// Builds the mTLS channel (connects lazily, so a node starts offline).
pub fn channel(cfg: &Config) -> Result<Channel, UploadError> {
    let read = |p: &std::path::Path| {
        let path = cfg.resolve(p);
        std::fs::read(&path).map_err(|source| UploadError::Tls {
            path: path.display().to_string(),
            source,
        })
    };
    let a = &cfg.aggregator;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&a.ca)?))
        .identity(Identity::from_pem(read(&a.cert)?, read(&a.key)?))
        .domain_name(a.server_name.clone());
    let endpoint = Endpoint::from_shared(a.endpoint.clone())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    Ok(endpoint.connect_lazy())
}

/// Classifies a gRPC failure: permanent (operator) or transient.
pub fn classify(status: &tonic::Status) -> UploadError {
    use tonic::Code;
    // The transport's error chain repeats itself ("tcp connect error:
    // transport error: tcp connect error: ..."): each cause once.
    let text = veil_common::with_causes(
        format!("{}: {}", status.code(), status.message()),
        std::error::Error::source(status),
    );
    let lower = text.to_lowercase();
    // Only what names a certificate or a TLS alert is an operator problem;
    // a reset, EOF or refused TCP connect during a handshake (aggregator
    // restarting) stays transient.
    let cert_problem = [
        "certificate",
        "unknownissuer",
        "unknownca",
        "bad certificate",
        "fatal alert",
    ]
    .iter()
    .any(|k| lower.contains(k));
    if let Some(retry_after) = retry_hint(status) {
        return UploadError::Busy {
            retry_after,
            message: status.message().to_owned(),
        };
    }
    match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => UploadError::Refused(text),
        _ if cert_problem => UploadError::Refused(text),
        _ => UploadError::Transient(text),
    }
}

/// Fetches the venue's policy hash and text.
pub async fn fetch_policy(channel: Channel) -> Result<(String, String), UploadError> {
    let doc = PolicyClient::new(channel)
        .get_policy(GetPolicyRequest {})
        .await
        .map_err(|s| classify(&s))?
        .into_inner();
    Ok((doc.hash, doc.toml))
}

/// Totals of what uploads achieved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Stored by the aggregator.
    pub accepted: u64,
    /// Already stored (resend after a lost ack).
    pub duplicate: u64,
    /// Refused for good (invalid, denied, conflict); removed with an ERROR log.
    pub rejected: u64,
    /// Corrupt outbox records skipped.
    pub corrupt: u64,
    /// Upload calls made.
    pub calls: u64,
}

/// Sends one batch from the outbox. Returns how many records left it.
pub async fn drain_batch(
    client: &mut IngestClient<Channel>,
    outbox: &Outbox,
    batch: usize,
    stats: &mut UploadStats,
) -> Result<usize, UploadError> {
    let (records, corrupt) = outbox.peek(batch).await?;
    stats.corrupt += corrupt;
    if records.is_empty() {
        return Ok(corrupt as usize);
    }
    let releases = records.iter().map(|r| r.release.clone()).collect();
    stats.calls += 1;
    let resp = client
        .submit_releases(SubmitReleasesRequest { releases })
        .await
        .map_err(|s| classify(&s))?
        .into_inner();
    if resp.acks.len() != records.len() {
        return Err(UploadError::Transient(format!(
            "aggregator answered {} acks for {} releases",
            resp.acks.len(),
            records.len()
        )));
    }
    let mut done = Vec::with_capacity(records.len());
    for (rec, ack) in records.iter().zip(&resp.acks) {
        let status = AckStatus::try_from(ack.status).unwrap_or(AckStatus::Unspecified);
        match status {
            AckStatus::Accepted => {
                stats.accepted += 1;
                done.push(rec.seq);
            }
            AckStatus::Duplicate => {
                stats.duplicate += 1;
                done.push(rec.seq);
            }
            AckStatus::Invalid | AckStatus::Denied | AckStatus::Conflict => {
                stats.rejected += 1;
                tracing::error!(
                    metric = %rec.release.metric,
                    window_start_ms = rec.release.window.as_ref().map_or(0, |w| w.start_ms),
                    status = status.as_str_name(),
                    reason = %ack.reason,
                    "Release refused by the aggregator; removed from the outbox."
                );
                done.push(rec.seq);
            }
            AckStatus::BudgetExhausted | AckStatus::Unspecified => {
                // Kept: retried later, in order.
            }
        }
    }
    outbox.remove(&done).await?;
    Ok(done.len() + corrupt as usize)
}

/// Exponential backoff with full jitter, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, never waits longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }
    /// Next delay: uniform in [0, min(cap, base * 2^attempt)].
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt = self.attempt.saturating_add(1);
        let ceiling = exp.min(self.cap);
        let mut b = [0u8; 4];
        // Jitter only spreads retries; it is not a privacy mechanism.
        let frac =
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_ok() {
                f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
            } else {
                1.0
            };
        ceiling.mul_f64(frac)
    }
    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(ms: &str) -> tonic::Status {
        let mut s = tonic::Status::resource_exhausted("busy");
        s.metadata_mut()
            .insert("retry-after-ms", ms.parse().expect("ascii"));
        s
    }

    #[test]
    fn only_a_hinted_resource_exhausted_is_busy() {
        assert_eq!(retry_hint(&busy("250")), Some(Duration::from_millis(250)));
        // A hostile hint is capped.
        assert_eq!(retry_hint(&busy("99999999")), Some(MAX_RETRY_HINT));
        assert_eq!(retry_hint(&busy("soon")), None);
        // The ledger's "budget exhausted" carries no hint: not busy.
        let exhausted = tonic::Status::resource_exhausted("daily budget used up");
        assert_eq!(retry_hint(&exhausted), None);
        assert!(matches!(classify(&exhausted), UploadError::Transient(_)));
        let e = classify(&busy("250"));
        assert!(e.is_transient());
        assert_eq!(e.retry_hint(), Some(Duration::from_millis(250)));
        assert!(e.to_string().contains("retry after 250 ms"), "{e}");
    }

    #[tokio::test]
    async fn a_busy_call_is_sent_again_after_the_hint_within_the_patience() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let started = std::time::Instant::now();
        let r = retry_when_busy(Duration::from_secs(5), || {
            let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move { if n < 2 { Err(busy("20")) } else { Ok(n) } }
        })
        .await;
        assert_eq!(r.expect("third call answers"), 2);
        assert!(started.elapsed() >= Duration::from_millis(40));
        // Past the patience the busy answer is returned.
        let r: Result<(), _> =
            retry_when_busy(Duration::from_millis(50), || async { Err(busy("30")) }).await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::ResourceExhausted);
        // Any other error is returned at once.
        let r: Result<(), _> = retry_when_busy(Duration::from_secs(5), || async {
            Err(tonic::Status::not_found("round"))
        })
        .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::NotFound);
    }
}
