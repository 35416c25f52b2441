//! Backfill end to end, on SQLite and on PostgreSQL: a fake Stripe Events
//! API and a fake GitHub deliveries API on 127.0.0.1, started by the test;
//! `gatehouse backfill` recovers what a simulated outage missed, exactly
//! once, and stops with a clear error and a partial summary when the API
//! misbehaves. Also `gatehouse events show --provider-id`.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use gatehouse_core::EventOrigin;
use gatehouse_store::{AuditQuery, EventQuery, Store};

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(20);
const STRIPE_KEY: &str = "sk_test_backfill_key";
const GITHUB_TOKEN: &str = "ghp_backfill_token";

on_both_backends!(
    stripe_backfill_recovers_missed_events_exactly_once,
    stripe_backfill_faults_stop_with_a_partial_summary,
    scheduled_backfill_runs_in_the_server,
    github_backfill_redelivers_missed_deliveries,
    github_backfill_fetches_payloads,
);

// --- A programmable fake provider API ---------------------------------------

/// One request the fake API received.
#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: http::HeaderMap,
}

impl ApiRequest {
    /// A query parameter, percent-decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key) == name).then(|| decode(value))
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How the fake answers.
#[derive(Clone, Debug)]
pub struct ApiReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl ApiReply {
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "text/html".into())],
            body: body.to_string(),
            delay: Duration::ZERO,
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

pub type Handler = Arc<dyn Fn(ApiRequest) -> Pin<Box<dyn Future<Output = ApiReply> + Send>> + Send + Sync>;

/// A fake provider API on 127.0.0.1:0 that records every request.
pub struct FakeApi {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    requests: Arc<Mutex<Vec<ApiRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    pub async fn start(handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake api");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (handler, recorded) = (handler.clone(), recorded.clone());
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let (handler, recorded) = (handler.clone(), recorded.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let _ = body.collect().await;
                            let seen = ApiRequest {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                query: parts.uri.query().unwrap_or_default().to_string(),
                                headers: parts.headers,
                            };
                            recorded.lock().expect("lock").push(seen.clone());
                            let reply = handler(seen).await;
                            tokio::time::sleep(reply.delay).await;
                            let mut response = hyper::Response::builder().status(reply.status);
                            for (name, value) in &reply.headers {
                                response = response.header(name.as_str(), value.as_str());
                            }
                            Ok::<_, std::convert::Infallible>(
                                response.body(Full::new(Bytes::from(reply.body))).expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { base, requests, task }
    }

    pub fn requests(&self) -> Vec<ApiRequest> {
        self.requests.lock().expect("lock").clone()
    }

    /// `127.0.0.1:PORT`.
    pub fn authority(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }
}

/// A handler from a plain function.
pub fn handler(f: impl Fn(ApiRequest) -> ApiReply + Send + Sync + 'static) -> Handler {
    let f = Arc::new(f);
    Arc::new(move |request| {
        let f = f.clone();
        Box::pin(async move { f(request) })
    })
}

/// Runs the gatehouse CLI off the async runtime.
pub async fn cli(args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_cli(&args)
    })
    .await
    .expect("cli task")
}

fn now_secs() -> i64 {
    gatehouse_core::UnixMillis::now().as_secs()
}

// --- Stripe ------------------------------------------------------------------

/// `count` Stripe events, newest first, one a second apart, all within the
/// last hour.
fn stripe_events(prefix: &str, count: usize) -> Vec<Value> {
    let now = now_secs();
    (0..count)
        .map(|i| {
            json!({
                "id": format!("{prefix}_{i:03}"),
                "object": "event",
                "type": "payment_intent.succeeded",
                "created": now - i as i64,
                "data": { "object": { "id": format!("pi_{i}") } }
            })
        })
        .collect()
}

/// Serves `GET /v1/events` over `events` as Stripe does.
fn stripe_page(events: &[Value], request: &ApiRequest) -> ApiReply {
    if request.header("authorization") != Some(&format!("Bearer {STRIPE_KEY}")) {
        return ApiReply::json(401, &json!({"error": {"message": "Invalid API Key provided"}}));
    }
    let limit: usize = request.param("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    let gte: i64 = request.param("created[gte]").and_then(|v| v.parse().ok()).unwrap_or(0);
    let in_window: Vec<&Value> = events
        .iter()
        .filter(|e| e["created"].as_i64().unwrap_or(0) >= gte)
        .collect();
    let start = match request.param("starting_after") {
        Some(after) => in_window
            .iter()
            .position(|e| e["id"] == after.as_str())
            .map(|i| i + 1)
            .unwrap_or(in_window.len()),
        None => 0,
    };
    let page: Vec<Value> = in_window.iter().skip(start).take(limit).map(|e| (*e).clone()).collect();
    let has_more = start + page.len() < in_window.len();
    ApiReply::json(
        200,
        &json!({"object": "list", "url": "/v1/events", "has_more": has_more, "data": page}),
    )
}

fn stripe_source(api: &FakeApi, extra: &str) -> String {
    format!(
        r#"
[[sources]]
name = "stripe"
provider = "stripe"
secrets = ["{STRIPE_SECRET}"]
events = ["payment_intent.*"]
api = {{ base_url = "{base}", token = "{STRIPE_KEY}"{extra} }}
"#,
        base = api.base
    )
}

fn sink_route(sink: &Sink, source: &str) -> String {
    format!(
        r#"
[[destinations]]
name = "sink"
type = "http"
url = "{url}"

[[routes]]
name = "to-sink"
source = "{source}"
destination = "sink"
retry = {{ base = "100ms", cap = "200ms", max_attempts = 5 }}

[delivery]
poll_interval = "200ms"
"#,
        url = sink.url
    )
}

fn backfill<'a>(config: &'a str, source: &'a str) -> Vec<&'a str> {
    vec!["backfill", "--config", config, "--source", source, "--since", "2h"]
}

async fn stripe_backfill_recovers_missed_events_exactly_once(db: Database) {
    let events = Arc::new(stripe_events("evt_bf", 250));
    let served = events.clone();
    let api = FakeApi::start(handler(move |request| stripe_page(&served, &request))).await;
    let sink = Sink::start().await;
    let server = Server::start(
        &db,
        &format!("{}{}", stripe_source(&api, ""), sink_route(&sink, "stripe")),
    );
    let config = server.config_path.to_str().expect("path").to_string();

    // Before the outage: five events arrive live.
    for event in events.iter().skip(200).take(5) {
        let answer = send_stripe_body(&server, &event.to_string()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    sink.wait_for(5, LIMIT).await;

    let (ok, stdout, stderr) = cli(&backfill(&config, "stripe")).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("backfill stripe: listed 250, already stored 5, ingested 245, failed 0 (3 pages)"),
        "{stdout}"
    );
    assert!(stderr.contains("page 3:"), "progress is shown per page: {stderr}");
    let calls = api.requests();
    assert_eq!(calls.len(), 3, "three pages of 100");
    assert!(calls
        .iter()
        .all(|c| c.param("created[gte]").is_some() && c.path == "/v1/events"));
    assert_eq!(calls[1].param("starting_after").as_deref(), Some("evt_bf_099"));
    assert_eq!(calls[2].param("starting_after").as_deref(), Some("evt_bf_199"));

    // Every event is delivered exactly once: live or backfilled.
    let received = sink.wait_for(250, LIMIT).await;
    let ids: HashSet<String> = received
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).expect("json")["id"]
                .as_str()
                .expect("id")
                .to_string()
        })
        .collect();
    assert_eq!(ids.len(), 250, "each event once");

    let store = db.open_store().await;
    let stored = all_events(&store, "stripe").await;
    assert_eq!(stored.len(), 250);
    let backfilled = stored.iter().filter(|e| e.origin == EventOrigin::Backfill).count();
    assert_eq!(backfilled, 245);
    let recovered = store
        .event_by_dedup_key("stripe", "evt_bf_007")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(recovered.summary.origin, EventOrigin::Backfill);
    assert_eq!(
        recovered.summary.event_type.as_deref(),
        Some("payment_intent.succeeded")
    );
    assert_eq!(
        recovered.verification,
        format!("backfill: Stripe Events API ({})", api.authority())
    );
    assert_eq!(
        recovered.summary.duplicates, 0,
        "a recovered event is not a duplicate arrival"
    );

    // Twice adds nothing.
    let (ok, stdout, stderr) = cli(&backfill(&config, "stripe")).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("listed 250, already stored 250, ingested 0"),
        "{stdout}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sink.received().len(), 250, "nothing delivered twice");
    assert_eq!(all_events(&store, "stripe").await.len(), 250);

    // --failed-only asks Stripe for events whose webhook failed.
    let mut args = backfill(&config, "stripe");
    args.push("--failed-only");
    let (ok, stdout, _) = cli(&args).await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("backfill stripe (failed only): listed 250, already stored 250"),
        "{stdout}"
    );
    let last = api.requests().pop().expect("a request");
    assert_eq!(last.param("delivery_success").as_deref(), Some("false"));

    // Every run is audited.
    let audit = store
        .list_audit(&AuditQuery {
            action_prefix: Some("source.backfill".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 3);
    assert!(audit[0].actor.starts_with("cli:"), "{:?}", audit[0]);
    assert_eq!(audit[0].object, "source:stripe");
    let details: Value = serde_json::from_str(&audit[2].details).expect("details");
    assert_eq!(details["ingested"], 245);

    // "Was it processed?" in one call.
    let (ok, stdout, stderr) = cli(&["events", "show", "--config", &config, "--provider-id", "evt_bf_007"]).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("(provider id evt_bf_007)"), "{stdout}");
    assert!(stdout.contains("(backfill)"), "{stdout}");
    assert!(stdout.contains("backfill: Stripe Events API"), "{stdout}");
    assert!(stdout.contains("route to-sink: succeeded after 1 attempt"), "{stdout}");
    let (ok, stdout, _) = cli(&[
        "events",
        "show",
        "--config",
        &config,
        "--provider-id",
        "evt_bf_201",
        "--json",
    ])
    .await;
    assert!(ok, "{stdout}");
    let shown: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(shown["found"], true);
    assert_eq!(shown["events"][0]["origin"], "live");
    assert_eq!(shown["events"][0]["deliveries"][0]["state"], "succeeded");
    assert_eq!(
        shown["events"][0]["deliveries"][0]["attempt_log"][0]["status_code"],
        200
    );
    let (ok, stdout, _) = cli(&["events", "show", "--config", &config, "--provider-id", "evt_never"]).await;
    assert!(!ok);
    assert!(stdout.contains("evt_never: not received"), "{stdout}");
}

async fn all_events(store: &Arc<dyn Store>, source: &str) -> Vec<gatehouse_core::EventSummary> {
    store
        .list_events(&EventQuery {
            source: Some(source.into()),
            limit: 1000,
            ..EventQuery::default()
        })
        .await
        .expect("list events")
}

/// What the fake Stripe does on the next request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// 500 on every request for the second page.
    ServerErrorOnPage2,
    /// 500 once on the second page, then fine.
    ServerErrorOnceOnPage2,
    /// Answers after 2 s.
    Slow,
    /// An HTML error page with 200.
    Garbage,
    /// 401.
    Unauthorized,
    /// `has_more` forever, new ids each page.
    Endless,
    /// `has_more` with the same page again.
    Stuck,
}

async fn stripe_backfill_faults_stop_with_a_partial_summary(db: Database) {
    let events = Arc::new(stripe_events("evt_fault", 250));
    let fault = Arc::new(Mutex::new(Fault::None));
    let failed_once = Arc::new(Mutex::new(false));
    let (served, mode, once) = (events.clone(), fault.clone(), failed_once.clone());
    let api = FakeApi::start(handler(move |request| {
        let page2 = request.param("starting_after").is_some();
        match *mode.lock().expect("lock") {
            Fault::None => stripe_page(&served, &request),
            Fault::ServerErrorOnPage2 if page2 => ApiReply::json(500, &json!({"error": {"message": "boom"}})),
            Fault::ServerErrorOnPage2 => stripe_page(&served, &request),
            Fault::ServerErrorOnceOnPage2 if page2 && !*once.lock().expect("lock") => {
                *once.lock().expect("lock") = true;
                ApiReply::json(503, &json!({}))
            }
            Fault::ServerErrorOnceOnPage2 => stripe_page(&served, &request),
            Fault::Slow => stripe_page(&served, &request).after(Duration::from_secs(2)),
            Fault::Garbage => ApiReply::text(200, "<html>Service temporarily unavailable</html>"),
            Fault::Unauthorized => ApiReply::json(401, &json!({"error": {"message": "Invalid API Key"}})),
            Fault::Endless => {
                let n = request
                    .param("starting_after")
                    .and_then(|a| a.rsplit('_').next().and_then(|n| n.parse::<u64>().ok()))
                    .unwrap_or(0);
                let event = json!({"id": format!("evt_endless_{}", n + 1), "object": "event", "type": "payment_intent.created", "created": now_secs(), "data": {"object": {"id": "pi_e"}}});
                ApiReply::json(200, &json!({"object": "list", "has_more": true, "data": [event]}))
            }
            Fault::Stuck => {
                let page = stripe_page(&served, &ApiRequest {
                    query: "limit=100".into(),
                    ..request.clone()
                });
                let mut body: Value = serde_json::from_str(&page.body).expect("json");
                body["has_more"] = json!(true);
                ApiReply::json(200, &body)
            }
        }
    }))
    .await;
    let dir = tempfile::tempdir().expect("dir");
    let config_path = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config_path,
        format!(
            "[storage]\nurl = \"{}\"\nbusy_timeout = \"2s\"\n{}",
            db.url,
            stripe_source(&api, ", timeout = \"500ms\", attempts = 3, max_pages = 5")
        ),
    )
    .expect("config");
    let config = config_path.to_str().expect("path");
    let store = db.open_store().await;
    let set = |f: Fault| *fault.lock().expect("lock") = f;

    // 500s on page 2: retried three times, then reported with what page 1 stored.
    set(Fault::ServerErrorOnPage2);
    let (ok, stdout, stderr) = cli(&backfill(config, "stripe")).await;
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("listed 100, already stored 0, ingested 100, failed 0 (1 page); stopped early, partial"),
        "{stdout}"
    );
    assert!(
        stderr.contains("HTTP 500 Internal Server Error (tried 3 times)"),
        "{stderr}"
    );
    let page2_calls = api
        .requests()
        .iter()
        .filter(|r| r.param("starting_after").is_some())
        .count();
    assert_eq!(page2_calls, 3, "retried, then given up");
    assert_eq!(all_events(&store, "stripe").await.len(), 100);

    // A 503 that passes is retried and the run completes; nothing twice.
    set(Fault::ServerErrorOnceOnPage2);
    let (ok, stdout, stderr) = cli(&backfill(config, "stripe")).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("listed 250, already stored 100, ingested 150"),
        "{stdout}"
    );
    assert_eq!(all_events(&store, "stripe").await.len(), 250);

    // Timeouts: retried, then reported.
    set(Fault::Slow);
    let (ok, stdout, stderr) = cli(&backfill(config, "stripe")).await;
    assert!(!ok);
    assert!(stderr.contains("no answer within 500ms (tried 3 times)"), "{stderr}");
    assert!(stdout.contains("listed 0") && stdout.contains("partial"), "{stdout}");

    // Garbage and 401: clear errors, no retry needed.
    set(Fault::Garbage);
    let (ok, _, stderr) = cli(&backfill(config, "stripe")).await;
    assert!(!ok);
    assert!(stderr.contains("the answer is not JSON"), "{stderr}");
    set(Fault::Unauthorized);
    let (ok, _, stderr) = cli(&backfill(config, "stripe")).await;
    assert!(!ok);
    assert!(
        stderr.contains("HTTP 401 Unauthorized: the API refused the credentials; check the source's api.token"),
        "{stderr}"
    );

    // Pagination that never ends, or never advances.
    set(Fault::Endless);
    let (ok, stdout, stderr) = cli(&backfill(config, "stripe")).await;
    assert!(!ok);
    assert!(stderr.contains("stopped after 5 pages"), "{stderr}");
    assert!(stdout.contains("ingested 5"), "{stdout}");
    set(Fault::Stuck);
    let (ok, _, stderr) = cli(&backfill(config, "stripe")).await;
    assert!(!ok);
    assert!(stderr.contains("pagination does not advance"), "{stderr}");

    // Never a duplicate: 250 recovered plus the 5 endless ones.
    let stored = all_events(&store, "stripe").await;
    assert_eq!(stored.len(), 255);
    assert!(stored.iter().all(|e| e.duplicates == 0));
    let audit = store
        .list_audit(&AuditQuery {
            action_prefix: Some("source.backfill".into()),
            limit: 20,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 7, "every run is audited, failed ones too");
    assert!(
        audit[0].note.as_deref().is_some_and(|n| n.contains("pagination")),
        "{:?}",
        audit[0]
    );
}

async fn scheduled_backfill_runs_in_the_server(db: Database) {
    let events = Arc::new(stripe_events("evt_sched", 30));
    let served = events.clone();
    let api = FakeApi::start(handler(move |request| stripe_page(&served, &request))).await;
    let sink = Sink::start().await;
    let sources = format!(
        "{}backfill = {{ every = \"1s\", lookback = \"1h\" }}\n{}",
        stripe_source(&api, ", page_size = 10"),
        sink_route(&sink, "stripe")
    );
    let server = Server::start(&db, &sources);
    let store = db.open_store().await;
    // The first run starts at once and recovers everything.
    sink.wait_for(30, LIMIT).await;
    assert_eq!(all_events(&store, "stripe").await.len(), 30);
    // Later runs find everything stored.
    let audit = eventually("two scheduled runs are audited", LIMIT, || async {
        let audit = store
            .list_audit(&AuditQuery {
                action_prefix: Some("source.backfill".into()),
                limit: 10,
                ..AuditQuery::default()
            })
            .await
            .expect("audit");
        (audit.len() >= 2).then_some(audit)
    })
    .await;
    assert!(
        audit.iter().all(|entry| entry.actor == "gatehouse:scheduler"),
        "{audit:?}"
    );
    let first: Value = serde_json::from_str(&audit[audit.len() - 1].details).expect("details");
    assert_eq!(first["ingested"], 30);
    assert_eq!(first["pages"], 3);
    let latest: Value = serde_json::from_str(&audit[0].details).expect("details");
    assert_eq!(latest["already_stored"], 30);
    assert_eq!(latest["ingested"], 0);
    let last_run = store
        .source_state("stripe", "backfill.last_run")
        .await
        .expect("state")
        .expect("noted");
    assert!(last_run.parse::<i64>().is_ok(), "{last_run}");
    assert_eq!(sink.received().len(), 30, "nothing delivered twice");
    drop(server);
}

// --- GitHub ------------------------------------------------------------------

/// A GitHub delivery in the list, `age` seconds ago.
fn github_delivery(id: u64, guid: &str, age: i64, status: u16, redelivery: bool) -> Value {
    let at = std::time::SystemTime::now() - Duration::from_secs(age as u64);
    json!({
        "id": id,
        "guid": guid,
        "delivered_at": humantime_rfc3339(at),
        "redelivery": redelivery,
        "duration": 0.2,
        "status": if status == 200 { "OK" } else { "Failed" },
        "status_code": status,
        "event": "issues",
        "action": "opened",
        "installation_id": null,
        "repository_id": 1
    })
}

fn humantime_rfc3339(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64;
    // 1970-01-01T00:00:00Z plus seconds, by hand (no date crate in tests).
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn issue_payload(guid: &str) -> Value {
    json!({"action": "opened", "issue": {"title": format!("issue for {guid}")}, "repository": {"full_name": "octo/app"}})
}

/// The deliveries the fake hook has: 8 in the window (one a redelivery of
/// another) and one older than it.
fn hook_deliveries() -> Vec<Value> {
    vec![
        github_delivery(19, "guid-8", 10, 200, false),
        github_delivery(18, "guid-3", 20, 200, true),
        github_delivery(17, "guid-7", 30, 500, false),
        github_delivery(16, "guid-6", 40, 200, false),
        github_delivery(15, "guid-5", 50, 502, false),
        github_delivery(14, "guid-4", 60, 200, false),
        github_delivery(13, "guid-3", 70, 500, false),
        github_delivery(12, "guid-2", 80, 200, false),
        github_delivery(11, "guid-1", 90, 200, false),
        github_delivery(10, "guid-old", 3 * 3600, 500, false),
    ]
}

/// Serves the hook's deliveries in pages of `per_page` with `Link` headers.
fn github_list(base: &str, hook: &str, deliveries: &[Value], request: &ApiRequest) -> ApiReply {
    let per_page: usize = request.param("per_page").and_then(|p| p.parse().ok()).unwrap_or(30);
    let start: usize = request.param("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
    let page: Vec<Value> = deliveries.iter().skip(start).take(per_page).cloned().collect();
    let mut reply = ApiReply::json(200, &Value::Array(page));
    if start + per_page < deliveries.len() {
        reply = reply.header(
            "link",
            &format!(
                "<{base}/{hook}/deliveries?per_page={per_page}&cursor={}>; rel=\"next\"",
                start + per_page
            ),
        );
    }
    reply
}

fn github_source(name: &str, api_base: &str, hook: &str, extra: &str) -> String {
    format!(
        r#"
[[sources]]
name = "{name}"
provider = "github"
secrets = ["{GITHUB_SECRET}"]
api = {{ base_url = "{api_base}", token = "{GITHUB_TOKEN}", hook = "{hook}", page_size = 3{extra} }}
"#
    )
}

/// POSTs a signed GitHub delivery to `/in/{source}`.
async fn send_github(url: &str, guid: &str) -> Answer {
    let body = issue_payload(guid).to_string();
    let signature = gatehouse_verify::providers::github::sign(GITHUB_SECRET.as_bytes(), body.as_bytes());
    send(
        "POST",
        url,
        &[
            ("x-github-event", "issues".into()),
            ("x-github-delivery", guid.into()),
            ("x-hub-signature-256", signature),
            ("content-type", "application/json".into()),
        ],
        body,
    )
    .await
}

async fn github_backfill_redelivers_missed_deliveries(db: Database) {
    const HOOK: &str = "repos/octo/app/hooks/42";
    // The fake redelivers as GitHub does: it sends the delivery again,
    // signed, to the gateway, before answering 202.
    let ingest_url: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let base_cell: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let deliveries = Arc::new(hook_deliveries());
    let (target, base, served) = (ingest_url.clone(), base_cell.clone(), deliveries.clone());
    let api = FakeApi::start(Arc::new(
        move |request: ApiRequest| -> Pin<Box<dyn Future<Output = ApiReply> + Send>> {
            let (target, base, served) = (target.clone(), base.clone(), served.clone());
            Box::pin(async move {
                if request.header("authorization") != Some(&format!("Bearer {GITHUB_TOKEN}")) {
                    return ApiReply::json(401, &json!({"message": "Bad credentials"}));
                }
                let list = format!("/{HOOK}/deliveries");
                if request.method == "GET" && request.path == list {
                    let base = base.lock().expect("lock").clone();
                    return github_list(&base, HOOK, &served, &request);
                }
                if request.method == "POST" && request.path.ends_with("/attempts") {
                    let id: u64 = request
                        .path
                        .split('/')
                        .rev()
                        .nth(1)
                        .and_then(|i| i.parse().ok())
                        .unwrap_or(0);
                    let Some(delivery) = served.iter().find(|d| d["id"] == id) else {
                        return ApiReply::json(404, &json!({"message": "Not Found"}));
                    };
                    let guid = delivery["guid"].as_str().expect("guid").to_string();
                    let url = target.lock().expect("lock").clone();
                    let answer = send_github(&url, &guid).await;
                    assert_eq!(answer.status, 200, "{}", answer.body);
                    return ApiReply::json(202, &json!({}));
                }
                ApiReply::json(404, &json!({"message": "Not Found"}))
            })
        },
    ))
    .await;
    *base_cell.lock().expect("lock") = api.base.clone();
    let server = Server::start(&db, &github_source("github", &api.base, HOOK, ""));
    *ingest_url.lock().expect("lock") = server.url("/in/github");
    let config = server.config_path.to_str().expect("path").to_string();

    // Before the outage: guid-1 and guid-4 arrived.
    for guid in ["guid-1", "guid-4"] {
        assert_eq!(send_github(&server.url("/in/github"), guid).await.status, 200);
    }

    let (ok, stdout, stderr) = cli(&backfill(&config, "github")).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(
            "backfill github: listed 8, already stored 2, ingested 0, redelivery requested 6, failed 0 (4 pages)"
        ),
        "{stdout}"
    );
    let redelivered: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(redelivered.len(), 6, "{redelivered:?}");
    assert!(redelivered.contains(&format!("/{HOOK}/deliveries/19/attempts")));
    assert!(
        !redelivered.iter().any(|p| p.contains("/10/")),
        "older than the window: left alone"
    );
    assert!(
        redelivered
            .iter()
            .filter(|p| p.contains("/13/") || p.contains("/18/"))
            .count()
            == 1,
        "guid-3 listed twice, redelivered once"
    );

    let store = db.open_store().await;
    assert_eq!(all_events(&store, "github").await.len(), 8, "each GUID stored once");

    // Twice adds nothing.
    let (ok, stdout, _) = cli(&backfill(&config, "github")).await;
    assert!(ok);
    assert!(
        stdout.contains("listed 8, already stored 8, ingested 0, failed 0"),
        "{stdout}"
    );
    assert_eq!(api.requests().iter().filter(|r| r.method == "POST").count(), 6);

    // --failed-only asks only about deliveries that failed; all are stored.
    let mut args = backfill(&config, "github");
    args.push("--failed-only");
    let (ok, stdout, _) = cli(&args).await;
    assert!(ok);
    assert!(stdout.contains("(failed only): listed 8, already stored 3"), "{stdout}");
}

async fn github_backfill_fetches_payloads(db: Database) {
    const HOOK: &str = "orgs/octo/hooks/7";
    let deliveries = Arc::new(hook_deliveries());
    let base_cell: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let fail_detail = Arc::new(Mutex::new(false));
    let (base, served, failing) = (base_cell.clone(), deliveries.clone(), fail_detail.clone());
    let api = FakeApi::start(handler(move |request| {
        let list = format!("/{HOOK}/deliveries");
        if request.path == list {
            let base = base.lock().expect("lock").clone();
            return github_list(&base, HOOK, &served, &request);
        }
        if let Some(id) = request.path.strip_prefix(&format!("{list}/")) {
            if *failing.lock().expect("lock") {
                return ApiReply::json(500, &json!({"message": "Server Error"}));
            }
            let id: u64 = id.parse().unwrap_or(0);
            let Some(delivery) = served.iter().find(|d| d["id"] == id) else {
                return ApiReply::json(404, &json!({"message": "Not Found"}));
            };
            let guid = delivery["guid"].as_str().expect("guid");
            return ApiReply::json(
                200,
                &json!({
                    "id": id, "guid": guid, "event": "issues", "action": "opened",
                    "request": {
                        "headers": {
                            "X-GitHub-Delivery": guid, "X-GitHub-Event": "issues",
                            "X-Hub-Signature-256": "sha256=aaaa", "Content-Type": "application/x-www-form-urlencoded",
                            "X-GitHub-Hook-ID": "7"
                        },
                        "payload": issue_payload(guid)
                    },
                    "response": {"headers": {}, "payload": "oops"}
                }),
            );
        }
        ApiReply::json(404, &json!({"message": "Not Found"}))
    }))
    .await;
    *base_cell.lock().expect("lock") = api.base.clone();
    let dir = tempfile::tempdir().expect("dir");
    let config_path = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config_path,
        format!(
            "[storage]\nurl = \"{}\"\nbusy_timeout = \"2s\"\n{}",
            db.url,
            github_source("gh", &api.base, HOOK, ", recover = \"fetch\", attempts = 2")
        ),
    )
    .expect("config");
    let config = config_path.to_str().expect("path");
    let store = db.open_store().await;

    // The detail endpoint fails: the run stops, nothing half-stored.
    *fail_detail.lock().expect("lock") = true;
    let (ok, stdout, stderr) = cli(&backfill(config, "gh")).await;
    assert!(!ok);
    assert!(
        stderr.contains("HTTP 500 Internal Server Error (tried 2 times)"),
        "{stderr}"
    );
    assert!(
        stdout.contains("failed 3 (0 pages); stopped early, partial"),
        "{stdout}"
    );
    assert_eq!(all_events(&store, "gh").await.len(), 0);

    *fail_detail.lock().expect("lock") = false;
    let (ok, stdout, stderr) = cli(&backfill(config, "gh")).await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("listed 8, already stored 0, ingested 8, failed 0 (4 pages)"),
        "{stdout}"
    );
    let event = store
        .event_by_dedup_key("gh", "guid-5")
        .await
        .expect("read")
        .expect("stored by guid");
    assert_eq!(event.summary.origin, EventOrigin::Backfill);
    assert_eq!(event.summary.event_type.as_deref(), Some("issues.opened"));
    assert_eq!(event.summary.provider_event_id.as_deref(), Some("guid-5"));
    assert_eq!(
        event.verification,
        format!("backfill: GitHub deliveries API ({})", api.authority())
    );
    let body: Value = serde_json::from_slice(&event.body).expect("json body");
    assert_eq!(body, issue_payload("guid-5"));
    assert!(event
        .headers
        .iter()
        .any(|h| h.name == "x-github-hook-id" && h.value == "7"));
    assert!(
        !event.headers.iter().any(|h| h.name == "x-hub-signature-256"),
        "a signature over other bytes is not kept"
    );

    let (ok, stdout, _) = cli(&backfill(config, "gh")).await;
    assert!(ok);
    assert!(stdout.contains("already stored 8, ingested 0"), "{stdout}");
    assert_eq!(all_events(&store, "gh").await.len(), 8);
}
