//! Delivery end to end, on SQLite and on PostgreSQL: a real `gatehouse
//! serve` delivers to a recording sink whose answers each test scripts;
//! retries, dead letters, jq, exec, replay, pause, crashes and scale-out.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_core::{Attempt, AttemptOutcome, Delivery, DeliveryState, EventId};
use gatehouse_store::Store;

use crate::harness::*;

/// The secret the sink verifies gatehouse's signatures with.
const SINK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// How long a test waits for something that should take well under a second.
const LIMIT: Duration = Duration::from_secs(15);
/// Fast retries, so tests do not wait minutes.
const FAST_RETRY: &str = r#"retry = { base = "100ms", cap = "200ms", max_attempts = 5 }"#;

on_both_backends!(
    delivered_once_with_a_verifiable_signature,
    server_errors_are_retried_until_success,
    client_error_is_dead_at_once,
    timeout_is_retried,
    retry_after_is_honoured,
    dead_after_max_attempts_then_retried_by_the_cli,
    jq_filter_skips_and_transform_reshapes,
    exec_destination_receives_stdin_and_env,
    replay_redelivers,
    paused_route_holds_deliveries_until_resumed,
    approval_gate_holds_until_approved_or_rejected,
    every_acknowledged_event_is_delivered_after_sigkill,
);

/// Sources, one http destination to the sink (signed) and one route
/// `to-sink` from stripe. `route` replaces the fast retry schedule when it
/// sets `retry`.
fn delivery_config(sink: &Sink, destination: &str, route: &str, delivery: &str) -> String {
    let retry = if route.contains("retry") { "" } else { FAST_RETRY };
    format!(
        r#"{sources}
[[destinations]]
name = "sink"
type = "http"
url = "{url}"
secret = "{SINK_SECRET}"
{destination}

[[routes]]
name = "to-sink"
source = "stripe"
destination = "sink"
{retry}
{route}

[delivery]
poll_interval = "200ms"
{delivery}
"#,
        sources = standard_sources(),
        url = sink.url,
    )
}

fn event_id(answer: &Answer) -> EventId {
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["id"].as_str().expect("id").parse().expect("event id")
}

/// The event's only delivery, once it is in `state`.
async fn delivery_in(store: &Arc<dyn Store>, event: EventId, state: DeliveryState) -> Delivery {
    eventually(&format!("the delivery of {event} is {state:?}"), LIMIT, || async {
        let deliveries = store.deliveries_for_event(event).await.expect("read deliveries");
        deliveries.into_iter().find(|d| d.state == state)
    })
    .await
}

async fn attempts(store: &Arc<dyn Store>, delivery: &Delivery) -> Vec<Attempt> {
    store.attempts(delivery.id).await.expect("read attempts")
}

async fn delivered_once_with_a_verifiable_signature(db: Database) {
    let sink = Sink::start().await;
    let server = Server::start(&db, &delivery_config(&sink, "", "", ""));
    let answer = send_stripe(&server, "evt_deliver_once", "payment_intent.succeeded").await;
    let id = event_id(&answer);

    let received = sink.wait_for(1, LIMIT).await;
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.webhook_id(), id.to_string(), "webhook-id is the event id");
    assert!(
        request.verifies(SINK_SECRET),
        "the Standard Webhooks signature verifies"
    );
    assert!(!request.verifies("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    assert_eq!(
        request.body,
        stripe_body("evt_deliver_once", "payment_intent.succeeded").as_bytes(),
        "the raw body, byte for byte"
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(
        request.header("stripe-signature").is_none(),
        "not forwarded unless configured"
    );

    let store = db.open_store().await;
    let delivery = delivery_in(&store, id, DeliveryState::Succeeded).await;
    assert_eq!(delivery.attempts, 1);
    let attempts = attempts(&store, &delivery).await;
    assert_eq!(attempts[0].status_code, Some(200));
    assert_eq!(attempts[0].outcome, AttemptOutcome::Succeeded);
    assert_eq!(&attempts[0].response_excerpt[..], b"ok");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 1, "delivered exactly once");
}

async fn server_errors_are_retried_until_success(db: Database) {
    let sink = Sink::start().await;
    sink.script([Reply::status(500), Reply::status(500), Reply::status(200)]);
    let server = Server::start(&db, &delivery_config(&sink, "", "", ""));
    let id = event_id(&send_stripe(&server, "evt_retry_500", "payment_intent.succeeded").await);

    let store = db.open_store().await;
    let delivery = delivery_in(&store, id, DeliveryState::Succeeded).await;
    assert_eq!(delivery.attempts, 3);
    let attempts = attempts(&store, &delivery).await;
    let record: Vec<_> = attempts.iter().map(|a| (a.number, a.status_code, a.outcome)).collect();
    assert_eq!(
        record,
        vec![
            (1, Some(500), AttemptOutcome::Retry),
            (2, Some(500), AttemptOutcome::Retry),
            (3, Some(200), AttemptOutcome::Succeeded),
        ]
    );
    assert_eq!(attempts[0].error.as_deref(), Some("HTTP 500 Internal Server Error"));
    let received = sink.received();
    assert_eq!(received.len(), 3);
    assert!(
        received.iter().all(|r| r.webhook_id() == id.to_string()),
        "the same id on every attempt"
    );
    for pair in received.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap < Duration::from_secs(2), "fast retries: {gap:?}");
    }
}

async fn client_error_is_dead_at_once(db: Database) {
    let sink = Sink::start().await;
    sink.script([Reply::status(400)]);
    let server = Server::start(&db, &delivery_config(&sink, "", "", ""));
    let id = event_id(&send_stripe(&server, "evt_client_error", "payment_intent.succeeded").await);

    let store = db.open_store().await;
    let delivery = delivery_in(&store, id, DeliveryState::Dead).await;
    assert_eq!(delivery.attempts, 1);
    let error = delivery.last_error.expect("reason");
    assert!(error.starts_with("HTTP 400 Bad Request"), "{error}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(sink.received().len(), 1, "a dead delivery is not retried");
}

async fn timeout_is_retried(db: Database) {
    let sink = Sink::start().await;
    sink.script([Reply::status(200).after(Duration::from_secs(3))]);
    let server = Server::start(&db, &delivery_config(&sink, "timeout = \"500ms\"", "", ""));
    let id = event_id(&send_stripe(&server, "evt_timeout", "payment_intent.succeeded").await);

    let store = db.open_store().await;
    let delivery = delivery_in(&store, id, DeliveryState::Succeeded).await;
    assert_eq!(delivery.attempts, 2);
    let attempts = attempts(&store, &delivery).await;
    assert_eq!(attempts[0].outcome, AttemptOutcome::Retry);
    assert_eq!(attempts[0].status_code, None);
    assert_eq!(attempts[0].error.as_deref(), Some("no answer within 500ms"));
    assert!(
        attempts[0].duration_ms < 2000,
        "cut off at the timeout: {} ms",
        attempts[0].duration_ms
    );
}

async fn retry_after_is_honoured(db: Database) {
    let sink = Sink::start().await;
    sink.script([Reply::status(429).header("retry-after", "2")]);
    let route = r#"retry = { base = "100ms", cap = "10s", max_attempts = 5 }"#;
    let server = Server::start(&db, &delivery_config(&sink, "", route, ""));
    let id = event_id(&send_stripe(&server, "evt_retry_after", "payment_intent.succeeded").await);

    let received = sink.wait_for(2, LIMIT).await;
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= Duration::from_millis(1900),
        "Retry-After: 2 was honoured over a 100 ms backoff: {gap:?}"
    );
    let store = db.open_store().await;
    let delivery = delivery_in(&store, id, DeliveryState::Succeeded).await;
    let attempts = attempts(&store, &delivery).await;
    assert_eq!(
        attempts[0].error.as_deref(),
        Some("HTTP 429 Too Many Requests (Retry-After 2s)")
    );
    assert!(attempts[0]
        .response_headers
        .iter()
        .any(|h| h.name == "retry-after" && h.value == "2"));
}

async fn dead_after_max_attempts_then_retried_by_the_cli(db: Database) {
    let sink = Sink::start().await;
    sink.answer_by_default(Reply::status(503));
    let route = r#"retry = { base = "50ms", cap = "100ms", max_attempts = 3 }"#;
    let server = Server::start(&db, &delivery_config(&sink, "", route, ""));
    let id = event_id(&send_stripe(&server, "evt_give_up", "payment_intent.succeeded").await);

    let store = db.open_store().await;
    let delivery = delivery_in(&store, id, DeliveryState::Dead).await;
    assert_eq!(delivery.attempts, 3);
    assert_eq!(
        delivery.last_error.as_deref(),
        Some("gave up after 3 attempts: HTTP 503 Service Unavailable")
    );
    assert_eq!(sink.received().len(), 3);

    // The exception queue: fix the receiver, retry every dead delivery of the route.
    sink.answer_by_default(Reply::status(200));
    let config = server.config_path.to_str().expect("path");
    let (ok, stdout, stderr) = run_cli(&["retry", "--config", config, "--route", "to-sink", "--dead", "--dry-run"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("dry run: 1 dead delivery would be retried"), "{stdout}");
    let (ok, stdout, stderr) = run_cli(&["retry", "--config", config, "--route", "to-sink", "--dead"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("retried 1 dead delivery"), "{stdout}");
    let delivery = delivery_in(&store, id, DeliveryState::Succeeded).await;
    assert_eq!(delivery.attempts, 4, "earlier attempts are kept");
    assert_eq!(sink.received().len(), 4);
}

async fn jq_filter_skips_and_transform_reshapes(db: Database) {
    let sink = Sink::start().await;
    let route = r#"filter = '.data.object.amount > 1000'
transform = '{id: .id, cents: (.data.object.amount + 0), kind: .type}'"#;
    let server = Server::start(&db, &delivery_config(&sink, "", route, ""));
    let body = |id: &str, amount: &str| {
        format!(r#"{{"id":"{id}","type":"payment_intent.succeeded","data":{{"object":{{"amount":{amount}}}}}}}"#)
    };
    let big = event_id(&send_stripe_body(&server, &body("evt_big", "5000")).await);
    let small = event_id(&send_stripe_body(&server, &body("evt_small", "10")).await);
    let odd = event_id(&send_stripe_body(&server, &body("evt_odd", "\"lots\"")).await);

    let store = db.open_store().await;
    let skipped = delivery_in(&store, small, DeliveryState::Skipped).await;
    assert_eq!(
        skipped.last_error.as_deref(),
        Some("skipped: the route's filter yielded false")
    );
    let dead = delivery_in(&store, odd, DeliveryState::Dead).await;
    let error = dead.last_error.expect("reason");
    assert!(error.starts_with("jq transform error: "), "{error}");
    assert_eq!(dead.attempts, 1, "a jq error is not retried");
    delivery_in(&store, big, DeliveryState::Succeeded).await;

    let received = sink.received();
    assert_eq!(received.len(), 1, "only the big one went out");
    assert_eq!(received[0].webhook_id(), big.to_string());
    assert_eq!(
        String::from_utf8_lossy(&received[0].body),
        r#"{"id":"evt_big","cents":5000,"kind":"payment_intent.succeeded"}"#
    );
    assert_eq!(received[0].header("content-type"), Some("application/json"));
    assert!(
        received[0].verifies(SINK_SECRET),
        "the transformed body is what is signed"
    );
}

async fn exec_destination_receives_stdin_and_env(db: Database) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let script = dir.path().join("on-event.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncat > \"$1/$GATEHOUSE_EVENT_ID.body\"\nenv | grep '^GATEHOUSE_' | sort > \"$1/$GATEHOUSE_EVENT_ID.env\"\necho handled\n",
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("out dir");
    let config = format!(
        r#"{sources}
[[destinations]]
name = "script"
type = "exec"
command = ["{script}", "{out}"]
timeout = "10s"

[[routes]]
name = "to-script"
source = "stripe"
destination = "script"
"#,
        sources = standard_sources(),
        script = script.display(),
        out = out.display(),
    );
    let server = Server::start(&db, &config);
    let id = event_id(&send_stripe(&server, "evt_exec", "payment_intent.succeeded").await);

    let store = db.open_store().await;
    let delivery = delivery_in(&store, id, DeliveryState::Succeeded).await;
    let body = std::fs::read(out.join(format!("{id}.body"))).expect("the script saved stdin");
    assert_eq!(body, stripe_body("evt_exec", "payment_intent.succeeded").as_bytes());
    let env = std::fs::read_to_string(out.join(format!("{id}.env"))).expect("the script saved its env");
    for expected in [
        format!("GATEHOUSE_EVENT_ID={id}"),
        format!("GATEHOUSE_DELIVERY_ID={}", delivery.id),
        "GATEHOUSE_SOURCE=stripe".to_string(),
        "GATEHOUSE_ROUTE=to-script".to_string(),
        "GATEHOUSE_EVENT_TYPE=payment_intent.succeeded".to_string(),
        "GATEHOUSE_PROVIDER_EVENT_ID=evt_exec".to_string(),
        "GATEHOUSE_ATTEMPT=1".to_string(),
    ] {
        assert!(
            env.lines().any(|line| line == expected),
            "{expected} missing from:\n{env}"
        );
    }
    let attempts = attempts(&store, &delivery).await;
    assert_eq!(attempts[0].status_code, Some(0), "the exit code");
    assert_eq!(&attempts[0].response_excerpt[..], b"handled\n");
}

async fn replay_redelivers(db: Database) {
    let sink = Sink::start().await;
    let server = Server::start(&db, &delivery_config(&sink, "", "", ""));
    let id = event_id(&send_stripe(&server, "evt_replay", "payment_intent.succeeded").await);
    sink.wait_for(1, LIMIT).await;
    let config = server.config_path.to_str().expect("path");

    let (ok, stdout, stderr) = run_cli(&[
        "replay",
        "--config",
        config,
        "--source",
        "stripe",
        "--type",
        "payment_intent.*",
        "--since",
        "1h",
        "--dry-run",
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("dry run: 1 delivery would be created for 1 event"),
        "{stdout}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 1, "a dry run sends nothing");

    let (ok, stdout, stderr) = run_cli(&["replay", "--config", config, "--event", &id.to_string()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("replayed 1 event: 1 delivery created"), "{stdout}");
    let received = sink.wait_for(2, LIMIT).await;
    assert_eq!(
        received[1].webhook_id(),
        id.to_string(),
        "the same id, so the receiver can dedupe"
    );
    assert_eq!(received[1].body, received[0].body);
    let store = db.open_store().await;
    let deliveries = store.deliveries_for_event(id).await.expect("deliveries");
    assert_eq!(deliveries.len(), 2, "replay adds a delivery; the first is kept");

    let (ok, _, stderr) = run_cli(&["replay", "--config", config, "--source", "stripe"]);
    assert!(!ok, "a range needs a start");
    assert!(stderr.contains("--since"), "{stderr}");
}

async fn paused_route_holds_deliveries_until_resumed(db: Database) {
    let sink = Sink::start().await;
    let server = Server::start(&db, &delivery_config(&sink, "", "paused = true", ""));
    let id = event_id(&send_stripe(&server, "evt_paused", "payment_intent.succeeded").await);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(sink.received().is_empty(), "held while paused");
    let store = db.open_store().await;
    let held = store.deliveries_for_event(id).await.expect("deliveries");
    assert_eq!(held.len(), 1, "created with the event even while paused");
    assert_eq!(held[0].state, DeliveryState::Pending);

    let config = server.config_path.to_str().expect("path");
    let (ok, stdout, stderr) = run_cli(&["resume", "--config", config, "to-sink"]);
    assert!(ok, "{stdout}{stderr}");
    let received = sink.wait_for(1, LIMIT).await;
    assert_eq!(received[0].webhook_id(), id.to_string());
    delivery_in(&store, id, DeliveryState::Succeeded).await;

    let (ok, _, stderr) = run_cli(&["pause", "--config", config, "no-such-route"]);
    assert!(!ok);
    assert!(stderr.contains("no route is named \"no-such-route\""), "{stderr}");
}

async fn approval_gate_holds_until_approved_or_rejected(db: Database) {
    let sink = Sink::start().await;
    let rule = r#"approval_when = '.data.object.amount > 10000'"#;
    let server = Server::start(&db, &delivery_config(&sink, "", rule, ""));
    let refund = |id: &str, amount: u32| {
        format!(
            r#"{{"id":"{id}","object":"event","type":"payment_intent.succeeded","data":{{"object":{{"id":"pi_1","amount":{amount}}}}}}}"#
        )
    };
    let small = event_id(&send_stripe_body(&server, &refund("evt_small", 500)).await);
    let big = event_id(&send_stripe_body(&server, &refund("evt_big", 25_000)).await);
    let other_big = event_id(&send_stripe_body(&server, &refund("evt_big_2", 99_000)).await);

    let received = sink.wait_for(1, LIMIT).await;
    assert_eq!(
        received[0].webhook_id(),
        small.to_string(),
        "below the rule: delivered at once"
    );
    let store = db.open_store().await;
    let held = delivery_in(&store, big, DeliveryState::AwaitingApproval).await;
    assert_eq!(
        held.last_error.as_deref(),
        Some(r#"approval_when = ".data.object.amount > 10000""#),
        "the rule that held it is kept for the approval queue"
    );
    let rejected = delivery_in(&store, other_big, DeliveryState::AwaitingApproval).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sink.received().len(), 1, "nothing held reaches the destination");

    let now = gatehouse_core::UnixMillis::now();
    let approved = store
        .decide_approval(&[held.id], &gatehouse_store::ApprovalDecision::Approve, now)
        .await
        .expect("approve");
    assert_eq!(approved, vec![held.id]);
    let reason = gatehouse_store::ApprovalDecision::Reject {
        reason: "refund above the limit; customer called".into(),
    };
    let changed = store
        .decide_approval(&[rejected.id], &reason, now)
        .await
        .expect("reject");
    assert_eq!(changed, vec![rejected.id]);
    let again = store
        .decide_approval(&[rejected.id], &gatehouse_store::ApprovalDecision::Approve, now)
        .await
        .expect("approve after reject");
    assert!(again.is_empty(), "a decision is final");

    let received = sink.wait_for(2, LIMIT).await;
    assert_eq!(received[1].webhook_id(), big.to_string());
    delivery_in(&store, big, DeliveryState::Succeeded).await;
    let rejected = delivery_in(&store, other_big, DeliveryState::Rejected).await;
    assert_eq!(
        rejected.last_error.as_deref(),
        Some("refund above the limit; customer called")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 2, "the rejected delivery never goes out");
}

/// Sends signed events from 16 clients until `stop`; returns the ids acknowledged.
async fn load(url: String, stop: Arc<std::sync::atomic::AtomicBool>, prefix: &'static str) -> Vec<String> {
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for client in 0..16 {
        let (url, acknowledged, stop) = (url.clone(), acknowledged.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let body = stripe_body(&format!("{prefix}_{client}_{n}"), "payment_intent.succeeded");
                let signature = stripe_signature(STRIPE_SECRET, &body);
                let sent = tokio::time::timeout(
                    Duration::from_secs(5),
                    try_send(&url, &[("stripe-signature", signature)], body),
                )
                .await;
                match sent {
                    Ok(Some((200, answer))) => {
                        let json: serde_json::Value = serde_json::from_str(&answer).expect("JSON answer");
                        let id = json["id"].as_str().expect("id").to_string();
                        acknowledged.lock().expect("lock").push(id);
                    }
                    Ok(None) | Err(_) => break,
                    Ok(Some(_)) => {}
                }
            }
        }));
    }
    for client in clients {
        let _ = client.await;
    }
    let ids = acknowledged.lock().expect("lock").clone();
    ids
}

/// Sends a request; `None` when the connection failed (server gone).
async fn try_send(url: &str, headers: &[(&str, String)], body: String) -> Option<(u16, String)> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let mut request = hyper::Request::builder().method("POST").uri(url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request.body(Full::new(bytes::Bytes::from(body))).ok()?;
    let response = client.request(request).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Waits until every delivery in the database has succeeded (none pending,
/// in flight or retrying: expired leases were taken over); returns how many.
async fn all_succeeded(store: &Arc<dyn Store>, limit: Duration) -> u64 {
    eventually("every delivery is recorded as succeeded", limit, || async {
        let counts = store.delivery_counts().await.expect("counts");
        let succeeded = counts
            .iter()
            .find(|(state, _)| *state == DeliveryState::Succeeded)
            .map_or(0, |(_, n)| *n);
        let others: u64 = counts
            .iter()
            .filter(|(state, _)| *state != DeliveryState::Succeeded)
            .map(|(_, n)| *n)
            .sum();
        (others == 0 && succeeded > 0).then_some(succeeded)
    })
    .await
}

/// Every id in `expected` arrived at `sink`; duplicates carry the same body.
async fn all_arrive(sink: &Sink, expected: &[String], limit: Duration) -> Vec<Received> {
    let expected: HashSet<&String> = expected.iter().collect();
    let received = eventually(
        &format!("all {} acknowledged events reached the sink", expected.len()),
        limit,
        || async {
            let received = sink.received();
            let ids: HashSet<String> = received.iter().map(Received::webhook_id).collect();
            expected.iter().all(|id| ids.contains(*id)).then_some(received)
        },
    )
    .await;
    let mut bodies: HashMap<String, bytes::Bytes> = HashMap::new();
    for request in &received {
        let first = bodies
            .entry(request.webhook_id())
            .or_insert_with(|| request.body.clone());
        assert_eq!(
            *first, request.body,
            "a duplicate carries the same id and the same body"
        );
    }
    received
}

async fn every_acknowledged_event_is_delivered_after_sigkill(db: Database) {
    let sink = Sink::start().await;
    // Slow enough that deliveries are in flight when the process dies.
    sink.answer_by_default(Reply::status(200).after(Duration::from_millis(20)));
    let sources = delivery_config(&sink, "timeout = \"1s\"", "", "lease = \"3s\"").replace("body_limit = \"1KiB\"", "");
    let mut server = Server::start(&db, &sources);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(load(server.url("/in/stripe"), stop.clone(), "evt_crash"));
    sink.wait_for(20, LIMIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = load.await.expect("load");
    let before_restart = sink.received().len();
    assert!(acknowledged.len() > 50, "only {} acknowledged", acknowledged.len());

    let _restarted = Server::spawn(server.config_path.clone(), tempfile::tempdir().expect("dir"));
    all_arrive(&sink, &acknowledged, Duration::from_secs(60)).await;
    // Deliveries the killed process held finish once their leases expire.
    let store = db.open_store().await;
    let succeeded = all_succeeded(&store, Duration::from_secs(60)).await;
    assert!(succeeded >= acknowledged.len() as u64);
    let received = all_arrive(&sink, &acknowledged, Duration::from_secs(1)).await;
    let unique: HashSet<String> = received.iter().map(Received::webhook_id).collect();
    assert!(received.len() >= acknowledged.len());
    eprintln!(
        "delivery crash test ({:?}): {} acknowledged, {} delivered before SIGKILL, all delivered after the restart \
         ({} requests for {} events: {} duplicates)",
        db.backend,
        acknowledged.len(),
        before_restart,
        received.len(),
        unique.len(),
        received.len() - unique.len()
    );
}

/// Two processes on one PostgreSQL, each signing with its own instance
/// header so the sink can tell them apart.
fn scale_out_config(sink: &Sink) -> String {
    delivery_config(
        sink,
        "timeout = \"1s\"\nheaders = { x-instance = \"env:GATEHOUSE_IT_INSTANCE\" }",
        "",
        "lease = \"2s\"\nworkers = 4",
    )
    .replace("body_limit = \"1KiB\"", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_processes_share_deliveries_none_lost_none_twice() {
    let Some(db) = Database::fresh(Backend::Postgres, "scale_out").await else {
        return;
    };
    let sink = Sink::start().await;
    sink.answer_by_default(Reply::status(200).after(Duration::from_millis(20)));
    let a = Server::start_with_env(&db, &scale_out_config(&sink), &[("GATEHOUSE_IT_INSTANCE", "a")]);
    let b = Server::spawn_with_env(
        a.config_path.clone(),
        tempfile::tempdir().expect("dir"),
        &[("GATEHOUSE_IT_INSTANCE", "b")],
    );
    let mut acknowledged = Vec::new();
    for n in 0..200 {
        let server = if n % 2 == 0 { &a } else { &b };
        let answer = send_stripe(server, &format!("evt_scale_{n}"), "payment_intent.succeeded").await;
        acknowledged.push(event_id(&answer).to_string());
    }
    all_arrive(&sink, &acknowledged, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received = sink.received();
    let unique: HashSet<String> = received.iter().map(Received::webhook_id).collect();
    assert_eq!(unique.len(), acknowledged.len(), "none lost");
    assert_eq!(received.len(), acknowledged.len(), "fault-free: none delivered twice");
    let by_instance = |name: &str| received.iter().filter(|r| r.header("x-instance") == Some(name)).count();
    let (from_a, from_b) = (by_instance("a"), by_instance("b"));
    assert_eq!(from_a + from_b, received.len());
    assert!(
        from_a > 0 && from_b > 0,
        "both processes delivered: a {from_a}, b {from_b}"
    );
    eprintln!("scale-out: 200 events, process a delivered {from_a}, process b {from_b}, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_killed_process_leaves_its_deliveries_to_the_other() {
    let Some(db) = Database::fresh(Backend::Postgres, "scale_out_kill").await else {
        return;
    };
    let sink = Sink::start().await;
    sink.answer_by_default(Reply::status(200).after(Duration::from_millis(100)));
    let mut a = Server::start_with_env(&db, &scale_out_config(&sink), &[("GATEHOUSE_IT_INSTANCE", "a")]);
    let b = Server::spawn_with_env(
        a.config_path.clone(),
        tempfile::tempdir().expect("dir"),
        &[("GATEHOUSE_IT_INSTANCE", "b")],
    );
    let mut acknowledged = Vec::new();
    for n in 0..100 {
        let answer = send_stripe(&a, &format!("evt_kill_{n}"), "payment_intent.succeeded").await;
        acknowledged.push(event_id(&answer).to_string());
    }
    sink.wait_for(20, LIMIT).await;
    a.kill();
    let killed_at = std::time::Instant::now();
    all_arrive(&sink, &acknowledged, Duration::from_secs(60)).await;
    // What a was sending when it died is only finished once its leases
    // expire and b claims those deliveries again.
    let store = db.open_store().await;
    assert_eq!(all_succeeded(&store, Duration::from_secs(60)).await, 100);
    let settled_after = killed_at.elapsed();
    let received = all_arrive(&sink, &acknowledged, Duration::from_secs(1)).await;
    let unique: HashSet<String> = received.iter().map(Received::webhook_id).collect();
    let late_from_b = received
        .iter()
        .filter(|r| r.header("x-instance") == Some("b") && r.at > killed_at)
        .count();
    assert!(late_from_b > 0, "process b took over after a died");
    eprintln!(
        "scale-out kill: 100 events, every one delivered after process a was killed ({} requests, {} duplicates); \
         b sent {late_from_b} after the kill; every delivery recorded as succeeded {settled_after:?} after it",
        received.len(),
        received.len() - unique.len(),
    );
    drop(b);
}
