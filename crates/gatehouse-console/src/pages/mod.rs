//! The console: server-rendered pages under `/console`, behind a login.
//!
//! Pages are Askama templates (checked at compile time, HTML-escaped by
//! default; nothing from an event is ever marked safe). Every button posts
//! a form carrying the session's CSRF token to a handler that calls the
//! matching function in [`crate::actions`], which checks the role and
//! writes the audit log; handlers only translate forms into those calls.
//!
//! - [`login`]: log in and out.
//! - [`overview`]: volume, failure rate, queues and lag, with SVG charts.
//! - [`events`]: search, event detail, retry and replay.
//! - [`queues`]: the exception queue and the approval queue.
//! - [`catalog`]: sources, routes (pause switch) and destinations.
//! - [`audit`]: the audit log.
//! - [`people`]: users and API tokens.
//! - [`tail`]: live tail over server-sent events.

mod assets;
mod audit;
mod catalog;
mod charts;
mod events;
mod login;
mod overview;
mod people;
mod queues;
mod tail;
mod view;

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use http::header::{HeaderValue, SET_COOKIE};
use http::request::Parts;
use http::{HeaderMap, StatusCode};

use crate::actions::ActionError;
use crate::auth::session::{CurrentSession, Sessions};
use crate::auth::Principal;
use crate::state::ConsoleState;
use gatehouse_core::Role;
use gatehouse_store::StoreError;

/// Where the console lives.
pub const BASE: &str = "/console";

/// The cookie that carries a one-line notice to the next page after a
/// form post (the post redirects, so a reload does not repeat it).
const FLASH_COOKIE: &str = "gatehouse_flash";

/// What every page handler shares.
pub(crate) struct Pages {
    state: ConsoleState,
    sessions: Sessions,
}

type Shared = Arc<Pages>;

/// The console's routes, with the state they need.
pub fn router(state: ConsoleState) -> Router {
    let sessions = Sessions::new(state.store.clone(), state.secure_cookies);
    let shared: Shared = Arc::new(Pages { state, sessions });
    Router::new()
        .route("/", get(|| async { Redirect::to(BASE) }))
        .route("/console", get(overview::page))
        .route("/console/", get(overview::page))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/events", get(events::search))
        .route("/console/events/{id}", get(events::detail))
        .route("/console/events/{id}/replay", post(events::replay))
        .route("/console/deliveries/{id}/retry", post(events::retry))
        .route("/console/exceptions", get(queues::exceptions))
        .route("/console/exceptions/retry", post(queues::retry_group))
        .route("/console/exceptions/selected", post(queues::selected))
        .route("/console/exceptions/resolve", post(queues::resolve))
        .route("/console/approvals", get(queues::approvals))
        .route("/console/approvals/decide", post(queues::decide))
        .route("/console/catalog", get(catalog::page))
        .route("/console/routes/{name}/pause", post(catalog::pause))
        .route("/console/routes/{name}/resume", post(catalog::resume))
        .route("/console/audit", get(audit::page))
        .route("/console/people", get(people::page))
        .route("/console/users", post(people::create_user))
        .route("/console/users/{name}/disable", post(people::disable_user))
        .route("/console/users/{name}/enable", post(people::enable_user))
        .route("/console/users/{name}/password", post(people::reset_password))
        .route("/console/tokens", post(people::create_token))
        .route("/console/tokens/{id}/revoke", post(people::revoke_token))
        .route("/console/tail", get(tail::page))
        .route("/console/tail/stream", get(tail::stream))
        .route("/console/assets/{file}", get(assets::serve))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(shared)
}

/// Headers on every console answer: no framing, no sniffing, no inline
/// script (so even an escaping bug could not run injected code), and no
/// caching of pages that show events.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if !headers.contains_key(http::header::CACHE_CONTROL) {
        headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The request's client address (behind trusted proxies, the client they
/// name), for the audit log and login limits.
fn remote_addr(pages: &Pages, parts: &Parts) -> Option<String> {
    pages.state.remote_addr(parts)
}

/// The request's client address as an extractor (absent when the server
/// was not started with connection info, as in some tests).
pub(crate) struct RemoteAddr(pub Option<String>);

impl FromRequestParts<Shared> for RemoteAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, pages: &Shared) -> Result<Self, Self::Rejection> {
        Ok(Self(remote_addr(pages, parts)))
    }
}

/// A one-line notice shown at the top of the next page.
#[derive(Clone, Debug)]
pub(crate) struct Flash {
    /// The text.
    pub text: String,
    /// Whether it reports a failure.
    pub error: bool,
}

/// Who is looking at a page, and what the layout needs to draw it.
#[derive(Clone, Debug)]
pub(crate) struct Ctx {
    /// The user's name.
    pub username: String,
    /// The user's role, as a word.
    pub role: &'static str,
    /// The session's CSRF token, put in every form.
    pub csrf: String,
    /// The notice carried over from the last form post.
    pub flash: Option<Flash>,
    /// Which nav item is lit.
    pub nav: &'static str,
    /// May retry, replay, approve, reject, resolve.
    pub can_operate: bool,
    /// May pause routes and manage users and tokens.
    pub can_admin: bool,
}

/// One link of the navigation bar.
pub(crate) struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub active: bool,
}

impl Ctx {
    /// The context for `current`'s session.
    pub fn new(current: &CurrentSession, flash: Option<Flash>, nav: &'static str) -> Self {
        let role = current.user.role;
        Ctx {
            username: current.user.username.clone(),
            role: role.as_str(),
            csrf: current.session.csrf_token.clone(),
            flash,
            nav,
            can_operate: role.allows(Role::Operator),
            can_admin: role.allows(Role::Admin),
        }
    }

    /// The navigation bar.
    pub fn nav_items(&self) -> Vec<NavItem> {
        [
            ("overview", "/console", "Overview"),
            ("events", "/console/events", "Events"),
            ("tail", "/console/tail", "Live tail"),
            ("exceptions", "/console/exceptions", "Exceptions"),
            ("approvals", "/console/approvals", "Approvals"),
            ("catalog", "/console/catalog", "Sources & routes"),
            ("audit", "/console/audit", "Audit log"),
            ("people", "/console/people", "Users & tokens"),
        ]
        .into_iter()
        .map(|(key, href, label)| NavItem {
            href,
            label,
            active: key == self.nav,
        })
        .collect()
    }
}

/// A logged-in user on a GET page. Without a live session the request is
/// sent to the login page.
pub(crate) struct Viewer {
    pub current: CurrentSession,
    flash: Option<Flash>,
}

impl Viewer {
    /// The layout context for a page under nav item `nav`.
    pub fn ctx(&self, nav: &'static str) -> Ctx {
        Ctx::new(&self.current, self.flash.clone(), nav)
    }

    /// Renders a page, clearing the notice it showed.
    pub fn render(&self, template: &impl Template) -> Response {
        let mut response = render(StatusCode::OK, template);
        if self.flash.is_some() {
            response.headers_mut().append(SET_COOKIE, flash_cookie("", 0));
        }
        response
    }
}

impl FromRequestParts<Shared> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, pages: &Shared) -> Result<Self, Self::Rejection> {
        let current = match pages.sessions.current(&parts.headers).await {
            Ok(Some(current)) => current,
            Ok(None) => return Err(to_login(parts)),
            Err(error) => return Err(PageError::from(error).into_response()),
        };
        Ok(Self {
            current,
            flash: read_flash(&parts.headers),
        })
    }
}

/// Sends the browser to the login page, to come back here afterwards.
fn to_login(parts: &Parts) -> Response {
    let back = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| safe_back(p))
        .unwrap_or(BASE);
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("next", back)
        .finish();
    Redirect::to(&format!("/console/login?{query}")).into_response()
}

/// Whether `path` is a console path on this site (never `//evil` or an
/// absolute URL), so redirecting to it cannot send anyone elsewhere.
pub(crate) fn safe_back(path: &str) -> bool {
    path.starts_with("/console") && !path.contains("//") && !path.contains('\\') && !path.contains(['\r', '\n'])
}

/// A form post from a logged-in user whose CSRF token checked out.
pub(crate) struct Posted {
    pub current: CurrentSession,
    pub remote_addr: Option<String>,
    pub form: FormData,
}

impl Posted {
    /// The principal to run actions as.
    pub fn principal(&self) -> Principal {
        self.current.principal(self.remote_addr.clone())
    }
}

impl FromRequest<Shared> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, pages: &Shared) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let current = match pages.sessions.current(&parts.headers).await {
            Ok(Some(current)) => current,
            Ok(None) => return Err(to_login(&parts)),
            Err(error) => return Err(PageError::from(error).into_response()),
        };
        let remote = remote_addr(pages, &parts);
        let path = parts.uri.path().to_owned();
        let request = Request::from_parts(parts, body);
        let bytes = Bytes::from_request(request, &())
            .await
            .map_err(IntoResponse::into_response)?;
        let form = FormData::parse(&bytes);
        if !current.csrf_matches(form.get("csrf")) {
            tracing::warn!(
                user = %current.user.username,
                path = %path,
                "Console form post refused: missing or wrong CSRF token."
            );
            return Err(PageError::Forbidden(
                "The form's security token is missing or out of date. Go back, reload the page and try again.".into(),
            )
            .into_response());
        }
        Ok(Self {
            current,
            remote_addr: remote,
            form,
        })
    }
}

/// A posted `application/x-www-form-urlencoded` body: repeated names kept
/// (bulk actions post one `id` per checkbox).
#[derive(Clone, Debug, Default)]
pub(crate) struct FormData {
    pairs: Vec<(String, String)>,
}

impl FormData {
    /// Parses a form body or a query string.
    pub fn parse(bytes: &[u8]) -> Self {
        Self {
            pairs: form_urlencoded::parse(bytes).into_owned().collect(),
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The first value of `name`, trimmed, when not empty.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|value| !value.is_empty())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .collect()
    }
}

/// The page to go back to after a form post: the form's `back` field when
/// it is a console path, else `fallback`.
pub(crate) fn back_to(form: &FormData, fallback: &str) -> String {
    form.get("back")
        .filter(|back| safe_back(back))
        .unwrap_or(fallback)
        .to_string()
}

/// Redirects after a successful post, with a notice for the next page.
pub(crate) fn done(back: &str, notice: impl Into<String>) -> Response {
    let mut response = Redirect::to(back).into_response();
    response
        .headers_mut()
        .append(SET_COOKIE, flash_cookie(&notice.into(), 30));
    response
}

fn flash_cookie(text: &str, max_age: u32) -> HeaderValue {
    let value: String = form_urlencoded::byte_serialize(text.as_bytes()).collect();
    let cookie = format!("{FLASH_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/console; Max-Age={max_age}");
    // byte_serialize leaves only URL-safe characters, valid in a header.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static("gatehouse_flash=; Max-Age=0"))
}

fn read_flash(headers: &HeaderMap) -> Option<Flash> {
    let raw = headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == FLASH_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())?;
    let text: String = form_urlencoded::parse(format!("t={raw}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())?;
    // The cookie is ours, but keep it to a line in case someone sets it.
    let text: String = text.chars().take(300).collect();
    Some(Flash { text, error: false })
}

/// Renders a template with a status.
pub(crate) fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "A console template failed to render.");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server log").into_response()
        }
    }
}

/// A page that could not be shown or an action that was refused.
#[derive(Debug)]
pub(crate) enum PageError {
    /// Nothing by that id or name.
    NotFound(String),
    /// Not allowed (role, CSRF).
    Forbidden(String),
    /// Bad input.
    Invalid(String),
    /// The action does not apply in the current state.
    Conflict(String),
    /// The database failed; details are logged, not shown.
    Store(StoreError),
}

impl From<StoreError> for PageError {
    fn from(error: StoreError) -> Self {
        PageError::Store(error)
    }
}

impl From<ActionError> for PageError {
    fn from(error: ActionError) -> Self {
        let message = error.public_message();
        match error {
            ActionError::Forbidden { .. } => PageError::Forbidden(message),
            ActionError::NotFound(_) => PageError::NotFound(message),
            ActionError::Invalid(_) => PageError::Invalid(message),
            ActionError::Conflict(_) => PageError::Conflict(message),
            ActionError::Store(error) => PageError::Store(error),
        }
    }
}

/// The error page (no layout: it may be shown without a session).
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    title: &'static str,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            PageError::NotFound(message) => (StatusCode::NOT_FOUND, "Not found", message),
            PageError::Forbidden(message) => (StatusCode::FORBIDDEN, "Not allowed", message),
            PageError::Invalid(message) => (StatusCode::UNPROCESSABLE_ENTITY, "Not accepted", message),
            PageError::Conflict(message) => (StatusCode::CONFLICT, "Nothing to do", message),
            PageError::Store(error) => {
                tracing::error!(%error, "Console page failed on the database.");
                let status = if error.is_unavailable() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                (
                    status,
                    "Database error",
                    "The database failed; see the server log.".to_string(),
                )
            }
        };
        render(
            status,
            &ErrorPage {
                status: status.as_u16(),
                title,
                message,
            },
        )
    }
}

/// What page handlers return.
pub(crate) type PageResult = Result<Response, PageError>;
