//! Square: `x-square-hmacsha256-signature` = base64(HMAC-SHA256(signature
//! key, notification URL + raw body)). The URL must be byte-identical to the
//! one registered with Square: by default the request's public URL, or the
//! source's `verify.notification_url` when Square was given a different
//! spelling (a trailing slash, a query). The legacy SHA-1
//! `x-square-signature` header is not accepted, to prevent a downgrade.
//!
//! No timestamp is signed: replay defence is deduplication on the body's
//! `event_id`. The event type is the body's `type`, e.g. `payment.updated`.

use base64::Engine as _;
use hmac::Mac;

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{decode_base64_into, first_matching_key, json_id_and_type, keyed_sha256, HmacSha256};
use crate::{BuildError, Identity, InboundRequest, Provider, Rejection, Verified};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-square-hmacsha256-signature";

/// Square's scheme for one source.
#[derive(Debug)]
pub struct Square {
    keys: Vec<HmacSha256>,
    notification_url: Option<String>,
}

impl Square {
    /// A verifier accepting any of `secrets` (signature keys, used as their
    /// raw bytes), for `notification_url` (`None`: the request's URL).
    pub fn new(secrets: &[Secret], notification_url: Option<&str>) -> Result<Self, BuildError> {
        if let Some(url) = notification_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(BuildError::new(
                    "verify.notification_url",
                    format!("{url:?} is not an absolute URL (expected the exact URL registered with Square, e.g. \"https://example.com/in/square\")"),
                ));
            }
        }
        Ok(Self {
            keys: secrets.iter().map(|s| keyed_sha256(s.expose())).collect(),
            notification_url: notification_url.map(str::to_owned),
        })
    }
}

/// Verifies a Square request: pure function over the signature header
/// value, the notification URL, the raw body and the prepared keys.
pub fn verify(
    signature: Option<&str>,
    notification_url: &str,
    body: &[u8],
    keys: &[HmacSha256],
) -> Result<Verified, Rejection> {
    let signature = signature.ok_or(Rejection::MissingHeader(SIGNATURE_HEADER.into()))?;
    let mut digest = [0u8; 32];
    if !decode_base64_into(signature.trim(), &mut digest) {
        return Err(Rejection::MalformedHeader {
            header: SIGNATURE_HEADER.into(),
            problem: "expected base64 of an HMAC-SHA256 digest",
        });
    }
    first_matching_key(keys, &digest, |mac| {
        mac.update(notification_url.as_bytes());
        mac.update(body);
    })
    .map(|index| Verified::by_secret("square-sha256", index))
    .ok_or(Rejection::NoMatchingSignature)
}

impl Provider for Square {
    fn name(&self) -> &'static str {
        "square"
    }

    fn verify(&self, request: &InboundRequest<'_>, _now: UnixMillis) -> Result<Verified, Rejection> {
        verify(
            request.header(SIGNATURE_HEADER),
            self.notification_url.as_deref().unwrap_or(request.url),
            request.body,
            &self.keys,
        )
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        let (id, event_type) = json_id_and_type(request.body, "event_id", "type");
        Identity::event(id, event_type)
    }
}

/// Signs `body` as Square would for `notification_url`: the
/// `x-square-hmacsha256-signature` value. Used by `gatehouse send`, tests
/// and benchmarks.
pub fn sign(key: &[u8], notification_url: &str, body: &[u8]) -> String {
    let mut mac = keyed_sha256(key);
    mac.update(notification_url.as_bytes());
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    /// Square SDK tests, first vector.
    const KEY: &str = "Ibxx_5AKakO-3qeNVR61Dw";
    const URL: &str = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9";
    const BODY: &[u8] = br#"{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}"#;
    const VECTOR: &str = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4=";
    /// Square SDK tests, second vector.
    const KEY_2: &str = "signature-key";
    const URL_2: &str = "https://webhook.site/webhooks";
    const BODY_2: &[u8] = br#"{"data":{"type":"webhooks","id":"fake_id"}}"#;
    const VECTOR_2: &str = "W3FlCNk5IA3ZQ2LHTWoajvzfaDu/OwY2tNHIHC3IUOA=";

    fn keys(secrets: &[&str]) -> Vec<HmacSha256> {
        secrets.iter().map(|s| keyed_sha256(s.as_bytes())).collect()
    }

    #[test]
    fn published_vectors_verify() {
        let verified = verify(Some(VECTOR), URL, BODY, &keys(&[KEY])).unwrap();
        assert_eq!(verified.scheme(), "square-sha256");
        assert!(verify(Some(VECTOR_2), URL_2, BODY_2, &keys(&[KEY_2])).is_ok());
        assert_eq!(sign(KEY.as_bytes(), URL, BODY), VECTOR);
        assert_eq!(sign(KEY_2.as_bytes(), URL_2, BODY_2), VECTOR_2);
    }

    #[test]
    fn trailing_slash_mismatch_fails() {
        assert_eq!(
            verify(
                Some(VECTOR_2),
                "https://webhook.site/webhooks/",
                BODY_2,
                &keys(&[KEY_2])
            ),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn wrong_key_and_changed_byte_are_rejected() {
        assert_eq!(
            verify(Some(VECTOR), URL, BODY, &keys(&[KEY_2])),
            Err(Rejection::NoMatchingSignature)
        );
        let mut body = BODY.to_vec();
        body[2] ^= 1;
        assert_eq!(
            verify(Some(VECTOR), URL, &body, &keys(&[KEY])),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        let k = keys(&[KEY]);
        assert_eq!(
            verify(None, URL, BODY, &k),
            Err(Rejection::MissingHeader(SIGNATURE_HEADER.into()))
        );
        for value in ["", "not base64!", &VECTOR[..20], "AAAA"] {
            assert!(
                matches!(
                    verify(Some(value), URL, BODY, &k),
                    Err(Rejection::MalformedHeader { .. })
                ),
                "{value:?}"
            );
        }
    }

    #[test]
    fn second_key_during_rotation() {
        assert_eq!(
            verify(Some(VECTOR), URL, BODY, &keys(&["old-key", KEY]))
                .unwrap()
                .secret_index(),
            Some(1)
        );
    }

    #[test]
    fn configured_url_overrides_the_request_url() {
        let headers = headers(&[(SIGNATURE_HEADER, VECTOR_2)]);
        let request = InboundRequest {
            method: &http::Method::POST,
            url: "https://gatehouse.test/in/square",
            headers: &headers,
            body: BODY_2,
        };
        let now = UnixMillis::from_secs(0);
        let by_request_url = Square::new(&[Secret::new(KEY_2)], None).unwrap();
        assert_eq!(
            by_request_url.verify(&request, now),
            Err(Rejection::NoMatchingSignature)
        );
        let configured = Square::new(&[Secret::new(KEY_2)], Some(URL_2)).unwrap();
        assert!(configured.verify(&request, now).is_ok());
        let same_url = InboundRequest { url: URL_2, ..request };
        assert!(by_request_url.verify(&same_url, now).is_ok());
    }

    #[test]
    fn relative_notification_url_is_a_build_error() {
        let err = Square::new(&[Secret::new(KEY)], Some("/in/square")).unwrap_err();
        assert_eq!(err.key, "verify.notification_url");
    }

    #[test]
    fn identifies_event_id_and_type() {
        let headers = headers(&[]);
        let request = InboundRequest {
            method: &http::Method::POST,
            url: URL,
            headers: &headers,
            body: BODY,
        };
        assert_eq!(
            Square::new(&[], None).unwrap().identify(&request),
            Identity::event(
                Some("ac3ac95b-f97d-458c-a6e6-18981597e05f".into()),
                Some("webhooks.test_notification".into())
            )
        );
    }
}
