//! Slack: `X-Slack-Request-Timestamp` and `X-Slack-Signature: v0=<hex>`,
//! HMAC-SHA256 keyed with the app's signing secret over `v0:<timestamp>:<raw
//! body>` (the "v0" scheme, which Zoom reuses under other header names: see
//! [`V0Headers`]). Timestamps more than the tolerance (default 300 s) away
//! from now, in either direction, are refused.
//!
//! Identification, after verification:
//! - Events API (JSON): a `url_verification` request is a
//!   [`Kind::Handshake`] answered `200 application/json
//!   {"challenge":"…"}`; an `event_callback` has the type of its inner
//!   `event.type` (`app_mention`), anything else its top-level `type`
//!   (`app_rate_limited`); the dedup key is `event_id`.
//! - Interactivity (form body with a JSON `payload` field): the payload's
//!   `type` (`block_actions`, `view_submission`) and `trigger_id`.
//! - Slash commands (form body): the command as the type (`/deploy`) and
//!   `trigger_id` as the dedup key.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use hmac::Mac;

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{
    check_timestamp, constant_time_eq, decode_hex_into, is_form_urlencoded, keyed_sha256, parse_unix_secs, HmacSha256,
};
use crate::{HandshakeReply, Identity, InboundRequest, Kind, Provider, Rejection, Verified};

/// The header names, scheme name and prefix of one "v0" family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V0Headers {
    /// The unix-seconds timestamp header, signed.
    pub timestamp: &'static str,
    /// The `v0=<hex>` signature header.
    pub signature: &'static str,
    /// The scheme reported in [`Verified`].
    pub scheme: &'static str,
}

/// Slack's header names.
pub const SLACK_HEADERS: V0Headers = V0Headers {
    timestamp: "x-slack-request-timestamp",
    signature: "x-slack-signature",
    scheme: "slack-v0",
};
/// Slack's documented tolerance, applied to old and future timestamps alike.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// What precedes the hex digest in the signature header.
const SIGNATURE_PREFIX: &str = "v0=";
/// The event type of Slack's signed handshake.
const URL_VERIFICATION: &str = "url_verification";
/// The envelope type whose real type is `event.type`.
const EVENT_CALLBACK: &str = "event_callback";

/// Slack's scheme for one source.
#[derive(Debug)]
pub struct Slack {
    keys: Vec<HmacSha256>,
    tolerance: Duration,
}

impl Slack {
    /// A verifier accepting any of `secrets` (signing secrets, used as their
    /// raw bytes).
    pub fn new(secrets: &[Secret], tolerance: Duration) -> Self {
        Self {
            keys: secrets.iter().map(|s| keyed_sha256(s.expose())).collect(),
            tolerance,
        }
    }
}

/// Parses a `v0=<hex>` signature header value into its digest.
pub fn parse_v0(header: &'static str, value: &str) -> Result<[u8; 32], Rejection> {
    let malformed = |problem| Rejection::MalformedHeader {
        header: header.into(),
        problem,
    };
    let hex_digest = value
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(malformed("expected v0=<hex>"))?;
    let mut digest = [0u8; 32];
    if !decode_hex_into(hex_digest, &mut digest) {
        return Err(malformed("expected 64 hex digits after v0="));
    }
    Ok(digest)
}

/// HMAC-SHA256 of `v0:<timestamp>:<body>`, the timestamp as the sender wrote it.
pub fn v0_digest(key: &HmacSha256, timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = key.clone();
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The index of the key whose `v0` digest of the request equals `signature`.
pub fn v0_matching_key(keys: &[HmacSha256], timestamp: &str, body: &[u8], signature: &[u8; 32]) -> Option<usize> {
    keys.iter()
        .position(|key| constant_time_eq(&v0_digest(key, timestamp, body), signature))
}

/// Verifies a "v0" request (Slack, Zoom): pure function over the timestamp
/// and signature header values, the raw body, prepared keys and now.
pub fn verify_v0(
    names: &V0Headers,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    keys: &[HmacSha256],
    now: UnixMillis,
    tolerance: Duration,
) -> Result<Verified, Rejection> {
    let timestamp = timestamp.ok_or(Rejection::MissingHeader(names.timestamp.into()))?;
    let signature = signature.ok_or(Rejection::MissingHeader(names.signature.into()))?;
    let secs = parse_unix_secs(names.timestamp, timestamp)?;
    let signature = parse_v0(names.signature, signature)?;
    check_timestamp(secs, now, tolerance)?;
    v0_matching_key(keys, timestamp, body, &signature)
        .map(|index| Verified::by_secret(names.scheme, index))
        .ok_or(Rejection::NoMatchingSignature)
}

/// Verifies a Slack request (see [`verify_v0`]).
pub fn verify(
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    keys: &[HmacSha256],
    now: UnixMillis,
    tolerance: Duration,
) -> Result<Verified, Rejection> {
    verify_v0(&SLACK_HEADERS, timestamp, signature, body, keys, now, tolerance)
}

/// The fields of a Slack JSON body that identify it.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    challenge: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    trigger_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Inner<'a>>,
}

#[derive(serde::Deserialize)]
struct Inner<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

fn owned(value: Option<Cow<'_, str>>) -> Option<String> {
    value.filter(|v| !v.is_empty()).map(Cow::into_owned)
}

/// Identifies a verified Slack request from its content type and body.
pub fn identify(content_type: Option<&str>, body: &[u8]) -> Identity {
    if is_form_urlencoded(content_type) {
        return identify_form(body);
    }
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(body) else {
        return Identity::event(None, None);
    };
    let kind = envelope.kind.filter(|k| !k.is_empty());
    if kind.as_deref() == Some(URL_VERIFICATION) {
        if let Some(challenge) = envelope.challenge {
            return Identity {
                provider_event_id: None,
                event_type: Some(URL_VERIFICATION.to_owned()),
                kind: Kind::Handshake(challenge_reply(&challenge)),
            };
        }
    }
    let event_type = match kind {
        Some(kind) if kind == EVENT_CALLBACK => {
            owned(envelope.event.and_then(|e| e.kind)).or_else(|| Some(EVENT_CALLBACK.to_owned()))
        }
        other => owned(other),
    };
    Identity::event(owned(envelope.event_id), event_type)
}

/// A form body: an interactivity `payload`, or a slash command.
fn identify_form(body: &[u8]) -> Identity {
    let mut command = None;
    let mut trigger_id = None;
    for (name, value) in form_urlencoded::parse(body) {
        match name.as_ref() {
            "payload" => {
                return match serde_json::from_str::<Envelope<'_>>(&value) {
                    Ok(payload) => Identity::event(owned(payload.trigger_id), owned(payload.kind)),
                    Err(_) => Identity::event(None, None),
                }
            }
            "command" => command = Some(value),
            "trigger_id" => trigger_id = Some(value),
            _ => {}
        }
    }
    Identity::event(owned(trigger_id), owned(command))
}

/// The answer to a `url_verification` handshake.
fn challenge_reply(challenge: &str) -> HandshakeReply {
    HandshakeReply {
        status: 200,
        content_type: "application/json",
        headers: Vec::new(),
        body: Bytes::from(serde_json::json!({ "challenge": challenge }).to_string()),
    }
}

impl Provider for Slack {
    fn name(&self) -> &'static str {
        "slack"
    }

    fn verify(&self, request: &InboundRequest<'_>, now: UnixMillis) -> Result<Verified, Rejection> {
        verify(
            request.header(SLACK_HEADERS.timestamp),
            request.header(SLACK_HEADERS.signature),
            request.body,
            &self.keys,
            now,
            self.tolerance,
        )
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        identify(request.header(http::header::CONTENT_TYPE.as_str()), request.body)
    }
}

/// Signs `body` as Slack would at `timestamp`: the `X-Slack-Signature`
/// value (send the timestamp in `X-Slack-Request-Timestamp`). Used by
/// `gatehouse send`, tests and benchmarks.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = v0_digest(&keyed_sha256(secret), &timestamp.to_string(), body);
    format!("{SIGNATURE_PREFIX}{}", hex::encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const T: i64 = 1_531_420_618;
    const BODY: &[u8] = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const VECTOR: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
    const FORM: &str = "application/x-www-form-urlencoded";

    fn keys(secrets: &[&str]) -> Vec<HmacSha256> {
        secrets.iter().map(|s| keyed_sha256(s.as_bytes())).collect()
    }

    fn check(signature: &str, body: &[u8], secrets: &[&str], now: i64) -> Result<Verified, Rejection> {
        verify(
            Some("1531420618"),
            Some(signature),
            body,
            &keys(secrets),
            UnixMillis::from_secs(now),
            DEFAULT_TOLERANCE,
        )
    }

    #[test]
    fn published_vector_verifies() {
        let verified = check(VECTOR, BODY, &[SECRET], T).unwrap();
        assert_eq!(verified.scheme(), "slack-v0");
        assert_eq!(verified.secret_index(), Some(0));
        assert_eq!(sign(SECRET.as_bytes(), T, BODY), VECTOR);
    }

    #[test]
    fn wrong_secret_is_rejected() {
        assert_eq!(
            check(VECTOR, BODY, &["8f742231b10e8888abcd99yyyzzz85a6"], T),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn one_changed_byte_is_rejected() {
        let mut body = BODY.to_vec();
        body[7] ^= 1;
        assert_eq!(check(VECTOR, &body, &[SECRET], T), Err(Rejection::NoMatchingSignature));
        // The timestamp is signed too.
        assert_eq!(
            verify(
                Some("1531420619"),
                Some(VECTOR),
                BODY,
                &keys(&[SECRET]),
                UnixMillis::from_secs(T),
                DEFAULT_TOLERANCE
            ),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        assert!(matches!(
            check(VECTOR, BODY, &[SECRET], T + 301),
            Err(Rejection::TimestampTooOld { .. })
        ));
        assert!(matches!(
            check(VECTOR, BODY, &[SECRET], T - 301),
            Err(Rejection::TimestampInFuture { .. })
        ));
        assert!(check(VECTOR, BODY, &[SECRET], T + 300).is_ok());
        assert!(check(VECTOR, BODY, &[SECRET], T - 300).is_ok());
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        let k = keys(&[SECRET]);
        let now = UnixMillis::from_secs(T);
        assert_eq!(
            verify(None, Some(VECTOR), BODY, &k, now, DEFAULT_TOLERANCE),
            Err(Rejection::MissingHeader(SLACK_HEADERS.timestamp.into()))
        );
        assert_eq!(
            verify(Some("1531420618"), None, BODY, &k, now, DEFAULT_TOLERANCE),
            Err(Rejection::MissingHeader(SLACK_HEADERS.signature.into()))
        );
        for (timestamp, signature) in [
            ("1531420618", ""),
            ("1531420618", &VECTOR[3..]),
            (
                "1531420618",
                "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            ),
            ("1531420618", "v0=zz"),
            ("1531420618", &VECTOR[..VECTOR.len() - 1]),
            ("soon", VECTOR),
            ("-1531420618", VECTOR),
        ] {
            assert!(
                matches!(
                    verify(Some(timestamp), Some(signature), BODY, &k, now, DEFAULT_TOLERANCE),
                    Err(Rejection::MalformedHeader { .. })
                ),
                "{timestamp:?} {signature:?}"
            );
        }
    }

    #[test]
    fn second_secret_during_rotation() {
        let verified = check(VECTOR, BODY, &["old signing secret", SECRET], T).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn verifies_and_identifies_the_published_slash_command() {
        let headers = headers(&[
            ("X-Slack-Request-Timestamp", "1531420618"),
            ("X-Slack-Signature", VECTOR),
            ("Content-Type", FORM),
        ]);
        let provider = Slack::new(&[Secret::new(SECRET)], DEFAULT_TOLERANCE);
        let request = post(&headers, BODY);
        assert!(provider.verify(&request, UnixMillis::from_secs(T)).is_ok());
        assert_eq!(
            provider.identify(&request),
            Identity::event(
                Some("398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c".into()),
                Some("/webhook-collect".into())
            )
        );
    }

    #[test]
    fn url_verification_is_a_handshake_echoing_the_challenge() {
        let body = br#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        let identity = identify(Some("application/json"), body);
        let Kind::Handshake(reply) = identity.kind else {
            panic!("expected a handshake, got {identity:?}");
        };
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type, "application/json");
        assert_eq!(
            reply.body,
            Bytes::from_static(br#"{"challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}"#)
        );
        assert_eq!(identity.event_type.as_deref(), Some("url_verification"));
        // A challenge needing JSON escapes is escaped, not spliced in.
        let identity = identify(None, br#"{"type":"url_verification","challenge":"a\"b"}"#);
        let Kind::Handshake(reply) = identity.kind else {
            panic!("expected a handshake");
        };
        assert_eq!(reply.body, Bytes::from_static(br#"{"challenge":"a\"b"}"#));
    }

    #[test]
    fn signed_url_verification_verifies_before_it_is_answered() {
        let body = br#"{"type":"url_verification","challenge":"c1"}"#;
        let signature = sign(SECRET.as_bytes(), T, body);
        let provider = Slack::new(&[Secret::new(SECRET)], DEFAULT_TOLERANCE);
        let signed = headers(&[
            ("X-Slack-Request-Timestamp", "1531420618"),
            ("X-Slack-Signature", &signature),
        ]);
        assert!(provider.verify(&post(&signed, body), UnixMillis::from_secs(T)).is_ok());
        let unsigned = headers(&[("X-Slack-Request-Timestamp", "1531420618")]);
        assert!(provider
            .verify(&post(&unsigned, body), UnixMillis::from_secs(T))
            .is_err());
    }

    #[test]
    fn identifies_event_callbacks_and_other_envelopes() {
        let callback = br#"{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention","text":"hi"},"team_id":"T1"}"#;
        assert_eq!(
            identify(Some("application/json"), callback),
            Identity::event(Some("Ev08MFMKH6".into()), Some("app_mention".into()))
        );
        let no_inner = br#"{"type":"event_callback","event_id":"Ev1"}"#;
        assert_eq!(
            identify(None, no_inner),
            Identity::event(Some("Ev1".into()), Some("event_callback".into()))
        );
        let rate_limited =
            br#"{"token":"x","type":"app_rate_limited","team_id":"T1","minute_rate_limited":1518467820}"#;
        assert_eq!(
            identify(None, rate_limited),
            Identity::event(None, Some("app_rate_limited".into()))
        );
        assert_eq!(identify(None, b"not json"), Identity::event(None, None));
    }

    #[test]
    fn identifies_interactivity_payloads() {
        let body = b"payload=%7B%22type%22%3A%22block_actions%22%2C%22trigger_id%22%3A%2213345224609.738474920.8088930838d88f008e0%22%7D";
        assert_eq!(
            identify(Some(FORM), body),
            Identity::event(
                Some("13345224609.738474920.8088930838d88f008e0".into()),
                Some("block_actions".into())
            )
        );
        assert_eq!(identify(Some(FORM), b"payload=nope"), Identity::event(None, None));
    }
}
