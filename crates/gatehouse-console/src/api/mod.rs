//! The JSON API under `/api/v1`: the console's reads and actions for
//! scripts and other services, described by an OpenAPI document at
//! `/api/v1/openapi.json`.
//!
//! - [`auth`]: who is calling: a bearer token (`Authorization: Bearer
//!   ghk_…`) or the console's session cookie (then state-changing calls
//!   need the session's `X-CSRF-Token`).
//! - [`error`]: every failure as `{"error": {"code", "message"}}`.
//! - `events`: search, detail, "was it processed?", replay.
//! - `deliveries`: lists, the exception and approval queues, and the
//!   actions on them.
//! - `catalog`: sources, routes (pause, resume) and destinations.
//! - `people`: users and tokens (admin), and who the caller is.
//! - `overview`: the audit log and the overview's stats.
//!
//! Handlers are thin: reads go to the store, actions to [`crate::actions`].
//! Times in answers are unix milliseconds; time parameters take unix
//! milliseconds or RFC 3339.

pub mod auth;
mod catalog;
mod deliveries;
pub mod error;
mod events;
mod overview;
mod people;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::routing::get;
use axum::{Json, Router};
use http::request::Parts;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use gatehouse_core::UnixMillis;

use crate::state::ConsoleState;
use error::ApiError;

/// Where the API lives.
pub const BASE: &str = "/api/v1";

/// Items per page when `limit` is not given.
const DEFAULT_LIMIT: u32 = 50;

/// The most items per page.
const MAX_LIMIT: u32 = 1_000;

/// The API's routes, with the state they need.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .merge(events::router())
        .merge(deliveries::router())
        .merge(catalog::router())
        .merge(people::router())
        .merge(overview::router())
        .route("/api/v1", get(not_found))
        .route("/api/v1/", get(not_found))
        .route("/api/v1/{*rest}", axum::routing::any(not_found))
        .with_state(state)
}

/// Unknown API paths answer JSON, like everything else here.
async fn not_found() -> ApiError {
    ApiError::not_found("no such API endpoint (see /api/v1/openapi.json)")
}

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "gatehouse API",
        description = "Inbound webhook gateway: events, deliveries, queues, replay, routes, audit, users and tokens. \
                       Times are unix milliseconds; time parameters also take RFC 3339. \
                       Errors are {\"error\": {\"code\", \"message\"}}.",
    ),
    paths(
        events::list,
        events::detail,
        events::lookup,
        events::replay,
        deliveries::list,
        deliveries::detail,
        deliveries::exceptions,
        deliveries::approvals,
        deliveries::retry_one,
        deliveries::retry_bulk,
        deliveries::approve,
        deliveries::reject,
        deliveries::resolve,
        deliveries::discard,
        catalog::routes,
        catalog::sources,
        catalog::destinations,
        catalog::pause,
        catalog::resume,
        people::me,
        people::list_users,
        people::create_user,
        people::disable_user,
        people::enable_user,
        people::reset_password,
        people::list_tokens,
        people::create_token,
        people::revoke_token,
        overview::audit,
        overview::stats,
    ),
    components(schemas(
        error::ErrorBody,
        error::ErrorDetail,
        events::EventPage,
        events::EventDetail,
        events::DeliveryDetail,
        events::Lookup,
        events::LookupEvent,
        events::ReplayRequest,
        events::ReplayAnswer,
        deliveries::DeliveryPage,
        deliveries::ExceptionQueue,
        deliveries::ApprovalQueue,
        deliveries::ApprovalItem,
        deliveries::BulkRetry,
        deliveries::BulkRetryAnswer,
        deliveries::Reason,
        deliveries::Note,
        catalog::RouteView,
        catalog::SourceView,
        catalog::DestinationView,
        catalog::PauseAnswer,
        people::Me,
        people::NewUserRequest,
        people::PasswordRequest,
        people::NewTokenRequest,
        people::CreatedTokenAnswer,
        overview::AuditPage,
        overview::Stats,
    )),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
    tags(
        (name = "events", description = "Search, inspect and replay events"),
        (name = "deliveries", description = "Deliveries, the exception queue and the approval queue"),
        (name = "catalog", description = "Sources, routes and destinations"),
        (name = "people", description = "Users and API tokens"),
        (name = "overview", description = "Audit log and stats"),
    )
)]
pub struct ApiDoc;

/// Declares the two ways to authenticate.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("ghk_…")
                    .description(Some("An API token created by an admin (gatehouse tokens create)."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::session::COOKIE_NAME,
                "The console's session cookie; state-changing calls also need the X-CSRF-Token header.",
            ))),
        );
    }
}

/// `GET /api/v1/openapi.json`: public, it holds no data.
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// A JSON body whose rejection is a 422 in the API's error format.
pub(crate) struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid(rejection.body_text())),
        }
    }
}

/// Query parameters whose rejection is a 422 in the API's error format.
pub(crate) struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::invalid(query_message(&rejection))),
        }
    }
}

fn query_message(rejection: &QueryRejection) -> String {
    rejection.body_text()
}

/// The page size asked for, within bounds.
fn limit(asked: Option<u32>) -> u32 {
    asked.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
}

/// A time parameter: unix milliseconds or RFC 3339.
fn parse_time(name: &str, text: &str) -> Result<UnixMillis, ApiError> {
    if let Ok(millis) = text.trim().parse::<i64>() {
        return Ok(UnixMillis(millis));
    }
    let time = humantime::parse_rfc3339_weak(text.trim()).map_err(|_| {
        ApiError::invalid(format!(
            "{name} {text:?} is not a time (expected unix milliseconds or RFC 3339, e.g. 2024-05-01T12:00:00Z)"
        ))
    })?;
    let millis = time
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Ok(UnixMillis(millis))
}

/// An optional time parameter.
fn parse_optional_time(name: &str, text: Option<&str>) -> Result<Option<UnixMillis>, ApiError> {
    text.filter(|t| !t.trim().is_empty())
        .map(|t| parse_time(name, t))
        .transpose()
}

/// A typed id from a path or parameter (`evt_…`, `dlv_…`, `tok_…`).
fn parse_id<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ApiError> {
    text.trim()
        .parse()
        .map_err(|_| ApiError::invalid(format!("{text:?} is not a valid {what} id")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_millis_or_rfc3339() {
        assert_eq!(
            parse_time("from", "1714521600000").ok(),
            Some(UnixMillis(1_714_521_600_000))
        );
        assert_eq!(
            parse_time("from", "2024-05-01T00:00:00Z").ok(),
            Some(UnixMillis(1_714_521_600_000))
        );
        assert!(parse_time("from", "yesterday").is_err());
        assert_eq!(parse_optional_time("to", Some(" ")).ok(), Some(None));
    }

    #[test]
    fn the_document_lists_every_path() {
        let doc = ApiDoc::openapi();
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        for expected in [
            "/api/v1/events",
            "/api/v1/events/{id}",
            "/api/v1/replay",
            "/api/v1/tokens/{id}",
        ] {
            assert!(
                paths.iter().any(|p| *p == expected),
                "{expected} missing from {paths:?}"
            );
        }
        assert!(serde_json::to_string(&doc).is_ok());
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None), DEFAULT_LIMIT);
        assert_eq!(limit(Some(0)), 1);
        assert_eq!(limit(Some(50_000)), MAX_LIMIT);
    }
}
