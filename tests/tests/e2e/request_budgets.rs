//! Request bytes in flight are bounded per connection, per principal and
//! server-wide, from the message prefix, before a body is buffered: held
//! streams cannot grow the aggregator's memory, and a valid client is still
//! answered.

use std::time::Duration;

use veil_proto::{SubmitUpdateRequest, federated_client::FederatedClient};
use veil_tests::{ARENA_POLICY, TestEnv, raw_h2::H2, raw_h2::grpc_status};

const MIB: u32 = 1 << 20;
const UPDATE: &str = "/veil.v1.Federated/SubmitUpdate";

/// Updates up to 4 MiB; one connection may hold 6 MiB, one principal 10,
/// the server 11 (every budget above the largest message, 4.06 MiB of
/// secure-round shares).
const LIMITS: &str = "[requests]\nmax_update_bytes = 4194304\n\
                      max_in_flight_bytes_per_connection = 6291456\n\
                      max_in_flight_bytes_per_principal = 10485760\n\
                      max_in_flight_bytes = 11534336\n";

/// The trailers-only answer of `call` within 5 s: (grpc-status, message,
/// retry-after-ms).
async fn refused(call: veil_tests::raw_h2::HeldCall) -> (i32, String, Option<String>) {
    let resp = tokio::time::timeout(Duration::from_secs(5), call.response)
        .await
        .expect("answered at once")
        .expect("response");
    let (code, msg) = grpc_status(&resp).expect("a trailers-only gRPC answer");
    let hint = resp
        .headers()
        .get("retry-after-ms")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (code, msg, hint)
}

/// Whether `call` is still waiting for its body (admitted, not answered).
async fn held(call: &mut veil_tests::raw_h2::HeldCall) -> bool {
    tokio::time::timeout(Duration::from_millis(300), &mut call.response)
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_streams_are_bounded_per_connection_principal_and_server() {
    let env = TestEnv::start_with_nodes(ARENA_POLICY, LIMITS, 2).await;
    const RESOURCE_EXHAUSTED: i32 = 8;

    // Connection A of node-1 holds a 4 MiB update, one byte sent.
    let mut a = H2::connect(env.addr, &env.pki, "node-1").await;
    let mut first = a.announce(UPDATE, 4 * MIB, 1).await;
    assert!(held(&mut first).await, "the first update is admitted");
    // A second one on the same connection would take it past 6 MiB.
    let (code, msg, hint) = refused(a.announce(UPDATE, 4 * MIB, 1).await).await;
    assert_eq!(code, RESOURCE_EXHAUSTED, "{msg}");
    assert!(
        msg.contains("max_in_flight_bytes_per_connection = 6291456"),
        "{msg}"
    );
    assert_eq!(hint.as_deref(), Some("1000"));

    // Connection B of the same node: the principal still has room (8 of 10).
    let mut b = H2::connect(env.addr, &env.pki, "node-1").await;
    let mut second = b.announce(UPDATE, 4 * MIB, 1).await;
    assert!(held(&mut second).await, "a second connection is admitted");
    // Connection C of the same node: the principal's budget is full.
    let mut c = H2::connect(env.addr, &env.pki, "node-1").await;
    let (code, msg, _) = refused(c.announce(UPDATE, 4 * MIB, 1).await).await;
    assert_eq!(code, RESOURCE_EXHAUSTED, "{msg}");
    assert!(msg.contains("max_in_flight_bytes_per_principal"), "{msg}");
    // Another node: the server's budget is full (8 + 4 > 11 MiB).
    let mut d = H2::connect(env.addr, &env.pki, "node-2").await;
    let (code, msg, _) = refused(d.announce(UPDATE, 4 * MIB, 1).await).await;
    assert_eq!(code, RESOURCE_EXHAUSTED, "{msg}");
    assert!(
        msg.contains("requests.max_in_flight_bytes = 11534336"),
        "{msg}"
    );

    // A small, valid call of another node is answered meanwhile.
    let node2 = env.channel(Some("node-2")).await.expect("connect");
    let started = std::time::Instant::now();
    veil_proto::policy_client::PolicyClient::new(node2.clone())
        .get_policy(veil_proto::GetPolicyRequest {})
        .await
        .expect("policy served while the budgets are full");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Closing connection A returns its 4 MiB: node-2's whole update now
    // reaches the handler (no round is open: refused there, not here).
    drop(first);
    drop(a);
    let mut answer = None;
    for _ in 0..50 {
        let s = FederatedClient::new(node2.clone())
            .submit_update(SubmitUpdateRequest {
                round_id: "no-such-round".into(),
                update: vec![0u8; 3 << 20],
                examples: 1,
            })
            .await
            .unwrap_err();
        if s.code() != tonic::Code::ResourceExhausted {
            answer = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = answer.expect("the freed bytes admit a new update within 5 s");
    assert_ne!(s.code(), tonic::Code::OutOfRange, "{s:?}");
    assert!(s.message().contains("no-such-round"), "{s:?}");
    drop((second, b, c, d));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_its_methods_limit_is_refused_by_name_unread() {
    let env = TestEnv::start_with_nodes(ARENA_POLICY, LIMITS, 1).await;
    // Announced, never sent: refused from the prefix alone.
    let mut a = H2::connect(env.addr, &env.pki, "node-1").await;
    let (code, msg, _) = refused(a.announce(UPDATE, 4 * MIB + 1, 0).await).await;
    assert_eq!(code, 11, "OUT_OF_RANGE: {msg}");
    assert!(
        msg.contains(UPDATE) && msg.contains("4194305 bytes") && msg.contains("limit of 4194304"),
        "{msg}"
    );
    // A query method takes small messages only.
    let (code, msg, _) = refused(a.announce("/veil.v1.Query/ListZones", 1 << 20, 0).await).await;
    assert_eq!(code, 11, "{msg}");
    assert!(msg.contains("limit of 65536"), "{msg}");
    env.stop().await;
}
