//! Shopify: `X-Shopify-Hmac-Sha256` = base64(HMAC-SHA256(app client secret,
//! raw body)). The newer Events format sends the same headers without the
//! `X-` prefix (`shopify-hmac-sha256`, `shopify-topic`,
//! `shopify-webhook-id`, `shopify-event-id`); both spellings are read, the
//! `X-` one first. Header names are case-insensitive, so "varying casing" is
//! a non-issue.
//!
//! There is no signed timestamp (`X-Shopify-Triggered-At` is not covered by
//! the HMAC, so checking it would prove nothing): replay defence is
//! deduplication on the webhook id, which stays the same across Shopify's
//! retries. The event id, shared by every subscription to one event, is the
//! fallback. The event type is the topic, e.g. `orders/create`. Shopify
//! keeps signing with the old secret for up to an hour after a rotation:
//! configure both.

use base64::Engine as _;
use hmac::Mac;

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{decode_base64_into, first_matching_key, keyed_sha256, HmacSha256};
use crate::{Identity, InboundRequest, Provider, Rejection, Verified};

/// The signature header, classic spelling (reported when it is missing).
pub const SIGNATURE_HEADER: &str = "x-shopify-hmac-sha256";
/// The signature header in the Events format.
pub const EVENTS_SIGNATURE_HEADER: &str = "shopify-hmac-sha256";
/// The topic headers, classic spelling first.
pub const TOPIC_HEADERS: [&str; 2] = ["x-shopify-topic", "shopify-topic"];
/// The webhook id headers (the dedup key), classic spelling first.
pub const WEBHOOK_ID_HEADERS: [&str; 2] = ["x-shopify-webhook-id", "shopify-webhook-id"];
/// The event id headers (the dedup fallback), classic spelling first.
pub const EVENT_ID_HEADERS: [&str; 2] = ["x-shopify-event-id", "shopify-event-id"];

/// Shopify's scheme for one source.
#[derive(Debug)]
pub struct Shopify {
    keys: Vec<HmacSha256>,
}

impl Shopify {
    /// A verifier accepting any of `secrets` (app client secrets, used as
    /// their raw bytes).
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            keys: secrets.iter().map(|s| keyed_sha256(s.expose())).collect(),
        }
    }
}

/// Verifies a Shopify request: pure function over the signature header
/// value, the raw body and the prepared keys.
pub fn verify(signature: Option<&str>, body: &[u8], keys: &[HmacSha256]) -> Result<Verified, Rejection> {
    let signature = signature.ok_or(Rejection::MissingHeader(SIGNATURE_HEADER.into()))?;
    let mut digest = [0u8; 32];
    if !decode_base64_into(signature.trim(), &mut digest) {
        return Err(Rejection::MalformedHeader {
            header: SIGNATURE_HEADER.into(),
            problem: "expected base64 of an HMAC-SHA256 digest",
        });
    }
    first_matching_key(keys, &digest, |mac| mac.update(body))
        .map(|index| Verified::by_secret("shopify-sha256", index))
        .ok_or(Rejection::NoMatchingSignature)
}

/// The first of `names` present and non-empty in `request`.
fn first_header<'a>(request: &InboundRequest<'a>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|name| request.header(name).filter(|value| !value.is_empty()))
}

impl Provider for Shopify {
    fn name(&self) -> &'static str {
        "shopify"
    }

    fn verify(&self, request: &InboundRequest<'_>, _now: UnixMillis) -> Result<Verified, Rejection> {
        let signature = request
            .header(SIGNATURE_HEADER)
            .or_else(|| request.header(EVENTS_SIGNATURE_HEADER));
        verify(signature, request.body, &self.keys)
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        let id = first_header(request, &WEBHOOK_ID_HEADERS).or_else(|| first_header(request, &EVENT_ID_HEADERS));
        Identity::event(
            id.map(str::to_owned),
            first_header(request, &TOPIC_HEADERS).map(str::to_owned),
        )
    }
}

/// Signs `body` as Shopify would: the `X-Shopify-Hmac-Sha256` value. Used by
/// `gatehouse send`, tests and benchmarks.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = keyed_sha256(secret);
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const SECRET: &str = "shpss_test_client_secret";
    const BODY: &[u8] = br#"{"id":820982911946154508,"email":"jon@example.com","topic":"orders/create"}"#;
    /// Shopify publishes no vector: this one was made with Python's `hmac`
    /// module, base64(HMAC-SHA256(SECRET, BODY)).
    const VECTOR: &str = "dxgROyP4fNrQDwPAlJLllgo+oUbnsrg56cZwhdUqB+E=";

    fn provider(secrets: &[&str]) -> Shopify {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        Shopify::new(&secrets)
    }

    fn check(p: &Shopify, pairs: &[(&str, &str)], body: &[u8]) -> Result<Verified, Rejection> {
        let headers = headers(pairs);
        p.verify(&post(&headers, body), UnixMillis::from_secs(0))
    }

    #[test]
    fn python_made_vector_verifies_under_both_header_spellings() {
        let p = provider(&[SECRET]);
        let verified = check(&p, &[("X-Shopify-Hmac-SHA256", VECTOR)], BODY).unwrap();
        assert_eq!(verified.scheme(), "shopify-sha256");
        assert!(check(&p, &[("shopify-hmac-sha256", VECTOR)], BODY).is_ok());
        assert_eq!(sign(SECRET.as_bytes(), BODY), VECTOR);
    }

    #[test]
    fn wrong_secret_is_rejected() {
        assert_eq!(
            check(&provider(&["shpss_other"]), &[(SIGNATURE_HEADER, VECTOR)], BODY),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn one_changed_byte_is_rejected() {
        let mut body = BODY.to_vec();
        body[20] ^= 1;
        assert_eq!(
            check(&provider(&[SECRET]), &[(SIGNATURE_HEADER, VECTOR)], &body),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        let p = provider(&[SECRET]);
        assert_eq!(
            check(&p, &[], BODY),
            Err(Rejection::MissingHeader(SIGNATURE_HEADER.into()))
        );
        let hex = hex::encode([0u8; 32]);
        for value in ["", "garbage!", &VECTOR[..40], &hex, "AAAA"] {
            assert!(
                matches!(
                    check(&p, &[(SIGNATURE_HEADER, value)], BODY),
                    Err(Rejection::MalformedHeader { .. })
                ),
                "{value:?}"
            );
        }
    }

    #[test]
    fn second_secret_during_rotation() {
        let verified = check(&provider(&["shpss_old", SECRET]), &[(SIGNATURE_HEADER, VECTOR)], BODY).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn identifies_topic_and_webhook_id_in_both_formats() {
        let p = provider(&[SECRET]);
        let classic = headers(&[
            ("X-Shopify-Topic", "orders/create"),
            ("X-Shopify-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"),
            ("X-Shopify-Event-Id", "98880550-7158-44d4-b7cd-2c97c8a091b5"),
        ]);
        assert_eq!(
            p.identify(&post(&classic, BODY)),
            Identity::event(
                Some("b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".into()),
                Some("orders/create".into())
            )
        );
        let events = headers(&[("shopify-topic", "products/update"), ("shopify-webhook-id", "w-1")]);
        assert_eq!(
            p.identify(&post(&events, BODY)),
            Identity::event(Some("w-1".into()), Some("products/update".into()))
        );
        let event_id_only = headers(&[("shopify-event-id", "e-1")]);
        assert_eq!(
            p.identify(&post(&event_id_only, BODY)),
            Identity::event(Some("e-1".into()), None)
        );
    }
}
