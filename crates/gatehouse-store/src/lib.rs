//! The storage interface: domain operations over events, with no SQL and no
//! driver types, so the server and the CLI never know which database they
//! run on. SQLite and PostgreSQL implement it in their own crates, and both
//! run the same [`conformance`] suite.
#![deny(missing_docs)]

use async_trait::async_trait;

use gatehouse_core::{EventId, EventSummary, NewEvent, StoredEvent, VerificationFailure};

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
}
