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

use crate::{ClaimRequest, DeliveryQuery, EventQuery, IngestOutcome, Store};

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
            empty_batch, large_body, lookup_by_dedup_key, list_pages_newest_first,
            verification_failures_are_kept, counts_per_source, ping,
            deliveries_are_created_with_the_event, claim_then_succeed, retry_then_dead_then_operator_retry,
            expired_leases_move_to_another_worker, paused_routes_hold_and_release_returns, replay_adds_deliveries);
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
