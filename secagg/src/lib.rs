//! # veil-secagg
//!
//! Secure aggregation of federated model updates for Veil, in the spirit of
//! SecAgg (Bonawitz et al., CCS 2017) and SecAgg+ (Bell et al., CCS 2020),
//! with noise that survives aggregation exactly (the distributed discrete
//! Gaussian of Kairouz, Liu and Steinke, ICML 2021). The aggregator learns
//! the sum of the surviving nodes' noised updates and nothing else about an
//! individual update.
//!
//! This crate is the protocol only: pure state machines ([`Client`] for the
//! node, [`Server`] for the aggregator) and the wire messages between them
//! ([`messages`]). It never touches the network, a database or a clock (the
//! caller passes `now` for certificate checks), and never draws DP noise
//! from anything but OpenDP (through `veil-privacy`).
//!
//! # Protocol
//! 0. **Advertise keys** ([`Client::new`]): two fresh X25519 key pairs per
//!    round (pairwise masks, share encryption), signed with the node's
//!    mTLS key ([`advert`]). The aggregator relays the sorted roster.
//! 1. **Share keys** ([`Client::share_keys_with`]): every node gets the
//!    roster's identities and its neighbours' advertisements
//!    ([`Server::neighbour_keys`]), verifies each of them, computes the same
//!    neighbour graph ([`graph`]) from the identities,
//!    Shamir-shares ([`shamir`]) its self-mask seed and mask secret key
//!    among its closed neighbourhood (threshold t) and encrypts each share
//!    to its neighbour (ChaCha20-Poly1305 under an X25519 + HKDF key).
//! 2. **Masked input** ([`Client::masked_input`]): the encoded update
//!    ([`encoding`]) plus a self mask plus, for each neighbour that shared,
//!    a pairwise mask (ChaCha20 stream from an X25519 + HKDF seed, [`prg`]),
//!    added by the lower identity and subtracted by the higher, modulo 2^32.
//! 3. **Unmask** ([`Client::unmask`]): each survivor reveals, per
//!    neighbour, the self-mask seed share of a survivor or the mask-key
//!    share of a node that dropped after sharing, never both. The server
//!    ([`Server::finish`]) reconstructs and removes all masks, or, missing
//!    t shares of any secret, fails the round without removing any.
//!
//! # Threat model
//! **Covered: an honest-but-curious aggregator colluding with at most t - 1
//! nodes** of any neighbourhood. It follows the protocol (in particular it
//! sends every survivor the same unmask request), but tries to learn more
//! from what it sees. It sees masked inputs, encrypted shares it cannot
//! open (keys from X25519 agreements it is not party to), and at unmasking
//! at most one kind of share per node from each honest holder. A submitted
//! input stays hidden behind its self mask, whose seed needs t shares the
//! honest holders reveal only if the node is listed as a survivor, in which
//! case its pairwise mask key is never reconstructed (t > (k + 1) / 2 holders
//! cannot give t shares of both). Colluding nodes add fewer than t shares.
//! A single masked input is uniform given everything else (tested
//! statistically). Key substitution is detected: advertisements are signed
//! with the nodes' certificate keys and verified against the CA and the
//! SPIFFE identity by every node. What the aggregator learns is the sum,
//! which carries the DDG noise of at least `n_min` nodes: its cost is
//! [`EncodingParams::round_rho`], the same (up to a negligible term) as the
//! published model's.
//!
//! **Not covered: a malicious aggregator that lies about dropouts.** It
//! could send some holders of node u a request listing u as a survivor and
//! others one listing u as dropped, hoping to collect t self-mask-seed
//! shares *and* t mask-key shares of u and so unmask u's input; or claim
//! that nodes which did submit dropped. Answering one request per round and
//! t > (k + 1) / 2 make the split-view attack need more than
//! 2t - (k + 1) colluding holders, but we claim no proof for that setting.
//! What would cover it: the consistency round of Bonawitz et al. (Sec. 4,
//! malicious variant: each survivor signs the survivor list it received and
//! every node checks t matching signatures before revealing anything), with
//! t > 2(k + 1) / 3, plus the per-node checks of Bell et al. (a minimum
//! number of live neighbours before revealing). Nor covered: a malicious
//! *node* submitting an input outside the norm bound (it can bias the sum
//! but learns nothing; bounding it needs a zero-knowledge
//! range proof, e.g. ACORN, Bell et al. 2023), and the graph's seed being
//! chosen by the aggregator (it is public and bound to the roster, but an
//! aggregator that grinds rosters could bias neighbourhoods; a seed from a
//! commit-reveal among nodes would close it).
//!
//! # Citations
//! * Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving
//!   Machine Learning (CCS 2017).
//! * Bell, Bonawitz, Gascón, Lepoint, Raykova. Secure Single-Server
//!   Aggregation with (Poly)Logarithmic Overhead (CCS 2020).
//! * Kairouz, Liu, Steinke. The Distributed Discrete Gaussian Mechanism for
//!   Federated Learning with Secure Aggregation (ICML 2021).
#![warn(missing_docs)]

pub mod advert;
pub mod client;
mod crypto;
pub mod encoding;
pub mod error;
pub mod graph;
pub mod ids;
pub mod messages;
pub mod prg;
pub mod round;
pub mod server;
pub mod shamir;

pub use advert::{KeyAdvertisement, NodeSigner, TrustedCa};
pub use client::Client;
pub use encoding::{
    EncodedUpdate, EncodingParams, RoundedUpdate, add_noise, clip_and_round, decode_sum, encode,
};
pub use error::{SecAggError, SecretKind, Stage};
pub use ids::{NodeIdentity, RoundId};
pub use messages::AggregateSum;
pub use round::{RoundConfig, Topology};
pub use server::Server;

#[cfg(test)]
mod tests;
