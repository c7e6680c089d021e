//! The node's side of a secure round (SecAgg+, [`veil_secagg`]): the
//! aggregator learns only the sum of the nodes' updates.
//!
//! Per round the node makes fresh X25519 keys and signs them with its mTLS
//! key, verifies its graph neighbours' signed keys (certificate chain to
//! the CA, SPIFFE identity, signature: a key the aggregator substituted is
//! refused), Shamir-shares its mask secrets with its neighbours, and only
//! after the aggregator has delivered the shares (which it does after
//! charging the venue ledgers) encodes the update: clip to C, scale to
//! integer units of gamma with conditional randomized rounding, add its
//! share of discrete Gaussian noise (OpenDP's exact sampler), reduce modulo
//! 2^32, and mask. It reveals, per neighbour, one kind of share only, and
//! only for an unmask request consistent with what it knows.
//!
//! Nothing here logs keys, shares, the update or its norm.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer, UnixTime, pem::PemObject};
use tonic::{Code, Status, transport::Channel};
use veil_proto::{
    AdvertiseKeysRequest, Round, SecureResult, SecureRoundRef, federated_client::FederatedClient,
    secagg as wire,
};
use veil_secagg::{
    Client, EncodingParams, NodeIdentity, NodeSigner, RoundConfig, RoundId, TrustedCa,
};

use super::FederatedError;

/// A node's mTLS identity as secure rounds use it: its certificate and key
/// sign its round keys; the CA verifies its neighbours'.
pub struct SecureIdentity {
    signer: NodeSigner,
    ca: TrustedCa,
}

impl std::fmt::Debug for SecureIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureIdentity")
            .field("node", self.signer.identity())
            .finish_non_exhaustive()
    }
}

fn secagg(e: veil_secagg::SecAggError) -> FederatedError {
    FederatedError::SecureAggregation(e.to_string())
}

impl SecureIdentity {
    /// From the node's certificate, PKCS#8 key and CA certificate (PEM, as
    /// `veil-aggregator pki init` writes them).
    pub fn from_pem(
        venue: &str,
        node: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
    ) -> Result<Self, FederatedError> {
        let bad = |what: &str, e: String| FederatedError::Round(format!("{what}: {e}"));
        let identity = NodeIdentity::new(venue, node).map_err(secagg)?;
        let cert = CertificateDer::from_pem_slice(cert_pem)
            .map_err(|e| bad("node certificate", e.to_string()))?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem)
            .map_err(|e| bad("node key (PKCS#8 PEM)", e.to_string()))?;
        let ca = CertificateDer::from_pem_slice(ca_pem)
            .map_err(|e| bad("CA certificate", e.to_string()))?;
        Ok(Self {
            signer: NodeSigner::new(identity, cert.to_vec(), key.secret_pkcs8_der())
                .map_err(secagg)?,
            ca: TrustedCa::new(ca.to_vec()).map_err(secagg)?,
        })
    }

    /// From the files of a node config's `[aggregator]` section.
    pub fn load(cfg: &crate::config::Config) -> Result<Self, FederatedError> {
        let read = |p: &std::path::Path| {
            let path = cfg.resolve(p);
            std::fs::read(&path)
                .map_err(|e| FederatedError::Round(format!("reading {}: {e}", path.display())))
        };
        Self::from_pem(
            &cfg.venue,
            &cfg.node_id,
            &read(&cfg.aggregator.cert)?,
            &read(&cfg.aggregator.key)?,
            &read(&cfg.aggregator.ca)?,
        )
    }

    /// This node's identity.
    pub fn node(&self) -> &NodeIdentity {
        self.signer.identity()
    }

    /// The signer (certificate and key) of this node's round keys.
    pub fn signer(&self) -> &NodeSigner {
        &self.signer
    }

    /// The CA this node verifies its neighbours' certificates against.
    pub fn ca(&self) -> &TrustedCa {
        &self.ca
    }
}

/// The protocol configuration of `round` as the aggregator announced it;
/// refused if its encoding could wrap the modulus or carries too little
/// noise.
pub fn round_config(round: &Round) -> Result<RoundConfig, FederatedError> {
    let p = round
        .secure_params
        .as_ref()
        .ok_or_else(|| FederatedError::Round("secure round without secure_params".into()))?;
    let id = RoundId::new(round.round_id.clone()).map_err(secagg)?;
    let seed: [u8; 32] = p
        .public_seed
        .as_slice()
        .try_into()
        .map_err(|_| FederatedError::Round("public_seed is not 32 bytes".into()))?;
    let dimension = usize::try_from(p.dimension)
        .map_err(|_| FederatedError::Round("dimension out of range".into()))?;
    let enc = EncodingParams::new(
        round.clip_norm,
        round.noise_multiplier,
        round.min_nodes,
        p.n_max,
        dimension,
        p.gamma,
    )
    .map_err(secagg)?;
    let mut c = RoundConfig::new(id, seed, enc);
    c.threshold = (p.threshold > 0).then_some(p.threshold as usize);
    Ok(c)
}

/// What one node saw of a secure round.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureOutcome {
    /// "published" or "failed".
    pub state: String,
    /// The aggregator's reason.
    pub reason: String,
    /// Version published (0: none).
    pub version: u32,
    /// Nodes in the sum.
    pub contributors: u32,
    /// Nodes that shared but dropped.
    pub dropped: u32,
}

/// Calls `f` until it answers something else than UNAVAILABLE (a stage
/// still open: the aggregator already waited ~10 s), or `deadline` passes.
async fn poll<T, F, Fut>(deadline: tokio::time::Instant, mut f: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    loop {
        match f().await {
            Err(s) if s.code() == Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Runs every stage of the secure `round` for this node with `update`
/// (the flat float update, not yet clipped or noised: it is encoded here,
/// after the ledgers were charged). Blocks until the round closes.
pub async fn run_round(
    client: &mut FederatedClient<Channel>,
    round: &Round,
    update: Vec<f32>,
    id: &SecureIdentity,
) -> Result<SecureOutcome, FederatedError> {
    let config = round_config(round)?;
    let enc = config.encoding;
    if update.len() != enc.dimension() {
        return Err(FederatedError::Round(format!(
            "the update has {} values, the round's dimension is {}",
            update.len(),
            enc.dimension()
        )));
    }
    let round_id = round.round_id.clone();
    // The round's own deadline, plus the time a last stage needs to answer.
    let left = Duration::from_millis(
        u64::try_from(round.deadline_ms.saturating_sub(veil_common::now_ms())).unwrap_or(0),
    );
    let deadline = tokio::time::Instant::now() + left + Duration::from_secs(15);
    let r = || SecureRoundRef {
        round_id: round_id.clone(),
    };

    // 0. Advertise.
    let (mut sa, adv) = Client::new(config, &id.signer, id.ca.clone()).map_err(secagg)?;
    client
        .advertise_keys(AdvertiseKeysRequest {
            advertisement: Some(wire::advert_to(&adv)),
        })
        .await?;

    // 1. Verify the neighbours' keys, share.
    let nk = poll(deadline, || {
        let mut c = client.clone();
        let req = r();
        async move { c.fetch_neighbour_keys(req).await }
    })
    .await?
    .into_inner();
    let roster = nk
        .roster
        .iter()
        .map(|s| NodeIdentity::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(secagg)?;
    let keys = nk
        .keys
        .into_iter()
        .map(wire::advert_from)
        .collect::<Result<Vec<_>, _>>()
        .map_err(FederatedError::SecureAggregation)?;
    let shares = sa
        .share_keys_with(&roster, &keys, UnixTime::now())
        .map_err(secagg)?;
    client.submit_shares(wire::shares_to(&shares)).await?;

    // 2. Shares delivered (the ledgers are charged by now): encode, noise,
    // mask.
    let delivery = poll(deadline, || {
        let mut c = client.clone();
        let req = r();
        async move { c.fetch_shares(req).await }
    })
    .await?
    .into_inner();
    let delivery =
        wire::delivery_from(id.node(), delivery).map_err(FederatedError::SecureAggregation)?;
    sa.receive_shares(&delivery).map_err(secagg)?;
    let (sa_back, masked) = tokio::task::spawn_blocking(move || {
        let masked = veil_secagg::encode(&update, &enc).and_then(|e| sa.masked_input(&e));
        (sa, masked)
    })
    .await
    .map_err(|e| FederatedError::Task(e.to_string()))?;
    let mut sa = sa_back;
    let masked = masked.map_err(secagg)?;
    let input = wire::masked_to(&masked);
    crate::upload::retry_when_busy(super::BUSY_PATIENCE, || {
        let mut c = client.clone();
        let input = input.clone();
        async move { c.submit_masked_input(input).await }
    })
    .await?;
    drop(input);
    drop(masked);

    // 3. Unmask.
    let req = poll(deadline, || {
        let mut c = client.clone();
        let req = r();
        async move { c.fetch_unmask_request(req).await }
    })
    .await?
    .into_inner();
    let req = wire::unmask_request_from(req).map_err(FederatedError::SecureAggregation)?;
    let resp = sa.unmask(&req).map_err(secagg)?;
    client.submit_unmask_shares(wire::unmask_to(&resp)).await?;

    // The outcome.
    let res: SecureResult = poll(deadline, || {
        let mut c = client.clone();
        let req = r();
        async move { c.fetch_secure_result(req).await }
    })
    .await?
    .into_inner();
    let (state, reason) = res.round.map(|r| (r.state, r.reason)).unwrap_or_default();
    Ok(SecureOutcome {
        state,
        reason,
        version: res.version,
        contributors: res.contributors,
        dropped: res.dropped,
    })
}
