//! `veil-aggregator bench fedavg --secure`: what secure aggregation costs
//! the aggregator per round, next to the plain round measured in the same
//! run, and what it costs one node.
//!
//! The protocol runs in process ([`veil_secagg`]'s state machines, no
//! network, no database): `nodes` nodes with fresh certificates advertise
//! signed keys, share (SecAgg+ graph of the default degree), and mask; a
//! fraction `dropout` of them drops after sharing (never sends its masked
//! input), so the aggregator must rebuild their pairwise masks from
//! mask-key shares. Timed on the aggregator (best of `reps`): receiving
//! every masked input into the running sum, closing the stage, receiving
//! the unmasking shares, unmasking (reconstruct every secret, expand and
//! remove every mask, on all cores), decoding and applying the mean:
//! `round_ms`, the counterpart of the plain round's `round_ms` (validate,
//! average, apply). Timed on one node: clip and conditional rounding,
//! OpenDP's exact discrete Gaussian noise, and masking with its neighbours.
//!
//! The masked inputs all carry the same noised update (noise is drawn once:
//! OpenDP's exact sampler takes seconds per million values; its cost is the
//! `client_noise_ms` figure); the aggregator's work does not depend on the
//! values.

use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::UnixTime;
use veil_secagg::{
    Client, EncodingParams, NodeIdentity, NodeSigner, RoundConfig, RoundId, Server, TrustedCa,
    add_noise, clip_and_round, decode_sum,
};

use super::kernel;

/// What `bench fedavg --secure` measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SecureFigures {
    /// Nodes in the round.
    pub nodes: usize,
    /// Parameters per update.
    pub params: usize,
    /// Nodes that dropped after sharing.
    pub dropped: usize,
    /// Graph degree k and threshold t.
    pub graph: (usize, usize),
    /// The plain round's numeric work in the same run (best of reps), ms.
    pub plain_round_ms: f64,
    /// The secure round's aggregator work (best of reps), ms.
    pub round_ms: f64,
    /// Of which: summing the masked inputs, ms.
    pub sum_ms: f64,
    /// Of which: receiving shares and removing every mask, ms.
    pub unmask_ms: f64,
    /// One node: clip + scale + conditional rounding, ms.
    pub client_encode_ms: f64,
    /// One node: its discrete Gaussian noise share (OpenDP), ms.
    pub client_noise_ms: f64,
    /// One node: self mask + pairwise masks with its neighbours, ms.
    pub client_mask_ms: f64,
    /// One node: verifying its neighbours' keys and sharing, ms.
    pub client_share_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the secure round of `nodes` x `params` with `dropout` of the nodes
/// dropping after sharing, best of `reps`.
pub fn bench_secure(
    nodes: usize,
    params: usize,
    dropout: f64,
    reps: usize,
) -> Result<SecureFigures, String> {
    if !(0.0..0.5).contains(&dropout) {
        return Err(format!("--dropout must be in [0, 0.5), got {dropout}"));
    }
    if !(3..=1000).contains(&nodes) {
        return Err(format!("--nodes must be in 3..=1000, got {nodes}"));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plain = kernel::bench_fedavg(nodes, params, reps, threads);
    let dropped = (dropout * nodes as f64).round() as usize;
    let e = |e: veil_secagg::SecAggError| e.to_string();

    // A CA and one certificate per node.
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| e.to_string())?;
    let issuer = Issuer::new(ca, ca_key);
    let trusted = TrustedCa::new(ca_cert.der().to_vec()).map_err(e)?;
    let mut signers = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let id = NodeIdentity::new("bench", &format!("node-{i:04}")).map_err(e)?;
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(
            id.as_str()
                .try_into()
                .map_err(|e: rcgen::Error| e.to_string())?,
        )];
        p.is_ca = IsCa::ExplicitNoCa;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer).map_err(|e| e.to_string())?;
        signers.push(NodeSigner::new(id, cert.der().to_vec(), &key.serialize_der()).map_err(e)?);
    }

    // The round, up to the masked inputs.
    let enc = EncodingParams::with_finest_gamma(
        1.0,
        1.0,
        u32::try_from(nodes - dropped).unwrap_or(u32::MAX),
        u32::try_from(nodes).unwrap_or(u32::MAX),
        params,
    )
    .map_err(e)?;
    let cfg = RoundConfig::new(RoundId::new("bench").map_err(e)?, [7; 32], enc);
    let now = UnixTime::now();
    let mut server = Server::new(cfg.clone(), trusted.clone());
    let mut clients = Vec::with_capacity(nodes);
    for s in &signers {
        let (c, adv) = Client::new(cfg.clone(), s, trusted.clone()).map_err(e)?;
        server
            .receive_advertisement(s.identity(), adv, now)
            .map_err(e)?;
        clients.push(c);
    }
    server.close_advertisements().map_err(e)?;
    let graph = server
        .topology()
        .map_or((0, 0), |t| (t.graph().degree(), t.threshold()));
    let mut client_share_ms = 0.0;
    for (i, c) in clients.iter_mut().enumerate() {
        let (roster, keys) = server.neighbour_keys(c.identity()).map_err(e)?;
        let t = Instant::now();
        let msg = c.share_keys_with(&roster, &keys, now).map_err(e)?;
        if i == 0 {
            client_share_ms = ms(t.elapsed());
        }
        server
            .receive_shares(&signers[i].identity().clone(), msg)
            .map_err(e)?;
    }
    for d in server.close_shares().map_err(e)? {
        let i = signers
            .iter()
            .position(|s| s.identity() == &d.to)
            .ok_or("delivery to an unknown node")?;
        clients[i].receive_shares(&d).map_err(e)?;
    }

    // One node's costs; its encoded update stands in for every node's.
    let update: Vec<f32> = (0..params)
        .map(|j| ((j % 101) as f32 - 50.0) * 1e-5)
        .collect();
    let t = Instant::now();
    let rounded = clip_and_round(&update, &enc).map_err(e)?;
    let client_encode_ms = ms(t.elapsed());
    let t = Instant::now();
    let encoded = add_noise(rounded, &enc).map_err(e)?;
    let client_noise_ms = ms(t.elapsed());
    let mut masked = Vec::with_capacity(nodes);
    let mut client_mask_ms = 0.0;
    for (i, c) in clients.iter_mut().enumerate() {
        let t = Instant::now();
        let m = c.masked_input(&encoded).map_err(e)?;
        if i == dropped {
            client_mask_ms = ms(t.elapsed());
        }
        // The first `dropped` nodes drop after sharing.
        if i >= dropped {
            masked.push((signers[i].identity().clone(), m));
        }
    }
    drop(encoded);

    // The unmasking shares (the request is the same every repetition).
    let mut probe = server.clone();
    for (id, m) in &masked {
        probe.receive_masked_input(id, m.clone()).map_err(e)?;
    }
    let request = probe.close_masked_inputs().map_err(e)?;
    drop(probe);
    let mut responses = Vec::with_capacity(request.survivors.len());
    for id in &request.survivors {
        let i = signers
            .iter()
            .position(|s| s.identity() == id)
            .ok_or("survivor unknown")?;
        responses.push((id.clone(), clients[i].unmask(&request).map_err(e)?));
    }
    drop(clients);

    // Timed: the aggregator's side, best of reps (copies of the inputs are
    // made outside the timed calls).
    let base = vec![0.5f32; params];
    let (mut best, mut best_sum, mut best_unmask) = (f64::INFINITY, 0.0, 0.0);
    for _ in 0..reps.max(1) {
        let mut s = server.clone();
        let mut sum_t = Duration::ZERO;
        for (id, m) in &masked {
            let m = m.clone();
            let t = Instant::now();
            s.receive_masked_input(id, m).map_err(e)?;
            sum_t += t.elapsed();
        }
        let t = Instant::now();
        s.close_masked_inputs().map_err(e)?;
        sum_t += t.elapsed();
        let mut unmask_t = Duration::ZERO;
        for (id, r) in &responses {
            let r = r.clone();
            let t = Instant::now();
            s.receive_unmask(id, r).map_err(e)?;
            unmask_t += t.elapsed();
        }
        let t = Instant::now();
        let out = s.finish().map_err(e)?;
        let decoded: Vec<f32> = decode_sum(&out.values, &enc)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        unmask_t += t.elapsed();
        let t = Instant::now();
        let next = kernel::apply_mean(
            &base,
            &decoded,
            u32::try_from(out.contributors.len()).unwrap_or(1),
        );
        std::hint::black_box(&next);
        let apply_t = t.elapsed();
        let total = ms(sum_t + unmask_t + apply_t);
        if total < best {
            (best, best_sum, best_unmask) = (total, ms(sum_t), ms(unmask_t));
        }
    }
    Ok(SecureFigures {
        nodes,
        params,
        dropped,
        graph,
        plain_round_ms: plain.round_ms,
        round_ms: best,
        sum_ms: best_sum,
        unmask_ms: best_unmask,
        client_encode_ms,
        client_noise_ms,
        client_mask_ms,
        client_share_ms,
    })
}

/// The figures as the bench prints them: a table, then one `name value
/// unit` line each.
pub fn report(f: &SecureFigures, reps: usize) -> String {
    let client_total =
        f.client_share_ms + f.client_encode_ms + f.client_noise_ms + f.client_mask_ms;
    format!(
        "Secure FedAvg round (SecAgg+, degree {k}, threshold {t}), {n} nodes x {p} parameters, {d} dropped after sharing; \
         aggregator best of {reps}, same run as the plain round\n\
         {:<22} {:>12}\n\
         {:<22} {:>12.1}\n\
         {:<22} {:>12.1}\n\
         {:<22} {:>12.1}\n\
         {:<22} {:>12.1}\n\
         {:<22} {:>12.2}\n\
         per node: share keys {:.1} ms, encode {:.1} ms, noise {:.1} ms, mask {:.1} ms, total {:.1} ms\n\
         plain_round_ms {:.2} ms\n\
         round_ms {:.2} ms\n\
         sum_ms {:.2} ms\n\
         unmask_ms {:.2} ms\n\
         secure_over_plain {:.2} x\n\
         dropped {d} nodes\n\
         client_share_ms {:.2} ms\n\
         client_encode_ms {:.2} ms\n\
         client_noise_ms {:.2} ms\n\
         client_mask_ms {:.2} ms\n\
         client_total_ms {:.2} ms",
        "figure",
        "ms",
        "plain round",
        f.plain_round_ms,
        "secure round",
        f.round_ms,
        "  sum masked inputs",
        f.sum_ms,
        "  unmask + decode",
        f.unmask_ms,
        "secure / plain",
        f.round_ms / f.plain_round_ms,
        f.client_share_ms,
        f.client_encode_ms,
        f.client_noise_ms,
        f.client_mask_ms,
        client_total,
        f.plain_round_ms,
        f.round_ms,
        f.sum_ms,
        f.unmask_ms,
        f.round_ms / f.plain_round_ms,
        f.client_share_ms,
        f.client_encode_ms,
        f.client_noise_ms,
        f.client_mask_ms,
        client_total,
        k = f.graph.0,
        t = f.graph.1,
        n = f.nodes,
        p = f.params,
        d = f.dropped,
    )
}
