//! `POST /in/{source}` end to end, on SQLite and on PostgreSQL: every status
//! code the contract names, and what each one left in the database.

use std::time::Duration;

use crate::harness::*;

on_both_backends!(
    accepted_event_is_committed_byte_for_byte,
    duplicate_is_acknowledged_and_counted_not_stored,
    bad_signature_is_401_recorded_and_not_stored,
    unknown_source_is_404,
    wrong_method_is_405,
    oversized_body_is_413_and_not_stored,
    over_the_rate_limit_is_429_with_retry_after_and_not_stored,
    a_content_type_the_provider_cannot_sign_is_415_and_recorded,
    tail_prints_each_new_event_once,
    event_outside_subscription_is_stored_as_ignored,
    github_ping_is_recorded_as_ping,
    database_unavailable_is_503_then_recovers,
    readiness_follows_the_database,
);

async fn accepted_event_is_committed_byte_for_byte(db: Database) {
    let server = Server::start(&db, &standard_sources());
    let answer = send_stripe(&server, "evt_accept_1", "payment_intent.succeeded").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let json = answer.json();
    assert_eq!(json["status"], "accepted");
    let id = json["id"].as_str().expect("id").to_string();

    let store = db.open_store().await;
    let stored = store
        .event_by_dedup_key("stripe", "evt_accept_1")
        .await
        .expect("read")
        .expect("committed before the 2xx");
    assert_eq!(stored.summary.id.to_string(), id);
    assert_eq!(
        stored.body,
        stripe_body("evt_accept_1", "payment_intent.succeeded").as_bytes()
    );
    assert_eq!(stored.summary.event_type.as_deref(), Some("payment_intent.succeeded"));
    assert_eq!(stored.summary.provider_event_id.as_deref(), Some("evt_accept_1"));
    assert_eq!(
        stored.verification, "stripe-v1, secret #2",
        "the rotated-in secret matched"
    );
    assert!(stored.headers.iter().any(|h| h.name == "stripe-signature"));
}

async fn duplicate_is_acknowledged_and_counted_not_stored(db: Database) {
    let server = Server::start(&db, &standard_sources());
    let first = send_stripe(&server, "evt_dup_1", "payment_intent.succeeded").await;
    assert_eq!(first.status, 200);
    // Stripe re-signs retries with a new timestamp; the event id is the key.
    let again = send_stripe(&server, "evt_dup_1", "payment_intent.succeeded").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["status"], "duplicate");
    assert_eq!(
        again.json()["id"],
        first.json()["id"],
        "a duplicate answers with the original's id"
    );

    let store = db.open_store().await;
    let stored = store
        .event_by_dedup_key("stripe", "evt_dup_1")
        .await
        .expect("read")
        .expect("stored");
    assert_eq!(stored.summary.duplicates, 1);
    let counts = store.source_counts().await.expect("counts");
    let stripe = counts.iter().find(|c| c.source == "stripe").expect("stripe");
    assert_eq!(stripe.events, 1);
}

async fn bad_signature_is_401_recorded_and_not_stored(db: Database) {
    let server = Server::start(&db, &standard_sources());
    let body = stripe_body("evt_forged", "payment_intent.succeeded");
    let cases = [
        (
            "wrong secret",
            vec![("stripe-signature", stripe_signature("whsec_attacker", &body))],
        ),
        ("missing header", vec![]),
        (
            "malformed header",
            vec![("stripe-signature", "t=notanumber,v1=zz".to_string())],
        ),
        (
            "stale timestamp",
            vec![(
                "stripe-signature",
                gatehouse_verify::providers::stripe::sign(STRIPE_SECRET.as_bytes(), 1_600_000_000, body.as_bytes()),
            )],
        ),
    ];
    for (case, headers) in &cases {
        let answer = send("POST", &server.url("/in/stripe"), headers, body.clone()).await;
        assert_eq!(answer.status, 401, "{case}: {}", answer.body);
        assert_eq!(answer.json()["error"], "invalid_signature", "{case}");
        assert!(!answer.body.contains(STRIPE_SECRET), "{case}: the secret leaked");
    }
    // A signature over other bytes (re-serialised JSON) must fail too.
    let reserialised = r#"{"id": "evt_forged", "object": "event", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1"}}}"#;
    let answer = send(
        "POST",
        &server.url("/in/stripe"),
        &[("stripe-signature", stripe_signature(STRIPE_SECRET, &body))],
        reserialised,
    )
    .await;
    assert_eq!(answer.status, 401);

    let store = db.open_store().await;
    assert!(store
        .event_by_dedup_key("stripe", "evt_forged")
        .await
        .expect("read")
        .is_none());
    // Failure records are written in the background; give them a moment.
    let mut recorded = Vec::new();
    for _ in 0..50 {
        recorded = store
            .verification_failures(Some("stripe"), 100)
            .await
            .expect("failures");
        if recorded.len() > cases.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recorded.len(), cases.len() + 1, "{recorded:?}");
    let reasons: Vec<&str> = recorded.iter().map(|f| f.reason.as_str()).collect();
    for expected in [
        "no_matching_signature",
        "missing_header",
        "malformed_header",
        "timestamp_too_old",
    ] {
        assert!(reasons.contains(&expected), "{expected} not in {reasons:?}");
    }
    assert!(recorded.iter().all(|f| f.remote_addr.as_deref() == Some("127.0.0.1")));
}

async fn unknown_source_is_404(db: Database) {
    let server = Server::start(&db, &standard_sources());
    let answer = send("POST", &server.url("/in/nope"), &[], "{}").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.json()["error"], "unknown_source");
}

async fn wrong_method_is_405(db: Database) {
    let server = Server::start(&db, &standard_sources());
    let answer = send("GET", &server.url("/in/stripe"), &[], "").await;
    assert_eq!(answer.status, 405);
    assert_eq!(
        answer.headers.get("allow").map(|v| v.to_str().unwrap_or("")),
        Some("POST")
    );
}

async fn oversized_body_is_413_and_not_stored(db: Database) {
    let server = Server::start(&db, &standard_sources());
    // The stripe source allows 1 KiB; this body is signed correctly but too big.
    let padding = "x".repeat(2048);
    let body = format!(r#"{{"id":"evt_big","type":"payment_intent.succeeded","pad":"{padding}"}}"#);
    let answer = send(
        "POST",
        &server.url("/in/stripe"),
        &[("stripe-signature", stripe_signature(STRIPE_SECRET, &body))],
        body,
    )
    .await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(answer.json()["error"], "body_too_large");
    let store = db.open_store().await;
    assert!(store
        .event_by_dedup_key("stripe", "evt_big")
        .await
        .expect("read")
        .is_none());
}

async fn over_the_rate_limit_is_429_with_retry_after_and_not_stored(db: Database) {
    let sources = standard_sources().replacen("body_limit = \"1KiB\"", "body_limit = \"1KiB\"\nrate_limit = 1", 1);
    let server = Server::start(&db, &sources);
    // Forged requests are refused by verification first: they neither take
    // the budget nor hear about it, so the burst that follows still passes.
    for n in 0..3 {
        let forged = stripe_body(&format!("evt_rl_forged_{n}"), "payment_intent.succeeded");
        let answer = send(
            "POST",
            &server.url("/in/stripe"),
            &[("stripe-signature", stripe_signature("whsec_not_ours", &forged))],
            forged,
        )
        .await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    // One a second: the first passes, the next within the second does not.
    let first = send_stripe(&server, "evt_rl_1", "payment_intent.succeeded").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let limited = send_stripe(&server, "evt_rl_2", "payment_intent.succeeded").await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.json()["error"], "rate_limited");
    assert_eq!(
        limited.headers.get("retry-after").map(|v| v.to_str().unwrap_or("")),
        Some("1"),
        "under a second, rounded up"
    );
    // The other source has no limit.
    let answer = send_github_event(
        &server,
        "pull_request",
        "rl-github-1",
        r#"{"action":"opened","number":1}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    let store = db.open_store().await;
    assert!(
        store
            .event_by_dedup_key("stripe", "evt_rl_2")
            .await
            .expect("read")
            .is_none(),
        "a 429 stores nothing: the provider sends it again"
    );
    // Retried after Retry-After, as a provider would: accepted.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let retried = send_stripe(&server, "evt_rl_2", "payment_intent.succeeded").await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.json()["status"], "accepted");
    let metrics = send("GET", &server.url("/metrics"), &[], "").await;
    assert!(
        metrics
            .body
            .contains("gatehouse_ingest_rate_limited_total{source=\"stripe\"} 1"),
        "{}",
        metrics.body
    );
}

async fn a_content_type_the_provider_cannot_sign_is_415_and_recorded(db: Database) {
    let sources = format!(
        "{}\n[[sources]]\nname = \"mail\"\nprovider = \"mailgun\"\nsecrets = [\"key-mailgun\"]\n",
        standard_sources()
    );
    let server = Server::start(&db, &sources);
    // Mailgun's legacy webhooks post forms; only its JSON webhooks are signed
    // in a way gatehouse verifies.
    let answer = send(
        "POST",
        &server.url("/in/mail"),
        &[("content-type", "application/x-www-form-urlencoded".into())],
        "timestamp=1700000000&token=abc&signature=00&event=delivered",
    )
    .await;
    assert_eq!(answer.status, 415, "{}", answer.body);
    assert_eq!(answer.json()["error"], "unsupported_media_type");
    assert!(answer.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .contains("JSON webhooks"));
    // The same body as JSON is judged by its signature instead.
    let answer = send(
        "POST",
        &server.url("/in/mail"),
        &[("content-type", "application/json".into())],
        r#"{"signature":{"timestamp":"1700000000","token":"abc","signature":"00"}}"#,
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.body);

    let store = db.open_store().await;
    let mut reasons = Vec::new();
    for _ in 0..50 {
        reasons = store
            .verification_failures(Some("mail"), 10)
            .await
            .expect("failures")
            .into_iter()
            .map(|failure| failure.reason)
            .collect();
        if reasons.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reasons.contains(&"unsupported_media_type".to_string()), "{reasons:?}");
}

async fn tail_prints_each_new_event_once(db: Database) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let server = Server::start(&db, &standard_sources());
    let old = send_stripe(&server, "evt_tail_old", "payment_intent.succeeded").await;
    assert_eq!(old.status, 200);
    let mut tail = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(["tail", "--json", "--source", "stripe", "--config"])
        .arg(&server.config_path)
        .env("GATEHOUSE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tail");
    // It says so on stderr once it follows.
    let mut stderr = BufReader::new(tail.stderr.take().expect("stderr"));
    let mut said = String::new();
    stderr.read_line(&mut said).expect("read");
    assert!(said.starts_with("Following new events of stripe"), "{said}");

    for id in ["evt_tail_1", "evt_tail_2"] {
        let answer = send_stripe(&server, id, "payment_intent.succeeded").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    // A duplicate and another source's event are not new stripe events.
    send_stripe(&server, "evt_tail_1", "payment_intent.succeeded").await;
    send_github_event(&server, "ping", "tail-github", r#"{"zen":"x","hook_id":1}"#).await;
    send_stripe(&server, "evt_tail_3", "charge.refunded").await;

    let stdout = tail.stdout.take().expect("stdout");
    let lines = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(3)
            .map(|line| serde_json::from_str::<serde_json::Value>(&line.expect("line")).expect("JSON"))
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(20), lines)
        .await
        .expect("three lines within 20 s")
        .expect("reader");
    let _ = tail.kill();
    let _ = tail.wait();
    let seen: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| {
            (
                line["provider_event_id"].as_str().unwrap_or_default(),
                line["disposition"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("evt_tail_1", "accepted"),
            ("evt_tail_2", "accepted"),
            ("evt_tail_3", "ignored")
        ],
        "new events only, in order, the old one and the duplicate left out"
    );
    assert!(lines.iter().all(|line| line["source"] == "stripe"));
}

async fn event_outside_subscription_is_stored_as_ignored(db: Database) {
    let server = Server::start(&db, &standard_sources());
    let answer = send_stripe(&server, "evt_refund", "charge.refunded").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["status"], "ignored");
    let store = db.open_store().await;
    let stored = store
        .event_by_dedup_key("stripe", "evt_refund")
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(stored.summary.disposition, gatehouse_core::Disposition::Ignored);
}

async fn github_ping_is_recorded_as_ping(db: Database) {
    let server = Server::start(&db, &standard_sources());
    let body = r#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let answer = send_github_event(&server, "ping", "72d3162e-cc78-11e3-81ab-4c9367dc0958", body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["status"], "ping");
    let store = db.open_store().await;
    let stored = store
        .event_by_dedup_key("github", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
        .await
        .expect("read")
        .expect("ping recorded");
    assert_eq!(stored.summary.disposition, gatehouse_core::Disposition::Ping);
}

async fn database_unavailable_is_503_then_recovers(mut db: Database) {
    let server = Server::start(&db, &standard_sources());
    assert_eq!(
        send_stripe(&server, "evt_before", "payment_intent.succeeded")
            .await
            .status,
        200
    );

    let outage = db.make_unavailable().await;
    let answer = send_stripe(&server, "evt_during", "payment_intent.succeeded").await;
    assert_eq!(answer.status, 503, "never a false 2xx: {}", answer.body);
    assert_eq!(answer.json()["error"], "storage_unavailable");
    assert!(answer.headers.contains_key("retry-after"));
    db.restore(outage).await;

    // The provider retries; once the database is back the same event is accepted.
    let mut last = 0;
    for _ in 0..50 {
        last = send_stripe(&server, "evt_during", "payment_intent.succeeded")
            .await
            .status;
        if last == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 200, "accepted again once the database is back");
    let store = db.open_store().await;
    assert!(store
        .event_by_dedup_key("stripe", "evt_during")
        .await
        .expect("read")
        .is_some());
}

async fn readiness_follows_the_database(mut db: Database) {
    let server = Server::start(&db, &standard_sources());
    assert_eq!(send("GET", &server.url("/healthz"), &[], "").await.status, 200);
    assert_eq!(send("GET", &server.url("/readyz"), &[], "").await.status, 200);
    let outage = db.make_unavailable().await;
    let answer = send("GET", &server.url("/readyz"), &[], "").await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    db.restore(outage).await;
    let mut status = 0;
    for _ in 0..50 {
        status = send("GET", &server.url("/readyz"), &[], "").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "ready again once the database is back");
    let metrics = send("GET", &server.url("/metrics"), &[], "").await;
    assert!(
        metrics
            .body
            .contains("gatehouse_ingest_accepted_total{source=\"stripe\"}"),
        "{}",
        metrics.body
    );
}
