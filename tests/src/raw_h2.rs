//! Raw HTTP/2 over the aggregator's mutual TLS: requests whose bodies stop
//! where a test says, as a slow or hostile client's do (tonic's client
//! always sends whole messages).

use std::path::Path;

use bytes::Bytes;
use rustls_pki_types::pem::PemObject as _;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A TLS connection to `addr` presenting `pki/<name>.pem`, HTTP/2 offered.
pub async fn tls(addr: std::net::SocketAddr, pki: &Path, name: &str) -> TlsStream<TcpStream> {
    try_tls(addr, pki, name).await.expect("TLS connection")
}

/// [`tls`], with a refused connection or handshake as an error.
pub async fn try_tls(
    addr: std::net::SocketAddr,
    pki: &Path,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(pki.join("ca.pem")).expect("ca") {
        roots.add(c.expect("ca")).expect("root");
    }
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(pki.join(format!("{name}.pem")))
        .expect("cert")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(pki.join(format!("{name}.key")))
        .expect("key");
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client config");
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect("localhost".try_into().expect("name"), tcp)
        .await
}

/// An HTTP/2 connection (its driver task runs until the connection is
/// dropped or closed).
pub struct H2 {
    send: h2::client::SendRequest<Bytes>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for H2 {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A gRPC call whose message was announced and partly sent.
pub struct HeldCall {
    /// The server's answer, when it comes.
    pub response: h2::client::ResponseFuture,
    /// The body: more data can follow.
    pub body: h2::SendStream<Bytes>,
}

impl H2 {
    /// Connects as `pki/<name>.pem`.
    pub async fn connect(addr: std::net::SocketAddr, pki: &Path, name: &str) -> Self {
        let (send, conn) = h2::client::handshake(tls(addr, pki, name).await)
            .await
            .expect("h2 handshake");
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Self { send, driver }
    }

    /// Starts a gRPC call of `method` (e.g. `/veil.v1.Federated/SubmitUpdate`)
    /// whose message prefix announces `len` bytes, and sends the prefix and
    /// `sent` bytes of it; the body stays open.
    pub async fn announce(&mut self, method: &str, len: u32, sent: usize) -> HeldCall {
        let send = self.send.clone();
        let mut send = send.ready().await.expect("ready");
        let req = tonic::codegen::http::Request::post(format!("https://localhost{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (response, mut body) = send.send_request(req, false).expect("send request");
        let mut data = vec![0u8];
        data.extend_from_slice(&len.to_be_bytes());
        data.resize(5 + sent, 0);
        body.send_data(Bytes::from(data), false).expect("send data");
        HeldCall { response, body }
    }
}

/// The gRPC status code and message of a trailers-only answer (the headers
/// carry `grpc-status`), or `None` if it carries none, and the headers.
pub fn grpc_status(resp: &tonic::codegen::http::Response<h2::RecvStream>) -> Option<(i32, String)> {
    let h = resp.headers();
    let code = h.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    let msg = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some((code, msg))
}

/// gRPC's percent-encoding of `grpc-message`.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
