//! The messages that cross the wire, in stage order (the integrator maps
//! them onto `proto/veil/v1`). Everything here arrives from a peer and is
//! validated by the state machine that receives it.

use crate::{NodeIdentity, RoundId, SecretKind, shamir::SHARE_BYTES};

/// Length of an encrypted share: two serialized shares plus the
/// ChaCha20-Poly1305 tag.
pub const SHARE_CIPHERTEXT_LEN: usize = 2 * SHARE_BYTES + 16;

/// One node's Shamir shares (of its self-mask seed and its mask key) for
/// one neighbour, encrypted to that neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedShare {
    /// The owner of the shared secrets.
    pub from: NodeIdentity,
    /// The neighbour that can decrypt it.
    pub to: NodeIdentity,
    /// ChaCha20-Poly1305 ciphertext, [`SHARE_CIPHERTEXT_LEN`] bytes.
    pub ciphertext: Vec<u8>,
}

/// Stage 1, node -> aggregator: shares for every neighbour and a commitment
/// to the self-mask seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareKeys {
    /// The round.
    pub round: RoundId,
    /// The sender.
    pub from: NodeIdentity,
    /// SHA-256 commitment to the self-mask seed (checked at unmasking).
    pub self_seed_commitment: [u8; 32],
    /// One per neighbour in the graph.
    pub shares: Vec<EncryptedShare>,
}

/// Stage 1 close, aggregator -> node: who sent shares (U2, sorted) and the
/// shares addressed to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareDelivery {
    /// The round.
    pub round: RoundId,
    /// The recipient.
    pub to: NodeIdentity,
    /// Every node that sent its shares, sorted.
    pub committed: Vec<NodeIdentity>,
    /// The shares of this node's neighbours in `committed`.
    pub shares: Vec<EncryptedShare>,
}

/// Stage 2, node -> aggregator: the masked input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedInput {
    /// The round.
    pub round: RoundId,
    /// The sender.
    pub from: NodeIdentity,
    /// The encoded update plus masks, modulo 2^32.
    pub values: Vec<u32>,
}

/// Stage 2 close, aggregator -> each survivor: who survived (their self
/// masks will be removed) and who dropped after sharing (their pairwise
/// masks will be removed). Both sorted; together exactly `committed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// The round.
    pub round: RoundId,
    /// Nodes whose masked input arrived.
    pub survivors: Vec<NodeIdentity>,
    /// Nodes that shared but sent no masked input.
    pub dropped: Vec<NodeIdentity>,
}

/// One share revealed at unmasking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevealedShare {
    /// Whose secret.
    pub owner: NodeIdentity,
    /// Which secret (self-mask seed for survivors, mask key for dropped).
    pub kind: SecretKind,
    /// The share's values ([`SHARE_BYTES`] bytes; the x-coordinate is the
    /// sender's).
    pub share: Vec<u8>,
}

/// Stage 3, node -> aggregator: the shares this node reveals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskResponse {
    /// The round.
    pub round: RoundId,
    /// The sender.
    pub from: NodeIdentity,
    /// One per neighbour (and itself) in `committed`.
    pub shares: Vec<RevealedShare>,
}

/// The outcome: the sum of the survivors' encoded updates modulo 2^32.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateSum {
    /// The sum, modulo 2^32 (decode with [`crate::decode_sum`]).
    pub values: Vec<u32>,
    /// Whose updates are in it (sorted).
    pub contributors: Vec<NodeIdentity>,
    /// Who shared but dropped before masking (sorted).
    pub dropped: Vec<NodeIdentity>,
}
