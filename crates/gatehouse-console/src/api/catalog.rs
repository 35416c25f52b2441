//! The configured sources, routes and destinations with their pause state
//! and counts, and pausing and resuming routes (admin). Nothing here shows
//! a secret: the catalog never holds one.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use gatehouse_core::{DeliveryState, Role};
use gatehouse_store::DeliveryQuery;

use crate::actions;
use crate::state::ConsoleState;

use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::MAX_LIMIT;

pub(super) fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/api/v1/routes", get(routes))
        .route("/api/v1/routes/{name}/pause", post(pause))
        .route("/api/v1/routes/{name}/resume", post(resume))
        .route("/api/v1/sources", get(sources))
        .route("/api/v1/destinations", get(destinations))
}

/// A route as configured, with its state.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct RouteView {
    /// Its name.
    name: String,
    /// The source it takes events from.
    source: String,
    /// The destination it delivers to.
    destination: String,
    /// Event-type globs it subscribes to.
    events: Vec<String>,
    /// Its jq filter, if any.
    filter: Option<String>,
    /// Its jq transform, if any.
    transform: Option<String>,
    /// Whether it is paused now.
    paused: bool,
    /// Dead deliveries (its share of the exception queue).
    dead: u64,
    /// Deliveries awaiting approval (counted up to 1000).
    awaiting_approval: u64,
}

/// Every configured route with its pause state and queue counts.
#[utoipa::path(
    get, path = "/api/v1/routes", tag = "catalog",
    responses(
        (status = 200, description = "The routes, in config order", body = Vec<RouteView>),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub(super) async fn routes(
    State(state): State<ConsoleState>,
    _caller: Caller,
) -> Result<Json<Vec<RouteView>>, ApiError> {
    let paused = state.store.paused_routes().await?;
    let mut dead: HashMap<String, u64> = HashMap::new();
    for group in state.store.exception_groups(MAX_LIMIT).await? {
        *dead.entry(group.route).or_default() += group.count;
    }
    let mut views = Vec::with_capacity(state.catalog.routes.len());
    for route in &state.catalog.routes {
        let awaiting = state
            .store
            .list_deliveries(&DeliveryQuery {
                route: Some(route.name.clone()),
                state: Some(DeliveryState::AwaitingApproval),
                limit: MAX_LIMIT,
                ..DeliveryQuery::default()
            })
            .await?
            .len() as u64;
        views.push(RouteView {
            name: route.name.clone(),
            source: route.source.clone(),
            destination: route.destination.clone(),
            events: route.events.clone(),
            filter: route.filter.clone(),
            transform: route.transform.clone(),
            paused: paused.contains(&route.name),
            dead: dead.get(&route.name).copied().unwrap_or(0),
            awaiting_approval: awaiting,
        });
    }
    Ok(Json(views))
}

/// A source as configured (never its secrets), with its counts.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SourceView {
    /// Its name (`POST /in/{name}`).
    name: String,
    /// The provider that verifies it.
    provider: String,
    /// Event-type globs it subscribes to.
    events: Vec<String>,
    /// Events stored.
    stored: u64,
    /// Duplicate arrivals.
    duplicates: u64,
    /// Requests that failed verification.
    verification_failures: u64,
    /// The routes that take its events.
    routes: Vec<String>,
}

/// Every configured source with its counts.
#[utoipa::path(
    get, path = "/api/v1/sources", tag = "catalog",
    responses(
        (status = 200, description = "The sources, in config order", body = Vec<SourceView>),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub(super) async fn sources(
    State(state): State<ConsoleState>,
    _caller: Caller,
) -> Result<Json<Vec<SourceView>>, ApiError> {
    let counts: HashMap<String, _> = state
        .store
        .source_counts()
        .await?
        .into_iter()
        .map(|c| (c.source.clone(), c))
        .collect();
    let views = state
        .catalog
        .sources
        .iter()
        .map(|source| {
            let count = counts.get(&source.name);
            SourceView {
                name: source.name.clone(),
                provider: source.provider.clone(),
                events: source.events.clone(),
                stored: count.map_or(0, |c| c.events),
                duplicates: count.map_or(0, |c| c.duplicates),
                verification_failures: count.map_or(0, |c| c.verification_failures),
                routes: state
                    .catalog
                    .routes
                    .iter()
                    .filter(|r| r.source == source.name)
                    .map(|r| r.name.clone())
                    .collect(),
            }
        })
        .collect();
    Ok(Json(views))
}

/// A destination as configured, without secrets or header values.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct DestinationView {
    /// Its name.
    name: String,
    /// `http` or `exec`.
    #[serde(rename = "type")]
    kind: String,
    /// The URL without credentials or query, or the program.
    target: String,
    /// The routes that deliver to it.
    routes: Vec<String>,
}

/// Every configured destination.
#[utoipa::path(
    get, path = "/api/v1/destinations", tag = "catalog",
    responses(
        (status = 200, description = "The destinations, in config order", body = Vec<DestinationView>),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub(super) async fn destinations(
    State(state): State<ConsoleState>,
    _caller: Caller,
) -> Result<Json<Vec<DestinationView>>, ApiError> {
    let views = state
        .catalog
        .destinations
        .iter()
        .map(|destination| DestinationView {
            name: destination.name.clone(),
            kind: destination.kind.clone(),
            target: destination.target.clone(),
            routes: state
                .catalog
                .routes
                .iter()
                .filter(|r| r.destination == destination.name)
                .map(|r| r.name.clone())
                .collect(),
        })
        .collect();
    Ok(Json(views))
}

/// A route's pause state after a change.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct PauseAnswer {
    /// The route.
    route: String,
    /// Whether it is paused now.
    paused: bool,
}

async fn set_paused(
    state: &ConsoleState,
    caller: &Caller,
    name: String,
    paused: bool,
) -> Result<Json<PauseAnswer>, ApiError> {
    actions::require(&caller.principal, Role::Admin)?;
    actions::set_route_paused(state, &caller.principal, &name, paused).await?;
    Ok(Json(PauseAnswer { route: name, paused }))
}

/// Pause a route: its deliveries are held until resumed (admin).
#[utoipa::path(
    post, path = "/api/v1/routes/{name}/pause", tag = "catalog",
    params(("name" = String, Path, description = "The route")),
    responses(
        (status = 200, description = "Paused", body = PauseAnswer),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No such route", body = ErrorBody),
    )
)]
pub(super) async fn pause(
    State(state): State<ConsoleState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<PauseAnswer>, ApiError> {
    set_paused(&state, &caller, name, true).await
}

/// Resume a paused route (admin).
#[utoipa::path(
    post, path = "/api/v1/routes/{name}/resume", tag = "catalog",
    params(("name" = String, Path, description = "The route")),
    responses(
        (status = 200, description = "Resumed", body = PauseAnswer),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No such route", body = ErrorBody),
    )
)]
pub(super) async fn resume(
    State(state): State<ConsoleState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<PauseAnswer>, ApiError> {
    set_paused(&state, &caller, name, false).await
}
