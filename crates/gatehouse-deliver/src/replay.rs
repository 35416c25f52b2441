//! Replay and retry at the storage level, for the CLI and the console:
//! new deliveries for stored events (by id, or by source, event-type glob
//! and time range), and dead deliveries made due again (by id, or every
//! dead delivery of a route). Nothing here sends anything: the engine
//! picks the deliveries up like any other.

use std::sync::Arc;

use gatehouse_core::{DeliveryId, DeliveryState, Disposition, EventId, EventSummary, UnixMillis};
use gatehouse_store::{DeliveryQuery, Store, StoreError};

use crate::approval::{ApprovalGate, GateInput};
use crate::config::RouteConfig;
use crate::route::EventTypes;

/// Events read per page of a time range, and deliveries per write.
const PAGE: u32 = 500;

/// Why a replay or retry could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--route` names no configured route.
    #[error("no route is named {0:?}")]
    UnknownRoute(String),
    /// `--type` is not a glob.
    #[error("invalid event-type glob: {0}")]
    InvalidGlob(String),
    /// The time range ends before it starts.
    #[error("the time range is empty: it ends before it starts")]
    EmptyRange,
}

/// One route as replay needs it.
#[derive(Debug)]
struct ReplayRoute {
    name: Arc<str>,
    source: String,
    events: EventTypes,
    /// Replayed deliveries pass the same approval gate as live ones.
    gate: Option<ApprovalGate>,
}

/// Routes as replay needs them: name, source, subscription and gate.
#[derive(Clone, Debug)]
pub struct ReplayRoutes(Vec<Arc<ReplayRoute>>);

impl ReplayRoutes {
    /// From validated route config.
    pub fn new(routes: &[RouteConfig]) -> Result<Self, String> {
        routes
            .iter()
            .map(|route| {
                Ok(Arc::new(ReplayRoute {
                    name: Arc::from(route.name.as_str()),
                    source: route.source.clone(),
                    events: EventTypes::new(&route.events)?,
                    gate: ApprovalGate::from_config(route).map_err(|issue| issue.to_string())?,
                }))
            })
            .collect::<Result<_, String>>()
            .map(Self)
    }

    /// Keeps only the route named `name`.
    pub fn only(&self, name: &str) -> Result<Self, ReplayError> {
        let kept: Vec<_> = self.0.iter().filter(|route| &*route.name == name).cloned().collect();
        if kept.is_empty() {
            return Err(ReplayError::UnknownRoute(name.to_string()));
        }
        Ok(Self(kept))
    }

    /// The routes that take `event`: its source's routes whose globs match
    /// its type. Events that were ignored or pings are delivered by none.
    fn for_event<'a>(&'a self, event: &'a EventSummary) -> impl Iterator<Item = &'a ReplayRoute> + 'a {
        let accepted = event.disposition == Disposition::Accepted;
        self.0
            .iter()
            .filter(move |route| {
                accepted && route.source == event.source && route.events.matches(event.event_type.as_deref())
            })
            .map(|route| &**route)
    }
}

/// Which stored events to replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    /// These events.
    Events(Vec<EventId>),
    /// Events of one source received in `[from, to)`, optionally only the
    /// types matching a glob.
    Range {
        /// The source.
        source: String,
        /// An event-type glob, e.g. `payment_intent.*`.
        event_type: Option<String>,
        /// Start, inclusive.
        from: UnixMillis,
        /// End, exclusive.
        to: UnixMillis,
    },
}

/// How far a replay has got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Events looked at.
    pub events: u64,
    /// Events that no route takes (other routes, other types, ignored,
    /// pings, or ids that do not exist).
    pub unrouted: u64,
    /// Deliveries created, or that would be on a dry run.
    pub deliveries: u64,
    /// Events skipped because retention removed their body (only a
    /// tombstone is left, so there is nothing to send).
    pub pruned: u64,
}

/// Creates a new pending delivery on every route that takes each selected
/// event (`routes`, narrowed with [`ReplayRoutes::only`] for one route). A
/// dry run only counts. `progress` is called after each page.
pub async fn replay(
    store: &dyn Store,
    routes: &ReplayRoutes,
    selection: &Selection,
    dry_run: bool,
    mut progress: impl FnMut(&ReplayReport),
) -> Result<ReplayReport, ReplayError> {
    let mut report = ReplayReport::default();
    match selection {
        Selection::Events(ids) => {
            for chunk in ids.chunks(PAGE as usize) {
                let mut events = Vec::with_capacity(chunk.len());
                for id in chunk {
                    match store.event(*id).await? {
                        Some(event) => events.push(event.summary),
                        None => {
                            report.events += 1;
                            report.unrouted += 1;
                        }
                    }
                }
                add(store, routes, &events, dry_run, &mut report).await?;
                progress(&report);
            }
        }
        Selection::Range {
            source,
            event_type,
            from,
            to,
        } => {
            if to < from {
                return Err(ReplayError::EmptyRange);
            }
            let types = match event_type {
                Some(glob) => EventTypes::new(std::slice::from_ref(glob)).map_err(ReplayError::InvalidGlob)?,
                None => EventTypes::new(&["*".to_string()]).map_err(ReplayError::InvalidGlob)?,
            };
            let mut after = None;
            loop {
                let page = store.events_between(source, *from, *to, after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id);
                let full = page.len() == PAGE as usize;
                let (selected, others): (Vec<_>, Vec<_>) =
                    page.into_iter().partition(|e| types.matches(e.event_type.as_deref()));
                report.events += others.len() as u64;
                report.unrouted += others.len() as u64;
                add(store, routes, &selected, dry_run, &mut report).await?;
                progress(&report);
                if !full {
                    break;
                }
            }
        }
    }
    Ok(report)
}

/// Adds (or counts) the deliveries of one page of events.
async fn add(
    store: &dyn Store,
    routes: &ReplayRoutes,
    events: &[EventSummary],
    dry_run: bool,
    report: &mut ReplayReport,
) -> Result<(), StoreError> {
    let mut deliveries = Vec::new();
    for event in events {
        report.events += 1;
        if event.pruned_at.is_some() {
            report.pruned += 1;
            continue;
        }
        let before = deliveries.len();
        let routes: Vec<&ReplayRoute> = routes.for_event(event).collect();
        // The body is read only when a gate has a program to run on it.
        let body = if routes
            .iter()
            .any(|r| r.gate.as_ref().is_some_and(ApprovalGate::needs_body))
        {
            store
                .event(event.id)
                .await?
                .map(|stored| stored.body)
                .unwrap_or_default()
        } else {
            bytes::Bytes::new()
        };
        let mut input = GateInput::new(&body);
        for route in routes {
            let delivery = ApprovalGate::delivery(route.gate.as_ref(), route.name.clone(), &mut input);
            deliveries.push((event.id, delivery));
        }
        if deliveries.len() == before {
            report.unrouted += 1;
        }
    }
    report.deliveries += if dry_run || deliveries.is_empty() {
        deliveries.len() as u64
    } else {
        store.add_deliveries(deliveries).await?
    };
    Ok(())
}

/// Makes these dead deliveries due again; other states are left alone.
/// Returns how many changed.
pub async fn retry(store: &dyn Store, ids: &[DeliveryId]) -> Result<u64, StoreError> {
    let mut changed = 0;
    for chunk in ids.chunks(PAGE as usize) {
        changed += store.retry_deliveries(chunk, UnixMillis::now()).await?;
    }
    Ok(changed)
}

/// Makes every dead delivery of `route` due again (or, on a dry run, counts
/// them). `progress` is called with the running count after each page.
pub async fn retry_dead_on_route(
    store: &dyn Store,
    route: &str,
    dry_run: bool,
    mut progress: impl FnMut(u64),
) -> Result<u64, StoreError> {
    let mut count = 0;
    let mut before = None;
    loop {
        let page = store
            .list_deliveries(&DeliveryQuery {
                route: Some(route.to_string()),
                state: Some(DeliveryState::Dead),
                before,
                limit: PAGE,
                ..DeliveryQuery::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        let ids: Vec<DeliveryId> = page.iter().map(|d| d.id).collect();
        count += if dry_run {
            ids.len() as u64
        } else {
            store.retry_deliveries(&ids, UnixMillis::now()).await?
        };
        progress(count);
        if page.len() < PAGE as usize {
            break;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use gatehouse_core::{Attempt, AttemptOutcome, FinishedAttempt, NewEvent};
    use gatehouse_store::conformance::sample_event;
    use gatehouse_store::{ClaimRequest, IngestOutcome};
    use gatehouse_store_sqlite::{SqliteOptions, SqliteStore};
    use tempfile::TempDir;

    use super::*;

    /// A real SQLite store in a fresh directory; keep the `TempDir` for as
    /// long as the store is used.
    fn sqlite() -> (TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(&dir.path().join("gatehouse.db"), SqliteOptions::default()).expect("open");
        (dir, store)
    }

    fn routes() -> ReplayRoutes {
        let configs: Vec<RouteConfig> = [
            "name = \"all\"\nsource = \"stripe\"\ndestination = \"d\"",
            "name = \"payments\"\nsource = \"stripe\"\ndestination = \"d\"\nevents = [\"payment_intent.*\"]",
            "name = \"other\"\nsource = \"github\"\ndestination = \"d\"",
        ]
        .iter()
        .map(|text| toml::from_str(text).expect("route"))
        .collect();
        ReplayRoutes::new(&configs).expect("routes")
    }

    fn event(at: i64, event_type: &str, disposition: Disposition) -> NewEvent {
        let mut event = sample_event("stripe", &EventId::new().to_string());
        event.received_at = UnixMillis(at);
        event.event_type = Some(event_type.into());
        event.disposition = disposition;
        event
    }

    async fn stored(store: &dyn Store) -> Vec<EventId> {
        let events = vec![
            event(1_000, "payment_intent.succeeded", Disposition::Accepted),
            event(2_000, "charge.refunded", Disposition::Accepted),
            event(3_000, "payment_intent.created", Disposition::Ignored),
            event(4_000, "payment_intent.failed", Disposition::Accepted),
        ];
        let ids = events.iter().map(|e| e.id).collect();
        let outcomes = store.ingest(events).await.expect("ingest");
        assert!(outcomes.iter().all(|o| *o == IngestOutcome::Stored), "{outcomes:?}");
        ids
    }

    fn range(event_type: Option<&str>, from: i64, to: i64) -> Selection {
        Selection::Range {
            source: "stripe".into(),
            event_type: event_type.map(str::to_string),
            from: UnixMillis(from),
            to: UnixMillis(to),
        }
    }

    #[tokio::test]
    async fn replays_by_id_and_by_range_on_every_matching_route() {
        let (_dir, store) = sqlite();
        let ids = stored(&store).await;
        let routes = routes();

        let by_id = Selection::Events(vec![ids[0], ids[1], ids[2], EventId::new()]);
        let report = replay(&store, &routes, &by_id, false, |_| {}).await.expect("replay");
        assert_eq!(
            report,
            ReplayReport {
                events: 4,
                unrouted: 2,
                deliveries: 3,
                pruned: 0,
            },
            "payment_intent on both stripe routes, the refund on one; ignored and unknown on none"
        );
        let routes_of = |deliveries: Vec<gatehouse_core::Delivery>| {
            let mut names: Vec<_> = deliveries.into_iter().map(|d| d.route).collect();
            names.sort();
            names
        };
        assert_eq!(
            routes_of(store.deliveries_for_event(ids[0]).await.expect("read")),
            vec!["all", "payments"]
        );

        let mut pages = 0;
        let report = replay(
            &store,
            &routes,
            &range(Some("payment_intent.*"), 0, 5_000),
            false,
            |_| pages += 1,
        )
        .await
        .expect("replay");
        assert_eq!(
            report.deliveries, 4,
            "two accepted payment_intent events, two routes each"
        );
        assert_eq!(report.events, 4);
        assert!(pages >= 1);

        let narrowed = routes.only("payments").expect("route exists");
        let report = replay(&store, &narrowed, &range(None, 1_000, 2_001), true, |_| {})
            .await
            .expect("dry run");
        assert_eq!((report.events, report.deliveries), (2, 1));
        assert_eq!(
            store.deliveries_for_event(ids[1]).await.expect("read").len(),
            1,
            "a dry run adds nothing"
        );

        assert!(matches!(routes.only("nope"), Err(ReplayError::UnknownRoute(_))));
        assert!(matches!(
            replay(&store, &routes, &range(None, 5, 1), false, |_| {}).await,
            Err(ReplayError::EmptyRange)
        ));
        assert!(matches!(
            replay(&store, &routes, &range(Some("a["), 0, 1), false, |_| {}).await,
            Err(ReplayError::InvalidGlob(_))
        ));
    }

    #[tokio::test]
    async fn dead_deliveries_are_retried_by_id_and_by_route() {
        let (_dir, store) = sqlite();
        let ids = stored(&store).await;
        replay(&store, &routes(), &Selection::Events(ids.clone()), false, |_| {})
            .await
            .expect("replay");
        let claimed = store
            .claim_deliveries(&ClaimRequest {
                owner: "w".into(),
                now: UnixMillis(i64::MAX / 2),
                lease: std::time::Duration::from_secs(30),
                limit: 100,
            })
            .await
            .expect("claim");
        let finished = claimed
            .iter()
            .map(|c| FinishedAttempt {
                delivery_id: c.delivery.id,
                attempt: Attempt {
                    number: 1,
                    started_at: UnixMillis::now(),
                    duration_ms: 1,
                    status_code: Some(400),
                    response_headers: Vec::new(),
                    response_excerpt: Bytes::new(),
                    error: Some("HTTP 400".into()),
                    outcome: AttemptOutcome::Dead,
                },
                next_attempt_at: None,
            })
            .collect();
        store.finish_attempts("w", finished).await.expect("finish");
        let dead_on = |route: &str| {
            claimed
                .iter()
                .filter(|c| c.delivery.route == route)
                .map(|c| c.delivery.id)
                .collect::<Vec<_>>()
        };
        let all = dead_on("all");
        assert_eq!(all.len(), 3);

        assert_eq!(retry(&store, &all[..1]).await.expect("retry"), 1);
        assert_eq!(retry(&store, &all[..1]).await.expect("retry"), 0, "no longer dead");
        assert_eq!(
            retry_dead_on_route(&store, "all", true, |_| {}).await.expect("count"),
            2
        );
        let mut seen = 0;
        assert_eq!(
            retry_dead_on_route(&store, "all", false, |n| seen = n)
                .await
                .expect("retry"),
            2
        );
        assert_eq!(seen, 2);
        for id in all {
            assert_eq!(
                store.delivery(id).await.expect("read").expect("exists").state,
                DeliveryState::Pending
            );
        }
        assert_eq!(
            store
                .delivery(dead_on("payments")[0])
                .await
                .expect("read")
                .expect("exists")
                .state,
            DeliveryState::Dead,
            "other routes are left alone"
        );
    }
}
