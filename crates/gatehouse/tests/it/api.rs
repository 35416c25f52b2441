//! The JSON API under `/api/v1`, on SQLite and on PostgreSQL, over real
//! sockets against a real `gatehouse serve`: every endpoint, the role
//! matrix of every state-changing endpoint, revocation taking effect at
//! once, session cookies with CSRF, the OpenAPI document, and the
//! `gatehouse users` / `gatehouse tokens` CLI.

use std::collections::HashSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use gatehouse_core::{DeliveryId, DeliveryState, EventId, Role, Session, UnixMillis};
use gatehouse_store::{AuditQuery, Store};

use crate::harness::*;

on_both_backends!(
    every_endpoint_answers,
    roles_are_enforced_on_every_mutating_endpoint,
    a_revoked_token_stops_working_at_once,
    session_cookies_need_the_csrf_token_to_change_things,
    the_openapi_document_lists_every_path,
    cli_manages_users_and_tokens,
    the_audit_log_names_the_client_behind_a_trusted_proxy,
);

/// The secret the sink would verify gatehouse's signatures with.
const SINK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long a test waits for something that should take well under a second.
const LIMIT: Duration = Duration::from_secs(20);

/// Stripe goes to the sink on `to-sink` (one attempt, so a 400 is dead at
/// once) and on `gated` (held for approval). The sink's URL carries a
/// query the API must never show.
fn api_config(sink: &Sink) -> String {
    format!(
        r#"{sources}
[[destinations]]
name = "sink"
type = "http"
url = "{url}?token=hidden-query-secret"
secret = "{SINK_SECRET}"

[[routes]]
name = "to-sink"
source = "stripe"
destination = "sink"
retry = {{ base = "100ms", cap = "200ms", max_attempts = 1 }}

[[routes]]
name = "gated"
source = "stripe"
destination = "sink"
approval = true

[delivery]
poll_interval = "200ms"
"#,
        sources = standard_sources(),
        url = sink.url,
    )
}

/// A server whose sink refuses everything (so deliveries die), with one
/// token per role made by the CLI.
struct Setup {
    server: Server,
    store: Arc<dyn Store>,
    _sink: Sink,
    viewer: String,
    operator: String,
    admin: String,
    admin_id: String,
}

impl Setup {
    async fn start(db: &Database) -> Self {
        let sink = Sink::start().await;
        sink.answer_by_default(Reply::status(400));
        let server = Server::start(db, &api_config(&sink));
        let (_, viewer) = cli_token(&server, "viewer-token", "viewer");
        let (_, operator) = cli_token(&server, "operator-token", "operator");
        let (admin_id, admin) = cli_token(&server, "admin-token", "admin");
        Self {
            store: db.open_store().await,
            server,
            _sink: sink,
            viewer,
            operator,
            admin,
            admin_id,
        }
    }

    fn token(&self, role: Role) -> &str {
        match role {
            Role::Viewer => &self.viewer,
            Role::Operator => &self.operator,
            Role::Admin => &self.admin,
        }
    }

    async fn get(&self, path: &str, token: &str) -> Answer {
        call(&self.server, "GET", path, Some(token), None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Answer {
        call(&self.server, "POST", path, Some(token), Some(body)).await
    }
}

/// One API call with an optional bearer token and JSON body.
async fn call(server: &Server, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
    let mut headers = Vec::new();
    if let Some(token) = token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let body = match body {
        Some(body) => {
            headers.push(("content-type", "application/json".to_string()));
            body.to_string()
        }
        None => String::new(),
    };
    send(method, &server.url(path), &headers, body).await
}

/// `gatehouse tokens create` against the server's config: (id, secret).
fn cli_token(server: &Server, name: &str, role: &str) -> (String, String) {
    let config = server.config_path.display().to_string();
    let (ok, stdout, stderr) = run_cli(&["tokens", "create", name, "--role", role, "--config", &config]);
    assert!(ok, "tokens create failed: {stdout}{stderr}");
    let id = stdout
        .split_whitespace()
        .find(|word| word.starts_with("tok_"))
        .unwrap_or_else(|| panic!("no token id in {stdout}"))
        .to_string();
    let secret = stdout
        .lines()
        .find_map(|line| line.strip_prefix("secret: "))
        .unwrap_or_else(|| panic!("no secret in {stdout}"))
        .trim()
        .to_string();
    assert!(secret.starts_with("ghk_"), "{secret}");
    (id, secret)
}

/// Asserts the status and the stable error shape for failures.
#[track_caller]
fn expect(answer: &Answer, status: u16) -> Value {
    assert_eq!(answer.status, status, "{}", answer.body);
    let body = if answer.body.is_empty() {
        Value::Null
    } else {
        answer.json()
    };
    if status >= 400 {
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert!(!code.is_empty(), "error without a code: {}", answer.body);
        assert!(body["error"]["message"].is_string(), "{}", answer.body);
    }
    body
}

#[track_caller]
fn error_code(answer: &Answer) -> String {
    answer.json()["error"]["code"].as_str().unwrap_or_default().to_string()
}

fn event_id(answer: &Answer) -> EventId {
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["id"].as_str().expect("id").parse().expect("event id")
}

/// The deliveries of `event` once `to-sink` is dead and `gated` is held.
async fn settled(store: &Arc<dyn Store>, event: EventId) -> (DeliveryId, DeliveryId) {
    eventually(
        &format!("{event} is dead on to-sink and held on gated"),
        LIMIT,
        || async {
            let deliveries = store.deliveries_for_event(event).await.expect("read deliveries");
            let dead = deliveries
                .iter()
                .find(|d| d.route == "to-sink" && d.state == DeliveryState::Dead)?;
            let held = deliveries
                .iter()
                .find(|d| d.route == "gated" && d.state == DeliveryState::AwaitingApproval)?;
            Some((dead.id, held.id))
        },
    )
    .await
}

async fn state_of(store: &Arc<dyn Store>, id: DeliveryId) -> DeliveryState {
    store.delivery(id).await.expect("read").expect("exists").state
}

fn ids(list: &Value, key: &str) -> Vec<String> {
    list[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {list}"))
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_string())
        .collect()
}

async fn every_endpoint_answers(db: Database) {
    let setup = Setup::start(&db).await;
    let (viewer, operator, admin) = (setup.viewer.clone(), setup.operator.clone(), setup.admin.clone());
    let store = setup.store.clone();

    // Four accepted events (each dead on to-sink and held on gated), a
    // duplicate of the first, and one outside the subscription.
    let mut events = Vec::new();
    for n in 1..=4 {
        events.push(event_id(
            &send_stripe(&setup.server, &format!("evt_api_{n}"), "payment_intent.succeeded").await,
        ));
    }
    let needle_body =
        r#"{"id":"evt_api_needle","object":"event","type":"payment_intent.created","data":{"note":"find-the-needle"}}"#;
    let needle = event_id(&send_stripe_body(&setup.server, needle_body).await);
    let duplicate = send_stripe(&setup.server, "evt_api_1", "payment_intent.succeeded").await;
    assert_eq!(duplicate.status, 200, "{}", duplicate.body);
    let ignored = event_id(&send_stripe(&setup.server, "evt_api_ignored", "charge.refunded").await);
    let mut dead = Vec::new();
    let mut held = Vec::new();
    for event in events.iter().chain([&needle]) {
        let (d, h) = settled(&store, *event).await;
        dead.push(d);
        held.push(h);
    }

    // --- Event search, every filter, and keyset pages.
    let all = expect(&setup.get("/api/v1/events", &viewer).await, 200);
    assert_eq!(ids(&all, "events").len(), 6, "{all}");
    assert!(all["next"].is_null(), "one page: {all}");
    let by = |query: &str| format!("/api/v1/events?{query}");
    let only = |answer: &Value| ids(answer, "events");
    assert_eq!(
        only(&expect(&setup.get(&by("provider_id=evt_api_2"), &viewer).await, 200)),
        vec![events[1].to_string()]
    );
    assert_eq!(
        only(&expect(&setup.get(&by("disposition=ignored"), &viewer).await, 200)),
        vec![ignored.to_string()]
    );
    assert_eq!(
        only(&expect(
            &setup.get(&by("type=payment_intent.created"), &viewer).await,
            200
        )),
        vec![needle.to_string()]
    );
    assert_eq!(
        only(&expect(&setup.get(&by("body=find-the-needle"), &viewer).await, 200)),
        vec![needle.to_string()]
    );
    assert_eq!(
        only(&expect(&setup.get(&by("delivery_state=dead"), &viewer).await, 200)).len(),
        5
    );
    assert_eq!(
        only(&expect(&setup.get(&by("source=github"), &viewer).await, 200)).len(),
        0
    );
    assert_eq!(
        only(&expect(
            &setup
                .get(&by("from=2000-01-01T00:00:00Z&to=2001-01-01T00:00:00Z"), &viewer)
                .await,
            200
        ))
        .len(),
        0
    );
    let now = UnixMillis::now().0;
    assert_eq!(
        only(&expect(
            &setup
                .get(&by(&format!("from={}&to={}", now - 600_000, now + 1)), &viewer)
                .await,
            200
        ))
        .len(),
        6
    );
    let first = expect(&setup.get(&by("limit=4"), &viewer).await, 200);
    assert_eq!(only(&first).len(), 4);
    let next = first["next"].as_str().expect("a next cursor").to_string();
    let second = expect(&setup.get(&by(&format!("limit=4&before={next}")), &viewer).await, 200);
    assert_eq!(only(&second).len(), 2);
    let mut seen: HashSet<String> = only(&first).into_iter().collect();
    seen.extend(only(&second));
    assert_eq!(seen.len(), 6, "pages neither overlap nor skip");
    let tail = expect(&setup.get(&by(&format!("after={}", events[3])), &viewer).await, 200);
    assert_eq!(
        only(&tail).len(),
        2,
        "needle and ignored arrived after the fourth: {tail}"
    );
    assert_eq!(
        error_code(&setup.get(&by("delivery_state=lost"), &viewer).await),
        "invalid"
    );
    expect(&setup.get(&by("disposition=maybe"), &viewer).await, 422);
    expect(&setup.get(&by("from=yesterday"), &viewer).await, 422);
    expect(&setup.get(&by("before=dlv_nope"), &viewer).await, 422);

    // --- One event in full.
    let detail = expect(&setup.get(&format!("/api/v1/events/{needle}"), &viewer).await, 200);
    assert_eq!(detail["id"], needle.to_string());
    assert_eq!(detail["body_text"], needle_body);
    assert_eq!(detail["body_is_utf8"], true);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(detail["body_base64"].as_str().expect("base64"))
        .expect("valid base64");
    assert_eq!(raw, needle_body.as_bytes());
    assert_eq!(detail["origin"], "live");
    assert!(
        !detail["verification"].as_str().unwrap_or_default().is_empty(),
        "{detail}"
    );
    assert!(
        detail["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .any(|h| h["name"] == "stripe-signature"),
        "{detail}"
    );
    let deliveries = detail["deliveries"].as_array().expect("deliveries");
    assert_eq!(deliveries.len(), 2, "{detail}");
    let dead_one = deliveries.iter().find(|d| d["route"] == "to-sink").expect("to-sink");
    assert_eq!(dead_one["state"], "dead");
    assert_eq!(dead_one["attempts"].as_array().expect("attempts").len(), 1);
    assert_eq!(dead_one["attempts"][0]["status_code"], 400);
    assert_eq!(dead_one["attempts"][0]["response_excerpt"], "ok");
    assert_eq!(
        deliveries.iter().find(|d| d["route"] == "gated").expect("gated")["state"],
        "awaiting_approval"
    );
    expect(
        &setup.get(&format!("/api/v1/events/{}", EventId::new()), &viewer).await,
        404,
    );
    expect(&setup.get("/api/v1/events/not-an-id", &viewer).await, 422);

    // --- "Was it processed?"
    let answer = setup.get("/api/v1/lookup?provider_id=evt_api_1", &viewer).await;
    let timing = answer
        .headers
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        timing.starts_with("app;dur="),
        "reads report the handler's time: {timing:?}"
    );
    let lookup = expect(&answer, 200);
    assert_eq!(lookup["found"], true);
    let found = lookup["events"].as_array().expect("events");
    assert_eq!(found.len(), 1, "{lookup}");
    assert_eq!(found[0]["event"]["id"], events[0].to_string());
    assert_eq!(found[0]["event"]["duplicates"], 1);
    assert_eq!(found[0]["outcome"], "failed");
    assert!(
        found[0]["verification"]
            .as_str()
            .is_some_and(|v| v.starts_with("stripe-v1")),
        "{lookup}"
    );
    let looked_up = found[0]["deliveries"].as_array().expect("deliveries");
    assert_eq!(looked_up.len(), 2);
    let dead_attempts = looked_up
        .iter()
        .find(|d| d["state"] == "dead")
        .and_then(|d| d["attempts"].as_array())
        .expect("the dead delivery's attempts, in the same answer");
    assert_eq!(dead_attempts[0]["status_code"], 400);
    let ignored_lookup = expect(
        &setup.get("/api/v1/lookup?provider_id=evt_api_ignored", &viewer).await,
        200,
    );
    assert_eq!(ignored_lookup["events"][0]["outcome"], "ignored");
    let missing = expect(
        &setup.get("/api/v1/lookup?provider_id=evt_never_sent", &viewer).await,
        200,
    );
    assert_eq!(missing["found"], false);
    assert_eq!(
        expect(
            &setup
                .get("/api/v1/lookup?provider_id=evt_api_1&source=github", &viewer)
                .await,
            200
        )["found"],
        false
    );
    expect(&setup.get("/api/v1/lookup", &viewer).await, 422);

    // --- Deliveries, the exception queue and the approval queue.
    let dead_list = expect(&setup.get("/api/v1/deliveries?state=dead", &viewer).await, 200);
    assert_eq!(ids(&dead_list, "deliveries").len(), 5);
    let page = expect(&setup.get("/api/v1/deliveries?route=gated&limit=2", &viewer).await, 200);
    assert_eq!(ids(&page, "deliveries").len(), 2);
    let rest = expect(
        &setup
            .get(
                &format!(
                    "/api/v1/deliveries?route=gated&limit=2&before={}",
                    page["next"].as_str().expect("next")
                ),
                &viewer,
            )
            .await,
        200,
    );
    assert_eq!(ids(&rest, "deliveries").len(), 2);
    let one = expect(
        &setup.get(&format!("/api/v1/deliveries/{}", dead[0]), &viewer).await,
        200,
    );
    assert_eq!(one["state"], "dead");
    assert_eq!(one["attempts"].as_array().expect("attempts").len(), 1);
    expect(
        &setup
            .get(&format!("/api/v1/deliveries/{}", DeliveryId::new()), &viewer)
            .await,
        404,
    );
    let last_error = one["last_error"].as_str().expect("a last error").to_string();
    let same_error = expect(
        &setup
            .get(
                &format!("/api/v1/deliveries?state=dead&last_error={}", form_encode(&last_error)),
                &viewer,
            )
            .await,
        200,
    );
    assert_eq!(ids(&same_error, "deliveries").len(), 5);

    let queue = expect(&setup.get("/api/v1/exceptions", &viewer).await, 200);
    assert_eq!(queue["total"], 5, "{queue}");
    assert_eq!(queue["groups"][0]["route"], "to-sink");
    assert_eq!(queue["groups"][0]["last_error"], last_error.as_str());
    let approvals = expect(&setup.get("/api/v1/approvals", &viewer).await, 200);
    let items = approvals["items"].as_array().expect("items");
    assert_eq!(items.len(), 5, "{approvals}");
    assert!(items.iter().all(|i| i["event"]["source"] == "stripe"), "{approvals}");
    assert!(items.iter().all(|i| i["delivery"]["route"] == "gated"));

    // --- Pause the route first, so retried deliveries stay pending.
    let paused = expect(
        &setup.post("/api/v1/routes/to-sink/pause", &admin, json!({})).await,
        200,
    );
    assert_eq!(paused, json!({"route": "to-sink", "paused": true}));
    expect(&setup.post("/api/v1/routes/nope/pause", &admin, json!({})).await, 404);

    // --- Retry one, resolve one, discard one, retry the rest in bulk.
    let retried = expect(
        &setup
            .post(&format!("/api/v1/deliveries/{}/retry", dead[0]), &operator, json!({}))
            .await,
        200,
    );
    assert_eq!(retried["state"], "pending");
    assert_eq!(state_of(&store, dead[0]).await, DeliveryState::Pending);
    assert_eq!(
        error_code(
            &setup
                .post(&format!("/api/v1/deliveries/{}/retry", dead[0]), &operator, json!({}))
                .await
        ),
        "conflict",
        "no longer dead"
    );
    expect(
        &setup
            .post(
                &format!("/api/v1/deliveries/{}/retry", DeliveryId::new()),
                &operator,
                json!({}),
            )
            .await,
        404,
    );
    let resolved = expect(
        &setup
            .post(
                &format!("/api/v1/deliveries/{}/resolve", dead[1]),
                &operator,
                json!({"note": "refunded by hand"}),
            )
            .await,
        200,
    );
    assert_eq!(resolved["state"], "cancelled");
    assert!(resolved["last_error"]
        .as_str()
        .expect("note")
        .contains("refunded by hand"));
    expect(
        &setup
            .post(
                &format!("/api/v1/deliveries/{}/discard", dead[2]),
                &operator,
                json!({"note": " "}),
            )
            .await,
        422,
    );
    let discarded = expect(
        &setup
            .post(
                &format!("/api/v1/deliveries/{}/discard", dead[2]),
                &operator,
                json!({"note": "test event"}),
            )
            .await,
        200,
    );
    assert_eq!(discarded["state"], "cancelled");
    assert_eq!(
        error_code(
            &setup
                .post(
                    &format!("/api/v1/deliveries/{}/resolve", dead[2]),
                    &operator,
                    json!({"note": "again"})
                )
                .await
        ),
        "conflict"
    );
    let dry = expect(
        &setup
            .post(
                "/api/v1/deliveries/retry",
                &operator,
                json!({"route": "to-sink", "last_error": last_error, "dry_run": true}),
            )
            .await,
        200,
    );
    assert_eq!(dry, json!({"dry_run": true, "retried": 2}));
    assert_eq!(
        state_of(&store, dead[3]).await,
        DeliveryState::Dead,
        "a dry run changes nothing"
    );
    let other_error = expect(
        &setup
            .post(
                "/api/v1/deliveries/retry",
                &operator,
                json!({"route": "to-sink", "last_error": "some other error"}),
            )
            .await,
        200,
    );
    assert_eq!(other_error["retried"], 0);
    let bulk = expect(
        &setup
            .post(
                "/api/v1/deliveries/retry",
                &operator,
                json!({"route": "to-sink", "last_error": last_error}),
            )
            .await,
        200,
    );
    assert_eq!(bulk["retried"], 2);
    assert_eq!(state_of(&store, dead[3]).await, DeliveryState::Pending);
    assert_eq!(state_of(&store, dead[4]).await, DeliveryState::Pending);
    expect(
        &setup
            .post("/api/v1/deliveries/retry", &operator, json!({"route": "nope"}))
            .await,
        404,
    );
    expect(
        &setup
            .post("/api/v1/deliveries/retry", &operator, json!({"rout": "typo"}))
            .await,
        422,
    );

    // --- Approve one, reject one (a reason is required).
    let approved = expect(
        &setup
            .post(&format!("/api/v1/deliveries/{}/approve", held[0]), &operator, json!({}))
            .await,
        200,
    );
    assert_ne!(approved["state"], "awaiting_approval");
    expect(
        &setup
            .post(
                &format!("/api/v1/deliveries/{}/reject", held[1]),
                &operator,
                json!({"reason": ""}),
            )
            .await,
        422,
    );
    let rejected = expect(
        &setup
            .post(
                &format!("/api/v1/deliveries/{}/reject", held[1]),
                &operator,
                json!({"reason": "looks fraudulent"}),
            )
            .await,
        200,
    );
    assert_eq!(rejected["state"], "rejected");
    assert_eq!(
        error_code(
            &setup
                .post(&format!("/api/v1/deliveries/{}/approve", held[1]), &operator, json!({}))
                .await
        ),
        "conflict"
    );
    assert_eq!(
        expect(&setup.get("/api/v1/approvals", &viewer).await, 200)["items"]
            .as_array()
            .expect("items")
            .len(),
        3
    );

    // --- Replay by ids and by range; dry runs change nothing.
    let before = store.deliveries_for_event(events[0]).await.expect("read").len();
    let dry_answer = setup
        .post(
            "/api/v1/replay",
            &operator,
            json!({"events": [events[0].to_string()], "dry_run": true}),
        )
        .await;
    assert!(
        dry_answer.headers.get("server-timing").is_none(),
        "posts do not report timings"
    );
    let dry = expect(&dry_answer, 200);
    assert_eq!(
        dry,
        json!({"dry_run": true, "events": 1, "unrouted": 0, "deliveries": 2, "pruned": 0})
    );
    assert_eq!(store.deliveries_for_event(events[0]).await.expect("read").len(), before);
    let replayed = expect(
        &setup
            .post(
                "/api/v1/replay",
                &operator,
                json!({"events": [events[0].to_string()], "route": "to-sink"}),
            )
            .await,
        200,
    );
    assert_eq!(replayed["deliveries"], 1);
    assert_eq!(
        store.deliveries_for_event(events[0]).await.expect("read").len(),
        before + 1
    );
    let range = expect(
        &setup
            .post(
                "/api/v1/replay",
                &operator,
                json!({"source": "stripe", "type": "payment_intent.*", "from": 0, "dry_run": true}),
            )
            .await,
        200,
    );
    assert_eq!(
        range["events"], 6,
        "the ignored charge.refunded is counted but on no route: {range}"
    );
    assert_eq!(range["deliveries"], 10, "five accepted events on two routes: {range}");
    let range_rfc = expect(
        &setup
            .post(
                "/api/v1/replay",
                &operator,
                json!({"source": "stripe", "from": "2000-01-01T00:00:00Z", "to": "2001-01-01T00:00:00Z", "dry_run": true}),
            )
            .await,
        200,
    );
    assert_eq!(range_rfc["events"], 0);
    expect(
        &setup
            .post("/api/v1/replay", &operator, json!({"source": "stripe"}))
            .await,
        422,
    );
    expect(&setup.post("/api/v1/replay", &operator, json!({})).await, 422);
    expect(
        &setup
            .post("/api/v1/replay", &operator, json!({"source": "nope", "from": 0}))
            .await,
        404,
    );
    expect(
        &setup
            .post(
                "/api/v1/replay",
                &operator,
                json!({"events": [events[0].to_string()], "route": "nope"}),
            )
            .await,
        404,
    );

    // --- Catalog: pause state and counts, never a secret.
    let routes = expect(&setup.get("/api/v1/routes", &viewer).await, 200);
    let to_sink = routes
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["name"] == "to-sink")
        .expect("to-sink")
        .clone();
    assert_eq!(to_sink["paused"], true);
    assert_eq!(to_sink["source"], "stripe");
    let gated = routes
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["name"] == "gated")
        .expect("gated")
        .clone();
    assert_eq!(gated["paused"], false);
    assert_eq!(gated["awaiting_approval"], 3);
    let sources = expect(&setup.get("/api/v1/sources", &viewer).await, 200);
    let stripe = sources
        .as_array()
        .expect("sources")
        .iter()
        .find(|s| s["name"] == "stripe")
        .expect("stripe")
        .clone();
    assert_eq!(stripe["provider"], "stripe");
    assert_eq!(stripe["stored"], 6);
    assert_eq!(stripe["duplicates"], 1);
    assert_eq!(stripe["routes"], json!(["to-sink", "gated"]));
    let destinations = expect(&setup.get("/api/v1/destinations", &viewer).await, 200);
    assert_eq!(destinations[0]["type"], "http");
    assert_eq!(destinations[0]["routes"], json!(["to-sink", "gated"]));
    for answer in [&routes, &sources, &destinations] {
        let text = answer.to_string();
        assert!(!text.contains("hidden-query-secret"), "{text}");
        assert!(!text.contains(SINK_SECRET), "{text}");
        assert!(!text.contains(STRIPE_SECRET), "{text}");
    }
    let resumed = expect(
        &setup.post("/api/v1/routes/to-sink/resume", &admin, json!({})).await,
        200,
    );
    assert_eq!(resumed["paused"], false);

    // --- The audit log saw every action, with who and from where.
    let audit = expect(&setup.get("/api/v1/audit?limit=1000", &viewer).await, 200);
    let entries = audit["entries"].as_array().expect("entries");
    let actions: Vec<&str> = entries.iter().filter_map(|e| e["action"].as_str()).collect();
    for action in [
        "token.create",
        "route.pause",
        "route.resume",
        "delivery.retry",
        "delivery.retry_bulk",
        "delivery.resolve",
        "delivery.discard",
        "delivery.approve",
        "delivery.reject",
        "event.replay",
    ] {
        assert!(actions.contains(&action), "{action} missing from {actions:?}");
    }
    let pause = entries
        .iter()
        .find(|e| e["action"] == "route.pause")
        .expect("pause entry");
    assert_eq!(pause["actor"], format!("token:{}", setup.admin_id));
    assert_eq!(pause["object"], "route:to-sink");
    assert_eq!(pause["remote_addr"], "127.0.0.1");
    let reject = entries
        .iter()
        .find(|e| e["action"] == "delivery.reject")
        .expect("reject entry");
    assert_eq!(reject["note"], "looks fraudulent");
    assert_eq!(reject["object"], held[1].to_string());
    let only_deliveries = expect(&setup.get("/api/v1/audit?action=delivery.", &viewer).await, 200);
    assert!(only_deliveries["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .all(|e| e["action"].as_str().unwrap_or_default().starts_with("delivery.")));
    let by_object = expect(
        &setup.get(&format!("/api/v1/audit?object={}", dead[1]), &viewer).await,
        200,
    );
    assert_eq!(by_object["entries"][0]["action"], "delivery.resolve");
    let by_actor = expect(
        &setup
            .get(&format!("/api/v1/audit?actor=token:{}", setup.admin_id), &viewer)
            .await,
        200,
    );
    assert_eq!(
        by_actor["entries"].as_array().expect("entries").len(),
        2,
        "pause and resume: {by_actor}"
    );
    let first_page = expect(&setup.get("/api/v1/audit?limit=2", &viewer).await, 200);
    let cursor = first_page["next"].as_i64().expect("next");
    let second_page = expect(
        &setup
            .get(&format!("/api/v1/audit?limit=2&before={cursor}"), &viewer)
            .await,
        200,
    );
    assert!(second_page["entries"][0]["seq"].as_i64().expect("seq") < cursor);

    // --- Stats for the overview.
    let hour_ago = UnixMillis::now().0 - 3_600_000;
    let stats = expect(
        &setup
            .get(&format!("/api/v1/stats?bucket_secs=60&since={hour_ago}"), &viewer)
            .await,
        200,
    );
    assert_eq!(stats["bucket_ms"], 60_000);
    expect(&setup.get("/api/v1/stats", &viewer).await, 200);
    let stripe_events: u64 = stats["activity"]
        .as_array()
        .expect("activity")
        .iter()
        .filter(|b| b["source"] == "stripe")
        .map(|b| b["events"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(stripe_events, 6, "{stats}");
    let failed: u64 = stats["attempt_activity"]
        .as_array()
        .expect("attempt activity")
        .iter()
        .map(|b| b["failed"].as_u64().unwrap_or(0))
        .sum();
    assert!(failed >= 5, "{stats}");
    assert!(stats["delivery_counts"]["cancelled"].as_u64() == Some(2), "{stats}");
    assert!(stats["lag_ms"].as_i64().is_some());
    assert!(stats["recent_verification_failures"].is_array());
    expect(&setup.get("/api/v1/stats?bucket_secs=1&since=0", &viewer).await, 422);

    // --- Users and tokens.
    let created = expect(
        &setup
            .post(
                "/api/v1/users",
                &admin,
                json!({"username": "alice", "role": "operator", "password": "correct horse battery"}),
            )
            .await,
        201,
    );
    assert_eq!(created["username"], "alice");
    assert!(created.get("password_hash").is_none(), "{created}");
    assert_eq!(
        error_code(
            &setup
                .post(
                    "/api/v1/users",
                    &admin,
                    json!({"username": "alice", "role": "viewer", "password": "another long password"}),
                )
                .await
        ),
        "conflict"
    );
    expect(
        &setup
            .post(
                "/api/v1/users",
                &admin,
                json!({"username": "bob", "role": "viewer", "password": "short"}),
            )
            .await,
        422,
    );
    expect(
        &setup
            .post(
                "/api/v1/users",
                &admin,
                json!({"username": "bob", "role": "emperor", "password": "long enough password"}),
            )
            .await,
        422,
    );
    let users = expect(&setup.get("/api/v1/users", &admin).await, 200);
    assert_eq!(users.as_array().expect("users").len(), 1);
    assert!(!users.to_string().contains("argon2"), "{users}");
    let disabled = expect(&setup.post("/api/v1/users/alice/disable", &admin, json!({})).await, 200);
    assert_eq!(disabled["disabled"], true);
    let enabled = expect(&setup.post("/api/v1/users/alice/enable", &admin, json!({})).await, 200);
    assert_eq!(enabled["disabled"], false);
    expect(
        &setup.post("/api/v1/users/nobody/disable", &admin, json!({})).await,
        404,
    );
    let old_hash = store
        .user_by_name("alice")
        .await
        .expect("read")
        .expect("alice")
        .password_hash;
    expect(
        &setup
            .post(
                "/api/v1/users/alice/password",
                &admin,
                json!({"password": "a brand new password"}),
            )
            .await,
        204,
    );
    let new_hash = store
        .user_by_name("alice")
        .await
        .expect("read")
        .expect("alice")
        .password_hash;
    assert_ne!(old_hash, new_hash);
    assert!(gatehouse_console::auth::password::verify(
        "a brand new password",
        &new_hash
    ));
    expect(
        &setup
            .post("/api/v1/users/alice/password", &admin, json!({"password": "short"}))
            .await,
        422,
    );

    let token = expect(
        &setup
            .post(
                "/api/v1/tokens",
                &admin,
                json!({"name": "ci", "role": "operator", "expires_at": "2999-01-01T00:00:00Z"}),
            )
            .await,
        201,
    );
    let secret = token["secret"].as_str().expect("secret").to_string();
    let token_id = token["token"]["id"].as_str().expect("id").to_string();
    assert!(token["token"].get("token_hash").is_none(), "{token}");
    let me = expect(&setup.get("/api/v1/me", &secret).await, 200);
    assert_eq!(
        me,
        json!({"actor": format!("token:{token_id}"), "role": "operator", "via": "token"})
    );
    let tokens = expect(&setup.get("/api/v1/tokens", &admin).await, 200);
    assert_eq!(tokens.as_array().expect("tokens").len(), 4);
    assert!(!tokens.to_string().contains(&secret));
    expect(
        &setup
            .post(
                "/api/v1/tokens",
                &admin,
                json!({"name": "old", "role": "viewer", "expires_at": 1000}),
            )
            .await,
        422,
    );
    assert_eq!(
        call(
            &setup.server,
            "DELETE",
            &format!("/api/v1/tokens/{token_id}"),
            Some(&admin),
            None
        )
        .await
        .status,
        204
    );
    expect(&setup.get("/api/v1/me", &secret).await, 401);
    expect(
        &call(
            &setup.server,
            "DELETE",
            &format!("/api/v1/tokens/{token_id}"),
            Some(&admin),
            None,
        )
        .await,
        404,
    );

    // --- Unknown endpoints and missing credentials answer JSON.
    expect(&setup.get("/api/v1/nothing-here", &viewer).await, 404);
    let anonymous = call(&setup.server, "GET", "/api/v1/events", None, None).await;
    expect(&anonymous, 401);
    assert!(anonymous.headers.get("www-authenticate").is_some());
    expect(
        &call(
            &setup.server,
            "GET",
            "/api/v1/events",
            Some("ghk_not_a_real_token"),
            None,
        )
        .await,
        401,
    );
}

/// Form-encodes a query value.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One state-changing (or admin-only) endpoint and the role it needs.
struct Guarded {
    method: &'static str,
    path: String,
    body: Option<Value>,
    needs: Role,
}

async fn roles_are_enforced_on_every_mutating_endpoint(db: Database) {
    let setup = Setup::start(&db).await;
    let event = event_id(&send_stripe(&setup.server, "evt_roles_1", "payment_intent.succeeded").await);
    let (dead, held) = settled(&setup.store, event).await;
    let unknown_delivery = DeliveryId::new();
    let guarded = |n: usize| -> Vec<Guarded> {
        let g = |method, path: String, body: Option<Value>, needs| Guarded {
            method,
            path,
            body,
            needs,
        };
        vec![
            g(
                "POST",
                format!("/api/v1/deliveries/{unknown_delivery}/retry"),
                None,
                Role::Operator,
            ),
            g(
                "POST",
                "/api/v1/deliveries/retry".into(),
                Some(json!({"route": "to-sink", "dry_run": true})),
                Role::Operator,
            ),
            g(
                "POST",
                format!("/api/v1/deliveries/{unknown_delivery}/approve"),
                None,
                Role::Operator,
            ),
            g(
                "POST",
                format!("/api/v1/deliveries/{unknown_delivery}/reject"),
                Some(json!({"reason": "no"})),
                Role::Operator,
            ),
            g(
                "POST",
                format!("/api/v1/deliveries/{unknown_delivery}/resolve"),
                Some(json!({"note": "n"})),
                Role::Operator,
            ),
            g(
                "POST",
                format!("/api/v1/deliveries/{unknown_delivery}/discard"),
                Some(json!({"note": "n"})),
                Role::Operator,
            ),
            g(
                "POST",
                "/api/v1/replay".into(),
                Some(json!({"events": [event.to_string()], "dry_run": true})),
                Role::Operator,
            ),
            g("POST", "/api/v1/routes/gated/pause".into(), None, Role::Admin),
            g("POST", "/api/v1/routes/gated/resume".into(), None, Role::Admin),
            g("GET", "/api/v1/users".into(), None, Role::Admin),
            g(
                "POST",
                "/api/v1/users".into(),
                Some(json!({"username": format!("user{n}"), "role": "viewer", "password": "long enough password"})),
                Role::Admin,
            ),
            g("POST", "/api/v1/users/nobody/disable".into(), None, Role::Admin),
            g("POST", "/api/v1/users/nobody/enable".into(), None, Role::Admin),
            g(
                "POST",
                "/api/v1/users/nobody/password".into(),
                Some(json!({"password": "long enough password"})),
                Role::Admin,
            ),
            g("GET", "/api/v1/tokens".into(), None, Role::Admin),
            g(
                "POST",
                "/api/v1/tokens".into(),
                Some(json!({"name": format!("t{n}"), "role": "viewer"})),
                Role::Admin,
            ),
            g(
                "DELETE",
                format!("/api/v1/tokens/{}", gatehouse_core::TokenId::new()),
                None,
                Role::Admin,
            ),
        ]
    };
    let audit_before = setup
        .store
        .list_audit(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .expect("audit")
        .len();
    let mut refusals = 0;
    for (n, role) in Role::ALL.into_iter().enumerate() {
        for endpoint in guarded(n) {
            let body = endpoint.body.clone().or(Some(json!({})));
            let body = if endpoint.method == "POST" { body } else { None };
            let answer = call(
                &setup.server,
                endpoint.method,
                &endpoint.path,
                Some(setup.token(role)),
                body.clone(),
            )
            .await;
            let what = format!("{} {} as {}", endpoint.method, endpoint.path, role.as_str());
            if role.allows(endpoint.needs) {
                assert!(
                    ![401, 403].contains(&answer.status) && answer.status < 500,
                    "{what}: {} {}",
                    answer.status,
                    answer.body
                );
            } else {
                assert_eq!(answer.status, 403, "{what}: {}", answer.body);
                assert_eq!(error_code(&answer), "forbidden", "{what}");
                refusals += 1;
            }
            let anonymous = call(&setup.server, endpoint.method, &endpoint.path, None, body).await;
            assert_eq!(
                anonymous.status, 401,
                "{} {} without a token",
                endpoint.method, endpoint.path
            );
        }
    }
    assert_eq!(
        refusals,
        17 + 10,
        "the viewer is refused everywhere, the operator on the 10 admin endpoints"
    );
    // Every read is open to every role.
    for path in [
        "/api/v1/events",
        &format!("/api/v1/events/{event}"),
        "/api/v1/lookup?provider_id=evt_roles_1",
        "/api/v1/deliveries",
        &format!("/api/v1/deliveries/{dead}"),
        "/api/v1/exceptions",
        "/api/v1/approvals",
        "/api/v1/routes",
        "/api/v1/sources",
        "/api/v1/destinations",
        "/api/v1/audit",
        "/api/v1/stats",
        "/api/v1/me",
    ] {
        for role in Role::ALL {
            expect(&setup.get(path, setup.token(role)).await, 200);
        }
        expect(&call(&setup.server, "GET", path, None, None).await, 401);
    }
    // Refused calls changed nothing: the held delivery is still held, the
    // dead one still dead, and only the allowed calls were audited.
    assert_eq!(state_of(&setup.store, held).await, DeliveryState::AwaitingApproval);
    assert_eq!(state_of(&setup.store, dead).await, DeliveryState::Dead);
    let audited = setup
        .store
        .list_audit(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    let mut new_entries: Vec<(String, String)> = audited[..audited.len() - audit_before]
        .iter()
        .map(|entry| (entry.actor.clone(), entry.action.clone()))
        .collect();
    new_entries.sort();
    let admin = format!("token:{}", setup.admin_id);
    assert_eq!(
        new_entries,
        vec![
            (admin.clone(), "route.pause".to_string()),
            (admin.clone(), "route.resume".to_string()),
            (admin.clone(), "token.create".to_string()),
            (admin.clone(), "user.create".to_string()),
        ],
        "only the admin's allowed changes were done (dry runs and 404s audit nothing)"
    );
    assert!(setup.store.user_by_name("user0").await.expect("read").is_none());
    assert!(setup.store.user_by_name("user1").await.expect("read").is_none());
    assert!(setup.store.user_by_name("user2").await.expect("read").is_some());
}

async fn a_revoked_token_stops_working_at_once(db: Database) {
    let setup = Setup::start(&db).await;
    let (id, secret) = cli_token(&setup.server, "short-lived", "operator");
    let me = expect(&setup.get("/api/v1/me", &secret).await, 200);
    assert_eq!(me["role"], "operator");
    let config = setup.server.config_path.display().to_string();
    let (ok, stdout, stderr) = run_cli(&["tokens", "revoke", &id, "--config", &config]);
    assert!(ok, "{stdout}{stderr}");
    // No wait: the very next call is refused.
    let answer = setup.get("/api/v1/me", &secret).await;
    expect(&answer, 401);
    assert_eq!(error_code(&answer), "unauthenticated");
    let (ok, _, stderr) = run_cli(&["tokens", "revoke", &id, "--config", &config]);
    assert!(!ok, "revoking twice fails");
    assert!(stderr.contains("not found"), "{stderr}");

    // An expired token is refused the same way.
    let now = UnixMillis::now();
    let expired = gatehouse_console::auth::secret::new_api_token();
    setup
        .store
        .create_token(gatehouse_core::ApiToken {
            id: gatehouse_core::TokenId::new(),
            name: "expired".into(),
            token_hash: gatehouse_console::auth::secret::hash(&expired),
            role: Role::Admin,
            created_by: "test".into(),
            created_at: UnixMillis(now.0 - 10_000),
            expires_at: Some(UnixMillis(now.0 - 1)),
            revoked_at: None,
            last_used_at: None,
        })
        .await
        .expect("store token");
    expect(&setup.get("/api/v1/me", &expired).await, 401);
}

async fn session_cookies_need_the_csrf_token_to_change_things(db: Database) {
    let setup = Setup::start(&db).await;
    let store = &setup.store;
    let now = UnixMillis::now();
    let user = store
        .create_user(gatehouse_core::NewUser {
            id: gatehouse_core::UserId::new(),
            username: "olivia".into(),
            role: Role::Operator,
            password_hash: gatehouse_console::auth::password::hash("olivia's long password").expect("hash"),
            created_at: now,
        })
        .await
        .expect("user");
    let cookie_secret = gatehouse_console::auth::secret::random_secret();
    let csrf = gatehouse_console::auth::secret::random_secret();
    store
        .create_session(Session {
            token_hash: gatehouse_console::auth::secret::hash(&cookie_secret),
            user_id: user.id,
            csrf_token: csrf.clone(),
            created_at: now,
            expires_at: UnixMillis(now.0 + 3_600_000),
            remote_addr: None,
        })
        .await
        .expect("session");
    let cookie = ("cookie", format!("gatehouse_session={cookie_secret}"));
    let me = send(
        "GET",
        &setup.server.url("/api/v1/me"),
        std::slice::from_ref(&cookie),
        "",
    )
    .await;
    assert_eq!(
        expect(&me, 200),
        json!({"actor": "user:olivia", "role": "operator", "via": "session"})
    );
    let retry = format!("/api/v1/deliveries/{}/retry", DeliveryId::new());
    let json_type = ("content-type", "application/json".to_string());
    let without = send(
        "POST",
        &setup.server.url(&retry),
        &[cookie.clone(), json_type.clone()],
        "{}",
    )
    .await;
    expect(&without, 403);
    assert_eq!(error_code(&without), "csrf_failed");
    let wrong = send(
        "POST",
        &setup.server.url(&retry),
        &[cookie.clone(), json_type.clone(), ("x-csrf-token", "guess".into())],
        "{}",
    )
    .await;
    assert_eq!(error_code(&wrong), "csrf_failed");
    let with = send(
        "POST",
        &setup.server.url(&retry),
        &[cookie.clone(), json_type.clone(), ("x-csrf-token", csrf.clone())],
        "{}",
    )
    .await;
    expect(&with, 404);
    // An operator session is still not an admin.
    let pause = send(
        "POST",
        &setup.server.url("/api/v1/routes/gated/pause"),
        &[cookie.clone(), ("x-csrf-token", csrf.clone())],
        "",
    )
    .await;
    assert_eq!(error_code(&pause), "forbidden");
    // Disabling the user ends the session at once.
    store.set_user_disabled("olivia", true).await.expect("disable");
    expect(&send("GET", &setup.server.url("/api/v1/me"), &[cookie], "").await, 401);
}

async fn the_openapi_document_lists_every_path(db: Database) {
    let setup = Setup::start(&db).await;
    let answer = call(&setup.server, "GET", "/api/v1/openapi.json", None, None).await;
    let doc = expect(&answer, 200);
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."), "{doc}");
    assert_eq!(doc["info"]["title"], "gatehouse API");
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("/api/v1/events", "get"),
        ("/api/v1/events/{id}", "get"),
        ("/api/v1/lookup", "get"),
        ("/api/v1/replay", "post"),
        ("/api/v1/deliveries", "get"),
        ("/api/v1/deliveries/{id}", "get"),
        ("/api/v1/deliveries/retry", "post"),
        ("/api/v1/deliveries/{id}/retry", "post"),
        ("/api/v1/deliveries/{id}/approve", "post"),
        ("/api/v1/deliveries/{id}/reject", "post"),
        ("/api/v1/deliveries/{id}/resolve", "post"),
        ("/api/v1/deliveries/{id}/discard", "post"),
        ("/api/v1/exceptions", "get"),
        ("/api/v1/approvals", "get"),
        ("/api/v1/routes", "get"),
        ("/api/v1/routes/{name}/pause", "post"),
        ("/api/v1/routes/{name}/resume", "post"),
        ("/api/v1/sources", "get"),
        ("/api/v1/destinations", "get"),
        ("/api/v1/audit", "get"),
        ("/api/v1/stats", "get"),
        ("/api/v1/me", "get"),
        ("/api/v1/users", "get"),
        ("/api/v1/users", "post"),
        ("/api/v1/users/{name}/disable", "post"),
        ("/api/v1/users/{name}/enable", "post"),
        ("/api/v1/users/{name}/password", "post"),
        ("/api/v1/tokens", "get"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens/{id}", "delete"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the document"
        );
        // Every documented operation really exists on the server.
        let concrete = path.replace("{id}", "x").replace("{name}", "x");
        let answer = call(&setup.server, &method.to_uppercase(), &concrete, None, None).await;
        assert_eq!(
            answer.status, 401,
            "{method} {concrete} should exist and want credentials"
        );
    }
    assert_eq!(
        paths.len(),
        28,
        "one entry per path: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    let params: Vec<&str> = doc["paths"]["/api/v1/events"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in [
        "source",
        "type",
        "provider_id",
        "delivery_state",
        "from",
        "to",
        "body",
        "before",
        "limit",
    ] {
        assert!(params.contains(&name), "{name} missing from {params:?}");
    }
    let schemes = doc["components"]["securitySchemes"].as_object().expect("schemes");
    assert!(schemes.contains_key("bearer") && schemes.contains_key("session"));
}

async fn cli_manages_users_and_tokens(db: Database) {
    let setup = Setup::start(&db).await;
    let config = setup.server.config_path.display().to_string();
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", &config]);
        run_cli(&all)
    };

    // A generated password, printed once, that really logs in.
    let (ok, stdout, stderr) = cli(&["users", "add", "carol", "--role", "admin"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("created user carol (admin)"), "{stdout}");
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("generated password")
        .trim()
        .to_string();
    let carol = setup.store.user_by_name("carol").await.expect("read").expect("carol");
    assert_eq!(carol.role, Role::Admin);
    assert!(gatehouse_console::auth::password::verify(
        &password,
        &carol.password_hash
    ));

    // A password from stdin is not echoed.
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args([
            "users",
            "add",
            "dave",
            "--role",
            "operator",
            "--password-stdin",
            "--config",
            &config,
        ])
        .env("GATEHOUSE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"dave's chosen password\n")
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!stdout.contains("dave's chosen password"), "{stdout}");
    let dave = setup.store.user_by_name("dave").await.expect("read").expect("dave");
    assert!(gatehouse_console::auth::password::verify(
        "dave's chosen password",
        &dave.password_hash
    ));

    // Refusals say why and exit non-zero.
    let (ok, _, stderr) = cli(&["users", "add", "carol"]);
    assert!(!ok);
    assert!(stderr.contains("already exists"), "{stderr}");
    let (ok, _, stderr) = cli(&["users", "add", "bad name"]);
    assert!(!ok);
    assert!(stderr.contains("not a valid username"), "{stderr}");
    let (ok, _, stderr) = cli(&["users", "disable", "nobody"]);
    assert!(!ok);
    assert!(stderr.contains("not found"), "{stderr}");

    let (ok, stdout, _) = cli(&["users", "list"]);
    assert!(ok);
    assert!(
        stdout.contains("carol") && stdout.contains("dave") && stdout.contains("operator"),
        "{stdout}"
    );
    let (ok, stdout, _) = cli(&["users", "disable", "dave"]);
    assert!(ok, "{stdout}");
    assert!(
        setup
            .store
            .user_by_name("dave")
            .await
            .expect("read")
            .expect("dave")
            .disabled
    );
    let (ok, stdout, _) = cli(&["users", "list"]);
    assert!(ok);
    assert!(
        stdout.lines().any(|l| l.starts_with("dave") && l.contains("disabled")),
        "{stdout}"
    );
    let (ok, _, _) = cli(&["users", "enable", "dave"]);
    assert!(ok);
    assert!(
        !setup
            .store
            .user_by_name("dave")
            .await
            .expect("read")
            .expect("dave")
            .disabled
    );
    let (ok, stdout, _) = cli(&["users", "reset-password", "dave"]);
    assert!(ok);
    let new_password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .expect("new password")
        .trim()
        .to_string();
    let dave = setup.store.user_by_name("dave").await.expect("read").expect("dave");
    assert!(gatehouse_console::auth::password::verify(
        &new_password,
        &dave.password_hash
    ));
    assert!(!gatehouse_console::auth::password::verify(
        "dave's chosen password",
        &dave.password_hash
    ));

    // Tokens: create (with expiry), list, revoke.
    let (ok, stdout, stderr) = cli(&[
        "tokens",
        "create",
        "deploy bot",
        "--role",
        "operator",
        "--expires-in",
        "30days",
    ]);
    assert!(ok, "{stdout}{stderr}");
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .expect("secret")
        .trim()
        .to_string();
    let id = stdout
        .split_whitespace()
        .find(|w| w.starts_with("tok_"))
        .expect("id")
        .to_string();
    expect(&setup.get("/api/v1/me", &secret).await, 200);
    let (ok, stdout, _) = cli(&["tokens", "list"]);
    assert!(ok);
    let line = stdout.lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(line.contains("deploy bot") && line.contains("active"), "{line}");
    assert!(!stdout.contains(&secret), "secrets are never listed");
    let (ok, _, stderr) = cli(&["tokens", "create", "x", "--expires-in", "soon"]);
    assert!(!ok);
    assert!(stderr.contains("--expires-in"), "{stderr}");
    let (ok, _, _) = cli(&["tokens", "revoke", &id]);
    assert!(ok);
    let (ok, stdout, _) = cli(&["tokens", "list"]);
    assert!(ok);
    assert!(
        stdout.lines().any(|l| l.starts_with(&id) && l.contains("revoked")),
        "{stdout}"
    );
    let (ok, _, stderr) = cli(&["tokens", "revoke", "tok_nope"]);
    assert!(!ok);
    assert!(stderr.contains("not a token id"), "{stderr}");

    // The older route and delivery commands go through the audited actions too.
    let (ok, stdout, stderr) = cli(&["pause", "gated"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(setup
        .store
        .paused_routes()
        .await
        .expect("paused")
        .contains(&"gated".to_string()));
    let (ok, _, _) = cli(&["resume", "gated"]);
    assert!(ok);

    // Every CLI action is in the audit log as the CLI.
    let audit = setup
        .store
        .list_audit(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    for (action, object) in [
        ("user.create", "user:carol".to_string()),
        ("user.create", "user:dave".to_string()),
        ("user.disable", "user:dave".to_string()),
        ("user.enable", "user:dave".to_string()),
        ("user.reset_password", "user:dave".to_string()),
        ("token.create", id.clone()),
        ("token.revoke", id.clone()),
        ("route.pause", "route:gated".to_string()),
        ("route.resume", "route:gated".to_string()),
    ] {
        let entry = audit
            .iter()
            .find(|e| e.action == action && e.object == object)
            .unwrap_or_else(|| panic!("{action} on {object} not audited: {audit:?}"));
        assert!(entry.actor.starts_with("cli:"), "{entry:?}");
        assert!(entry.remote_addr.is_none());
    }
    assert!(
        audit
            .iter()
            .all(|e| !e.details.contains(&new_password) && !e.details.contains(&password)),
        "no password in the audit log"
    );
}

/// Starts the demo in `dir` and returns the banner lines (up to the curl
/// example) and the process.
async fn start_demo(dir: &std::path::Path) -> (Vec<String>, std::process::Child) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("serve")
        .current_dir(dir)
        .env("GATEHOUSE_LISTEN", "127.0.0.1:0")
        .env("GATEHOUSE_LOG", "warn")
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("GATEHOUSE_STORAGE_URL")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut reader = std::io::BufReader::new(stdout).lines();
        let banner: Vec<String> = reader
            .by_ref()
            .map_while(Result::ok)
            .take_while(|line| !line.contains("curl -i"))
            .collect();
        // Keep draining so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader {});
        banner
    })
    .await
    .expect("read banner");
    (lines, child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_creates_a_first_admin_once() {
    let dir = tempfile::tempdir().expect("dir");
    let (lines, mut child) = start_demo(dir.path()).await;
    let _ = child.kill();
    let _ = child.wait();
    let login = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("login:"))
        .unwrap_or_else(|| panic!("no login line in {lines:#?}"))
        .trim()
        .to_string();
    let password = login
        .strip_prefix("admin / ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no admin password in {login:?}"))
        .to_string();
    assert!(lines.iter().any(|l| l.contains("/console")), "{lines:#?}");
    let store =
        gatehouse_store_sqlite::SqliteStore::open(&dir.path().join("gatehouse-data/gatehouse.db"), Default::default())
            .expect("open the demo database");
    let users = store.list_users().await.expect("users");
    assert_eq!(users.len(), 1);
    assert_eq!((users[0].username.as_str(), users[0].role), ("admin", Role::Admin));
    assert!(gatehouse_console::auth::password::verify(
        &password,
        &users[0].password_hash
    ));
    drop(store);

    // A restarted demo keeps its admin and prints no new password.
    let (lines, mut child) = start_demo(dir.path()).await;
    let _ = child.kill();
    let _ = child.wait();
    let login = lines
        .iter()
        .find(|l| l.trim().starts_with("login:"))
        .expect("login line");
    assert!(
        !login.contains(&password) && login.contains("existing users"),
        "{login}"
    );
    let store =
        gatehouse_store_sqlite::SqliteStore::open(&dir.path().join("gatehouse-data/gatehouse.db"), Default::default())
            .expect("open the demo database");
    assert_eq!(store.list_users().await.expect("users").len(), 1);
}

/// Pauses `gated` with the admin token and a forwarded-for header; returns
/// the address the audit log recorded.
async fn paused_from(server: &Server, store: &Arc<dyn Store>, admin: &str) -> Option<String> {
    let answer = send(
        "POST",
        &server.url("/api/v1/routes/gated/pause"),
        &[
            ("authorization", format!("Bearer {admin}")),
            ("x-forwarded-for", "203.0.113.9".into()),
        ],
        "",
    )
    .await;
    expect(&answer, 200);
    let entries = store
        .list_audit(&AuditQuery {
            action_prefix: Some("route.pause".into()),
            limit: 1,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    entries[0].remote_addr.clone()
}

async fn the_audit_log_names_the_client_behind_a_trusted_proxy(db: Database) {
    // Without trusted proxies the header is attacker text: the peer is kept.
    let setup = Setup::start(&db).await;
    assert_eq!(
        paused_from(&setup.server, &setup.store, &setup.admin).await.as_deref(),
        Some("127.0.0.1")
    );
    drop(setup);

    // Behind a trusted proxy (here, the test itself) the client is believed.
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let config_path = dir.path().join("gatehouse.toml");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n[storage]\nurl = \"{}\"\n{}",
        db.url,
        api_config(&sink)
    );
    std::fs::write(&config_path, config).expect("write config");
    let server = Server::spawn(config_path, dir);
    let (_, admin) = cli_token(&server, "proxied-admin", "admin");
    let store = db.open_store().await;
    assert_eq!(
        paused_from(&server, &store, &admin).await.as_deref(),
        Some("203.0.113.9")
    );
}
