//! Deliveries: lists, the exception queue (dead deliveries grouped by
//! route and error), the approval queue, and the operator's actions on
//! them: retry (one, or in bulk by route and error), approve, reject,
//! resolve and discard.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use gatehouse_core::{Delivery, DeliveryId, DeliveryState, EventSummary, Role};
use gatehouse_store::{DeliveryQuery, ExceptionGroup, Resolution};

use crate::actions;
use crate::state::ConsoleState;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::events::{delivery_detail, parse_state, DeliveryDetail};
use super::{limit, parse_id, Body, Params};

pub(super) fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/api/v1/deliveries", get(list))
        .route("/api/v1/deliveries/retry", post(retry_bulk))
        .route("/api/v1/deliveries/{id}", get(detail))
        .route("/api/v1/deliveries/{id}/retry", post(retry_one))
        .route("/api/v1/deliveries/{id}/approve", post(approve))
        .route("/api/v1/deliveries/{id}/reject", post(reject))
        .route("/api/v1/deliveries/{id}/resolve", post(resolve))
        .route("/api/v1/deliveries/{id}/discard", post(discard))
        .route("/api/v1/exceptions", get(exceptions))
        .route("/api/v1/approvals", get(approvals))
}

/// Filters for `GET /api/v1/deliveries`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveryFilters {
    /// Only this route.
    route: Option<String>,
    /// Only this state (`dead`, `retrying`, `awaiting_approval`…).
    state: Option<String>,
    /// Only deliveries whose last error is exactly this.
    last_error: Option<String>,
    /// Page cursor: the `next` of the previous page.
    before: Option<String>,
    /// Page size (default 50, at most 1000).
    limit: Option<u32>,
}

/// A page of deliveries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DeliveryPage {
    /// The deliveries.
    #[schema(value_type = Vec<Object>)]
    deliveries: Vec<Delivery>,
    /// Pass as `before` for the next page; absent on the last page.
    next: Option<String>,
}

fn next_of(deliveries: &[Delivery], limit: u32) -> Option<String> {
    (deliveries.len() == limit as usize)
        .then(|| deliveries.last().map(|d| d.id.to_string()))
        .flatten()
}

/// List deliveries, newest first.
#[utoipa::path(
    get, path = "/api/v1/deliveries", tag = "deliveries", params(DeliveryFilters),
    responses(
        (status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 422, description = "A filter is malformed", body = ErrorBody),
    )
)]
pub(super) async fn list(
    State(state): State<ConsoleState>,
    _caller: Caller,
    Params(filters): Params<DeliveryFilters>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let query = DeliveryQuery {
        route: filters.route.filter(|r| !r.is_empty()),
        state: filters
            .state
            .filter(|s| !s.is_empty())
            .map(|s| parse_state(&s))
            .transpose()?,
        last_error: filters.last_error,
        before: filters
            .before
            .filter(|b| !b.is_empty())
            .map(|b| parse_id("delivery", &b))
            .transpose()?,
        limit: limit(filters.limit),
    };
    let deliveries = state.store.list_deliveries(&query).await?;
    let next = next_of(&deliveries, query.limit);
    Ok(Json(DeliveryPage { deliveries, next }))
}

/// One delivery with its attempts.
#[utoipa::path(
    get, path = "/api/v1/deliveries/{id}", tag = "deliveries",
    params(("id" = String, Path, description = "The delivery id (dlv_…)")),
    responses(
        (status = 200, description = "The delivery and its attempts", body = DeliveryDetail),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
    )
)]
pub(super) async fn detail(
    State(state): State<ConsoleState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeliveryDetail>, ApiError> {
    let id: DeliveryId = parse_id("delivery", &id)?;
    let delivery = state
        .store
        .delivery(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("delivery {id} not found")))?;
    Ok(Json(delivery_detail(&state, delivery).await?))
}

/// `GET /api/v1/exceptions` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct GroupParams {
    /// Most groups (default 50, at most 1000).
    limit: Option<u32>,
}

/// The exception queue: dead deliveries grouped by route and error.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ExceptionQueue {
    /// Largest group first.
    #[schema(value_type = Vec<Object>)]
    groups: Vec<ExceptionGroup>,
    /// Dead deliveries in the groups listed.
    total: u64,
}

/// The exception queue, grouped by route and last error.
#[utoipa::path(
    get, path = "/api/v1/exceptions", tag = "deliveries", params(GroupParams),
    responses(
        (status = 200, description = "The groups", body = ExceptionQueue),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub(super) async fn exceptions(
    State(state): State<ConsoleState>,
    _caller: Caller,
    Params(params): Params<GroupParams>,
) -> Result<Json<ExceptionQueue>, ApiError> {
    let groups = state.store.exception_groups(limit(params.limit)).await?;
    let total = groups.iter().map(|g| g.count).sum();
    Ok(Json(ExceptionQueue { groups, total }))
}

/// `GET /api/v1/approvals` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ApprovalParams {
    /// Only this route.
    route: Option<String>,
    /// Page cursor: the `next` of the previous page.
    before: Option<String>,
    /// Page size (default 50, at most 1000).
    limit: Option<u32>,
}

/// The approval queue.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ApprovalQueue {
    /// Deliveries awaiting a decision, newest first.
    items: Vec<ApprovalItem>,
    /// Pass as `before` for the next page; absent on the last page.
    next: Option<String>,
}

/// A delivery held at an approval gate, with its event.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct ApprovalItem {
    /// The delivery.
    #[schema(value_type = Object)]
    delivery: Delivery,
    /// The rule that held it.
    held_by: Option<String>,
    /// Its event (without body), when it still exists.
    #[schema(value_type = Option<Object>)]
    event: Option<EventSummary>,
}

/// Deliveries awaiting approval, with their events.
#[utoipa::path(
    get, path = "/api/v1/approvals", tag = "deliveries", params(ApprovalParams),
    responses(
        (status = 200, description = "The approval queue", body = ApprovalQueue),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub(super) async fn approvals(
    State(state): State<ConsoleState>,
    _caller: Caller,
    Params(params): Params<ApprovalParams>,
) -> Result<Json<ApprovalQueue>, ApiError> {
    let query = DeliveryQuery {
        route: params.route.filter(|r| !r.is_empty()),
        state: Some(DeliveryState::AwaitingApproval),
        before: params
            .before
            .filter(|b| !b.is_empty())
            .map(|b| parse_id("delivery", &b))
            .transpose()?,
        limit: limit(params.limit),
        ..DeliveryQuery::default()
    };
    let deliveries = state.store.list_deliveries(&query).await?;
    let next = next_of(&deliveries, query.limit);
    let mut items = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let event = state.store.event(delivery.event_id).await?.map(|e| e.summary);
        items.push(ApprovalItem {
            held_by: delivery.last_error.clone(),
            delivery,
            event,
        });
    }
    Ok(Json(ApprovalQueue { items, next }))
}

/// Retry one dead delivery: it becomes due now (operator).
#[utoipa::path(
    post, path = "/api/v1/deliveries/{id}/retry", tag = "deliveries",
    params(("id" = String, Path, description = "The delivery id (dlv_…)")),
    responses(
        (status = 200, description = "The delivery, due again", body = Object),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "The delivery is not dead", body = ErrorBody),
    )
)]
pub(super) async fn retry_one(
    State(state): State<ConsoleState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, ApiError> {
    actions::require(&caller.principal, Role::Operator)?;
    let id = parse_id("delivery", &id)?;
    Ok(Json(
        actions::retry_delivery(&*state.store, &caller.principal, id).await?,
    ))
}

/// Which dead deliveries to retry: every one of a route, or one line of
/// the exception queue (route and exact last error).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct BulkRetry {
    /// The route.
    route: String,
    /// Only dead deliveries whose last error is exactly this.
    last_error: Option<String>,
    /// Count; change nothing.
    #[serde(default)]
    dry_run: bool,
}

/// What a bulk retry did.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct BulkRetryAnswer {
    /// Whether this was a dry run.
    dry_run: bool,
    /// Dead deliveries retried (or that would be).
    retried: u64,
}

/// Retry dead deliveries in bulk by route and error (operator).
#[utoipa::path(
    post, path = "/api/v1/deliveries/retry", tag = "deliveries", request_body = BulkRetry,
    responses(
        (status = 200, description = "How many were retried", body = BulkRetryAnswer),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such route", body = ErrorBody),
    )
)]
pub(super) async fn retry_bulk(
    State(state): State<ConsoleState>,
    caller: Caller,
    Body(request): Body<BulkRetry>,
) -> Result<Json<BulkRetryAnswer>, ApiError> {
    let retried = actions::retry_dead(
        &state,
        &caller.principal,
        &request.route,
        request.last_error.as_deref(),
        request.dry_run,
    )
    .await?;
    Ok(Json(BulkRetryAnswer {
        dry_run: request.dry_run,
        retried,
    }))
}

/// Approve a delivery awaiting approval: it goes out now (operator).
#[utoipa::path(
    post, path = "/api/v1/deliveries/{id}/approve", tag = "deliveries",
    params(("id" = String, Path, description = "The delivery id (dlv_…)")),
    responses(
        (status = 200, description = "The delivery, now pending", body = Object),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "Not awaiting approval", body = ErrorBody),
    )
)]
pub(super) async fn approve(
    State(state): State<ConsoleState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Delivery>, ApiError> {
    actions::require(&caller.principal, Role::Operator)?;
    let id = parse_id("delivery", &id)?;
    Ok(Json(
        actions::approve_delivery(&*state.store, &caller.principal, id).await?,
    ))
}

/// Why a delivery is rejected.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Reason {
    /// Required; kept with the delivery and in the audit log.
    reason: String,
}

/// Reject a delivery awaiting approval, with a reason (operator).
#[utoipa::path(
    post, path = "/api/v1/deliveries/{id}/reject", tag = "deliveries",
    params(("id" = String, Path, description = "The delivery id (dlv_…)")),
    request_body = Reason,
    responses(
        (status = 200, description = "The delivery, now rejected", body = Object),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "Not awaiting approval", body = ErrorBody),
        (status = 422, description = "No reason given", body = ErrorBody),
    )
)]
pub(super) async fn reject(
    State(state): State<ConsoleState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<Reason>,
) -> Result<Json<Delivery>, ApiError> {
    actions::require(&caller.principal, Role::Operator)?;
    let id = parse_id("delivery", &id)?;
    Ok(Json(
        actions::reject_delivery(&*state.store, &caller.principal, id, &body.reason).await?,
    ))
}

/// A note kept with a resolved or discarded delivery.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Note {
    /// Required; kept with the delivery and in the audit log.
    note: String,
}

async fn take_out(
    state: &ConsoleState,
    caller: &Caller,
    id: &str,
    resolution: Resolution,
    note: &str,
) -> Result<Json<Delivery>, ApiError> {
    actions::require(&caller.principal, Role::Operator)?;
    let id = parse_id("delivery", id)?;
    Ok(Json(
        actions::resolve_delivery(&*state.store, &caller.principal, id, resolution, note).await?,
    ))
}

/// Resolve a dead delivery (handled another way), with a note (operator).
#[utoipa::path(
    post, path = "/api/v1/deliveries/{id}/resolve", tag = "deliveries",
    params(("id" = String, Path, description = "The delivery id (dlv_…)")),
    request_body = Note,
    responses(
        (status = 200, description = "The delivery, now cancelled", body = Object),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "Not dead", body = ErrorBody),
        (status = 422, description = "No note given", body = ErrorBody),
    )
)]
pub(super) async fn resolve(
    State(state): State<ConsoleState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<Note>,
) -> Result<Json<Delivery>, ApiError> {
    take_out(&state, &caller, &id, Resolution::Resolved, &body.note).await
}

/// Discard a dead delivery, with a note (operator).
#[utoipa::path(
    post, path = "/api/v1/deliveries/{id}/discard", tag = "deliveries",
    params(("id" = String, Path, description = "The delivery id (dlv_…)")),
    request_body = Note,
    responses(
        (status = 200, description = "The delivery, now cancelled", body = Object),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the operator role", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "Not dead", body = ErrorBody),
        (status = 422, description = "No note given", body = ErrorBody),
    )
)]
pub(super) async fn discard(
    State(state): State<ConsoleState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(body): Body<Note>,
) -> Result<Json<Delivery>, ApiError> {
    take_out(&state, &caller, &id, Resolution::Discarded, &body.note).await
}
