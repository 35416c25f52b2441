//! Users and API tokens (admin only, reads included), and `GET /me` for
//! any caller to see who the API thinks it is.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use gatehouse_core::{ApiToken, Role, TokenId, User};

use crate::actions;
use crate::state::ConsoleState;

use super::auth::{Caller, Via};
use super::error::{ApiError, ErrorBody};
use super::{parse_id, Body};

pub(super) fn router() -> Router<ConsoleState> {
    Router::new()
        .route("/api/v1/me", get(me))
        .route("/api/v1/users", get(list_users).post(create_user))
        .route("/api/v1/users/{name}/disable", post(disable_user))
        .route("/api/v1/users/{name}/enable", post(enable_user))
        .route("/api/v1/users/{name}/password", post(reset_password))
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", axum::routing::delete(revoke_token))
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct Me {
    /// As the audit log names it: `user:alice`, `token:tok_…`.
    actor: String,
    /// `viewer`, `operator` or `admin`.
    #[schema(value_type = String)]
    role: Role,
    /// `token` or `session`.
    #[schema(value_type = String)]
    via: Via,
}

/// Who the API thinks the caller is.
#[utoipa::path(
    get, path = "/api/v1/me", tag = "people",
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "Not authenticated", body = ErrorBody),
    )
)]
pub(super) async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        actor: caller.principal.actor.audit_name(),
        role: caller.principal.role,
        via: caller.via,
    })
}

/// Every user (admin).
#[utoipa::path(
    get, path = "/api/v1/users", tag = "people",
    responses(
        (status = 200, description = "Users by name (never a password hash)", body = Vec<Object>),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
    )
)]
pub(super) async fn list_users(State(state): State<ConsoleState>, caller: Caller) -> Result<Json<Vec<User>>, ApiError> {
    actions::require(&caller.principal, Role::Admin)?;
    Ok(Json(state.store.list_users().await?))
}

/// A user to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewUserRequest {
    /// The login name.
    username: String,
    /// `viewer`, `operator` or `admin`.
    #[schema(value_type = String)]
    role: Role,
    /// At least 12 characters.
    password: String,
}

/// Create a user (admin).
#[utoipa::path(
    post, path = "/api/v1/users", tag = "people", request_body = NewUserRequest,
    responses(
        (status = 201, description = "Created", body = Object),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 422, description = "Bad name or weak password", body = ErrorBody),
    )
)]
pub(super) async fn create_user(
    State(state): State<ConsoleState>,
    caller: Caller,
    Body(request): Body<NewUserRequest>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    actions::require(&caller.principal, Role::Admin)?;
    let user = actions::create_user(
        &*state.store,
        &caller.principal,
        &request.username,
        request.role,
        &request.password,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Disable a user: it cannot log in and its sessions end (admin).
#[utoipa::path(
    post, path = "/api/v1/users/{name}/disable", tag = "people",
    params(("name" = String, Path, description = "The username")),
    responses(
        (status = 200, description = "The user, disabled", body = Object),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub(super) async fn disable_user(
    State(state): State<ConsoleState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<User>, ApiError> {
    actions::require(&caller.principal, Role::Admin)?;
    Ok(Json(
        actions::set_user_disabled(&*state.store, &caller.principal, &name, true).await?,
    ))
}

/// Enable a disabled user again (admin).
#[utoipa::path(
    post, path = "/api/v1/users/{name}/enable", tag = "people",
    params(("name" = String, Path, description = "The username")),
    responses(
        (status = 200, description = "The user, enabled", body = Object),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub(super) async fn enable_user(
    State(state): State<ConsoleState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<User>, ApiError> {
    actions::require(&caller.principal, Role::Admin)?;
    Ok(Json(
        actions::set_user_disabled(&*state.store, &caller.principal, &name, false).await?,
    ))
}

/// A new password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordRequest {
    /// At least 12 characters.
    password: String,
}

/// Set a user's password; its sessions end (admin).
#[utoipa::path(
    post, path = "/api/v1/users/{name}/password", tag = "people",
    params(("name" = String, Path, description = "The username")),
    request_body = PasswordRequest,
    responses(
        (status = 204, description = "Changed"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 422, description = "Weak password", body = ErrorBody),
    )
)]
pub(super) async fn reset_password(
    State(state): State<ConsoleState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(request): Body<PasswordRequest>,
) -> Result<StatusCode, ApiError> {
    actions::require(&caller.principal, Role::Admin)?;
    actions::reset_password(&*state.store, &caller.principal, &name, &request.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Every API token, newest first (admin). Secrets are never shown again.
#[utoipa::path(
    get, path = "/api/v1/tokens", tag = "people",
    responses(
        (status = 200, description = "Tokens (no secrets)", body = Vec<Object>),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
    )
)]
pub(super) async fn list_tokens(
    State(state): State<ConsoleState>,
    caller: Caller,
) -> Result<Json<Vec<ApiToken>>, ApiError> {
    actions::require(&caller.principal, Role::Admin)?;
    Ok(Json(state.store.list_tokens().await?))
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NewTokenRequest {
    /// What it is for.
    name: String,
    /// `viewer`, `operator` or `admin`.
    #[schema(value_type = String)]
    role: Role,
    /// When it stops working (unix ms or RFC 3339); never by default.
    #[schema(value_type = Option<String>)]
    expires_at: Option<serde_json::Value>,
}

/// A created token with its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct CreatedTokenAnswer {
    /// The token (no secret).
    #[schema(value_type = Object)]
    token: ApiToken,
    /// `ghk_…`: store it now; it cannot be shown again.
    secret: String,
}

/// Create an API token; the answer holds its secret, once (admin).
#[utoipa::path(
    post, path = "/api/v1/tokens", tag = "people", request_body = NewTokenRequest,
    responses(
        (status = 201, description = "Created", body = CreatedTokenAnswer),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 422, description = "Bad name or expiry", body = ErrorBody),
    )
)]
pub(super) async fn create_token(
    State(state): State<ConsoleState>,
    caller: Caller,
    Body(request): Body<NewTokenRequest>,
) -> Result<(StatusCode, Json<CreatedTokenAnswer>), ApiError> {
    actions::require(&caller.principal, Role::Admin)?;
    let expires_at = match &request.expires_at {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => {
            Some(gatehouse_core::UnixMillis(n.as_i64().ok_or_else(|| {
                ApiError::invalid("expires_at must be unix milliseconds or RFC 3339")
            })?))
        }
        Some(serde_json::Value::String(text)) => Some(super::parse_time("expires_at", text)?),
        Some(_) => return Err(ApiError::invalid("expires_at must be unix milliseconds or RFC 3339")),
    };
    let created = actions::create_token(
        &*state.store,
        &caller.principal,
        &request.name,
        request.role,
        expires_at,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenAnswer {
            token: created.token,
            secret: created.secret,
        }),
    ))
}

/// Revoke a token: it stops working at once (admin).
#[utoipa::path(
    delete, path = "/api/v1/tokens/{id}", tag = "people",
    params(("id" = String, Path, description = "The token id (tok_…)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not authenticated", body = ErrorBody),
        (status = 403, description = "Needs the admin role", body = ErrorBody),
        (status = 404, description = "No such active token", body = ErrorBody),
    )
)]
pub(super) async fn revoke_token(
    State(state): State<ConsoleState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    actions::require(&caller.principal, Role::Admin)?;
    let id: TokenId = parse_id("token", &id)?;
    actions::revoke_token(&*state.store, &caller.principal, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
