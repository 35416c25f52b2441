//! Events: search with every filter, one event in full, "was it
//! processed?" by the provider's id, and replay.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use gatehouse_core::{
    Attempt, Delivery, DeliveryState, Disposition, EventId, EventSummary, Header, StoredEvent, UnixMillis,
};
use gatehouse_deliver::replay::Selection;
use gatehouse_store::{Enrichment, EventQuery};

use crate::actions;
use crate::state::ConsoleState;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::{limit, parse_id, parse_optional_time, Body, Params};

/// Events whose provider id is looked up at most.
const LOOKUP_LIMIT: u32 = 100;

pub(super) fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/api/v1/events", get(list))
        .route("/api/v1/events/{id}", get(detail))
        .route("/api/v1/lookup", get(lookup))
        .route("/api/v1/replay", post(replay))
}

/// Filters for `GET /api/v1/events`; all must hold.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct EventFilters {
    /// Only this source.
    source: Option<String>,
    /// Only this event type (exact).
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// Only events whose provider event id or dedup key is this.
    provider_id: Option<String>,
    /// `accepted`, `ignored` or `ping`.
    disposition: Option<String>,
    /// Only events with a delivery in this state (`dead`, `awaiting_approval`…).
    delivery_state: Option<String>,
    /// Received at or after (unix ms or RFC 3339).
    from: Option<String>,
    /// Received before (unix ms or RFC 3339).
    to: Option<String>,
    /// Raw body contains this text (case-sensitive).
    body: Option<String>,
    /// Page cursor: the `next` of the previous page.
    before: Option<String>,
    /// Only events newer than this id (live tail).
    after: Option<String>,
    /// Page size (default 50, at most 1000).
    limit: Option<u32>,
}

/// A page of events, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventPage {
    /// The events (without body and headers).
    #[schema(value_type = Vec<Object>)]
    events: Vec<EventSummary>,
    /// Pass as `before` for the next page; absent on the last page.
    next: Option<String>,
}

/// Parses a delivery state name.
pub(super) fn parse_state(text: &str) -> Result<DeliveryState, ApiError> {
    DeliveryState::parse(text.trim()).ok_or_else(|| {
        let names: Vec<&str> = DeliveryState::ALL.iter().map(DeliveryState::as_str).collect();
        ApiError::invalid(format!(
            "{text:?} is not a delivery state (one of {})",
            names.join(", ")
        ))
    })
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

impl EventFilters {
    fn query(self) -> Result<EventQuery, ApiError> {
        let disposition = non_empty(self.disposition)
            .map(|d| {
                Disposition::parse(d.trim())
                    .ok_or_else(|| ApiError::invalid(format!("{d:?} is not a disposition (accepted, ignored, ping)")))
            })
            .transpose()?;
        Ok(EventQuery {
            source: non_empty(self.source),
            event_type: non_empty(self.event_type),
            provider_event_id: non_empty(self.provider_id),
            disposition,
            delivery_state: non_empty(self.delivery_state).map(|s| parse_state(&s)).transpose()?,
            received_from: parse_optional_time("from", self.from.as_deref())?,
            received_to: parse_optional_time("to", self.to.as_deref())?,
            body_contains: self.body.filter(|b| !b.is_empty()),
            before: non_empty(self.before).map(|b| parse_id("event", &b)).transpose()?,
            after: non_empty(self.after).map(|a| parse_id("event", &a)).transpose()?,
            limit: limit(self.limit),
        })
    }
}

/// Search events, newest first, one page at a time.
#[utoipa::path(
    get, path = "/api/v1/events", tag = "events", params(EventFilters),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 422, description = "A filter is malformed", body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(state): State<ConsoleState>,
    _caller: Caller,
    Params(filters): Params<EventFilters>,
) -> Result<Json<EventPage>, ApiError> {
    let query = filters.query()?;
    let events = state.store.list_events(&query).await?;
    let next = (events.len() == query.limit as usize)
        .then(|| events.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(EventPage { events, next }))
}

/// One event in full.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EventDetail {
    /// The event's fields (id, source, type, provider id, duplicates, origin…).
    #[serde(flatten)]
    #[schema(value_type = Object)]
    event: EventSummary,
    /// The request headers as received.
    #[schema(value_type = Vec<Object>)]
    headers: Vec<Header>,
    /// How it was verified.
    verification: String,
    /// Where it came from.
    remote_addr: Option<String>,
    /// Whether the raw body is valid UTF-8 (then `body_text` is exact).
    body_is_utf8: bool,
    /// The raw body as text (invalid UTF-8 replaced).
    body_text: String,
    /// The raw body, byte for byte, base64.
    body_base64: String,
    /// Its deliveries, oldest first, each with its attempts.
    deliveries: Vec<DeliveryDetail>,
}

/// A delivery with its attempts and enrichment.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeliveryDetail {
    /// The delivery.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    delivery: Delivery,
    /// Every attempt, first to last.
    attempts: Vec<AttemptView>,
    /// What the route's enrichment fetched, if anything.
    enrichment: Option<EnrichmentView>,
}

/// An attempt with its response excerpt as text.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct AttemptView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    attempt: Attempt,
    /// The first 4 KiB of the answer or the command's output (invalid UTF-8 replaced).
    response_excerpt: String,
}

/// An enrichment fetch with its body as text.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct EnrichmentView {
    #[serde(flatten)]
    #[schema(value_type = Object)]
    enrichment: Enrichment,
    /// The response body (invalid UTF-8 replaced).
    body_text: String,
}

/// A delivery with its attempts and enrichment, for the detail views.
pub(super) async fn delivery_detail(state: &ConsoleState, delivery: Delivery) -> Result<DeliveryDetail, ApiError> {
    let attempts = state
        .store
        .attempts(delivery.id)
        .await?
        .into_iter()
        .map(|attempt| AttemptView {
            response_excerpt: String::from_utf8_lossy(&attempt.response_excerpt).into_owned(),
            attempt,
        })
        .collect();
    let enrichment = state
        .store
        .enrichment(delivery.id)
        .await?
        .map(|enrichment| EnrichmentView {
            body_text: String::from_utf8_lossy(&enrichment.body).into_owned(),
            enrichment,
        });
    Ok(DeliveryDetail {
        delivery,
        attempts,
        enrichment,
    })
}

fn event_detail(event: StoredEvent, deliveries: Vec<DeliveryDetail>) -> EventDetail {
    let body_is_utf8 = std::str::from_utf8(&event.body).is_ok();
    EventDetail {
        body_text: String::from_utf8_lossy(&event.body).into_owned(),
        body_base64: STANDARD.encode(&event.body),
        body_is_utf8,
        event: event.summary,
        headers: event.headers,
        verification: event.verification,
        remote_addr: event.remote_addr,
        deliveries,
    }
}

/// One event: headers, raw body, verification, origin, deliveries and attempts.
#[utoipa::path(
    get, path = "/api/v1/events/{id}", tag = "events",
    params(("id" = String, Path, description = "The event id (evt_…)")),
    responses(
        (status = 200, description = "The event", body = EventDetail),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such event", body = ErrorBody),
    )
)]
pub(super) async fn detail(
    State(state): State<ConsoleState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<EventDetail>, ApiError> {
    let id: EventId = parse_id("event", &id)?;
    let event = state
        .store
        .event(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("event {id} not found")))?;
    let mut deliveries = Vec::new();
    for delivery in state.store.deliveries_for_event(id).await? {
        deliveries.push(delivery_detail(&state, delivery).await?);
    }
    Ok(Json(event_detail(event, deliveries)))
}

/// `GET /api/v1/lookup` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct LookupParams {
    /// The provider's event id (or the dedup key), e.g. `evt_1Nx…`.
    provider_id: String,
    /// Only this source.
    source: Option<String>,
}

/// Every event stored under a provider id, and what became of it.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Lookup {
    /// What was looked up.
    provider_id: String,
    /// Whether any event was stored under it.
    found: bool,
    /// Each matching event, newest first.
    events: Vec<LookupEvent>,
}

/// One matching event, how it was verified, and every delivery with its
/// attempts: "already processed?" in one call.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct LookupEvent {
    /// The event (its `duplicates` counts later arrivals of the same id).
    #[schema(value_type = Object)]
    event: EventSummary,
    /// How its authenticity was established (`stripe-v1, secret #1`, or
    /// `backfill: …` for a recovered event); empty once pruned.
    verification: String,
    /// In one word: `delivered` (every delivery succeeded or was filtered
    /// out), `failed` (one is dead, rejected or cancelled), `in_progress`,
    /// `no_routes`, `ignored` (outside the subscription) or `ping`.
    outcome: &'static str,
    /// Each delivery with its state, attempts and enrichment.
    deliveries: Vec<DeliveryDetail>,
}

/// What became of an event, in one word.
fn outcome(event: &EventSummary, deliveries: &[Delivery]) -> &'static str {
    match event.disposition {
        Disposition::Ignored => return "ignored",
        Disposition::Ping => return "ping",
        Disposition::Accepted => {}
    }
    if deliveries.is_empty() {
        return "no_routes";
    }
    let mut outcome = "delivered";
    for delivery in deliveries {
        match delivery.state {
            DeliveryState::Succeeded | DeliveryState::Skipped => {}
            DeliveryState::Dead | DeliveryState::Rejected | DeliveryState::Cancelled => return "failed",
            DeliveryState::Pending
            | DeliveryState::AwaitingApproval
            | DeliveryState::InFlight
            | DeliveryState::Retrying => outcome = "in_progress",
        }
    }
    outcome
}

/// "Was it processed?": every event stored under a provider id, its
/// duplicates, and each delivery's state.
#[utoipa::path(
    get, path = "/api/v1/lookup", tag = "events", params(LookupParams),
    responses(
        (status = 200, description = "What was stored under the id", body = Lookup),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 422, description = "No provider_id given", body = ErrorBody),
    )
)]
pub(super) async fn lookup(
    State(state): State<ConsoleState>,
    _caller: Caller,
    Params(params): Params<LookupParams>,
) -> Result<Json<Lookup>, ApiError> {
    let provider_id = params.provider_id.trim().to_string();
    if provider_id.is_empty() {
        return Err(ApiError::invalid("provider_id is required"));
    }
    let summaries = state
        .store
        .list_events(&EventQuery {
            source: non_empty(params.source),
            provider_event_id: Some(provider_id.clone()),
            limit: LOOKUP_LIMIT,
            ..EventQuery::default()
        })
        .await?;
    let mut events = Vec::with_capacity(summaries.len());
    for event in summaries {
        let deliveries = state.store.deliveries_for_event(event.id).await?;
        let outcome = outcome(&event, &deliveries);
        let verification = match state.store.event(event.id).await? {
            Some(stored) => stored.verification,
            None => String::new(),
        };
        let mut details = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            details.push(delivery_detail(&state, delivery).await?);
        }
        events.push(LookupEvent {
            outcome,
            event,
            verification,
            deliveries: details,
        });
    }
    Ok(Json(Lookup {
        provider_id,
        found: !events.is_empty(),
        events,
    }))
}

/// What to replay: either `events`, or `source` with a time range.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayRequest {
    /// Event ids (evt_…) to replay.
    #[serde(default)]
    events: Vec<String>,
    /// Replay this source's events received in `[from, to)`.
    source: Option<String>,
    /// With `source`: only event types matching this glob (`payment_intent.*`).
    #[serde(rename = "type")]
    event_type: Option<String>,
    /// With `source`: the start (unix ms or RFC 3339); required.
    #[schema(value_type = Option<String>)]
    from: Option<serde_json::Value>,
    /// With `source`: the end, exclusive (default now).
    #[schema(value_type = Option<String>)]
    to: Option<serde_json::Value>,
    /// Only this route.
    route: Option<String>,
    /// Count what would be replayed; change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// What a replay did (or would do, on a dry run).
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ReplayAnswer {
    /// Whether this was a dry run.
    dry_run: bool,
    /// Events looked at.
    events: u64,
    /// Events no route takes.
    unrouted: u64,
    /// Deliveries created (or that would be).
    deliveries: u64,
    /// Events skipped because retention removed their body.
    pruned: u64,
}

/// A time given as a JSON number (unix ms) or string.
fn json_time(name: &str, value: Option<&serde_json::Value>) -> Result<Option<UnixMillis>, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .map(|ms| Some(UnixMillis(ms)))
            .ok_or_else(|| ApiError::invalid(format!("{name} must be unix milliseconds or RFC 3339"))),
        Some(serde_json::Value::String(text)) => parse_optional_time(name, Some(text)),
        Some(_) => Err(ApiError::invalid(format!(
            "{name} must be unix milliseconds or RFC 3339"
        ))),
    }
}

impl ReplayRequest {
    fn selection(&self) -> Result<Selection, ApiError> {
        match (&self.source, self.events.is_empty()) {
            (Some(_), false) => Err(ApiError::invalid("give events or source, not both")),
            (None, true) => Err(ApiError::invalid(
                "give events (a list of event ids) or source with from (and to)",
            )),
            (None, false) => Ok(Selection::Events(
                self.events
                    .iter()
                    .map(|id| parse_id("event", id))
                    .collect::<Result<_, _>>()?,
            )),
            (Some(source), true) => {
                let from = json_time("from", self.from.as_ref())?.ok_or_else(|| {
                    ApiError::invalid("from is required with source: replaying a whole history must be explicit")
                })?;
                let to = json_time("to", self.to.as_ref())?.unwrap_or_else(UnixMillis::now);
                Ok(Selection::Range {
                    source: source.clone(),
                    event_type: self.event_type.clone().filter(|t| !t.trim().is_empty()),
                    from,
                    to,
                })
            }
        }
    }
}

/// Replay stored events: a new delivery on every route that takes each
/// (operator).
#[utoipa::path(
    post, path = "/api/v1/replay", tag = "events", request_body = ReplayRequest,
    responses(
        (status = 200, description = "What was (or would be) replayed", body = ReplayAnswer),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "Unknown source or route", body = ErrorBody),
        (status = 422, description = "Bad selection", body = ErrorBody),
    )
)]
pub(super) async fn replay(
    State(state): State<ConsoleState>,
    caller: Caller,
    Body(request): Body<ReplayRequest>,
) -> Result<Json<ReplayAnswer>, ApiError> {
    actions::require(&caller.principal, gatehouse_core::Role::Operator)?;
    let selection = request.selection()?;
    let report = actions::replay(
        &state,
        &caller.principal,
        &selection,
        request.route.as_deref(),
        request.dry_run,
    )
    .await?;
    Ok(Json(ReplayAnswer {
        dry_run: request.dry_run,
        events: report.events,
        unrouted: report.unrouted,
        deliveries: report.deliveries,
        pruned: report.pruned,
    }))
}
