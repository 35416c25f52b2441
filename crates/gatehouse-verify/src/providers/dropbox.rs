//! Dropbox: `X-Dropbox-Signature` = hex HMAC-SHA256(app secret, raw body).
//! Endpoint verification arrives unsigned by design: `GET
//! <url>?challenge=X` is answered, before any verification, `200 text/plain`
//! with X and `X-Content-Type-Options: nosniff`.
//!
//! A notification only says "these accounts changed; ask the API what", so
//! it has no id: the type is always `dropbox.notification` and no provider
//! id is returned (deduplication falls back to the SHA-256 of the body).
//! Note that two notifications about the same accounts have identical
//! bodies.

use bytes::Bytes;
use hmac::Mac;
use http::Method;

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{decode_hex_into, first_matching_key, keyed_sha256, query_param, HmacSha256};
use crate::{HandshakeReply, Identity, InboundRequest, Provider, Rejection, Verified};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-dropbox-signature";
/// The query parameter of an endpoint verification request.
pub const CHALLENGE_PARAM: &str = "challenge";
/// The type of every notification.
pub const EVENT_TYPE: &str = "dropbox.notification";
/// The longest challenge echoed back; Dropbox's are far shorter.
const MAX_CHALLENGE: usize = 1024;

/// Dropbox's scheme for one source.
#[derive(Debug)]
pub struct Dropbox {
    keys: Vec<HmacSha256>,
}

impl Dropbox {
    /// A verifier accepting any of `secrets` (app secrets, used as their raw
    /// bytes).
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            keys: secrets.iter().map(|s| keyed_sha256(s.expose())).collect(),
        }
    }
}

/// The answer to an endpoint verification request, if this is one: a GET
/// whose URL carries a non-empty `challenge`.
pub fn challenge_reply(method: &Method, url: &str) -> Option<HandshakeReply> {
    if method != Method::GET {
        return None;
    }
    let challenge = query_param(url, CHALLENGE_PARAM)?;
    if challenge.is_empty() || challenge.len() > MAX_CHALLENGE {
        return None;
    }
    Some(HandshakeReply {
        status: 200,
        content_type: "text/plain",
        headers: vec![("x-content-type-options", "nosniff".to_owned())],
        body: Bytes::from(challenge.into_owned()),
    })
}

/// Verifies a Dropbox notification: pure function over the signature header
/// value, the raw body and the prepared keys.
pub fn verify(signature: Option<&str>, body: &[u8], keys: &[HmacSha256]) -> Result<Verified, Rejection> {
    let signature = signature.ok_or(Rejection::MissingHeader(SIGNATURE_HEADER.into()))?;
    let mut digest = [0u8; 32];
    if !decode_hex_into(signature.trim(), &mut digest) {
        return Err(Rejection::MalformedHeader {
            header: SIGNATURE_HEADER.into(),
            problem: "expected 64 hex digits",
        });
    }
    first_matching_key(keys, &digest, |mac| mac.update(body))
        .map(|index| Verified::by_secret("dropbox-sha256", index))
        .ok_or(Rejection::NoMatchingSignature)
}

impl Provider for Dropbox {
    fn same_body_is_same_event(&self) -> bool {
        // A notification says only which accounts changed; the same list
        // arrives again for every later change, so it is no duplicate.
        false
    }

    fn name(&self) -> &'static str {
        "dropbox"
    }

    fn unsigned_handshake(&self, request: &InboundRequest<'_>) -> Option<HandshakeReply> {
        challenge_reply(request.method, request.url)
    }

    fn verify(&self, request: &InboundRequest<'_>, _now: UnixMillis) -> Result<Verified, Rejection> {
        verify(request.header(SIGNATURE_HEADER), request.body, &self.keys)
    }

    fn identify(&self, _request: &InboundRequest<'_>) -> Identity {
        Identity::event(None, Some(EVENT_TYPE.to_owned()))
    }
}

/// Signs `body` as Dropbox would: the `X-Dropbox-Signature` value. Used by
/// `gatehouse send`, tests and benchmarks.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = keyed_sha256(secret);
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const SECRET: &str = "dropbox-app-secret";
    const BODY: &[u8] =
        br#"{"list_folder": {"accounts": ["dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"]}, "delta": {"users": [12345678]}}"#;
    /// Dropbox publishes no vector: hex HMAC-SHA256(SECRET, BODY) computed
    /// with Python's `hmac` module.
    const VECTOR: &str = "2bc2b96598b80c2f2083a056de14d73ef9555deb6d554f2332327d06a70734fc";

    fn keys(secrets: &[&str]) -> Vec<HmacSha256> {
        secrets.iter().map(|s| keyed_sha256(s.as_bytes())).collect()
    }

    #[test]
    fn python_made_vector_verifies() {
        let verified = verify(Some(VECTOR), BODY, &keys(&[SECRET])).unwrap();
        assert_eq!(verified.scheme(), "dropbox-sha256");
        assert_eq!(sign(SECRET.as_bytes(), BODY), VECTOR);
        assert!(verify(Some(&VECTOR.to_ascii_uppercase()), BODY, &keys(&[SECRET])).is_ok());
    }

    #[test]
    fn wrong_secret_and_changed_byte_are_rejected() {
        assert_eq!(
            verify(Some(VECTOR), BODY, &keys(&["other"])),
            Err(Rejection::NoMatchingSignature)
        );
        let mut body = BODY.to_vec();
        body[40] ^= 1;
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
        for value in ["", "sha256=2bc2", &VECTOR[..60], "zz"] {
            assert!(
                matches!(verify(Some(value), BODY, &k), Err(Rejection::MalformedHeader { .. })),
                "{value:?}"
            );
        }
    }

    #[test]
    fn second_secret_during_rotation() {
        assert_eq!(
            verify(Some(VECTOR), BODY, &keys(&["old", SECRET]))
                .unwrap()
                .secret_index(),
            Some(1)
        );
    }

    #[test]
    fn challenge_is_echoed_unsigned_as_plain_text() {
        let headers = headers(&[]);
        let request = InboundRequest {
            method: &Method::GET,
            url: "https://gatehouse.test/in/dropbox?challenge=Zm9v%20YmFy",
            headers: &headers,
            body: b"",
        };
        let reply = Dropbox::new(&[Secret::new(SECRET)])
            .unsigned_handshake(&request)
            .unwrap();
        assert_eq!(
            reply,
            HandshakeReply {
                status: 200,
                content_type: "text/plain",
                headers: vec![("x-content-type-options", "nosniff".to_owned())],
                body: Bytes::from_static(b"Zm9v YmFy"),
            }
        );
    }

    #[test]
    fn other_requests_are_not_challenges() {
        let headers = headers(&[]);
        let p = Dropbox::new(&[Secret::new(SECRET)]);
        let notification = post(&headers, BODY);
        assert_eq!(p.unsigned_handshake(&notification), None);
        let post_with_challenge = InboundRequest {
            url: "https://gatehouse.test/in/dropbox?challenge=abc",
            ..notification
        };
        assert_eq!(p.unsigned_handshake(&post_with_challenge), None);
        let long = format!("https://gatehouse.test/in/dropbox?challenge={}", "a".repeat(2000));
        let get_long = InboundRequest {
            method: &Method::GET,
            url: &long,
            ..notification
        };
        assert_eq!(p.unsigned_handshake(&get_long), None);
    }

    #[test]
    fn identifies_as_a_notification_without_an_id() {
        let headers = headers(&[]);
        assert_eq!(
            Dropbox::new(&[]).identify(&post(&headers, BODY)),
            Identity::event(None, Some(EVENT_TYPE.into()))
        );
    }
}
