//! Mailgun (JSON webhooks): the signature travels in the body,
//! `{"signature":{"timestamp","token","signature"},"event-data":{…}}`, where
//! `signature` = hex HMAC-SHA256(webhook signing key, timestamp + token).
//! The timestamp must be within the tolerance of now, 900 s by default, in
//! both directions.
//!
//! Only the timestamp and token are signed, not the event data, so a
//! captured signature could be replayed with any event inside the window.
//! The defence is that the token is the dedup key: a second request with a
//! token already seen is stored as a duplicate and never routed, which makes
//! the event store the replay cache. The event type is `event-data.event`
//! (`delivered`, `failed`, `opened`). The legacy form-encoded webhooks are
//! not supported: they are refused as an unsupported media type (415)
//! before anything else is looked at.

use std::borrow::Cow;
use std::time::Duration;

use hmac::Mac;

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{
    check_timestamp, decode_hex_into, first_matching_key, is_form_urlencoded, keyed_sha256, parse_unix_secs, HmacSha256,
};
use crate::{Identity, InboundRequest, Provider, Rejection, Verified};

/// Mailgun's documented maximum age of a signature.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(900);
/// Mailgun's tokens are 50 characters; anything far longer is not one.
const MAX_TOKEN_LEN: usize = 256;

/// Mailgun's scheme for one source.
#[derive(Debug)]
pub struct Mailgun {
    keys: Vec<HmacSha256>,
    tolerance: Duration,
}

impl Mailgun {
    /// A verifier accepting any of `secrets` (webhook signing keys, used as
    /// their raw bytes).
    pub fn new(secrets: &[Secret], tolerance: Duration) -> Self {
        Self {
            keys: secrets.iter().map(|s| keyed_sha256(s.expose())).collect(),
            tolerance,
        }
    }
}

/// The body's `signature` object.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    signature: Option<SignatureFields<'a>>,
    #[serde(borrow, default, rename = "event-data")]
    event_data: Option<EventData<'a>>,
}

#[derive(serde::Deserialize)]
struct SignatureFields<'a> {
    #[serde(borrow, default)]
    timestamp: Option<Timestamp<'a>>,
    #[serde(borrow, default)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    signature: Option<Cow<'a, str>>,
}

/// Mailgun sends the timestamp as a string; a number is accepted too.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Timestamp<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Number(u64),
}

#[derive(serde::Deserialize)]
struct EventData<'a> {
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
}

/// Verifies a Mailgun request: pure function over the raw body, the
/// prepared keys and now.
pub fn verify(body: &[u8], keys: &[HmacSha256], now: UnixMillis, tolerance: Duration) -> Result<Verified, Rejection> {
    let envelope: Envelope<'_> =
        serde_json::from_slice(body).map_err(|_| Rejection::MalformedBody("not a JSON object"))?;
    let fields = envelope
        .signature
        .ok_or(Rejection::MalformedBody("no signature object"))?;
    let timestamp = match fields.timestamp {
        Some(Timestamp::Text(text)) => text,
        Some(Timestamp::Number(number)) => Cow::Owned(number.to_string()),
        None => return Err(Rejection::MalformedBody("no signature.timestamp")),
    };
    let token = fields.token.ok_or(Rejection::MalformedBody("no signature.token"))?;
    let signature = fields
        .signature
        .ok_or(Rejection::MalformedBody("no signature.signature"))?;
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Rejection::MalformedBody("signature.token is empty or too long"));
    }
    let mut digest = [0u8; 32];
    if !decode_hex_into(&signature, &mut digest) {
        return Err(Rejection::MalformedBody("signature.signature is not 64 hex digits"));
    }
    let secs = parse_unix_secs("signature.timestamp", &timestamp)
        .map_err(|_| Rejection::MalformedBody("signature.timestamp is not unix seconds"))?;
    check_timestamp(secs, now, tolerance)?;
    first_matching_key(keys, &digest, |mac| {
        mac.update(timestamp.as_bytes());
        mac.update(token.as_bytes());
    })
    .map(|index| Verified::by_secret("mailgun-sha256", index))
    .ok_or(Rejection::NoMatchingSignature)
}

/// Whether the content type is one of the legacy webhooks' forms.
fn is_legacy_form(content_type: Option<&str>) -> bool {
    is_form_urlencoded(content_type)
        || content_type
            .and_then(|value| value.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// Identifies a verified Mailgun request: the token (the replay cache key)
/// and `event-data.event`.
pub fn identify(body: &[u8]) -> Identity {
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(body) else {
        return Identity::event(None, None);
    };
    let owned = |value: Option<Cow<'_, str>>| value.filter(|v| !v.is_empty()).map(Cow::into_owned);
    Identity::event(
        owned(envelope.signature.and_then(|s| s.token)),
        owned(envelope.event_data.and_then(|e| e.event)),
    )
}

impl Provider for Mailgun {
    fn name(&self) -> &'static str {
        "mailgun"
    }

    fn verify(&self, request: &InboundRequest<'_>, now: UnixMillis) -> Result<Verified, Rejection> {
        if is_legacy_form(request.header(http::header::CONTENT_TYPE.as_str())) {
            return Err(Rejection::UnsupportedMediaType(
                "Mailgun's legacy form-encoded webhooks are not supported; use its JSON webhooks",
            ));
        }
        verify(request.body, &self.keys, now, self.tolerance)
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        identify(request.body)
    }
}

/// Signs as Mailgun would: the `signature.signature` value for `timestamp`
/// and `token`, to put in the body beside them. Used by `gatehouse send`,
/// tests and benchmarks.
pub fn sign(key: &[u8], timestamp: &str, token: &str) -> String {
    let mut mac = keyed_sha256(key);
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const KEY: &str = "key-mailgun-signing-key";
    const TOKEN: &str = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";
    const T: i64 = 1_700_000_000;
    /// Mailgun publishes no vector: hex HMAC-SHA256(KEY, "1700000000" +
    /// TOKEN) computed with Python's `hmac` module.
    const VECTOR: &str = "065bb50188c88a371d4df8a371c499a8828b94bc4f7b5553b5adaf33af3b94e4";

    fn body(timestamp: &str, token: &str, signature: &str) -> Vec<u8> {
        format!(
            r#"{{"signature":{{"timestamp":{timestamp},"token":"{token}","signature":"{signature}"}},"event-data":{{"event":"delivered","id":"CPgfbmQMTCKtHW6uIWtuVe","recipient":"alice@example.com"}}}}"#
        )
        .into_bytes()
    }

    fn keys(secrets: &[&str]) -> Vec<HmacSha256> {
        secrets.iter().map(|s| keyed_sha256(s.as_bytes())).collect()
    }

    fn check(body: &[u8], secrets: &[&str], now: i64) -> Result<Verified, Rejection> {
        verify(body, &keys(secrets), UnixMillis::from_secs(now), DEFAULT_TOLERANCE)
    }

    #[test]
    fn python_made_vector_verifies() {
        let verified = check(&body(r#""1700000000""#, TOKEN, VECTOR), &[KEY], T).unwrap();
        assert_eq!(verified.scheme(), "mailgun-sha256");
        assert_eq!(sign(KEY.as_bytes(), "1700000000", TOKEN), VECTOR);
        // A numeric timestamp signs the same digits.
        assert!(check(&body("1700000000", TOKEN, VECTOR), &[KEY], T).is_ok());
    }

    #[test]
    fn wrong_key_and_changed_signed_field_are_rejected() {
        assert_eq!(
            check(&body(r#""1700000000""#, TOKEN, VECTOR), &["key-other"], T),
            Err(Rejection::NoMatchingSignature)
        );
        let other_token = TOKEN.replace('a', "b");
        assert_eq!(
            check(&body(r#""1700000000""#, &other_token, VECTOR), &[KEY], T),
            Err(Rejection::NoMatchingSignature)
        );
        assert_eq!(
            check(&body(r#""1700000001""#, TOKEN, VECTOR), &[KEY], T),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn event_data_is_not_covered_so_the_token_is_the_dedup_key() {
        let original = body(r#""1700000000""#, TOKEN, VECTOR);
        let replayed = String::from_utf8(original.clone())
            .unwrap()
            .replace("delivered", "failed");
        assert!(check(replayed.as_bytes(), &[KEY], T).is_ok());
        assert_eq!(
            identify(replayed.as_bytes()).provider_event_id,
            identify(&original).provider_event_id
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let b = body(r#""1700000000""#, TOKEN, VECTOR);
        assert!(matches!(
            check(&b, &[KEY], T + 901),
            Err(Rejection::TimestampTooOld { .. })
        ));
        assert!(matches!(
            check(&b, &[KEY], T - 901),
            Err(Rejection::TimestampInFuture { .. })
        ));
        assert!(check(&b, &[KEY], T + 900).is_ok());
    }

    #[test]
    fn missing_and_malformed_signature_fields_are_rejected() {
        for b in [
            b"not json".to_vec(),
            br#"{"event-data":{"event":"delivered"}}"#.to_vec(),
            br#"{"signature":{"token":"t","signature":"00"}}"#.to_vec(),
            br#"{"signature":{"timestamp":"1700000000","signature":"00"}}"#.to_vec(),
            br#"{"signature":{"timestamp":"1700000000","token":"t"}}"#.to_vec(),
            body(r#""1700000000""#, TOKEN, "zz"),
            body(r#""1700000000""#, TOKEN, &VECTOR[..62]),
            body(r#""yesterday""#, TOKEN, VECTOR),
            body(r#""1700000000""#, "", VECTOR),
            body(r#""1700000000""#, &"t".repeat(300), VECTOR),
            body("-5", TOKEN, VECTOR),
        ] {
            assert!(
                matches!(check(&b, &[KEY], T), Err(Rejection::MalformedBody(_))),
                "{}",
                String::from_utf8_lossy(&b)
            );
        }
    }

    #[test]
    fn second_key_during_rotation() {
        let verified = check(&body(r#""1700000000""#, TOKEN, VECTOR), &["key-old", KEY], T).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn identifies_token_and_event() {
        let headers = headers(&[]);
        let p = Mailgun::new(&[Secret::new(KEY)], DEFAULT_TOLERANCE);
        assert_eq!(
            p.identify(&post(&headers, &body(r#""1700000000""#, TOKEN, VECTOR))),
            Identity::event(Some(TOKEN.into()), Some("delivered".into()))
        );
        assert_eq!(identify(b"{}"), Identity::event(None, None));
    }

    #[test]
    fn legacy_form_posts_are_an_unsupported_media_type() {
        let p = Mailgun::new(&[Secret::new(KEY)], DEFAULT_TOLERANCE);
        let now = UnixMillis::from_secs(T);
        let signed = body(r#""1700000000""#, TOKEN, VECTOR);
        for content_type in ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz"] {
            let headers = headers(&[("content-type", content_type)]);
            assert!(matches!(
                p.verify(&post(&headers, &signed), now),
                Err(Rejection::UnsupportedMediaType(_))
            ));
        }
        for content_type in [Some("application/json"), None] {
            let headers = match content_type {
                Some(value) => headers(&[("content-type", value)]),
                None => headers(&[]),
            };
            assert!(p.verify(&post(&headers, &signed), now).is_ok(), "{content_type:?}");
        }
    }
}
