//! One conditional `GET` of a polled list: validators sent back, the whole
//! exchange under one timeout, the body read up to a cap.

use gatehouse_deliver::destination::http::describe;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use gatehouse_deliver::destination::http::HttpClient;

/// Sent with every poll.
const USER_AGENT: &str = concat!("gatehouse/", env!("CARGO_PKG_VERSION"), " (poll)");

/// What a poll's `GET` answered.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The body of a 2xx; `None` for 304 Not Modified.
    pub(crate) body: Option<Bytes>,
    /// The answer's `ETag` (a 304 keeps the one sent).
    pub(crate) etag: Option<String>,
    /// The answer's `Last-Modified` (a 304 keeps the one sent).
    pub(crate) last_modified: Option<String>,
}

/// Why a poll's `GET` failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No complete answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed.
    #[error("request failed: {0}")]
    Transport(String),
    /// The server answered with a status other than 2xx or 304.
    #[error("HTTP {status}{hint}")]
    Status {
        /// The status.
        status: u16,
        /// A hint for the operator (check the credential).
        hint: &'static str,
        /// `Retry-After`, in seconds, when given.
        retry_after: Option<Duration>,
    },
    /// The body is larger than `poll.max_body`.
    #[error("the answer is larger than {0} bytes (poll.max_body)")]
    TooLarge(usize),
}

impl FetchError {
    /// How long the server asked us to wait, if it did.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// `GET url` with the validators from the last answer.
pub(crate) async fn get(
    client: &HttpClient,
    url: &http::Uri,
    auth: Option<(&HeaderName, &HeaderValue)>,
    etag: Option<&str>,
    last_modified: Option<&str>,
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, FetchError> {
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .header(http::header::USER_AGENT, USER_AGENT);
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    // Validators come from the server's own headers; one that no longer
    // parses as a header value is simply not sent.
    if let Some(value) = etag.and_then(|v| HeaderValue::from_str(v).ok()) {
        request = request.header(http::header::IF_NONE_MATCH, value);
    }
    if let Some(value) = last_modified.and_then(|v| HeaderValue::from_str(v).ok()) {
        request = request.header(http::header::IF_MODIFIED_SINCE, value);
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| FetchError::Transport(e.to_string()))?;

    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| FetchError::Transport(describe(&e)))?;
        let status = response.status();
        let header = |name: http::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Answer {
                body: None,
                etag: header(http::header::ETAG).or_else(|| etag.map(str::to_string)),
                last_modified: header(http::header::LAST_MODIFIED).or_else(|| last_modified.map(str::to_string)),
            });
        }
        if !status.is_success() {
            let retry_after = header(http::header::RETRY_AFTER)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(FetchError::Status {
                status: status.as_u16(),
                hint: match status {
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => " (check poll.auth)",
                    _ => "",
                },
                retry_after,
            });
        }
        let etag = header(http::header::ETAG);
        let last_modified = header(http::header::LAST_MODIFIED);
        let body = Limited::new(response.into_body(), max_body)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                    FetchError::TooLarge(max_body)
                } else {
                    FetchError::Transport(e.to_string())
                }
            })?
            .to_bytes();
        Ok(Answer {
            body: Some(body),
            etag,
            last_modified,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| FetchError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::HeaderMap;
    use axum::routing::get as route_get;

    /// Serves `/big`, `/same` (304 for `If-None-Match: "e1"`), `/busy` (429
    /// with `Retry-After`) and `/slow` on 127.0.0.1.
    async fn api() -> String {
        let app = axum::Router::new()
            .route("/big", route_get(|| async { "x".repeat(1000) }))
            .route(
                "/same",
                route_get(|headers: HeaderMap| async move {
                    let modified = headers.get("if-modified-since").is_some();
                    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some("\"e1\"") && modified {
                        (StatusCode::NOT_MODIFIED, [("etag", "\"e1\"")], String::new())
                    } else {
                        (StatusCode::OK, [("etag", "\"e1\"")], "[]".to_string())
                    }
                }),
            )
            .route(
                "/busy",
                route_get(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down") }),
            )
            .route(
                "/slow",
                route_get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    async fn fetch(base: &str, path: &str, etag: Option<&str>, max_body: usize) -> Result<Answer, FetchError> {
        let client = gatehouse_deliver::destination::http::client().expect("client");
        let url: http::Uri = format!("{base}{path}").parse().expect("url");
        get(
            &client,
            &url,
            None,
            etag,
            etag.map(|_| "Wed, 21 Oct 2015 07:28:00 GMT"),
            Duration::from_millis(500),
            max_body,
        )
        .await
    }

    #[tokio::test]
    async fn answers_caps_and_failures() {
        let base = api().await;
        let big = fetch(&base, "/big", None, 100).await.expect_err("too large");
        assert!(matches!(big, FetchError::TooLarge(100)), "{big:?}");
        let fits = fetch(&base, "/big", None, 1000).await.expect("fits");
        assert_eq!(fits.body.map(|b| b.len()), Some(1000));

        let first = fetch(&base, "/same", None, 1000).await.expect("first");
        assert_eq!(first.body.as_deref(), Some(&b"[]"[..]));
        assert_eq!(first.etag.as_deref(), Some("\"e1\""));
        let again = fetch(&base, "/same", Some("\"e1\""), 1000).await.expect("again");
        assert!(again.body.is_none(), "304: nothing to read");
        assert_eq!(again.etag.as_deref(), Some("\"e1\""));
        assert_eq!(again.last_modified.as_deref(), Some("Wed, 21 Oct 2015 07:28:00 GMT"));

        let busy = fetch(&base, "/busy", None, 1000).await.expect_err("429");
        assert_eq!(busy.retry_after(), Some(Duration::from_secs(7)));
        assert_eq!(busy.to_string(), "HTTP 429");

        let slow = fetch(&base, "/slow", None, 1000).await.expect_err("timeout");
        assert!(matches!(slow, FetchError::Timeout(_)), "{slow:?}");
        let refused = fetch("http://127.0.0.1:1", "/x", None, 1000)
            .await
            .expect_err("refused");
        assert!(matches!(refused, FetchError::Transport(_)), "{refused:?}");
    }
}
