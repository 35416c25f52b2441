//! Retention: the server prunes 100,000 old events to tombstones while
//! live ingest keeps answering within a second, lookups by provider id
//! still answer afterwards, and `gatehouse prune --dry-run` counts without
//! changing anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use gatehouse_core::{
    Attempt, AttemptOutcome, DeliveryState, Disposition, EventId, EventOrigin, FinishedAttempt, Header, NewDelivery,
    NewEvent, UnixMillis,
};
use gatehouse_store::{ClaimRequest, Store};

use crate::harness::*;

on_both_backends!(
    pruning_100k_events_keeps_ingest_answering,
    prune_dry_run_counts_then_prunes
);

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The standard sources, the Stripe one keeping events for a day.
fn retained_sources() -> String {
    standard_sources().replace("body_limit = \"1KiB\"", "body_limit = \"1KiB\"\nretention = \"1d\"")
}

/// An old Stripe event as ingest would have stored it.
fn old_event(key: &str, received_at: UnixMillis) -> NewEvent {
    let body = stripe_body(key, "payment_intent.succeeded");
    NewEvent {
        id: EventId::new(),
        source: Arc::from("stripe"),
        received_at,
        dedup_key: key.to_string(),
        provider_event_id: Some(key.to_string()),
        event_type: Some("payment_intent.succeeded".into()),
        disposition: Disposition::Accepted,
        headers: vec![Header {
            name: "stripe-signature".into(),
            value: format!("t=1,v1={}", "0".repeat(64)),
        }],
        body: Bytes::from(body),
        verification: "stripe v1, secret #2".into(),
        remote_addr: Some("127.0.0.1".into()),
        deliveries: Vec::new(),
        origin: EventOrigin::Live,
    }
}

/// Seeds `count` old events (received two days ago, a millisecond apart),
/// the first `with_attempts` of them with a delivery that succeeded after
/// one attempt. Returns the keys in order.
async fn seed(store: &Arc<dyn Store>, count: usize, with_attempts: usize) -> Vec<String> {
    let start = UnixMillis::now().0 - 2 * DAY_MS;
    let keys: Vec<String> = (0..count).map(|i| format!("evt_old_{i:06}")).collect();
    for (chunk_index, chunk) in keys.chunks(2000).enumerate() {
        let batch: Vec<NewEvent> = chunk
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let n = chunk_index * 2000 + i;
                let mut event = old_event(key, UnixMillis(start + n as i64));
                if n < with_attempts {
                    event.deliveries = vec![NewDelivery::pending(Arc::from("archive"))];
                }
                event
            })
            .collect();
        store.ingest(batch).await.expect("seed");
    }
    // Deliver the ones with a delivery: claimed and finished here, so their
    // events carry attempts and every delivery is final.
    let mut delivered = 0;
    while delivered < with_attempts {
        let claimed = store
            .claim_deliveries(&ClaimRequest {
                owner: "seeder".into(),
                now: UnixMillis::now(),
                lease: Duration::from_secs(60),
                limit: 500,
            })
            .await
            .expect("claim");
        assert!(!claimed.is_empty(), "every seeded delivery is claimable");
        delivered += claimed.len();
        let finished = claimed
            .iter()
            .map(|c| FinishedAttempt {
                delivery_id: c.delivery.id,
                attempt: Attempt {
                    number: 1,
                    started_at: UnixMillis::now(),
                    duration_ms: 3,
                    status_code: Some(200),
                    response_headers: Vec::new(),
                    response_excerpt: Bytes::from_static(b"ok"),
                    error: None,
                    outcome: AttemptOutcome::Succeeded,
                },
                next_attempt_at: None,
            })
            .collect();
        store.finish_attempts("seeder", finished).await.expect("finish");
    }
    keys
}

async fn pruning_100k_events_keeps_ingest_answering(db: Database) {
    const SEEDED: usize = 100_000;
    let store = db.open_store().await;
    let started = Instant::now();
    let keys = seed(&store, SEEDED, 1_000).await;
    eprintln!("seeded {SEEDED} events in {:?}", started.elapsed());
    let first = store
        .event_by_dedup_key("stripe", &keys[0])
        .await
        .expect("lookup")
        .expect("seeded");
    let attempted_delivery = store.deliveries_for_event(first.summary.id).await.expect("deliveries")[0].id;
    assert_eq!(store.attempts(attempted_delivery).await.expect("attempts").len(), 1);
    let last_key = keys.last().expect("keys").clone();

    // The server prunes from a second after start; live events arrive the
    // whole time from four concurrent senders.
    let server = Arc::new(Server::start(&db, &retained_sources()));
    let done = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for sender in 0..4 {
        let (server, done) = (server.clone(), done.clone());
        senders.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                let started = Instant::now();
                let answer = send_stripe(&server, &format!("evt_live_{sender}_{n}"), "payment_intent.created").await;
                latencies.push(started.elapsed());
                assert_eq!(answer.status, 200, "{}", answer.body);
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            latencies
        }));
    }
    let prune_started = Instant::now();
    eventually(
        "the newest seeded event is pruned",
        Duration::from_secs(600),
        || async {
            let event = store.event_by_dedup_key("stripe", &last_key).await.ok()??;
            event.summary.pruned_at.map(|_| ())
        },
    )
    .await;
    let prune_took = prune_started.elapsed();
    done.store(true, Ordering::SeqCst);
    let mut latencies = Vec::new();
    for sender in senders {
        latencies.extend(sender.await.expect("sender"));
    }
    latencies.sort();
    let max = *latencies.last().expect("some live requests");
    let p99 = latencies[latencies.len() * 99 / 100];
    // Written to the process's stderr so the numbers show in the run's log.
    {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "retention ({:?}): pruned {SEEDED} events in {prune_took:?}; {} live requests meanwhile, p99 {p99:?}, max {max:?}",
            db.backend,
            latencies.len()
        );
    }
    assert!(latencies.len() >= 20, "ingest ran during pruning: {}", latencies.len());
    assert!(max < Duration::from_secs(1), "slowest live request took {max:?}");

    // Every seeded event is a tombstone, still found by its provider id.
    for key in [&keys[0], &keys[SEEDED / 2], &last_key] {
        let stone = store
            .event_by_dedup_key("stripe", key)
            .await
            .expect("lookup")
            .expect("the tombstone answers");
        assert!(stone.summary.pruned_at.is_some(), "{key}");
        assert!(stone.body.is_empty() && stone.headers.is_empty(), "{key}");
        assert_eq!(stone.summary.event_type.as_deref(), Some("payment_intent.succeeded"));
        assert_eq!(stone.summary.provider_event_id.as_deref(), Some(key.as_str()));
    }
    let middle = &keys[SEEDED / 2];
    let listed = store
        .list_events(&gatehouse_store::EventQuery {
            provider_event_id: Some(middle.clone()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list by provider id");
    assert_eq!(listed.len(), 1, "{middle}");
    assert!(listed[0].pruned_at.is_some());
    assert!(store.attempts(attempted_delivery).await.expect("attempts").is_empty());
    assert_eq!(
        store
            .delivery(attempted_delivery)
            .await
            .expect("read")
            .expect("kept")
            .state,
        DeliveryState::Succeeded
    );
    assert_eq!(
        store
            .prune_events(
                "stripe",
                UnixMillis(UnixMillis::now().0 - DAY_MS),
                500,
                UnixMillis::now(),
                true
            )
            .await
            .expect("dry run")
            .events,
        0,
        "nothing old is left"
    );
    // The live events are young: kept whole.
    let live = store
        .event_by_dedup_key("stripe", "evt_live_0_0")
        .await
        .expect("lookup")
        .expect("stored");
    assert!(live.summary.pruned_at.is_none() && !live.body.is_empty());
}

async fn prune_dry_run_counts_then_prunes(db: Database) {
    let store = db.open_store().await;
    let keys = seed(&store, 30, 10).await;
    store
        .ingest(vec![old_event("evt_young", UnixMillis::now())])
        .await
        .expect("young event");

    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("gatehouse.toml");
    std::fs::write(
        &config,
        format!("[storage]\nurl = \"{}\"\n{}", db.url, retained_sources()),
    )
    .expect("write config");
    let config = config.display().to_string();

    let (ok, stdout, stderr) = run_cli(&["prune", "--config", &config, "--dry-run"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("dry run: stripe: 30 events and 10 attempts older than 1day would be pruned"),
        "{stdout}"
    );
    let untouched = store
        .event_by_dedup_key("stripe", &keys[0])
        .await
        .expect("lookup")
        .expect("kept");
    assert!(untouched.summary.pruned_at.is_none() && !untouched.body.is_empty());

    let (ok, stdout, stderr) = run_cli(&["prune", "--config", &config, "--source", "github"]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("source \"github\" has no retention"), "{stderr}");

    let (ok, stdout, stderr) = run_cli(&["prune", "--config", &config, "--source", "stripe"]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("stripe: pruned 30 events and 10 attempts"), "{stdout}");
    for key in &keys {
        let stone = store
            .event_by_dedup_key("stripe", key)
            .await
            .expect("lookup")
            .expect("kept");
        assert!(stone.summary.pruned_at.is_some() && stone.body.is_empty(), "{key}");
    }
    let young = store
        .event_by_dedup_key("stripe", "evt_young")
        .await
        .expect("lookup")
        .expect("kept");
    assert!(young.summary.pruned_at.is_none());

    let (ok, stdout, _) = run_cli(&["prune", "--config", &config, "--dry-run"]);
    assert!(ok);
    assert!(stdout.contains("stripe: 0 events and 0 attempts"), "{stdout}");
}
