//! What every party of a round agrees on: the public round configuration,
//! and the topology (roster order, neighbour graph, threshold) fixed when
//! the key advertisements close.

use ring::digest;

use crate::{
    EncodingParams, KeyAdvertisement, NodeIdentity, RoundId, SecAggError,
    graph::{NeighbourGraph, default_degree, default_threshold},
};

/// Domain separation of the graph seed.
const GRAPH_CONTEXT: &[u8] = b"veil-secagg/v1/graph";

/// The public parameters of one secure round, sent when the round opens.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundConfig {
    /// The round.
    pub round: RoundId,
    /// A public random seed chosen when the round opens (the graph's
    /// randomness; see [`Topology`]).
    pub public_seed: [u8; 32],
    /// Encoding and noise parameters (`n_min` is also the fewest nodes any
    /// stage may continue with).
    pub encoding: EncodingParams,
    /// Degree override (default [`default_degree`] of the roster size).
    pub degree: Option<usize>,
    /// Threshold override (default [`default_threshold`] of the degree).
    pub threshold: Option<usize>,
}

impl RoundConfig {
    /// A round with the default degree and threshold.
    pub fn new(round: RoundId, public_seed: [u8; 32], encoding: EncodingParams) -> Self {
        Self {
            round,
            public_seed,
            encoding,
            degree: None,
            threshold: None,
        }
    }

    /// Fewest nodes any stage may continue with.
    pub fn min_nodes(&self) -> usize {
        self.encoding.n_min() as usize
    }
}

/// The roster and graph of a round, identical for every party: nodes sorted
/// by identity (index i has Shamir x-coordinate i + 1), a Harary graph of
/// degree k from `SHA-256(context, round, public seed, roster)`, threshold t
/// over each closed neighbourhood (k + 1 holders).
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    nodes: Vec<NodeIdentity>,
    graph: NeighbourGraph,
    threshold: usize,
}

impl Topology {
    /// The topology of `roster` (sorted strictly by node; the caller checks)
    /// under `config`.
    pub fn new(config: &RoundConfig, roster: &[KeyAdvertisement]) -> Result<Self, SecAggError> {
        let nodes: Vec<NodeIdentity> = roster.iter().map(|a| a.node.clone()).collect();
        Self::of_nodes(config, &nodes)
    }

    /// The topology of the roster's identities `roster` (sorted strictly;
    /// the caller checks) under `config`: the graph depends only on the
    /// identities, so a node can compute it from the roster's names and
    /// verify only its neighbours' keys.
    pub fn of_nodes(config: &RoundConfig, roster: &[NodeIdentity]) -> Result<Self, SecAggError> {
        let n = roster.len();
        if n < config.min_nodes().max(2) {
            return Err(SecAggError::TooFewNodes {
                stage: crate::Stage::AdvertiseKeys,
                have: n,
                need: config.min_nodes().max(2),
            });
        }
        if n > crate::encoding::MAX_NODES as usize || n > config.encoding.n_max() as usize {
            return Err(SecAggError::OutOfRange {
                what: "roster",
                reason: format!("{n} nodes, more than n_max = {}", config.encoding.n_max()),
            });
        }
        let k = config
            .degree
            .unwrap_or_else(|| default_degree(n))
            .min(n - 1);
        let t = config.threshold.unwrap_or_else(|| default_threshold(k));
        if t == 0 || t > k + 1 || 2 * t <= k + 1 {
            return Err(SecAggError::InvalidParameter {
                name: "threshold",
                reason: format!("need (k + 1) / 2 < t <= k + 1 = {}, got {t}", k + 1),
            });
        }
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(GRAPH_CONTEXT);
        for part in [config.round.as_str().as_bytes(), &config.public_seed[..]] {
            ctx.update(&(part.len() as u32).to_be_bytes());
            ctx.update(part);
        }
        for a in roster {
            ctx.update(&(a.as_str().len() as u32).to_be_bytes());
            ctx.update(a.as_str().as_bytes());
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(ctx.finish().as_ref());
        Ok(Self {
            nodes: roster.to_vec(),
            graph: NeighbourGraph::new(n, k, seed)?,
            threshold: t,
        })
    }

    /// Nodes in roster order.
    pub fn nodes(&self) -> &[NodeIdentity] {
        &self.nodes
    }
    /// Roster index of `node`.
    pub fn index(&self, node: &NodeIdentity) -> Option<usize> {
        self.nodes.binary_search(node).ok()
    }
    /// The neighbour graph.
    pub fn graph(&self) -> &NeighbourGraph {
        &self.graph
    }
    /// Threshold t.
    pub fn threshold(&self) -> usize {
        self.threshold
    }
    /// Shamir x-coordinate of roster index `i` (i < 10,000 so it fits).
    pub fn x(i: usize) -> u16 {
        (i + 1) as u16
    }
}

/// Checks a roster is sorted strictly by node (no duplicates).
pub(crate) fn check_sorted(
    nodes: impl Iterator<Item = NodeIdentity>,
    what: &'static str,
) -> Result<(), SecAggError> {
    let mut prev: Option<NodeIdentity> = None;
    for n in nodes {
        if prev.as_ref().is_some_and(|p| p >= &n) {
            return Err(SecAggError::OutOfRange {
                what,
                reason: "not sorted by node or has duplicates".into(),
            });
        }
        prev = Some(n);
    }
    Ok(())
}
