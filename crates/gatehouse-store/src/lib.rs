//! The storage interface: domain operations over events, with no SQL and no
//! driver types, so the server and the CLI never know which database they
//! run on. SQLite and PostgreSQL implement it in their own crates, and both
//! run the same [`conformance`] suite.
#![deny(missing_docs)]

use async_trait::async_trait;

use std::time::Duration;

use gatehouse_core::{
    Attempt, Delivery, DeliveryId, DeliveryState, EventId, EventSummary, FinishedAttempt, NewDelivery, NewEvent,
    StoredEvent, UnixMillis, VerificationFailure,
};

pub mod codec;

#[cfg(feature = "conformance")]
pub mod conformance;

/// What committing one event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IngestOutcome {
    /// The event is new and is now committed.
    Stored,
    /// An event with the same source and dedup key was already stored (or
    /// stored earlier in the same batch); its duplicate count went up.
    Duplicate {
        /// The id of the event stored first.
        original: EventId,
    },
}

/// Which events to list, newest first, by keyset pagination.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this source.
    pub source: Option<String>,
    /// Only this event type.
    pub event_type: Option<String>,
    /// Only events whose id sorts before this one (the previous page's last id).
    pub before: Option<EventId>,
    /// At most this many (the store caps it at 1,000).
    pub limit: u32,
}

/// Per-source counts, for health and the overview.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceCounts {
    /// The source's name.
    pub source: String,
    /// Events stored.
    pub events: u64,
    /// Duplicate arrivals counted on stored events.
    pub duplicates: u64,
    /// Verification failures recorded.
    pub verification_failures: u64,
}

/// A delivery a worker has claimed, with the event it carries.
#[derive(Clone, Debug)]
pub struct ClaimedDelivery {
    /// The delivery, as it was when claimed (`attempts` counts earlier attempts).
    pub delivery: Delivery,
    /// The event to deliver, body and headers included.
    pub event: StoredEvent,
}

/// Which deliveries to claim.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// Who claims (unique per worker process); leases are checked against it.
    pub owner: String,
    /// The current time: deliveries due at or before it, and leases expired
    /// before it, are claimable.
    pub now: UnixMillis,
    /// How long the claim holds before another worker may take it over.
    pub lease: Duration,
    /// At most this many.
    pub limit: u32,
}

/// Which deliveries to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    /// Only this route.
    pub route: Option<String>,
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// Only deliveries whose id sorts before this one (keyset pagination).
    pub before: Option<DeliveryId>,
    /// At most this many (capped at 1,000).
    pub limit: u32,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or cannot write (down, disk full,
    /// read-only, locked past the timeout). Ingest answers 503 so the
    /// provider retries.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answered but the operation failed (a bug or a corrupt
    /// row). Logged with its cause; callers see a generic error.
    #[error("database error: {0}")]
    Internal(String),
    /// The database schema is newer than this binary understands.
    #[error("database schema version {found} is newer than this gatehouse supports ({supported})")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
}

impl StoreError {
    /// Whether retrying later may succeed (the database may come back).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) => true,
            StoreError::Internal(_) | StoreError::SchemaTooNew { .. } => false,
        }
    }
}

/// The operations gatehouse needs from a database. Implementations commit
/// durably before returning from a write: a returned `Ok` is what lets
/// ingest answer 2xx.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name for logs and `/readyz`: `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// How many ingest batches may commit at once. SQLite has one writer;
    /// PostgreSQL commits several batches in parallel.
    fn max_concurrent_batches(&self) -> usize;

    /// Commits a batch of verified events in one transaction and returns one
    /// outcome per event, in order. All or nothing: on `Err` none is stored.
    async fn ingest(&self, batch: Vec<NewEvent>) -> Result<Vec<IngestOutcome>, StoreError>;

    /// Records requests that failed verification. Best effort: callers
    /// already answered 401 and do not wait for this.
    async fn record_verification_failures(&self, failures: Vec<VerificationFailure>) -> Result<(), StoreError>;

    /// One event with its headers and body.
    async fn event(&self, id: EventId) -> Result<Option<StoredEvent>, StoreError>;

    /// The event stored under a source's dedup key (the provider's event id,
    /// usually): "did this arrive, and when?".
    async fn event_by_dedup_key(&self, source: &str, dedup_key: &str) -> Result<Option<StoredEvent>, StoreError>;

    /// Events newest first.
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<EventSummary>, StoreError>;

    /// The most recent verification failures, newest first.
    async fn verification_failures(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> Result<Vec<VerificationFailure>, StoreError>;

    /// Counts per source, sorted by source name.
    async fn source_counts(&self) -> Result<Vec<SourceCounts>, StoreError>;

    /// Checks that the database answers, for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    // --- Deliveries -------------------------------------------------------

    /// Waits until new deliveries may be due (an ingest or replay committed
    /// some, here or, on PostgreSQL, in another process) or `max_wait`
    /// passes. Workers call it between claims; it may return early.
    async fn wait_for_deliveries(&self, max_wait: Duration);

    /// Claims up to `limit` deliveries that are due (pending or retrying with
    /// `next_attempt_at <= now`, or in flight with an expired lease), skipping
    /// paused routes, oldest due first; marks them in flight under `owner`
    /// until `now + lease`. Two workers never hold the same delivery.
    async fn claim_deliveries(&self, request: &ClaimRequest) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// Records finished attempts and moves each delivery to the state its
    /// outcome implies, in one transaction. A delivery whose lease `owner` no
    /// longer holds (it expired and was claimed again) is left alone; the
    /// result says, per attempt, whether it was recorded.
    async fn finish_attempts(&self, owner: &str, finished: Vec<FinishedAttempt>) -> Result<Vec<bool>, StoreError>;

    /// Gives back claimed deliveries without an attempt (graceful shutdown):
    /// they become due again at once.
    async fn release_deliveries(&self, owner: &str, ids: &[DeliveryId]) -> Result<(), StoreError>;

    /// Creates deliveries for stored events (replay). Events that do not
    /// exist are skipped; returns how many deliveries were created.
    async fn add_deliveries(&self, deliveries: Vec<(EventId, NewDelivery)>) -> Result<u64, StoreError>;

    /// Makes dead deliveries due again at `now` (their attempt count is
    /// kept); other states are left alone. Returns how many changed.
    async fn retry_deliveries(&self, ids: &[DeliveryId], now: UnixMillis) -> Result<u64, StoreError>;

    /// One delivery.
    async fn delivery(&self, id: DeliveryId) -> Result<Option<Delivery>, StoreError>;

    /// An event's deliveries, oldest first.
    async fn deliveries_for_event(&self, event: EventId) -> Result<Vec<Delivery>, StoreError>;

    /// Deliveries newest first.
    async fn list_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError>;

    /// A delivery's attempts, first to last.
    async fn attempts(&self, delivery: DeliveryId) -> Result<Vec<Attempt>, StoreError>;

    /// Counts of deliveries per state (for the overview and tests).
    async fn delivery_counts(&self) -> Result<Vec<(DeliveryState, u64)>, StoreError>;

    /// Pauses or resumes a route: its deliveries are not claimed while paused.
    async fn set_route_paused(&self, route: &str, paused: bool) -> Result<(), StoreError>;

    /// The routes currently paused.
    async fn paused_routes(&self) -> Result<Vec<String>, StoreError>;

    /// Events of `source` received in `[from, to)`, oldest first, after the
    /// cursor (for replay by time range).
    async fn events_between(
        &self,
        source: &str,
        from: UnixMillis,
        to: UnixMillis,
        after: Option<EventId>,
        limit: u32,
    ) -> Result<Vec<EventSummary>, StoreError>;
}
