//! Secure rounds (SecAgg+, [`veil_secagg`]) on the aggregator: the stages of
//! a round opened with `secure = true`, their deadlines, the ledger charge
//! and the publication of the unmasked sum.
//!
//! # Stages
//! 0. **Advertise keys**: each registered node sends its two X25519 public
//!    keys signed with its mTLS key; the aggregator verifies the signature,
//!    the certificate chain and that the certificate is the one of the
//!    connection. Closes when every registered node advertised, or at the
//!    stage timeout with at least `min_nodes`.
//! 1. **Share keys**: each advertiser fetches the roster's names and its
//!    graph neighbours' advertisements (it verifies them itself), and sends
//!    Shamir shares of its two secrets, each encrypted to one neighbour.
//!    When the stage closes the venue ledgers are charged for the nodes
//!    that shared (before any node draws its noise: a node masks only after
//!    it received its shares, which are released after the charge
//!    committed); a refused charge fails the round.
//! 2. **Masked input**: each committed node sends its encoded, noised,
//!    masked update; the aggregator keeps only the running sum modulo 2^32.
//! 3. **Unmask**: every survivor gets the same list of survivors and
//!    dropped nodes and reveals one share per committed member of its
//!    closed neighbourhood. With t shares of every secret the aggregator
//!    removes all masks, decodes the sum and publishes the next version;
//!    otherwise the round fails and nothing is unmasked.
//!
//! A stage closes early once every node it waits for has answered, else at
//! its timeout (checked every second by the rounds ticker, [`SecureRounds::tick`]).
//! Too few nodes at any stage fails the round cleanly: no partial unmasking,
//! nothing published. Each stage's close is one audit entry with counts
//! (never key material or shares); refused messages are audited as
//! `round.secure.refuse`.
//!
//! The stages run in the memory of one aggregator process, which claims the
//! round in the database (`rounds.secure_owner`); another replica answers
//! UNAVAILABLE for it, and a round whose process stopped fails at its
//! deadline. What the aggregator holds is public (keys, encrypted shares
//! it cannot open) or masked (the running sum); see the threat model in
//! [`veil_secagg`].

use std::{collections::HashMap, sync::Arc, time::Duration};

use rustls_pki_types::UnixTime;
use serde_json::json;
use tokio::sync::{Mutex, watch};
use veil_aggregator_core::audit::{AuditLog, NewEntry, SELF_ACTOR};
use veil_secagg::{
    EncodingParams, KeyAdvertisement, NodeIdentity, SecAggError, Server, Stage, TrustedCa,
    messages::{MaskedInput, ShareDelivery, ShareKeys, UnmaskRequest, UnmaskResponse},
};

use super::{RoundError, RoundRow, Rounds, action, charge_round_ledgers, record_round_event};

/// Longest a Fetch* call waits for its stage to close before answering
/// "still open, call again".
pub const LONG_POLL: Duration = Duration::from_secs(10);
/// How long a closed round's outcome stays in memory for late fetches.
const KEEP_OUTCOME_MS: i64 = 15 * 60 * 1000;

/// Why a secure-round call was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The protocol refused the message (the variant names why).
    #[error(transparent)]
    Protocol(#[from] SecAggError),
    /// A message that does not decode (wrong length, bad identity, ...).
    #[error("{0}")]
    Invalid(String),
    /// The round is not a secure round, not open, or unknown.
    #[error("{0}")]
    NotSecure(String),
    /// The round failed (the reason says why and when).
    #[error("{0}")]
    Failed(String),
    /// The stage this call waits for has not closed yet: call again.
    #[error("{0}")]
    StillOpen(String),
    /// Another aggregator process runs this round.
    #[error("{0}")]
    Elsewhere(String),
    /// The caller may not send this (identity mismatch).
    #[error("{0}")]
    Denied(String),
    /// Storage or accounting failure.
    #[error(transparent)]
    Round(#[from] RoundError),
}

/// How a secure round ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureOutcome {
    /// The round as closed.
    pub row: RoundRow,
    /// Published version (None: failed).
    pub version: Option<u32>,
    /// Nodes whose updates are in the sum.
    pub contributors: usize,
    /// Nodes that shared but sent no masked input.
    pub dropped: usize,
}

/// A stage's public name (the wire's `SecureParams.stage`).
pub fn stage_name(s: Stage) -> &'static str {
    match s {
        Stage::AdvertiseKeys => "advertise_keys",
        Stage::ShareKeys => "share_keys",
        Stage::MaskedInput => "masked_input",
        Stage::Unmask => "unmask",
        Stage::Done => "done",
    }
}

struct Live {
    row: RoundRow,
    encoding: EncodingParams,
    /// `None` only while the sum is being unmasked off the runtime.
    server: Option<Server>,
    stage: Stage,
    stage_since_ms: i64,
    stage_timeout_ms: i64,
    /// Stage 1 close: each committed node's delivery.
    deliveries: HashMap<NodeIdentity, ShareDelivery>,
    /// Stage 2 close: the one request every survivor gets.
    unmask: Option<UnmaskRequest>,
    outcome: Option<SecureOutcome>,
    closed_ms: i64,
}

/// One live round: its state and a counter bumped on every stage change
/// (long polls wait on it without holding the state).
struct Entry {
    state: Mutex<Live>,
    changed: watch::Sender<u64>,
}

impl Entry {
    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// The secure rounds this aggregator process runs.
pub struct SecureRounds {
    rounds: Arc<Rounds>,
    audit: Option<AuditLog>,
    ca: TrustedCa,
    owner: String,
    enrolled: usize,
    live: std::sync::Mutex<HashMap<String, Arc<Entry>>>,
}

impl std::fmt::Debug for SecureRounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureRounds")
            .field("owner", &self.owner)
            .field("enrolled", &self.enrolled)
            .finish_non_exhaustive()
    }
}

fn now_unix(now_ms: i64) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_millis(u64::try_from(now_ms).unwrap_or(0)))
}

/// The venue of a node identity (`spiffe://veil/venue/<v>/node/<n>`).
fn venue_of(node: &NodeIdentity) -> String {
    node.as_str()
        .strip_prefix("spiffe://veil/venue/")
        .and_then(|r| r.split_once("/node/"))
        .map(|(v, _)| v.to_owned())
        .unwrap_or_default()
}

fn node_of(node: &NodeIdentity) -> String {
    node.as_str()
        .rsplit_once("/node/")
        .map(|(_, n)| n.to_owned())
        .unwrap_or_default()
}

impl SecureRounds {
    /// Secure rounds over `rounds`, verifying advertisements against the
    /// node CA `ca`; `enrolled` nodes are registered (the advertisement
    /// stage closes early once all of them advertised).
    pub fn new(
        rounds: Arc<Rounds>,
        audit: Option<AuditLog>,
        ca: TrustedCa,
        enrolled: usize,
    ) -> Result<Self, RoundError> {
        use ring::rand::SecureRandom as _;
        let mut id = [0u8; 8];
        ring::rand::SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| RoundError::Corrupt("system randomness unavailable".into()))?;
        Ok(Self {
            rounds,
            audit,
            ca,
            owner: format!("aggregator-{}", hex::encode(id)),
            enrolled,
            live: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The rounds store.
    pub fn rounds(&self) -> &Arc<Rounds> {
        &self.rounds
    }

    fn lookup(&self, round_id: &str) -> Option<Arc<Entry>> {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(round_id)
            .cloned()
    }

    /// The live state of `round_id`, claimed and created on first use.
    async fn entry(&self, round_id: &str, now: i64) -> Result<Arc<Entry>, SecureError> {
        if let Some(e) = self.lookup(round_id) {
            return Ok(e);
        }
        let row = self.rounds.round(round_id).await.map_err(|e| match e {
            RoundError::NotFound(m) => SecureError::NotSecure(m),
            e => SecureError::Round(e),
        })?;
        let Some(spec) = row.secure.clone() else {
            return Err(SecureError::NotSecure(format!(
                "round {round_id} is not a secure round: submit updates with SubmitUpdate"
            )));
        };
        if row.state != "open" {
            return Err(SecureError::Failed(format!(
                "round {round_id} is {}: {}",
                row.state, row.reason
            )));
        }
        if now >= row.deadline_ms {
            return Err(SecureError::Failed(format!(
                "round {round_id} is past its deadline"
            )));
        }
        if !self.rounds.claim_secure(round_id, &self.owner).await? {
            return Err(SecureError::Elsewhere(format!(
                "secure round {round_id} is run by another aggregator process; retry there"
            )));
        }
        let config = spec.round_config(&row)?;
        let encoding = config.encoding;
        let live = Live {
            encoding,
            server: Some(Server::new(config, self.ca.clone())),
            stage: Stage::AdvertiseKeys,
            stage_since_ms: now,
            stage_timeout_ms: i64::from(spec.stage_timeout_s) * 1000,
            deliveries: HashMap::new(),
            unmask: None,
            outcome: None,
            closed_ms: 0,
            row,
        };
        let mut map = self.live.lock().unwrap_or_else(|e| e.into_inner());
        // Another call may have created it meanwhile: keep the first.
        let e = map
            .entry(round_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Entry {
                    state: Mutex::new(live),
                    changed: watch::channel(0).0,
                })
            })
            .clone();
        Ok(e)
    }

    /// The stage of a secure round this process runs (None: not running
    /// here yet).
    pub async fn stage(&self, round_id: &str) -> Option<Stage> {
        let e = self.lookup(round_id)?;
        let live = e.state.lock().await;
        Some(live.stage)
    }

    /// Whether `node` may still join `row` (a secure round): it is in the
    /// advertisement stage (or not started here) and `node` has not
    /// advertised.
    pub async fn joinable(&self, row: &RoundRow, node: &NodeIdentity) -> bool {
        let Some(e) = self.lookup(&row.round_id) else {
            return true;
        };
        let live = e.state.lock().await;
        live.stage == Stage::AdvertiseKeys
            && live
                .server
                .as_ref()
                .is_some_and(|s| !s.has_advertised(node))
    }

    async fn refused(&self, round_id: &str, peer: &NodeIdentity, e: &SecureError) {
        let entry = NewEntry {
            actor: peer.to_string(),
            venue: venue_of(peer),
            action: action::SECURE_REFUSE,
            allow: false,
            reason: format!("round {round_id}: {e}"),
            ..NewEntry::default()
        };
        if let Err(err) = record_round_event(&self.rounds, self.audit.as_ref(), entry).await {
            tracing::error!(error = %err, "Auditing a refused secure-round message failed.");
        }
    }

    /// Runs `f` on the round's protocol state in `want`; refusals are
    /// audited. Then closes the stage if everyone it waits for answered.
    async fn receive<T>(
        &self,
        round_id: &str,
        peer: &NodeIdentity,
        want: Stage,
        now: i64,
        f: impl FnOnce(&mut Server) -> Result<T, SecAggError>,
    ) -> Result<(T, u32), SecureError> {
        let result = self.receive_inner(round_id, want, now, f).await;
        if let Err(e) = &result
            && !matches!(
                e,
                SecureError::Elsewhere(_) | SecureError::Round(_) | SecureError::NotSecure(_)
            )
        {
            tracing::warn!(round = %round_id, node = %peer, error = %e, "Secure-round message refused.");
            self.refused(round_id, peer, e).await;
        }
        result
    }

    async fn receive_inner<T>(
        &self,
        round_id: &str,
        want: Stage,
        now: i64,
        f: impl FnOnce(&mut Server) -> Result<T, SecAggError>,
    ) -> Result<(T, u32), SecureError> {
        let entry = self.entry(round_id, now).await?;
        let mut live = entry.state.lock().await;
        if let Some(out) = &live.outcome {
            return Err(SecureError::Failed(format!(
                "round {round_id} is closed ({}): {}",
                out.row.state, out.row.reason
            )));
        }
        if live.stage != want {
            return Err(SecureError::Protocol(SecAggError::WrongStage {
                what: stage_name(want),
                stage: live.stage,
            }));
        }
        let Some(server) = live.server.as_mut() else {
            return Err(SecureError::StillOpen(format!(
                "round {round_id} is being unmasked"
            )));
        };
        let out = f(server)?;
        let received = match want {
            Stage::AdvertiseKeys => server.advertised(),
            Stage::ShareKeys => server.shared(),
            Stage::MaskedInput => server.masked(),
            _ => server.answered(),
        };
        self.advance(&entry, &mut live, now, false).await?;
        Ok((out, u32::try_from(received).unwrap_or(u32::MAX)))
    }

    /// Stage 0: a node's signed keys. `leaf` is the connection's client
    /// certificate (DER): the advertisement must carry the same one.
    pub async fn advertise(
        &self,
        peer: &NodeIdentity,
        leaf: &[u8],
        adv: KeyAdvertisement,
        now: i64,
    ) -> Result<u32, SecureError> {
        let round_id = adv.round.as_str().to_owned();
        if adv.certificate != leaf {
            let e = SecureError::Denied(
                "the advertisement's certificate is not the certificate of this connection".into(),
            );
            self.refused(&round_id, peer, &e).await;
            return Err(e);
        }
        let t = now_unix(now);
        let (_, n) = self
            .receive(&round_id, peer, Stage::AdvertiseKeys, now, |s| {
                s.receive_advertisement(peer, adv, t)
            })
            .await?;
        Ok(n)
    }

    /// Stage 1: the roster's names and `peer`'s neighbours' keys (waits
    /// for the advertisements to close).
    pub async fn neighbour_keys(
        &self,
        round_id: &str,
        peer: &NodeIdentity,
        now: i64,
    ) -> Result<(Vec<NodeIdentity>, Vec<KeyAdvertisement>), SecureError> {
        self.wait(round_id, now, Stage::ShareKeys, |live| {
            let s = live.server.as_ref().ok_or_else(|| {
                SecureError::StillOpen(format!("round {round_id} is being unmasked"))
            })?;
            Ok(s.neighbour_keys(peer)?)
        })
        .await
    }

    /// Stage 1: a node's encrypted shares.
    pub async fn submit_shares(
        &self,
        peer: &NodeIdentity,
        msg: ShareKeys,
        now: i64,
    ) -> Result<u32, SecureError> {
        let round_id = msg.round.as_str().to_owned();
        let (_, n) = self
            .receive(&round_id, peer, Stage::ShareKeys, now, |s| {
                s.receive_shares(peer, msg)
            })
            .await?;
        Ok(n)
    }

    /// Stage 2: the shares addressed to `peer` (waits for the shares to
    /// close and the ledgers to be charged).
    pub async fn fetch_shares(
        &self,
        round_id: &str,
        peer: &NodeIdentity,
        now: i64,
    ) -> Result<ShareDelivery, SecureError> {
        self.wait(round_id, now, Stage::MaskedInput, |live| {
            live.deliveries.get(peer).cloned().ok_or_else(|| {
                SecureError::Protocol(SecAggError::NotParticipant {
                    node: peer.clone(),
                    stage: Stage::ShareKeys,
                })
            })
        })
        .await
    }

    /// Stage 2: a node's masked input.
    pub async fn submit_masked(
        &self,
        peer: &NodeIdentity,
        msg: MaskedInput,
        now: i64,
    ) -> Result<u32, SecureError> {
        let round_id = msg.round.as_str().to_owned();
        let (_, n) = self
            .receive(&round_id, peer, Stage::MaskedInput, now, |s| {
                s.receive_masked_input(peer, msg)
            })
            .await?;
        Ok(n)
    }

    /// Stage 3: the unmask request (waits for the masked inputs to close).
    pub async fn fetch_unmask(
        &self,
        round_id: &str,
        peer: &NodeIdentity,
        now: i64,
    ) -> Result<UnmaskRequest, SecureError> {
        self.wait(round_id, now, Stage::Unmask, |live| {
            let r = live.unmask.clone().ok_or_else(|| {
                SecureError::StillOpen(format!("round {round_id}: no unmask request yet"))
            })?;
            if r.survivors.binary_search(peer).is_err() {
                return Err(SecureError::Protocol(SecAggError::NotParticipant {
                    node: peer.clone(),
                    stage: Stage::Unmask,
                }));
            }
            Ok(r)
        })
        .await
    }

    /// Stage 3: a survivor's revealed shares.
    pub async fn submit_unmask(
        &self,
        peer: &NodeIdentity,
        msg: UnmaskResponse,
        now: i64,
    ) -> Result<u32, SecureError> {
        let round_id = msg.round.as_str().to_owned();
        let (_, n) = self
            .receive(&round_id, peer, Stage::Unmask, now, |s| {
                s.receive_unmask(peer, msg)
            })
            .await?;
        Ok(n)
    }

    /// The outcome (waits for the round to close).
    pub async fn result(&self, round_id: &str, now: i64) -> Result<SecureOutcome, SecureError> {
        let entry = match self.entry(round_id, now).await {
            Ok(e) => e,
            // Closed before this process ran it (or by another one).
            Err(SecureError::Failed(_)) => {
                let row = self.rounds.round(round_id).await?;
                return Ok(SecureOutcome {
                    version: None,
                    contributors: row.participants as usize,
                    dropped: 0,
                    row,
                });
            }
            Err(e) => return Err(e),
        };
        let mut rx = entry.changed.subscribe();
        let until = tokio::time::Instant::now() + LONG_POLL;
        loop {
            {
                let live = entry.state.lock().await;
                if let Some(o) = &live.outcome {
                    return Ok(o.clone());
                }
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(SecureError::StillOpen(format!(
                        "round {round_id} is still running; call again"
                    )));
                }
            }
        }
    }

    /// Waits until the round reaches `stage` (or later), then answers with
    /// `f`; a failed round answers why, a stage still open after
    /// [`LONG_POLL`] answers "call again".
    async fn wait<T>(
        &self,
        round_id: &str,
        now: i64,
        stage: Stage,
        f: impl Fn(&Live) -> Result<T, SecureError>,
    ) -> Result<T, SecureError> {
        let entry = self.entry(round_id, now).await?;
        let mut rx = entry.changed.subscribe();
        let until = tokio::time::Instant::now() + LONG_POLL;
        loop {
            {
                let live = entry.state.lock().await;
                if let Some(o) = &live.outcome
                    && o.version.is_none()
                {
                    return Err(SecureError::Failed(format!(
                        "round {round_id} failed: {}",
                        o.row.reason
                    )));
                }
                if live.stage == stage {
                    return f(&live);
                }
                if live.stage as u8 > stage as u8 {
                    return Err(SecureError::Failed(format!(
                        "round {round_id}: stage {} is over (the round is in stage {})",
                        stage_name(stage),
                        stage_name(live.stage)
                    )));
                }
            }
            match tokio::time::timeout_at(until, rx.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(SecureError::StillOpen(format!(
                        "round {round_id}: stage {} still open; call again",
                        stage_name(previous(stage))
                    )));
                }
            }
        }
    }

    /// Closes stages whose timeout passed and fails rounds past their
    /// deadline; forgets outcomes after a while. Called every second by
    /// the rounds ticker.
    pub async fn tick(&self, now: i64) {
        let entries: Vec<(String, Arc<Entry>)> = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, entry) in entries {
            let mut live = entry.state.lock().await;
            if live.outcome.is_some() {
                if now - live.closed_ms > KEEP_OUTCOME_MS {
                    drop(live);
                    self.live
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                }
                continue;
            }
            let r = if now >= live.row.deadline_ms {
                let reason = format!(
                    "deadline passed in stage {}: nothing was unmasked or published",
                    stage_name(live.stage)
                );
                self.fail(&entry, &mut live, reason, now).await
            } else {
                self.advance(&entry, &mut live, now, true).await
            };
            if let Err(e) = r {
                tracing::warn!(round = %id, error = %e, "Secure round step failed.");
            }
        }
    }

    /// Closes the current stage if every node it waits for answered, or
    /// (with `by_clock`) if its timeout passed; repeats for the next stage.
    async fn advance(
        &self,
        entry: &Entry,
        live: &mut Live,
        now: i64,
        by_clock: bool,
    ) -> Result<(), SecureError> {
        loop {
            if live.outcome.is_some() {
                return Ok(());
            }
            let Some(server) = live.server.as_ref() else {
                return Ok(());
            };
            let (have, want) = match live.stage {
                // Every registered node, or the round's target.
                Stage::AdvertiseKeys => (
                    server.advertised(),
                    (live.encoding.n_max() as usize).min(self.enrolled.max(1)),
                ),
                Stage::ShareKeys => (
                    server.shared(),
                    server.topology().map_or(0, |t| t.nodes().len()),
                ),
                Stage::MaskedInput => (server.masked(), server.shared()),
                Stage::Unmask => (
                    server.answered(),
                    live.unmask.as_ref().map_or(0, |u| u.survivors.len()),
                ),
                Stage::Done => return Ok(()),
            };
            let timed_out = by_clock && now >= live.stage_since_ms + live.stage_timeout_ms;
            if have < want && !timed_out {
                return Ok(());
            }
            self.close_stage(entry, live, now).await?;
        }
    }

    async fn audit_stage(&self, live: &Live, what: &'static str, allow: bool, reason: String) {
        let entry = NewEntry {
            actor: SELF_ACTOR.into(),
            action: what,
            allow,
            reason: format!(
                "round {} of {}: {reason}",
                live.row.round_id, live.row.model
            ),
            ..NewEntry::default()
        };
        if let Err(e) = record_round_event(&self.rounds, self.audit.as_ref(), entry).await {
            tracing::error!(error = %e, "Auditing a secure-round stage failed.");
        }
    }

    /// Fails the round: nothing is unmasked or published.
    async fn fail(
        &self,
        entry: &Entry,
        live: &mut Live,
        reason: String,
        now: i64,
    ) -> Result<(), SecureError> {
        let id = live.row.round_id.clone();
        self.rounds.fail(&id, &reason, now).await?;
        self.audit_stage(live, action::ROUND_FAIL, false, reason.clone())
            .await;
        tracing::info!(round = %id, reason = %reason, "Secure round failed.");
        let row = self.rounds.round(&id).await?;
        live.server = None;
        live.deliveries.clear();
        live.stage = Stage::Done;
        live.closed_ms = now;
        live.outcome = Some(SecureOutcome {
            row,
            version: None,
            contributors: 0,
            dropped: 0,
        });
        entry.bump();
        Ok(())
    }

    async fn close_stage(
        &self,
        entry: &Entry,
        live: &mut Live,
        now: i64,
    ) -> Result<(), SecureError> {
        let stage = live.stage;
        let Some(server) = live.server.as_mut() else {
            return Ok(());
        };
        match stage {
            Stage::AdvertiseKeys => match server.close_advertisements() {
                Ok(roster) => {
                    let (k, t) = server
                        .topology()
                        .map_or((0, 0), |t| (t.graph().degree(), t.threshold()));
                    let reason = format!(
                        "{} nodes advertised signed keys (verified); graph degree {k}, threshold {t} of {} per neighbourhood",
                        roster.len(),
                        k + 1
                    );
                    self.next_stage(live, Stage::ShareKeys, now);
                    self.audit_stage(live, action::SECURE_KEYS, true, reason)
                        .await;
                }
                Err(e) => {
                    let reason = format!("key advertisements closed: {e}; nothing was unmasked");
                    return self.fail(entry, live, reason, now).await;
                }
            },
            Stage::ShareKeys => match server.close_shares() {
                Ok(deliveries) => {
                    let committed = server.committed();
                    let roster = server.topology().map_or(0, |t| t.nodes().len());
                    // Charge before any node can draw its noise: the
                    // deliveries (without which no node masks) are
                    // released only after this commits.
                    let venues: Vec<String> = committed.iter().map(venue_of).collect();
                    match self.charge(&live.row, &venues, now).await? {
                        Ok(()) => {}
                        Err(refusal) => {
                            let reason = format!(
                                "ledger refused the charge ({refusal}) when the shares closed: no node drew noise, nothing was unmasked"
                            );
                            return self.fail(entry, live, reason, now).await;
                        }
                    }
                    live.deliveries = deliveries.into_iter().map(|d| (d.to.clone(), d)).collect();
                    let reason = format!(
                        "{} of {roster} nodes sent encrypted shares; venue ledgers charged on event day {}",
                        committed.len(),
                        live.row.charge_day(now)
                    );
                    self.next_stage(live, Stage::MaskedInput, now);
                    self.audit_stage(live, action::SECURE_SHARES, true, reason)
                        .await;
                }
                Err(e) => {
                    let reason = format!("shares closed: {e}; nothing was unmasked");
                    return self.fail(entry, live, reason, now).await;
                }
            },
            Stage::MaskedInput => match server.close_masked_inputs() {
                Ok(request) => {
                    let reason = format!(
                        "{} masked inputs received, {} node(s) dropped after sharing",
                        request.survivors.len(),
                        request.dropped.len()
                    );
                    live.deliveries.clear();
                    live.unmask = Some(request);
                    self.next_stage(live, Stage::Unmask, now);
                    self.audit_stage(live, action::SECURE_MASKED, true, reason)
                        .await;
                }
                Err(e) => {
                    let reason = format!("masked inputs closed: {e}; nothing was unmasked");
                    return self.fail(entry, live, reason, now).await;
                }
            },
            Stage::Unmask => return self.finish(entry, live, now).await,
            Stage::Done => {}
        }
        entry.bump();
        Ok(())
    }

    fn next_stage(&self, live: &mut Live, stage: Stage, now: i64) {
        live.stage = stage;
        live.stage_since_ms = now;
        tracing::info!(round = %live.row.round_id, stage = stage_name(stage), "Secure round stage open.");
    }

    /// Charges the venues of the committed nodes, in one transaction with
    /// their `round.charge` audit entries.
    async fn charge(
        &self,
        row: &RoundRow,
        venues: &[String],
        now: i64,
    ) -> Result<Result<(), String>, SecureError> {
        let Some(c) = self.rounds.charging() else {
            return Ok(Ok(()));
        };
        let mut atx = c.audit.begin().await;
        let mut tx = self.rounds.pool().begin().await.map_err(RoundError::from)?;
        atx.lock(&mut tx).await.map_err(RoundError::from)?;
        let out = charge_round_ledgers(&mut tx, &mut atx, &c.policies, row, venues, now).await?;
        match out {
            Ok(()) => {
                tx.commit().await.map_err(RoundError::from)?;
                atx.committed();
                Ok(Ok(()))
            }
            Err(reason) => {
                tx.rollback().await.map_err(RoundError::from)?;
                Ok(Err(reason))
            }
        }
    }

    /// Stage 3 close: unmasks the sum off the runtime (or fails without
    /// unmasking anything), decodes it and publishes the next version.
    async fn finish(&self, entry: &Entry, live: &mut Live, now: i64) -> Result<(), SecureError> {
        let Some(mut server) = live.server.take() else {
            return Ok(());
        };
        let answered = server.answered();
        let (k, t, n) = server.topology().map_or((0, 0, 0), |t| {
            (t.graph().degree(), t.threshold(), t.nodes().len())
        });
        let joined =
            tokio::task::spawn_blocking(move || server.finish().map(|sum| (sum, server))).await;
        let (sum, _server) = match joined {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                let reason = format!(
                    "unmasking failed after {answered} responses: {e}; no mask was removed, nothing was published"
                );
                self.audit_stage(live, action::SECURE_UNMASK, false, reason.clone())
                    .await;
                return self.fail(entry, live, reason, now).await;
            }
            Err(e) => {
                let reason = format!("unmasking task failed: {e}; nothing was published");
                return self.fail(entry, live, reason, now).await;
            }
        };
        let enc = live.encoding;
        let contributors = sum.contributors.len();
        let dropped = sum.dropped.len();
        self.audit_stage(
            live,
            action::SECURE_UNMASK,
            true,
            format!(
                "{answered} unmasking responses received; the sum of {contributors} updates was unmasked ({dropped} dropped node(s)' pairwise masks removed)"
            ),
        )
        .await;
        let floats: Vec<f32> = veil_secagg::decode_sum(&sum.values, &enc)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let who: Vec<(String, String)> = sum
            .contributors
            .iter()
            .map(|n| (venue_of(n), node_of(n)))
            .collect();
        let round_rho = enc.round_rho()?;
        let label = if k + 1 >= n {
            format!("secagg+ (threshold {t} of {n})")
        } else {
            format!(
                "secagg+ (threshold {t} of {} per neighbourhood, {n} nodes)",
                k + 1
            )
        };
        let card_privacy = json!({
            "unit": "one node's local data (all its windows of the event day) per round",
            "accountant": "zCDP: distributed discrete Gaussian (Kairouz-Liu-Steinke 2021, Thm 1) of the sum of at least min_nodes updates at L2 sensitivity delta2, rounded up; rounds add (no subsampling amplification); epsilon by the Canonne-Kamath-Steinke conversion (OpenDP)",
            "assumption": "each of at least min_nodes contributors clipped its update to C and added discrete Gaussian noise of std z*delta2/sqrt(min_nodes) in integer units of gamma (OpenDP's exact sampler)",
            "round_rho": round_rho.get(),
            "aggregator_sees": "only the sum of the contributors' masked inputs (SecAgg+)",
            "venue_ledger_rho": "(2k)^2 * round_rho per venue with k nodes in the sum, on the event day",
        });
        let card_extra = json!({
            "secure_aggregation": label,
            "secure": {
                "protocol": "SecAgg+ (Bell et al. CCS 2020): X25519 + ChaCha20 pairwise and self masks mod 2^32, Shamir-shared recovery",
                "threshold": t,
                "graph_degree": k,
                "nodes": n,
                "contributors": contributors,
                "dropped": dropped,
                "gamma": enc.gamma(),
                "delta2": enc.delta2(),
                "node_sigma": enc.node_sigma(),
                "n_max": enc.n_max(),
                "threat_model": "honest-but-curious aggregator colluding with at most t-1 nodes of a neighbourhood; not a malicious aggregator lying about dropouts",
            },
        });
        let id = live.row.round_id.clone();
        let published = self
            .rounds
            .publish_secure(
                &id,
                super::store::SecurePublication {
                    sum: floats,
                    contributors: who,
                    round_rho,
                    card_privacy,
                    card_extra,
                },
                now,
            )
            .await;
        let row = match published {
            Ok(row) => row,
            Err(e) => {
                let reason = format!("publication failed: {e}");
                return self.fail(entry, live, reason, now).await;
            }
        };
        let version = if row.state == "published" {
            self.rounds.latest(&row.model).await.ok()
        } else {
            None
        };
        record_round_event(
            &self.rounds,
            self.audit.as_ref(),
            NewEntry {
                actor: SELF_ACTOR.into(),
                action: if version.is_some() {
                    action::ROUND_PUBLISH
                } else {
                    action::ROUND_FAIL
                },
                allow: version.is_some(),
                reason: format!("round {} of {}: {}", row.round_id, row.model, row.reason),
                ..NewEntry::default()
            },
        )
        .await?;
        tracing::info!(round = %row.round_id, contributors, dropped, state = %row.state, "Secure round closed.");
        live.stage = Stage::Done;
        live.closed_ms = now;
        live.unmask = None;
        live.outcome = Some(SecureOutcome {
            row,
            version,
            contributors,
            dropped,
        });
        entry.bump();
        Ok(())
    }
}

/// The stage that closes into `s`.
fn previous(s: Stage) -> Stage {
    match s {
        Stage::AdvertiseKeys | Stage::ShareKeys => Stage::AdvertiseKeys,
        Stage::MaskedInput => Stage::ShareKeys,
        Stage::Unmask => Stage::MaskedInput,
        Stage::Done => Stage::Unmask,
    }
}
