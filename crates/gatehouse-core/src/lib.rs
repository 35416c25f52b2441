//! Domain types shared by every gatehouse crate: typed ids, events, secrets
//! and time. Nothing here does I/O, so every other crate can depend on it.
//!
//! - [`access`]: users, roles, sessions and API tokens.
//! - [`audit`]: who did what, append-only.
//! - [`ids`]: prefixed, sortable identifiers (`evt_01J…`).
//! - [`event`]: what ingest hands to storage and what storage gives back.
//! - [`delivery`]: one event on one route, its states and attempts.
//! - [`retry`]: backoff with full jitter.
//! - [`secret`]: secret material that never prints itself.
//! - [`time`]: unix timestamps in milliseconds.
//! - [`units`]: sizes and durations as people write them in config.
#![deny(missing_docs)]

pub mod access;
pub mod audit;
pub mod delivery;
pub mod event;
pub mod ids;
pub mod retry;
pub mod secret;
pub mod time;
pub mod units;

pub use access::{ApiToken, NewUser, Role, Session, User};
pub use audit::{AuditEntry, NewAuditEntry};
pub use delivery::{Attempt, AttemptOutcome, Delivery, DeliveryState, FinishedAttempt, NewDelivery};
pub use event::{Disposition, EventOrigin, EventSummary, Header, NewEvent, StoredEvent, VerificationFailure};
pub use ids::{DeliveryId, EventId, TokenId, UserId};
pub use retry::RetryPolicy;
pub use secret::Secret;
pub use time::UnixMillis;
