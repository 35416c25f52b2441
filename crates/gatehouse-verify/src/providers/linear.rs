//! Linear: `linear-signature` = hex HMAC-SHA256(webhook secret, raw body).
//! Freshness comes from the signed body itself: its `webhookTimestamp`
//! (unix milliseconds) must be within the tolerance of now, 60 s by default
//! as in Linear's SDK, in both directions. The body is parsed for it only
//! after the HMAC matched, so a forger cannot make us parse anything.
//!
//! The dedup key is the `Linear-Delivery` header; the event type is the
//! body's `type` and `action`, e.g. `Issue.create`.

use std::borrow::Cow;
use std::time::Duration;

use hmac::Mac;

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{check_timestamp_millis, decode_hex_into, first_matching_key, keyed_sha256, HmacSha256};
use crate::{Identity, InboundRequest, Provider, Rejection, Verified};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "linear-signature";
/// The delivery id header: the dedup key.
pub const DELIVERY_HEADER: &str = "linear-delivery";
/// Linear's SDK tolerance.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(60);

/// Linear's scheme for one source.
#[derive(Debug)]
pub struct Linear {
    keys: Vec<HmacSha256>,
    tolerance: Duration,
}

impl Linear {
    /// A verifier accepting any of `secrets` (webhook signing secrets, used
    /// as their raw bytes).
    pub fn new(secrets: &[Secret], tolerance: Duration) -> Self {
        Self {
            keys: secrets.iter().map(|s| keyed_sha256(s.expose())).collect(),
            tolerance,
        }
    }
}

/// Verifies a Linear request: pure function over the signature header
/// value, the raw body, the prepared keys and now.
pub fn verify(
    signature: Option<&str>,
    body: &[u8],
    keys: &[HmacSha256],
    now: UnixMillis,
    tolerance: Duration,
) -> Result<Verified, Rejection> {
    let signature = signature.ok_or(Rejection::MissingHeader(SIGNATURE_HEADER.into()))?;
    let mut digest = [0u8; 32];
    if !decode_hex_into(signature.trim(), &mut digest) {
        return Err(Rejection::MalformedHeader {
            header: SIGNATURE_HEADER.into(),
            problem: "expected 64 hex digits",
        });
    }
    let index = first_matching_key(keys, &digest, |mac| mac.update(body)).ok_or(Rejection::NoMatchingSignature)?;
    let timestamp = webhook_timestamp(body).ok_or(Rejection::MalformedBody(
        "no numeric webhookTimestamp (unix milliseconds)",
    ))?;
    check_timestamp_millis(timestamp, now, tolerance)?;
    Ok(Verified::by_secret("linear-sha256", index))
}

/// The body's `webhookTimestamp`, in unix milliseconds.
fn webhook_timestamp(body: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct TimestampOnly {
        #[serde(default, rename = "webhookTimestamp")]
        webhook_timestamp: Option<i64>,
    }
    serde_json::from_slice::<TimestampOnly>(body).ok()?.webhook_timestamp
}

/// Identifies a verified Linear request from its delivery header and body.
pub fn identify(delivery: Option<&str>, body: &[u8]) -> Identity {
    #[derive(serde::Deserialize)]
    struct TypeAndAction<'a> {
        #[serde(borrow, default, rename = "type")]
        kind: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        action: Option<Cow<'a, str>>,
    }
    let parsed = serde_json::from_slice::<TypeAndAction<'_>>(body).ok();
    let (kind, action) = match parsed {
        Some(p) => (p.kind.filter(|k| !k.is_empty()), p.action.filter(|a| !a.is_empty())),
        None => (None, None),
    };
    let event_type = match (kind, action) {
        (Some(kind), Some(action)) => Some(format!("{kind}.{action}")),
        (Some(kind), None) => Some(kind.into_owned()),
        (None, _) => None,
    };
    Identity::event(delivery.filter(|d| !d.is_empty()).map(str::to_owned), event_type)
}

impl Provider for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn verify(&self, request: &InboundRequest<'_>, now: UnixMillis) -> Result<Verified, Rejection> {
        verify(
            request.header(SIGNATURE_HEADER),
            request.body,
            &self.keys,
            now,
            self.tolerance,
        )
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        identify(request.header(DELIVERY_HEADER), request.body)
    }
}

/// Signs `body` as Linear would: the `linear-signature` value. The body must
/// carry its own `webhookTimestamp`. Used by `gatehouse send`, tests and
/// benchmarks.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = keyed_sha256(secret);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const SECRET: &str = "lin_wh_test_secret";
    const BODY: &[u8] = br#"{"action":"create","type":"Issue","data":{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9","title":"Bug"},"url":"https://linear.app/issue/ENG-1","webhookTimestamp":1700000000000,"webhookId":"000042e3-d123-4980-b49f-8e140eef9329"}"#;
    /// Linear publishes no vector: hex HMAC-SHA256(SECRET, BODY) computed
    /// with Python's `hmac` module.
    const VECTOR: &str = "aaa50d51e36990bce114534a7b615fcbda71960f45dd6ab12ab71d8914e8ca8a";
    const T_MS: i64 = 1_700_000_000_000;

    fn keys(secrets: &[&str]) -> Vec<HmacSha256> {
        secrets.iter().map(|s| keyed_sha256(s.as_bytes())).collect()
    }

    fn check(signature: &str, body: &[u8], secrets: &[&str], now_ms: i64) -> Result<Verified, Rejection> {
        verify(
            Some(signature),
            body,
            &keys(secrets),
            UnixMillis(now_ms),
            DEFAULT_TOLERANCE,
        )
    }

    #[test]
    fn python_made_vector_verifies() {
        let verified = check(VECTOR, BODY, &[SECRET], T_MS).unwrap();
        assert_eq!(verified.scheme(), "linear-sha256");
        assert_eq!(sign(SECRET.as_bytes(), BODY), VECTOR);
    }

    #[test]
    fn wrong_secret_and_changed_byte_are_rejected() {
        assert_eq!(
            check(VECTOR, BODY, &["lin_wh_other"], T_MS),
            Err(Rejection::NoMatchingSignature)
        );
        let mut body = BODY.to_vec();
        body[12] ^= 1;
        assert_eq!(
            check(VECTOR, &body, &[SECRET], T_MS),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        assert!(matches!(
            check(VECTOR, BODY, &[SECRET], T_MS + 60_001),
            Err(Rejection::TimestampTooOld { .. })
        ));
        assert!(matches!(
            check(VECTOR, BODY, &[SECRET], T_MS - 60_001),
            Err(Rejection::TimestampInFuture { .. })
        ));
        assert!(check(VECTOR, BODY, &[SECRET], T_MS + 60_000).is_ok());
        assert!(check(VECTOR, BODY, &[SECRET], T_MS - 60_000).is_ok());
    }

    #[test]
    fn signed_body_without_a_timestamp_is_rejected() {
        for body in [
            &br#"{"type":"Issue"}"#[..],
            br#"{"webhookTimestamp":"1700000000000"}"#,
            b"[]",
        ] {
            let signature = sign(SECRET.as_bytes(), body);
            assert!(
                matches!(
                    check(&signature, body, &[SECRET], T_MS),
                    Err(Rejection::MalformedBody(_))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        assert_eq!(
            verify(None, BODY, &keys(&[SECRET]), UnixMillis(T_MS), DEFAULT_TOLERANCE),
            Err(Rejection::MissingHeader(SIGNATURE_HEADER.into()))
        );
        for signature in ["", "sha256=aaa5", &VECTOR[..63], "zz"] {
            assert!(
                matches!(
                    check(signature, BODY, &[SECRET], T_MS),
                    Err(Rejection::MalformedHeader { .. })
                ),
                "{signature:?}"
            );
        }
    }

    #[test]
    fn second_secret_during_rotation() {
        let verified = check(VECTOR, BODY, &["lin_wh_old", SECRET], T_MS).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn identifies_delivery_and_type_action() {
        let headers = headers(&[("Linear-Delivery", "234d1a4e-b617-4388-90fe-adc3633d6b72")]);
        let p = Linear::new(&[Secret::new(SECRET)], DEFAULT_TOLERANCE);
        assert_eq!(
            p.identify(&post(&headers, BODY)),
            Identity::event(
                Some("234d1a4e-b617-4388-90fe-adc3633d6b72".into()),
                Some("Issue.create".into())
            )
        );
        assert_eq!(
            identify(None, br#"{"type":"Comment"}"#),
            Identity::event(None, Some("Comment".into()))
        );
        assert_eq!(identify(None, b"nope"), Identity::event(None, None));
    }
}
