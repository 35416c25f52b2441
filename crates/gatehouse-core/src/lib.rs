//! Domain types shared by every gatehouse crate: typed ids, events, secrets
//! and time. Nothing here does I/O, so every other crate can depend on it.
//!
//! - [`ids`]: prefixed, sortable identifiers (`evt_01J…`).
//! - [`event`]: what ingest hands to storage and what storage gives back.
//! - [`secret`]: secret material that never prints itself.
//! - [`time`]: unix timestamps in milliseconds.
#![deny(missing_docs)]

pub mod event;
pub mod ids;
pub mod secret;
pub mod time;

pub use event::{Disposition, EventSummary, Header, NewEvent, StoredEvent, VerificationFailure};
pub use ids::EventId;
pub use secret::Secret;
pub use time::UnixMillis;
