//! RFC 9162 (Certificate Transparency v2) Merkle tree hashing and proofs.
//!
//! - leaf hash `SHA-256(0x00 || entry bytes)`, interior node
//!   `SHA-256(0x01 || left || right)`, root of the empty tree `SHA-256("")`
//!   (RFC 9162 section 2.1.1);
//! - inclusion proofs (section 2.1.3) and consistency proofs (section 2.1.4),
//!   generated as `PATH` / `PROOF` and verified with the section 2.1.3.2 and
//!   2.1.4.2 algorithms;
//! - [`MerkleTree`], the incremental tree the aggregator appends to, and
//!   functions that work from a slice of leaf hashes.
//!
//! The tree holds hashes only; it never sees what was hashed, so it never holds
//! personal data.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of a SHA-256 hash in bytes.
pub const HASH_LEN: usize = 32;

/// A SHA-256 hash: a leaf hash, an interior node, or a tree root.
///
/// `Display` is standard base64 (as in checkpoints and proof files); `Debug`
/// is lowercase hex. Serialised (serde) as a base64 string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; HASH_LEN]);

impl Hash {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// Standard base64 with padding (RFC 4648 section 4).
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Parses canonical standard base64 of exactly 32 bytes; `None` otherwise.
    pub fn from_base64(s: &str) -> Option<Self> {
        let bytes = BASE64.decode(s).ok()?;
        let arr: [u8; HASH_LEN] = bytes.try_into().ok()?;
        // The engine rejects non-zero trailing bits, so this is canonical; the
        // re-encoding check keeps that true whatever the engine's defaults.
        (BASE64.encode(arr) == s).then_some(Self(arr))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 lowercase hex digits; `None` otherwise.
    pub fn from_hex(s: &str) -> Option<Self> {
        if !is_hex_hash(s) {
            return None;
        }
        let mut arr = [0u8; HASH_LEN];
        hex::decode_to_slice(s, &mut arr).ok()?;
        Some(Self(arr))
    }
}

/// Whether `s` is 64 lowercase hex digits (what [`Hash::from_hex`] accepts),
/// checked without decoding.
pub fn is_hex_hash(s: &str) -> bool {
    // A fold, not `all`: no early exit, so the loop is vectorised.
    s.len() == 2 * HASH_LEN
        && s.bytes()
            .fold(true, |ok, b| ok & matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hash::from_base64(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not a base64 SHA-256 hash")))
    }
}

/// Why a Merkle operation was refused or a proof did not verify.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MerkleError {
    /// A leaf index is not below the tree size.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A tree size exceeds the number of leaves available.
    #[error("tree size {size} exceeds the {available} leaves available")]
    SizeOutOfRange {
        /// The requested size.
        size: u64,
        /// Leaves available.
        available: u64,
    },
    /// A consistency proof was asked from a larger to a smaller tree.
    #[error("old tree size {old} is larger than new tree size {new}")]
    SizesReversed {
        /// The old size.
        old: u64,
        /// The new size.
        new: u64,
    },
    /// An inclusion proof does not verify.
    #[error("inclusion proof does not verify: {reason}")]
    InclusionProofInvalid {
        /// What failed.
        reason: &'static str,
    },
    /// A consistency proof does not verify.
    #[error("consistency proof does not verify: {reason}")]
    ConsistencyProofInvalid {
        /// What failed.
        reason: &'static str,
    },
}

fn sha256_parts(parts: &[&[u8]]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    for p in parts {
        ctx.update(p);
    }
    let digest = ctx.finish();
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(digest.as_ref());
    Hash(out)
}

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    sha256_parts(&[])
}

/// Leaf hash of an entry: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256_parts(&[&[0x00], data])
}

/// Interior node hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256_parts(&[&[0x01], &left.0, &right.0])
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// RFC 9162 `PATH(m, D[start..start+n])`, leaf to root, with `sub(start, len)`
/// giving the hash of any subtree the recursion visits.
fn path(m: u64, start: u64, n: u64, sub: &impl Fn(u64, u64) -> Hash, out: &mut Vec<Hash>) {
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        path(m, start, k, sub, out);
        out.push(sub(start + k, n - k));
    } else {
        path(m - k, start + k, n - k, sub, out);
        out.push(sub(start, k));
    }
}

/// RFC 9162 `SUBPROOF(m, D[start..start+n], b)`.
fn subproof(
    m: u64,
    start: u64,
    n: u64,
    complete: bool,
    sub: &impl Fn(u64, u64) -> Hash,
    out: &mut Vec<Hash>,
) {
    if m == n {
        if !complete {
            out.push(sub(start, n));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, start, k, complete, sub, out);
        out.push(sub(start + k, n - k));
    } else {
        subproof(m - k, start + k, n - k, false, sub, out);
        out.push(sub(start, k));
    }
}

fn inclusion_path(
    index: u64,
    size: u64,
    sub: &impl Fn(u64, u64) -> Hash,
) -> Result<Vec<Hash>, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut out = Vec::new();
    path(index, 0, size, sub, &mut out);
    Ok(out)
}

fn consistency_path(
    old: u64,
    new: u64,
    sub: &impl Fn(u64, u64) -> Hash,
) -> Result<Vec<Hash>, MerkleError> {
    if old > new {
        return Err(MerkleError::SizesReversed { old, new });
    }
    let mut out = Vec::new();
    if old > 0 && old < new {
        subproof(old, 0, new, true, sub, &mut out);
    }
    Ok(out)
}

/// `MTH` of a slice of leaf hashes, by the RFC's recursion (O(n) hashing).
fn slice_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            // n >= 2 fits u64 and the split point is < n, so it fits usize.
            let k = split_point(n as u64) as usize;
            node_hash(&slice_root(&leaves[..k]), &slice_root(&leaves[k..]))
        }
    }
}

fn slice_sub(leaves: &[Hash]) -> impl Fn(u64, u64) -> Hash + '_ {
    // Only called by `path`/`subproof` with ranges inside `leaves`.
    move |start, len| slice_root(&leaves[start as usize..(start + len) as usize])
}

/// Root (`MTH`) of the tree whose leaves are `leaves`.
pub fn root_from_leaves(leaves: &[Hash]) -> Hash {
    slice_root(leaves)
}

/// Inclusion proof (audit path) for leaf `index` in the tree of all `leaves`.
pub fn inclusion_proof_from_leaves(
    index: u64,
    leaves: &[Hash],
) -> Result<InclusionProof, MerkleError> {
    let size = leaves.len() as u64;
    let path = inclusion_path(index, size, &slice_sub(leaves))?;
    Ok(InclusionProof {
        index,
        tree_size: size,
        path,
    })
}

/// Consistency proof from the first `old_size` leaves to all `leaves`.
pub fn consistency_proof_from_leaves(
    old_size: u64,
    leaves: &[Hash],
) -> Result<ConsistencyProof, MerkleError> {
    let new_size = leaves.len() as u64;
    let path = consistency_path(old_size, new_size, &slice_sub(leaves))?;
    Ok(ConsistencyProof {
        old_size,
        new_size,
        path,
    })
}

/// Recomputes the root from a leaf hash and its inclusion path
/// (RFC 9162 section 2.1.3.2, steps 1-4; step 5's `sn == 0` check included).
pub fn root_from_inclusion_path(
    leaf: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
) -> Result<Hash, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf;
    for p in path {
        if snode == 0 {
            return Err(MerkleError::InclusionProofInvalid {
                reason: "proof is longer than the tree is deep",
            });
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(MerkleError::InclusionProofInvalid {
            reason: "proof is shorter than the tree is deep",
        });
    }
    Ok(r)
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with `root`
/// (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    path: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    let computed = root_from_inclusion_path(leaf, index, size, path)?;
    if computed == *root {
        Ok(())
    } else {
        Err(MerkleError::InclusionProofInvalid {
            reason: "computed root differs",
        })
    }
}

/// Verifies that the tree of `new_size` leaves with `new_root` extends the
/// tree of `old_size` leaves with `old_root` (RFC 9162 section 2.1.4.2).
///
/// Edge cases beyond the RFC's `0 < old < new`: equal sizes need an empty
/// proof and equal roots; an old size of 0 needs an empty proof and the
/// empty-tree root as `old_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    path: &[Hash],
) -> Result<(), MerkleError> {
    let invalid = |reason| Err(MerkleError::ConsistencyProofInvalid { reason });
    if old_size > new_size {
        return Err(MerkleError::SizesReversed {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !path.is_empty() {
            return invalid("proof must be empty for equal sizes");
        }
        return if old_root == new_root {
            Ok(())
        } else {
            invalid("roots differ at equal sizes")
        };
    }
    if old_size == 0 {
        if !path.is_empty() {
            return invalid("proof must be empty from the empty tree");
        }
        return if *old_root == empty_root() {
            Ok(())
        } else {
            invalid("old root is not the empty-tree root")
        };
    }
    // RFC 9162 section 2.1.4.2, 0 < old_size < new_size.
    let Some((first, rest)) = path.split_first() else {
        return invalid("proof is empty");
    };
    let (seed, rest) = if old_size.is_power_of_two() {
        (old_root, path)
    } else {
        (first, rest)
    };
    let mut fnode = old_size - 1;
    let mut snode = new_size - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *seed;
    let mut sr = *seed;
    for c in rest {
        if snode == 0 {
            return invalid("proof is longer than needed");
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return invalid("proof is shorter than needed");
    }
    if fr != *old_root {
        return invalid("old root differs");
    }
    if sr != *new_root {
        return invalid("new root differs");
    }
    Ok(())
}

/// An inclusion proof: leaf `index` is in the tree of `tree_size` leaves.
///
/// JSON (one element of `proofs.json`):
/// `{"index":5,"tree_size":10,"path":["<base64 hash>",...]}`, path leaf to root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionProof {
    /// 0-based leaf index (the entry's `seq`).
    pub index: u64,
    /// Size of the tree the proof is for.
    pub tree_size: u64,
    /// Sibling hashes, leaf to root.
    pub path: Vec<Hash>,
}

impl InclusionProof {
    /// Verifies the proof for `leaf` against `root`.
    pub fn verify(&self, leaf: &Hash, root: &Hash) -> Result<(), MerkleError> {
        verify_inclusion(leaf, self.index, self.tree_size, &self.path, root)
    }
}

/// A consistency proof: the tree of `new_size` leaves extends that of `old_size`.
///
/// JSON (`consistency.json`): `{"old_size":8,"new_size":10,"path":["<base64 hash>",...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyProof {
    /// Size of the older tree.
    pub old_size: u64,
    /// Size of the newer tree.
    pub new_size: u64,
    /// Proof hashes in RFC 9162 `PROOF` order.
    pub path: Vec<Hash>,
}

impl ConsistencyProof {
    /// Verifies the proof between the two roots.
    pub fn verify(&self, old_root: &Hash, new_root: &Hash) -> Result<(), MerkleError> {
        verify_consistency(self.old_size, self.new_size, old_root, new_root, &self.path)
    }

    /// Serialises as the `consistency.json` format.
    pub fn to_json(&self) -> String {
        // A struct of integers and strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the `consistency.json` format strictly (unknown fields rejected).
    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// Below this many leaves, [`MerkleTree::from_leaf_vec`] stays on the
/// calling thread.
const PARALLEL_MIN_LEAVES: usize = 1 << 14;

/// Below this many nodes, a level is hashed on the calling thread.
const PARALLEL_MIN_NODES: usize = 1 << 12;

/// Most threads [`MerkleTree::from_leaf_vec`] uses.
const MAX_THREADS: usize = 8;

/// The level above `below`: the parent of `below[2i]` and `below[2i + 1]`
/// for each `i` (an odd last node of `below` has no parent yet), hashed on up
/// to `threads` threads (if there are at least `parallel_min_nodes`), each
/// taking a run of pairs in order.
fn parents(below: &[Hash], threads: usize, parallel_min_nodes: usize) -> Vec<Hash> {
    let hash_run = |run: &[Hash], out: &mut Vec<Hash>| {
        out.extend(
            run.chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1])),
        );
    };
    let count = below.len() / 2;
    let mut level = Vec::with_capacity(count);
    if threads <= 1 || count < parallel_min_nodes {
        hash_run(below, &mut level);
        return level;
    }
    // An even number of nodes per run, so no pair straddles two runs.
    let per_run = 2 * count.div_ceil(threads);
    let mut runs = below.chunks(per_run);
    let first = runs.next().unwrap_or_default();
    std::thread::scope(|scope| {
        // The first run is hashed here, the others on their own threads (or
        // here too, if a thread cannot be started).
        let others: Vec<_> = runs
            .map(|run| {
                std::thread::Builder::new()
                    .name("merkle-level".into())
                    .spawn_scoped(scope, move || {
                        let mut out = Vec::with_capacity(run.len() / 2);
                        hash_run(run, &mut out);
                        out
                    })
                    .map_err(|_| run)
            })
            .collect();
        hash_run(first, &mut level);
        for other in others {
            match other {
                Ok(handle) => match handle.join() {
                    Ok(out) => level.extend_from_slice(&out),
                    // A panic in a hashing thread is a bug: propagate it.
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(run) => hash_run(run, &mut level),
            }
        }
    });
    level
}

/// An append-only RFC 9162 Merkle tree over leaf hashes, kept in memory.
///
/// Appending is O(1) amortised (O(log n) worst case) hashing; the root at any
/// size and every proof are O(log n) hashing, because the hash of every
/// complete, aligned subtree is cached (about 2n hashes in all).
#[derive(Clone, Debug, Default)]
pub struct MerkleTree {
    /// `levels[h][i]` is the hash of leaves `[i << h, (i + 1) << h)`;
    /// `levels[0]` holds the leaf hashes.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self {
            levels: vec![Vec::new()],
        }
    }

    /// A tree with the given leaf hashes, in order.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Self {
        Self::from_leaf_vec(leaves.into_iter().collect())
    }

    /// A tree with the given leaf hashes, in order: the same tree as
    /// [`from_leaves`](Self::from_leaves) or [`push`](Self::push)ing each
    /// leaf, built a level at a time. A large level is hashed on several
    /// threads, each writing its own run of the next level, so the result
    /// does not depend on how the work was split.
    pub fn from_leaf_vec(leaves: Vec<Hash>) -> Self {
        let threads = if leaves.len() < PARALLEL_MIN_LEAVES {
            1
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS))
        };
        Self::build(leaves, threads, PARALLEL_MIN_NODES)
    }

    /// [`from_leaf_vec`](Self::from_leaf_vec) on up to `threads` threads,
    /// for levels of at least `parallel_min_nodes` nodes.
    fn build(leaves: Vec<Hash>, threads: usize, parallel_min_nodes: usize) -> Self {
        let mut levels = vec![leaves];
        while let Some(below) = levels.last().filter(|l| l.len() >= 2) {
            let level = parents(below, threads, parallel_min_nodes);
            levels.push(level);
        }
        Self { levels }
    }

    /// Appends a leaf hash; returns its index.
    pub fn push(&mut self, leaf: Hash) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        let index = self.levels[0].len() as u64;
        self.levels[0].push(leaf);
        let mut h = 0;
        while self.levels[h].len().is_multiple_of(2) {
            let n = self.levels[h].len();
            let parent = node_hash(&self.levels[h][n - 2], &self.levels[h][n - 1]);
            if self.levels.len() == h + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[h + 1].push(parent);
            h += 1;
        }
        index
    }

    /// Drops every leaf from `size` on (e.g. when the transaction that appended
    /// them rolled back). A `size` at or above the current length does nothing.
    pub fn truncate(&mut self, size: u64) {
        for (h, level) in self.levels.iter_mut().enumerate() {
            // Complete aligned subtrees of height h within the first `size` leaves.
            let keep = usize::try_from(size >> h).unwrap_or(usize::MAX);
            level.truncate(keep);
        }
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.leaves().len() as u64
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.leaves().is_empty()
    }

    /// All leaf hashes, in order.
    pub fn leaves(&self) -> &[Hash] {
        self.levels.first().map(Vec::as_slice).unwrap_or(&[])
    }

    /// Root at the current size.
    pub fn root(&self) -> Hash {
        self.subtree(0, self.len())
    }

    /// Root of the tree made of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, MerkleError> {
        self.check_size(size)?;
        Ok(self.subtree(0, size))
    }

    /// Inclusion proof for leaf `index` in the tree of the first `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof, MerkleError> {
        self.check_size(size)?;
        let path = inclusion_path(index, size, &|s, l| self.subtree(s, l))?;
        Ok(InclusionProof {
            index,
            tree_size: size,
            path,
        })
    }

    /// Consistency proof from the first `old_size` leaves to the first `new_size`.
    pub fn consistency_proof(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, MerkleError> {
        self.check_size(new_size)?;
        let path = consistency_path(old_size, new_size, &|s, l| self.subtree(s, l))?;
        Ok(ConsistencyProof {
            old_size,
            new_size,
            path,
        })
    }

    fn check_size(&self, size: u64) -> Result<(), MerkleError> {
        let available = self.len();
        if size > available {
            Err(MerkleError::SizeOutOfRange { size, available })
        } else {
            Ok(())
        }
    }

    /// `MTH(D[start..start+len])` for the ranges the RFC recursion visits:
    /// `start + len <= self.len()` and `start` a multiple of the smallest power
    /// of two `>= len`, so every power-of-two piece is a cached aligned subtree.
    fn subtree(&self, start: u64, len: u64) -> Hash {
        if len == 0 {
            return empty_root();
        }
        if len.is_power_of_two() {
            let h = len.trailing_zeros() as usize;
            // Cached: the aligned subtree lies within the leaves (invariant above).
            return self.levels[h][(start >> h) as usize];
        }
        let k = split_point(len);
        node_hash(&self.subtree(start, k), &self.subtree(start + k, len - k))
    }
}

#[cfg(test)]
mod tests;
