//! Who is calling the API. Two ways in:
//!
//! - `Authorization: Bearer ghk_…`: an API token, looked up by its SHA-256;
//!   a revoked or expired token is refused on the very next call.
//! - The console's `gatehouse_session` cookie, so the console's own scripts
//!   can call the API. A browser sends cookies with cross-site requests
//!   too, so state-changing calls made this way must also carry the
//!   session's CSRF token in `X-CSRF-Token`, which another site cannot read.

use axum::extract::FromRequestParts;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{Method, StatusCode};

use gatehouse_core::UnixMillis;

use crate::auth::session::{session_cookie, CurrentSession};
use crate::auth::{secret, Actor, Principal};
use crate::state::ConsoleState;

use super::error::ApiError;

/// The header that carries the session's CSRF token on cookie calls.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the caller authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// An API token.
    Token,
    /// The console's session cookie.
    Session,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who, with which role, from where.
    pub principal: Principal,
    /// How.
    pub via: Via,
}

impl FromRequestParts<ConsoleState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, Self::Rejection> {
        let remote_addr = state.remote_addr(parts);
        let now = UnixMillis::now();
        if let Some(value) = parts.headers.get(AUTHORIZATION) {
            let secret = value
                .to_str()
                .ok()
                .and_then(bearer)
                .ok_or_else(|| ApiError::unauthenticated("expected Authorization: Bearer <token>"))?;
            let token = state.store.token_by_hash(&secret::hash(secret), now).await?;
            return match token {
                Some(token) if token.is_active(now) => Ok(Self {
                    principal: Principal {
                        actor: Actor::Token {
                            id: token.id,
                            name: token.name,
                        },
                        role: token.role,
                        remote_addr,
                    },
                    via: Via::Token,
                }),
                _ => {
                    tracing::info!(remote_addr, "API call with an unknown, expired or revoked token.");
                    Err(ApiError::unauthenticated("the token is unknown, expired or revoked"))
                }
            };
        }
        if let Some(cookie) = session_cookie(&parts.headers) {
            let Some((session, user)) = state.store.session(&secret::hash(&cookie), now).await? else {
                return Err(ApiError::unauthenticated("the session has ended; log in again"));
            };
            let current = CurrentSession { session, user };
            if !is_safe(&parts.method) {
                let submitted = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
                if !current.csrf_matches(submitted) {
                    tracing::warn!(user = %current.user.username, path = %parts.uri.path(), "API call by cookie refused: missing or wrong CSRF token.");
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "csrf_failed",
                        "calls authenticated by the session cookie need the session's X-CSRF-Token header",
                    ));
                }
            }
            return Ok(Self {
                principal: current.principal(remote_addr),
                via: Via::Session,
            });
        }
        Err(ApiError::unauthenticated(
            "authenticate with Authorization: Bearer <token> or a console session",
        ))
    }
}

/// The secret of a `Bearer` authorization value (scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, secret) = value.trim().split_once(' ')?;
    let secret = secret.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !secret.is_empty()).then_some(secret)
}

/// Methods that change nothing, so need no CSRF token.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_tokens() {
        assert_eq!(bearer("Bearer ghk_abc"), Some("ghk_abc"));
        assert_eq!(bearer("bearer  ghk_abc "), Some("ghk_abc"));
        assert_eq!(bearer("Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("ghk_abc"), None);
    }

    #[test]
    fn only_reads_are_safe() {
        assert!(is_safe(&Method::GET));
        assert!(!is_safe(&Method::POST));
        assert!(!is_safe(&Method::DELETE));
    }
}
