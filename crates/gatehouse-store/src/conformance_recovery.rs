//! The recovery part of the conformance suite (issue 6): backfill lookups,
//! per-source state, enrichment, event origin and retention. Each check is
//! an async function over a store; [`crate::recovery_conformance_tests!`]
//! turns them into `#[tokio::test]`s in a backend's crate.

use std::time::Duration;

use bytes::Bytes;

use gatehouse_core::{AttemptOutcome, DeliveryId, DeliveryState, EventOrigin, UnixMillis};

use crate::conformance::{event_with_routes, finished, sample_event, unique_source};
use crate::{ClaimRequest, Enrichment, EventQuery, IngestOutcome, PruneReport, Store};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn days_ago(days: i64) -> UnixMillis {
    UnixMillis(UnixMillis::now().0 - days * DAY_MS)
}

/// Claims every due delivery as `owner`.
async fn claim_all(store: &dyn Store, owner: &str) -> Vec<DeliveryId> {
    store
        .claim_deliveries(&ClaimRequest {
            owner: owner.to_string(),
            now: UnixMillis(UnixMillis::now().0 + 1000),
            lease: Duration::from_secs(30),
            limit: 100,
        })
        .await
        .expect("claim")
        .into_iter()
        .map(|claimed| claimed.delivery.id)
        .collect()
}

/// Backfill asks which keys are stored: only those of that source, in the
/// order asked, each once.
pub async fn existing_dedup_keys_answers_per_source(store: &dyn Store) {
    let source = unique_source("existing");
    let other = unique_source("existing-other");
    store
        .ingest(vec![
            sample_event(&source, "evt_a"),
            sample_event(&source, "evt_b"),
            sample_event(&other, "evt_c"),
        ])
        .await
        .expect("ingest");
    let asked: Vec<String> = ["evt_b", "evt_c", "evt_a", "evt_b", "evt_zzz"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(
        store.existing_dedup_keys(&source, &asked).await.expect("lookup"),
        vec!["evt_b".to_string(), "evt_a".to_string()]
    );
    assert_eq!(
        store.existing_dedup_keys(&other, &asked).await.expect("lookup"),
        vec!["evt_c".to_string()]
    );
    assert!(store
        .existing_dedup_keys(&source, &[])
        .await
        .expect("lookup")
        .is_empty());
    assert!(store
        .existing_dedup_keys(&unique_source("nothing"), &asked)
        .await
        .expect("lookup")
        .is_empty());
}

/// Source state is kept per (source, key) and replaced by a later put.
pub async fn source_state_round_trips(store: &dyn Store) {
    let source = unique_source("state");
    let other = unique_source("state-other");
    assert_eq!(store.source_state(&source, "etag").await.expect("read"), None);
    store
        .put_source_state(&source, "etag", r#"{"etag":"\"v1\""}"#)
        .await
        .expect("put");
    store.put_source_state(&other, "etag", "other").await.expect("put");
    store.put_source_state(&source, "items", "{}").await.expect("put");
    assert_eq!(
        store.source_state(&source, "etag").await.expect("read").as_deref(),
        Some(r#"{"etag":"\"v1\""}"#)
    );
    store
        .put_source_state(&source, "etag", r#"{"etag":"\"v2\""}"#)
        .await
        .expect("replace");
    assert_eq!(
        store.source_state(&source, "etag").await.expect("read").as_deref(),
        Some(r#"{"etag":"\"v2\""}"#)
    );
    assert_eq!(
        store.source_state(&source, "items").await.expect("read").as_deref(),
        Some("{}")
    );
    assert_eq!(
        store.source_state(&other, "etag").await.expect("read").as_deref(),
        Some("other")
    );
    assert_eq!(store.source_state(&other, "items").await.expect("read"), None);
}

/// The latest enrichment per delivery reads back byte for byte.
pub async fn enrichment_round_trips(store: &dyn Store) {
    let event = event_with_routes(&unique_source("enrich"), "evt_enrich", &["r"]);
    store.ingest(vec![event.clone()]).await.expect("ingest");
    let delivery = event.deliveries[0].id;
    assert_eq!(store.enrichment(delivery).await.expect("read"), None);

    let first = Enrichment {
        delivery_id: delivery,
        fetched_at: UnixMillis(1_700_000_000_000),
        url: "http://127.0.0.1:9/v1/charges/ch_1".into(),
        status_code: Some(500),
        body: Bytes::from_static(b"\xff\x00oops"),
        error: Some("HTTP 500".into()),
    };
    store.save_enrichment(first.clone()).await.expect("save");
    assert_eq!(store.enrichment(delivery).await.expect("read"), Some(first));

    let second = Enrichment {
        delivery_id: delivery,
        fetched_at: UnixMillis(1_700_000_001_000),
        url: "http://127.0.0.1:9/v1/charges/ch_1".into(),
        status_code: None,
        body: Bytes::new(),
        error: None,
    };
    store.save_enrichment(second.clone()).await.expect("replace");
    assert_eq!(store.enrichment(delivery).await.expect("read"), Some(second));
    assert_eq!(store.enrichment(DeliveryId::new()).await.expect("read"), None);
}

/// The origin an event was ingested with reads back everywhere.
pub async fn origin_is_kept(store: &dyn Store) {
    let source = unique_source("origin");
    let mut polled = sample_event(&source, "item-1@3");
    polled.origin = EventOrigin::Poll;
    let mut backfilled = sample_event(&source, "evt_back");
    backfilled.origin = EventOrigin::Backfill;
    let live = sample_event(&source, "evt_live");
    store
        .ingest(vec![polled.clone(), backfilled.clone(), live.clone()])
        .await
        .expect("ingest");
    for (event, origin) in [
        (&polled, EventOrigin::Poll),
        (&backfilled, EventOrigin::Backfill),
        (&live, EventOrigin::Live),
    ] {
        let stored = store.event(event.id).await.expect("read").expect("exists");
        assert_eq!(stored.summary.origin, origin);
        assert_eq!(stored.summary.pruned_at, None);
    }
    let listed = store
        .list_events(&EventQuery {
            source: Some(source.clone()),
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .expect("list");
    let origins: Vec<_> = listed.iter().map(|e| (e.dedup_key.as_str(), e.origin)).collect();
    assert_eq!(
        origins,
        vec![
            ("evt_live", EventOrigin::Live),
            ("evt_back", EventOrigin::Backfill),
            ("item-1@3", EventOrigin::Poll),
        ]
    );
}

/// Retention removes bodies, headers, attempts and enrichments of old
/// events whose deliveries are all final, keeps the rest as a tombstone,
/// and leaves young events, events still being delivered and other
/// sources alone. A dry run counts the same without changing anything.
pub async fn prune_keeps_tombstones(store: &dyn Store) {
    let source = unique_source("prune");
    let other = unique_source("prune-other");

    // An old event delivered (one attempt, an enrichment).
    let mut done = event_with_routes(&source, "evt_done", &["r"]);
    done.received_at = days_ago(40);
    store.ingest(vec![done.clone()]).await.expect("ingest");
    let done_delivery = done.deliveries[0].id;
    assert_eq!(claim_all(store, "w").await, vec![done_delivery]);
    assert_eq!(
        store
            .finish_attempts("w", vec![finished(done_delivery, 1, AttemptOutcome::Succeeded, None)])
            .await
            .expect("finish"),
        vec![true]
    );
    store
        .save_enrichment(Enrichment {
            delivery_id: done_delivery,
            fetched_at: UnixMillis::now(),
            url: "http://127.0.0.1:9/x".into(),
            status_code: Some(200),
            body: Bytes::from_static(b"{}"),
            error: None,
        })
        .await
        .expect("enrich");

    // An old event without deliveries, an old one still pending, a young
    // one, and an old one on another source.
    let mut bare = sample_event(&source, "evt_bare");
    bare.received_at = days_ago(35);
    let mut pending = event_with_routes(&source, "evt_pending", &["r"]);
    pending.received_at = days_ago(39);
    let young = sample_event(&source, "evt_young");
    let mut elsewhere = sample_event(&other, "evt_elsewhere");
    elsewhere.received_at = days_ago(40);
    store
        .ingest(vec![bare.clone(), pending.clone(), young.clone(), elsewhere.clone()])
        .await
        .expect("ingest");

    let cutoff = days_ago(30);
    let now = UnixMillis::now();
    let dry = store
        .prune_events(&source, cutoff, 1, now, true)
        .await
        .expect("dry run");
    assert_eq!(dry, PruneReport { events: 2, attempts: 1 });
    let untouched = store.event(done.id).await.expect("read").expect("exists");
    assert_eq!(untouched.body, done.body, "a dry run changes nothing");
    assert_eq!(untouched.summary.pruned_at, None);
    assert_eq!(store.attempts(done_delivery).await.expect("attempts").len(), 1);

    // Batches of one, oldest first, until nothing is left.
    let first = store.prune_events(&source, cutoff, 1, now, false).await.expect("prune");
    assert_eq!(first, PruneReport { events: 1, attempts: 1 });
    let second = store.prune_events(&source, cutoff, 1, now, false).await.expect("prune");
    assert_eq!(second, PruneReport { events: 1, attempts: 0 });
    let third = store
        .prune_events(&source, cutoff, 100, now, false)
        .await
        .expect("prune");
    assert_eq!(third, PruneReport::default());
    assert_eq!(
        store
            .prune_events(&source, cutoff, 1, now, true)
            .await
            .expect("dry run"),
        PruneReport::default()
    );

    // The tombstone: still found by id and by dedup key, fields intact,
    // body and headers gone, its delivery's final state kept.
    for event in [&done, &bare] {
        let stone = store.event(event.id).await.expect("read").expect("tombstone kept");
        assert_eq!(stone.summary.pruned_at, Some(now));
        assert!(stone.body.is_empty());
        assert!(stone.headers.is_empty());
        assert_eq!(stone.summary.dedup_key, event.dedup_key);
        assert_eq!(stone.summary.event_type, event.event_type);
        assert_eq!(stone.summary.received_at, event.received_at);
        let by_key = store
            .event_by_dedup_key(&source, &event.dedup_key)
            .await
            .expect("lookup")
            .expect("still answers");
        assert_eq!(by_key.summary.id, event.id);
    }
    // "Was evt_done processed?" by provider id, as the console asks it.
    let by_provider_id = store
        .list_events(&EventQuery {
            provider_event_id: Some("evt_done".into()),
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .expect("list by provider id");
    assert_eq!(by_provider_id.len(), 1);
    assert_eq!(by_provider_id[0].id, done.id);
    assert_eq!(by_provider_id[0].pruned_at, Some(now));
    assert!(store.attempts(done_delivery).await.expect("attempts").is_empty());
    assert_eq!(store.enrichment(done_delivery).await.expect("read"), None);
    let deliveries = store.deliveries_for_event(done.id).await.expect("deliveries");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].state, DeliveryState::Succeeded);

    // The listing shows which are tombstones.
    let listed = store
        .list_events(&EventQuery {
            source: Some(source.clone()),
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .expect("list");
    let pruned: Vec<_> = listed
        .iter()
        .map(|e| (e.dedup_key.as_str(), e.pruned_at.is_some()))
        .collect();
    assert_eq!(
        pruned,
        vec![
            ("evt_young", false),
            ("evt_pending", false),
            ("evt_bare", true),
            ("evt_done", true),
        ]
    );

    // Left alone: still being delivered, too young, another source.
    for event in [&pending, &young, &elsewhere] {
        let kept = store.event(event.id).await.expect("read").expect("exists");
        assert_eq!(kept.body, event.body, "{}", event.dedup_key);
        assert_eq!(kept.headers, event.headers);
        assert_eq!(kept.summary.pruned_at, None);
    }

    // Dedup still holds against a tombstone: the provider's retry of a
    // pruned event is a duplicate, not a new event.
    let mut again = sample_event(&source, "evt_done");
    again.received_at = now;
    assert_eq!(
        store.ingest(vec![again]).await.expect("ingest"),
        vec![IngestOutcome::Duplicate { original: done.id }]
    );
    assert_eq!(
        store
            .existing_dedup_keys(&source, &["evt_done".to_string(), "evt_bare".to_string()])
            .await
            .expect("lookup"),
        vec!["evt_done".to_string(), "evt_bare".to_string()]
    );

    // Once the pending delivery is final, its event goes too.
    let claimed = claim_all(store, "w2").await;
    assert_eq!(claimed, vec![pending.deliveries[0].id]);
    store
        .finish_attempts("w2", vec![finished(claimed[0], 1, AttemptOutcome::Dead, None)])
        .await
        .expect("finish");
    assert_eq!(
        store
            .prune_events(&source, cutoff, 100, now, false)
            .await
            .expect("prune"),
        PruneReport { events: 1, attempts: 1 }
    );
}

/// Declares one `#[tokio::test]` per recovery conformance check, like
/// [`crate::conformance_tests!`]: `recovery_conformance_tests!(make())` or
/// `recovery_conformance_tests!(optional: make())`.
#[macro_export]
macro_rules! recovery_conformance_tests {
    (@store (required) $make:expr) => {
        $make.await
    };
    (@store (optional) $make:expr) => {
        match $make.await {
            ::std::option::Option::Some(store) => store,
            ::std::option::Option::None => return,
        }
    };
    (@each $mode:tt $make:expr; $($check:ident),+) => {
        mod recovery_conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let store: ::std::sync::Arc<dyn $crate::Store> = $crate::recovery_conformance_tests!(@store $mode $make);
                    $crate::conformance_recovery::$check(&*store).await;
                }
            )+
        }
    };
    (@all $mode:tt $make:expr) => {
        $crate::recovery_conformance_tests!(@each $mode $make;
            existing_dedup_keys_answers_per_source, source_state_round_trips, enrichment_round_trips,
            origin_is_kept, prune_keeps_tombstones);
    };
    (optional: $make:expr) => {
        $crate::recovery_conformance_tests!(@all (optional) $make);
    };
    ($make:expr) => {
        $crate::recovery_conformance_tests!(@all (required) $make);
    };
}
