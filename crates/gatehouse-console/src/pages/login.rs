//! Logging in and out of the console.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use http::header::{HeaderValue, RETRY_AFTER, SET_COOKIE};
use http::{HeaderMap, StatusCode};

use super::{render, safe_back, FormData, PageError, Posted, RemoteAddr, Shared, BASE};
use crate::auth::session::LoginError;

/// The login form.
#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    username: String,
    error: Option<String>,
}

fn next_of(form: &FormData) -> String {
    form.get("next")
        .filter(|next| safe_back(next))
        .unwrap_or(BASE)
        .to_string()
}

/// `GET /console/login`: the form, or straight on when already logged in.
pub(crate) async fn form(State(pages): State<Shared>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let query = FormData::parse(query.unwrap_or_default().as_bytes());
    let next = next_of(&query);
    if let Ok(Some(_)) = pages.sessions.current(&headers).await {
        return Redirect::to(&next).into_response();
    }
    render(
        StatusCode::OK,
        &LoginPage {
            next,
            username: String::new(),
            error: None,
        },
    )
}

/// `POST /console/login`: checks the password (rate limited per username
/// and address) and sets the session cookie.
pub(crate) async fn submit(
    State(pages): State<Shared>,
    RemoteAddr(remote): RemoteAddr,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !same_origin(&headers) {
        tracing::warn!("Console login refused: posted from another site.");
        return PageError::Forbidden("This login form was posted from another site.".into()).into_response();
    }
    let form = FormData::parse(&body);
    let next = next_of(&form);
    let username = form.get("username").unwrap_or_default().trim().to_string();
    let password = form.get("password").unwrap_or_default();
    let failed = |status: StatusCode, message: String| {
        render(
            status,
            &LoginPage {
                next: next.clone(),
                username: username.clone(),
                error: Some(message),
            },
        )
    };
    match pages.sessions.login(&username, password, remote.as_deref()).await {
        Ok(logged_in) => {
            let mut response = Redirect::to(&next).into_response();
            response
                .headers_mut()
                .append(SET_COOKIE, pages.sessions.set_cookie(&logged_in.cookie_secret));
            response
        }
        Err(LoginError::Invalid) => failed(StatusCode::UNAUTHORIZED, "Wrong username or password.".into()),
        Err(LoginError::Throttled { retry_after }) => {
            let secs = retry_after.as_secs().max(1);
            let mut response = failed(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many failed logins. Try again in {secs} s."),
            );
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
            response
        }
        Err(LoginError::Store(error)) => PageError::from(error).into_response(),
    }
}

/// `POST /console/logout`: ends the session and clears the cookie.
pub(crate) async fn logout(State(pages): State<Shared>, headers: HeaderMap, _posted: Posted) -> Response {
    if let Err(error) = pages.sessions.logout(&headers).await {
        return PageError::from(error).into_response();
    }
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(SET_COOKIE, pages.sessions.clear_cookie());
    response
}

/// Whether a post came from a page of this site, by its `Origin` header.
/// There is no session (so no CSRF token) before logging in; without this
/// another site could log a browser into an account of its choosing.
/// Requests without `Origin` (old browsers, scripts) are let through: they
/// cannot be a cross-site form post from a modern browser.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(http::header::HOST))
        .and_then(|host| host.to_str().ok())
        .unwrap_or("");
    !authority.is_empty() && authority.eq_ignore_ascii_case(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn login_posts_must_come_from_this_site() {
        assert!(same_origin(&headers(&[("host", "gw.test:8080")])));
        assert!(same_origin(&headers(&[
            ("host", "gw.test:8080"),
            ("origin", "http://gw.test:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "gw.test:8080"),
            ("origin", "https://evil.test")
        ])));
        assert!(!same_origin(&headers(&[("host", "gw.test"), ("origin", "null")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("x-forwarded-host", "gw.example.com"),
            ("origin", "https://gw.example.com")
        ])));
    }
}
