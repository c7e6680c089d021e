//! Why a secure-aggregation step was refused. Every refusal names its reason
//! in structured fields; nothing a peer sends panics.

use crate::{NodeIdentity, RoundId};

/// Which of a node's two Shamir-shared secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretKind {
    /// The seed of the node's self mask (revealed for nodes that survived).
    SelfMaskSeed,
    /// The node's pairwise-mask secret key (revealed for nodes that dropped
    /// after sharing).
    MaskKey,
}

/// The protocol stage a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Signed key advertisements.
    AdvertiseKeys,
    /// Encrypted Shamir shares to neighbours.
    ShareKeys,
    /// Masked inputs.
    MaskedInput,
    /// Unmasking shares.
    Unmask,
    /// The round is over (finished or failed).
    Done,
}

/// Why a secure-aggregation step was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum SecAggError {
    /// A round or encoding parameter is out of range.
    #[error("invalid parameter {name}: {reason}")]
    InvalidParameter {
        /// Which parameter.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Parameters whose worst case could wrap around the modulus.
    #[error("encoding could overflow Z_2^32: worst-case |sum| {bound} >= {limit}")]
    WouldOverflow {
        /// Worst-case absolute value of a coordinate of the sum.
        bound: f64,
        /// The largest representable magnitude (2^31).
        limit: f64,
    },
    /// A message for another round.
    #[error("message for round {got} in round {expected}")]
    WrongRound {
        /// This round.
        expected: RoundId,
        /// The message's round.
        got: RoundId,
    },
    /// A message that does not belong to the current stage.
    #[error("{what} arrived in stage {stage:?}")]
    WrongStage {
        /// What arrived.
        what: &'static str,
        /// The stage the state machine is in.
        stage: Stage,
    },
    /// A second message of a kind a node sends once per round.
    #[error("replayed {what} from {node}")]
    Replay {
        /// What was replayed.
        what: &'static str,
        /// Who sent it.
        node: NodeIdentity,
    },
    /// The authenticated peer is not the node the message claims to be from.
    #[error("peer {peer} sent a message claiming to be {claimed}")]
    WrongSender {
        /// The identity from the mTLS certificate.
        peer: NodeIdentity,
        /// The identity in the message.
        claimed: NodeIdentity,
    },
    /// A node that is not in the set this stage accepts.
    #[error("{node} is not a participant of this stage ({stage:?})")]
    NotParticipant {
        /// Who.
        node: NodeIdentity,
        /// Stage.
        stage: Stage,
    },
    /// A vector or list of the wrong length.
    #[error("{what}: expected length {expected}, got {got}")]
    WrongShape {
        /// What.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// A value outside its valid range.
    #[error("{what} out of range: {reason}")]
    OutOfRange {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// An advertisement's signature, certificate or identity does not verify.
    #[error("key advertisement of {node} refused: {reason}")]
    BadAdvertisement {
        /// Whose advertisement (as claimed in it).
        node: String,
        /// Why.
        reason: String,
    },
    /// An encrypted share does not decrypt or parse (tampered or misrouted).
    #[error("share from {from} to {to} does not decrypt")]
    BadShareCiphertext {
        /// Sender.
        from: NodeIdentity,
        /// Recipient.
        to: NodeIdentity,
    },
    /// Reconstructed shares disagree with what the owner committed to.
    #[error("shares of {node}'s {kind:?} are inconsistent with its commitment")]
    InconsistentShares {
        /// Whose secret.
        node: NodeIdentity,
        /// Which secret.
        kind: SecretKind,
    },
    /// Fewer than `need` shares arrived for a secret: the round fails,
    /// nothing is unmasked.
    #[error("only {have} of the {need} shares needed for {node}'s {kind:?}")]
    NotEnoughShares {
        /// Whose secret.
        node: NodeIdentity,
        /// Which secret.
        kind: SecretKind,
        /// Shares received.
        have: usize,
        /// Threshold t.
        need: usize,
    },
    /// Too few nodes remain for the round to go on.
    #[error("only {have} nodes in stage {stage:?}, need at least {need}")]
    TooFewNodes {
        /// Stage.
        stage: Stage,
        /// Nodes remaining.
        have: usize,
        /// Nodes needed.
        need: usize,
    },
    /// The node was asked to reveal both secrets of one peer, or a list that
    /// contradicts what it knows: it refuses to answer.
    #[error("unmask request refused: {reason}")]
    UnsafeUnmaskRequest {
        /// Why.
        reason: String,
    },
    /// A key agreement gave the all-zero output (a low-order public key).
    #[error("non-contributory key agreement with {peer}")]
    WeakKey {
        /// The peer whose public key is weak.
        peer: NodeIdentity,
    },
    /// The system's secure random generator failed.
    #[error("system randomness unavailable")]
    Randomness,
    /// Noise or accounting failed in the privacy crate.
    #[error("privacy: {0}")]
    Privacy(#[from] veil_privacy::PrivacyError),
}
