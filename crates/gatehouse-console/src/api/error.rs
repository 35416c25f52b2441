//! API failures as one stable JSON shape, `{"error": {"code", "message"}}`:
//! clients branch on `code`; storage causes are logged, never sent.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::{HeaderValue, WWW_AUTHENTICATE};
use http::StatusCode;

use gatehouse_store::StoreError;

use crate::actions::ActionError;

/// A failed API call.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable: `unauthenticated`, `forbidden`, `csrf_failed`, `not_found`,
    /// `invalid`, `conflict`, `unavailable`, `internal`.
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
}

impl ApiError {
    /// Any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401: no credentials, or they are not (or no longer) valid.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 422: the input is wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl From<ActionError> for ApiError {
    fn from(error: ActionError) -> Self {
        if let ActionError::Store(cause) = &error {
            tracing::error!(error = %cause, "API call failed in storage.");
        }
        Self::new(error.status(), error.code(), error.public_message())
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        ActionError::from(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"gatehouse\""));
        }
        response
    }
}
