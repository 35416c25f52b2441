//! The conformance suite every [`Store`] implementation runs. Each check is
//! an async function over a store; [`crate::conformance_tests!`] turns them
//! into `#[tokio::test]`s in a backend's crate. Checks use source names of
//! their own, so they can share one database and run in parallel.

use std::sync::Arc;

use bytes::Bytes;

use std::time::Duration;

use gatehouse_core::{
    Attempt, AttemptOutcome, DeliveryId, DeliveryState, Disposition, EventId, FinishedAttempt, Header, NewDelivery,
    NewEvent, UnixMillis, VerificationFailure,
};

use crate::{ApprovalDecision, AuditQuery, Resolution, StoreError};
use crate::{ClaimRequest, DeliveryQuery, EventQuery, IngestOutcome, Store};
use gatehouse_core::{ApiToken, AuditEntry, NewAuditEntry, NewUser, Role, Session, TokenId, UserId};

/// A source name no other check uses.
pub fn unique_source(label: &str) -> String {
    format!("{label}-{}", EventId::new().to_string().to_lowercase())
}

/// A verified event on `source` with dedup key `key`.
pub fn sample_event(source: &str, key: &str) -> NewEvent {
    NewEvent {
        id: EventId::new(),
        source: Arc::from(source),
        received_at: UnixMillis::now(),
        dedup_key: key.to_string(),
        provider_event_id: Some(key.to_string()),
        event_type: Some("payment_intent.succeeded".to_string()),
        disposition: Disposition::Accepted,
        headers: vec![
            Header {
                name: "content-type".into(),
                value: "application/json".into(),
            },
            Header {
                name: "stripe-signature".into(),
                value: "t=1,v1=00".into(),
            },
        ],
        body: Bytes::from(format!(r#"{{"id":"{key}","type":"payment_intent.succeeded"}}"#)),
        verification: "stripe-v1, secret #1".into(),
        remote_addr: Some("127.0.0.1".into()),
        deliveries: Vec::new(),
        origin: gatehouse_core::EventOrigin::Live,
    }
}

/// A sample event with one pending delivery per route.
pub fn event_with_routes(source: &str, key: &str, routes: &[&str]) -> NewEvent {
    let mut event = sample_event(source, key);
    event.deliveries = routes.iter().map(|r| NewDelivery::pending(Arc::from(*r))).collect();
    event
}

fn claim(owner: &str, now: UnixMillis, limit: u32) -> ClaimRequest {
    ClaimRequest {
        owner: owner.to_string(),
        now,
        lease: Duration::from_secs(30),
        limit,
    }
}

/// A finished attempt with this outcome.
pub fn finished(
    delivery_id: DeliveryId,
    number: u32,
    outcome: AttemptOutcome,
    next: Option<UnixMillis>,
) -> FinishedAttempt {
    FinishedAttempt {
        delivery_id,
        attempt: Attempt {
            number,
            started_at: UnixMillis::now(),
            duration_ms: 12,
            status_code: Some(if outcome == AttemptOutcome::Succeeded { 200 } else { 500 }),
            response_headers: vec![Header {
                name: "content-type".into(),
                value: "text/plain".into(),
            }],
            response_excerpt: Bytes::from_static(b"\xffresponse body"),
            error: (outcome != AttemptOutcome::Succeeded).then(|| "HTTP 500".to_string()),
            outcome,
        },
        next_attempt_at: next,
    }
}

fn later(seconds: i64) -> UnixMillis {
    UnixMillis(UnixMillis::now().0 + seconds * 1000)
}

/// A committed event reads back byte for byte, with every field.
pub async fn ingest_then_read_back(store: &dyn Store) {
    let source = unique_source("readback");
    let mut event = sample_event(&source, "evt_readback");
    // Raw bytes that are not UTF-8 (and a NUL) must survive untouched.
    event.body = Bytes::from_static(b"\xff\x00{\"id\": \"evt_readback\"}\r\n\xfe");
    event.disposition = Disposition::Ignored;
    let outcomes = store.ingest(vec![event.clone()]).await.expect("ingest");
    assert_eq!(outcomes, vec![IngestOutcome::Stored]);

    let stored = store.event(event.id).await.expect("read").expect("event exists");
    assert_eq!(stored.summary.id, event.id);
    assert_eq!(stored.summary.source, source);
    assert_eq!(stored.summary.dedup_key, "evt_readback");
    assert_eq!(stored.summary.provider_event_id.as_deref(), Some("evt_readback"));
    assert_eq!(stored.summary.event_type.as_deref(), Some("payment_intent.succeeded"));
    assert_eq!(stored.summary.disposition, Disposition::Ignored);
    assert_eq!(stored.summary.received_at, event.received_at);
    assert_eq!(stored.summary.duplicates, 0);
    assert_eq!(stored.summary.last_duplicate_at, None);
    assert_eq!(stored.body, event.body);
    assert_eq!(stored.headers, event.headers);
    assert_eq!(stored.verification, event.verification);
    assert_eq!(stored.remote_addr, event.remote_addr);

    assert!(store.event(EventId::new()).await.expect("read").is_none());
}

/// The same (source, dedup key) in a later batch is a duplicate of the
/// first; the same key on another source is a different event.
pub async fn duplicates_across_batches(store: &dyn Store) {
    let source = unique_source("dup");
    let other_source = unique_source("dup-other");
    let first = sample_event(&source, "evt_same");
    assert_eq!(
        store.ingest(vec![first.clone()]).await.expect("ingest"),
        vec![IngestOutcome::Stored]
    );

    let again = sample_event(&source, "evt_same");
    let elsewhere = sample_event(&other_source, "evt_same");
    let outcomes = store.ingest(vec![again.clone(), elsewhere]).await.expect("ingest");
    assert_eq!(
        outcomes,
        vec![IngestOutcome::Duplicate { original: first.id }, IngestOutcome::Stored]
    );
    assert!(
        store.event(again.id).await.expect("read").is_none(),
        "a duplicate is not stored"
    );

    let third = sample_event(&source, "evt_same");
    store.ingest(vec![third.clone()]).await.expect("ingest");
    let original = store.event(first.id).await.expect("read").expect("original");
    assert_eq!(original.summary.duplicates, 2);
    assert_eq!(original.summary.last_duplicate_at, Some(third.received_at));
}

/// Two events with one key in the same batch: the first is stored, the
/// second counted as its duplicate.
pub async fn duplicates_within_a_batch(store: &dyn Store) {
    let source = unique_source("dup-batch");
    let a = sample_event(&source, "evt_twice");
    let b = sample_event(&source, "evt_twice");
    let c = sample_event(&source, "evt_once");
    let outcomes = store.ingest(vec![a.clone(), b, c]).await.expect("ingest");
    assert_eq!(
        outcomes,
        vec![
            IngestOutcome::Stored,
            IngestOutcome::Duplicate { original: a.id },
            IngestOutcome::Stored
        ]
    );
    let stored = store.event(a.id).await.expect("read").expect("stored");
    assert_eq!(stored.summary.duplicates, 1);
}

/// An empty batch is a no-op.
pub async fn empty_batch(store: &dyn Store) {
    assert_eq!(store.ingest(Vec::new()).await.expect("ingest"), Vec::new());
}

/// A large body (1 MiB) commits and reads back intact.
pub async fn large_body(store: &dyn Store) {
    let source = unique_source("large");
    let mut event = sample_event(&source, "evt_large");
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    event.body = Bytes::from(body);
    store.ingest(vec![event.clone()]).await.expect("ingest");
    let stored = store.event(event.id).await.expect("read").expect("stored");
    assert_eq!(stored.body, event.body);
}

/// Events are found by their source and dedup key.
pub async fn lookup_by_dedup_key(store: &dyn Store) {
    let source = unique_source("lookup");
    let event = sample_event(&source, "evt_lookup");
    store.ingest(vec![event.clone()]).await.expect("ingest");
    let found = store
        .event_by_dedup_key(&source, "evt_lookup")
        .await
        .expect("read")
        .expect("found");
    assert_eq!(found.summary.id, event.id);
    assert!(store
        .event_by_dedup_key(&source, "evt_missing")
        .await
        .expect("read")
        .is_none());
    assert!(store
        .event_by_dedup_key("no-such-source", "evt_lookup")
        .await
        .expect("read")
        .is_none());
}

/// The live tail: events committed after it started, oldest first, each
/// once, including a burst larger than one page and an event committed
/// after a newer one.
pub async fn tail_reports_each_commit_once(store: &dyn Store) {
    use crate::tail::EventTail;
    let source = unique_source("tail");
    store
        .ingest(vec![sample_event(&source, "before")])
        .await
        .expect("ingest");
    let mut tail = EventTail::starting_now(store, Some(source.clone()))
        .await
        .expect("tail");
    assert!(
        tail.poll(store).await.expect("poll").is_empty(),
        "what was there is not new"
    );

    let keys = |events: &[gatehouse_core::EventSummary]| -> Vec<String> {
        events
            .iter()
            .map(|e| e.provider_event_id.clone().unwrap_or_default())
            .collect()
    };
    store
        .ingest((1..=3).map(|n| sample_event(&source, &format!("k{n}"))).collect())
        .await
        .expect("ingest");
    assert_eq!(keys(&tail.poll(store).await.expect("poll")), ["k1", "k2", "k3"]);
    assert!(tail.poll(store).await.expect("poll").is_empty(), "each once");

    // Received (and so numbered) half a second ago, committed only now.
    let mut late = sample_event(&source, "late");
    late.id = EventId::first_at(late.id.timestamp_ms() - 500);
    store.ingest(vec![late]).await.expect("ingest");
    assert_eq!(keys(&tail.poll(store).await.expect("poll")), ["late"]);

    // More than a page (1,000) between two polls.
    for chunk in 0..3 {
        store
            .ingest(
                (0..500)
                    .map(|n| sample_event(&source, &format!("burst-{chunk}-{n}")))
                    .collect(),
            )
            .await
            .expect("ingest");
    }
    let burst = tail.poll(store).await.expect("poll");
    assert_eq!(burst.len(), 1500, "every event of the burst");
    assert!(burst.windows(2).all(|pair| pair[0].id < pair[1].id), "oldest first");
    assert!(tail.poll(store).await.expect("poll").is_empty());

    // Another source's events are not this tail's.
    store
        .ingest(vec![sample_event(&unique_source("other"), "elsewhere")])
        .await
        .expect("ingest");
    assert!(tail.poll(store).await.expect("poll").is_empty());
}

/// Lists are newest first, filter by source and type, and page by keyset.
pub async fn list_pages_newest_first(store: &dyn Store) {
    let source = unique_source("list");
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut event = sample_event(&source, &format!("evt_list_{i}"));
        if i % 2 == 0 {
            event.event_type = Some("charge.refunded".into());
        }
        ids.push(event.id);
        store.ingest(vec![event]).await.expect("ingest");
    }
    ids.reverse();

    let first_page = store
        .list_events(&EventQuery {
            source: Some(source.clone()),
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(first_page.iter().map(|e| e.id).collect::<Vec<_>>(), ids[..2]);

    let second_page = store
        .list_events(&EventQuery {
            source: Some(source.clone()),
            before: Some(ids[1]),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(second_page.iter().map(|e| e.id).collect::<Vec<_>>(), ids[2..]);

    let refunds = store
        .list_events(&EventQuery {
            source: Some(source.clone()),
            event_type: Some("charge.refunded".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(refunds.len(), 3);
    assert!(refunds
        .iter()
        .all(|e| e.event_type.as_deref() == Some("charge.refunded")));
}

/// Verification failures are recorded, listed newest first and counted.
pub async fn verification_failures_are_kept(store: &dyn Store) {
    let source = unique_source("failures");
    let failures: Vec<_> = (0..3)
        .map(|i| VerificationFailure {
            source: source.clone(),
            reason: if i == 2 {
                "timestamp_too_old"
            } else {
                "no_matching_signature"
            }
            .into(),
            remote_addr: Some(format!("10.0.0.{i}")),
            at: UnixMillis(1_700_000_000_000 + i),
        })
        .collect();
    store
        .record_verification_failures(failures.clone())
        .await
        .expect("record");
    let listed = store.verification_failures(Some(&source), 10).await.expect("list");
    assert_eq!(listed, failures.iter().rev().cloned().collect::<Vec<_>>());

    let counts = store.source_counts().await.expect("counts");
    let mine = counts.iter().find(|c| c.source == source).expect("source counted");
    assert_eq!(mine.verification_failures, 3);
    assert_eq!(mine.events, 0);
}

/// Counts per source include events and duplicates.
pub async fn counts_per_source(store: &dyn Store) {
    let source = unique_source("counts");
    store
        .ingest(vec![
            sample_event(&source, "a"),
            sample_event(&source, "b"),
            sample_event(&source, "a"),
        ])
        .await
        .expect("ingest");
    let counts = store.source_counts().await.expect("counts");
    let mine = counts.iter().find(|c| c.source == source).expect("source counted");
    assert_eq!((mine.events, mine.duplicates, mine.verification_failures), (2, 1, 0));
}

/// Many concurrent batches all commit, none lost, none doubled.
pub async fn concurrent_batches(store: Arc<dyn Store>) {
    let source = unique_source("concurrent");
    let mut tasks = Vec::new();
    for batch in 0..8 {
        let store = store.clone();
        let source = source.clone();
        tasks.push(tokio::spawn(async move {
            let events: Vec<_> = (0..25)
                .map(|i| sample_event(&source, &format!("evt_{batch}_{i}")))
                .collect();
            store.ingest(events).await
        }));
    }
    for task in tasks {
        let outcomes = task.await.expect("task").expect("ingest");
        assert!(outcomes.iter().all(|o| *o == IngestOutcome::Stored));
    }
    let counts = store.source_counts().await.expect("counts");
    let mine = counts.iter().find(|c| c.source == source).expect("source counted");
    assert_eq!(mine.events, 200);
}

/// The store answers a ping.
pub async fn ping(store: &dyn Store) {
    store.ping().await.expect("ping");
}

/// Deliveries are created with their event, in the same transaction, and
/// not for a duplicate.
pub async fn deliveries_are_created_with_the_event(store: &dyn Store) {
    let source = unique_source("deliveries");
    let event = event_with_routes(&source, "evt_d1", &["to-orders", "to-audit"]);
    store.ingest(vec![event.clone()]).await.expect("ingest");
    let deliveries = store.deliveries_for_event(event.id).await.expect("deliveries");
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[0].id, event.deliveries[0].id);
    assert_eq!(deliveries[0].route, "to-orders");
    assert!(deliveries
        .iter()
        .all(|d| d.state == DeliveryState::Pending && d.attempts == 0));
    assert!(deliveries.iter().all(|d| d.event_id == event.id));
    assert_eq!(deliveries[0].next_attempt_at, event.received_at);

    let duplicate = event_with_routes(&source, "evt_d1", &["to-orders"]);
    store.ingest(vec![duplicate.clone()]).await.expect("ingest");
    assert!(store
        .delivery(duplicate.deliveries[0].id)
        .await
        .expect("read")
        .is_none());
    assert_eq!(store.deliveries_for_event(event.id).await.expect("deliveries").len(), 2);
}

/// Claiming hands out the event with the delivery, leases it, and a
/// success is recorded with its attempt.
pub async fn claim_then_succeed(store: &dyn Store) {
    let source = unique_source("claim");
    let event = event_with_routes(&source, "evt_c1", &["r"]);
    store.ingest(vec![event.clone()]).await.expect("ingest");
    let delivery_id = event.deliveries[0].id;

    let claimed = store
        .claim_deliveries(&claim("worker-a", later(1), 10))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, delivery_id);
    assert_eq!(claimed[0].event.body, event.body);
    assert_eq!(claimed[0].event.summary.id, event.id);
    assert_eq!(
        store.delivery(delivery_id).await.expect("read").expect("exists").state,
        DeliveryState::InFlight
    );
    assert!(store
        .claim_deliveries(&claim("worker-b", later(1), 10))
        .await
        .expect("claim")
        .is_empty());

    let done = finished(delivery_id, 1, AttemptOutcome::Succeeded, None);
    assert_eq!(
        store
            .finish_attempts("worker-a", vec![done.clone()])
            .await
            .expect("finish"),
        vec![true]
    );
    let delivery = store.delivery(delivery_id).await.expect("read").expect("exists");
    assert_eq!(delivery.state, DeliveryState::Succeeded);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(store.attempts(delivery_id).await.expect("attempts"), vec![done.attempt]);
    assert!(store
        .claim_deliveries(&claim("worker-a", later(3600), 10))
        .await
        .expect("claim")
        .is_empty());
}

/// Claims take the oldest due work first, whatever its kind (a retry due
/// earlier than a backlog of pending deliveries goes first), and stop at
/// the limit.
pub async fn claims_take_the_oldest_due_first(store: &dyn Store) {
    let source = unique_source("order");
    let base = UnixMillis::now().0 - 600_000;
    // Inserted newest first, so id order is the reverse of due order.
    let events: Vec<NewEvent> = (0..20)
        .map(|i| {
            let mut event = event_with_routes(&source, &format!("evt_order_{i}"), &["r"]);
            event.received_at = UnixMillis(base + (20 - i) * 1_000);
            event
        })
        .collect();
    let delivery = |i: usize| events[i].deliveries[0].id;
    store.ingest(events.clone()).await.expect("ingest");

    let first = store.claim_deliveries(&claim("w", later(1), 1)).await.expect("claim");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].delivery.id, delivery(19), "the oldest pending first");
    let retry_at = UnixMillis(base + 500);
    let retry = finished(delivery(19), 1, AttemptOutcome::Retry, Some(retry_at));
    assert_eq!(
        store.finish_attempts("w", vec![retry]).await.expect("finish"),
        vec![true]
    );

    let next = store.claim_deliveries(&claim("w", later(1), 3)).await.expect("claim");
    // Which ones are claimed is the contract; the order they come back in is not.
    let mut ids: Vec<DeliveryId> = next.iter().map(|c| c.delivery.id).collect();
    ids.sort();
    let mut expected = vec![delivery(19), delivery(18), delivery(17)];
    expected.sort();
    assert_eq!(
        ids, expected,
        "the retry (due earliest) and then the two oldest pending"
    );
}

/// A retry is not due before its time; a dead delivery keeps its error and
/// can be retried by an operator.
pub async fn retry_then_dead_then_operator_retry(store: &dyn Store) {
    let source = unique_source("retry");
    let event = event_with_routes(&source, "evt_r1", &["r"]);
    store.ingest(vec![event.clone()]).await.expect("ingest");
    let id = event.deliveries[0].id;

    store.claim_deliveries(&claim("w", later(1), 10)).await.expect("claim");
    let retry_at = later(60);
    store
        .finish_attempts("w", vec![finished(id, 1, AttemptOutcome::Retry, Some(retry_at))])
        .await
        .expect("finish");
    let delivery = store.delivery(id).await.expect("read").expect("exists");
    assert_eq!(delivery.state, DeliveryState::Retrying);
    assert_eq!(delivery.next_attempt_at, retry_at);
    assert_eq!(delivery.last_error.as_deref(), Some("HTTP 500"));
    assert!(store
        .claim_deliveries(&claim("w", later(30), 10))
        .await
        .expect("claim")
        .is_empty());
    let again = store.claim_deliveries(&claim("w", later(61), 10)).await.expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.attempts, 1);

    store
        .finish_attempts("w", vec![finished(id, 2, AttemptOutcome::Dead, None)])
        .await
        .expect("finish");
    let delivery = store.delivery(id).await.expect("read").expect("exists");
    assert_eq!((delivery.state, delivery.attempts), (DeliveryState::Dead, 2));
    let dead = store
        .list_deliveries(&DeliveryQuery {
            route: Some("r".into()),
            state: Some(DeliveryState::Dead),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(dead.iter().map(|d| d.id).collect::<Vec<_>>(), vec![id]);

    let now = later(100);
    assert_eq!(
        store
            .retry_deliveries(&[id, DeliveryId::new()], now)
            .await
            .expect("retry"),
        1
    );
    let delivery = store.delivery(id).await.expect("read").expect("exists");
    assert_eq!(
        (delivery.state, delivery.next_attempt_at),
        (DeliveryState::Pending, now)
    );
    assert_eq!(
        store.retry_deliveries(&[id], now).await.expect("retry"),
        0,
        "only dead ones"
    );
    assert_eq!(store.attempts(id).await.expect("attempts").len(), 2);
}

/// An expired lease can be claimed by another worker, and the first
/// worker's late result is then ignored.
pub async fn expired_leases_move_to_another_worker(store: &dyn Store) {
    let source = unique_source("lease");
    let event = event_with_routes(&source, "evt_l1", &["r"]);
    store.ingest(vec![event.clone()]).await.expect("ingest");
    let id = event.deliveries[0].id;
    let start = later(1);
    assert_eq!(
        store
            .claim_deliveries(&claim("a", start, 10))
            .await
            .expect("claim")
            .len(),
        1
    );
    let within = UnixMillis(start.0 + 10_000);
    assert!(store
        .claim_deliveries(&claim("b", within, 10))
        .await
        .expect("claim")
        .is_empty());
    let after = UnixMillis(start.0 + 31_000);
    let taken = store.claim_deliveries(&claim("b", after, 10)).await.expect("claim");
    assert_eq!(taken.len(), 1);

    let late = finished(id, 1, AttemptOutcome::Succeeded, None);
    assert_eq!(
        store.finish_attempts("a", vec![late]).await.expect("finish"),
        vec![false]
    );
    assert_eq!(
        store.delivery(id).await.expect("read").expect("exists").state,
        DeliveryState::InFlight
    );
    let good = finished(id, 1, AttemptOutcome::Succeeded, None);
    assert_eq!(
        store.finish_attempts("b", vec![good]).await.expect("finish"),
        vec![true]
    );
    assert_eq!(
        store.delivery(id).await.expect("read").expect("exists").state,
        DeliveryState::Succeeded
    );
}

/// Paused routes are not claimed; released deliveries are due at once.
pub async fn paused_routes_hold_and_release_returns(store: &dyn Store) {
    let source = unique_source("pause");
    let event = event_with_routes(&source, "evt_p1", &["held", "open"]);
    store.ingest(vec![event.clone()]).await.expect("ingest");
    store.set_route_paused("held", true).await.expect("pause");
    assert_eq!(store.paused_routes().await.expect("paused"), vec!["held".to_string()]);
    let claimed = store.claim_deliveries(&claim("w", later(1), 10)).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|c| c.delivery.route.as_str()).collect::<Vec<_>>(),
        vec!["open"]
    );

    store
        .release_deliveries("w", &[claimed[0].delivery.id])
        .await
        .expect("release");
    assert_eq!(
        store
            .delivery(claimed[0].delivery.id)
            .await
            .expect("read")
            .expect("exists")
            .state,
        DeliveryState::Pending
    );
    store.set_route_paused("held", false).await.expect("resume");
    assert!(store.paused_routes().await.expect("paused").is_empty());
    let claimed = store.claim_deliveries(&claim("w", later(2), 10)).await.expect("claim");
    assert_eq!(claimed.len(), 2);
}

/// Replay adds deliveries to stored events; time ranges select events.
pub async fn replay_adds_deliveries(store: &dyn Store) {
    let source = unique_source("replay");
    let mut events = Vec::new();
    for i in 0..3 {
        let mut event = sample_event(&source, &format!("evt_rp{i}"));
        event.received_at = UnixMillis(1_000_000 + i * 1000);
        events.push(event);
    }
    store.ingest(events.clone()).await.expect("ingest");
    let selected = store
        .events_between(&source, UnixMillis(1_000_000), UnixMillis(1_002_000), None, 10)
        .await
        .expect("between");
    assert_eq!(
        selected.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![events[0].id, events[1].id]
    );
    let page = store
        .events_between(&source, UnixMillis(0), UnixMillis(i64::MAX), Some(events[0].id), 1)
        .await
        .expect("between");
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), vec![events[1].id]);

    let replays = vec![
        (events[0].id, NewDelivery::pending(Arc::from("r"))),
        (events[2].id, NewDelivery::pending(Arc::from("r"))),
        (EventId::new(), NewDelivery::pending(Arc::from("r"))),
    ];
    assert_eq!(store.add_deliveries(replays).await.expect("replay"), 2);
    assert_eq!(
        store
            .deliveries_for_event(events[0].id)
            .await
            .expect("deliveries")
            .len(),
        1
    );
    let counts = store.delivery_counts().await.expect("counts");
    assert!(counts.contains(&(DeliveryState::Pending, 2)), "{counts:?}");
}

/// Concurrent claimers never receive the same delivery, and together
/// receive all of them.
pub async fn concurrent_claims_are_disjoint(store: Arc<dyn Store>) {
    let source = unique_source("disjoint");
    let events: Vec<_> = (0..100)
        .map(|i| event_with_routes(&source, &format!("e{i}"), &["r"]))
        .collect();
    store.ingest(events).await.expect("ingest");
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let claimed = store
                    .claim_deliveries(&claim(&format!("w{worker}"), later(1), 7))
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    break mine;
                }
                mine.extend(claimed.into_iter().map(|c| c.delivery.id));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 100, "every delivery claimed once");
    assert_eq!(unique.len(), 100, "no delivery claimed twice");
}

// --- Console (issue 5) -------------------------------------------------------

/// A new event on `source` whose id was made `ms_ago` milliseconds ago.
fn event_at(source: &str, key: &str, ms_ago: i64) -> NewEvent {
    let mut event = sample_event(source, key);
    let at = UnixMillis::now().0 - ms_ago;
    event.id = EventId::first_at(at as u64);
    event.received_at = UnixMillis(at);
    event
}

fn ids_of(events: &[gatehouse_core::EventSummary]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// Every new event filter, alone and together, newest first.
pub async fn event_filters(store: &dyn Store) {
    let source = unique_source("filters");
    let other = unique_source("filters-other");
    // Oldest first, a second apart, so ids (and times) are distinct.
    let mut a = event_at(&source, "evt_a", 5_000);
    a.body = Bytes::from_static(b"{\"note\":\"needle in a haystack\"}");
    let mut b = event_at(&source, "evt_b", 4_000);
    b.disposition = Disposition::Ignored;
    b.event_type = Some("charge.refunded".into());
    // The provider id differs from the dedup key (a source that dedups on
    // a delivery header, say).
    let mut c = event_at(&source, "hdr-123", 3_000);
    c.provider_event_id = Some("evt_c".into());
    let mut gated = NewDelivery::pending(Arc::from("gated"));
    gated.state = DeliveryState::AwaitingApproval;
    gated.held_by = Some("approval = true".into());
    c.deliveries = vec![gated];
    // The same provider id on another source.
    let d = event_at(&other, "evt_a", 2_000);
    let e = event_with_routes(&source, "evt_e", &["r"]);
    store
        .ingest(vec![a.clone(), b.clone(), c.clone(), d.clone(), e.clone()])
        .await
        .expect("ingest");
    let list = |query: EventQuery| async move {
        ids_of(
            &store
                .list_events(&EventQuery { limit: 100, ..query })
                .await
                .expect("list"),
        )
    };

    assert_eq!(list(EventQuery::default()).await, vec![e.id, d.id, c.id, b.id, a.id]);
    // By provider id: the dedup key, across sources...
    assert_eq!(
        list(EventQuery {
            provider_event_id: Some("evt_a".into()),
            ..Default::default()
        })
        .await,
        vec![d.id, a.id]
    );
    // ...or a provider id that is not the dedup key, or the dedup key that
    // is not the provider id.
    for key in ["evt_c", "hdr-123"] {
        assert_eq!(
            list(EventQuery {
                provider_event_id: Some(key.into()),
                ..Default::default()
            })
            .await,
            vec![c.id],
            "{key}"
        );
    }
    assert_eq!(
        list(EventQuery {
            provider_event_id: Some("evt_a".into()),
            source: Some(other.clone()),
            ..Default::default()
        })
        .await,
        vec![d.id]
    );
    assert!(list(EventQuery {
        provider_event_id: Some("evt_nowhere".into()),
        ..Default::default()
    })
    .await
    .is_empty());

    assert_eq!(
        list(EventQuery {
            disposition: Some(Disposition::Ignored),
            ..Default::default()
        })
        .await,
        vec![b.id]
    );
    assert_eq!(
        list(EventQuery {
            delivery_state: Some(DeliveryState::AwaitingApproval),
            ..Default::default()
        })
        .await,
        vec![c.id]
    );
    assert_eq!(
        list(EventQuery {
            delivery_state: Some(DeliveryState::Pending),
            ..Default::default()
        })
        .await,
        vec![e.id]
    );
    assert!(list(EventQuery {
        delivery_state: Some(DeliveryState::Dead),
        ..Default::default()
    })
    .await
    .is_empty());

    // Time ranges: from is inclusive, to exclusive.
    assert_eq!(
        list(EventQuery {
            received_from: Some(b.received_at),
            received_to: Some(d.received_at),
            ..Default::default()
        })
        .await,
        vec![c.id, b.id]
    );
    assert_eq!(
        list(EventQuery {
            received_to: Some(UnixMillis(b.received_at.0 + 1)),
            source: Some(source.clone()),
            ..Default::default()
        })
        .await,
        vec![b.id, a.id]
    );

    // Body search: bytes, case-sensitive.
    assert_eq!(
        list(EventQuery {
            body_contains: Some("needle in".into()),
            ..Default::default()
        })
        .await,
        vec![a.id]
    );
    assert!(list(EventQuery {
        body_contains: Some("NEEDLE".into()),
        ..Default::default()
    })
    .await
    .is_empty());

    // After: what arrived since, still newest first; with before, a window.
    assert_eq!(
        list(EventQuery {
            after: Some(c.id),
            ..Default::default()
        })
        .await,
        vec![e.id, d.id]
    );
    assert_eq!(
        list(EventQuery {
            after: Some(a.id),
            before: Some(d.id),
            ..Default::default()
        })
        .await,
        vec![c.id, b.id]
    );
    assert_eq!(
        store
            .list_events(&EventQuery {
                after: Some(a.id),
                limit: 2,
                ..Default::default()
            })
            .await
            .expect("list")
            .len(),
        2
    );
    // Everything at once.
    assert_eq!(
        list(EventQuery {
            source: Some(source.clone()),
            event_type: Some("payment_intent.succeeded".into()),
            provider_event_id: Some("evt_a".into()),
            disposition: Some(Disposition::Accepted),
            received_from: Some(a.received_at),
            received_to: Some(e.received_at),
            body_contains: Some("needle".into()),
            ..Default::default()
        })
        .await,
        vec![a.id]
    );
}

/// An approval gate's rule is kept as the held delivery's `last_error`,
/// on ingest and on replay, and lists filter on `last_error`.
pub async fn held_deliveries_keep_their_rule(store: &dyn Store) {
    let source = unique_source("held");
    let mut event = sample_event(&source, "evt_h1");
    let mut gated = NewDelivery::pending(Arc::from("gated"));
    gated.state = DeliveryState::AwaitingApproval;
    gated.held_by = Some("approval_when: .amount > 1000".into());
    event.deliveries = vec![gated.clone(), NewDelivery::pending(Arc::from("open"))];
    store.ingest(vec![event.clone()]).await.expect("ingest");
    let stored = store.deliveries_for_event(event.id).await.expect("read");
    let held = stored.iter().find(|d| d.route == "gated").expect("gated");
    assert_eq!(held.state, DeliveryState::AwaitingApproval);
    assert_eq!(held.last_error.as_deref(), Some("approval_when: .amount > 1000"));
    let open = stored.iter().find(|d| d.route == "open").expect("open");
    assert_eq!(open.last_error, None);

    let mut again = NewDelivery::pending(Arc::from("gated"));
    again.state = DeliveryState::AwaitingApproval;
    again.held_by = Some("approval = true".into());
    assert_eq!(
        store
            .add_deliveries(vec![(event.id, again.clone())])
            .await
            .expect("add"),
        1
    );
    let replayed = store.delivery(again.id).await.expect("read").expect("exists");
    assert_eq!(replayed.last_error.as_deref(), Some("approval = true"));

    let by_error = store
        .list_deliveries(&DeliveryQuery {
            last_error: Some("approval = true".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(by_error.iter().map(|d| d.id).collect::<Vec<_>>(), vec![again.id]);
    let awaiting = store
        .list_deliveries(&DeliveryQuery {
            state: Some(DeliveryState::AwaitingApproval),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        awaiting.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![again.id, gated.id]
    );
    // No error recorded is the empty error, as exception groups show it.
    let none = store
        .list_deliveries(&DeliveryQuery {
            last_error: Some(String::new()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(none.iter().map(|d| d.route.as_str()).collect::<Vec<_>>(), vec!["open"]);
}

/// Approving makes a held delivery due at once (and wakes the workers);
/// rejecting keeps the reason; other states are left alone.
pub async fn approvals_release_or_reject(store: &dyn Store) {
    let source = unique_source("approve");
    let mut events = Vec::new();
    for key in ["evt_ap1", "evt_ap2"] {
        let mut event = sample_event(&source, key);
        let mut gated = NewDelivery::pending(Arc::from("gated"));
        gated.state = DeliveryState::AwaitingApproval;
        gated.held_by = Some("approval = true".into());
        event.deliveries = vec![gated];
        events.push(event);
    }
    let open = event_with_routes(&source, "evt_ap3", &["open"]);
    events.push(open.clone());
    store.ingest(events.clone()).await.expect("ingest");
    let (first, second) = (events[0].deliveries[0].id, events[1].deliveries[0].id);
    let pending = open.deliveries[0].id;

    // Held deliveries are never claimed.
    let claimed = store.claim_deliveries(&claim("w", later(1), 10)).await.expect("claim");
    assert_eq!(claimed.iter().map(|c| c.delivery.id).collect::<Vec<_>>(), vec![pending]);

    // Let earlier wake-ups pass, so the next one is the approval's.
    for _ in 0..3 {
        store.wait_for_deliveries(Duration::from_millis(100)).await;
    }
    let now = later(5);
    let approved = store
        .decide_approval(
            &[first, pending, first, DeliveryId::new()],
            &ApprovalDecision::Approve,
            now,
        )
        .await
        .expect("approve");
    assert_eq!(approved, vec![first]);
    let started = std::time::Instant::now();
    store.wait_for_deliveries(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "approval did not wake the workers"
    );
    let delivery = store.delivery(first).await.expect("read").expect("exists");
    assert_eq!(
        (
            delivery.state,
            delivery.next_attempt_at,
            delivery.last_error,
            delivery.updated_at
        ),
        (DeliveryState::Pending, now, None, now)
    );
    let claimed = store.claim_deliveries(&claim("w", now, 10)).await.expect("claim");
    assert_eq!(claimed.iter().map(|c| c.delivery.id).collect::<Vec<_>>(), vec![first]);

    let rejected = store
        .decide_approval(
            &[second, first],
            &ApprovalDecision::Reject {
                reason: "refund too large".into(),
            },
            now,
        )
        .await
        .expect("reject");
    assert_eq!(rejected, vec![second]);
    let delivery = store.delivery(second).await.expect("read").expect("exists");
    assert_eq!(
        (delivery.state, delivery.last_error.as_deref()),
        (DeliveryState::Rejected, Some("refund too large"))
    );
    assert!(store
        .decide_approval(&[second], &ApprovalDecision::Approve, now)
        .await
        .expect("approve")
        .is_empty());
    assert!(store
        .decide_approval(&[], &ApprovalDecision::Approve, now)
        .await
        .expect("approve")
        .is_empty());
}

/// Dead deliveries group by route and error, largest first; resolving or
/// discarding takes them out as cancelled with the note.
pub async fn exception_queue_groups_and_resolves(store: &dyn Store) {
    let source = unique_source("exceptions");
    let plan = [
        ("r1", "HTTP 500"),
        ("r1", "HTTP 500"),
        ("r1", "HTTP 500"),
        ("r1", "timeout"),
        ("r2", "HTTP 500"),
        ("r2", "HTTP 500"),
    ];
    let mut dead = Vec::new();
    let mut events = Vec::new();
    for (i, (route, _)) in plan.iter().enumerate() {
        let event = event_with_routes(&source, &format!("evt_x{i}"), &[route]);
        dead.push(event.deliveries[0].id);
        events.push(event);
    }
    let alive = event_with_routes(&source, "evt_alive", &["r1"]);
    store.ingest(events).await.expect("ingest");
    let claimed = store.claim_deliveries(&claim("w", later(1), 100)).await.expect("claim");
    assert_eq!(claimed.len(), plan.len());
    let before_death = UnixMillis::now();
    let finished_all: Vec<_> = dead
        .iter()
        .zip(plan)
        .map(|(id, (_, error))| {
            let mut attempt = finished(*id, 1, AttemptOutcome::Dead, None);
            attempt.attempt.error = Some(error.to_string());
            attempt
        })
        .collect();
    store.finish_attempts("w", finished_all).await.expect("finish");
    store.ingest(vec![alive.clone()]).await.expect("ingest");

    let groups = store.exception_groups(10).await.expect("groups");
    let summary: Vec<_> = groups
        .iter()
        .map(|g| (g.route.as_str(), g.last_error.as_str(), g.count))
        .collect();
    assert_eq!(
        summary,
        vec![("r1", "HTTP 500", 3), ("r2", "HTTP 500", 2), ("r1", "timeout", 1)]
    );
    assert!(groups.iter().all(|g| g.latest_at >= before_death), "{groups:?}");
    assert_eq!(store.exception_groups(1).await.expect("groups").len(), 1);

    let now = later(10);
    let resolved = store
        .resolve_deliveries(
            &[dead[0], alive.deliveries[0].id],
            Resolution::Resolved,
            "fixed by hand",
            now,
        )
        .await
        .expect("resolve");
    assert_eq!(resolved, vec![dead[0]]);
    let discarded = store
        .resolve_deliveries(&[dead[3], dead[0]], Resolution::Discarded, "noise", now)
        .await
        .expect("discard");
    assert_eq!(discarded, vec![dead[3]]);
    let first = store.delivery(dead[0]).await.expect("read").expect("exists");
    assert_eq!(
        (first.state, first.last_error.as_deref(), first.updated_at),
        (DeliveryState::Cancelled, Some("resolved: fixed by hand"), now)
    );
    let fourth = store.delivery(dead[3]).await.expect("read").expect("exists");
    assert_eq!(
        (fourth.state, fourth.last_error.as_deref()),
        (DeliveryState::Cancelled, Some("discarded: noise"))
    );
    assert_eq!(
        store
            .delivery(alive.deliveries[0].id)
            .await
            .expect("read")
            .expect("exists")
            .state,
        DeliveryState::Pending
    );

    let groups = store.exception_groups(10).await.expect("groups");
    let summary: Vec<_> = groups
        .iter()
        .map(|g| (g.route.as_str(), g.last_error.as_str(), g.count))
        .collect();
    assert_eq!(summary, vec![("r1", "HTTP 500", 2), ("r2", "HTTP 500", 2)]);
    let group = store
        .list_deliveries(&DeliveryQuery {
            route: Some("r1".into()),
            state: Some(DeliveryState::Dead),
            last_error: Some("HTTP 500".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(group.iter().map(|d| d.id).collect::<Vec<_>>(), vec![dead[2], dead[1]]);
}

/// The overview's charts: events and failures per source and bucket, and
/// attempts per bucket, from `since` on.
pub async fn activity_is_bucketed(store: &dyn Store) {
    let source = unique_source("chart");
    let other = unique_source("chart-other");
    let hour = 3_600_000;
    let mut events: Vec<_> = (0..3)
        .map(|i| event_with_routes(&source, &format!("evt_c{i}"), &["r"]))
        .collect();
    events.push(sample_event(&other, "evt_o1"));
    // Before the window: not counted.
    events.push(event_at(&source, "evt_old", 3 * hour));
    store.ingest(events.clone()).await.expect("ingest");
    let now = UnixMillis::now();
    store
        .record_verification_failures(vec![
            VerificationFailure {
                source: other.clone(),
                reason: "no_matching_signature".into(),
                remote_addr: None,
                at: now,
            },
            VerificationFailure {
                source: other.clone(),
                reason: "no_matching_signature".into(),
                remote_addr: None,
                at: UnixMillis(now.0 - 3 * hour),
            },
        ])
        .await
        .expect("record");

    let since = UnixMillis(now.0 - hour);
    let buckets = store.activity(since, Duration::from_secs(60)).await.expect("activity");
    assert!(buckets.iter().all(|b| b.start.0 % 60_000 == 0), "{buckets:?}");
    assert!(buckets.iter().all(|b| b.start.0 > now.0 - 2 * hour), "{buckets:?}");
    let total = |name: &str| -> (u64, u64) {
        buckets
            .iter()
            .filter(|b| b.source == name)
            .fold((0, 0), |(e, f), b| (e + b.events, f + b.verification_failures))
    };
    assert_eq!(total(&source), (3, 0));
    assert_eq!(total(&other), (1, 1));
    let mut sorted = buckets.clone();
    sorted.sort_by(|x, y| (x.start, &x.source).cmp(&(y.start, &y.source)));
    assert_eq!(buckets, sorted, "by start, then source");
    // Wide buckets: the first is the whole one holding `since`.
    let wide = store
        .activity(since, Duration::from_secs(1800))
        .await
        .expect("activity");
    let mine: Vec<_> = wide.iter().filter(|b| b.source == source).collect();
    assert!(mine.len() <= 2, "{wide:?}");
    assert!(mine.iter().all(|b| b.start.0 % 1_800_000 == 0), "{wide:?}");
    assert_eq!(mine.iter().map(|b| b.events).sum::<u64>(), 3);

    let claimed = store.claim_deliveries(&claim("w", later(1), 10)).await.expect("claim");
    assert_eq!(claimed.len(), 3);
    let outcomes = [AttemptOutcome::Succeeded, AttemptOutcome::Retry, AttemptOutcome::Dead];
    let finished_all = claimed
        .iter()
        .zip(outcomes)
        .map(|(c, outcome)| finished(c.delivery.id, 1, outcome, Some(later(600))))
        .collect();
    store.finish_attempts("w", finished_all).await.expect("finish");
    let attempts = store
        .attempt_activity(since, Duration::from_secs(60))
        .await
        .expect("attempts");
    assert!(attempts.iter().all(|b| b.start.0 % 60_000 == 0), "{attempts:?}");
    assert_eq!(attempts.iter().map(|b| b.succeeded).sum::<u64>(), 1);
    assert_eq!(attempts.iter().map(|b| b.failed).sum::<u64>(), 2);
    assert!(store
        .attempt_activity(later(3600), Duration::from_secs(60))
        .await
        .expect("attempts")
        .is_empty());
}

/// The delivery lag: when the oldest due delivery became due.
pub async fn oldest_due_delivery_is_the_lag(store: &dyn Store) {
    let now = UnixMillis::now();
    assert_eq!(store.oldest_due_delivery(now).await.expect("lag"), None);
    let source = unique_source("lag");
    let mut old = event_with_routes(&source, "evt_lag1", &["r"]);
    old.received_at = UnixMillis(now.0 - 60_000);
    let recent = event_with_routes(&source, "evt_lag2", &["r"]);
    let mut held = sample_event(&source, "evt_lag3");
    let mut gated = NewDelivery::pending(Arc::from("gated"));
    gated.state = DeliveryState::AwaitingApproval;
    held.received_at = UnixMillis(now.0 - 120_000);
    held.deliveries = vec![gated];
    store.ingest(vec![old.clone(), recent, held]).await.expect("ingest");
    assert_eq!(
        store.oldest_due_delivery(later(1)).await.expect("lag"),
        Some(old.received_at)
    );
    assert_eq!(
        store
            .oldest_due_delivery(UnixMillis(now.0 - 90_000))
            .await
            .expect("lag"),
        None
    );
    // A retry due later is not late yet; the claimed one is not due.
    let claimed = store
        .claim_deliveries(&claim("w", UnixMillis(now.0 - 30_000), 1))
        .await
        .expect("claim");
    assert_eq!(claimed[0].delivery.id, old.deliveries[0].id);
    store
        .finish_attempts(
            "w",
            vec![finished(
                old.deliveries[0].id,
                1,
                AttemptOutcome::Retry,
                Some(later(600)),
            )],
        )
        .await
        .expect("finish");
    let lag = store.oldest_due_delivery(later(1)).await.expect("lag").expect("due");
    assert!(lag.0 > old.received_at.0 && lag.0 <= UnixMillis::now().0, "{lag:?}");
    assert_eq!(store.oldest_due_delivery(later(601)).await.expect("lag"), Some(lag));
}

fn new_user(username: &str, role: Role) -> NewUser {
    NewUser {
        id: UserId::new(),
        username: username.into(),
        role,
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${username}"),
        created_at: UnixMillis::now(),
    }
}

fn session_for(user_id: UserId, secret: &str, expires_in_ms: i64) -> Session {
    let now = UnixMillis::now();
    Session {
        token_hash: format!("hash-{secret}"),
        user_id,
        csrf_token: format!("csrf-{secret}"),
        created_at: now,
        expires_at: UnixMillis(now.0 + expires_in_ms),
        remote_addr: Some("192.0.2.7".into()),
    }
}

/// Users are unique by name; sessions end when they expire, when they are
/// deleted, and when their user is disabled or gets a new password.
pub async fn users_and_sessions(store: &dyn Store) {
    let bob = store
        .create_user(new_user("bob", Role::Operator))
        .await
        .expect("create");
    let alice = store.create_user(new_user("alice", Role::Admin)).await.expect("create");
    assert!(!alice.disabled && alice.last_login_at.is_none());
    let taken = store.create_user(new_user("alice", Role::Viewer)).await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");

    assert_eq!(store.user_by_name("alice").await.expect("read"), Some(alice.clone()));
    assert_eq!(store.user(bob.id).await.expect("read"), Some(bob.clone()));
    assert_eq!(store.user_by_name("carol").await.expect("read"), None);
    assert_eq!(store.user(UserId::new()).await.expect("read"), None);
    let names: Vec<_> = store
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, vec!["alice", "bob"]);

    let login = UnixMillis::now();
    store.record_login(alice.id, login).await.expect("login");
    let alice = store.user(alice.id).await.expect("read").expect("exists");
    assert_eq!(alice.last_login_at, Some(login));

    let hour = 3_600_000;
    let first = session_for(alice.id, "one", hour);
    store.create_session(first.clone()).await.expect("session");
    let now = UnixMillis::now();
    let (session, user) = store
        .session(&first.token_hash, now)
        .await
        .expect("read")
        .expect("live");
    assert_eq!((session, user.username.as_str()), (first.clone(), "alice"));
    assert!(store
        .session(&first.token_hash, first.expires_at)
        .await
        .expect("read")
        .is_none());
    assert!(store.session("hash-unknown", now).await.expect("read").is_none());
    assert!(store
        .create_session(session_for(UserId::new(), "ghost", hour))
        .await
        .is_err());

    // Disabling ends the sessions for good, even once enabled again.
    let bobs = session_for(bob.id, "bob", hour);
    store.create_session(bobs.clone()).await.expect("session");
    assert!(store.set_user_disabled("alice", true).await.expect("disable"));
    assert!(
        store
            .user_by_name("alice")
            .await
            .expect("read")
            .expect("exists")
            .disabled
    );
    assert!(store.session(&first.token_hash, now).await.expect("read").is_none());
    let second = session_for(alice.id, "two", hour);
    store.create_session(second.clone()).await.expect("session");
    assert!(
        store.session(&second.token_hash, now).await.expect("read").is_none(),
        "a disabled user's session does not work"
    );
    assert!(store.set_user_disabled("alice", false).await.expect("enable"));
    assert!(store.session(&first.token_hash, now).await.expect("read").is_none());
    assert!(!store.set_user_disabled("carol", true).await.expect("disable"));
    assert!(
        store.session(&bobs.token_hash, now).await.expect("read").is_some(),
        "other users keep theirs"
    );

    // A new password ends them too.
    let third = session_for(bob.id, "three", hour);
    store.create_session(third.clone()).await.expect("session");
    assert!(store.set_user_password("bob", "$argon2id$new").await.expect("password"));
    assert_eq!(
        store.user(bob.id).await.expect("read").expect("exists").password_hash,
        "$argon2id$new"
    );
    assert!(store.session(&bobs.token_hash, now).await.expect("read").is_none());
    assert!(store.session(&third.token_hash, now).await.expect("read").is_none());
    assert!(!store.set_user_password("carol", "x").await.expect("password"));

    let fourth = session_for(bob.id, "four", hour);
    store.create_session(fourth.clone()).await.expect("session");
    assert!(store.session(&fourth.token_hash, now).await.expect("read").is_some());
    store.delete_session(&fourth.token_hash).await.expect("logout");
    assert!(store.session(&fourth.token_hash, now).await.expect("read").is_none());
    store.delete_session(&fourth.token_hash).await.expect("logout twice");
}

fn api_token(name: &str, created_at: UnixMillis, expires_at: Option<UnixMillis>) -> ApiToken {
    ApiToken {
        id: TokenId::new(),
        name: name.into(),
        token_hash: format!("sha256-{name}"),
        role: Role::Operator,
        created_by: "alice".into(),
        created_at,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    }
}

/// Tokens are found by hash whatever their state, note when they were used
/// (at most once a minute), and are revoked at once.
pub async fn api_tokens_are_used_and_revoked(store: &dyn Store) {
    let now = UnixMillis::now();
    let ci = api_token("ci", UnixMillis(now.0 - 2_000), None);
    let deploy = api_token("deploy", UnixMillis(now.0 - 1_000), Some(UnixMillis(now.0 + 3_600_000)));
    let expired = api_token("old", UnixMillis(now.0 - 3_000), Some(UnixMillis(now.0 - 1)));
    for token in [&ci, &deploy, &expired] {
        store.create_token(token.clone()).await.expect("create");
    }
    let mut copy = api_token("copy", now, None);
    copy.token_hash = ci.token_hash.clone();
    assert!(matches!(store.create_token(copy).await, Err(StoreError::Conflict(_))));
    let names: Vec<_> = store
        .list_tokens()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["deploy", "ci", "old"], "newest first");

    let used = store
        .token_by_hash(&ci.token_hash, now)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(used.last_used_at, Some(now));
    assert!(used.is_active(now));
    let soon = UnixMillis(now.0 + 1_000);
    let again = store
        .token_by_hash(&ci.token_hash, soon)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(again.last_used_at, Some(now), "not rewritten within a minute");
    let later_use = UnixMillis(now.0 + 61_000);
    let again = store
        .token_by_hash(&ci.token_hash, later_use)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(again.last_used_at, Some(later_use));
    let listed = store.list_tokens().await.expect("list");
    let stored = listed.iter().find(|t| t.id == ci.id).expect("listed");
    assert_eq!(stored.last_used_at, Some(later_use));
    assert!(store.token_by_hash("sha256-none", now).await.expect("read").is_none());

    assert!(store.revoke_token(ci.id, later_use).await.expect("revoke"));
    assert!(!store.revoke_token(ci.id, later_use).await.expect("revoke twice"));
    assert!(!store.revoke_token(TokenId::new(), now).await.expect("revoke unknown"));
    assert!(!store.revoke_token(expired.id, now).await.expect("revoke expired"));
    let revoked = store
        .token_by_hash(&ci.token_hash, later_use)
        .await
        .expect("read")
        .expect("still found");
    assert_eq!(revoked.revoked_at, Some(later_use));
    assert!(!revoked.is_active(later_use));
    let deploy_now = store
        .token_by_hash(&deploy.token_hash, now)
        .await
        .expect("read")
        .expect("found");
    assert!(deploy_now.is_active(now) && deploy_now.revoked_at.is_none());
}

fn audit(actor: &str, action: &str, object: &str) -> NewAuditEntry {
    NewAuditEntry {
        at: UnixMillis::now(),
        actor: actor.into(),
        action: action.into(),
        object: object.into(),
        remote_addr: Some("192.0.2.1".into()),
        note: Some(format!("{action} by {actor}")),
        details: r#"{"count":1}"#.into(),
    }
}

/// The audit log lists newest first, filters, and pages by sequence.
pub async fn audit_log_filters_and_pages(store: &dyn Store) {
    let entries = [
        audit("user:alice", "delivery.retry", "dlv_1"),
        audit("user:bob", "delivery.approve", "dlv_2"),
        audit("token:tok_1", "route.pause", "route:orders"),
        audit("user:alice", "deliveryx.other", "dlv_1"),
        audit("cli:root", "user.create", "bob"),
    ];
    for entry in &entries {
        store.append_audit(entry.clone()).await.expect("append");
    }
    let list = |query: AuditQuery| async move {
        store
            .list_audit(&AuditQuery { limit: 100, ..query })
            .await
            .expect("list")
    };
    let all = list(AuditQuery::default()).await;
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    assert_eq!(all[0].action, "user.create");
    let last = &all[4];
    let first = &entries[0];
    assert_eq!(
        (
            &last.actor,
            &last.action,
            &last.object,
            &last.remote_addr,
            &last.note,
            &last.details,
            last.at
        ),
        (
            &first.actor,
            &first.action,
            &first.object,
            &first.remote_addr,
            &first.note,
            &first.details,
            first.at
        )
    );

    let actions = |entries: Vec<AuditEntry>| entries.into_iter().map(|e| e.action).collect::<Vec<_>>();
    assert_eq!(
        actions(
            list(AuditQuery {
                actor: Some("user:alice".into()),
                ..Default::default()
            })
            .await
        ),
        vec!["deliveryx.other", "delivery.retry"]
    );
    assert_eq!(
        actions(
            list(AuditQuery {
                action_prefix: Some("delivery.".into()),
                ..Default::default()
            })
            .await
        ),
        vec!["delivery.approve", "delivery.retry"]
    );
    // The prefix is literal text: `_` is not a wildcard.
    assert!(list(AuditQuery {
        action_prefix: Some("route_".into()),
        ..Default::default()
    })
    .await
    .is_empty());
    assert_eq!(
        actions(
            list(AuditQuery {
                object: Some("dlv_1".into()),
                actor: Some("user:alice".into()),
                action_prefix: Some("delivery.retry".into()),
                ..Default::default()
            })
            .await
        ),
        vec!["delivery.retry"]
    );

    let page = store
        .list_audit(&AuditQuery {
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(page.len(), 2);
    let rest = list(AuditQuery {
        before: Some(page[1].seq),
        ..Default::default()
    })
    .await;
    assert_eq!(
        rest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        all[2..].iter().map(|e| e.seq).collect::<Vec<_>>()
    );
}

/// Declares one `#[tokio::test]` per conformance check in the calling crate.
///
/// - `conformance_tests!(make())`: `make()` is an async expression giving a
///   fresh `Arc<dyn Store>`.
/// - `conformance_tests!(optional: make())`: `make()` gives an
///   `Option<Arc<dyn Store>>`; on `None` (a backend whose server is not
///   configured here) each test returns at once, and `make()` should say
///   loudly that it was skipped.
#[macro_export]
macro_rules! conformance_tests {
    (@store (required) $make:expr) => {
        $make.await
    };
    (@store (optional) $make:expr) => {
        match $make.await {
            ::std::option::Option::Some(store) => store,
            ::std::option::Option::None => return,
        }
    };
    (@all $mode:tt $make:expr) => {
        $crate::conformance_tests!(@each $mode $make;
            ingest_then_read_back, duplicates_across_batches, duplicates_within_a_batch,
            empty_batch, large_body, lookup_by_dedup_key, list_pages_newest_first, tail_reports_each_commit_once,
            verification_failures_are_kept, counts_per_source, ping,
            deliveries_are_created_with_the_event, claim_then_succeed, claims_take_the_oldest_due_first,
            retry_then_dead_then_operator_retry,
            expired_leases_move_to_another_worker, paused_routes_hold_and_release_returns, replay_adds_deliveries);
        $crate::conformance_tests!(@each $mode $make;
            event_filters, held_deliveries_keep_their_rule, approvals_release_or_reject,
            exception_queue_groups_and_resolves, activity_is_bucketed, oldest_due_delivery_is_the_lag,
            users_and_sessions, api_tokens_are_used_and_revoked, audit_log_filters_and_pages);
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_batches() {
            let store: ::std::sync::Arc<dyn $crate::Store> = $crate::conformance_tests!(@store $mode $make);
            $crate::conformance::concurrent_batches(store).await;
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_claims_are_disjoint() {
            let store: ::std::sync::Arc<dyn $crate::Store> = $crate::conformance_tests!(@store $mode $make);
            $crate::conformance::concurrent_claims_are_disjoint(store).await;
        }
    };
    (@each $mode:tt $make:expr; $($check:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let store: ::std::sync::Arc<dyn $crate::Store> = $crate::conformance_tests!(@store $mode $make);
                $crate::conformance::$check(&*store).await;
            }
        )+
    };
    (optional: $make:expr) => {
        $crate::conformance_tests!(@all (optional) $make);
    };
    ($make:expr) => {
        $crate::conformance_tests!(@all (required) $make);
    };
}
