//! `POST /in/{source}`: read the raw body within the limit, answer unsigned
//! handshakes, verify, identify, commit (group commit), then answer. Nothing
//! is acknowledged before its transaction has committed.

pub mod certificates;
pub mod commit;
pub mod failures;
pub mod limit;
pub mod proxy;
pub mod source;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use gatehouse_core::{Disposition, EventId, Header, NewEvent, UnixMillis, VerificationFailure};
use gatehouse_store::IngestOutcome;
use gatehouse_verify::{HandshakeReply, InboundRequest, Kind, Rejection};

use crate::telemetry::{IngestEvent, Metrics};
use certificates::CertificateFetcher;
use commit::{CommitError, Committer};
use failures::FailureRecorder;
use source::Source;

/// What the ingest handlers share.
#[derive(Clone, Debug)]
pub struct IngestState {
    /// Configured sources by name.
    pub sources: Arc<HashMap<String, Arc<Source>>>,
    /// Group commit.
    pub committer: Committer,
    /// Verification failure records.
    pub failures: FailureRecorder,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// `server.public_url`, for providers that sign the URL.
    pub public_url: Option<Arc<str>>,
    /// Proxies whose forwarding headers are believed.
    pub proxies: Arc<proxy::TrustedProxies>,
    /// Fetches signer certificates verifiers ask for.
    pub certificates: CertificateFetcher,
}

/// The `/in/{source}` routes.
pub fn router(state: IngestState) -> Router {
    Router::new().route("/in/{source}", any(receive)).with_state(state)
}

async fn receive(
    State(state): State<IngestState>,
    Path(source_name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let Some(source) = state.sources.get(&source_name).cloned() else {
        state
            .metrics
            .unknown_source
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return error(
            StatusCode::NOT_FOUND,
            "unknown_source",
            "no source with this name is configured",
        );
    };
    let (parts, body) = request.into_parts();
    let body = match read_body(&parts.headers, body, source.body_limit).await {
        Ok(body) => body,
        Err(response) => {
            if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
                state.metrics.emit(&source.name, IngestEvent::TooLarge);
            }
            return response;
        }
    };
    let url = state
        .proxies
        .public_url(state.public_url.as_deref(), peer.ip(), &parts.headers, &parts.uri);
    let remote = state.proxies.client_address(peer.ip(), &parts.headers).to_string();
    let inbound = InboundRequest {
        method: &parts.method,
        url: &url,
        headers: &parts.headers,
        body: &body,
    };
    if let Some(reply) = source.provider.unsigned_handshake(&inbound) {
        return handshake_response(reply);
    }
    if parts.method != Method::POST {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "webhooks are delivered with POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let received_at = UnixMillis::now();
    let mut verdict = source.provider.verify(&inbound, received_at);
    if let Err(Rejection::CertificateNeeded { url }) = &verdict {
        // The verifier allow-listed the URL; fetch it once, then verify again.
        if let Err(problem) = state.certificates.fetch_into(&source.certificates, url).await {
            tracing::warn!(source = %source.name, %problem, "Signer certificate unavailable; answering 503.");
            state.failures.record(VerificationFailure {
                source: source.name.to_string(),
                reason: "certificate_unavailable".into(),
                remote_addr: Some(remote.clone()),
                at: received_at,
            });
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "certificate_unavailable",
                "the signer certificate could not be fetched; retry later",
            );
        }
        verdict = source.provider.verify(&inbound, received_at);
    }
    let verified = match verdict {
        Ok(verified) => verified,
        Err(rejection) => {
            state.metrics.emit(
                &source.name,
                IngestEvent::Rejected {
                    reason: rejection.code(),
                    remote: &remote,
                },
            );
            state.failures.record(VerificationFailure {
                source: source.name.to_string(),
                reason: rejection.code().to_string(),
                remote_addr: Some(remote),
                at: received_at,
            });
            // The reason names a header or a timestamp problem, never
            // anything derived from a secret.
            if let Rejection::UnsupportedMediaType(_) = rejection {
                return error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    &rejection.to_string(),
                );
            }
            return error(StatusCode::UNAUTHORIZED, "invalid_signature", &rejection.to_string());
        }
    };
    if let Some(Err(wait)) = source
        .rate_limit
        .as_ref()
        .map(|limit| limit.admit(std::time::Instant::now()))
    {
        state.metrics.emit(&source.name, IngestEvent::RateLimited);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "this source's rate limit is reached; retry after the seconds in Retry-After",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(limit::retry_after_secs(wait)));
        return response;
    }

    let identity = source.provider.identify(&inbound);
    let id = EventId::new();
    let resolved = source.resolve(&inbound, &identity, id);
    let (disposition, handshake) = match identity.kind {
        Kind::Event if source.subscribes_to(resolved.event_type.as_deref()) => (Disposition::Accepted, None),
        Kind::Event => (Disposition::Ignored, None),
        Kind::Ping => (Disposition::Ping, None),
        Kind::Handshake(reply) => (Disposition::Ping, Some(reply)),
    };
    let deliveries = match disposition {
        Disposition::Accepted => source.deliveries_for(resolved.event_type.as_deref(), &body),
        Disposition::Ignored | Disposition::Ping => Vec::new(),
    };
    let event = NewEvent {
        id,
        source: source.name.clone(),
        received_at,
        dedup_key: resolved.dedup_key,
        provider_event_id: resolved.provider_event_id,
        event_type: resolved.event_type,
        disposition,
        headers: headers_of(&parts.headers),
        body,
        verification: verified.to_string(),
        remote_addr: Some(remote.clone()),
        deliveries,
        origin: gatehouse_core::EventOrigin::Live,
    };
    // The request's header values share hyper's read buffer too (see
    // `read_body`); everything needed from them is copied by now.
    drop(parts);
    match state.committer.commit(event).await {
        Ok(outcome) => {
            let (status, answered_id) = match outcome {
                IngestOutcome::Stored => {
                    let telemetry = match disposition {
                        Disposition::Accepted => IngestEvent::Accepted(&id),
                        Disposition::Ignored => IngestEvent::Ignored(&id),
                        Disposition::Ping => IngestEvent::Ping(&id),
                    };
                    state.metrics.emit(&source.name, telemetry);
                    (disposition.as_str(), id)
                }
                IngestOutcome::Duplicate { original } => {
                    state.metrics.emit(&source.name, IngestEvent::Duplicate(&original));
                    ("duplicate", original)
                }
            };
            match handshake {
                Some(reply) => handshake_response(reply),
                None => accepted(status, answered_id),
            }
        }
        Err(commit_error) => {
            state.metrics.emit(&source.name, IngestEvent::Unavailable);
            if let CommitError::Store(store_error) = &commit_error {
                if !store_error.is_unavailable() {
                    tracing::error!(error = %store_error, "Storage error during ingest.");
                }
            }
            let mut response = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the event could not be stored; retry later",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            response
        }
    }
}

/// Reads the body up to `limit` bytes: 413 past it (checked against
/// `Content-Length` first, so an honest oversized request is refused before
/// its body is read), 400 if the client breaks off mid-body.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            &format!("the body is larger than this source's limit of {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        // A copy of exactly the body's size: the chunk hyper hands over is a
        // slice of the connection's 8 KiB read buffer (hyper has already
        // moved on to a new one), and kept until the commit it would hold
        // that whole buffer and have it freed on the store's writer thread.
        Ok(collected) => Ok(Bytes::copy_from_slice(&collected.to_bytes())),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(_) => Err(error(
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            "the request body could not be read",
        )),
    }
}

fn headers_of(headers: &HeaderMap) -> Vec<Header> {
    headers
        .iter()
        .map(|(name, value)| Header {
            name: name.as_str().to_string(),
            value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        })
        .collect()
}

fn accepted(status: &'static str, id: EventId) -> Response {
    let body = format!(r#"{{"status":"{status}","id":"{id}"}}"#);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn handshake_response(reply: HandshakeReply) -> Response {
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    for (name, value) in reply.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// A stable `{error, detail}` body; details never carry internals.
pub(crate) fn error(status: StatusCode, code: &'static str, detail: &str) -> Response {
    let body = serde_json::json!({ "error": code, "detail": detail });
    (status, axum::Json(body)).into_response()
}
