//! Protocol-level tests: exactness, dropouts, refusals, key substitution,
//! uniformity of a masked input.

use std::collections::BTreeSet;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::UnixTime;

use crate::{
    messages::{MaskedInput, UnmaskResponse},
    *,
};

pub(crate) struct Pki {
    pub ca: TrustedCa,
    pub signers: Vec<NodeSigner>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params() -> CertificateParams {
    let mut ca = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "test CA");
    ca.distinguished_name = dn;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    ca
}

impl Pki {
    pub fn new(n: usize) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let params = ca_params();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let mut pki = Self {
            ca: TrustedCa::new(ca_cert.der().to_vec()).unwrap(),
            signers: Vec::new(),
            issuer,
        };
        for i in 0..n {
            let id = NodeIdentity::new("arena", &format!("node-{i:03}")).unwrap();
            let s = pki.issue(&id, id.as_str());
            pki.signers.push(s);
        }
        pki
    }

    /// A signer for `id` whose certificate names `san`.
    pub fn issue(&self, id: &NodeIdentity, san: &str) -> NodeSigner {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(san.try_into().unwrap())];
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        NodeSigner::new(id.clone(), cert.der().to_vec(), &key.serialize_der()).unwrap()
    }
}

fn now() -> UnixTime {
    UnixTime::now()
}

pub(crate) fn config(n: usize, d: usize, n_min: u32, threshold: Option<usize>) -> RoundConfig {
    let enc = EncodingParams::with_finest_gamma(1.0, 1.0, n_min, n as u32, d).unwrap();
    let mut c = RoundConfig::new(RoundId::new("round-1").unwrap(), [9; 32], enc);
    c.threshold = threshold;
    c
}

/// Which nodes stop, and when.
#[derive(Default, Clone)]
pub(crate) struct Drops {
    /// Advertised, then never sent shares.
    pub before_share: BTreeSet<usize>,
    /// Shared, then never sent a masked input.
    pub before_mask: BTreeSet<usize>,
    /// Masked, then never answered the unmask request.
    pub before_unmask: BTreeSet<usize>,
}

pub(crate) fn updates(
    n: usize,
    d: usize,
    noise: bool,
    params: &EncodingParams,
) -> (Vec<Vec<f32>>, Vec<EncodedUpdate>) {
    let floats: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            (0..d)
                .map(|j| ((i * 31 + j * 7) % 13) as f32 / 13.0 - 0.45)
                .collect()
        })
        .collect();
    let enc = floats
        .iter()
        .map(|f| {
            let r = clip_and_round(f, params).unwrap();
            if noise {
                add_noise(r, params).unwrap()
            } else {
                r.dangerous_without_noise()
            }
        })
        .collect();
    (floats, enc)
}

/// Runs a whole round in memory.
pub(crate) fn run(
    pki: &Pki,
    cfg: &RoundConfig,
    inputs: &[EncodedUpdate],
    drops: &Drops,
) -> Result<AggregateSum, SecAggError> {
    let mut server = Server::new(cfg.clone(), pki.ca.clone());
    let mut clients = Vec::new();
    for s in &pki.signers {
        let (c, adv) = Client::new(cfg.clone(), s, pki.ca.clone())?;
        server.receive_advertisement(s.identity(), adv, now())?;
        clients.push(c);
    }
    server.close_advertisements()?;
    for (i, c) in clients.iter_mut().enumerate() {
        // SecAgg+: each node gets the roster's names and only its
        // neighbours' keys.
        let (nodes, keys) = server.neighbour_keys(c.identity())?;
        let msg = c.share_keys_with(&nodes, &keys, now())?;
        if !drops.before_share.contains(&i) {
            server.receive_shares(&pki.signers[i].identity().clone(), msg)?;
        }
    }
    let deliveries = server.close_shares()?;
    for d in &deliveries {
        let i = pki
            .signers
            .iter()
            .position(|s| s.identity() == &d.to)
            .unwrap();
        clients[i].receive_shares(d)?;
        let masked = clients[i].masked_input(&inputs[i])?;
        if !drops.before_mask.contains(&i) {
            server.receive_masked_input(&d.to, masked)?;
        }
    }
    let request = server.close_masked_inputs()?;
    for s in &request.survivors {
        let i = pki.signers.iter().position(|x| x.identity() == s).unwrap();
        let resp = clients[i].unmask(&request)?;
        if !drops.before_unmask.contains(&i) {
            server.receive_unmask(s, resp)?;
        }
    }
    server.finish()
}

fn plain_sum(inputs: &[EncodedUpdate], who: impl Iterator<Item = usize>) -> Vec<u32> {
    let mut sum = vec![0u32; inputs[0].values().len()];
    for i in who {
        for (a, v) in sum.iter_mut().zip(inputs[i].values()) {
            *a = a.wrapping_add(*v);
        }
    }
    sum
}

#[test]
fn unmasked_sum_equals_the_plain_sum_exactly() {
    let (n, d) = (7, 96);
    let pki = Pki::new(n);
    let cfg = config(n, d, 3, None);
    let (_, inputs) = updates(n, d, true, &cfg.encoding);
    let out = run(&pki, &cfg, &inputs, &Drops::default()).unwrap();
    assert_eq!(out.values, plain_sum(&inputs, 0..n));
    assert_eq!(out.contributors.len(), n);
}

#[test]
fn decoded_sum_is_fedavg_within_the_fixed_point_error() {
    let (n, d) = (5, 200);
    let pki = Pki::new(n);
    let cfg = config(n, d, 2, None);
    let (floats, inputs) = updates(n, d, false, &cfg.encoding);
    let out = run(&pki, &cfg, &inputs, &Drops::default()).unwrap();
    let decoded = decode_sum(&out.values, &cfg.encoding);
    // FedAvg of the clipped updates, in f64.
    let mut avg = vec![0f64; d];
    for f in &floats {
        let norm = f.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
        let s = if norm > 1.0 { 1.0 / norm } else { 1.0 };
        for (a, &x) in avg.iter_mut().zip(f) {
            *a += f64::from(x) * s / n as f64;
        }
    }
    let gamma = cfg.encoding.gamma();
    for (got, want) in decoded.iter().zip(&avg) {
        // Documented bound: n * gamma on the sum, gamma on the average.
        assert!(
            (got / n as f64 - want).abs() <= gamma + 1e-9,
            "{got} vs {want}"
        );
    }
}

#[test]
fn sparse_graph_with_ten_percent_dropped_after_masking_recovers() {
    let (n, d) = (30, 32);
    let pki = Pki::new(n);
    let cfg = config(n, d, 10, None);
    let (_, inputs) = updates(n, d, false, &cfg.encoding);
    let drops = Drops {
        before_mask: [3, 17, 25].into(),
        ..Drops::default()
    };
    let out = run(&pki, &cfg, &inputs, &drops).unwrap();
    let live = (0..n).filter(|i| !drops.before_mask.contains(i));
    assert_eq!(out.values, plain_sum(&inputs, live));
    assert_eq!(out.dropped.len(), 3);
}

/// Complete graph of 6 (k = 5, 6 holders per secret), t = 4: up to
/// n - t = 2 dropouts at any stage recover, 3 fail.
#[test]
fn dropouts_at_each_stage_up_to_n_minus_t_recover_and_more_fail() {
    let (n, d, t) = (6, 16, 4);
    let pki = Pki::new(n);
    let cfg = config(n, d, 2, Some(t));
    let (_, inputs) = updates(n, d, false, &cfg.encoding);
    for stage in 0..3 {
        for dropped in 0..=(n - t + 1) {
            let set: BTreeSet<usize> = (0..dropped).map(|i| (i * 5 + stage) % n).collect();
            let mut drops = Drops::default();
            match stage {
                0 => drops.before_share = set.clone(),
                1 => drops.before_mask = set.clone(),
                _ => drops.before_unmask = set.clone(),
            }
            let result = run(&pki, &cfg, &inputs, &drops);
            if dropped <= n - t {
                let contributed = (0..n).filter(|i| stage == 2 || !set.contains(i));
                assert_eq!(
                    result.unwrap().values,
                    plain_sum(&inputs, contributed),
                    "stage {stage} drop {dropped}"
                );
            } else {
                assert!(
                    matches!(result, Err(SecAggError::NotEnoughShares { have, need: 4, .. }) if have < 4),
                    "stage {stage} drop {dropped}: {result:?}"
                );
            }
        }
    }
}

#[test]
fn a_failed_round_reveals_nothing_more() {
    let (n, d, t) = (6, 16, 4);
    let pki = Pki::new(n);
    let cfg = config(n, d, 2, Some(t));
    let (_, inputs) = updates(n, d, false, &cfg.encoding);
    let mut server = Server::new(cfg.clone(), pki.ca.clone());
    let mut clients = Vec::new();
    for s in &pki.signers {
        let (c, adv) = Client::new(cfg.clone(), s, pki.ca.clone()).unwrap();
        server
            .receive_advertisement(s.identity(), adv, now())
            .unwrap();
        clients.push(c);
    }
    let roster = server.close_advertisements().unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let m = c.share_keys(&roster, now()).unwrap();
        server.receive_shares(pki.signers[i].identity(), m).unwrap();
    }
    for (i, dl) in server.close_shares().unwrap().iter().enumerate() {
        clients[i].receive_shares(dl).unwrap();
        let m = clients[i].masked_input(&inputs[i]).unwrap();
        server.receive_masked_input(&dl.to, m).unwrap();
    }
    let req = server.close_masked_inputs().unwrap();
    // Only 3 < t answer.
    for (c, s) in clients.iter_mut().zip(&pki.signers).take(3) {
        let r = c.unmask(&req).unwrap();
        server.receive_unmask(s.identity(), r).unwrap();
    }
    assert!(matches!(
        server.finish(),
        Err(SecAggError::NotEnoughShares { .. })
    ));
    // The round is over: no retry, no partial result.
    assert!(matches!(
        server.finish(),
        Err(SecAggError::WrongStage {
            stage: Stage::Done,
            ..
        })
    ));
    // A node never answers twice (so never gives the other kind of share).
    assert!(matches!(
        clients[0].unmask(&req),
        Err(SecAggError::Replay { .. })
    ));
    // A node told that a neighbour dropped and survived at once refuses.
    let mut bad = req.clone();
    bad.dropped.push(bad.survivors[5].clone());
    assert!(matches!(
        clients[4].unmask(&bad),
        Err(SecAggError::UnsafeUnmaskRequest { .. })
    ));
    // One that says this node itself dropped refuses too.
    let mut bad = req.clone();
    let me = bad.survivors.remove(4);
    bad.dropped.push(me);
    bad.dropped.sort();
    assert!(matches!(
        clients[4].unmask(&bad),
        Err(SecAggError::UnsafeUnmaskRequest { .. })
    ));
}

#[test]
fn refusals_name_their_reason() {
    let (n, d) = (4, 8);
    let pki = Pki::new(n);
    let cfg = config(n, d, 2, None);
    let (_, inputs) = updates(n, d, false, &cfg.encoding);
    let mut server = Server::new(cfg.clone(), pki.ca.clone());
    let mut clients = Vec::new();
    let mut adverts = Vec::new();
    for s in &pki.signers {
        let (c, adv) = Client::new(cfg.clone(), s, pki.ca.clone()).unwrap();
        server
            .receive_advertisement(s.identity(), adv.clone(), now())
            .unwrap();
        clients.push(c);
        adverts.push(adv);
    }
    let id = |i: usize| pki.signers[i].identity().clone();
    // Replayed advertisement; advertisement sent by another peer.
    assert!(matches!(
        server.receive_advertisement(&id(0), adverts[0].clone(), now()),
        Err(SecAggError::WrongStage { .. }) | Err(SecAggError::Replay { .. })
    ));
    assert!(matches!(
        server.receive_advertisement(&id(1), adverts[0].clone(), now()),
        Err(SecAggError::WrongSender { .. })
    ));
    let roster = server.close_advertisements().unwrap();
    // A message in the wrong stage.
    assert!(matches!(
        server.receive_masked_input(
            &id(0),
            MaskedInput {
                round: cfg.round.clone(),
                from: id(0),
                values: vec![0; d]
            }
        ),
        Err(SecAggError::WrongStage {
            stage: Stage::ShareKeys,
            ..
        })
    ));
    for (i, c) in clients.iter_mut().enumerate() {
        let m = c.share_keys(&roster, now()).unwrap();
        if i == 0 {
            let mut wrong = m.clone();
            wrong.round = RoundId::new("round-0").unwrap();
            assert!(matches!(
                server.receive_shares(&id(0), wrong),
                Err(SecAggError::WrongRound { .. })
            ));
            let mut short = m.clone();
            short.shares[0].ciphertext.pop();
            assert!(matches!(
                server.receive_shares(&id(0), short),
                Err(SecAggError::WrongShape { .. })
            ));
        }
        server.receive_shares(&id(i), m.clone()).unwrap();
        assert!(matches!(
            server.receive_shares(&id(i), m),
            Err(SecAggError::Replay { .. })
        ));
    }
    // The client's own step cannot be replayed either.
    assert!(matches!(
        clients[0].share_keys(&roster, now()),
        Err(SecAggError::Replay { .. })
    ));
    let deliveries = server.close_shares().unwrap();
    // A tampered share does not decrypt.
    let mut tampered = deliveries[0].clone();
    tampered.shares[0].ciphertext[3] ^= 1;
    assert!(matches!(
        clients[0].receive_shares(&tampered),
        Err(SecAggError::BadShareCiphertext { .. })
    ));
    let mut masked = Vec::new();
    for (i, dl) in deliveries.iter().enumerate() {
        clients[i].receive_shares(dl).unwrap();
        masked.push(clients[i].masked_input(&inputs[i]).unwrap());
    }
    // Wrong shape, replay.
    let mut long = masked[0].clone();
    long.values.push(0);
    assert!(matches!(
        server.receive_masked_input(&id(0), long),
        Err(SecAggError::WrongShape {
            expected: 8,
            got: 9,
            ..
        })
    ));
    for (i, m) in masked.into_iter().enumerate() {
        server.receive_masked_input(&id(i), m.clone()).unwrap();
        assert!(matches!(
            server.receive_masked_input(&id(i), m),
            Err(SecAggError::Replay { .. })
        ));
    }
    let req = server.close_masked_inputs().unwrap();
    let resp = clients[0].unmask(&req).unwrap();
    // Out of range: a share value >= p.
    let mut bad = resp.clone();
    bad.shares[0].share = vec![0xff; 40];
    assert!(matches!(
        server.receive_unmask(&id(0), bad),
        Err(SecAggError::OutOfRange { .. })
    ));
    // The wrong kind of share for a survivor.
    let mut bad: UnmaskResponse = resp.clone();
    bad.shares[0].kind = SecretKind::MaskKey;
    assert!(matches!(
        server.receive_unmask(&id(0), bad),
        Err(SecAggError::OutOfRange { .. })
    ));
    server.receive_unmask(&id(0), resp.clone()).unwrap();
    assert!(matches!(
        server.receive_unmask(&id(0), resp),
        Err(SecAggError::Replay { .. })
    ));
}

#[test]
fn a_substituted_public_key_is_detected() {
    let (n, d) = (4, 8);
    let pki = Pki::new(n);
    let cfg = config(n, d, 2, None);
    let mut clients = Vec::new();
    let mut roster = Vec::new();
    for s in &pki.signers {
        let (c, adv) = Client::new(cfg.clone(), s, pki.ca.clone()).unwrap();
        clients.push(c);
        roster.push(adv);
    }
    roster.sort_by(|a, b| a.node.cmp(&b.node));
    // The aggregator swaps node 1's mask key for one it knows.
    let mut swapped = roster.clone();
    swapped[1].mask_public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([5; 32])).to_bytes();
    let err = clients[0].share_keys(&swapped, now()).unwrap_err();
    assert!(
        matches!(err, SecAggError::BadAdvertisement { ref reason, .. } if reason.contains("signature")),
        "{err}"
    );
    // ... or re-signs it with another node's certificate.
    let mut resigned = roster.clone();
    let forged = Pki::new(0).issue(&roster[1].node, roster[1].node.as_str());
    let (_, forged_adv) = Client::new(cfg.clone(), &forged, pki.ca.clone()).unwrap();
    resigned[1] = forged_adv;
    assert!(matches!(
        clients[0].share_keys(&resigned, now()),
        Err(SecAggError::BadAdvertisement { .. })
    ));
    // A genuine certificate of node 2 cannot vouch for node 1.
    let mut wrong_id = roster.clone();
    let mislabeled = pki.issue(&roster[1].node, roster[2].node.as_str());
    wrong_id[1] = Client::new(cfg.clone(), &mislabeled, pki.ca.clone())
        .unwrap()
        .1;
    let err = clients[0].share_keys(&wrong_id, now()).unwrap_err();
    assert!(
        matches!(err, SecAggError::BadAdvertisement { ref reason, .. } if reason.contains("identity")),
        "{err}"
    );
    // A node's own key swapped is noticed by the node itself.
    let mut own = roster.clone();
    own[0].encryption_public = [7; 32];
    assert!(clients[0].share_keys(&own, now()).is_err());
    // Wrong round.
    let mut other = roster.clone();
    other[3].round = RoundId::new("round-2").unwrap();
    assert!(matches!(
        clients[0].share_keys(&other, now()),
        Err(SecAggError::WrongRound { .. })
    ));
    // The genuine roster is fine.
    clients[0].share_keys(&roster, now()).unwrap();
}

#[test]
fn a_node_verifies_only_its_neighbours_keys_and_refuses_a_missing_one() {
    let (n, d) = (12, 8);
    let pki = Pki::new(n);
    let mut cfg = config(n, d, 4, None);
    cfg.degree = Some(4);
    let mut server = Server::new(cfg.clone(), pki.ca.clone());
    let mut clients = Vec::new();
    for s in &pki.signers {
        let (c, adv) = Client::new(cfg.clone(), s, pki.ca.clone()).unwrap();
        server
            .receive_advertisement(s.identity(), adv, now())
            .unwrap();
        clients.push(c);
    }
    server.close_advertisements().unwrap();
    let (nodes, keys) = server.neighbour_keys(clients[0].identity()).unwrap();
    assert_eq!(nodes.len(), n);
    assert_eq!(keys.len(), 5, "4 neighbours and itself");
    // A neighbour's key left out is refused before anything is shared.
    let mut missing = keys.clone();
    let gone = missing
        .iter()
        .position(|a| &a.node != clients[0].identity())
        .unwrap();
    missing.remove(gone);
    let err = clients[0]
        .share_keys_with(&nodes, &missing, now())
        .unwrap_err();
    assert!(
        matches!(err, SecAggError::BadAdvertisement { ref reason, .. } if reason.contains("missing")),
        "{err}"
    );
    // A key of a node outside the roster is refused.
    let stranger = Pki::new(0).issue(
        &NodeIdentity::new("arena", "zz-stranger").unwrap(),
        "spiffe://veil/venue/arena/node/zz-stranger",
    );
    let (_, stranger_adv) = Client::new(cfg.clone(), &stranger, pki.ca.clone()).unwrap();
    let mut extra = keys.clone();
    extra.push(stranger_adv);
    assert!(matches!(
        clients[0].share_keys_with(&nodes, &extra, now()),
        Err(SecAggError::NotParticipant { .. })
    ));
    // The genuine neighbour keys are enough.
    clients[0].share_keys_with(&nodes, &keys, now()).unwrap();
}

/// Chi-square critical value at upper tail `1e-6` with `k` degrees of
/// freedom (Wilson-Hilferty; z = 4.7534 is the 1 - 1e-6 normal quantile).
fn chi2_critical(k: f64) -> f64 {
    let z = 4.753_424_308_822_899;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

fn chi2_uniform(values: impl Iterator<Item = usize>, bins: usize) -> (f64, f64) {
    let mut counts = vec![0f64; bins];
    let mut total = 0f64;
    for v in values {
        counts[v] += 1.0;
        total += 1.0;
    }
    let e = total / bins as f64;
    let stat = counts.iter().map(|c| (c - e).powi(2) / e).sum();
    (stat, chi2_critical(bins as f64 - 1.0))
}

#[test]
fn a_single_masked_input_is_uniform_and_the_encoded_one_is_not() {
    let (n, d) = (3, 1 << 16);
    let pki = Pki::new(n);
    let cfg = config(n, d, 2, None);
    let floats: Vec<f32> = (0..d).map(|j| ((j % 17) as f32 - 8.0) / 2000.0).collect();
    let raw = clip_and_round(&floats, &cfg.encoding)
        .unwrap()
        .dangerous_without_noise();
    let mut server = Server::new(cfg.clone(), pki.ca.clone());
    let mut clients = Vec::new();
    for s in &pki.signers {
        let (c, adv) = Client::new(cfg.clone(), s, pki.ca.clone()).unwrap();
        server
            .receive_advertisement(s.identity(), adv, now())
            .unwrap();
        clients.push(c);
    }
    let roster = server.close_advertisements().unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let m = c.share_keys(&roster, now()).unwrap();
        server.receive_shares(pki.signers[i].identity(), m).unwrap();
    }
    let dl = server.close_shares().unwrap();
    clients[0].receive_shares(&dl[0]).unwrap();
    let masked = clients[0].masked_input(&raw).unwrap();
    // Low 8 bits and high 8 bits of every coordinate, 256 bins each.
    let low = |v: &[u32]| chi2_uniform(v.iter().map(|&x| (x & 0xff) as usize), 256);
    let high = |v: &[u32]| chi2_uniform(v.iter().map(|&x| (x >> 24) as usize), 256);
    let (s, crit) = low(&masked.values);
    assert!(s < crit, "masked low bits: chi2 {s} >= {crit}");
    let (s, crit) = high(&masked.values);
    assert!(s < crit, "masked high bits: chi2 {s} >= {crit}");
    // Negative control: the encoded input itself fails both.
    let (s, crit) = low(raw.values());
    assert!(s > crit, "encoded low bits passed: {s} < {crit}");
    let noised = encode(&floats, &cfg.encoding).unwrap();
    let (s, crit) = high(noised.values());
    assert!(s > crit, "noised encoded high bits passed: {s} < {crit}");
}

#[test]
fn parameters_that_could_wrap_are_refused() {
    // 10,000 nodes with a granularity of C / 2^20: n * delta2 alone > 2^31.
    let e = EncodingParams::new(1.0, 1.0, 100, 10_000, 1000, 1.0 / f64::from(1 << 20)).unwrap_err();
    assert!(matches!(e, SecAggError::WouldOverflow { .. }), "{e}");
    // The finest gamma that fits leaves the documented bound under 2^31.
    let p = EncodingParams::with_finest_gamma(1.0, 1.0, 100, 10_000, 1000).unwrap();
    assert!(p.overflow_bound() < 2f64.powi(31));
    let finer = EncodingParams::new(1.0, 1.0, 100, 10_000, 1000, p.gamma() / 2.0);
    assert!(matches!(finer, Err(SecAggError::WouldOverflow { .. })));
    // Non-finite updates and wrong lengths are refused before anything.
    assert!(matches!(
        clip_and_round(&[f32::NAN; 1000], &p),
        Err(SecAggError::OutOfRange { .. })
    ));
    assert!(matches!(
        clip_and_round(&[0.0; 999], &p),
        Err(SecAggError::WrongShape { .. })
    ));
}

#[test]
fn round_cost_matches_the_central_gaussian() {
    let p = EncodingParams::with_finest_gamma(1.0, 1.1, 20, 100, 1_000_000).unwrap();
    let rho = p.round_rho().unwrap().get();
    let central = veil_privacy::model_update::RoundPrivacy::new(1.0, 1.1, 20)
        .unwrap()
        .round_rho()
        .unwrap()
        .get();
    assert!(
        rho >= central * (1.0 - 1e-9) && rho < central * 1.001,
        "{rho} vs {central}"
    );
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn any_dropouts_after_masking_within_tolerance_sum_exactly(
            n in 4usize..9, d in 1usize..40, drop_mask in any::<u16>()
        ) {
            let pki = Pki::new(n);
            let cfg = config(n, d, 2, None);
            let (_, inputs) = updates(n, d, true, &cfg.encoding);
            let t = default_t(n);
            // Drop at most n - t nodes after masking.
            let dropped: BTreeSet<usize> =
                (0..n).filter(|i| drop_mask >> i & 1 == 1).take(n - t).collect();
            let drops = Drops { before_mask: dropped.clone(), ..Drops::default() };
            let out = run(&pki, &cfg, &inputs, &drops).unwrap();
            prop_assert_eq!(out.values, plain_sum(&inputs, (0..n).filter(|i| !dropped.contains(i))));
        }
    }

    fn default_t(n: usize) -> usize {
        crate::graph::default_threshold(crate::graph::default_degree(n))
    }
}
