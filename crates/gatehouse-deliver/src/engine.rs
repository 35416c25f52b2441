//! The engine: a dispatcher loop that claims due deliveries up to the free
//! capacity, one task per attempt, and the finisher that records results.
//!
//! ```text
//! store ──claim (lease)──▶ dispatcher ──spawn──▶ attempt ─▶ destination
//!   ▲                          ▲  wait: ingest/replay wake-up, NOTIFY,         │
//!   │                          │  a retry coming due, or the poll interval    │
//!   └───── finish_attempts ◀── finisher ◀───────────── verdict ◀──────────────┘
//! ```
//!
//! Shutdown ([`EngineHandle::shutdown`]): the dispatcher stops claiming;
//! attempts still waiting for a destination slot end at once; attempts
//! already sending get `delivery.shutdown_grace` and are then cut off; every
//! delivery claimed but not attempted is released (due again at once, for
//! this process after a restart or for another one); the finisher records
//! what finished.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;

use gatehouse_core::{DeliveryId, UnixMillis};
use gatehouse_store::{ClaimRequest, Store, StoreError};

use crate::attempt::{self, Ending, Shared};
use crate::config::DeliveryConfig;
use crate::finisher::{Finisher, WakeHint};
use crate::route::RouteTable;

/// Most deliveries claimed in one call.
const MAX_CLAIM: usize = 512;

/// Why an engine cannot run with this config.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A lease no longer than an attempt could expire mid-attempt and let a
    /// second worker send the same delivery again.
    #[error(
        "delivery.lease ({lease:?}) must be longer than the longest destination timeout \
         ({timeout:?}, destination {destination:?}): a delivery could otherwise be claimed \
         again while its attempt is still running"
    )]
    LeaseTooShort {
        /// `delivery.lease`.
        lease: Duration,
        /// The longest timeout.
        timeout: Duration,
        /// The destination that has it.
        destination: String,
    },
    /// `delivery.workers` is zero.
    #[error("delivery.workers must be at least 1")]
    NoWorkers,
}

/// Checks the `[delivery]` settings against the destinations' timeouts.
pub fn check(config: &DeliveryConfig, table: &RouteTable) -> Result<(), EngineError> {
    if config.workers == 0 {
        return Err(EngineError::NoWorkers);
    }
    if let Some(slowest) = table.slowest_destination() {
        if config.lease <= slowest.timeout {
            return Err(EngineError::LeaseTooShort {
                lease: config.lease,
                timeout: slowest.timeout,
                destination: slowest.name.to_string(),
            });
        }
    }
    Ok(())
}

/// A name for this process's leases: host, process id and a random part,
/// so a restarted process never mistakes an old lease for its own.
pub fn default_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gatehouse".into());
    format!("{host}:{}:{:08x}", std::process::id(), rand::random::<u32>())
}

/// A delivery engine, built and checked, not yet running.
pub struct Engine {
    store: Arc<dyn Store>,
    table: Arc<RouteTable>,
    config: DeliveryConfig,
    owner: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("owner", &self.owner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over `store` running `table`'s routes; `owner` names this
    /// process's leases (see [`default_owner`]).
    pub fn new(
        store: Arc<dyn Store>,
        table: RouteTable,
        config: DeliveryConfig,
        owner: impl Into<String>,
    ) -> Result<Self, EngineError> {
        check(&config, &table)?;
        Ok(Self {
            store,
            table: Arc::new(table),
            config,
            owner: owner.into(),
        })
    }

    /// Pauses the routes whose config says `paused = true` (a route an
    /// operator paused stays paused; `paused = false` resumes nothing), then
    /// starts claiming.
    pub async fn start(self) -> Result<EngineHandle, StoreError> {
        for route in self.table.routes().filter(|r| r.paused) {
            self.store.set_route_paused(&route.name, true).await?;
            tracing::info!(route = %route.name, "Route paused by its config; deliveries are held until it is resumed.");
        }
        let wake = Arc::new(WakeHint::default());
        let (finisher, finisher_task) = Finisher::start(
            self.store.clone(),
            self.owner.clone(),
            self.config.workers,
            wake.clone(),
        );
        let (stop, stopping) = watch::channel(false);
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            table: self.table.clone(),
            finisher,
            lease: self.config.lease,
            stopping: stopping.clone(),
        });
        let grace = self.config.shutdown_grace;
        let dispatcher = Dispatcher {
            store: self.store,
            config: self.config,
            owner: self.owner,
            shared,
            wake,
            stopping,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            releases: Vec::new(),
        };
        tracing::info!(owner = %dispatcher.owner, workers = dispatcher.config.workers, "Delivery engine started.");
        Ok(EngineHandle {
            stop,
            dispatcher: tokio::spawn(dispatcher.run()),
            finisher: finisher_task,
            grace,
        })
    }
}

/// A running engine. Dropping it stops the engine too, but without waiting
/// for it: call [`EngineHandle::shutdown`].
#[derive(Debug)]
pub struct EngineHandle {
    stop: watch::Sender<bool>,
    dispatcher: JoinHandle<()>,
    finisher: JoinHandle<()>,
    grace: Duration,
}

impl EngineHandle {
    /// Stops claiming, lets attempts in progress finish within the grace
    /// period, releases the deliveries that were not attempted, and waits
    /// for the results to be recorded.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.dispatcher.await {
            tracing::error!(%error, "The delivery dispatcher failed.");
        }
        // Every attempt task has ended and the dispatcher is gone, so the
        // finisher's queue is closed: it records what is left and stops.
        let mut finisher = self.finisher;
        match tokio::time::timeout(self.grace, &mut finisher).await {
            Ok(_) => tracing::info!("Delivery engine stopped; every finished attempt is recorded."),
            Err(_) => {
                finisher.abort();
                tracing::warn!("Could not record every finished attempt in time; those deliveries will be attempted again after their lease expires.");
            }
        }
    }
}

/// The claim loop and the attempt tasks it owns.
struct Dispatcher {
    store: Arc<dyn Store>,
    config: DeliveryConfig,
    owner: String,
    shared: Arc<Shared>,
    wake: Arc<WakeHint>,
    stopping: watch::Receiver<bool>,
    tasks: JoinSet<Ending>,
    /// Which delivery each task attempts, to release it if the task is cut off.
    running: HashMap<tokio::task::Id, DeliveryId>,
    /// Deliveries to give back to the store.
    releases: Vec<DeliveryId>,
}

impl Dispatcher {
    async fn run(mut self) {
        let workers = self.config.workers;
        loop {
            while let Some(done) = self.tasks.try_join_next_with_id() {
                self.reap(done);
            }
            let released = self.release().await;
            // A dropped handle stops the engine like `shutdown` does.
            if *self.stopping.borrow() || self.stopping.has_changed().is_err() {
                break;
            }
            if released {
                // Deliveries that waited too long for a busy destination are
                // due again at once: claiming them straight back would spin.
                // Wait for an attempt to end (or the poll interval) first.
                tokio::select! {
                    _ = self.stopping.changed() => continue,
                    Some(done) = self.tasks.join_next_with_id() => self.reap(done),
                    () = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
            let free = workers.saturating_sub(self.tasks.len());
            let mut more_due = false;
            if free > 0 {
                let limit = free.min(MAX_CLAIM);
                match self.claim(limit).await {
                    Ok(claimed) => more_due = claimed == limit,
                    Err(error) => {
                        tracing::warn!(%error, "Cannot claim deliveries; trying again.");
                        self.pause(self.config.poll_interval).await;
                        continue;
                    }
                }
            }
            if more_due && self.tasks.len() < workers {
                continue;
            }
            let at_capacity = self.tasks.len() >= workers;
            let wait = self.wake.wait_time(UnixMillis::now(), self.config.poll_interval);
            tokio::select! {
                _ = self.stopping.changed() => {}
                Some(done) = self.tasks.join_next_with_id(), if at_capacity => self.reap(done),
                () = self.store.wait_for_deliveries(wait), if !at_capacity => {}
                () = self.wake.changed(), if !at_capacity => {}
            }
        }
        self.drain().await;
    }

    /// Claims up to `limit` deliveries and starts their attempts; returns
    /// how many it got.
    async fn claim(&mut self, limit: usize) -> Result<usize, StoreError> {
        let now = UnixMillis::now();
        let request = ClaimRequest {
            owner: self.owner.clone(),
            now,
            lease: self.config.lease,
            // `limit` is at most MAX_CLAIM.
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        let claimed = self.store.claim_deliveries(&request).await?;
        self.wake.claimed(now);
        let count = claimed.len();
        let at = Instant::now();
        for delivery in claimed {
            let id = delivery.delivery.id;
            let handle = self.tasks.spawn(attempt::run(self.shared.clone(), delivery, at));
            self.running.insert(handle.id(), id);
        }
        Ok(count)
    }

    /// Books an ended attempt task.
    fn reap(&mut self, done: Result<(tokio::task::Id, Ending), JoinError>) {
        match done {
            Ok((id, Ending::Finished)) => {
                self.running.remove(&id);
            }
            Ok((id, Ending::Released(delivery))) => {
                self.running.remove(&id);
                self.releases.push(delivery);
            }
            Err(error) => {
                let delivery = self.running.remove(&error.id());
                if error.is_panic() {
                    // Not released: a delivery that crashes its attempt would
                    // be claimed again at once. Its lease expires instead.
                    tracing::error!(delivery_id = ?delivery, "An attempt panicked; the delivery will be tried again when its lease expires.");
                } else if let Some(delivery) = delivery {
                    self.releases.push(delivery);
                }
            }
        }
    }

    /// Gives the collected deliveries back to the store; returns whether
    /// there were any.
    async fn release(&mut self) -> bool {
        if self.releases.is_empty() {
            return false;
        }
        let ids = std::mem::take(&mut self.releases);
        match self.store.release_deliveries(&self.owner, &ids).await {
            Ok(()) => tracing::debug!(count = ids.len(), "Released deliveries."),
            Err(error) => {
                tracing::warn!(%error, count = ids.len(), "Cannot release deliveries; they are claimed again when their lease expires.")
            }
        }
        true
    }

    /// Sleeps for `wait`, or less if the engine is stopping.
    async fn pause(&mut self, wait: Duration) {
        tokio::select! {
            _ = self.stopping.changed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    /// After the stop signal: waits for the attempts (those waiting for a
    /// slot end at once, those sending get the grace period), cuts off the
    /// rest, and releases every delivery not attempted.
    async fn drain(mut self) {
        let in_flight = self.tasks.len();
        if in_flight > 0 {
            tracing::info!(in_flight, grace = ?self.config.shutdown_grace, "Stopping deliveries: letting attempts in progress finish.");
        }
        let deadline = Instant::now() + self.config.shutdown_grace;
        loop {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(done)) => self.reap(done),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        cut_off = self.tasks.len(),
                        "Attempts still running after the grace period are cut off and released."
                    );
                    self.tasks.abort_all();
                    while let Some(done) = self.tasks.join_next_with_id().await {
                        self.reap(done);
                    }
                    break;
                }
            }
        }
        self.release().await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use async_trait::async_trait;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tempfile::TempDir;
    use tokio::net::TcpListener;

    use gatehouse_core::{ApiToken, AuditEntry, NewAuditEntry, NewUser, Session, TokenId, User, UserId};
    use gatehouse_core::{
        Attempt, AttemptOutcome, Delivery, DeliveryState, EventId, EventSummary, FinishedAttempt, NewDelivery,
        NewEvent, StoredEvent, VerificationFailure,
    };
    use gatehouse_store::conformance::event_with_routes;
    use gatehouse_store::{
        ActivityBucket, ApprovalDecision, AttemptBucket, AuditQuery, ClaimedDelivery, DeliveryQuery, Enrichment,
        EventQuery, ExceptionGroup, IngestOutcome, PruneReport, Resolution, SourceCounts,
    };
    use gatehouse_store_sqlite::{SqliteOptions, SqliteStore};

    use super::*;
    use crate::config::RouteConfig;
    use crate::destination::ResolvedDestination;

    /// A real SQLite store in a fresh directory; keep the `TempDir` for as
    /// long as the store is used.
    fn sqlite() -> (TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = SqliteStore::open(&dir.path().join("gatehouse.db"), SqliteOptions::default()).expect("open");
        (dir, store)
    }

    /// The real store, counting what the engine asks of it: `finish_attempts`
    /// calls (each optionally slowed down, like a slow disk's commit) and
    /// deliveries claimed. Every operation is the SQLite store's own.
    struct Counting {
        store: SqliteStore,
        finish_delay: Duration,
        finish_calls: AtomicUsize,
        claimed: AtomicUsize,
    }

    impl Counting {
        fn new(store: SqliteStore, finish_delay: Duration) -> Self {
            Self {
                store,
                finish_delay,
                finish_calls: AtomicUsize::new(0),
                claimed: AtomicUsize::new(0),
            }
        }

        /// How many `finish_attempts` calls were made.
        fn finish_calls(&self) -> usize {
            self.finish_calls.load(Ordering::SeqCst)
        }

        /// How many deliveries were claimed, counting claims of the same one.
        fn claims(&self) -> usize {
            self.claimed.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Store for Counting {
        fn backend(&self) -> &'static str {
            self.store.backend()
        }

        fn max_concurrent_batches(&self) -> usize {
            self.store.max_concurrent_batches()
        }

        fn gathers_ingests(&self) -> bool {
            self.store.gathers_ingests()
        }

        async fn ingest(&self, batch: Vec<NewEvent>) -> Result<Vec<IngestOutcome>, StoreError> {
            self.store.ingest(batch).await
        }

        async fn record_verification_failures(&self, failures: Vec<VerificationFailure>) -> Result<(), StoreError> {
            self.store.record_verification_failures(failures).await
        }

        async fn event(&self, id: EventId) -> Result<Option<StoredEvent>, StoreError> {
            self.store.event(id).await
        }

        async fn event_by_dedup_key(&self, source: &str, dedup_key: &str) -> Result<Option<StoredEvent>, StoreError> {
            self.store.event_by_dedup_key(source, dedup_key).await
        }

        async fn list_events(&self, query: &EventQuery) -> Result<Vec<EventSummary>, StoreError> {
            self.store.list_events(query).await
        }

        async fn verification_failures(
            &self,
            source: Option<&str>,
            limit: u32,
        ) -> Result<Vec<VerificationFailure>, StoreError> {
            self.store.verification_failures(source, limit).await
        }

        async fn source_counts(&self) -> Result<Vec<SourceCounts>, StoreError> {
            self.store.source_counts().await
        }

        async fn ping(&self) -> Result<(), StoreError> {
            self.store.ping().await
        }

        async fn wait_for_deliveries(&self, max_wait: Duration) {
            self.store.wait_for_deliveries(max_wait).await
        }

        async fn claim_deliveries(&self, request: &ClaimRequest) -> Result<Vec<ClaimedDelivery>, StoreError> {
            let claimed = self.store.claim_deliveries(request).await?;
            self.claimed.fetch_add(claimed.len(), Ordering::SeqCst);
            Ok(claimed)
        }

        async fn finish_attempts(&self, owner: &str, finished: Vec<FinishedAttempt>) -> Result<Vec<bool>, StoreError> {
            self.finish_calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.finish_delay).await;
            self.store.finish_attempts(owner, finished).await
        }

        async fn release_deliveries(&self, owner: &str, ids: &[DeliveryId]) -> Result<(), StoreError> {
            self.store.release_deliveries(owner, ids).await
        }

        async fn add_deliveries(&self, deliveries: Vec<(EventId, NewDelivery)>) -> Result<u64, StoreError> {
            self.store.add_deliveries(deliveries).await
        }

        async fn retry_deliveries(&self, ids: &[DeliveryId], now: UnixMillis) -> Result<u64, StoreError> {
            self.store.retry_deliveries(ids, now).await
        }

        async fn delivery(&self, id: DeliveryId) -> Result<Option<Delivery>, StoreError> {
            self.store.delivery(id).await
        }

        async fn deliveries_for_event(&self, event: EventId) -> Result<Vec<Delivery>, StoreError> {
            self.store.deliveries_for_event(event).await
        }

        async fn list_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
            self.store.list_deliveries(query).await
        }

        async fn attempts(&self, delivery: DeliveryId) -> Result<Vec<Attempt>, StoreError> {
            self.store.attempts(delivery).await
        }

        async fn delivery_counts(&self) -> Result<Vec<(DeliveryState, u64)>, StoreError> {
            self.store.delivery_counts().await
        }

        async fn set_route_paused(&self, route: &str, paused: bool) -> Result<(), StoreError> {
            self.store.set_route_paused(route, paused).await
        }

        async fn paused_routes(&self) -> Result<Vec<String>, StoreError> {
            self.store.paused_routes().await
        }

        async fn events_between(
            &self,
            source: &str,
            from: UnixMillis,
            to: UnixMillis,
            after: Option<EventId>,
            limit: u32,
        ) -> Result<Vec<EventSummary>, StoreError> {
            self.store.events_between(source, from, to, after, limit).await
        }
        async fn decide_approval(
            &self,
            ids: &[DeliveryId],
            decision: &ApprovalDecision,
            now: UnixMillis,
        ) -> Result<Vec<DeliveryId>, StoreError> {
            self.store.decide_approval(ids, decision, now).await
        }

        async fn resolve_deliveries(
            &self,
            ids: &[DeliveryId],
            resolution: Resolution,
            note: &str,
            now: UnixMillis,
        ) -> Result<Vec<DeliveryId>, StoreError> {
            self.store.resolve_deliveries(ids, resolution, note, now).await
        }

        async fn exception_groups(&self, limit: u32) -> Result<Vec<ExceptionGroup>, StoreError> {
            self.store.exception_groups(limit).await
        }

        async fn activity(&self, since: UnixMillis, bucket: Duration) -> Result<Vec<ActivityBucket>, StoreError> {
            self.store.activity(since, bucket).await
        }

        async fn attempt_activity(
            &self,
            since: UnixMillis,
            bucket: Duration,
        ) -> Result<Vec<AttemptBucket>, StoreError> {
            self.store.attempt_activity(since, bucket).await
        }

        async fn oldest_due_delivery(&self, now: UnixMillis) -> Result<Option<UnixMillis>, StoreError> {
            self.store.oldest_due_delivery(now).await
        }

        async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
            self.store.create_user(user).await
        }

        async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
            self.store.user_by_name(username).await
        }

        async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
            self.store.user(id).await
        }

        async fn list_users(&self) -> Result<Vec<User>, StoreError> {
            self.store.list_users().await
        }

        async fn set_user_disabled(&self, username: &str, disabled: bool) -> Result<bool, StoreError> {
            self.store.set_user_disabled(username, disabled).await
        }

        async fn set_user_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
            self.store.set_user_password(username, password_hash).await
        }

        async fn record_login(&self, id: UserId, at: UnixMillis) -> Result<(), StoreError> {
            self.store.record_login(id, at).await
        }

        async fn create_session(&self, session: Session) -> Result<(), StoreError> {
            self.store.create_session(session).await
        }

        async fn session(&self, token_hash: &str, now: UnixMillis) -> Result<Option<(Session, User)>, StoreError> {
            self.store.session(token_hash, now).await
        }

        async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
            self.store.delete_session(token_hash).await
        }

        async fn create_token(&self, token: ApiToken) -> Result<(), StoreError> {
            self.store.create_token(token).await
        }

        async fn token_by_hash(&self, token_hash: &str, now: UnixMillis) -> Result<Option<ApiToken>, StoreError> {
            self.store.token_by_hash(token_hash, now).await
        }

        async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
            self.store.list_tokens().await
        }

        async fn revoke_token(&self, id: TokenId, now: UnixMillis) -> Result<bool, StoreError> {
            self.store.revoke_token(id, now).await
        }

        async fn append_audit(&self, entry: NewAuditEntry) -> Result<(), StoreError> {
            self.store.append_audit(entry).await
        }

        async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
            self.store.list_audit(query).await
        }

        async fn existing_dedup_keys(&self, source: &str, dedup_keys: &[String]) -> Result<Vec<String>, StoreError> {
            self.store.existing_dedup_keys(source, dedup_keys).await
        }

        async fn source_state(&self, source: &str, key: &str) -> Result<Option<String>, StoreError> {
            self.store.source_state(source, key).await
        }

        async fn put_source_state(&self, source: &str, key: &str, value: &str) -> Result<(), StoreError> {
            self.store.put_source_state(source, key, value).await
        }

        async fn save_enrichment(&self, enrichment: Enrichment) -> Result<(), StoreError> {
            self.store.save_enrichment(enrichment).await
        }

        async fn enrichment(&self, delivery: DeliveryId) -> Result<Option<Enrichment>, StoreError> {
            self.store.enrichment(delivery).await
        }

        async fn prune_events(
            &self,
            source: &str,
            older_than: UnixMillis,
            limit: u32,
            now: UnixMillis,
            dry_run: bool,
        ) -> Result<PruneReport, StoreError> {
            self.store.prune_events(source, older_than, limit, now, dry_run).await
        }
    }

    /// A local receiver whose answers are scripted: each request takes the
    /// next `(status, delay)` from the script, or `(200, 0)` when it is empty.
    #[derive(Clone, Default)]
    struct Sink {
        script: Arc<Mutex<VecDeque<(u16, Duration)>>>,
        received: Arc<Mutex<Vec<(String, Bytes)>>>,
    }

    impl Sink {
        async fn start(script: &[(u16, u64)]) -> (Self, String) {
            let sink = Self::default();
            sink.script
                .lock()
                .expect("lock")
                .extend(script.iter().map(|(s, ms)| (*s, Duration::from_millis(*ms))));
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("http://{}/in", listener.local_addr().expect("addr"));
            let serving = sink.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let sink = serving.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let sink = sink.clone();
                            async move {
                                let id = request
                                    .headers()
                                    .get("webhook-id")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_string();
                                let body = request
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let next = sink.script.lock().expect("lock").pop_front();
                                let (status, delay) = next.unwrap_or((200, Duration::ZERO));
                                tokio::time::sleep(delay).await;
                                sink.received.lock().expect("lock").push((id, body));
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from_static(b"ok")))
                                        .expect("response"),
                                )
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            (sink, url)
        }

        fn received(&self) -> Vec<(String, Bytes)> {
            self.received.lock().expect("lock").clone()
        }
    }

    fn table(url: &str, destination_extra: &str, route_extra: &str) -> RouteTable {
        let timeout = if destination_extra.contains("timeout") {
            ""
        } else {
            "timeout = \"2s\""
        };
        let destination = ResolvedDestination {
            config: toml::from_str(&format!(
                "name = \"sink\"\ntype = \"http\"\nurl = \"{url}\"\n{timeout}\n{destination_extra}"
            ))
            .expect("destination"),
            secret: None,
            headers: Vec::new(),
            ca_client: None,
        };
        let route: RouteConfig = toml::from_str(&format!(
            "name = \"r\"\nsource = \"s\"\ndestination = \"sink\"\nretry = {{ base = \"10ms\", cap = \"20ms\", max_attempts = 3 }}\n{route_extra}"
        ))
        .expect("route");
        RouteTable::build(&[route], &[destination]).expect("table")
    }

    fn config() -> DeliveryConfig {
        DeliveryConfig {
            lease: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
            shutdown_grace: Duration::from_millis(300),
            ..DeliveryConfig::default()
        }
    }

    /// Commits `count` events on source `s`, each with one pending delivery
    /// on route `r` and the body `{"n": i}`; returns the deliveries' ids.
    async fn ingest(store: &dyn Store, count: usize) -> Vec<DeliveryId> {
        let events: Vec<NewEvent> = (0..count)
            .map(|i| {
                let mut event = event_with_routes("s", &format!("k{i}-{}", EventId::new()), &["r"]);
                event.body = Bytes::from(format!("{{\"n\":{i}}}"));
                event
            })
            .collect();
        let ids = events.iter().map(|e| e.deliveries[0].id).collect();
        let outcomes = store.ingest(events).await.expect("ingest");
        assert!(outcomes.iter().all(|o| *o == IngestOutcome::Stored), "{outcomes:?}");
        ids
    }

    async fn states(store: &dyn Store, ids: &[DeliveryId]) -> Vec<DeliveryState> {
        let mut states = Vec::new();
        for id in ids {
            states.push(store.delivery(*id).await.expect("read").expect("exists").state);
        }
        states
    }

    async fn settle(store: &dyn Store, ids: &[DeliveryId]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = states(store, ids).await;
            if now.iter().all(|s| s.is_final()) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "deliveries never settled: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delivers_each_once_and_records_in_batches() {
        let (sink, url) = Sink::start(&[]).await;
        // Each commit takes 20 ms: attempts finishing meanwhile share the next.
        let (_dir, sqlite) = sqlite();
        let store = Arc::new(Counting::new(sqlite, Duration::from_millis(20)));
        let engine = Engine::new(store.clone(), table(&url, "", ""), config(), "w1").expect("engine");
        let handle = engine.start().await.expect("start");
        let ids = ingest(&*store, 200).await;
        settle(&*store, &ids).await;
        assert!(states(&*store, &ids)
            .await
            .iter()
            .all(|s| *s == DeliveryState::Succeeded));
        let received = sink.received();
        assert_eq!(received.len(), 200, "each delivered exactly once");
        let unique: std::collections::HashSet<_> = received.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(unique.len(), 200);
        assert!(
            store.finish_calls() < 100,
            "attempts are recorded in batches ({} calls)",
            store.finish_calls()
        );
        handle.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_until_success_then_gives_up_on_the_next() {
        let (sink, url) = Sink::start(&[(500, 0), (503, 0), (200, 0)]).await;
        let (_dir, store) = sqlite();
        let store = Arc::new(store);
        let handle = Engine::new(store.clone(), table(&url, "", ""), config(), "w1")
            .expect("engine")
            .start()
            .await
            .expect("start");
        let first = ingest(&*store, 1).await;
        settle(&*store, &first).await;
        let attempts = store.attempts(first[0]).await.expect("attempts");
        let outcomes: Vec<_> = attempts.iter().map(|a| (a.status_code, a.outcome)).collect();
        assert_eq!(
            outcomes,
            vec![
                (Some(500), AttemptOutcome::Retry),
                (Some(503), AttemptOutcome::Retry),
                (Some(200), AttemptOutcome::Succeeded)
            ]
        );
        assert_eq!(sink.received().len(), 3);

        sink.script
            .lock()
            .expect("lock")
            .extend([(500, 0), (500, 0), (500, 0)].map(|(s, ms)| (s, Duration::from_millis(ms))));
        let second = ingest(&*store, 1).await;
        settle(&*store, &second).await;
        let delivery = store.delivery(second[0]).await.expect("read").expect("exists");
        assert_eq!((delivery.state, delivery.attempts), (DeliveryState::Dead, 3));
        assert_eq!(
            delivery.last_error.as_deref(),
            Some("gave up after 3 attempts: HTTP 500 Internal Server Error")
        );
        handle.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_retried_delivery_of_a_pruned_event_sends_nothing() {
        let (sink, url) = Sink::start(&[(400, 0)]).await;
        let (_dir, store) = sqlite();
        let store = Arc::new(store);
        let handle = Engine::new(store.clone(), table(&url, "", ""), config(), "w1")
            .expect("engine")
            .start()
            .await
            .expect("start");
        let ids = ingest(&*store, 1).await;
        settle(&*store, &ids).await;
        assert_eq!(states(&*store, &ids).await, vec![DeliveryState::Dead]);
        let now = gatehouse_core::UnixMillis::now();
        let report = store
            .prune_events("s", gatehouse_core::UnixMillis(now.0 + 1_000), 100, now, false)
            .await
            .expect("prune");
        assert_eq!(report.events, 1, "every delivery is final, so the event is pruned");

        assert_eq!(store.retry_deliveries(&ids, now).await.expect("retry"), 1);
        settle(&*store, &ids).await;
        let delivery = store.delivery(ids[0]).await.expect("read").expect("exists");
        assert_eq!(delivery.state, DeliveryState::Dead);
        assert_eq!(
            delivery.last_error.as_deref(),
            Some("the event's body was removed by retention, so there is nothing to send")
        );
        assert_eq!(sink.received().len(), 1, "only the first attempt reached the sink");
        handle.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn client_errors_are_dead_at_once_and_filters_skip() {
        let (sink, url) = Sink::start(&[(404, 0)]).await;
        let (_dir, store) = sqlite();
        let store = Arc::new(store);
        let handle = Engine::new(store.clone(), table(&url, "", "filter = '.n != 1'"), config(), "w1")
            .expect("engine")
            .start()
            .await
            .expect("start");
        let ids = ingest(&*store, 2).await;
        settle(&*store, &ids).await;
        assert_eq!(
            states(&*store, &ids).await,
            vec![DeliveryState::Dead, DeliveryState::Skipped]
        );
        assert_eq!(sink.received().len(), 1, "the skipped one was never sent");
        let skipped = store.delivery(ids[1]).await.expect("read").expect("exists");
        assert_eq!(
            skipped.last_error.as_deref(),
            Some("skipped: the route's filter yielded false")
        );
        handle.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_finishes_what_is_sending_and_releases_the_rest() {
        // One at a time to a slow receiver: one attempt is sending, the
        // others wait for the destination's only slot.
        let (sink, url) = Sink::start(&[(200, 200)]).await;
        let (_dir, store) = sqlite();
        let store = Arc::new(store);
        let handle = Engine::new(store.clone(), table(&url, "concurrency = 1", ""), config(), "w1")
            .expect("engine")
            .start()
            .await
            .expect("start");
        let ids = ingest(&*store, 5).await;
        let in_flight = {
            let store = store.clone();
            let ids = ids.clone();
            move || {
                let store = store.clone();
                let ids = ids.clone();
                async move {
                    states(&*store, &ids)
                        .await
                        .iter()
                        .filter(|s| **s == DeliveryState::InFlight)
                        .count()
                }
            }
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while in_flight().await < 5 {
            assert!(std::time::Instant::now() < deadline, "never claimed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handle.shutdown().await;
        let after = states(&*store, &ids).await;
        assert_eq!(
            after.iter().filter(|s| **s == DeliveryState::Succeeded).count(),
            1,
            "the attempt in progress finished: {after:?}"
        );
        assert_eq!(
            after.iter().filter(|s| **s == DeliveryState::Pending).count(),
            4,
            "the waiting ones were released: {after:?}"
        );
        assert_eq!(sink.received().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_attempt_past_the_grace_period_is_cut_off_and_released() {
        let (_sink, url) = Sink::start(&[(200, 1500)]).await;
        let (_dir, store) = sqlite();
        let store = Arc::new(store);
        let handle = Engine::new(store.clone(), table(&url, "", ""), config(), "w1")
            .expect("engine")
            .start()
            .await
            .expect("start");
        let ids = ingest(&*store, 1).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while states(&*store, &ids).await != vec![DeliveryState::InFlight] {
            assert!(std::time::Instant::now() < deadline, "never claimed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = std::time::Instant::now();
        handle.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        assert_eq!(states(&*store, &ids).await, vec![DeliveryState::Pending]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paused_routes_hold_their_deliveries() {
        let (sink, url) = Sink::start(&[]).await;
        let (_dir, store) = sqlite();
        let store = Arc::new(store);
        let handle = Engine::new(store.clone(), table(&url, "", "paused = true"), config(), "w1")
            .expect("engine")
            .start()
            .await
            .expect("start");
        assert_eq!(store.paused_routes().await.expect("paused"), vec!["r".to_string()]);
        let ids = ingest(&*store, 3).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(sink.received().is_empty());
        assert!(states(&*store, &ids).await.iter().all(|s| *s == DeliveryState::Pending));
        store.set_route_paused("r", false).await.expect("resume");
        settle(&*store, &ids).await;
        assert_eq!(sink.received().len(), 3);
        handle.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_that_wait_too_long_for_a_slot_are_released_not_sent_late() {
        // One slot, 300 ms per answer, and a lease that leaves 400 ms of
        // waiting: most deliveries are released and claimed again, none is
        // sent twice, all arrive.
        let (sink, url) = Sink::start(&[]).await;
        sink.script
            .lock()
            .expect("lock")
            .extend(std::iter::repeat_n((200, Duration::from_millis(300)), 6));
        let (_dir, sqlite) = sqlite();
        let store = Arc::new(Counting::new(sqlite, Duration::ZERO));
        let config = DeliveryConfig {
            lease: Duration::from_secs(1),
            ..config()
        };
        let table = table(&url, "concurrency = 1\ntimeout = \"500ms\"", "");
        let handle = Engine::new(store.clone(), table, config, "w1")
            .expect("engine")
            .start()
            .await
            .expect("start");
        let ids = ingest(&*store, 6).await;
        settle(&*store, &ids).await;
        assert!(states(&*store, &ids)
            .await
            .iter()
            .all(|s| *s == DeliveryState::Succeeded));
        for id in &ids {
            assert_eq!(store.attempts(*id).await.expect("attempts").len(), 1);
        }
        assert_eq!(sink.received().len(), 6, "none sent twice");
        assert!(
            store.claims() > 6,
            "some were released and claimed again ({} claims)",
            store.claims()
        );
        handle.shutdown().await;
    }

    #[test]
    fn the_lease_must_outlast_every_timeout() {
        let table = table("http://127.0.0.1:9/", "timeout = \"90s\"", "");
        let config = DeliveryConfig::default();
        let error = check(&config, &table).expect_err("60 s lease, 90 s timeout");
        let text = error.to_string();
        assert!(text.contains("delivery.lease") && text.contains("\"sink\""), "{text}");
        let zero = DeliveryConfig {
            workers: 0,
            lease: Duration::from_secs(120),
            ..DeliveryConfig::default()
        };
        assert!(matches!(check(&zero, &table), Err(EngineError::NoWorkers)));
        assert!(default_owner().contains(&std::process::id().to_string()));
    }
}
