//! The SecAgg+ neighbour graph: a Harary graph H(k, n) over the round's
//! participants, with positions on the ring assigned by a random
//! permutation derived from a public seed (Bell et al. CCS 2020, Sec. 4:
//! "a random relabelling of the Harary graph"). Every party computes the
//! same graph from the same seed and roster; nothing about it is secret.
//!
//! Node i sits at ring position `pi(i)` and is a neighbour of the k/2 nodes
//! on each side of it, so every node has exactly k neighbours (k even), or
//! all n - 1 others when k >= n - 1 (the complete graph, plain SecAgg).
//!
//! # Choice of k and t
//! [`default_degree`] takes `k = 2 ceil(log2 n) + 2` (even), capped at
//! `n - 1`: 12 neighbours for n = 20, 16 for n = 100, 22 for n = 1000.
//! Bell et al. show `k = O(log n)` keeps the honest survivors' graph
//! connected (so no honest input can be isolated) with failure probability
//! falling exponentially in the constant; our constant 2 (plus 2) is the
//! practical choice Flower and the paper's experiments make at these sizes,
//! not a proven bound for every corruption rate.
//!
//! A node's Shamir shares go to its *closed* neighbourhood (its k neighbours
//! and itself, k + 1 holders). [`default_threshold`] takes
//! `t = floor(2 (k + 1) / 3) + 1`: more than half of the holders (so the
//! aggregator can never collect t shares of *both* secrets of a node from
//! honest holders answering one consistent dropout list), and robust to
//! just under a third of a neighbourhood dropping out.

use chacha20::{
    ChaCha20Rng,
    rand_core::{Rng, SeedableRng},
};

use crate::SecAggError;

/// Degree k for n participants: `min(n - 1, 2 ceil(log2 n) + 2)`.
pub fn default_degree(n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let log = usize::BITS - (n - 1).leading_zeros(); // ceil(log2 n)
    (2 * log as usize + 2).min(n - 1)
}

/// Threshold t for degree k: `floor(2 (k + 1) / 3) + 1`.
pub fn default_threshold(k: usize) -> usize {
    (2 * (k + 1) / 3 + 1).min(k + 1)
}

/// The neighbour graph of one round, over roster indices `0..n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourGraph {
    k: usize,
    neighbours: Vec<Vec<usize>>,
}

/// Uniform index in `0..bound` (bound >= 1) by rejection sampling.
fn uniform_below(rng: &mut ChaCha20Rng, bound: u64) -> u64 {
    let zone = u64::MAX - (u64::MAX % bound);
    loop {
        let v = rng.next_u64();
        if v < zone {
            return v % bound;
        }
    }
}

impl NeighbourGraph {
    /// The graph of `n` nodes with degree `k` (even, or >= n - 1) from
    /// `seed`.
    pub fn new(n: usize, k: usize, seed: [u8; 32]) -> Result<Self, SecAggError> {
        if n == 0 {
            return Err(SecAggError::InvalidParameter {
                name: "n",
                reason: "a graph needs at least one node".into(),
            });
        }
        let complete = k >= n - 1;
        if !complete && k % 2 == 1 {
            return Err(SecAggError::InvalidParameter {
                name: "k",
                reason: format!("degree {k} must be even unless it is >= n - 1 = {}", n - 1),
            });
        }
        let neighbours = if complete {
            (0..n)
                .map(|i| (0..n).filter(|&j| j != i).collect())
                .collect()
        } else {
            // Fisher-Yates from the seed: node i sits at position pos[i].
            let mut rng = ChaCha20Rng::from_seed(seed);
            let mut at: Vec<usize> = (0..n).collect(); // at[position] = node
            for i in (1..n).rev() {
                let j = uniform_below(&mut rng, i as u64 + 1) as usize;
                at.swap(i, j);
            }
            let mut pos = vec![0; n];
            for (p, &node) in at.iter().enumerate() {
                pos[node] = p;
            }
            let half = k / 2;
            (0..n)
                .map(|i| {
                    let mut nb: Vec<usize> = (1..=half)
                        .flat_map(|d| [at[(pos[i] + d) % n], at[(pos[i] + n - d) % n]])
                        .collect();
                    nb.sort_unstable();
                    nb
                })
                .collect()
        };
        Ok(Self {
            k: if complete { n - 1 } else { k },
            neighbours,
        })
    }

    /// The degree.
    pub fn degree(&self) -> usize {
        self.k
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.neighbours.len()
    }

    /// Never true (a graph has at least one node).
    pub fn is_empty(&self) -> bool {
        self.neighbours.is_empty()
    }

    /// The neighbours of `i` (sorted; empty if `i` is out of range).
    pub fn neighbours(&self, i: usize) -> &[usize] {
        self.neighbours.get(i).map_or(&[], Vec::as_slice)
    }

    /// Whether `i` and `j` are neighbours.
    pub fn adjacent(&self, i: usize, j: usize) -> bool {
        self.neighbours(i).binary_search(&j).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn defaults() {
        assert_eq!(default_degree(100), 16);
        assert_eq!(default_degree(20), 12);
        assert_eq!(default_degree(5), 4);
        assert_eq!(default_threshold(16), 12);
        assert_eq!(default_threshold(4), 4);
        for k in 0..200 {
            let t = default_threshold(k);
            assert!(2 * t > k + 1 && t <= k + 1, "k {k} t {t}");
        }
    }

    proptest! {
        #[test]
        fn symmetric_regular_and_deterministic(n in 2usize..80, seed in any::<[u8; 32]>()) {
            let k = default_degree(n);
            let g = NeighbourGraph::new(n, k, seed).unwrap();
            prop_assert_eq!(&g, &NeighbourGraph::new(n, k, seed).unwrap());
            for i in 0..n {
                prop_assert_eq!(g.neighbours(i).len(), g.degree());
                prop_assert!(!g.adjacent(i, i));
                for &j in g.neighbours(i) {
                    prop_assert!(g.adjacent(j, i));
                }
            }
        }
    }

    #[test]
    fn odd_degree_refused_below_complete() {
        assert!(NeighbourGraph::new(10, 3, [0; 32]).is_err());
        assert!(NeighbourGraph::new(4, 3, [0; 32]).is_ok());
    }
}
