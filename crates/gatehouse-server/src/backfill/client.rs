//! The provider API client a backfill uses: bearer token, timeout per
//! request, bounded retries (timeouts, connection errors, 408, 429, 5xx),
//! a cap on what is read, no redirects followed, and errors that say what
//! was asked and what came back.

use gatehouse_deliver::destination::http::{describe, status_text as status_name};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, USER_AGENT};
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full, Limited};

use gatehouse_core::Secret;
use gatehouse_deliver::destination::http::{client, HttpClient};

/// Largest answer read (a page of 100 Stripe events is well under 1 MiB).
const MAX_BODY: usize = 32 * 1024 * 1024;
/// The first wait between tries; it doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// A provider's API at one base URL.
pub struct ApiClient {
    base: String,
    authority: String,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    attempts: u32,
    github: bool,
    client: HttpClient,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("authenticated", &self.authorization.is_some())
            .finish_non_exhaustive()
    }
}

/// One answer.
pub(crate) struct Answer {
    /// The status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (at most [`MAX_BODY`]).
    pub body: Bytes,
}

/// How one try ended.
enum Try {
    Answered(Answer),
    Failed(String),
}

impl ApiClient {
    /// A client for `base` (validated: https, or http to loopback).
    pub fn new(
        base: &str,
        token: Option<Secret>,
        timeout: Duration,
        attempts: u32,
        github: bool,
    ) -> Result<Self, String> {
        let uri: http::Uri = base.parse().map_err(|_| format!("{base:?} is not a URL"))?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .ok_or_else(|| format!("{base:?} has no host"))?;
        let authorization = token
            .map(|token| {
                let text = token.expose_str().ok_or("api.token is not text")?;
                let mut value = HeaderValue::try_from(format!("Bearer {}", text.trim()))
                    .map_err(|_| "api.token cannot be sent in a header".to_string())?;
                value.set_sensitive(true);
                Ok::<_, String>(value)
            })
            .transpose()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            authority,
            authorization,
            timeout,
            attempts: attempts.max(1),
            github,
            client: client()?,
        })
    }

    /// The API's host (and port), for messages and records.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The URL of `path` (starting with `/`) on the API.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether `url` is on the API's own host (a pagination link must be:
    /// the provider's answer must not steer gatehouse, with its token,
    /// anywhere else).
    pub fn same_origin(&self, url: &str) -> bool {
        url.parse::<http::Uri>().ok().is_some_and(|uri| {
            uri.authority()
                .is_some_and(|a| a.as_str().eq_ignore_ascii_case(&self.authority))
                && self.base.starts_with(uri.scheme_str().unwrap_or_default())
        })
    }

    /// GETs `url` and parses the answer as JSON.
    pub(crate) async fn get_json(&self, url: &str) -> Result<(serde_json::Value, HeaderMap), String> {
        let answer = self.call(Method::GET, url).await?;
        let value = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("GET {url}: the answer is not JSON ({e}); is api.base_url the provider's API?"))?;
        Ok((value, answer.headers))
    }

    /// POSTs an empty body to `url`; returns the (2xx) status.
    pub(crate) async fn post(&self, url: &str) -> Result<u16, String> {
        Ok(self.call(Method::POST, url).await?.status)
    }

    /// Sends with retries; an answer other than 2xx after them, or one that
    /// is not worth retrying, is an error in words.
    async fn call(&self, method: Method, url: &str) -> Result<Answer, String> {
        let mut last = String::new();
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                let backoff = FIRST_BACKOFF * 2u32.saturating_pow(attempt - 2);
                tokio::time::sleep(backoff.min(Duration::from_secs(5))).await;
            }
            match self.try_once(&method, url).await {
                Try::Answered(answer) if (200..300).contains(&answer.status) => return Ok(answer),
                Try::Answered(answer) => {
                    let status = status_name(answer.status);
                    match answer.status {
                        408 | 429 | 500..=599 => last = status,
                        401 | 403 => {
                            return Err(format!(
                            "{method} {url}: {status}: the API refused the credentials; check the source's api.token"
                        ))
                        }
                        300..=399 => return Err(format!("{method} {url}: {status}: redirects are not followed")),
                        _ => return Err(format!("{method} {url}: {status}")),
                    }
                }
                Try::Failed(message) => last = message,
            }
            tracing::debug!(%method, %url, attempt, reason = %last, "API request failed; retrying.");
        }
        Err(format!(
            "{method} {url}: {last} (tried {} time{})",
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        ))
    }

    async fn try_once(&self, method: &Method, url: &str) -> Try {
        let mut request = http::Request::builder().method(method.clone()).uri(url);
        if let Some(headers) = request.headers_mut() {
            headers.insert(
                ACCEPT,
                HeaderValue::from_static(if self.github {
                    "application/vnd.github+json"
                } else {
                    "application/json"
                }),
            );
            headers.insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("gatehouse/", env!("CARGO_PKG_VERSION"))),
            );
            if self.github {
                headers.insert("x-github-api-version", HeaderValue::from_static("2022-11-28"));
            }
            if let Some(authorization) = &self.authorization {
                headers.insert(AUTHORIZATION, authorization.clone());
            }
        }
        let request = match request.body(Full::new(Bytes::new())) {
            Ok(request) => request,
            Err(error) => return Try::Failed(format!("cannot build the request: {error}")),
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| format!("connection failed: {}", describe(&e)))?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| format!("reading the answer failed: {e}"))?
                .to_bytes();
            Ok::<_, String>(Answer { status, headers, body })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Try::Failed(format!("no answer within {}", humantime::format_duration(self.timeout))),
            Ok(Err(message)) => Try::Failed(message),
            Ok(Ok(answer)) => Try::Answered(answer),
        }
    }
}
