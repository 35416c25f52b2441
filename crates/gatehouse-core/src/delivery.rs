//! Deliveries: one event on one route, its state machine, and the record of
//! every attempt.

use std::sync::Arc;

use bytes::Bytes;

use crate::{DeliveryId, EventId, Header, UnixMillis};

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its first attempt.
    Pending,
    /// Held until an operator approves or rejects it.
    AwaitingApproval,
    /// Claimed by a worker, whose lease says until when.
    InFlight,
    /// A destination accepted it.
    Succeeded,
    /// Failed, and will be tried again at `next_attempt_at`.
    Retrying,
    /// Failed for good: in the exception queue.
    Dead,
    /// An operator rejected it at the approval gate.
    Rejected,
    /// The route's filter excluded it.
    Skipped,
    /// Withdrawn (discarded from the exception queue).
    Cancelled,
}

impl DeliveryState {
    /// Every state, in lifecycle order.
    pub const ALL: [DeliveryState; 9] = [
        DeliveryState::Pending,
        DeliveryState::AwaitingApproval,
        DeliveryState::InFlight,
        DeliveryState::Succeeded,
        DeliveryState::Retrying,
        DeliveryState::Dead,
        DeliveryState::Rejected,
        DeliveryState::Skipped,
        DeliveryState::Cancelled,
    ];

    /// The stable name stored in the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::AwaitingApproval => "awaiting_approval",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Dead => "dead",
            DeliveryState::Rejected => "rejected",
            DeliveryState::Skipped => "skipped",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    /// The state from its stored name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == name)
    }

    /// Whether nothing more will happen to the delivery by itself.
    pub fn is_final(&self) -> bool {
        match self {
            DeliveryState::Succeeded
            | DeliveryState::Dead
            | DeliveryState::Rejected
            | DeliveryState::Skipped
            | DeliveryState::Cancelled => true,
            DeliveryState::Pending
            | DeliveryState::AwaitingApproval
            | DeliveryState::InFlight
            | DeliveryState::Retrying => false,
        }
    }
}

/// A delivery to create with its event (or on replay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    /// Its id.
    pub id: DeliveryId,
    /// The route's name.
    pub route: Arc<str>,
    /// `Pending`, or `AwaitingApproval` when the route gates it.
    pub state: DeliveryState,
    /// For `AwaitingApproval`: the rule that held it (`approval = true`, or
    /// the `approval_when` program), stored as the delivery's `last_error`
    /// so the approval queue can show it beside the payload.
    pub held_by: Option<String>,
}

impl NewDelivery {
    /// A pending delivery on `route`.
    pub fn pending(route: Arc<str>) -> Self {
        Self {
            id: DeliveryId::new(),
            route,
            state: DeliveryState::Pending,
            held_by: None,
        }
    }
}

/// A delivery as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// Its id.
    pub id: DeliveryId,
    /// The event delivered.
    pub event_id: EventId,
    /// The route's name.
    pub route: String,
    /// Where it stands.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (meaningful while pending or retrying).
    pub next_attempt_at: UnixMillis,
    /// Why the last attempt failed; why it is dead, skipped, rejected or
    /// cancelled; or, while awaiting approval, the rule that held it.
    pub last_error: Option<String>,
    /// When it was created.
    pub created_at: UnixMillis,
    /// When it last changed.
    pub updated_at: UnixMillis,
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The destination accepted it.
    Succeeded,
    /// Failed; another attempt is scheduled.
    Retry,
    /// Failed; no further attempt (not retriable, or attempts exhausted).
    Dead,
    /// The route's filter excluded the event; nothing was sent.
    Skipped,
}

impl AttemptOutcome {
    /// The stable name stored in the database.
    pub fn as_str(&self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Dead => "dead",
            AttemptOutcome::Skipped => "skipped",
        }
    }

    /// The outcome from its stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Succeeded, Self::Retry, Self::Dead, Self::Skipped]
            .into_iter()
            .find(|o| o.as_str() == name)
    }
}

/// One attempt, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// When it started.
    pub started_at: UnixMillis,
    /// How long it took.
    pub duration_ms: u32,
    /// The HTTP status, for HTTP destinations that answered; the exit code for exec.
    pub status_code: Option<i32>,
    /// The response headers (HTTP destinations).
    pub response_headers: Vec<Header>,
    /// The first 4 KiB of the response body or the command's output.
    #[serde(skip)]
    pub response_excerpt: Bytes,
    /// What went wrong, in words (connection refused, timeout, jq error…).
    pub error: Option<String>,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

/// What a worker decided after an attempt, with the attempt's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedAttempt {
    /// The delivery attempted.
    pub delivery_id: DeliveryId,
    /// The record (its `outcome` decides the new state).
    pub attempt: Attempt,
    /// For `Retry`: when to try again.
    pub next_attempt_at: Option<UnixMillis>,
}
