//! Who may finish a TLS handshake with the aggregator, and how long a
//! connection may hold it: forged identities (no EKU, a CA certificate as
//! client, a revoked certificate) refused at the handshake and audited; CRLs
//! re-read without a restart; silent connections cannot keep a client out.

use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use tokio::io::AsyncReadExt;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use veil_tests::{ARENA_POLICY, TestEnv, channel_with};

/// `[tls] crls` names the dev PKI's CRL.
fn with_crl(text: String) -> String {
    text.replacen(
        "key = \"pki/server.key\"\n",
        "key = \"pki/server.key\"\ncrls = [\"pki/crl.pem\"]\n",
        1,
    )
}

/// A health check over a fresh connection presenting `pki/<name>.pem`.
async fn health(env: &TestEnv, name: &str) -> Result<(), String> {
    let ch = channel_with(
        &env.endpoint(),
        &env.pki.join("ca.pem"),
        Some((
            env.pki.join(format!("{name}.pem")),
            env.pki.join(format!("{name}.key")),
        )),
    )
    .await
    .map_err(|e| format!("connect: {e:?}"))?;
    HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("{s:?}"))
}

/// Issues `pki/<name>.pem` claiming node-1 of the venue, signed by the real
/// CA, with the given EKU and CA flag.
fn forge(env: &TestEnv, name: &str, eku: Option<ExtendedKeyUsagePurpose>, ca: bool) {
    forge_with(env, name, |p| {
        p.extended_key_usages = eku.into_iter().collect();
        p.is_ca = if ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::ExplicitNoCa
        };
    });
}

/// Issues `pki/<name>.pem` signed by the real CA: a client certificate
/// claiming node-1 of the venue, then changed by `edit`.
fn forge_with(env: &TestEnv, name: &str, edit: impl FnOnce(&mut CertificateParams)) {
    let read = |f: &str| std::fs::read_to_string(env.pki.join(f)).expect("read pki");
    let issuer = Issuer::from_ca_cert_pem(
        &read("ca.pem"),
        KeyPair::from_pem(&read("ca.key")).expect("ca key"),
    )
    .expect("issuer");
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![spiffe("spiffe://veil/venue/arena/node/node-1")];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.is_ca = IsCa::ExplicitNoCa;
    edit(&mut p);
    let key = KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &issuer).expect("sign");
    std::fs::write(env.pki.join(format!("{name}.pem")), cert.pem()).expect("write");
    std::fs::write(env.pki.join(format!("{name}.key")), key.serialize_pem()).expect("write");
}

fn spiffe(uri: &str) -> SanType {
    SanType::URI(uri.try_into().expect("uri"))
}

async fn refusals(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar::<_, String>("SELECT entry FROM audit_log ORDER BY seq")
        .fetch_all(env.storage.reads())
        .await
        .expect("audit")
        .into_iter()
        .filter(|e| e.contains("TLS handshake refused"))
        .collect()
}

/// The audited handshake refusals, once one names `needle` (lowercase) or
/// after 10 s (the audit writer is asynchronous).
async fn refusals_naming(env: &TestEnv, needle: &str) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let e = refusals(env).await;
        if e.iter().any(|x| x.to_lowercase().contains(needle)) || Instant::now() > until {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_revoked_certificates_are_refused_at_the_handshake_and_audited() {
    let env = TestEnv::start_edited(ARENA_POLICY, "", 2, &with_crl).await;
    health(&env, "node-1").await.expect("node-1 served");
    health(&env, "node-2").await.expect("node-2 served");

    // Signed by the real CA, claiming node-1, but not a client certificate.
    forge(&env, "no-eku", None, false);
    forge(
        &env,
        "server-eku",
        Some(ExtendedKeyUsagePurpose::ServerAuth),
        false,
    );
    forge(
        &env,
        "ca-client",
        Some(ExtendedKeyUsagePurpose::ClientAuth),
        true,
    );
    for name in ["no-eku", "server-eku", "ca-client"] {
        assert!(health(&env, name).await.is_err(), "{name} let in");
    }

    // Revoked while serving: refused from the next handshake, others not.
    let (serial, listed) =
        veil_aggregator::pki::revoke(&env.pki, &env.pki.join("node-2.pem")).expect("revoke");
    assert_eq!(listed, 1);
    assert!(!serial.is_empty());
    let again = veil_aggregator::pki::revoke(&env.pki, &env.pki.join("node-2.pem")).unwrap_err();
    assert!(again.to_string().contains("already revoked"), "{again}");
    let until = Instant::now() + Duration::from_secs(15);
    while health(&env, "node-2").await.is_ok() {
        assert!(Instant::now() < until, "revoked node-2 still served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    health(&env, "node-1").await.expect("node-1 still served");

    // Every refusal is audited with the claimed identity and the reason.
    let entries = refusals_naming(&env, "revoked").await;
    let has = |needle: &str| entries.iter().any(|e| e.contains(needle));
    assert!(has("no extendedKeyUsage"), "{entries:#?}");
    assert!(has("lacks clientAuth"), "{entries:#?}");
    assert!(has("CA certificate"), "{entries:#?}");
    assert!(
        entries
            .iter()
            .any(|e| e.contains("node-2") && e.to_lowercase().contains("revoked")),
        "{entries:#?}"
    );
    assert!(
        entries.iter().all(|e| e.contains("\"decision\":\"deny\"")),
        "{entries:#?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_keep_a_client_out_and_idle_ones_are_closed() {
    let limits = "[connections]\nmax_handshakes = 4\nhandshake_timeout = \"2s\"\n\
                  idle_timeout = \"1s\"\n";
    let env = TestEnv::start_edited(ARENA_POLICY, limits, 2, &|t| t).await;
    // Sixteen TCP connections that never send a ClientHello.
    let mut silent = Vec::new();
    for _ in 0..16 {
        silent.push(
            tokio::net::TcpStream::connect(env.addr)
                .await
                .expect("tcp connect"),
        );
    }
    // A real client still gets a handshake slot and is answered.
    let started = Instant::now();
    health(&env, "node-1")
        .await
        .expect("served during the flood");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Every silent connection is closed: the oldest evicted for newer ones,
    // the rest at the handshake timeout.
    for (i, s) in silent.iter_mut().enumerate() {
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .unwrap_or_else(|_| panic!("silent connection {i} still open after 5 s"));
        assert!(matches!(r, Ok(0) | Err(_)), "{i}: {r:?}");
    }

    // A client that finishes TLS and then says nothing is closed when idle.
    let mut tls = veil_tests::raw_h2::tls(env.addr, &env.pki, "node-1").await;
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {} // the server's HTTP/2 SETTINGS
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "idle connection still open after 6 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    health(&env, "node-1")
        .await
        .expect("served after the idle close");

    // A live client's quiet stream outlives the idle timeout: the server's
    // pings are answered.
    let organizer = env.channel(Some("organizer")).await.expect("connect");
    let mut alerts = veil_proto::query_client::QueryClient::new(organizer)
        .watch_alerts(veil_proto::WatchAlertsRequest {
            venue: veil_tests::VENUE.into(),
        })
        .await
        .expect("watch")
        .into_inner();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let next = tokio::time::timeout(Duration::from_millis(300), alerts.message()).await;
    assert!(next.is_err(), "the quiet stream ended: {next:?}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_that_may_not_submit_is_refused_before_its_body_is_read() {
    use veil_proto::{SubmitUpdateRequest, federated_client::FederatedClient};
    let env = TestEnv::start().await;
    // 70 MiB: over the 64 MiB SubmitUpdate limit, so a handler-side check
    // would answer OUT_OF_RANGE after reading it all; the admission layer
    // answers from the headers.
    let big = SubmitUpdateRequest {
        round_id: "r-1".into(),
        update: vec![0u8; 70 << 20],
        examples: 1,
    };
    for who in ["organizer", "ml", "node-3"] {
        let mut c = FederatedClient::new(env.channel(Some(who)).await.expect("connect"));
        let s = c.submit_update(big.clone()).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{who}: {s:?}");
        assert!(
            s.message()
                .contains("refused before reading the request body"),
            "{who}: {s:?}"
        );
    }
    // A registered node passes admission and meets the method's message
    // limit, also before the body is read.
    let mut c = FederatedClient::new(env.channel(Some("node-1")).await.expect("connect"));
    let s = c.submit_update(big).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::OutOfRange, "{s:?}");
    assert!(
        s.message().contains("/veil.v1.Federated/SubmitUpdate")
            && s.message().contains("limit of 67108864 bytes"),
        "{s:?}"
    );
    env.stop().await;
}

/// Certificates from the real CA that still name no one the aggregator
/// knows: expired (refused at the handshake), another venue's node, two
/// SPIFFE ids at once (both refused before a node-only body is read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_foreign_and_ambiguous_identities_are_refused() {
    use veil_proto::{SubmitReleasesRequest, ingest_client::IngestClient};
    let env = TestEnv::start().await;
    forge_with(&env, "expired", |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    forge_with(&env, "other-venue", |p| {
        p.subject_alt_names = vec![spiffe("spiffe://veil/venue/other/node/node-1")];
    });
    forge_with(&env, "two-ids", |p| {
        p.subject_alt_names = vec![
            spiffe("spiffe://veil/venue/arena/node/node-1"),
            spiffe("spiffe://veil/venue/arena/node/node-2"),
        ];
    });
    // A valid client certificate is served (the baseline the others miss).
    health(&env, "node-1").await.expect("node-1 served");
    health(&env, "expired").await.expect_err("expired let in");
    // The client may see the server's alert or only a closed stream (TLS
    // 1.3 finishes the client's side first); the server's audit entry names
    // the cause.
    let entries = refusals_naming(&env, "expired").await;
    assert!(
        entries
            .iter()
            .any(|e| e.to_lowercase().contains("expired") && e.contains("node/node-1")),
        "{entries:#?}"
    );
    for (who, why) in [
        ("other-venue", "not registered"),
        ("two-ids", "more than one SPIFFE id"),
    ] {
        let ch = env.channel(Some(who)).await.expect("handshake");
        let s = IngestClient::new(ch)
            .submit_releases(SubmitReleasesRequest { releases: vec![] })
            .await
            .expect_err("refused");
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{who}: {s:?}");
        assert!(s.message().contains(why), "{who}: {s:?}");
    }
    env.stop().await;
}
