//! The storage interface: domain operations over events, with no SQL and no
//! driver types, so the server and the CLI never know which database they
//! run on. SQLite and PostgreSQL implement it in their own crates, and both
//! run the same [`conformance`] suite.
#![deny(missing_docs)]

use async_trait::async_trait;

use std::time::Duration;

use gatehouse_core::{
    ApiToken, Attempt, AuditEntry, Delivery, DeliveryId, DeliveryState, Disposition, EventId, EventSummary,
    FinishedAttempt, NewAuditEntry, NewDelivery, NewEvent, NewUser, Session, StoredEvent, TokenId, UnixMillis, User,
    UserId, VerificationFailure,
};

pub mod codec;
pub mod tail;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod conformance_recovery;

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

/// Which events to list, newest first, by keyset pagination. Every filter
/// set must hold (AND).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// Only this source.
    pub source: Option<String>,
    /// Only this event type (exact).
    pub event_type: Option<String>,
    /// Only events whose dedup key or provider event id is exactly this
    /// ("was `evt_1Nx…` processed?").
    pub provider_event_id: Option<String>,
    /// Only events with this disposition.
    pub disposition: Option<Disposition>,
    /// Only events with at least one delivery in this state (e.g. dead).
    pub delivery_state: Option<DeliveryState>,
    /// Only events received at or after this time.
    pub received_from: Option<UnixMillis>,
    /// Only events received before this time.
    pub received_to: Option<UnixMillis>,
    /// Only events whose raw body contains this text (case-sensitive
    /// substring; a scan, bounded by the other filters and the limit).
    pub body_contains: Option<String>,
    /// Only events whose id sorts before this one (the previous page's last id).
    pub before: Option<EventId>,
    /// Only events whose id sorts after this one (live tail: what arrived
    /// since the last one seen).
    pub after: Option<EventId>,
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
    /// Only deliveries whose `last_error` is exactly this (one group of the
    /// exception queue).
    pub last_error: Option<String>,
    /// Only deliveries whose id sorts before this one (keyset pagination).
    pub before: Option<DeliveryId>,
    /// At most this many (capped at 1,000).
    pub limit: u32,
}

/// Dead deliveries that share a route and an error: one line of the
/// exception queue.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ExceptionGroup {
    /// The route.
    pub route: String,
    /// The last error they share (empty when none was recorded).
    pub last_error: String,
    /// How many dead deliveries.
    pub count: u64,
    /// When the newest of them died (its `updated_at`).
    pub latest_at: UnixMillis,
}

/// Activity in one time bucket for one source, for the overview's charts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ActivityBucket {
    /// The bucket's start (a multiple of the bucket width).
    pub start: UnixMillis,
    /// The source.
    pub source: String,
    /// Events stored (received in the bucket).
    pub events: u64,
    /// Requests that failed verification.
    pub verification_failures: u64,
}

/// Attempts in one time bucket, for the overview's failure rate chart.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AttemptBucket {
    /// The bucket's start (a multiple of the bucket width).
    pub start: UnixMillis,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed (retry or dead).
    pub failed: u64,
}

/// What an operator decided at an approval gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalDecision {
    /// Deliver: the delivery becomes pending and due at once.
    Approve,
    /// Never deliver: the delivery becomes rejected with this reason.
    Reject {
        /// Why, as the operator wrote it.
        reason: String,
    },
}

/// How an operator takes a dead delivery out of the exception queue
/// without delivering it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Handled some other way (fixed by hand): kept as cancelled with a note.
    Resolved,
    /// Not worth delivering: kept as cancelled with a note.
    Discarded,
}

/// Which audit entries to list, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this actor (exact, e.g. `user:alice`).
    pub actor: Option<String>,
    /// Only actions starting with this (`delivery.` or `delivery.retry`).
    pub action_prefix: Option<String>,
    /// Only this object (exact).
    pub object: Option<String>,
    /// Only entries before this sequence number (keyset pagination).
    pub before: Option<i64>,
    /// At most this many (capped at 1,000).
    pub limit: u32,
}

/// What a fetch from a provider's API returned for a delivery's enrichment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Enrichment {
    /// The delivery it belongs to.
    pub delivery_id: DeliveryId,
    /// When it was fetched.
    pub fetched_at: UnixMillis,
    /// The URL fetched (placeholders filled in; never credentials).
    pub url: String,
    /// The HTTP status.
    pub status_code: Option<i32>,
    /// The response body (capped), or empty on a transport error.
    #[serde(skip)]
    pub body: bytes::Bytes,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// What a retention pass removed (or would remove, on a dry run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneReport {
    /// Events whose body and headers were removed (tombstones kept).
    pub events: u64,
    /// Attempts deleted.
    pub attempts: u64,
}

/// A storage failure.
#[derive(Clone, Debug, thiserror::Error)]
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
    /// The write conflicts with what is stored (a username already taken).
    #[error("conflict: {0}")]
    Conflict(String),
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
            StoreError::Internal(_) | StoreError::Conflict(_) | StoreError::SchemaTooNew { .. } => false,
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

    /// Whether the store itself merges concurrent [`Store::ingest`] calls
    /// into shared commits (SQLite's single writer commits whatever queued
    /// up in one transaction). Ingest then hands each event over as it
    /// arrives instead of gathering batches first, which saves two task
    /// hand-offs on every request's path.
    fn gathers_ingests(&self) -> bool {
        false
    }

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

    // --- Console: queues, search, stats -------------------------------------

    /// Approves or rejects deliveries awaiting approval; others are left
    /// alone. Returns the ids that changed.
    async fn decide_approval(
        &self,
        ids: &[DeliveryId],
        decision: &ApprovalDecision,
        now: UnixMillis,
    ) -> Result<Vec<DeliveryId>, StoreError>;

    /// Takes dead deliveries out of the exception queue as cancelled, with
    /// the note kept as their `last_error` prefixed by `resolved: ` or
    /// `discarded: `; others are left alone. Returns the ids that changed.
    async fn resolve_deliveries(
        &self,
        ids: &[DeliveryId],
        resolution: Resolution,
        note: &str,
        now: UnixMillis,
    ) -> Result<Vec<DeliveryId>, StoreError>;

    /// The exception queue grouped by route and error, largest first.
    async fn exception_groups(&self, limit: u32) -> Result<Vec<ExceptionGroup>, StoreError>;

    /// Events and verification failures per source in buckets of
    /// `bucket` width from `since` on.
    async fn activity(&self, since: UnixMillis, bucket: Duration) -> Result<Vec<ActivityBucket>, StoreError>;

    /// Attempts per bucket (succeeded, failed) from `since` on.
    async fn attempt_activity(&self, since: UnixMillis, bucket: Duration) -> Result<Vec<AttemptBucket>, StoreError>;

    /// When the oldest delivery that is due (pending or retrying, due at or
    /// before `now`) became due: the delivery lag is `now` minus it.
    async fn oldest_due_delivery(&self, now: UnixMillis) -> Result<Option<UnixMillis>, StoreError>;

    // --- People, sessions, tokens, audit ------------------------------------

    /// Creates a user; a taken username is [`StoreError::Conflict`].
    async fn create_user(&self, user: NewUser) -> Result<User, StoreError>;

    /// A user by login name.
    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError>;

    /// A user by id.
    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError>;

    /// Every user, by username.
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;

    /// Disables or enables a user; disabling ends its sessions. Returns
    /// whether the user exists.
    async fn set_user_disabled(&self, username: &str, disabled: bool) -> Result<bool, StoreError>;

    /// Replaces a user's password hash and ends its sessions. Returns
    /// whether the user exists.
    async fn set_user_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError>;

    /// Notes a successful login.
    async fn record_login(&self, id: UserId, at: UnixMillis) -> Result<(), StoreError>;

    /// Stores a new session.
    async fn create_session(&self, session: Session) -> Result<(), StoreError>;

    /// The live session with this token hash and its user: none when it
    /// expired (before `now`), was ended, or its user is disabled.
    async fn session(&self, token_hash: &str, now: UnixMillis) -> Result<Option<(Session, User)>, StoreError>;

    /// Ends a session (log out).
    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError>;

    /// Stores a new API token.
    async fn create_token(&self, token: ApiToken) -> Result<(), StoreError>;

    /// The token with this hash, whatever its state (callers check
    /// [`ApiToken::is_active`]); notes it as used at `now` (rewritten at
    /// most once a minute, so a busy API client is not a write per call).
    async fn token_by_hash(&self, token_hash: &str, now: UnixMillis) -> Result<Option<ApiToken>, StoreError>;

    /// Every token, newest first.
    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError>;

    /// Revokes a token at once. Returns whether it existed and was active.
    async fn revoke_token(&self, id: TokenId, now: UnixMillis) -> Result<bool, StoreError>;

    /// Appends to the audit log.
    async fn append_audit(&self, entry: NewAuditEntry) -> Result<(), StoreError>;

    /// The audit log, newest first.
    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;

    // --- Recovery: backfill, polling, enrichment, retention -----------------

    /// Which of `dedup_keys` are already stored for `source` (backfill asks
    /// before ingesting, so a recovered event is never counted as a
    /// duplicate arrival).
    async fn existing_dedup_keys(&self, source: &str, dedup_keys: &[String]) -> Result<Vec<String>, StoreError>;

    /// A piece of per-source state kept across restarts (a poller's ETag and
    /// item versions, a scheduled backfill's last run), as JSON text.
    async fn source_state(&self, source: &str, key: &str) -> Result<Option<String>, StoreError>;

    /// Stores a piece of per-source state, replacing the previous value.
    async fn put_source_state(&self, source: &str, key: &str, value: &str) -> Result<(), StoreError>;

    /// Stores what an enrichment fetch returned for a delivery, replacing
    /// an earlier fetch.
    async fn save_enrichment(&self, enrichment: Enrichment) -> Result<(), StoreError>;

    /// The latest enrichment fetched for a delivery.
    async fn enrichment(&self, delivery: DeliveryId) -> Result<Option<Enrichment>, StoreError>;

    /// Prunes up to `limit` events of `source` received before `older_than`
    /// whose deliveries are all final: removes their body, headers and
    /// attempts and keeps the rest as a tombstone (`pruned_at` set). One
    /// short transaction, so ingest keeps going; callers loop until it
    /// returns zero events. With `dry_run`, counts without changing
    /// anything (then `limit` does not apply).
    async fn prune_events(
        &self,
        source: &str,
        older_than: UnixMillis,
        limit: u32,
        now: UnixMillis,
        dry_run: bool,
    ) -> Result<PruneReport, StoreError>;
}
