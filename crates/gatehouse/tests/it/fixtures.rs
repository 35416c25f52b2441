//! Provider coverage through the real ingest path: the golden fixtures made
//! with the providers' own SDKs (`fixtures/*.json`, see `fixtures/README.md`),
//! every handshake answered exactly as its provider requires, and
//! `gatehouse send` round-tripping with every provider.
//!
//! # Fixtures and the clock
//!
//! A fixture's `now` is fixed, and `gatehouse serve` verifies against the
//! real clock. So every fixture runs three ways:
//!
//! 1. **Pure**: the provider's `verify` at the fixture's `now`, asserting the
//!    exact verdict and rejection code. Every case.
//! 2. **HTTP as stored**: the exact bytes and headers, sent over a socket to
//!    one `gatehouse serve` on SQLite, asserting the status (and the answer
//!    of handshakes). Sources of providers that sign a timestamp are
//!    configured here with a tolerance wide enough to cover the distance
//!    between the fixture's `now` and today, so signature checks are judged
//!    on the stored bytes; the cases whose point *is* the tolerance
//!    (`rejection` `timestamp_*`) are left to step 3. Cases whose signed URL
//!    is not a gatehouse URL (Twilio's published vectors sign
//!    `https://mycompany.com/myapp.php`) cannot be received unchanged and
//!    run pure only; the test counts them.
//! 3. **HTTP, clock windows**: every timestamped case with a non-zero
//!    `offset_secs` (timestamp − now) is re-signed with our own signer at
//!    *real now + offset* and sent to a twin source with the provider's
//!    real tolerance: cases expected inside the tolerance are pulled 3 s
//!    further in, cases expected outside pushed 3 s further out, so request
//!    latency cannot flip a verdict.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use tokio::net::TcpListener;

use gatehouse_core::{Secret, UnixMillis};
use gatehouse_verify::signing::{sign_request, SigningKey, Unsigned};
use gatehouse_verify::{BuildContext, InboundRequest, Kind, ProviderSpec, VerifyOptions};

use crate::harness::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");
const PAYPAL_CERT: &str = include_str!("../../../gatehouse-verify/tests/data/paypal-signer.cert.pem");
const PAYPAL_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../gatehouse-verify/tests/data/paypal-signer.key.pem"
);
/// The Discord fixtures' key: the Ed25519 seed 0x00..0x1f.
const DISCORD_SEED: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// The SendGrid fixtures' key (the P-256 scalar 4a04dd…310d), PKCS#8.
const SENDGRID_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSgTd3EjvxWYpu4uj
hSo5Oge8QhEAggJGLgUArqnNMQ2hRANCAAS7fUyCMWOwsnJbay+l/nTBM3c9ssmg
FyYhAgL40rEf+BHwDwXAbyuyIiaSwWHeQW36wCdIvRKOw6636oCdRUkW
-----END PRIVATE KEY-----
";
/// Path of the certificate PayPal fixtures name (`{cert_server}` is ours).
const CERT_PATH: &str = "/v1/notifications/certs/CERT-gatehouse-test";
/// A tolerance covering any fixture's distance from today (about 95 years).
const ANY_TIME: &str = "3000000000s";

/// Providers whose signature covers a timestamp checked against the clock.
fn is_timed(provider: &str) -> bool {
    matches!(
        provider,
        "stripe" | "standard-webhooks" | "svix" | "slack" | "zoom" | "discord" | "sendgrid" | "linear" | "mailgun"
    )
}

/// One fixture case (see `fixtures/README.md`).
#[derive(Clone, Debug)]
struct Case {
    file: String,
    provider: String,
    source: String,
    name: String,
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    secrets: Vec<String>,
    options: Value,
    tolerance_secs: Option<u64>,
    now: i64,
    offset_secs: i64,
    accepted: bool,
    status: u16,
    rejection: Option<String>,
    answer: Option<Value>,
}

impl Case {
    fn label(&self) -> String {
        format!("{}: {}", self.file, self.name)
    }

    fn is_handshake(&self) -> bool {
        self.answer.is_some()
    }

    /// Whether the point of the case is the tolerance window.
    fn is_about_time(&self) -> bool {
        self.rejection.as_deref().is_some_and(|r| r.starts_with("timestamp_"))
    }

    fn options(&self) -> VerifyOptions {
        serde_json::from_value(self.options.clone()).unwrap_or_else(|e| panic!("{}: options: {e}", self.label()))
    }

    fn secrets(&self) -> Vec<Secret> {
        self.secrets.iter().map(|s| Secret::new(s.as_str())).collect()
    }

    /// Authority and path+query of the URL, when it is a gatehouse URL for
    /// this case's source.
    fn http_target(&self) -> Option<(String, String)> {
        let rest = self.url.strip_prefix("http://")?;
        let slash = rest.find('/')?;
        let (authority, path_and_query) = rest.split_at(slash);
        let path = path_and_query.split('?').next().unwrap_or_default();
        (path == format!("/in/{}", self.source)).then(|| (authority.to_string(), path_and_query.to_string()))
    }
}

fn text(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_default().to_string()
}

/// Every case of every fixture file but the cross-check.
fn load_cases(cert_server: &str) -> Vec<Case> {
    let mut files: Vec<_> = std::fs::read_dir(FIXTURES)
        .expect("fixtures/ exists")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .filter(|path| !path.ends_with("sdk-crosscheck.json"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let list: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).expect("read fixture"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        for raw in list {
            cases.push(parse_case(&file, &raw, cert_server));
        }
    }
    cases
}

fn parse_case(file: &str, raw: &Value, cert_server: &str) -> Case {
    use base64::Engine as _;
    let body = if let Some(text) = raw["body"].as_str() {
        text.as_bytes().to_vec()
    } else if let Some(encoded) = raw["body_base64"].as_str() {
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .expect("body_base64")
    } else if let Some(repeat) = raw.get("body_repeat") {
        expand_repeat(repeat)
    } else {
        Vec::new()
    };
    let headers = raw["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().expect("name").to_string(),
                pair[1].as_str().expect("value").replace("{cert_server}", cert_server),
            )
        })
        .collect();
    let expect = text(raw, "expect");
    assert!(
        expect == "accepted" || expect == "rejected",
        "{file}: expect {expect:?}"
    );
    Case {
        file: file.to_string(),
        provider: text(raw, "provider"),
        source: text(raw, "source"),
        name: text(raw, "name"),
        method: text(raw, "method"),
        url: text(raw, "url"),
        headers,
        body,
        secrets: raw["secrets"]
            .as_array()
            .expect("secrets")
            .iter()
            .map(|s| s.as_str().expect("secret").to_string())
            .collect(),
        options: raw["options"].clone(),
        tolerance_secs: raw["tolerance_secs"].as_u64(),
        now: raw["now"].as_i64().expect("now"),
        offset_secs: raw["offset_secs"].as_i64().unwrap_or(0),
        accepted: expect == "accepted",
        status: raw["status"].as_u64().expect("status") as u16,
        rejection: raw["rejection"].as_str().map(str::to_string),
        answer: raw.get("answer").filter(|a| !a.is_null()).cloned(),
    }
}

/// `prefix`, `unit` repeated and cut, `suffix`: `len` bytes in all.
fn expand_repeat(repeat: &Value) -> Vec<u8> {
    let prefix = repeat["prefix"].as_str().expect("prefix");
    let unit = repeat["unit"].as_str().expect("unit");
    let suffix = repeat["suffix"].as_str().expect("suffix");
    let len = repeat["len"].as_u64().expect("len") as usize;
    let middle = len - prefix.len() - suffix.len();
    let mut body = prefix.as_bytes().to_vec();
    body.extend(unit.as_bytes().iter().cycle().take(middle));
    body.extend_from_slice(suffix.as_bytes());
    assert_eq!(body.len(), len);
    body
}

fn header_map(headers: &[(String, String)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            http::HeaderValue::from_str(value).expect("header value"),
        );
    }
    map
}

/// A build context whose certificate cache holds the PayPal test
/// certificate under every URL the cases name.
fn context_with_certificates(cases: &[Case]) -> BuildContext {
    let context = BuildContext::default();
    for case in cases.iter().filter(|c| c.provider == "paypal") {
        if let Some((_, url)) = case
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("paypal-cert-url"))
        {
            let _ = context
                .certificates
                .insert_pem(url, PAYPAL_CERT.as_bytes(), UnixMillis(case.now));
        }
    }
    context
}

#[test]
fn fixtures_pass_the_pure_verifiers() {
    let cases = load_cases("127.0.0.1:8443");
    let context = context_with_certificates(&cases);
    let mut per_provider: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for case in &cases {
        let secrets = case.secrets();
        let options = case.options();
        let provider = gatehouse_verify::build_with(
            ProviderSpec {
                provider: &case.provider,
                secrets: &secrets,
                tolerance: case.tolerance_secs.map(Duration::from_secs),
                options: &options,
            },
            &context,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.label()));
        let method: http::Method = case.method.parse().expect("method");
        let headers = header_map(&case.headers);
        let request = InboundRequest {
            method: &method,
            url: &case.url,
            headers: &headers,
            body: &case.body,
        };
        let counts = per_provider.entry(case.provider.clone()).or_default();
        if case.accepted {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
        if let Some(reply) = provider.unsigned_handshake(&request) {
            assert!(case.accepted, "{}: answered as a handshake", case.label());
            check_answer(case, reply.status, reply.content_type, &reply.headers, &reply.body);
            continue;
        }
        let verdict = provider.verify(&request, UnixMillis(case.now));
        match (&verdict, case.accepted) {
            (Ok(_), true) => {}
            (Err(rejection), false) => assert_eq!(
                Some(rejection.code()),
                case.rejection.as_deref(),
                "{}: rejected for another reason: {rejection}",
                case.label()
            ),
            _ => panic!("{}: expected {}, got {verdict:?}", case.label(), expectation(case)),
        }
        if case.accepted && case.is_handshake() {
            let Kind::Handshake(reply) = provider.identify(&request).kind else {
                panic!("{}: not identified as a handshake", case.label());
            };
            check_answer(case, reply.status, reply.content_type, &reply.headers, &reply.body);
        }
    }
    // Every provider of PROVIDERS.md has fixtures, accepted and rejected.
    for provider in [
        "stripe",
        "github",
        "standard-webhooks",
        "svix",
        "twilio",
        "slack",
        "shopify",
        "paypal",
        "square",
        "discord",
        "zoom",
        "gitlab",
        "sendgrid",
        "linear",
        "intercom",
        "mailgun",
        "microsoft-graph",
        "dropbox",
    ] {
        let (accepted, rejected) = per_provider.get(provider).copied().unwrap_or_default();
        assert!(
            accepted > 0 && rejected > 0,
            "{provider}: {accepted} accepted and {rejected} rejected fixtures"
        );
    }
}

fn expectation(case: &Case) -> String {
    match &case.rejection {
        Some(code) => format!("rejected ({code})"),
        None => "accepted".into(),
    }
}

fn check_answer(case: &Case, status: u16, content_type: &str, headers: &[(&str, String)], body: &[u8]) {
    let answer = case.answer.as_ref().expect("answer");
    assert_eq!(status, case.status, "{}", case.label());
    assert_eq!(content_type, text(answer, "content_type"), "{}", case.label());
    assert_eq!(
        String::from_utf8_lossy(body),
        text(answer, "body"),
        "{}: answer body",
        case.label()
    );
    if answer["nosniff"].as_bool() == Some(true) {
        assert!(
            headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case("x-content-type-options") && v == "nosniff"),
            "{}: no nosniff",
            case.label()
        );
    }
}

/// A one-file HTTP server on 127.0.0.1 (PayPal's certificate host in tests).
struct FileServer {
    addr: std::net::SocketAddr,
    _task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    async fn start(path: &'static str, content: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let found = request.uri().path() == path;
                        async move {
                            let response = hyper::Response::builder()
                                .status(if found { 200 } else { 404 })
                                .header("content-type", "application/x-pem-file")
                                .body(Full::new(Bytes::from_static(if found {
                                    content.as_bytes()
                                } else {
                                    b""
                                })))
                                .expect("response");
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, _task: task }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// A `[[sources]]` entry.
fn source_toml(name: &str, provider: &str, secrets: &[String], options: &Value, tolerance: Option<&str>) -> String {
    let quote = |s: &str| Value::from(s).to_string();
    let mut toml = format!(
        "\n[[sources]]\nname = {}\nprovider = {}\nbody_limit = \"2MiB\"\nsecrets = [{}]\n",
        quote(name),
        quote(provider),
        secrets.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")
    );
    if let Some(tolerance) = tolerance {
        toml.push_str(&format!("tolerance = {}\n", quote(tolerance)));
    }
    if let Some(options) = options.as_object().filter(|o| !o.is_empty()) {
        let entries: Vec<String> = options.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        toml.push_str(&format!("verify = {{ {} }}\n", entries.join(", ")));
    }
    toml
}

/// The source configs the cases name, checking that cases sharing a source
/// agree on it; timestamped ones twice: as stored (any time) and with
/// their real tolerance (`<name>-window`).
fn sources_for(cases: &[Case]) -> String {
    let mut seen: BTreeMap<String, &Case> = BTreeMap::new();
    let mut toml = String::new();
    for case in cases {
        if let Some(first) = seen.get(&case.source) {
            assert!(
                first.provider == case.provider
                    && first.secrets == case.secrets
                    && first.options == case.options
                    && first.tolerance_secs == case.tolerance_secs,
                "{} and {} share source {} with different configs",
                first.label(),
                case.label(),
                case.source
            );
            continue;
        }
        seen.insert(case.source.clone(), case);
        let nominal = case.tolerance_secs.map(|t| format!("{t}s"));
        if is_timed(&case.provider) {
            toml.push_str(&source_toml(
                &case.source,
                &case.provider,
                &case.secrets,
                &case.options,
                Some(ANY_TIME),
            ));
            let window = format!("{}-window", case.source);
            toml.push_str(&source_toml(
                &window,
                &case.provider,
                &case.secrets,
                &case.options,
                nominal.as_deref(),
            ));
        } else {
            toml.push_str(&source_toml(
                &case.source,
                &case.provider,
                &case.secrets,
                &case.options,
                nominal.as_deref(),
            ));
        }
    }
    toml
}

/// The key our signer uses for a source's cases, when we hold it.
fn signing_key_for(case: &Case) -> Option<SigningKey> {
    match case.provider.as_str() {
        "discord" => SigningKey::from_private_key(DISCORD_SEED).ok(),
        "sendgrid" if case.source == "sendgrid" => SigningKey::from_private_key(SENDGRID_KEY).ok(),
        "sendgrid" | "paypal" => None,
        _ => case.secrets.first().map(|s| SigningKey::shared(s.as_str())),
    }
}

async fn post_case(server: &Server, case: &Case, authority: &str, path_and_query: &str) -> Answer {
    let mut headers: Vec<(&str, String)> = vec![("host", authority.to_string())];
    headers.extend(case.headers.iter().map(|(n, v)| (n.as_str(), v.clone())));
    send(
        &case.method,
        &format!("http://{}{path_and_query}", server.addr),
        &headers,
        case.body.clone(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_pass_the_http_ingest_path() {
    let certificates = FileServer::start(CERT_PATH, PAYPAL_CERT).await;
    let cert_server = certificates.addr.to_string();
    let cases = load_cases(&cert_server);
    let db = Database::fresh(Backend::Sqlite, "fixtures_http").await.expect("sqlite");
    let server = Server::start(&db, &sources_for(&cases));

    // 2. Every case as stored, except those about the clock.
    let (mut sent, mut pure_only) = (0, Vec::new());
    for case in cases.iter().filter(|c| !c.is_about_time()) {
        let Some((authority, path_and_query)) = case.http_target() else {
            pure_only.push(case.label());
            continue;
        };
        let answer = post_case(&server, case, &authority, &path_and_query).await;
        sent += 1;
        assert_eq!(answer.status, case.status, "{}: {}", case.label(), answer.body);
        if let Some(expected) = &case.answer {
            let content_type = answer.headers.get("content-type").and_then(|v| v.to_str().ok());
            assert_eq!(content_type, expected["content_type"].as_str(), "{}", case.label());
            assert_eq!(answer.body, text(expected, "body"), "{}", case.label());
            if expected["nosniff"].as_bool() == Some(true) {
                assert_eq!(
                    answer.headers.get("x-content-type-options").map(|v| v.as_bytes()),
                    Some(&b"nosniff"[..]),
                    "{}",
                    case.label()
                );
            }
        } else if case.accepted {
            let status = answer.json()["status"].as_str().unwrap_or_default().to_string();
            assert!(
                ["accepted", "ping", "duplicate"].contains(&status.as_str()),
                "{}: {}",
                case.label(),
                answer.body
            );
        } else if case.status == 415 {
            assert_eq!(answer.json()["error"], "unsupported_media_type", "{}", case.label());
        } else {
            assert_eq!(answer.json()["error"], "invalid_signature", "{}", case.label());
        }
    }
    // Only the Twilio vectors signed for another site's URL stay pure.
    assert!(
        pure_only
            .iter()
            .all(|label| label.starts_with("twilio.json: published")),
        "{pure_only:?}"
    );

    // 3. The clock windows, re-signed at real now + offset.
    let mut windows = 0;
    for case in cases.iter().filter(|c| is_timed(&c.provider) && c.offset_secs != 0) {
        let Some(key) = signing_key_for(case) else { continue };
        let margin = if case.accepted { -3 } else { 3 };
        let offset = case.offset_secs + case.offset_secs.signum() * margin;
        let window = format!("{}-window", case.source);
        let url = format!("http://gatehouse.test/in/{window}");
        let body = without_body_clock(&case.provider, &case.body);
        let when = UnixMillis(UnixMillis::now().0 + offset * 1000);
        let signed = sign_request(
            &case.provider,
            &key,
            &case.options(),
            &Unsigned::post(&url, &body),
            when,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.label()));
        let resigned = Case {
            headers: signed.headers.clone(),
            body: signed.body.clone(),
            ..case.clone()
        };
        let answer = post_case(&server, &resigned, "gatehouse.test", &format!("/in/{window}")).await;
        windows += 1;
        let expected = if case.accepted { 200 } else { 401 };
        assert_eq!(
            answer.status,
            expected,
            "{} re-signed at now{offset:+}s: {}",
            case.label(),
            answer.body
        );
        if let Some(code) = &case.rejection {
            let detail = answer.json()["detail"].as_str().unwrap_or_default().to_string();
            let word = if code == "timestamp_too_old" { "old" } else { "future" };
            assert!(detail.contains(word), "{}: {detail}", case.label());
        }
    }
    eprintln!(
        "fixtures over HTTP: {sent} as stored, {windows} clock windows re-signed, {} pure only",
        pure_only.len()
    );
    assert!(sent > 150 && windows >= 20, "{sent} sent, {windows} windows");
}

/// The body with the sender's clock removed, so that our signer writes a
/// fresh one: Linear's `webhookTimestamp` (Mailgun's `signature` object is
/// replaced by the signer anyway).
fn without_body_clock(provider: &str, body: &[u8]) -> Vec<u8> {
    if provider != "linear" {
        return body.to_vec();
    }
    let mut json: Value = serde_json::from_slice(body).expect("linear JSON");
    json.as_object_mut().expect("object").remove("webhookTimestamp");
    serde_json::to_vec(&json).expect("serialise")
}

#[test]
fn sdk_crosscheck_is_recorded_and_our_verifiers_agree() {
    let path = format!("{FIXTURES}/sdk-crosscheck.json");
    let checks: Vec<Value> = serde_json::from_slice(&std::fs::read(&path).expect("sdk-crosscheck.json")).expect("JSON");
    let mut providers: Vec<String> = Vec::new();
    for check in &checks {
        let provider = text(check, "provider");
        assert_eq!(check["sdk_verdict"], true, "{provider}: {}", check["sdk"]);
        let request = &check["request"];
        let headers: Vec<(String, String)> = request["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|pair| {
                (
                    pair[0].as_str().expect("name").into(),
                    pair[1].as_str().expect("value").into(),
                )
            })
            .collect();
        let options = if provider == "square" {
            VerifyOptions {
                notification_url: Some(text(request, "url")),
                ..Default::default()
            }
        } else {
            VerifyOptions::default()
        };
        let secrets = [Secret::new(text(check, "secret"))];
        let verifier = gatehouse_verify::build(ProviderSpec {
            provider: &provider,
            secrets: &secrets,
            tolerance: None,
            options: &options,
        })
        .expect("build");
        let map = header_map(&headers);
        let url = text(request, "url");
        let body = text(request, "body");
        let verdict = verifier.verify(
            &InboundRequest {
                method: &http::Method::POST,
                url: &url,
                headers: &map,
                body: body.as_bytes(),
            },
            UnixMillis(check["checked_at"].as_i64().expect("checked_at")),
        );
        assert!(verdict.is_ok(), "{provider}: {verdict:?}");
        providers.push(provider);
    }
    for required in ["stripe", "github", "standard-webhooks", "twilio", "slack"] {
        assert!(providers.iter().any(|p| p == required), "no cross-check for {required}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_answer_exactly_as_each_provider_requires() {
    let db = Database::fresh(Backend::Sqlite, "handshakes").await.expect("sqlite");
    let discord_key = SigningKey::from_private_key(DISCORD_SEED).expect("seed");
    let discord_public = discord_key.verifying_secret().expect("public key");
    let sources = [
        ("slack", "slack", "slack-secret".to_string()),
        ("zoom", "zoom", "zoom-secret-token".to_string()),
        ("graph", "microsoft-graph", "client-state".to_string()),
        ("dropbox", "dropbox", "dropbox-secret".to_string()),
        ("discord", "discord", discord_public),
        ("github", "github", "github-secret".to_string()),
    ]
    .iter()
    .map(|(name, provider, secret)| source_toml(name, provider, std::slice::from_ref(secret), &Value::Null, None))
    .collect::<String>();
    let server = Server::start(&db, &sources);
    let now = UnixMillis::now();
    let signed = |provider: &str, key: &SigningKey, source: &str, body: &[u8]| {
        let url = server.url(&format!("/in/{source}"));
        sign_request(
            provider,
            key,
            &VerifyOptions::default(),
            &Unsigned::post(&url, body),
            now,
        )
        .expect("sign")
    };
    let post = |request: gatehouse_verify::SignedRequest| async move {
        let headers: Vec<(&str, String)> = request.headers.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        send("POST", &request.url, &headers, request.body.clone()).await
    };
    let content_type = |answer: &Answer| {
        answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let nosniff = |answer: &Answer| {
        answer
            .headers
            .get("x-content-type-options")
            .map(|v| v.as_bytes().to_vec())
    };

    // Slack url_verification: 200, JSON {"challenge": …}.
    let challenge = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let answer = post(signed(
        "slack",
        &SigningKey::shared("slack-secret"),
        "slack",
        challenge.as_bytes(),
    ))
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(content_type(&answer), "application/json");
    assert_eq!(
        answer.body,
        r#"{"challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#
    );

    // Zoom endpoint.url_validation: 200, JSON with the HMAC of plainToken.
    let validation = r#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    let answer = post(signed(
        "zoom",
        &SigningKey::shared("zoom-secret-token"),
        "zoom",
        validation.as_bytes(),
    ))
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(content_type(&answer), "application/json");
    let expected_token = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"zoom-secret-token").expect("key");
        mac.update(b"qgg8vlvZRS6UYooatFL8Aw");
        hex::encode(mac.finalize().into_bytes())
    };
    assert_eq!(
        answer.json(),
        serde_json::json!({"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected_token})
    );

    // Microsoft Graph validationToken: 200 text/plain, the decoded token.
    let token = "Validation: Testing client application reachability for subscription Request-Id: 72c5a0c7";
    let query: String = form_encode(token);
    let answer = send(
        "POST",
        &server.url(&format!("/in/graph?validationToken={query}")),
        &[],
        "",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(content_type(&answer), "text/plain");
    assert_eq!(answer.body, token);
    assert_eq!(nosniff(&answer).as_deref(), Some(&b"nosniff"[..]));

    // Dropbox GET ?challenge=: 200 text/plain with nosniff, the challenge.
    let answer = send("GET", &server.url("/in/dropbox?challenge=abc%2D123_XYZ"), &[], "").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(content_type(&answer), "text/plain");
    assert_eq!(nosniff(&answer).as_deref(), Some(&b"nosniff"[..]));
    assert_eq!(answer.body, "abc-123_XYZ");

    // Discord PING: 200 application/json {"type":1}; a bad signature 401.
    let answer = post(signed(
        "discord",
        &discord_key,
        "discord",
        br#"{"type":1,"id":"1","application_id":"2"}"#,
    ))
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(content_type(&answer), "application/json");
    assert_eq!(answer.body, r#"{"type":1}"#);
    let mut forged = signed("discord", &discord_key, "discord", br#"{"type":1}"#);
    forged.body = br#"{"type":1} "#.to_vec();
    assert_eq!(
        post(forged).await.status,
        401,
        "Discord requires 401 for bad signatures"
    );

    // GitHub ping: 200, recorded as a ping, never routed.
    let ping = br#"{"zen":"Design for failure.","hook_id":42,"hook":{"type":"Repository","id":42}}"#;
    let mut request = signed("github", &SigningKey::shared("github-secret"), "github", ping);
    request.headers.retain(|(n, _)| n != "X-GitHub-Delivery");
    request
        .headers
        .push(("X-GitHub-Delivery".into(), "ping-delivery-1".into()));
    let answer = post(request).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(content_type(&answer), "application/json");
    assert_eq!(answer.json()["status"], "ping");

    // The signed handshakes are recorded as pings, never as routable events.
    let store = db.open_store().await;
    let stored = store
        .event_by_dedup_key("github", "ping-delivery-1")
        .await
        .expect("read")
        .expect("ping recorded");
    assert_eq!(stored.summary.disposition, gatehouse_core::Disposition::Ping);
}

/// Percent-encodes a query value.
fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_round_trips_with_every_provider() {
    let certificates = FileServer::start(CERT_PATH, PAYPAL_CERT).await;
    let dir = tempfile::tempdir().expect("dir");
    let discord_key = dir.path().join("discord.key");
    std::fs::write(&discord_key, DISCORD_SEED).expect("write");
    let sendgrid_key = dir.path().join("sendgrid.pem");
    std::fs::write(&sendgrid_key, SENDGRID_KEY).expect("write");
    let discord_public = SigningKey::from_private_key(DISCORD_SEED)
        .expect("seed")
        .verifying_secret()
        .expect("public");
    let sendgrid_public = SigningKey::from_private_key(SENDGRID_KEY)
        .expect("pem")
        .verifying_secret()
        .expect("public");

    let secret_file = dir.path().join("stripe.secret");
    std::fs::write(&secret_file, "stripe-secret\n").expect("write");

    let db = Database::fresh(Backend::Sqlite, "send_round_trip")
        .await
        .expect("sqlite");
    // Square signs its notification URL, configured on both sides.
    let square_url = "https://hooks.example.com/in/square";
    let mut sources = String::new();
    let mut plan: Vec<(String, Vec<String>)> = Vec::new();
    for &provider in gatehouse_verify::provider_names() {
        let mut args: Vec<String> = Vec::new();
        let (secret, options) = match provider {
            "discord" => {
                args.extend(["--private-key".into(), discord_key.display().to_string()]);
                (discord_public.clone(), Value::Null)
            }
            "sendgrid" => {
                args.extend(["--private-key".into(), sendgrid_key.display().to_string()]);
                (sendgrid_public.clone(), Value::Null)
            }
            "paypal" => {
                args.extend([
                    "--private-key".into(),
                    PAYPAL_KEY.to_string(),
                    "--cert-url".into(),
                    format!("http://{}{CERT_PATH}", certificates.addr),
                    "--option".into(),
                    "webhook_id=1JE4291016473214C".into(),
                ]);
                (
                    String::new(),
                    serde_json::json!({"webhook_id": "1JE4291016473214C", "cert_hosts": ["127.0.0.1"]}),
                )
            }
            "square" => {
                args.extend(["--option".into(), format!("notification_url={square_url}")]);
                let secret = "square-signature-key".to_string();
                args.extend(["--secret".into(), secret.clone()]);
                (secret, serde_json::json!({ "notification_url": square_url }))
            }
            "hmac" => {
                let secret = "hmac-secret".to_string();
                args.extend([
                    "--secret".into(),
                    secret.clone(),
                    "--option".into(),
                    "header=X-Signature".into(),
                    "--option".into(),
                    "prefix=sha256=".into(),
                ]);
                (
                    secret,
                    serde_json::json!({"header": "X-Signature", "prefix": "sha256="}),
                )
            }
            "none" => (String::new(), serde_json::json!({"insecure": true})),
            _ => {
                let secret = match provider {
                    "standard-webhooks" | "svix" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
                    _ => format!("{provider}-secret"),
                };
                // One secret read from a file, the others given literally.
                let reference = if provider == "stripe" {
                    format!("file:{}", secret_file.display())
                } else {
                    secret.clone()
                };
                args.extend(["--secret".into(), reference]);
                (secret, Value::Null)
            }
        };
        let secrets: Vec<String> = if secret.is_empty() { vec![] } else { vec![secret] };
        sources.push_str(&source_toml(provider, provider, &secrets, &options, None));
        plan.push((provider.to_string(), args));
    }
    let server = Server::start(&db, &sources);
    let (ok, list, _) = run_cli(&["send", "--list"]);
    assert!(ok);
    let mut round_trips = 0;
    for (provider, args) in &plan {
        let events = list
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{provider} ")))
            .map(|rest| rest.trim().trim_end_matches("[--private-key]").trim().to_string())
            .unwrap_or_else(|| panic!("{provider} not in --list"));
        for event in events.split(", ") {
            let url = server.url(&format!("/in/{provider}"));
            let mut command: Vec<&str> = vec!["send", "--provider", provider, "--event", event, "--url", &url];
            command.extend(args.iter().map(String::as_str));
            let (ok, stdout, stderr) = run_cli(&command);
            assert!(ok, "{provider} {event}: {stdout}{stderr}");
            assert!(stdout.starts_with("HTTP 200"), "{provider} {event}: {stdout}");
            round_trips += 1;
        }
    }
    // A wrong secret is refused, and send exits non-zero.
    let url = server.url("/in/stripe");
    let (ok, stdout, stderr) = run_cli(&["send", "--provider", "stripe", "--secret", "whsec_wrong", "--url", &url]);
    assert!(!ok, "{stdout}");
    assert!(stdout.starts_with("HTTP 401"), "{stdout}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(round_trips >= 30, "{round_trips}");

    // What was sent is what was stored: ids and types as each provider's
    // identification reads them.
    let store = db.open_store().await;
    let counts = store.source_counts().await.expect("counts");
    for (provider, _) in &plan {
        let count = counts
            .iter()
            .find(|c| &c.source == provider)
            .map(|c| c.events)
            .unwrap_or(0);
        assert!(count >= 1, "{provider}: nothing stored");
    }
}
