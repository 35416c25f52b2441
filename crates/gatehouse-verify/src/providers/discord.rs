//! Discord (interactions and webhook events): `X-Signature-Ed25519` (hex)
//! and `X-Signature-Timestamp`, an Ed25519 signature over the timestamp's
//! bytes followed by the raw body, made with the application's key. The
//! source's secrets are application **public** keys (64 hex digits, from
//! the developer portal), checked when the source is built. Verification is
//! strict (`verify_strict`: no small-order keys, no malleable signatures).
//!
//! Discord deliberately sends bad signatures and removes endpoints that
//! accept them: every failure here is a [`Rejection`], which the HTTP layer
//! answers with 401. Discord documents no timestamp tolerance; we apply the
//! source's, 300 s by default, in both directions: Discord expects an answer
//! within 3 s and never retries, so nothing genuine is older.
//!
//! Identification, after verification:
//! - An interaction PING `{"type":1}` is a [`Kind::Handshake`] answered
//!   `200 application/json {"type":1}`.
//! - A webhook-events PING `{"type":0,…}` is a handshake answered `204` with
//!   an empty body.
//! - A webhook event `{"type":1,"event":{"type":"APPLICATION_AUTHORIZED"}}`
//!   has its `event.type` as the type.
//! - Other interactions are typed by name (`application_command`,
//!   `message_component`, `application_command_autocomplete`,
//!   `modal_submit`) and deduplicated on the interaction `id`.

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{check_timestamp, decode_hex_into, parse_unix_secs};
use crate::{BuildError, HandshakeReply, Identity, InboundRequest, Kind, Provider, Rejection, Verified};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-signature-ed25519";
/// The timestamp header, signed.
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";
/// The tolerance when the source sets none (Discord documents none).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Discord's scheme for one source.
#[derive(Debug)]
pub struct Discord {
    keys: Vec<VerifyingKey>,
    tolerance: Duration,
}

impl Discord {
    /// A verifier accepting a signature by any of `secrets`, each an
    /// application's public key in hex. Fails, naming the secret by position
    /// only, if one is not a valid Ed25519 public key.
    pub fn new(secrets: &[Secret], tolerance: Duration) -> Result<Self, BuildError> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                decode_public_key(secret.expose()).ok_or_else(|| {
                    BuildError::new(
                        "secrets",
                        format!(
                            "secret #{} is not a Discord application public key (expected 64 hex digits, \
                             as shown under \"Public Key\" in the developer portal)",
                            index + 1
                        ),
                    )
                })
            })
            .collect::<Result<_, BuildError>>()?;
        Ok(Self { keys, tolerance })
    }
}

/// Decodes a hex Ed25519 public key, refusing points that are not on the
/// curve and weak (small-order) keys.
pub fn decode_public_key(secret: &[u8]) -> Option<VerifyingKey> {
    let text = std::str::from_utf8(secret).ok()?.trim();
    let mut bytes = [0u8; 32];
    if !decode_hex_into(text, &mut bytes) {
        return None;
    }
    VerifyingKey::from_bytes(&bytes).ok().filter(|key| !key.is_weak())
}

/// Verifies a Discord request: pure function over the signature and
/// timestamp header values, the raw body, the public keys and now.
pub fn verify(
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    keys: &[VerifyingKey],
    now: UnixMillis,
    tolerance: Duration,
) -> Result<Verified, Rejection> {
    let signature = signature.ok_or(Rejection::MissingHeader(SIGNATURE_HEADER.into()))?;
    let timestamp = timestamp.ok_or(Rejection::MissingHeader(TIMESTAMP_HEADER.into()))?;
    let mut signature_bytes = [0u8; 64];
    if !decode_hex_into(signature, &mut signature_bytes) {
        return Err(Rejection::MalformedHeader {
            header: SIGNATURE_HEADER.into(),
            problem: "expected 128 hex digits",
        });
    }
    let secs = parse_unix_secs(TIMESTAMP_HEADER, timestamp)?;
    check_timestamp(secs, now, tolerance)?;
    let signature = Signature::from_bytes(&signature_bytes);
    // Ed25519 hashes the message twice, so it needs it in one piece; the
    // copy is bounded by the body limit.
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    keys.iter()
        .position(|key| key.verify_strict(&message, &signature).is_ok())
        .map(|index| Verified::by_secret("discord-ed25519", index))
        .ok_or(Rejection::NoMatchingSignature)
}

/// The fields of a Discord body that identify it.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(default, rename = "type")]
    kind: Option<u64>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Event<'a>>,
}

#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<Cow<'a, str>>,
}

/// Identifies a verified Discord request from its body.
pub fn identify(body: &[u8]) -> Identity {
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(body) else {
        return Identity::event(None, None);
    };
    let id = envelope.id.filter(|id| !id.is_empty()).map(Cow::into_owned);
    if let Some(event) = envelope.event {
        // A webhook event: `type` 1 with the event inside.
        let event_type = event.kind.filter(|k| !k.is_empty()).map(Cow::into_owned);
        return Identity::event(id, event_type);
    }
    let (event_type, reply) = match envelope.kind {
        Some(0) => ("webhook_ping", Some(reply(204, ""))),
        Some(1) => ("ping", Some(reply(200, r#"{"type":1}"#))),
        Some(2) => ("application_command", None),
        Some(3) => ("message_component", None),
        Some(4) => ("application_command_autocomplete", None),
        Some(5) => ("modal_submit", None),
        _ => return Identity::event(id, None),
    };
    Identity {
        provider_event_id: id,
        event_type: Some(event_type.to_owned()),
        kind: match reply {
            Some(reply) => Kind::Handshake(reply),
            None => Kind::Event,
        },
    }
}

fn reply(status: u16, body: &'static str) -> HandshakeReply {
    HandshakeReply {
        status,
        content_type: "application/json",
        headers: Vec::new(),
        body: Bytes::from_static(body.as_bytes()),
    }
}

impl Provider for Discord {
    fn name(&self) -> &'static str {
        "discord"
    }

    fn verify(&self, request: &InboundRequest<'_>, now: UnixMillis) -> Result<Verified, Rejection> {
        verify(
            request.header(SIGNATURE_HEADER),
            request.header(TIMESTAMP_HEADER),
            request.body,
            &self.keys,
            now,
            self.tolerance,
        )
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        identify(request.body)
    }
}

/// Signs `body` as Discord would at `timestamp` with the key derived from
/// `seed`: the `X-Signature-Ed25519` value. Used by `gatehouse send`, tests
/// and benchmarks; the matching secret is [`public_key_hex`].
pub fn sign(seed: &[u8; 32], timestamp: &str, body: &[u8]) -> String {
    let mut message = Vec::with_capacity(timestamp.len() + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.extend_from_slice(body);
    hex::encode(SigningKey::from_bytes(seed).sign(&message).to_bytes())
}

/// The hex public key of the key derived from `seed`: the secret to
/// configure for requests made with [`sign`].
pub fn public_key_hex(seed: &[u8; 32]) -> String {
    hex::encode(SigningKey::from_bytes(seed).verifying_key().to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    /// The self-made vector, verified with discord-interactions: seed bytes
    /// 0x00..0x1f.
    const PUBLIC_KEY: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
    const T: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"type":1}"#;
    const VECTOR: &str = "c1098e97d711377f30225d53d94b89d43537f92e5b3afaddc590781b1f9f9d4b2eeab335d370be3b9a090bc61a85b86448bc140dcd195f1569c2bff181257607";

    fn seed() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    fn provider(keys: &[&str]) -> Discord {
        let secrets: Vec<Secret> = keys.iter().map(|s| Secret::new(*s)).collect();
        Discord::new(&secrets, DEFAULT_TOLERANCE).unwrap()
    }

    fn check(p: &Discord, signature: &str, body: &[u8], now: i64) -> Result<Verified, Rejection> {
        verify(
            Some(signature),
            Some("1700000000"),
            body,
            &p.keys,
            UnixMillis::from_secs(now),
            p.tolerance,
        )
    }

    #[test]
    fn published_vector_verifies() {
        let verified = check(&provider(&[PUBLIC_KEY]), VECTOR, BODY, T).unwrap();
        assert_eq!(verified.scheme(), "discord-ed25519");
        assert_eq!(verified.secret_index(), Some(0));
        assert_eq!(public_key_hex(&seed()), PUBLIC_KEY);
        assert_eq!(sign(&seed(), "1700000000", BODY), VECTOR);
    }

    #[test]
    fn wrong_key_is_rejected() {
        let other = public_key_hex(&[7u8; 32]);
        assert_eq!(
            check(&provider(&[&other]), VECTOR, BODY, T),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn one_changed_byte_anywhere_is_rejected() {
        let p = provider(&[PUBLIC_KEY]);
        assert_eq!(
            check(&p, VECTOR, br#"{"type":2}"#, T),
            Err(Rejection::NoMatchingSignature)
        );
        let mut signature = VECTOR.to_owned();
        signature.replace_range(0..2, "c0");
        assert_eq!(check(&p, &signature, BODY, T), Err(Rejection::NoMatchingSignature));
        assert_eq!(
            verify(
                Some(VECTOR),
                Some("1700000001"),
                BODY,
                &p.keys,
                UnixMillis::from_secs(T),
                p.tolerance
            ),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let p = provider(&[PUBLIC_KEY]);
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
        let p = provider(&[PUBLIC_KEY]);
        let now = UnixMillis::from_secs(T);
        assert_eq!(
            verify(None, Some("1700000000"), BODY, &p.keys, now, p.tolerance),
            Err(Rejection::MissingHeader(SIGNATURE_HEADER.into()))
        );
        assert_eq!(
            verify(Some(VECTOR), None, BODY, &p.keys, now, p.tolerance),
            Err(Rejection::MissingHeader(TIMESTAMP_HEADER.into()))
        );
        for signature in ["", "zz", &VECTOR[..126], &format!("{VECTOR}00")] {
            assert!(
                matches!(check(&p, signature, BODY, T), Err(Rejection::MalformedHeader { .. })),
                "{signature:?}"
            );
        }
        assert!(matches!(
            verify(Some(VECTOR), Some("2023-11-14"), BODY, &p.keys, now, p.tolerance),
            Err(Rejection::MalformedHeader { .. })
        ));
    }

    #[test]
    fn any_of_several_keys_may_match() {
        let other = public_key_hex(&[7u8; 32]);
        let verified = check(&provider(&[&other, PUBLIC_KEY]), VECTOR, BODY, T).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn bad_public_keys_are_build_errors_without_the_secret() {
        // The identity point (all zeros but the sign bit pattern) is a weak key.
        let weak = format!("01{}", "00".repeat(31));
        for bad in ["", "not hex", &PUBLIC_KEY[..62], "ZZ", &weak] {
            let err = Discord::new(&[Secret::new(PUBLIC_KEY), Secret::new(bad)], DEFAULT_TOLERANCE).unwrap_err();
            assert_eq!(err.key, "secrets", "{bad:?}");
            assert!(err.message.contains("secret #2"), "{}", err.message);
        }
        let err = Discord::new(&[Secret::new("s3cr3t-not-a-key")], DEFAULT_TOLERANCE).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(Discord::new(&[Secret::new(format!(" {PUBLIC_KEY}\n"))], DEFAULT_TOLERANCE).is_ok());
    }

    #[test]
    fn verified_ping_is_a_handshake_answered_with_type_1() {
        let headers = headers(&[(SIGNATURE_HEADER, VECTOR), (TIMESTAMP_HEADER, "1700000000")]);
        let p = provider(&[PUBLIC_KEY]);
        let request = post(&headers, BODY);
        assert!(p.verify(&request, UnixMillis::from_secs(T)).is_ok());
        let identity = p.identify(&request);
        assert_eq!(identity.event_type.as_deref(), Some("ping"));
        assert_eq!(
            identity.kind,
            Kind::Handshake(HandshakeReply {
                status: 200,
                content_type: "application/json",
                headers: Vec::new(),
                body: Bytes::from_static(br#"{"type":1}"#),
            })
        );
    }

    #[test]
    fn identifies_interactions_and_webhook_events() {
        let command = br#"{"id":"1180000000000000000","type":2,"data":{"name":"deploy"},"token":"t"}"#;
        assert_eq!(
            identify(command),
            Identity::event(Some("1180000000000000000".into()), Some("application_command".into()))
        );
        let webhook_ping = identify(br#"{"version":1,"application_id":"1","type":0}"#);
        let Kind::Handshake(reply) = webhook_ping.kind else {
            panic!("expected a handshake");
        };
        assert_eq!((reply.status, reply.body.len()), (204, 0));
        let event = br#"{"version":1,"application_id":"1","type":1,"event":{"type":"APPLICATION_AUTHORIZED","timestamp":"2024-10-18T14:42:53.064834","data":{}}}"#;
        assert_eq!(
            identify(event),
            Identity::event(None, Some("APPLICATION_AUTHORIZED".into()))
        );
        assert_eq!(identify(br#"{"type":99}"#), Identity::event(None, None));
        assert_eq!(identify(b"nope"), Identity::event(None, None));
    }
}
