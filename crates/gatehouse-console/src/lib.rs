//! The place people act on events: the console pages, the JSON API under
//! `/api/v1`, and the access control both share.
//!
//! - [`auth`]: passwords (argon2), session and API token secrets (stored
//!   as SHA-256), roles, and who is asking ([`auth::Principal`]).
//! - [`state`]: what pages and handlers share: the store and a catalog of
//!   the configured sources, routes and destinations, without secrets.
//! - [`pages`]: the console's server-rendered pages under `/console`:
//!   login, overview, search, event detail, queues, audit, people, tail.
//! - [`actions`]: every action, role-checked and audited, for the console,
//!   the API and the CLI alike.
//! - [`api`]: the JSON API under `/api/v1` and its OpenAPI document.
//!
//! Every action (retry, replay, approve, resolve, pause…) goes through one
//! function that checks the role and writes the audit log, whichever of the
//! console, the API or the CLI asked for it.
#![deny(missing_docs)]

pub mod actions;
pub mod api;
pub mod auth;
pub mod pages;
pub mod state;

pub use state::{Catalog, ConsoleState};

/// Every console and API route, ready to merge into the server's router.
/// Each answer to a GET carries a `Server-Timing` header with the time
/// spent in the handler, so operators (and `bench/console.sh`) see the server's share of
/// a slow page apart from the network's.
pub fn router(state: ConsoleState) -> axum::Router {
    axum::Router::new()
        .merge(api::router(state.clone()))
        .merge(pages::router(state))
        .layer(axum::middleware::from_fn(server_timing))
}

/// Adds `Server-Timing: app;dur=<ms>` to the answer of a read. Posts (the
/// login form above all) do not get it: a precise server time is the kind
/// of signal a password-guessing client should not be handed.
async fn server_timing(request: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
    if request.method() != http::Method::GET {
        return next.run(request).await;
    }
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let millis = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = http::HeaderValue::from_str(&format!("app;dur={millis:.3}")) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}
