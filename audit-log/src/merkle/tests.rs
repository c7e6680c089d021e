use proptest::prelude::*;

use super::*;

fn h(hex: &str) -> Hash {
    Hash::from_hex(hex).unwrap()
}

/// The reference tree of RFC 6962 / certificate-transparency test data, as used
/// by transparency-dev/merkle `proof/verify_test.go`.
fn reference_leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|s| hex::decode(s).unwrap())
    .collect()
}

/// Roots of the reference tree at sizes 1..=8.
const REFERENCE_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn reference_tree() -> MerkleTree {
    MerkleTree::from_leaves(reference_leaves().iter().map(|d| leaf_hash(d)))
}

#[test]
fn empty_tree_root_is_sha256_of_nothing() {
    assert_eq!(
        empty_root(),
        h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(MerkleTree::new().root(), empty_root());
    assert_eq!(root_from_leaves(&[]), empty_root());
    assert!(MerkleTree::new().is_empty());
    assert_eq!(MerkleTree::default().root(), empty_root());
}

#[test]
fn reference_roots_at_every_size() {
    let tree = reference_tree();
    let leaves = tree.leaves().to_vec();
    for (i, want) in REFERENCE_ROOTS.iter().enumerate() {
        let size = i as u64 + 1;
        assert_eq!(tree.root_at(size).unwrap(), h(want), "size {size}");
        assert_eq!(
            root_from_leaves(&leaves[..=i]),
            h(want),
            "slice size {size}"
        );
        // Incremental tree built to exactly this size.
        let partial = MerkleTree::from_leaves(leaves[..=i].iter().copied());
        assert_eq!(partial.root(), h(want));
    }
}

#[test]
fn reference_inclusion_proofs() {
    // (0-based index, size, path) from transparency-dev/merkle.
    let vectors: [(u64, u64, &[&str]); 4] = [
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            3,
            &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
        ),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    let tree = reference_tree();
    for (index, size, path) in vectors {
        let want: Vec<Hash> = path.iter().map(|s| h(s)).collect();
        let proof = tree.inclusion_proof(index, size).unwrap();
        assert_eq!(proof.path, want, "index {index} size {size}");
        let slice = inclusion_proof_from_leaves(index, &tree.leaves()[..size as usize]).unwrap();
        assert_eq!(slice, proof);
        let root = h(REFERENCE_ROOTS[size as usize - 1]);
        proof.verify(&tree.leaves()[index as usize], &root).unwrap();
    }
    // A one-leaf tree: empty path, root is the leaf hash.
    let one = tree.inclusion_proof(0, 1).unwrap();
    assert!(one.path.is_empty());
    one.verify(&tree.leaves()[0], &h(REFERENCE_ROOTS[0]))
        .unwrap();
}

#[test]
fn reference_consistency_proofs() {
    let vectors: [(u64, u64, &[&str]); 5] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
        (
            6,
            7,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    let tree = reference_tree();
    for (old, new, path) in vectors {
        let want: Vec<Hash> = path.iter().map(|s| h(s)).collect();
        let proof = tree.consistency_proof(old, new).unwrap();
        assert_eq!(proof.path, want, "{old} -> {new}");
        let slice = consistency_proof_from_leaves(old, &tree.leaves()[..new as usize]).unwrap();
        assert_eq!(slice, proof);
        proof
            .verify(
                &h(REFERENCE_ROOTS[old as usize - 1]),
                &h(REFERENCE_ROOTS[new as usize - 1]),
            )
            .unwrap();
    }
}

fn test_leaves(n: u64) -> Vec<Hash> {
    (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

fn flip(path: &[Hash], i: usize, bit: u8) -> Vec<Hash> {
    let mut p = path.to_vec();
    p[i].0[(i * 7) % HASH_LEN] ^= bit;
    p
}

/// Every way the inclusion proof for `index` in a `size` tree can be
/// mutated must fail; the proof itself must verify.
fn check_inclusion(tree: &MerkleTree, index: u64, size: u64) {
    let proof = tree.inclusion_proof(index, size).unwrap();
    let root = tree.root_at(size).unwrap();
    let leaf = tree.leaves()[index as usize];
    verify_inclusion(&leaf, index, size, &proof.path, &root).unwrap();

    let fails = |l: &Hash, i: u64, s: u64, p: &[Hash], r: &Hash, what: &str| {
        assert!(
            verify_inclusion(l, i, s, p, r).is_err(),
            "{what} verified: index {index} size {size}"
        );
    };
    for i in 0..proof.path.len() {
        fails(
            &leaf,
            index,
            size,
            &flip(&proof.path, i, 0x08),
            &root,
            "flipped bit",
        );
    }
    if index > 0 {
        fails(&leaf, index - 1, size, &proof.path, &root, "index - 1");
    }
    fails(&leaf, index + 1, size, &proof.path, &root, "index + 1");
    fails(&leaf, index ^ 2, size, &proof.path, &root, "index ^ 2");
    fails(&leaf, index, size * 2, &proof.path, &root, "size * 2");
    fails(&leaf, index, size / 2, &proof.path, &root, "size / 2");
    let mut wrong_leaf = leaf;
    wrong_leaf.0[0] ^= 1;
    fails(&wrong_leaf, index, size, &proof.path, &root, "wrong leaf");
    fails(&leaf, index, size, &proof.path, &empty_root(), "empty root");
    let mut longer = proof.path.clone();
    longer.push(root);
    fails(&leaf, index, size, &longer, &root, "trailing root");
    let mut preceded = vec![root];
    preceded.extend_from_slice(&proof.path);
    fails(&leaf, index, size, &preceded, &root, "preceding root");
    if !proof.path.is_empty() {
        let shorter = &proof.path[..proof.path.len() - 1];
        fails(&leaf, index, size, shorter, &root, "truncated");
    }
}

fn check_consistency(tree: &MerkleTree, old: u64, new: u64) {
    let proof = tree.consistency_proof(old, new).unwrap();
    let r1 = tree.root_at(old).unwrap();
    let r2 = tree.root_at(new).unwrap();
    verify_consistency(old, new, &r1, &r2, &proof.path).unwrap();

    let fails = |o: u64, n: u64, a: &Hash, b: &Hash, p: &[Hash], what: &str| {
        assert!(
            verify_consistency(o, n, a, b, p).is_err(),
            "{what} verified: {old} -> {new}"
        );
    };
    for i in 0..proof.path.len() {
        fails(
            old,
            new,
            &r1,
            &r2,
            &flip(&proof.path, i, 0x10),
            "flipped bit",
        );
    }
    if old > 0 {
        fails(old - 1, new, &r1, &r2, &proof.path, "old - 1");
    }
    if old < new {
        fails(old + 1, new, &r1, &r2, &proof.path, "old + 1");
        fails(old, new, &r2, &r1, &proof.path, "swapped roots");
    }
    // Sizes only matter from a non-empty tree: the empty tree is consistent
    // with every tree.
    if old > 0 && old < new {
        fails(old, new * 2, &r1, &r2, &proof.path, "new * 2");
        if new / 2 >= old && new / 2 != new {
            fails(old, new / 2, &r1, &r2, &proof.path, "new / 2");
        }
    }
    if old ^ 2 != old && old ^ 2 <= new {
        fails(old ^ 2, new, &r1, &r2, &proof.path, "old ^ 2");
    }
    let mut wrong = r1;
    wrong.0[5] ^= 0x40;
    if old > 0 {
        fails(old, new, &wrong, &r2, &proof.path, "wrong old root");
    }
    let mut wrong2 = r2;
    wrong2.0[5] ^= 0x40;
    if old > 0 {
        fails(old, new, &r1, &wrong2, &proof.path, "wrong new root");
    }
    let mut longer = proof.path.clone();
    longer.push(r2);
    fails(old, new, &r1, &r2, &longer, "trailing root");
    let mut preceded = vec![r1];
    preceded.extend_from_slice(&proof.path);
    fails(old, new, &r1, &r2, &preceded, "preceding root");
    if !proof.path.is_empty() {
        let shorter = &proof.path[..proof.path.len() - 1];
        fails(old, new, &r1, &r2, shorter, "truncated");
        fails(old, new, &r1, &r2, &[], "empty proof");
    }
}

#[test]
fn every_inclusion_proof_up_to_64() {
    let tree = MerkleTree::from_leaves(test_leaves(64));
    let leaves = tree.leaves().to_vec();
    for size in 1..=64u64 {
        for index in 0..size {
            check_inclusion(&tree, index, size);
            let slice = inclusion_proof_from_leaves(index, &leaves[..size as usize]).unwrap();
            assert_eq!(slice, tree.inclusion_proof(index, size).unwrap());
        }
        assert!(matches!(
            tree.inclusion_proof(size, size),
            Err(MerkleError::IndexOutOfRange { .. })
        ));
    }
}

#[test]
fn every_consistency_proof_up_to_64() {
    let tree = MerkleTree::from_leaves(test_leaves(64));
    let leaves = tree.leaves().to_vec();
    for new in 0..=64u64 {
        for old in 0..=new {
            check_consistency(&tree, old, new);
            let slice = consistency_proof_from_leaves(old, &leaves[..new as usize]).unwrap();
            assert_eq!(slice, tree.consistency_proof(old, new).unwrap());
        }
        if new > 0 {
            assert!(matches!(
                tree.consistency_proof(new, new - 1),
                Err(MerkleError::SizesReversed { .. })
            ));
        }
    }
}

#[test]
fn incremental_root_matches_slice_root() {
    let leaves = test_leaves(300);
    let mut tree = MerkleTree::new();
    assert_eq!(tree.root(), root_from_leaves(&[]));
    for (i, leaf) in leaves.iter().enumerate() {
        assert_eq!(tree.push(*leaf), i as u64);
        assert_eq!(tree.len(), i as u64 + 1);
        assert_eq!(
            tree.root(),
            root_from_leaves(&leaves[..=i]),
            "size {}",
            i + 1
        );
    }
    for size in 0..=300u64 {
        assert_eq!(
            tree.root_at(size).unwrap(),
            root_from_leaves(&leaves[..size as usize])
        );
    }
}

#[test]
fn truncate_then_append_matches_a_fresh_tree() {
    let leaves = test_leaves(100);
    for cut in [0u64, 1, 2, 3, 31, 32, 33, 64, 99, 100, 150] {
        let mut tree = MerkleTree::from_leaves(leaves.iter().copied());
        tree.truncate(cut);
        let kept = cut.min(100) as usize;
        assert_eq!(tree.len(), kept as u64);
        assert_eq!(tree.root(), root_from_leaves(&leaves[..kept]));
        // Appending other leaves afterwards gives the same tree as building them fresh.
        let mut other: Vec<Hash> = leaves[..kept].to_vec();
        for i in 0..40u64 {
            let leaf = leaf_hash(&(1000 + i).to_be_bytes());
            tree.push(leaf);
            other.push(leaf);
        }
        let fresh = MerkleTree::from_leaves(other.iter().copied());
        assert_eq!(tree.root(), fresh.root());
        let n = tree.len();
        for i in (0..n).step_by(7) {
            assert_eq!(tree.inclusion_proof(i, n), fresh.inclusion_proof(i, n));
            assert_eq!(tree.consistency_proof(i, n), fresh.consistency_proof(i, n));
        }
    }
}

/// The tree made by pushing each leaf in turn: the reference for the tree
/// built a level at a time.
fn pushed(leaves: &[Hash]) -> MerkleTree {
    let mut tree = MerkleTree::new();
    for leaf in leaves {
        tree.push(*leaf);
    }
    tree
}

#[test]
fn tree_built_by_levels_equals_pushed_tree() {
    let leaves = test_leaves(1100);
    let sizes = (0..=70).chain([127, 128, 129, 255, 256, 257, 1000, 1023, 1024, 1025, 1100]);
    for size in sizes {
        let leaves = &leaves[..size];
        let want = pushed(leaves);
        // Every thread count, with levels of any size split between threads.
        for threads in 1..=5 {
            for parallel_min_nodes in [1, 2, 3, 64] {
                let got = MerkleTree::build(leaves.to_vec(), threads, parallel_min_nodes);
                assert_eq!(
                    got.levels, want.levels,
                    "size {size}, {threads} threads, parallel from {parallel_min_nodes}"
                );
                assert_eq!(got.root(), root_from_leaves(leaves), "size {size}");
            }
        }
        assert_eq!(
            MerkleTree::from_leaf_vec(leaves.to_vec()).levels,
            want.levels
        );
        assert_eq!(
            MerkleTree::from_leaves(leaves.iter().copied()).levels,
            want.levels
        );
    }
}

#[test]
fn large_tree_built_in_parallel_equals_pushed_tree() {
    // Above `PARALLEL_MIN_LEAVES`, so `from_leaf_vec` uses every thread the
    // machine has; odd sizes leave an unpaired node on several levels.
    for size in [
        PARALLEL_MIN_LEAVES,
        PARALLEL_MIN_LEAVES + 1,
        3 * PARALLEL_MIN_LEAVES / 2 + 7,
    ] {
        let leaves = test_leaves(size as u64);
        let want = pushed(&leaves);
        assert_eq!(
            MerkleTree::from_leaf_vec(leaves.clone()).levels,
            want.levels
        );
        for threads in [2, 3, 8] {
            let got = MerkleTree::build(leaves.clone(), threads, PARALLEL_MIN_NODES);
            assert_eq!(got.levels, want.levels, "size {size}, {threads} threads");
        }
        // A tree built by levels keeps growing like a pushed one.
        let mut grown = MerkleTree::from_leaf_vec(leaves.clone());
        let mut want = want;
        for i in 0..5u64 {
            let leaf = leaf_hash(&(u64::MAX - i).to_be_bytes());
            assert_eq!(grown.push(leaf), want.push(leaf));
        }
        assert_eq!(grown.levels, want.levels);
    }
}

#[test]
fn hex_hash_check_agrees_with_decoding() {
    let x = leaf_hash(b"x").to_hex();
    let mut cases = vec![
        x.clone(),
        x.to_uppercase(),
        x[..63].to_owned(),
        format!("{x}0"),
        String::new(),
        "g".repeat(64),
        "0".repeat(64),
        "f".repeat(64),
        "é".repeat(32),
    ];
    for (i, c) in [
        b'/', b':', b'@', b'`', b'g', b'G', b'A', b'F', b' ', 0, 0x7f,
    ]
    .iter()
    .enumerate()
    {
        let mut bytes = x.clone().into_bytes();
        bytes[(i * 13) % 64] = *c;
        cases.push(String::from_utf8(bytes).unwrap());
    }
    for s in &cases {
        assert_eq!(is_hex_hash(s), Hash::from_hex(s).is_some(), "{s:?}");
        assert_eq!(
            is_hex_hash(s),
            hex::decode(s).is_ok() && s.len() == 64 && s.to_lowercase() == *s,
            "{s:?}"
        );
    }
}

#[test]
fn out_of_range_requests_are_errors_not_panics() {
    let tree = MerkleTree::from_leaves(test_leaves(5));
    assert_eq!(
        tree.root_at(6),
        Err(MerkleError::SizeOutOfRange {
            size: 6,
            available: 5
        })
    );
    assert!(tree.inclusion_proof(0, 6).is_err());
    assert!(tree.inclusion_proof(5, 5).is_err());
    assert!(tree.consistency_proof(2, 6).is_err());
    assert!(tree.consistency_proof(4, 3).is_err());
    assert!(inclusion_proof_from_leaves(0, &[]).is_err());
    assert!(consistency_proof_from_leaves(1, &[]).is_err());
    let leaf = tree.leaves()[0];
    assert!(verify_inclusion(&leaf, 0, 0, &[], &empty_root()).is_err());
    assert!(verify_inclusion(&leaf, u64::MAX, u64::MAX, &[], &leaf).is_err());
    assert!(verify_consistency(3, 2, &leaf, &leaf, &[]).is_err());
    // Trivial consistency cases.
    verify_consistency(0, 0, &empty_root(), &empty_root(), &[]).unwrap();
    verify_consistency(0, 5, &empty_root(), &tree.root(), &[]).unwrap();
    assert!(verify_consistency(0, 5, &leaf, &tree.root(), &[]).is_err());
    assert!(verify_consistency(0, 5, &empty_root(), &tree.root(), &[leaf]).is_err());
    assert!(verify_consistency(5, 5, &tree.root(), &tree.root(), &[leaf]).is_err());
    assert!(verify_consistency(5, 5, &leaf, &tree.root(), &[]).is_err());
}

#[test]
fn hash_encodings_are_strict() {
    let x = leaf_hash(b"x");
    assert_eq!(Hash::from_base64(&x.to_base64()), Some(x));
    assert_eq!(Hash::from_hex(&x.to_hex()), Some(x));
    assert_eq!(x.to_string(), x.to_base64());
    assert!(Hash::from_hex(&x.to_hex().to_uppercase()).is_none());
    assert!(Hash::from_hex(&x.to_hex()[2..]).is_none());
    let b64 = x.to_base64();
    assert!(Hash::from_base64(b64.trim_end_matches('=')).is_none());
    assert!(Hash::from_base64(&format!("{b64}AAAA")).is_none());
    // Non-zero trailing bits in the last base64 character.
    let mut chars: Vec<char> = b64.chars().collect();
    let last = chars.len() - 2; // before the single '=' of 32 bytes
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let pos = alphabet.find(chars[last]).unwrap();
    chars[last] = alphabet.chars().nth(pos ^ 1).unwrap();
    assert!(Hash::from_base64(&chars.into_iter().collect::<String>()).is_none());
    // serde as base64.
    let json = serde_json::to_string(&x).unwrap();
    assert_eq!(json, format!("\"{b64}\""));
    assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), x);
    assert!(serde_json::from_str::<Hash>("\"AAAA\"").is_err());
}

#[test]
fn proof_json_round_trips_and_rejects_unknown_fields() {
    let tree = MerkleTree::from_leaves(test_leaves(10));
    let c = tree.consistency_proof(3, 10).unwrap();
    assert_eq!(ConsistencyProof::from_json(&c.to_json()).unwrap(), c);
    assert!(ConsistencyProof::from_json(r#"{"old_size":1,"new_size":2,"path":[],"x":1}"#).is_err());
    let i = tree.inclusion_proof(4, 10).unwrap();
    let json = serde_json::to_string(&i).unwrap();
    assert!(json.starts_with(r#"{"index":4,"tree_size":10,"path":[""#));
    assert_eq!(serde_json::from_str::<InclusionProof>(&json).unwrap(), i);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_large_trees(size in 65u64..5000, index_seed in any::<u64>(), old_seed in any::<u64>()) {
        let tree = MerkleTree::from_leaves(test_leaves(size));
        let index = index_seed % size;
        let old = old_seed % (size + 1);
        check_inclusion(&tree, index, size);
        check_consistency(&tree, old, size);
        // Proofs at a smaller size of the same tree.
        let smaller = old.max(1);
        check_inclusion(&tree, index % smaller, smaller);
        check_consistency(&tree, old / 2, old);
        // The slice functions agree with the incremental tree.
        let leaves = &tree.leaves()[..size as usize];
        prop_assert_eq!(root_from_leaves(leaves), tree.root());
        prop_assert_eq!(
            inclusion_proof_from_leaves(index, leaves).unwrap(),
            tree.inclusion_proof(index, size).unwrap()
        );
        prop_assert_eq!(
            consistency_proof_from_leaves(old, leaves).unwrap(),
            tree.consistency_proof(old, size).unwrap()
        );
    }
}
