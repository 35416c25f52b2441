//! The `http` destination: one request per attempt over a shared client
//! (hyper with rustls), signed with Standard Webhooks so the receiver can
//! verify the gateway and dedupe on `webhook-id`.
//!
//! Redirects are never followed (a 3xx is an answer like any other). The
//! destination's timeout covers connecting, the request and the response
//! head; the first [`EXCERPT_LIMIT`] bytes of the body are read within what
//! is left of it, and the rest is never read: the connection is dropped
//! instead, so a 10 MB answer costs 4 KiB of memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use gatehouse_core::{Header, Secret, UnixMillis};
use gatehouse_verify::providers::standard_webhooks;

use super::{Outbound, Report, ResolvedDestination, EXCERPT_LIMIT};
use crate::config::ConfigIssue;
use crate::outcome::{parse_retry_after, AttemptResult};

/// The client every http destination shares (one connection pool).
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Most response headers kept with an attempt.
const MAX_KEPT_HEADERS: usize = 64;
/// Longest response header value kept.
const MAX_KEPT_HEADER_VALUE: usize = 512;
/// Sent unless a destination configures its own.
const DEFAULT_USER_AGENT: &str = concat!("gatehouse/", env!("CARGO_PKG_VERSION"));

/// Builds the shared client: HTTP/1.1, plain or TLS (rustls with the ring
/// provider), trusting the system's root certificates, or Mozilla's
/// (webpki-roots) where the system has none.
pub fn client() -> Result<HttpClient, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_provider_and_native_roots(provider.clone()) {
        Ok(builder) => builder,
        Err(error) => {
            tracing::debug!(%error, "No system root certificates; trusting the webpki-roots set.");
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_provider_and_webpki_roots(provider)
                .map_err(|e| e.to_string())?
        }
    };
    Ok(build_client(builder))
}

/// A client like [`client`]'s that trusts only the certificates in the PEM
/// file `roots` (a private CA, or a server's own self-signed certificate),
/// for `gatehouse send` to a gateway serving HTTPS with one.
pub fn client_trusting(roots: &std::path::Path) -> Result<HttpClient, String> {
    use rustls::pki_types::pem::PemObject;
    let unreadable = |e: &dyn std::fmt::Display| format!("cannot read certificates from {}: {e}", roots.display());
    let mut store = rustls::RootCertStore::empty();
    for certificate in rustls::pki_types::CertificateDer::pem_file_iter(roots).map_err(|e| unreadable(&e))? {
        store
            .add(certificate.map_err(|e| unreadable(&e))?)
            .map_err(|e| unreadable(&e))?;
    }
    if store.is_empty() {
        return Err(format!("{} holds no PEM certificate", roots.display()));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(build_client(
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config),
    ))
}

fn build_client(builder: hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let connector = builder.https_or_http().enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// One http destination.
pub struct HttpDestination {
    url: Uri,
    method: Method,
    /// Configured extra headers, marked sensitive (they often carry tokens).
    headers: HeaderMap,
    forward: Vec<HeaderName>,
    /// The decoded Standard Webhooks key.
    signing_key: Option<Secret>,
    client: HttpClient,
}

impl std::fmt::Debug for HttpDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL's path or query may hold a token: show the host only.
        f.debug_struct("HttpDestination")
            .field("host", &self.url.host())
            .field("method", &self.method)
            .field("signed", &self.signing_key.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpDestination {
    /// Builds the destination from checked config and resolved secrets.
    pub fn build(resolved: &ResolvedDestination, client: HttpClient) -> Result<Self, ConfigIssue> {
        let config = &resolved.config;
        let url: Uri = config
            .url
            .as_deref()
            .unwrap_or_default()
            .parse()
            .map_err(|_| ConfigIssue::new("url", "not a URL"))?;
        let method = match &config.method {
            Some(method) => Method::from_bytes(method.as_bytes())
                .map_err(|_| ConfigIssue::new("method", format!("{method:?} is not an HTTP method")))?,
            None => Method::POST,
        };
        let signing_key = resolved.secret.as_ref().map(signing_key).transpose()?;
        let headers = extra_headers(&resolved.headers)?;
        let forward = config
            .forward_headers
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| ConfigIssue::new("forward_headers", format!("{name:?} is not a valid header name")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            url,
            method,
            headers,
            forward,
            signing_key,
            client,
        })
    }

    /// The request for one attempt, signed at `timestamp` (unix seconds).
    fn request(&self, outbound: &Outbound<'_>, timestamp: i64) -> Result<Request<Full<Bytes>>, http::Error> {
        let mut headers = HeaderMap::new();
        for name in &self.forward {
            for original in outbound.event.headers.iter().filter(|h| h.name == name.as_str()) {
                if let Ok(value) = HeaderValue::from_str(&original.value) {
                    headers.append(name.clone(), value);
                }
            }
        }
        let content_type = if outbound.transformed {
            Some(HeaderValue::from_static("application/json"))
        } else {
            outbound
                .event
                .headers
                .iter()
                .find(|h| h.name == "content-type")
                .and_then(|h| HeaderValue::from_str(&h.value).ok())
        };
        if let Some(content_type) = content_type {
            headers.insert(CONTENT_TYPE, content_type);
        }
        headers
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static(DEFAULT_USER_AGENT));
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        let id = outbound.event.summary.id.to_string();
        if let Some(key) = &self.signing_key {
            let signature = standard_webhooks::sign(key.expose(), &id, timestamp, &outbound.body);
            headers.insert(
                HeaderName::from_static("webhook-signature"),
                HeaderValue::try_from(signature)?,
            );
        }
        headers.insert(HeaderName::from_static("webhook-id"), HeaderValue::try_from(id)?);
        headers.insert(
            HeaderName::from_static("webhook-timestamp"),
            HeaderValue::from(timestamp),
        );
        let mut request = Request::builder()
            .method(self.method.clone())
            .uri(self.url.clone())
            .body(Full::new(outbound.body.clone()))?;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Sends one attempt within `timeout`.
    pub async fn send(&self, outbound: &Outbound<'_>, timeout: Duration) -> Report {
        let deadline = Instant::now() + timeout;
        let request = match self.request(outbound, UnixMillis::now().as_secs()) {
            Ok(request) => request,
            Err(error) => {
                return Report::bare(AttemptResult::ConnectionFailed(format!(
                    "cannot build the request: {error}"
                )))
            }
        };
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_) => return Report::bare(AttemptResult::TimedOut(timeout)),
            Ok(Err(error)) => return Report::bare(AttemptResult::ConnectionFailed(describe(&error))),
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let headers = keep_headers(response.headers());
        let mut body = response.into_body();
        let (excerpt, body_truncated) = read_excerpt(&mut body, deadline).await;
        // Dropping an unfinished body closes the connection rather than
        // reading the rest into the pool's buffers.
        drop(body);
        Report {
            result: AttemptResult::Response {
                status,
                retry_after,
                body_truncated,
            },
            status_code: Some(i32::from(status)),
            headers,
            excerpt,
        }
    }
}

/// The HMAC key of a destination's Standard Webhooks secret.
pub fn signing_key(secret: &Secret) -> Result<Secret, ConfigIssue> {
    standard_webhooks::decode_secret(secret.expose())
        .map(Secret::new)
        .ok_or_else(|| {
            ConfigIssue::new(
                "secret",
                "not a Standard Webhooks secret (expected \"whsec_\" followed by non-empty base64)",
            )
        })
}

/// The configured extra headers, values marked sensitive. Errors name the
/// header, never its value.
pub fn extra_headers(headers: &[(String, Secret)]) -> Result<HeaderMap, ConfigIssue> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConfigIssue::new("headers", format!("{name:?} is not a valid header name")))?;
        let mut value = HeaderValue::from_bytes(value.expose())
            .map_err(|_| ConfigIssue::new("headers", format!("the value of {name:?} is not a valid header value")))?;
        value.set_sensitive(true);
        map.append(header, value);
    }
    Ok(map)
}

/// Reads up to [`EXCERPT_LIMIT`] bytes of `body` until `deadline`.
/// Returns the excerpt and whether anything was left unread (more bytes,
/// an error mid-body, or the deadline).
async fn read_excerpt<B>(body: &mut B, deadline: Instant) -> (Bytes, bool)
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let mut excerpt = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) | Ok(Some(Err(_))) => return (excerpt.freeze(), true),
            Ok(None) => return (excerpt.freeze(), false),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        let room = EXCERPT_LIMIT - excerpt.len();
        if data.len() > room {
            excerpt.extend_from_slice(&data[..room]);
            return (excerpt.freeze(), true);
        }
        excerpt.extend_from_slice(&data);
    }
}

/// The response headers kept with the attempt, bounded in number and size.
fn keep_headers(headers: &HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .take(MAX_KEPT_HEADERS)
        .map(|(name, value)| {
            let mut value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if value.len() > MAX_KEPT_HEADER_VALUE {
                let mut cut = MAX_KEPT_HEADER_VALUE;
                while !value.is_char_boundary(cut) {
                    cut -= 1;
                }
                value.truncate(cut);
            }
            Header {
                name: name.as_str().to_string(),
                value,
            }
        })
        .collect()
}

/// `HTTP 404 Not Found` (or `HTTP 599` for a code without a name): how
/// attempts, enrichment fetches, backfills and polls name a status.
pub fn status_text(status: u16) -> String {
    match http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("HTTP {status} {reason}"),
        None => format!("HTTP {status}"),
    }
}

/// An error and its causes on one line: hyper's own message is only
/// "client error (Connect)"; the cause says "Connection refused".
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use gatehouse_core::{Disposition, EventId, EventSummary, StoredEvent};
    use gatehouse_verify::providers::standard_webhooks::{SignedHeaders, WEBHOOK_HEADERS};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::DestinationConfig;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    /// What the test server saw of one request.
    #[derive(Clone, Debug)]
    struct Seen {
        method: String,
        headers: HeaderMap,
        body: Bytes,
    }

    type Answer = fn() -> http::Response<Full<Bytes>>;

    /// A hyper server on 127.0.0.1:0 answering every request with `answer`.
    async fn server(answer: Answer) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hook?x=1", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                        let record = record.clone();
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            record.lock().expect("lock").push(Seen {
                                method: parts.method.to_string(),
                                headers: parts.headers,
                                body,
                            });
                            Ok::<_, std::convert::Infallible>(answer())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (url, seen)
    }

    fn event(body: &'static [u8]) -> StoredEvent {
        StoredEvent {
            summary: EventSummary {
                id: EventId::new(),
                source: "stripe".into(),
                received_at: UnixMillis::now(),
                dedup_key: "evt_1".into(),
                provider_event_id: Some("evt_1".into()),
                event_type: Some("charge.succeeded".into()),
                disposition: Disposition::Accepted,
                duplicates: 0,
                last_duplicate_at: None,
                origin: gatehouse_core::EventOrigin::Live,
                pruned_at: None,
            },
            headers: vec![
                Header {
                    name: "content-type".into(),
                    value: "application/json; charset=utf-8".into(),
                },
                Header {
                    name: "stripe-signature".into(),
                    value: "t=1,v1=abc".into(),
                },
                Header {
                    name: "x-request-id".into(),
                    value: "req-7".into(),
                },
            ],
            body: Bytes::from_static(body),
            verification: "stripe-v1".into(),
            remote_addr: None,
        }
    }

    fn destination(url: &str, extra: &str, secret: Option<&str>, headers: Vec<(String, Secret)>) -> HttpDestination {
        let config: DestinationConfig =
            toml::from_str(&format!("name = \"d\"\ntype = \"http\"\nurl = \"{url}\"\n{extra}")).expect("config");
        config.check().expect("valid");
        let resolved = ResolvedDestination {
            config,
            secret: secret.map(Secret::new),
            headers,
            ca_client: None,
        };
        HttpDestination::build(&resolved, client().expect("client")).expect("builds")
    }

    fn outbound(event: &StoredEvent) -> Outbound<'_> {
        Outbound {
            event,
            delivery_id: gatehouse_core::DeliveryId::new(),
            route: "r",
            attempt: 1,
            body: event.body.clone(),
            transformed: false,
        }
    }

    fn ok() -> http::Response<Full<Bytes>> {
        http::Response::builder()
            .status(200)
            .header("x-receiver", "yes")
            .body(Full::new(Bytes::from_static(b"thanks")))
            .expect("response")
    }

    #[tokio::test]
    async fn signs_with_the_event_id_and_passes_on_what_is_configured() {
        let (url, seen) = server(ok).await;
        let destination = destination(
            &url,
            "method = \"PUT\"\nforward_headers = [\"x-request-id\", \"x-missing\"]",
            Some(SECRET),
            vec![("authorization".into(), Secret::new("Bearer t0ken"))],
        );
        let event = event(br#"{"id":"evt_1"}"#);
        let report = destination.send(&outbound(&event), Duration::from_secs(5)).await;
        assert_eq!(
            report.result,
            AttemptResult::Response {
                status: 200,
                retry_after: None,
                body_truncated: false
            }
        );
        assert_eq!(report.status_code, Some(200));
        assert_eq!(report.excerpt, Bytes::from_static(b"thanks"));
        assert!(report
            .headers
            .iter()
            .any(|h| h.name == "x-receiver" && h.value == "yes"));

        let seen = seen.lock().expect("lock")[0].clone();
        assert_eq!(seen.method, "PUT");
        assert_eq!(seen.body, event.body);
        let header = |name: &str| seen.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        assert_eq!(header("webhook-id"), Some(event.summary.id.to_string()));
        assert_eq!(header("x-request-id").as_deref(), Some("req-7"));
        assert_eq!(header("authorization").as_deref(), Some("Bearer t0ken"));
        assert_eq!(
            header("content-type").as_deref(),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(header("stripe-signature"), None, "only named headers are forwarded");
        assert!(header("user-agent").is_some_and(|ua| ua.starts_with("gatehouse/")));

        // The receiver verifies the gateway with the standard-webhooks provider.
        let id = header("webhook-id");
        let timestamp = header("webhook-timestamp");
        let signature = header("webhook-signature");
        let key = standard_webhooks::decode_secret(SECRET.as_bytes()).expect("key");
        let signed = SignedHeaders {
            names: WEBHOOK_HEADERS,
            id: id.as_deref(),
            timestamp: timestamp.as_deref(),
            signature: signature.as_deref(),
        };
        let verified = standard_webhooks::verify(
            &signed,
            &seen.body,
            &[gatehouse_verify::util::keyed_sha256(&key)],
            UnixMillis::now(),
            standard_webhooks::DEFAULT_TOLERANCE,
        );
        assert!(verified.is_ok(), "{verified:?}");
    }

    #[tokio::test]
    async fn transformed_bodies_are_json_and_unsigned_without_a_secret() {
        let (url, seen) = server(ok).await;
        let destination = destination(&url, "", None, Vec::new());
        let event = event(b"a=1");
        let mut request = outbound(&event);
        request.body = Bytes::from_static(br#"{"a":1}"#);
        request.transformed = true;
        destination.send(&request, Duration::from_secs(5)).await;
        let seen = seen.lock().expect("lock")[0].clone();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.body, Bytes::from_static(br#"{"a":1}"#));
        assert_eq!(seen.headers.get("content-type").expect("type"), "application/json");
        assert!(seen.headers.get("webhook-signature").is_none());
        assert!(
            seen.headers.get("webhook-id").is_some(),
            "the id goes out signed or not"
        );
    }

    #[tokio::test]
    async fn retry_after_and_redirects_are_reported_not_followed() {
        fn slow_down() -> http::Response<Full<Bytes>> {
            http::Response::builder()
                .status(429)
                .header("retry-after", "3")
                .body(Full::new(Bytes::new()))
                .expect("response")
        }
        fn moved() -> http::Response<Full<Bytes>> {
            http::Response::builder()
                .status(301)
                .header("location", "http://127.0.0.1:1/elsewhere")
                .body(Full::new(Bytes::new()))
                .expect("response")
        }
        let (url, _) = server(slow_down).await;
        let event = event(b"{}");
        let report = destination(&url, "", None, Vec::new())
            .send(&outbound(&event), Duration::from_secs(5))
            .await;
        assert_eq!(
            report.result,
            AttemptResult::Response {
                status: 429,
                retry_after: Some(Duration::from_secs(3)),
                body_truncated: false
            }
        );
        let (url, seen) = server(moved).await;
        let report = destination(&url, "", None, Vec::new())
            .send(&outbound(&event), Duration::from_secs(5))
            .await;
        assert_eq!(report.status_code, Some(301));
        assert_eq!(seen.lock().expect("lock").len(), 1, "one request, no redirect followed");
    }

    #[tokio::test]
    async fn connection_refused_and_timeouts() {
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", closed.local_addr().expect("addr"));
        drop(closed);
        let event = event(b"{}");
        let report = destination(&url, "", None, Vec::new())
            .send(&outbound(&event), Duration::from_secs(5))
            .await;
        match &report.result {
            AttemptResult::ConnectionFailed(message) => {
                assert!(message.to_lowercase().contains("refused"), "{message}")
            }
            other => panic!("expected a connection failure, got {other:?}"),
        }

        // A server that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", silent.local_addr().expect("addr"));
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let started = std::time::Instant::now();
        let report = destination(&url, "", None, Vec::new())
            .send(&outbound(&event), Duration::from_millis(300))
            .await;
        assert_eq!(report.result, AttemptResult::TimedOut(Duration::from_millis(300)));
        assert!(started.elapsed() < Duration::from_secs(2));
        hold.abort();
    }

    #[tokio::test]
    async fn a_huge_answer_is_cut_at_the_excerpt_and_never_read_in_full() {
        const ANSWER: usize = 100 * 1024 * 1024;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let written = Arc::new(AtomicUsize::new(0));
        let counter = written.clone();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = vec![0u8; 64 * 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {ANSWER}\r\n\r\n");
            stream.write_all(head.as_bytes()).await.expect("head");
            let chunk = vec![b'x'; 64 * 1024];
            while counter.load(Ordering::Relaxed) < ANSWER {
                if stream.write_all(&chunk).await.is_err() {
                    return;
                }
                counter.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        });
        let event = event(b"{}");
        let started = std::time::Instant::now();
        let report = destination(&url, "", None, Vec::new())
            .send(&outbound(&event), Duration::from_secs(10))
            .await;
        assert_eq!(
            report.result,
            AttemptResult::Response {
                status: 200,
                retry_after: None,
                body_truncated: true
            }
        );
        assert_eq!(report.excerpt.len(), EXCERPT_LIMIT);
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        let sent = written.load(Ordering::Relaxed);
        assert!(
            sent < ANSWER,
            "the server could write the whole answer ({sent} bytes): the client kept reading"
        );
    }

    #[tokio::test]
    async fn a_body_that_stalls_after_the_status_keeps_the_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut request = vec![0u8; 64 * 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut request).await;
            let _ = stream
                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 100\r\n\r\npartial")
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let event = event(b"{}");
        let report = destination(&url, "", None, Vec::new())
            .send(&outbound(&event), Duration::from_millis(500))
            .await;
        assert_eq!(report.status_code, Some(202));
        assert_eq!(report.excerpt, Bytes::from_static(b"partial"));
        server.abort();
    }

    /// The HTTPS test certificate (localhost and 127.0.0.1) and its key.
    fn tls_fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../gatehouse-server/tests/fixtures")
            .join(name)
    }

    /// A receiver over HTTPS with the test certificate, answering 200 to
    /// every request.
    async fn https_receiver() -> String {
        use rustls::pki_types::pem::PemObject;
        let chain = rustls::pki_types::CertificateDer::pem_file_iter(tls_fixture("localhost.crt"))
            .expect("cert")
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(tls_fixture("localhost.key")).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://localhost:{}/hook", listener.local_addr().expect("addr").port());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(|_request| async { Ok::<_, hyper::Error>(ok()) });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn ca_cert_makes_a_private_certificate_trusted_for_its_destination_only() {
        let url = https_receiver().await;
        let config: DestinationConfig =
            toml::from_str(&format!("name = \"d\"\ntype = \"http\"\nurl = \"{url}\"\n")).expect("config");
        let event = &event(b"{}");
        let send = |ca_client: Option<HttpClient>| {
            let resolved = ResolvedDestination {
                config: config.clone(),
                secret: None,
                headers: Vec::new(),
                ca_client,
            };
            async move {
                let destination =
                    crate::destination::Destination::build(&resolved, &client().expect("client")).expect("builds");
                let slot = destination
                    .acquire(tokio::time::Instant::now() + Duration::from_secs(5))
                    .await;
                destination.send(&outbound(event), &slot.expect("slot")).await
            }
        };
        // The shared client trusts the system's roots, not this certificate.
        match send(None).await.result {
            AttemptResult::ConnectionFailed(message) => {
                assert!(message.to_lowercase().contains("certificate"), "{message}")
            }
            other => panic!("expected a certificate failure, got {other:?}"),
        }
        let trusting = client_trusting(&tls_fixture("localhost.crt")).expect("client");
        let report = send(Some(trusting)).await;
        assert_eq!(report.status_code, Some(200), "{:?}", report.result);
    }

    #[test]
    fn a_trust_file_must_hold_certificates() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("missing.pem");
        let error = client_trusting(&missing).expect_err("missing");
        assert!(error.contains("missing.pem"), "{error}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").expect("write");
        let error = client_trusting(&empty).expect_err("empty");
        assert!(error.contains("holds no PEM certificate"), "{error}");
    }

    #[tokio::test]
    async fn https_goes_through_rustls() {
        // A server that answers a TLS hello with plain HTTP: the handshake
        // fails, which is a connection failure, retried like any other.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("https://{}/", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        });
        let event = event(b"{}");
        let report = destination(&url, "", None, Vec::new())
            .send(&outbound(&event), Duration::from_secs(5))
            .await;
        match &report.result {
            AttemptResult::ConnectionFailed(message) => {
                assert!(
                    message.to_lowercase().contains("tls") || message.contains("InvalidContentType"),
                    "{message}"
                )
            }
            other => panic!("expected a TLS failure, got {other:?}"),
        }
        let _ = server.await;
    }

    #[test]
    fn undecodable_secrets_and_bad_header_values_are_config_issues() {
        let config: DestinationConfig =
            toml::from_str("name = \"d\"\ntype = \"http\"\nurl = \"http://127.0.0.1/\"").expect("config");
        let client = client().expect("client");
        let bad_secret = ResolvedDestination {
            config: config.clone(),
            secret: Some(Secret::new("whsec_not base64!")),
            headers: Vec::new(),
            ca_client: None,
        };
        let issue = HttpDestination::build(&bad_secret, client.clone()).expect_err("bad secret");
        assert_eq!(issue.key, "secret");
        assert!(!issue.message.contains("not base64!"));
        let bad_header = ResolvedDestination {
            config,
            secret: None,
            headers: vec![("x-token".into(), Secret::new("line\nbreak"))],
            ca_client: None,
        };
        let issue = HttpDestination::build(&bad_header, client).expect_err("bad header");
        assert_eq!(issue.key, "headers");
        assert!(!issue.message.contains("break"), "{}", issue.message);
    }
}
