//! The aggregator's side of a secure round, as a state machine the rounds
//! service drives: [`Server::receive_advertisement`]* ->
//! [`Server::close_advertisements`] -> [`Server::receive_shares`]* ->
//! [`Server::close_shares`] -> [`Server::receive_masked_input`]* ->
//! [`Server::close_masked_inputs`] -> [`Server::receive_unmask`]* ->
//! [`Server::finish`]. `peer` is always the identity from the mTLS
//! certificate; a message claiming another sender is refused.
//!
//! The server keeps only the running sum of masked inputs, never an input
//! on its own. [`Server::finish`] either removes every mask or nothing: it
//! counts the shares of every secret first and fails the round with
//! [`SecAggError::NotEnoughShares`] if any has fewer than t.

use std::collections::{BTreeMap, BTreeSet};

use rustls_pki_types::UnixTime;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::{
    KeyAdvertisement, NodeIdentity, RoundConfig, SecAggError, SecretKind, Stage, Topology,
    advert::TrustedCa,
    crypto,
    messages::{
        AggregateSum, MaskedInput, SHARE_CIPHERTEXT_LEN, ShareDelivery, ShareKeys, UnmaskRequest,
        UnmaskResponse,
    },
    prg::{self, Sign},
    shamir::{self, Share},
};

/// The aggregator's state of one secure round. Holds no secret until
/// [`Server::finish`] (cloning it copies only public state).
#[derive(Debug, Clone)]
pub struct Server {
    config: RoundConfig,
    ca: TrustedCa,
    stage: Stage,
    adverts: BTreeMap<NodeIdentity, KeyAdvertisement>,
    roster: Vec<KeyAdvertisement>,
    topology: Option<Topology>,
    /// Stage 1, by roster index: commitment and shares.
    shared: BTreeMap<usize, ShareKeys>,
    /// Stage 2: who sent a masked input, and the running sum.
    masked: BTreeSet<usize>,
    sum: Vec<u32>,
    /// Stage 3: revealed shares by (owner index, kind).
    revealed: BTreeMap<usize, Vec<Share>>,
    answered: BTreeSet<usize>,
}

impl Server {
    /// A round in the key-advertisement stage.
    pub fn new(config: RoundConfig, ca: TrustedCa) -> Self {
        let d = config.encoding.dimension();
        Self {
            config,
            ca,
            stage: Stage::AdvertiseKeys,
            adverts: BTreeMap::new(),
            roster: Vec::new(),
            topology: None,
            shared: BTreeMap::new(),
            masked: BTreeSet::new(),
            sum: vec![0; d],
            revealed: BTreeMap::new(),
            answered: BTreeSet::new(),
        }
    }

    /// The current stage.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// The roster's topology (after the advertisements closed).
    pub fn topology(&self) -> Option<&Topology> {
        self.topology.as_ref()
    }

    /// The round's public configuration.
    pub fn config(&self) -> &RoundConfig {
        &self.config
    }

    /// Advertisements received (stage 0).
    pub fn advertised(&self) -> usize {
        self.adverts.len()
    }

    /// Nodes that sent their shares (stage 1).
    pub fn shared(&self) -> usize {
        self.shared.len()
    }

    /// Masked inputs received (stage 2).
    pub fn masked(&self) -> usize {
        self.masked.len()
    }

    /// Unmask responses received (stage 3).
    pub fn answered(&self) -> usize {
        self.answered.len()
    }

    /// Whether `node` advertised keys.
    pub fn has_advertised(&self, node: &NodeIdentity) -> bool {
        self.adverts.contains_key(node)
    }

    /// The nodes that sent shares (U2), sorted (empty before stage 1).
    pub fn committed(&self) -> Vec<NodeIdentity> {
        let nodes = self.topology.as_ref().map_or(&[][..], Topology::nodes);
        self.shared.keys().map(|&i| nodes[i].clone()).collect()
    }

    /// What `node` needs to share its keys (after the advertisements
    /// closed): every advertiser's identity (sorted) and the
    /// advertisements of `node`'s graph neighbours and its own, sorted.
    pub fn neighbour_keys(
        &self,
        node: &NodeIdentity,
    ) -> Result<(Vec<NodeIdentity>, Vec<KeyAdvertisement>), SecAggError> {
        let topology = self.topology.as_ref().ok_or(SecAggError::WrongStage {
            what: "neighbour keys",
            stage: self.stage,
        })?;
        let i = self.index_in(node, Stage::AdvertiseKeys)?;
        let mut idx: Vec<usize> = topology.graph().neighbours(i).to_vec();
        idx.push(i);
        idx.sort_unstable();
        Ok((
            topology.nodes().to_vec(),
            idx.into_iter().map(|j| self.roster[j].clone()).collect(),
        ))
    }

    fn expect(&self, stage: Stage, what: &'static str) -> Result<(), SecAggError> {
        if self.stage != stage {
            return Err(SecAggError::WrongStage {
                what,
                stage: self.stage,
            });
        }
        Ok(())
    }

    fn check(
        &self,
        peer: &NodeIdentity,
        round: &crate::RoundId,
        from: &NodeIdentity,
    ) -> Result<(), SecAggError> {
        if round != &self.config.round {
            return Err(SecAggError::WrongRound {
                expected: self.config.round.clone(),
                got: round.clone(),
            });
        }
        if peer != from {
            return Err(SecAggError::WrongSender {
                peer: peer.clone(),
                claimed: from.clone(),
            });
        }
        Ok(())
    }

    fn index_in(&self, node: &NodeIdentity, stage: Stage) -> Result<usize, SecAggError> {
        self.topology
            .as_ref()
            .and_then(|t| t.index(node))
            .ok_or_else(|| SecAggError::NotParticipant {
                node: node.clone(),
                stage,
            })
    }

    fn fail(&mut self, e: SecAggError) -> SecAggError {
        if matches!(
            e,
            SecAggError::TooFewNodes { .. } | SecAggError::NotEnoughShares { .. }
        ) {
            self.stage = Stage::Done;
        }
        e
    }

    /// Stage 0: one advertisement per node, verified (signature, chain,
    /// identity equal to the mTLS peer).
    pub fn receive_advertisement(
        &mut self,
        peer: &NodeIdentity,
        adv: KeyAdvertisement,
        now: UnixTime,
    ) -> Result<(), SecAggError> {
        self.expect(Stage::AdvertiseKeys, "key advertisement")?;
        self.check(peer, &adv.round, &adv.node)?;
        if self.adverts.contains_key(&adv.node) {
            return Err(SecAggError::Replay {
                what: "key advertisement",
                node: adv.node,
            });
        }
        if self.adverts.len() >= self.config.encoding.n_max() as usize {
            return Err(SecAggError::OutOfRange {
                what: "participants",
                reason: format!("round is full (n_max = {})", self.config.encoding.n_max()),
            });
        }
        self.ca.verify(&adv, &self.config.round, now)?;
        self.adverts.insert(adv.node.clone(), adv);
        Ok(())
    }

    /// Closes stage 0: the roster (sorted) to send to every advertiser.
    pub fn close_advertisements(&mut self) -> Result<Vec<KeyAdvertisement>, SecAggError> {
        self.expect(Stage::AdvertiseKeys, "close of advertisements")?;
        let roster: Vec<KeyAdvertisement> = self.adverts.values().cloned().collect();
        let topology = Topology::new(&self.config, &roster).map_err(|e| self.fail(e))?;
        self.topology = Some(topology);
        self.roster = roster.clone();
        self.stage = Stage::ShareKeys;
        Ok(roster)
    }

    /// Stage 1: a node's encrypted shares, exactly one for each graph
    /// neighbour, each of the right length.
    pub fn receive_shares(
        &mut self,
        peer: &NodeIdentity,
        msg: ShareKeys,
    ) -> Result<(), SecAggError> {
        self.expect(Stage::ShareKeys, "shares")?;
        self.check(peer, &msg.round, &msg.from)?;
        let from = self.index_in(&msg.from, Stage::ShareKeys)?;
        if self.shared.contains_key(&from) {
            return Err(SecAggError::Replay {
                what: "shares",
                node: msg.from,
            });
        }
        let topology = self.topology.as_ref().ok_or(SecAggError::WrongStage {
            what: "shares",
            stage: self.stage,
        })?;
        let neighbours = topology.graph().neighbours(from);
        if msg.shares.len() != neighbours.len() {
            return Err(SecAggError::WrongShape {
                what: "shares",
                expected: neighbours.len(),
                got: msg.shares.len(),
            });
        }
        let mut seen = BTreeSet::new();
        for s in &msg.shares {
            let to = topology
                .index(&s.to)
                .filter(|i| neighbours.binary_search(i).is_ok());
            let Some(to) = to else {
                return Err(SecAggError::NotParticipant {
                    node: s.to.clone(),
                    stage: Stage::ShareKeys,
                });
            };
            if s.from != msg.from || !seen.insert(to) {
                return Err(SecAggError::OutOfRange {
                    what: "shares",
                    reason: "wrong sender or two shares for one neighbour".into(),
                });
            }
            if s.ciphertext.len() != SHARE_CIPHERTEXT_LEN {
                return Err(SecAggError::WrongShape {
                    what: "share ciphertext",
                    expected: SHARE_CIPHERTEXT_LEN,
                    got: s.ciphertext.len(),
                });
            }
        }
        self.shared.insert(from, msg);
        Ok(())
    }

    /// Closes stage 1: one delivery per committed node (the shares its
    /// committed neighbours sent it).
    pub fn close_shares(&mut self) -> Result<Vec<ShareDelivery>, SecAggError> {
        self.expect(Stage::ShareKeys, "close of shares")?;
        let need = self.config.min_nodes();
        if self.shared.len() < need {
            let e = SecAggError::TooFewNodes {
                stage: Stage::ShareKeys,
                have: self.shared.len(),
                need,
            };
            return Err(self.fail(e));
        }
        let topology = self.topology.as_ref().ok_or(SecAggError::WrongStage {
            what: "close of shares",
            stage: self.stage,
        })?;
        let committed: Vec<NodeIdentity> = self
            .shared
            .keys()
            .map(|&i| topology.nodes()[i].clone())
            .collect();
        let mut deliveries: BTreeMap<usize, Vec<_>> =
            self.shared.keys().map(|&i| (i, Vec::new())).collect();
        for msg in self.shared.values() {
            for s in &msg.shares {
                if let Some(list) = topology.index(&s.to).and_then(|i| deliveries.get_mut(&i)) {
                    list.push(s.clone());
                }
            }
        }
        self.stage = Stage::MaskedInput;
        Ok(deliveries
            .into_iter()
            .map(|(i, shares)| ShareDelivery {
                round: self.config.round.clone(),
                to: topology.nodes()[i].clone(),
                committed: committed.clone(),
                shares,
            })
            .collect())
    }

    /// Stage 2: a committed node's masked input, added to the running sum.
    pub fn receive_masked_input(
        &mut self,
        peer: &NodeIdentity,
        msg: MaskedInput,
    ) -> Result<(), SecAggError> {
        self.expect(Stage::MaskedInput, "masked input")?;
        self.check(peer, &msg.round, &msg.from)?;
        let from = self.index_in(&msg.from, Stage::MaskedInput)?;
        if !self.shared.contains_key(&from) {
            return Err(SecAggError::NotParticipant {
                node: msg.from,
                stage: Stage::MaskedInput,
            });
        }
        if self.masked.contains(&from) {
            return Err(SecAggError::Replay {
                what: "masked input",
                node: msg.from,
            });
        }
        if msg.values.len() != self.sum.len() {
            return Err(SecAggError::WrongShape {
                what: "masked input",
                expected: self.sum.len(),
                got: msg.values.len(),
            });
        }
        for (a, v) in self.sum.iter_mut().zip(&msg.values) {
            *a = a.wrapping_add(*v);
        }
        self.masked.insert(from);
        Ok(())
    }

    /// Closes stage 2: the unmask request to send to every survivor.
    pub fn close_masked_inputs(&mut self) -> Result<UnmaskRequest, SecAggError> {
        self.expect(Stage::MaskedInput, "close of masked inputs")?;
        let need = self.config.min_nodes();
        if self.masked.len() < need {
            let e = SecAggError::TooFewNodes {
                stage: Stage::MaskedInput,
                have: self.masked.len(),
                need,
            };
            return Err(self.fail(e));
        }
        self.stage = Stage::Unmask;
        Ok(self.unmask_request())
    }

    fn unmask_request(&self) -> UnmaskRequest {
        let nodes = self.topology.as_ref().map_or(&[][..], Topology::nodes);
        UnmaskRequest {
            round: self.config.round.clone(),
            survivors: self.masked.iter().map(|&i| nodes[i].clone()).collect(),
            dropped: self
                .shared
                .keys()
                .filter(|i| !self.masked.contains(i))
                .map(|&i| nodes[i].clone())
                .collect(),
        }
    }

    /// Stage 3: a survivor's revealed shares: one per committed node of its
    /// closed neighbourhood, of the kind the request asked for.
    pub fn receive_unmask(
        &mut self,
        peer: &NodeIdentity,
        msg: UnmaskResponse,
    ) -> Result<(), SecAggError> {
        self.expect(Stage::Unmask, "unmask response")?;
        self.check(peer, &msg.round, &msg.from)?;
        let from = self.index_in(&msg.from, Stage::Unmask)?;
        if !self.masked.contains(&from) {
            return Err(SecAggError::NotParticipant {
                node: msg.from,
                stage: Stage::Unmask,
            });
        }
        if self.answered.contains(&from) {
            return Err(SecAggError::Replay {
                what: "unmask response",
                node: msg.from,
            });
        }
        let topology = self.topology.as_ref().ok_or(SecAggError::WrongStage {
            what: "unmask response",
            stage: self.stage,
        })?;
        let expected = topology
            .graph()
            .neighbours(from)
            .iter()
            .chain(std::iter::once(&from))
            .filter(|i| self.shared.contains_key(i))
            .count();
        if msg.shares.len() != expected {
            return Err(SecAggError::WrongShape {
                what: "revealed shares",
                expected,
                got: msg.shares.len(),
            });
        }
        let mut parsed = Vec::with_capacity(expected);
        let mut seen = BTreeSet::new();
        for s in &msg.shares {
            let owner = topology
                .index(&s.owner)
                .filter(|&o| o == from || topology.graph().adjacent(from, o))
                .filter(|o| self.shared.contains_key(o));
            let Some(owner) = owner else {
                return Err(SecAggError::NotParticipant {
                    node: s.owner.clone(),
                    stage: Stage::Unmask,
                });
            };
            let want = if self.masked.contains(&owner) {
                SecretKind::SelfMaskSeed
            } else {
                SecretKind::MaskKey
            };
            if s.kind != want || !seen.insert(owner) {
                return Err(SecAggError::OutOfRange {
                    what: "revealed share",
                    reason: format!("expected one {want:?} share for {}", s.owner),
                });
            }
            parsed.push((owner, Share::from_bytes(Topology::x(from), &s.share)?));
        }
        for (owner, share) in parsed {
            self.revealed.entry(owner).or_default().push(share);
        }
        self.answered.insert(from);
        Ok(())
    }

    /// Ends the round: with at least t shares of every survivor's
    /// self-mask seed and of every dropped node's mask key, removes every
    /// mask and returns the sum; otherwise fails and removes nothing.
    pub fn finish(&mut self) -> Result<AggregateSum, SecAggError> {
        self.expect(Stage::Unmask, "finish")?;
        let Some(topology) = self.topology.clone() else {
            return Err(SecAggError::WrongStage {
                what: "finish",
                stage: self.stage,
            });
        };
        let t = topology.threshold();
        let committed: Vec<usize> = self.shared.keys().copied().collect();
        // Count every secret's shares before reconstructing anything.
        for &u in &committed {
            let have = self.revealed.get(&u).map_or(0, Vec::len);
            if have < t {
                let kind = if self.masked.contains(&u) {
                    SecretKind::SelfMaskSeed
                } else {
                    SecretKind::MaskKey
                };
                let e = SecAggError::NotEnoughShares {
                    node: topology.nodes()[u].clone(),
                    kind,
                    have,
                    need: t,
                };
                return Err(self.fail(e));
            }
        }
        // Reconstruct and check every secret, then unmask.
        let mut self_keys = Vec::new();
        let mut dropped_keys = Vec::new();
        for &u in &committed {
            let node = &topology.nodes()[u];
            let shares = self.revealed.get(&u).map_or(&[][..], Vec::as_slice);
            let secret = zeroize::Zeroizing::new(shamir::reconstruct(shares)?);
            if self.masked.contains(&u) {
                let commitment = self.shared.get(&u).map(|m| m.self_seed_commitment);
                if commitment != Some(crypto::commit_seed(&self.config.round, node, &secret)) {
                    return Err(self.fail_inconsistent(node, SecretKind::SelfMaskSeed));
                }
                self_keys.push(prg::self_mask_key(&secret, &self.config.round, node));
            } else {
                let sk = StaticSecret::from(*secret);
                if PublicKey::from(&sk).to_bytes() != self.roster[u].mask_public {
                    return Err(self.fail_inconsistent(node, SecretKind::MaskKey));
                }
                dropped_keys.push((u, sk));
            }
        }
        let mut masks: Vec<(zeroize::Zeroizing<[u8; 32]>, Sign)> =
            self_keys.into_iter().map(|k| (k, Sign::Sub)).collect();
        for (u, sk) in &dropped_keys {
            let dropped = &topology.nodes()[*u];
            for &w in topology.graph().neighbours(*u) {
                if !self.masked.contains(&w) {
                    continue;
                }
                let survivor = &topology.nodes()[w];
                let shared = crypto::agree(sk, &self.roster[w].mask_public, survivor)?;
                let key = prg::pair_mask_key(&shared, &self.config.round, survivor, dropped);
                // w added +mask if w < u, -mask otherwise: undo it.
                let sign = if survivor < dropped {
                    Sign::Sub
                } else {
                    Sign::Add
                };
                masks.push((key, sign));
            }
        }
        let mut sum = std::mem::take(&mut self.sum);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        prg::apply_masks(&mut sum, &masks, threads);
        let request = self.unmask_request();
        self.stage = Stage::Done;
        Ok(AggregateSum {
            values: sum,
            contributors: request.survivors,
            dropped: request.dropped,
        })
    }

    fn fail_inconsistent(&mut self, node: &NodeIdentity, kind: SecretKind) -> SecAggError {
        self.stage = Stage::Done;
        SecAggError::InconsistentShares {
            node: node.clone(),
            kind,
        }
    }
}
