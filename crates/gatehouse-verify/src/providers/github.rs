//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 over the raw body
//! keyed with the secret's bytes. There is no signed timestamp: replay
//! defence is deduplication on `X-GitHub-Delivery`, which stays the same when
//! a delivery is redelivered. The event type is `X-GitHub-Event`, plus
//! `.<action>` when the payload has one (`pull_request.opened`); `ping`
//! deliveries are pings.
//!
//! The legacy `X-Hub-Signature: sha1=…` header is deliberately not accepted:
//! GitHub always sends the SHA-256 header too, and falling back to SHA-1
//! would let a stripped header downgrade the check. A sender that only signs
//! with SHA-1 can be configured with the generic `hmac` provider instead.

use std::borrow::Cow;

use hmac::Mac;

use gatehouse_core::Secret;
use gatehouse_core::UnixMillis;

use crate::util::{constant_time_eq, decode_hex_into, keyed_sha256, HmacSha256};
use crate::{Identity, InboundRequest, Kind, Provider, Rejection, Verified};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The event name header, e.g. `pull_request`.
pub const EVENT_HEADER: &str = "x-github-event";
/// The delivery GUID header: the dedup key.
pub const DELIVERY_HEADER: &str = "x-github-delivery";
/// What precedes the hex digest in the signature header.
const SIGNATURE_PREFIX: &str = "sha256=";
/// The event GitHub sends when a hook is created.
const PING_EVENT: &str = "ping";

/// GitHub's scheme for one source.
#[derive(Debug)]
pub struct GitHub {
    keys: Vec<HmacSha256>,
}

impl GitHub {
    /// A verifier accepting any of `secrets` (used as their raw bytes).
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            keys: secrets.iter().map(|s| keyed_sha256(s.expose())).collect(),
        }
    }
}

/// Parses an `X-Hub-Signature-256` value into the digest it carries.
pub fn parse_header(value: &str) -> Result<[u8; 32], Rejection> {
    let malformed = |problem| Rejection::MalformedHeader {
        header: SIGNATURE_HEADER.into(),
        problem,
    };
    let hex_digest = value
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or(malformed("expected sha256=<hex>"))?;
    let mut signature = [0u8; 32];
    if !decode_hex_into(hex_digest, &mut signature) {
        return Err(malformed("expected 64 hex digits after sha256="));
    }
    Ok(signature)
}

/// Verifies a GitHub request: pure function over the signature header value,
/// the raw body (JSON or form-encoded alike) and the prepared keys.
pub fn verify(header: Option<&str>, body: &[u8], keys: &[HmacSha256]) -> Result<Verified, Rejection> {
    let header = header.ok_or(Rejection::MissingHeader(SIGNATURE_HEADER.into()))?;
    let signature = parse_header(header)?;
    for (index, key) in keys.iter().enumerate() {
        let mut mac = key.clone();
        mac.update(body);
        if constant_time_eq(&mac.finalize().into_bytes(), &signature) {
            return Ok(Verified::by_secret("github-sha256", index));
        }
    }
    Err(Rejection::NoMatchingSignature)
}

/// Identifies a GitHub delivery from its event and delivery headers and, for
/// the action, its payload.
pub fn identify(event: Option<&str>, delivery: Option<&str>, content_type: Option<&str>, body: &[u8]) -> Identity {
    let event = event.filter(|e| !e.is_empty());
    let provider_event_id = delivery.filter(|d| !d.is_empty()).map(str::to_owned);
    if event == Some(PING_EVENT) {
        return Identity {
            provider_event_id,
            event_type: Some(PING_EVENT.to_owned()),
            kind: Kind::Ping,
        };
    }
    let event_type = event.map(|event| match action(content_type, body) {
        Some(action) => format!("{event}.{action}"),
        None => event.to_owned(),
    });
    Identity::event(provider_event_id, event_type)
}

/// The payload's top-level `action` string, if any. Form-encoded deliveries
/// carry the JSON in their `payload` field.
fn action(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    if is_form(content_type) {
        let payload = form_urlencoded::parse(body)
            .find(|(name, _)| name == "payload")
            .map(|(_, value)| value)?;
        json_action(payload.as_bytes())
    } else {
        json_action(body)
    }
}

fn is_form(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

fn json_action(json: &[u8]) -> Option<String> {
    // Deserialising into a one-field struct skips the rest of the payload
    // without building it, which matters for GitHub's payloads of up to 25 MB.
    #[derive(serde::Deserialize)]
    struct ActionOnly<'a> {
        #[serde(borrow, default)]
        action: Option<Cow<'a, str>>,
    }
    let parsed: ActionOnly<'_> = serde_json::from_slice(json).ok()?;
    parsed.action.filter(|a| !a.is_empty()).map(Cow::into_owned)
}

impl Provider for GitHub {
    fn name(&self) -> &'static str {
        "github"
    }

    fn verify(&self, request: &InboundRequest<'_>, _now: UnixMillis) -> Result<Verified, Rejection> {
        verify(request.header(SIGNATURE_HEADER), request.body, &self.keys)
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        identify(
            request.header(EVENT_HEADER),
            request.header(DELIVERY_HEADER),
            request.header(http::header::CONTENT_TYPE.as_str()),
            request.body,
        )
    }
}

/// Signs `body` as GitHub would: the `X-Hub-Signature-256` value to send.
/// Used by `gatehouse send`, tests and benchmarks.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = keyed_sha256(secret);
    mac.update(body);
    format!("{SIGNATURE_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const VECTOR: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn keys(secrets: &[&str]) -> Vec<HmacSha256> {
        secrets.iter().map(|s| keyed_sha256(s.as_bytes())).collect()
    }

    #[test]
    fn published_vector_verifies() {
        let verified = verify(Some(VECTOR), BODY, &keys(&[SECRET])).unwrap();
        assert_eq!(verified.secret_index(), Some(0));
        assert_eq!(verified.scheme(), "github-sha256");
        assert_eq!(sign(SECRET.as_bytes(), BODY), VECTOR);
    }

    #[test]
    fn uppercase_hex_verifies() {
        let header = format!("sha256={}", VECTOR[7..].to_ascii_uppercase());
        assert!(verify(Some(&header), BODY, &keys(&[SECRET])).is_ok());
    }

    #[test]
    fn wrong_secret_is_rejected() {
        assert_eq!(
            verify(Some(VECTOR), BODY, &keys(&["It's a Secret to Nobody"])),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn one_changed_byte_is_rejected() {
        let mut body = BODY.to_vec();
        body[0] ^= 1;
        assert_eq!(
            verify(Some(VECTOR), &body, &keys(&[SECRET])),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn missing_and_malformed_headers_are_rejected() {
        let k = keys(&[SECRET]);
        assert_eq!(
            verify(None, BODY, &k),
            Err(Rejection::MissingHeader(SIGNATURE_HEADER.into()))
        );
        for header in [
            "",
            "garbage",
            &VECTOR[7..],
            "sha256=",
            "sha256=zz",
            &VECTOR[..VECTOR.len() - 2],
            &format!("{VECTOR}00"),
            &format!("sha1={}", &VECTOR[7..]),
            &format!("SHA256={}", &VECTOR[7..]),
        ] {
            assert!(
                matches!(verify(Some(header), BODY, &k), Err(Rejection::MalformedHeader { .. })),
                "{header:?}"
            );
        }
    }

    #[test]
    fn legacy_sha1_header_alone_is_not_accepted() {
        // HMAC-SHA1 of the vector body with the vector secret.
        let headers = headers(&[("x-hub-signature", "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59")]);
        let provider = GitHub::new(&[Secret::new(SECRET)]);
        assert_eq!(
            provider.verify(&post(&headers, BODY), UnixMillis::from_secs(0)),
            Err(Rejection::MissingHeader(SIGNATURE_HEADER.into()))
        );
    }

    #[test]
    fn second_secret_during_rotation() {
        let verified = verify(Some(VECTOR), BODY, &keys(&["old secret", SECRET])).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn verifies_through_the_provider_trait() {
        let headers = headers(&[(SIGNATURE_HEADER, VECTOR)]);
        let provider = GitHub::new(&[Secret::new(SECRET)]);
        assert!(provider.verify(&post(&headers, BODY), UnixMillis::from_secs(0)).is_ok());
    }

    #[test]
    fn identifies_event_action_and_delivery() {
        let headers = headers(&[
            ("X-GitHub-Event", "pull_request"),
            ("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            ("Content-Type", "application/json"),
        ]);
        let body = br#"{"action":"opened","number":1,"pull_request":{"action":"nested"}}"#;
        let identity = GitHub::new(&[]).identify(&post(&headers, body));
        assert_eq!(
            identity,
            Identity::event(
                Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
                Some("pull_request.opened".into())
            )
        );
    }

    #[test]
    fn event_without_action_is_the_bare_event_name() {
        let headers = headers(&[("X-GitHub-Event", "push"), ("X-GitHub-Delivery", "d-1")]);
        for body in [&br#"{"ref":"refs/heads/main"}"#[..], br#"{"action":7}"#, b"not json"] {
            let identity = GitHub::new(&[]).identify(&post(&headers, body));
            assert_eq!(identity.event_type.as_deref(), Some("push"), "{body:?}");
            assert_eq!(identity.provider_event_id.as_deref(), Some("d-1"));
        }
    }

    #[test]
    fn ping_is_a_ping() {
        let headers = headers(&[("X-GitHub-Event", "ping"), ("X-GitHub-Delivery", "d-2")]);
        let body = br#"{"zen":"Design for failure.","hook_id":1,"hook":{}}"#;
        let identity = GitHub::new(&[]).identify(&post(&headers, body));
        assert_eq!(identity.kind, Kind::Ping);
        assert_eq!(identity.event_type.as_deref(), Some("ping"));
        assert_eq!(identity.provider_event_id.as_deref(), Some("d-2"));
    }

    #[test]
    fn form_encoded_delivery_verifies_raw_and_identifies_from_payload() {
        let body = b"payload=%7B%22action%22%3A%22created%22%2C%22issue%22%3A%7B%7D%7D";
        let signature = sign(SECRET.as_bytes(), body);
        let headers = headers(&[
            (SIGNATURE_HEADER, &signature),
            ("X-GitHub-Event", "issues"),
            ("X-GitHub-Delivery", "d-3"),
            ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8"),
        ]);
        let provider = GitHub::new(&[Secret::new(SECRET)]);
        let request = post(&headers, body);
        assert!(provider.verify(&request, UnixMillis::from_secs(0)).is_ok());
        assert_eq!(
            provider.identify(&request).event_type.as_deref(),
            Some("issues.created")
        );
    }

    #[test]
    fn missing_headers_identify_as_none() {
        let headers = headers(&[]);
        let identity = GitHub::new(&[]).identify(&post(&headers, br#"{"action":"opened"}"#));
        assert_eq!(identity, Identity::event(None, None));
    }
}
