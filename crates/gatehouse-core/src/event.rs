//! Events: what ingest hands to storage ([`NewEvent`]), what storage gives
//! back ([`StoredEvent`], [`EventSummary`]) and the record of a request that
//! failed verification ([`VerificationFailure`]).

use std::sync::Arc;

use bytes::Bytes;

use crate::{EventId, NewDelivery, UnixMillis};

/// What gatehouse decided to do with an accepted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Verified and inside the source's subscription: routes will see it.
    Accepted,
    /// Verified but outside the source's `events` subscription: kept, never delivered.
    Ignored,
    /// A provider's ping or handshake (GitHub `ping`, Slack `url_verification`):
    /// recorded so the console shows it arrived, never delivered.
    Ping,
}

impl Disposition {
    /// The stable name stored in the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::Accepted => "accepted",
            Disposition::Ignored => "ignored",
            Disposition::Ping => "ping",
        }
    }

    /// The disposition from its stored name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "accepted" => Some(Disposition::Accepted),
            "ignored" => Some(Disposition::Ignored),
            "ping" => Some(Disposition::Ping),
            _ => None,
        }
    }
}

/// How an event reached gatehouse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOrigin {
    /// Pushed by the provider to `/in/{source}` and verified.
    #[default]
    Live,
    /// Recovered from the provider's API by a backfill after it was missed.
    Backfill,
    /// Found by polling an API that has no webhooks.
    Poll,
}

impl EventOrigin {
    /// The stable name stored in the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventOrigin::Live => "live",
            EventOrigin::Backfill => "backfill",
            EventOrigin::Poll => "poll",
        }
    }

    /// The origin from its stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Live, Self::Backfill, Self::Poll]
            .into_iter()
            .find(|origin| origin.as_str() == name)
    }
}

/// One request header as received. Values that are not UTF-8 are kept
/// lossily: the signature was already checked on the raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Header {
    /// Lower-case header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

/// A verified request on its way to storage. Ingest builds it only from a
/// verified request; storage commits it or reports it as a duplicate.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// The id gatehouse assigns.
    pub id: EventId,
    /// The source (`/in/{source}`) it arrived on.
    pub source: Arc<str>,
    /// When gatehouse received it.
    pub received_at: UnixMillis,
    /// Unique per source: the provider's event or delivery id, a configured
    /// header or JSON pointer, or `sha256:<hex>` of the raw body.
    pub dedup_key: String,
    /// The provider's own id for the event, when it has one.
    pub provider_event_id: Option<String>,
    /// The event type (`payment_intent.succeeded`, `pull_request.opened`).
    pub event_type: Option<String>,
    /// Whether routes will see it.
    pub disposition: Disposition,
    /// The request headers.
    pub headers: Vec<Header>,
    /// The raw body, byte for byte.
    pub body: Bytes,
    /// How it was verified, e.g. `stripe v1, secret #2`.
    pub verification: String,
    /// The peer (or trusted-proxy client) address.
    pub remote_addr: Option<String>,
    /// Deliveries to create with the event, in the same transaction, when
    /// it is stored (none for a duplicate).
    pub deliveries: Vec<NewDelivery>,
    /// Live, backfilled or polled.
    pub origin: EventOrigin,
}

/// An event as stored, with how often it arrived again.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoredEvent {
    /// The event's fields as committed.
    #[serde(flatten)]
    pub summary: EventSummary,
    /// The request headers.
    pub headers: Vec<Header>,
    /// The raw body, byte for byte.
    #[serde(skip)]
    pub body: Bytes,
    /// How it was verified.
    pub verification: String,
    /// The peer address.
    pub remote_addr: Option<String>,
}

/// An event without its body and headers, for lists.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EventSummary {
    /// The id gatehouse assigned.
    pub id: EventId,
    /// The source it arrived on.
    pub source: String,
    /// When it was first received.
    pub received_at: UnixMillis,
    /// The dedup key.
    pub dedup_key: String,
    /// The provider's id for it.
    pub provider_event_id: Option<String>,
    /// The event type.
    pub event_type: Option<String>,
    /// Whether routes see it.
    pub disposition: Disposition,
    /// How many later requests were duplicates of it.
    pub duplicates: u32,
    /// When the last duplicate arrived.
    pub last_duplicate_at: Option<UnixMillis>,
    /// Live, backfilled or polled.
    pub origin: EventOrigin,
    /// When retention removed its body, headers and attempts; the rest
    /// stays as a tombstone so "was it processed?" still answers.
    pub pruned_at: Option<UnixMillis>,
}

/// A request that failed verification: kept so operators can see attacks
/// and misconfigured secrets. Never holds the body or any secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VerificationFailure {
    /// The source it was sent to.
    pub source: String,
    /// Stable reason code, e.g. `no_matching_signature`.
    pub reason: String,
    /// The peer address.
    pub remote_addr: Option<String>,
    /// When it arrived.
    pub at: UnixMillis,
}
