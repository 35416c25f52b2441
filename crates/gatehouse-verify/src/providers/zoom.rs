//! Zoom: Slack's "v0" scheme under Zoom's header names,
//! `x-zm-request-timestamp` and `x-zm-signature: v0=<hex>`, HMAC-SHA256
//! keyed with the app's secret token over `v0:<timestamp>:<raw body>`.
//! Zoom documents no tolerance; we apply the source's, 300 s by default, in
//! both directions (Zoom signs each request, retries included: unconfirmed).
//!
//! Zoom's `endpoint.url_validation` request is signed like any event; once
//! verified it is a [`Kind::Handshake`] answered `200 application/json
//! {"plainToken":"…","encryptedToken":"<hex HMAC-SHA256(secret token,
//! plainToken)>"}`, keyed with the secret that verified the request. The
//! event type is the body's `event`. Zoom payloads carry no event id, so no
//! provider id is returned and deduplication falls back to the SHA-256 of
//! the body (which includes the millisecond `event_ts`).

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use hmac::Mac;

use gatehouse_core::{Secret, UnixMillis};

use crate::providers::slack::{parse_v0, v0_matching_key, verify_v0, V0Headers};
use crate::util::{keyed_sha256, HmacSha256};
use crate::{HandshakeReply, Identity, InboundRequest, Kind, Provider, Rejection, Verified};

/// Zoom's header names for the v0 scheme.
pub const ZOOM_HEADERS: V0Headers = V0Headers {
    timestamp: "x-zm-request-timestamp",
    signature: "x-zm-signature",
    scheme: "zoom-v0",
};
/// The tolerance when the source sets none (Zoom documents none).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// The event of Zoom's endpoint validation handshake.
const URL_VALIDATION: &str = "endpoint.url_validation";

/// Zoom's scheme for one source.
#[derive(Debug)]
pub struct Zoom {
    keys: Vec<HmacSha256>,
    tolerance: Duration,
}

impl Zoom {
    /// A verifier accepting any of `secrets` (secret tokens, used as their
    /// raw bytes).
    pub fn new(secrets: &[Secret], tolerance: Duration) -> Self {
        Self {
            keys: secrets.iter().map(|s| keyed_sha256(s.expose())).collect(),
            tolerance,
        }
    }
}

/// Verifies a Zoom request: pure function over the timestamp and signature
/// header values, raw body, prepared keys and now.
pub fn verify(
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    keys: &[HmacSha256],
    now: UnixMillis,
    tolerance: Duration,
) -> Result<Verified, Rejection> {
    verify_v0(&ZOOM_HEADERS, timestamp, signature, body, keys, now, tolerance)
}

/// The fields of a Zoom body that identify it.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    payload: Option<Payload<'a>>,
}

#[derive(serde::Deserialize)]
struct Payload<'a> {
    #[serde(borrow, default, rename = "plainToken")]
    plain_token: Option<Cow<'a, str>>,
}

/// Identifies a verified Zoom request. `key` answers a validation handshake:
/// the prepared key of the secret that verified the request.
pub fn identify(body: &[u8], key: Option<&HmacSha256>) -> Identity {
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(body) else {
        return Identity::event(None, None);
    };
    let event = envelope.event.filter(|e| !e.is_empty()).map(Cow::into_owned);
    if event.as_deref() == Some(URL_VALIDATION) {
        let plain_token = envelope.payload.and_then(|p| p.plain_token);
        if let (Some(plain_token), Some(key)) = (plain_token, key) {
            return Identity {
                provider_event_id: None,
                event_type: event,
                kind: Kind::Handshake(validation_reply(key, &plain_token)),
            };
        }
    }
    Identity::event(None, event)
}

/// The answer to an `endpoint.url_validation` request.
pub fn validation_reply(key: &HmacSha256, plain_token: &str) -> HandshakeReply {
    let mut mac = key.clone();
    mac.update(plain_token.as_bytes());
    let encrypted_token = hex::encode(mac.finalize().into_bytes());
    HandshakeReply {
        status: 200,
        content_type: "application/json",
        headers: Vec::new(),
        body: Bytes::from(
            serde_json::json!({ "plainToken": plain_token, "encryptedToken": encrypted_token }).to_string(),
        ),
    }
}

impl Provider for Zoom {
    fn name(&self) -> &'static str {
        "zoom"
    }

    fn verify(&self, request: &InboundRequest<'_>, now: UnixMillis) -> Result<Verified, Rejection> {
        verify(
            request.header(ZOOM_HEADERS.timestamp),
            request.header(ZOOM_HEADERS.signature),
            request.body,
            &self.keys,
            now,
            self.tolerance,
        )
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        // The handshake must be answered with the secret that signed it; find
        // it again (one HMAC per secret, and only identify's caller pays).
        let signing_key = match (
            request.header(ZOOM_HEADERS.timestamp),
            request
                .header(ZOOM_HEADERS.signature)
                .and_then(|s| parse_v0(ZOOM_HEADERS.signature, s).ok()),
        ) {
            (Some(timestamp), Some(signature)) => v0_matching_key(&self.keys, timestamp, request.body, &signature),
            _ => None,
        };
        // Only a verified request reaches identify, so a key always matches;
        // the first key is a harmless fallback.
        identify(request.body, self.keys.get(signing_key.unwrap_or(0)))
    }
}

/// Signs `body` as Zoom would at `timestamp`: the `x-zm-signature` value
/// (send the timestamp in `x-zm-request-timestamp`). Used by `gatehouse
/// send`, tests and benchmarks.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    crate::providers::slack::sign(secret, timestamp, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const SECRET: &str = "zoom-secret-token";
    const T: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"event":"meeting.started","payload":{"account_id":"D8cJuqWVQ623CI4Q8yQK0Q","object":{"id":"89712345678"}},"event_ts":1700000000123}"#;
    /// Computed with Python's `hmac` module: HMAC-SHA256 of
    /// `v0:1700000000:<BODY>` with key `zoom-secret-token`.
    const VECTOR: &str = "v0=e6a615bc7577c368af75810d5e34e75ce9cbcc0bd31dc06a29894a9802044bbd";
    const VALIDATION: &[u8] =
        br#"{"payload":{"plainToken":"qgg8vlvZRS6UYooatFL8Aw"},"event_ts":1654503849680,"event":"endpoint.url_validation"}"#;
    /// Python's `hmac`: hex HMAC-SHA256 of `qgg8vlvZRS6UYooatFL8Aw` with the secret.
    const ENCRYPTED_TOKEN: &str = "d9e0d764a78494688ba3f2d5c0ed4ca311394b4834d959759213424d2df961e3";

    fn provider(secrets: &[&str]) -> Zoom {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        Zoom::new(&secrets, DEFAULT_TOLERANCE)
    }

    fn check(p: &Zoom, signature: &str, body: &[u8], now: i64) -> Result<Verified, Rejection> {
        let headers = headers(&[("x-zm-request-timestamp", "1700000000"), ("x-zm-signature", signature)]);
        p.verify(&post(&headers, body), UnixMillis::from_secs(now))
    }

    #[test]
    fn python_made_vector_verifies() {
        let verified = check(&provider(&[SECRET]), VECTOR, BODY, T).unwrap();
        assert_eq!(verified.scheme(), "zoom-v0");
        assert_eq!(sign(SECRET.as_bytes(), T, BODY), VECTOR);
    }

    #[test]
    fn wrong_secret_and_changed_byte_are_rejected() {
        assert_eq!(
            check(&provider(&["other-token"]), VECTOR, BODY, T),
            Err(Rejection::NoMatchingSignature)
        );
        let mut body = BODY.to_vec();
        body[12] ^= 1;
        assert_eq!(
            check(&provider(&[SECRET]), VECTOR, &body, T),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let p = provider(&[SECRET]);
        assert!(matches!(
            check(&p, VECTOR, BODY, T + 301),
            Err(Rejection::TimestampTooOld { .. })
        ));
        assert!(matches!(
            check(&p, VECTOR, BODY, T - 301),
            Err(Rejection::TimestampInFuture { .. })
        ));
        assert!(check(&p, VECTOR, BODY, T + 300).is_ok());
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        let p = provider(&[SECRET]);
        let only_signature = headers(&[("x-zm-signature", VECTOR)]);
        assert_eq!(
            p.verify(&post(&only_signature, BODY), UnixMillis::from_secs(T)),
            Err(Rejection::MissingHeader("x-zm-request-timestamp".into()))
        );
        let only_timestamp = headers(&[("x-zm-request-timestamp", "1700000000")]);
        assert_eq!(
            p.verify(&post(&only_timestamp, BODY), UnixMillis::from_secs(T)),
            Err(Rejection::MissingHeader("x-zm-signature".into()))
        );
        for signature in ["", &VECTOR[3..], "v0=", "v0=0123"] {
            assert!(
                matches!(check(&p, signature, BODY, T), Err(Rejection::MalformedHeader { .. })),
                "{signature:?}"
            );
        }
    }

    #[test]
    fn second_secret_during_rotation() {
        let verified = check(&provider(&["old-token", SECRET]), VECTOR, BODY, T).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn identifies_event_without_an_id() {
        let headers = headers(&[]);
        assert_eq!(
            provider(&[SECRET]).identify(&post(&headers, BODY)),
            Identity::event(None, Some("meeting.started".into()))
        );
        assert_eq!(
            provider(&[SECRET]).identify(&post(&headers, b"[]")),
            Identity::event(None, None)
        );
    }

    #[test]
    fn url_validation_is_answered_with_the_signing_secret() {
        let signature = sign(SECRET.as_bytes(), T, VALIDATION);
        let headers = headers(&[("x-zm-request-timestamp", "1700000000"), ("x-zm-signature", &signature)]);
        let p = provider(&["old-token", SECRET]);
        let request = post(&headers, VALIDATION);
        assert_eq!(
            p.verify(&request, UnixMillis::from_secs(T)).unwrap().secret_index(),
            Some(1)
        );
        let identity = p.identify(&request);
        assert_eq!(identity.event_type.as_deref(), Some("endpoint.url_validation"));
        let Kind::Handshake(reply) = identity.kind else {
            panic!("expected a handshake, got {identity:?}");
        };
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type, "application/json");
        let answer: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(
            answer,
            serde_json::json!({ "plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": ENCRYPTED_TOKEN })
        );
    }
}
