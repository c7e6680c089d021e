//! The node's side of a secure round, as a state machine the federated
//! client drives: [`Client::new`] (advertise) -> [`Client::share_keys`] ->
//! [`Client::receive_shares`] -> [`Client::masked_input`] ->
//! [`Client::unmask`]. Each step may run once, in order; anything else is
//! refused with a reason. The node reveals, per peer, either the self-mask
//! seed share or the mask-key share, never both: it answers one unmask
//! request per round, and only one whose lists agree with what it knows.

use std::collections::HashMap;

use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::UnixTime;
use x25519_dalek::PublicKey;
use zeroize::Zeroizing;

use crate::{
    EncodedUpdate, KeyAdvertisement, NodeIdentity, RoundConfig, SecAggError, SecretKind, Stage,
    Topology,
    advert::{self, NodeSigner, RoundKeys, TrustedCa},
    crypto,
    messages::{
        EncryptedShare, MaskedInput, RevealedShare, SHARE_CIPHERTEXT_LEN, ShareDelivery, ShareKeys,
        UnmaskRequest, UnmaskResponse,
    },
    prg::{self, Sign},
    round::check_sorted,
    shamir::{self, SHARE_BYTES, Share},
};

/// Where the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientStage {
    Advertised,
    Shared,
    Received,
    Masked,
    Done,
}

impl ClientStage {
    fn public(self) -> Stage {
        match self {
            Self::Advertised => Stage::AdvertiseKeys,
            Self::Shared => Stage::ShareKeys,
            Self::Received => Stage::MaskedInput,
            Self::Masked => Stage::Unmask,
            Self::Done => Stage::Done,
        }
    }
}

/// A neighbour's verified public keys.
#[derive(Clone)]
struct Peer {
    mask_public: [u8; 32],
    encryption_public: [u8; 32],
}

/// One node's secure-aggregation state for one round.
pub struct Client {
    config: RoundConfig,
    me: NodeIdentity,
    keys: RoundKeys,
    ca: TrustedCa,
    stage: ClientStage,
    topology: Option<Topology>,
    my_index: usize,
    /// Verified keys by roster index (the closed neighbourhood at least).
    peers: HashMap<usize, Peer>,
    self_seed: Zeroizing<[u8; 32]>,
    /// Shares held, by owner's roster index: (self-mask seed, mask key).
    held: HashMap<usize, (Share, Share)>,
    /// Roster indices of the nodes that sent shares (U2), sorted.
    committed: Vec<usize>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("round", &self.config.round)
            .field("me", &self.me)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Stage 0: fresh X25519 key pairs for this round and the signed
    /// advertisement to send to the aggregator.
    pub fn new(
        config: RoundConfig,
        signer: &NodeSigner,
        ca: TrustedCa,
    ) -> Result<(Self, KeyAdvertisement), SecAggError> {
        let (keys, adv) = advert::advertise(&config.round, signer)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(seed.as_mut_slice())
            .map_err(|_| SecAggError::Randomness)?;
        Ok((
            Self {
                config,
                me: signer.identity().clone(),
                keys,
                ca,
                stage: ClientStage::Advertised,
                topology: None,
                my_index: 0,
                peers: HashMap::new(),
                self_seed: seed,
                held: HashMap::new(),
                committed: Vec::new(),
            },
            adv,
        ))
    }

    /// This node.
    pub fn identity(&self) -> &NodeIdentity {
        &self.me
    }

    fn expect_stage(&self, want: ClientStage, what: &'static str) -> Result<(), SecAggError> {
        if self.stage == want {
            return Ok(());
        }
        if self.stage.public() as u8 > want.public() as u8 {
            return Err(SecAggError::Replay {
                what,
                node: self.me.clone(),
            });
        }
        Err(SecAggError::WrongStage {
            what,
            stage: self.stage.public(),
        })
    }

    fn check_round(&self, round: &crate::RoundId) -> Result<(), SecAggError> {
        if round != &self.config.round {
            return Err(SecAggError::WrongRound {
                expected: self.config.round.clone(),
                got: round.clone(),
            });
        }
        Ok(())
    }

    fn peer(&self, i: usize) -> Result<&Peer, SecAggError> {
        self.peers.get(&i).ok_or(SecAggError::WrongStage {
            what: "neighbour key",
            stage: self.stage.public(),
        })
    }

    fn topology(&self) -> Result<&Topology, SecAggError> {
        self.topology.as_ref().ok_or(SecAggError::WrongStage {
            what: "topology",
            stage: self.stage.public(),
        })
    }

    /// Stage 1: verifies every advertisement of the roster (signature,
    /// certificate chain, identity; that this node's own keys are
    /// unchanged), computes the graph, and Shamir-shares the self-mask seed
    /// and the mask key among the closed neighbourhood, encrypted to each
    /// neighbour.
    pub fn share_keys(
        &mut self,
        roster: &[KeyAdvertisement],
        now: UnixTime,
    ) -> Result<ShareKeys, SecAggError> {
        let nodes: Vec<NodeIdentity> = roster.iter().map(|a| a.node.clone()).collect();
        self.share_keys_with(&nodes, roster, now)
    }

    /// Stage 1 as SecAgg+ runs it: `roster` is every advertiser's identity
    /// (sorted), `keys` the advertisements of at least this node's graph
    /// neighbours and itself (the only keys it uses). Every advertisement
    /// given is verified (signature, certificate chain, identity; this
    /// node's own keys unchanged); a missing or extra one is refused.
    pub fn share_keys_with(
        &mut self,
        roster: &[NodeIdentity],
        keys: &[KeyAdvertisement],
        now: UnixTime,
    ) -> Result<ShareKeys, SecAggError> {
        self.expect_stage(ClientStage::Advertised, "roster")?;
        if roster.len() > crate::encoding::MAX_NODES as usize || keys.len() > roster.len() {
            return Err(SecAggError::OutOfRange {
                what: "roster",
                reason: format!(
                    "more than {} nodes, or more keys than nodes",
                    crate::encoding::MAX_NODES
                ),
            });
        }
        check_sorted(roster.iter().cloned(), "roster")?;
        check_sorted(keys.iter().map(|a| a.node.clone()), "neighbour keys")?;
        let my_index = roster
            .binary_search(&self.me)
            .map_err(|_| SecAggError::NotParticipant {
                node: self.me.clone(),
                stage: Stage::AdvertiseKeys,
            })?;
        let topology = Topology::of_nodes(&self.config, roster)?;
        let mask_public = PublicKey::from(&self.keys.mask).to_bytes();
        let encryption_public = PublicKey::from(&self.keys.encryption).to_bytes();
        let mut peers = HashMap::with_capacity(keys.len());
        for a in keys {
            let Ok(i) = roster.binary_search(&a.node) else {
                return Err(SecAggError::NotParticipant {
                    node: a.node.clone(),
                    stage: Stage::AdvertiseKeys,
                });
            };
            self.ca.verify(a, &self.config.round, now)?;
            if i == my_index
                && (a.mask_public != mask_public || a.encryption_public != encryption_public)
            {
                return Err(SecAggError::BadAdvertisement {
                    node: a.node.to_string(),
                    reason: "the roster carries keys this node did not advertise".into(),
                });
            }
            peers.insert(
                i,
                Peer {
                    mask_public: a.mask_public,
                    encryption_public: a.encryption_public,
                },
            );
        }
        for &i in topology
            .graph()
            .neighbours(my_index)
            .iter()
            .chain(std::iter::once(&my_index))
        {
            if !peers.contains_key(&i) {
                return Err(SecAggError::BadAdvertisement {
                    node: topology.nodes()[i].to_string(),
                    reason: "the key advertisement of a graph neighbour is missing".into(),
                });
            }
        }
        self.peers = peers;
        // Holders: the closed neighbourhood, x = index + 1.
        let mut holders: Vec<usize> = topology.graph().neighbours(my_index).to_vec();
        holders.push(my_index);
        let xs: Vec<u16> = holders.iter().map(|&i| Topology::x(i)).collect();
        let t = topology.threshold();
        let seed_shares = shamir::split(&self.self_seed, t, &xs)?;
        let key_bytes = Zeroizing::new(self.keys.mask.to_bytes());
        let key_shares = shamir::split(&key_bytes, t, &xs)?;
        let mut out = Vec::with_capacity(holders.len());
        for ((&h, s), k) in holders.iter().zip(seed_shares).zip(key_shares) {
            if h == my_index {
                self.held.insert(h, (s, k));
                continue;
            }
            let to = &topology.nodes()[h];
            let shared =
                crypto::agree(&self.keys.encryption, &self.peer(h)?.encryption_public, to)?;
            let mut plain = Zeroizing::new([0u8; 2 * SHARE_BYTES]);
            plain[..SHARE_BYTES].copy_from_slice(&s.to_bytes());
            plain[SHARE_BYTES..].copy_from_slice(&k.to_bytes());
            out.push(EncryptedShare {
                from: self.me.clone(),
                to: to.clone(),
                ciphertext: crypto::seal(
                    &shared,
                    &self.config.round,
                    &self.me,
                    to,
                    plain.as_slice(),
                )?,
            });
        }
        self.my_index = my_index;
        self.topology = Some(topology);
        self.stage = ClientStage::Shared;
        Ok(ShareKeys {
            round: self.config.round.clone(),
            from: self.me.clone(),
            self_seed_commitment: crypto::commit_seed(
                &self.config.round,
                &self.me,
                &self.self_seed,
            ),
            shares: out,
        })
    }

    /// Stage 1 close: learns who committed (U2) and decrypts the shares its
    /// committed neighbours sent it (exactly one each).
    pub fn receive_shares(&mut self, delivery: &ShareDelivery) -> Result<(), SecAggError> {
        self.expect_stage(ClientStage::Shared, "share delivery")?;
        self.check_round(&delivery.round)?;
        if delivery.to != self.me {
            return Err(SecAggError::WrongSender {
                peer: self.me.clone(),
                claimed: delivery.to.clone(),
            });
        }
        let topology = self.topology()?.clone();
        check_sorted(delivery.committed.iter().cloned(), "committed nodes")?;
        let mut committed = Vec::with_capacity(delivery.committed.len());
        for n in &delivery.committed {
            committed.push(
                topology
                    .index(n)
                    .ok_or_else(|| SecAggError::NotParticipant {
                        node: n.clone(),
                        stage: Stage::ShareKeys,
                    })?,
            );
        }
        if committed.binary_search(&self.my_index).is_err() {
            return Err(SecAggError::NotParticipant {
                node: self.me.clone(),
                stage: Stage::ShareKeys,
            });
        }
        if committed.len() < self.config.min_nodes() {
            return Err(SecAggError::TooFewNodes {
                stage: Stage::ShareKeys,
                have: committed.len(),
                need: self.config.min_nodes(),
            });
        }
        let expected: Vec<usize> = topology
            .graph()
            .neighbours(self.my_index)
            .iter()
            .copied()
            .filter(|i| committed.binary_search(i).is_ok())
            .collect();
        if delivery.shares.len() != expected.len() {
            return Err(SecAggError::WrongShape {
                what: "delivered shares",
                expected: expected.len(),
                got: delivery.shares.len(),
            });
        }
        let mut held = HashMap::with_capacity(expected.len() + 1);
        for s in &delivery.shares {
            let from = topology
                .index(&s.from)
                .filter(|i| expected.binary_search(i).is_ok());
            let Some(from) = from else {
                return Err(SecAggError::NotParticipant {
                    node: s.from.clone(),
                    stage: Stage::ShareKeys,
                });
            };
            if s.to != self.me {
                return Err(SecAggError::BadShareCiphertext {
                    from: s.from.clone(),
                    to: s.to.clone(),
                });
            }
            if s.ciphertext.len() != SHARE_CIPHERTEXT_LEN {
                return Err(SecAggError::WrongShape {
                    what: "share ciphertext",
                    expected: SHARE_CIPHERTEXT_LEN,
                    got: s.ciphertext.len(),
                });
            }
            let shared = crypto::agree(
                &self.keys.encryption,
                &self.peer(from)?.encryption_public,
                &s.from,
            )?;
            let plain = crypto::open(
                &shared,
                &self.config.round,
                &s.from,
                &self.me,
                &s.ciphertext,
            )?;
            if plain.len() != 2 * SHARE_BYTES {
                return Err(SecAggError::BadShareCiphertext {
                    from: s.from.clone(),
                    to: self.me.clone(),
                });
            }
            let x = Topology::x(self.my_index);
            let pair = (
                Share::from_bytes(x, &plain[..SHARE_BYTES])?,
                Share::from_bytes(x, &plain[SHARE_BYTES..])?,
            );
            if held.insert(from, pair).is_some() {
                return Err(SecAggError::Replay {
                    what: "share",
                    node: s.from.clone(),
                });
            }
        }
        // Keep this node's own shares.
        if let Some(own) = self.held.remove(&self.my_index) {
            held.insert(self.my_index, own);
        }
        self.held = held;
        self.committed = committed;
        self.stage = ClientStage::Received;
        Ok(())
    }

    /// Stage 2: the encoded update plus the self mask plus, for every
    /// committed neighbour v, the pairwise mask (added if this node's
    /// identity sorts below v's, subtracted otherwise).
    pub fn masked_input(&mut self, update: &EncodedUpdate) -> Result<MaskedInput, SecAggError> {
        self.expect_stage(ClientStage::Received, "masked input")?;
        let d = self.config.encoding.dimension();
        if update.values().len() != d {
            return Err(SecAggError::WrongShape {
                what: "encoded update",
                expected: d,
                got: update.values().len(),
            });
        }
        let topology = self.topology()?.clone();
        let mut values = update.values().to_vec();
        let mut masks = vec![(
            prg::self_mask_key(&self.self_seed, &self.config.round, &self.me),
            Sign::Add,
        )];
        for &v in topology.graph().neighbours(self.my_index) {
            if self.committed.binary_search(&v).is_err() {
                continue;
            }
            let peer = &topology.nodes()[v];
            let shared = crypto::agree(&self.keys.mask, &self.peer(v)?.mask_public, peer)?;
            let key = prg::pair_mask_key(&shared, &self.config.round, &self.me, peer);
            let sign = if self.me < *peer {
                Sign::Add
            } else {
                Sign::Sub
            };
            masks.push((key, sign));
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        prg::apply_masks(&mut values, &masks, threads);
        self.stage = ClientStage::Masked;
        Ok(MaskedInput {
            round: self.config.round.clone(),
            from: self.me.clone(),
            values,
        })
    }

    /// Stage 3: reveals, for each committed node of its closed
    /// neighbourhood, the self-mask seed share if the aggregator lists it as
    /// a survivor, or the mask-key share if it lists it as dropped. Answers
    /// once per round, and only a request whose lists are sorted, disjoint,
    /// together exactly the committed set, include this node among the
    /// survivors, and count at least `n_min` survivors.
    pub fn unmask(&mut self, request: &UnmaskRequest) -> Result<UnmaskResponse, SecAggError> {
        self.expect_stage(ClientStage::Masked, "unmask request")?;
        self.check_round(&request.round)?;
        let topology = self.topology()?.clone();
        let unsafe_req = |reason: &str| SecAggError::UnsafeUnmaskRequest {
            reason: reason.into(),
        };
        check_sorted(request.survivors.iter().cloned(), "survivors")?;
        check_sorted(request.dropped.iter().cloned(), "dropped")?;
        let to_idx = |list: &[NodeIdentity]| -> Result<Vec<usize>, SecAggError> {
            list.iter()
                .map(|n| {
                    topology
                        .index(n)
                        .ok_or_else(|| unsafe_req("lists a node outside the roster"))
                })
                .collect()
        };
        let survivors = to_idx(&request.survivors)?;
        let dropped = to_idx(&request.dropped)?;
        let mut all: Vec<usize> = survivors.iter().chain(&dropped).copied().collect();
        all.sort_unstable();
        if all != self.committed {
            return Err(unsafe_req(
                "survivors and dropped are not disjoint or are not exactly the committed nodes",
            ));
        }
        if survivors.binary_search(&self.my_index).is_err() {
            return Err(unsafe_req(
                "this node sent its masked input but is not listed as a survivor",
            ));
        }
        if survivors.len() < self.config.min_nodes() {
            return Err(SecAggError::TooFewNodes {
                stage: Stage::Unmask,
                have: survivors.len(),
                need: self.config.min_nodes(),
            });
        }
        let mut owners: Vec<&usize> = self.held.keys().collect();
        owners.sort_unstable();
        let mut shares = Vec::with_capacity(owners.len());
        for &owner in owners {
            let (seed_share, key_share) = &self.held[&owner];
            let (kind, share) = if survivors.binary_search(&owner).is_ok() {
                (SecretKind::SelfMaskSeed, seed_share)
            } else {
                (SecretKind::MaskKey, key_share)
            };
            shares.push(RevealedShare {
                owner: topology.nodes()[owner].clone(),
                kind,
                share: share.to_bytes().to_vec(),
            });
        }
        self.stage = ClientStage::Done;
        // The other share of each owner is never needed again.
        self.held.clear();
        Ok(UnmaskResponse {
            round: self.config.round.clone(),
            from: self.me.clone(),
            shares,
        })
    }
}
