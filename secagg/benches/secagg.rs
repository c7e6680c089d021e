//! Secure-aggregation costs at the scale (1M parameters).
//!
//! * `client/*`: one node's cost per stage: encode (clip + scale +
//!   conditional rounding) at 1M, noise (OpenDP's exact discrete Gaussian,
//!   measured on 16,384 values: per-value throughput; multiply up for 1M),
//!   masking (self mask + k pairwise masks, k = 16 as for 100 nodes) at 1M.
//! * `server/*`: the aggregator from the first masked input to the unmasked
//!   sum, 100 nodes x 1M, with no dropouts and with 10% dropped after
//!   sharing (their pairwise masks rebuilt from mask-key shares).
//!
//! Run: `cargo bench -p veil-secagg --bench secagg`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, criterion_group, criterion_main};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::UnixTime;
use veil_secagg::{
    Client, EncodedUpdate, EncodingParams, NodeIdentity, NodeSigner, RoundConfig, RoundId, Server,
    TrustedCa, clip_and_round,
    messages::{MaskedInput, UnmaskResponse},
};

const D: usize = 1_000_000;

fn pki(n: usize) -> (TrustedCa, Vec<NodeSigner>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let signers = (0..n)
        .map(|i| {
            let id = NodeIdentity::new("bench", &format!("node-{i:03}")).unwrap();
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::default();
            p.subject_alt_names = vec![SanType::URI(id.as_str().try_into().unwrap())];
            p.is_ca = IsCa::ExplicitNoCa;
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let cert = p.signed_by(&key, &issuer).unwrap();
            NodeSigner::new(id, cert.der().to_vec(), &key.serialize_der()).unwrap()
        })
        .collect();
    (TrustedCa::new(ca_cert.der().to_vec()).unwrap(), signers)
}

fn config(n: usize, n_min: u32) -> RoundConfig {
    let enc = EncodingParams::with_finest_gamma(1.0, 1.0, n_min, n as u32, D).unwrap();
    RoundConfig::new(RoundId::new("bench").unwrap(), [1; 32], enc)
}

fn update() -> Vec<f32> {
    (0..D).map(|j| ((j % 101) as f32 - 50.0) * 1e-5).collect()
}

/// A round of `n` nodes up to the masked-input stage: the server, and the
/// clients ready to mask.
fn setup(n: usize, cfg: &RoundConfig) -> (Server, Vec<Client>, Vec<NodeSigner>) {
    let (ca, signers) = pki(n);
    let now = UnixTime::now();
    let mut server = Server::new(cfg.clone(), ca.clone());
    let mut clients = Vec::new();
    for s in &signers {
        let (c, adv) = Client::new(cfg.clone(), s, ca.clone()).unwrap();
        server
            .receive_advertisement(s.identity(), adv, now)
            .unwrap();
        clients.push(c);
    }
    let roster = server.close_advertisements().unwrap();
    for (c, s) in clients.iter_mut().zip(&signers) {
        let m = c.share_keys(&roster, now).unwrap();
        server.receive_shares(s.identity(), m).unwrap();
    }
    for (c, dl) in clients.iter_mut().zip(server.close_shares().unwrap()) {
        c.receive_shares(&dl).unwrap();
    }
    (server, clients, signers)
}

fn client(c: &mut Criterion) {
    let mut g = c.benchmark_group("client");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1));
    let cfg = config(100, 20);
    let x = update();
    g.bench_function("encode_clip_round_1M", |b| {
        b.iter(|| clip_and_round(&x, &cfg.encoding).unwrap())
    });
    let small = EncodingParams::new(1.0, 1.0, 20, 100, 16_384, cfg.encoding.gamma()).unwrap();
    let xs: Vec<f32> = x[..16_384].to_vec();
    g.bench_function("noise_opendp_16384_values", |b| {
        b.iter_batched(
            || clip_and_round(&xs, &small).unwrap(),
            |r| veil_secagg::add_noise(r, &small).unwrap(),
            BatchSize::PerIteration,
        )
    });
    // k = 16 neighbours: a 17-node complete graph has the same per-node work
    // as a node of the 100-node graph.
    let cfg17 = config(17, 5);
    let enc: EncodedUpdate = clip_and_round(&x, &cfg17.encoding)
        .unwrap()
        .dangerous_without_noise();
    g.bench_function("mask_1M_k16", |b| {
        b.iter_batched(
            || setup(17, &cfg17).1.swap_remove(0),
            |mut client| client.masked_input(&enc).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

type Responses = Vec<(NodeIdentity, UnmaskResponse)>;

/// Masked inputs and unmask responses of a 100-node round where the nodes in
/// `dropped` never send a masked input.
fn server_round(dropped: usize) -> (Server, Vec<(NodeIdentity, MaskedInput)>, Responses) {
    let n = 100;
    let cfg = config(n, 20);
    let (server, mut clients, signers) = setup(n, &cfg);
    let enc = clip_and_round(&update(), &cfg.encoding)
        .unwrap()
        .dangerous_without_noise();
    let mut masked = Vec::new();
    for (i, (c, s)) in clients.iter_mut().zip(&signers).enumerate() {
        let m = c.masked_input(&enc).unwrap();
        if i % (n / dropped.max(1)) != 7 || dropped == 0 {
            masked.push((s.identity().clone(), m));
        }
    }
    // Responses need the request, which needs the masked inputs: run the
    // stage once on a copy.
    let mut probe = server.clone();
    for (id, m) in &masked {
        probe.receive_masked_input(id, m.clone()).unwrap();
    }
    let request = probe.close_masked_inputs().unwrap();
    let responses: Responses = request
        .survivors
        .iter()
        .map(|id| {
            let i = signers.iter().position(|s| s.identity() == id).unwrap();
            (id.clone(), clients[i].unmask(&request).unwrap())
        })
        .collect();
    // Sanity: the round unmasks to n_live * enc.
    let out = {
        let mut s = probe.clone();
        for (id, r) in &responses {
            s.receive_unmask(id, r.clone()).unwrap();
        }
        s.finish().unwrap()
    };
    let live = masked.len() as u32;
    assert_eq!(out.values[3], enc.values()[3].wrapping_mul(live));
    (server, masked, responses)
}

fn server(c: &mut Criterion) {
    let mut g = c.benchmark_group("server");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1));
    for (name, dropped) in [
        ("unmask_100x1M_no_dropout", 0),
        ("unmask_100x1M_10pct_dropped", 10),
    ] {
        let (server, masked, responses) = server_round(dropped);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut s = server.clone();
                    let inputs = masked.clone();
                    let resp = responses.clone();
                    let start = Instant::now();
                    for (id, m) in inputs {
                        s.receive_masked_input(&id, m).unwrap();
                    }
                    s.close_masked_inputs().unwrap();
                    for (id, r) in resp {
                        s.receive_unmask(&id, r).unwrap();
                    }
                    std::hint::black_box(s.finish().unwrap());
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, client, server);
criterion_main!(benches);
