//! HTTPS served directly (`[server] tls`): a real `gatehouse serve` with the
//! test certificate, a client that trusts exactly that certificate, and a
//! plain-HTTP client that must get nothing.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::harness::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../gatehouse-server/tests/fixtures")
        .join(name)
}

/// `gatehouse serve` over HTTPS on a fresh SQLite database.
async fn start_https() -> (Database, Server) {
    let db = Database::fresh(Backend::Sqlite, "tls").await.expect("sqlite");
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("gatehouse.toml");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = {:?}, key = {:?} }}\n\n[storage]\nurl = \"{}\"\n{}",
        fixture("localhost.crt"),
        fixture("localhost.key"),
        db.url,
        standard_sources()
    );
    std::fs::write(&config_path, config).expect("write config");
    let server = Server::spawn(config_path, dir);
    (db, server)
}

/// One request over TLS to `server`, trusting only the test certificate,
/// with `server_name` as the name the certificate must carry.
async fn send_tls(server: &Server, server_name: &str, path: &str, headers: &[(&str, String)], body: String) -> Answer {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("localhost.crt")).expect("certificate"))
        .expect("root");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(server_name.to_string()).expect("name"), tcp)
        .await
        .expect("TLS handshake");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", format!("{server_name}:{}", server.addr.port()));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).expect("request"))
        .await
        .expect("response");
    Answer::read(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_ingest_commits_and_plain_http_gets_nothing() {
    let (db, server) = start_https().await;
    assert_eq!(server.scheme, "https", "the start-up line names the scheme");

    let body = stripe_body("evt_tls_1", "payment_intent.succeeded");
    let headers = [
        ("stripe-signature", stripe_signature(STRIPE_SECRET, &body)),
        ("content-type", "application/json".to_string()),
    ];
    for name in ["localhost", "127.0.0.1"] {
        let answer = send_tls(&server, name, "/in/stripe", &headers, body.clone()).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
    }
    let store = db.open_store().await;
    let stored = store
        .event_by_dedup_key("stripe", "evt_tls_1")
        .await
        .expect("read")
        .expect("committed before the 2xx");
    assert_eq!(stored.summary.duplicates, 1, "the second request was the duplicate");

    // The same request in plain HTTP: refused at the TLS layer, never read.
    let plain = format!("http://{}/in/stripe", server.addr);
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder().method("POST").uri(&plain);
    for (name, value) in &headers {
        request = request.header(*name, value);
    }
    let outcome = client
        .request(request.body(Full::new(Bytes::from(body))).expect("request"))
        .await;
    assert!(
        outcome
            .as_ref()
            .map_or(true, |response| !response.status().is_success()),
        "plain HTTP must not be answered 2xx: {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reaches_a_self_signed_gateway_only_with_its_certificate() {
    let (db, server) = start_https().await;
    // The github source: the stripe one takes bodies of 1 KiB at most.
    let url = format!("https://localhost:{}/in/github", server.addr.port());
    let cacert = fixture("localhost.crt");
    let cacert = cacert.to_str().expect("path");
    let secret = format!("--secret={GITHUB_SECRET}");
    let send = [
        "send",
        "--provider",
        "github",
        &secret,
        "--id",
        "tls-send-1",
        "--url",
        &url,
    ];
    // The gatehouse process is separate: a blocking call here holds nothing it needs.
    let (ok, stdout, stderr) = run_cli(&send);
    assert!(!ok, "the system does not trust the test certificate: {stdout}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    let (ok, stdout, stderr) = run_cli(&[&send[..], &["--cacert", cacert]].concat());
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.starts_with("HTTP 200"), "{stdout}");
    let store = db.open_store().await;
    assert!(store
        .event_by_dedup_key("github", "tls-send-1")
        .await
        .expect("read")
        .is_some());
}
