//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…][,v0=…]`,
//! HMAC-SHA256 over `<t>.<raw body>`, keyed with the secret's UTF-8 bytes
//! *including* its `whsec_` prefix. Only `v1` is accepted: ignoring `v0` and
//! unknown schemes prevents a downgrade. Event id and type come from the
//! body's `id` and `type`.

use std::time::Duration;

use hmac::Mac;

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{
    check_timestamp, constant_time_eq, decode_hex_into, json_id_and_type, keyed_sha256, parse_unix_secs, HmacSha256,
};
use crate::{Identity, InboundRequest, Provider, Rejection, Verified};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "stripe-signature";
/// Stripe's SDK default tolerance.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// The most `v1` entries read from one header; more is an attack, not rotation.
const MAX_SIGNATURES: usize = 8;

/// Stripe's scheme for one source.
#[derive(Debug)]
pub struct Stripe {
    keys: Vec<HmacSha256>,
    tolerance: Duration,
}

impl Stripe {
    /// A verifier accepting any of `secrets` (used as UTF-8 bytes, `whsec_` included).
    pub fn new(secrets: &[Secret], tolerance: Duration) -> Self {
        Self {
            keys: secrets.iter().map(|s| keyed_sha256(s.expose())).collect(),
            tolerance,
        }
    }
}

/// The parts of a `Stripe-Signature` header that matter: the timestamp and
/// every `v1` signature (decoded), ignoring other schemes.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    /// The `t=` value, unix seconds.
    pub timestamp: i64,
    /// Every `v1=` signature, decoded from hex.
    pub v1: Vec<[u8; 32]>,
}

/// Parses a `Stripe-Signature` header.
pub fn parse_header(value: &str) -> Result<SignatureHeader, Rejection> {
    let malformed = |problem| Rejection::MalformedHeader {
        header: SIGNATURE_HEADER.into(),
        problem,
    };
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for item in value.split(',') {
        let Some((key, val)) = item.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = Some(parse_unix_secs(SIGNATURE_HEADER, val)?),
            "v1" if v1.len() < MAX_SIGNATURES => {
                let mut signature = [0u8; 32];
                // A v1 entry that is not 64 hex digits cannot match; skip it
                // like Stripe's SDKs do rather than rejecting the others.
                if decode_hex_into(val, &mut signature) {
                    v1.push(signature);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(malformed("no t= timestamp"))?;
    if v1.is_empty() {
        return Err(malformed("no v1 signature"));
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// Verifies a Stripe request: pure function over the header value, raw body,
/// prepared keys and the current time.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    keys: &[HmacSha256],
    now: UnixMillis,
    tolerance: Duration,
) -> Result<Verified, Rejection> {
    let header = header.ok_or(Rejection::MissingHeader(SIGNATURE_HEADER.into()))?;
    let parsed = parse_header(header)?;
    check_timestamp(parsed.timestamp, now, tolerance)?;
    let timestamp_text = parsed.timestamp.to_string();
    for (index, key) in keys.iter().enumerate() {
        let mut mac = key.clone();
        mac.update(timestamp_text.as_bytes());
        mac.update(b".");
        mac.update(body);
        let expected = mac.finalize().into_bytes();
        // Check every candidate so timing does not reveal which one matched.
        let mut matched = false;
        for candidate in &parsed.v1 {
            matched |= constant_time_eq(&expected, candidate);
        }
        if matched {
            return Ok(Verified::by_secret("stripe-v1", index));
        }
    }
    Err(Rejection::NoMatchingSignature)
}

impl Provider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
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
        let (id, event_type) = json_id_and_type(request.body, "id", "type");
        Identity::event(id, event_type)
    }
}

/// Signs `body` as Stripe would at `timestamp`: the header value to send.
/// Used by `gatehouse send`, tests and benchmarks.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = keyed_sha256(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_test_webhook","object":"event"}"#;
    const VECTOR: &str = "d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990";
    const T: i64 = 1_700_000_000;

    fn keys(secrets: &[&str]) -> Vec<HmacSha256> {
        secrets.iter().map(|s| keyed_sha256(s.as_bytes())).collect()
    }

    fn at(secs: i64) -> UnixMillis {
        UnixMillis::from_secs(secs)
    }

    #[test]
    fn published_vector_verifies() {
        let header = format!("t={T},v1={VECTOR}");
        let verified = verify(Some(&header), BODY, &keys(&[SECRET]), at(T), DEFAULT_TOLERANCE).unwrap();
        assert_eq!(verified.secret_index(), Some(0));
        assert_eq!(sign(SECRET.as_bytes(), T, BODY), header);
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let header = format!("t={T},v1={VECTOR}");
        assert_eq!(
            verify(Some(&header), BODY, &keys(&["whsec_other"]), at(T), DEFAULT_TOLERANCE),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn secret_without_prefix_is_a_different_key() {
        let header = format!("t={T},v1={VECTOR}");
        assert!(verify(Some(&header), BODY, &keys(&["test_secret"]), at(T), DEFAULT_TOLERANCE).is_err());
    }

    #[test]
    fn one_changed_byte_is_rejected() {
        let header = format!("t={T},v1={VECTOR}");
        let mut body = BODY.to_vec();
        body[10] ^= 1;
        assert_eq!(
            verify(Some(&header), &body, &keys(&[SECRET]), at(T), DEFAULT_TOLERANCE),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let header = format!("t={T},v1={VECTOR}");
        let k = keys(&[SECRET]);
        assert!(matches!(
            verify(Some(&header), BODY, &k, at(T + 301), DEFAULT_TOLERANCE),
            Err(Rejection::TimestampTooOld { .. })
        ));
        assert!(matches!(
            verify(Some(&header), BODY, &k, at(T - 301), DEFAULT_TOLERANCE),
            Err(Rejection::TimestampInFuture { .. })
        ));
        assert!(verify(Some(&header), BODY, &k, at(T + 300), DEFAULT_TOLERANCE).is_ok());
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        let k = keys(&[SECRET]);
        assert!(matches!(
            verify(None, BODY, &k, at(T), DEFAULT_TOLERANCE),
            Err(Rejection::MissingHeader(_))
        ));
        for header in [
            "",
            "garbage",
            &format!("v1={VECTOR}"),
            &format!("t=abc,v1={VECTOR}"),
            "t=1700000000",
        ] {
            assert!(
                matches!(
                    verify(Some(header), BODY, &k, at(T), DEFAULT_TOLERANCE),
                    Err(Rejection::MalformedHeader { .. })
                ),
                "{header:?}"
            );
        }
    }

    #[test]
    fn v0_only_header_is_not_a_downgrade() {
        let header = format!("t={T},v0={VECTOR}");
        assert!(matches!(
            verify(Some(&header), BODY, &keys(&[SECRET]), at(T), DEFAULT_TOLERANCE),
            Err(Rejection::MalformedHeader { .. })
        ));
    }

    #[test]
    fn second_secret_during_rotation_and_several_v1_entries() {
        let header = format!("t={T},v1={},v1={VECTOR},v0=00", "ab".repeat(32));
        let verified = verify(
            Some(&header),
            BODY,
            &keys(&["whsec_old", SECRET]),
            at(T),
            DEFAULT_TOLERANCE,
        )
        .unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn identifies_id_and_type() {
        let headers = http::HeaderMap::new();
        let request = InboundRequest {
            method: &http::Method::POST,
            url: "https://example.test/in/stripe",
            headers: &headers,
            body: br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#,
        };
        let identity = Stripe::new(&[], DEFAULT_TOLERANCE).identify(&request);
        assert_eq!(identity.provider_event_id.as_deref(), Some("evt_1"));
        assert_eq!(identity.event_type.as_deref(), Some("payment_intent.succeeded"));
    }
}
