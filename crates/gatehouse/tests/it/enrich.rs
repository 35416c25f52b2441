//! Enrichment end to end, on SQLite and on PostgreSQL: a route fetches
//! fresh data from a fake Stripe API on 127.0.0.1 before each attempt and
//! the sink receives `{"event": …, "fresh": …}`; failures are retried or
//! park the delivery as dead with the reason; the host allow-list keeps a
//! payload from steering the fetch elsewhere.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use gatehouse_core::{AttemptOutcome, Delivery, DeliveryState, EventId};
use gatehouse_store::Store;

use crate::harness::*;
use crate::recovery_backfill::{cli, handler, ApiReply, FakeApi};

const LIMIT: Duration = Duration::from_secs(15);
const KEY: &str = "sk_test_enrich";

on_both_backends!(
    enrichment_sends_fresh_data_and_records_the_fetch,
    enrichment_failures_are_visible_on_the_delivery,
    allow_list_keeps_the_fetch_on_allowed_hosts,
);

/// A fake `GET /v1/payment_intents/{id}`: 404 for `pi_missing`, one 500
/// then fine for `pi_flaky`, 401 without the key.
async fn fake_stripe() -> FakeApi {
    let flaky = Arc::new(AtomicUsize::new(0));
    FakeApi::start(handler(move |request| {
        if request.header("authorization") != Some(&format!("Bearer {KEY}")) {
            return ApiReply::json(401, &json!({"error": {"message": "Invalid API Key"}}));
        }
        let Some(id) = request.path.strip_prefix("/v1/payment_intents/") else {
            return ApiReply::json(404, &json!({"error": {"message": "Unrecognized request URL"}}));
        };
        match id {
            "pi_missing" => ApiReply::json(
                404,
                &json!({"error": {"message": "No such payment_intent: 'pi_missing'"}}),
            ),
            "pi_flaky" if flaky.fetch_add(1, Ordering::SeqCst) == 0 => ApiReply::json(500, &json!({})),
            _ if id.starts_with("pi_") && !id.contains('%') => ApiReply::json(
                200,
                &json!({"id": id, "object": "payment_intent", "status": "succeeded", "amount": 4200}),
            ),
            _ => ApiReply::json(404, &json!({"error": {"message": "No such payment_intent"}})),
        }
    }))
    .await
}

fn config(api: &FakeApi, sink: &Sink, enrich_extra: &str) -> String {
    format!(
        r#"
[[sources]]
name = "stripe"
provider = "stripe"
secrets = ["{STRIPE_SECRET}"]
api = {{ allow_hosts = ["{host}"] }}

[[destinations]]
name = "sink"
type = "http"
url = "{sink}"

[[routes]]
name = "enriched"
source = "stripe"
destination = "sink"
retry = {{ base = "100ms", cap = "200ms", max_attempts = 3 }}
enrich = {{ url = "{base}/v1/payment_intents/{{{{ .data.object.id }}}}", auth = "bearer {KEY}"{enrich_extra} }}

[delivery]
poll_interval = "200ms"
"#,
        host = api.authority(),
        base = api.base,
        sink = sink.url,
    )
}

fn start(db: &Database, api: &FakeApi, sink: &Sink) -> Server {
    Server::start(db, &config(api, sink, ""))
}

async fn send_event(server: &Server, event_id: &str, object_id: &str) -> EventId {
    let body = json!({"id": event_id, "object": "event", "type": "payment_intent.succeeded",
        "data": {"object": {"id": object_id, "amount": 1}}});
    let answer = send_stripe_body(server, &body.to_string()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["id"].as_str().expect("id").parse().expect("event id")
}

async fn delivery_in(store: &Arc<dyn Store>, event: EventId, state: DeliveryState) -> Delivery {
    eventually(&format!("the delivery of {event} is {state:?}"), LIMIT, || async {
        let deliveries = store.deliveries_for_event(event).await.expect("read deliveries");
        deliveries.into_iter().find(|d| d.state == state)
    })
    .await
}

async fn enrichment_sends_fresh_data_and_records_the_fetch(db: Database) {
    let api = fake_stripe().await;
    let sink = Sink::start().await;
    let server = start(&db, &api, &sink);
    let id = send_event(&server, "evt_enrich_1", "pi_42").await;

    let received = sink.wait_for(1, LIMIT).await;
    let body: Value = serde_json::from_slice(&received[0].body).expect("json");
    assert_eq!(body["event"]["id"], "evt_enrich_1", "the original event");
    assert_eq!(body["event"]["data"]["object"]["amount"], 1);
    assert_eq!(body["fresh"]["id"], "pi_42", "the fresh object");
    assert_eq!(body["fresh"]["amount"], 4200);
    assert_eq!(received[0].header("content-type"), Some("application/json"));
    let fetches = api.requests();
    assert_eq!(fetches.len(), 1);
    assert_eq!(fetches[0].path, "/v1/payment_intents/pi_42");
    assert_eq!(
        fetches[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );

    let store = db.open_store().await;
    let delivery = delivery_in(&store, id, DeliveryState::Succeeded).await;
    let enrichment = store.enrichment(delivery.id).await.expect("read").expect("stored");
    assert_eq!(enrichment.status_code, Some(200));
    assert_eq!(enrichment.url, format!("{}/v1/payment_intents/pi_42", api.base));
    assert_eq!(enrichment.error, None);
    let fresh: Value = serde_json::from_slice(&enrichment.body).expect("json");
    assert_eq!(fresh["amount"], 4200);

    // A 500 from the API is retried like a delivery.
    let flaky = send_event(&server, "evt_enrich_2", "pi_flaky").await;
    let delivered = delivery_in(&store, flaky, DeliveryState::Succeeded).await;
    assert_eq!(delivered.attempts, 2);
    let attempts = store.attempts(delivered.id).await.expect("attempts");
    assert_eq!(attempts[0].outcome, AttemptOutcome::Retry);
    let error = attempts[0].error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("enrichment failed: ") && error.contains("HTTP 500"),
        "{error}"
    );
    let received = sink.wait_for(2, LIMIT).await;
    let body: Value = serde_json::from_slice(&received[1].body).expect("json");
    assert_eq!(body["fresh"]["id"], "pi_flaky");
}

async fn enrichment_failures_are_visible_on_the_delivery(db: Database) {
    let api = fake_stripe().await;
    let sink = Sink::start().await;
    let server = start(&db, &api, &sink);
    let store = db.open_store().await;

    // A 404 from the API: dead at once, with the reason and the answer.
    let missing = send_event(&server, "evt_enrich_404", "pi_missing").await;
    let dead = delivery_in(&store, missing, DeliveryState::Dead).await;
    let reason = dead.last_error.clone().unwrap_or_default();
    assert!(
        reason.contains("enrichment failed")
            && reason.contains("/v1/payment_intents/pi_missing answered HTTP 404 Not Found"),
        "{reason}"
    );
    let attempts = store.attempts(dead.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1, "a 404 is not retried");
    assert!(
        String::from_utf8_lossy(&attempts[0].response_excerpt).contains("No such payment_intent"),
        "the API's answer is kept with the attempt"
    );
    let enrichment = store.enrichment(dead.id).await.expect("read").expect("stored");
    assert_eq!(enrichment.status_code, Some(404));
    assert!(enrichment.error.as_deref().is_some_and(|e| e.contains("404")));

    // A template field the event lacks: a clear delivery error, nothing fetched.
    let body = json!({"id": "evt_enrich_nofield", "object": "event", "type": "payment_intent.created", "data": {}});
    let answer = send_stripe_body(&server, &body.to_string()).await;
    let no_field: EventId = answer.json()["id"].as_str().expect("id").parse().expect("id");
    let dead = delivery_in(&store, no_field, DeliveryState::Dead).await;
    let reason = dead.last_error.unwrap_or_default();
    assert!(
        reason.contains("placeholder {{ .data.object.id }} is null: the event has no such field"),
        "{reason}"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        sink.received().is_empty(),
        "nothing reaches the destination without its fresh data"
    );
    assert_eq!(api.requests().len(), 1, "only the 404 fetch was made");

    // `events show` shows it.
    let config = server.config_path.to_str().expect("path").to_string();
    let (_, stdout, _) = cli(&["events", "show", "--config", &config, "--provider-id", "evt_enrich_404"]).await;
    assert!(stdout.contains("route enriched: dead after 1 attempt"), "{stdout}");
    assert!(stdout.contains("-> HTTP 404"), "{stdout}");
}

async fn allow_list_keeps_the_fetch_on_allowed_hosts(db: Database) {
    let api = fake_stripe().await;
    let elsewhere = FakeApi::start(handler(|_| ApiReply::json(200, &json!({"stolen": true})))).await;
    let sink = Sink::start().await;

    // At config time: a host not on the source's allow-list, or a host
    // taken from the payload, is refused with the key at fault.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("gatehouse.toml");
    let other_host = config(&api, &sink, "").replace(
        &format!("url = \"{}/v1", api.base),
        &format!("url = \"{}/v1", elsewhere.base),
    );
    std::fs::write(&path, format!("[storage]\nurl = \"{}\"\n{other_host}", db.url)).expect("write");
    let (ok, _, stderr) = cli(&["check-config", path.to_str().expect("path")]).await;
    assert!(!ok);
    assert!(
        stderr.contains(&format!(
            "routes[0].enrich.url: host \"{}\" is not allowed for source \"stripe\"",
            elsewhere.authority()
        )),
        "{stderr}"
    );
    let host_from_payload = config(&api, &sink, "").replace(
        &format!("url = \"{}/v1/payment_intents/", api.base),
        "url = \"http://{{ .data.object.host }}/v1/payment_intents/",
    );
    std::fs::write(&path, format!("[storage]\nurl = \"{}\"\n{host_from_payload}", db.url)).expect("write");
    let (ok, _, stderr) = cli(&["check-config", path.to_str().expect("path")]).await;
    assert!(!ok);
    assert!(
        stderr.contains("routes[0].enrich.url:") && stderr.contains("the scheme and host must be written out"),
        "{stderr}"
    );

    // At run time: a payload that tries to point the URL elsewhere only
    // changes one encoded path segment on the allowed host.
    let server = start(&db, &api, &sink);
    let steer = format!("pi_x@{}/steal?a=", elsewhere.authority());
    let id = send_event(&server, "evt_enrich_steer", &steer).await;
    let store = db.open_store().await;
    let dead = delivery_in(&store, id, DeliveryState::Dead).await;
    let fetches = api.requests();
    assert_eq!(fetches.len(), 1);
    assert!(
        fetches[0].path.starts_with("/v1/payment_intents/pi_x%40127.0.0.1%3A"),
        "{}",
        fetches[0].path
    );
    assert!(fetches[0].path.ends_with("%2Fsteal%3Fa%3D"), "{}", fetches[0].path);
    assert!(elsewhere.requests().is_empty(), "nothing went to the other host");
    assert!(dead.last_error.unwrap_or_default().contains("HTTP 404"));
}
