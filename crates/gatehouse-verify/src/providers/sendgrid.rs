//! SendGrid (Event Webhook): `X-Twilio-Email-Event-Webhook-Signature`, a
//! base64 DER ECDSA P-256/SHA-256 signature over the
//! `X-Twilio-Email-Event-Webhook-Timestamp` value followed by the raw body.
//! The source's secrets are the verification keys SendGrid shows (base64
//! SubjectPublicKeyInfo DER; PEM armour is tolerated), checked when the
//! source is built. SendGrid documents no tolerance; we apply the source's,
//! 300 s by default, in both directions (that SendGrid re-signs its retries
//! with a fresh timestamp is unconfirmed: raise `tolerance` if retries are
//! refused as stale).
//!
//! The body is a JSON array of events. The dedup key is the first element's
//! `sg_event_id` and the type its `event` (`delivered`, `open`): a batch is
//! stored as one event. Deduplicating each element on its own `sg_event_id`
//! is future work (it needs the server to split batches).

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use p256::ecdsa::signature::DigestVerifier as _;
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;
use sha2::{Digest, Sha256};

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{check_timestamp, parse_unix_secs};
use crate::{BuildError, Identity, InboundRequest, Provider, Rejection, Verified};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-twilio-email-event-webhook-signature";
/// The timestamp header, signed.
pub const TIMESTAMP_HEADER: &str = "x-twilio-email-event-webhook-timestamp";
/// The tolerance when the source sets none (SendGrid documents none).
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// A DER ECDSA P-256 signature is at most 72 bytes: 96 base64 characters.
const MAX_SIGNATURE_TEXT: usize = 96;

/// SendGrid's scheme for one source.
#[derive(Debug)]
pub struct SendGrid {
    keys: Vec<VerifyingKey>,
    tolerance: Duration,
}

impl SendGrid {
    /// A verifier accepting a signature by any of `secrets`, each a
    /// verification key as SendGrid shows it. Fails, naming the secret by
    /// position only, if one is not a P-256 public key.
    pub fn new(secrets: &[Secret], tolerance: Duration) -> Result<Self, BuildError> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                decode_public_key(secret.expose()).ok_or_else(|| {
                    BuildError::new(
                        "secrets",
                        format!(
                            "secret #{} is not a SendGrid verification key (expected the base64 public key \
                             shown in the Event Webhook settings, starting \"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\")",
                            index + 1
                        ),
                    )
                })
            })
            .collect::<Result<_, BuildError>>()?;
        Ok(Self { keys, tolerance })
    }
}

/// Decodes a base64 SubjectPublicKeyInfo DER P-256 key, ignoring PEM
/// armour lines and whitespace.
pub fn decode_public_key(secret: &[u8]) -> Option<VerifyingKey> {
    let text = std::str::from_utf8(secret).ok()?;
    let base64: String = text
        .lines()
        .filter(|line| !line.trim_start().starts_with("-----"))
        .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(base64).ok()?;
    VerifyingKey::from_public_key_der(&der).ok()
}

/// Verifies a SendGrid request: pure function over the signature and
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
    let signature = parse_signature(signature)?;
    let secs = parse_unix_secs(TIMESTAMP_HEADER, timestamp)?;
    check_timestamp(secs, now, tolerance)?;
    let digest = Sha256::new().chain_update(timestamp.as_bytes()).chain_update(body);
    keys.iter()
        .position(|key| key.verify_digest(digest.clone(), &signature).is_ok())
        .map(|index| Verified::by_secret("sendgrid-ecdsa-p256", index))
        .ok_or(Rejection::NoMatchingSignature)
}

/// Decodes a base64 DER signature without allocating.
fn parse_signature(text: &str) -> Result<Signature, Rejection> {
    let malformed = || Rejection::MalformedHeader {
        header: SIGNATURE_HEADER.into(),
        problem: "expected a base64 DER ECDSA P-256 signature",
    };
    let text = text.trim();
    if text.len() > MAX_SIGNATURE_TEXT {
        return Err(malformed());
    }
    let mut der = [0u8; MAX_SIGNATURE_TEXT / 4 * 3];
    let len = base64::engine::general_purpose::STANDARD
        .decode_slice(text, &mut der)
        .map_err(|_| malformed())?;
    Signature::from_der(&der[..len]).map_err(|_| malformed())
}

/// The fields of the first event of a batch that identify it.
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    sg_event_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<Cow<'a, str>>,
}

/// Identifies a verified SendGrid batch by its first event.
pub fn identify(body: &[u8]) -> Identity {
    let first = match serde_json::from_slice::<Vec<Event<'_>>>(body) {
        Ok(events) => events.into_iter().next(),
        Err(_) => None,
    };
    let Some(first) = first else {
        return Identity::event(None, None);
    };
    let owned = |value: Option<Cow<'_, str>>| value.filter(|v| !v.is_empty()).map(Cow::into_owned);
    Identity::event(owned(first.sg_event_id), owned(first.event))
}

impl Provider for SendGrid {
    fn name(&self) -> &'static str {
        "sendgrid"
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

/// Signs `body` as SendGrid would at `timestamp` with `key`: the
/// `X-Twilio-Email-Event-Webhook-Signature` value. Used by `gatehouse
/// send`, tests and benchmarks (the signature is deterministic, RFC 6979).
pub fn sign(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
    use p256::ecdsa::signature::DigestSigner as _;
    let digest = Sha256::new().chain_update(timestamp.as_bytes()).chain_update(body);
    let signature: Signature = key.sign_digest(digest);
    let der: DerSignature = signature.to_der();
    base64::engine::general_purpose::STANDARD.encode(der.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    /// SendGrid SDK tests.
    const PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==";
    const T: i64 = 1_588_788_367;
    const BODY: &[u8] = br#"{"category":"example_payload","event":"test_event","message_id":"message_id"}"#;
    const VECTOR: &str =
        "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=";
    /// A test key made with Python's `cryptography` package: the private
    /// scalar and its base64 SPKI public key.
    const TEST_SCALAR: &str = "4a04dddc48efc56629bb8ba3852a393a07bc4211008202462e0500aea9cd310d";
    const TEST_PUBLIC_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEu31MgjFjsLJyW2svpf50wTN3PbLJoBcmIQIC+NKxH/gR8A8FwG8rsiImksFh3kFt+sAnSL0SjsOut+qAnUVJFg==";

    fn provider(keys: &[&str]) -> SendGrid {
        let secrets: Vec<Secret> = keys.iter().map(|s| Secret::new(*s)).collect();
        SendGrid::new(&secrets, DEFAULT_TOLERANCE).unwrap()
    }

    fn check(p: &SendGrid, signature: &str, body: &[u8], now: i64) -> Result<Verified, Rejection> {
        verify(
            Some(signature),
            Some("1588788367"),
            body,
            &p.keys,
            UnixMillis::from_secs(now),
            p.tolerance,
        )
    }

    fn test_key() -> SigningKey {
        let scalar: [u8; 32] = hex::decode(TEST_SCALAR).unwrap().try_into().unwrap();
        SigningKey::from_bytes(&scalar.into()).unwrap()
    }

    #[test]
    fn published_vector_verifies() {
        let verified = check(&provider(&[PUBLIC_KEY]), VECTOR, BODY, T).unwrap();
        assert_eq!(verified.scheme(), "sendgrid-ecdsa-p256");
        assert_eq!(verified.secret_index(), Some(0));
    }

    #[test]
    fn own_signatures_verify_with_the_python_made_key() {
        let signature = sign(&test_key(), "1588788367", BODY);
        assert!(check(&provider(&[TEST_PUBLIC_KEY]), &signature, BODY, T).is_ok());
    }

    #[test]
    fn wrong_key_is_rejected() {
        assert_eq!(
            check(&provider(&[TEST_PUBLIC_KEY]), VECTOR, BODY, T),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn one_changed_byte_is_rejected() {
        let mut body = BODY.to_vec();
        body[3] ^= 1;
        assert_eq!(
            check(&provider(&[PUBLIC_KEY]), VECTOR, &body, T),
            Err(Rejection::NoMatchingSignature)
        );
        assert_eq!(
            verify(
                Some(VECTOR),
                Some("1588788368"),
                BODY,
                &provider(&[PUBLIC_KEY]).keys,
                UnixMillis::from_secs(T),
                DEFAULT_TOLERANCE
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
            verify(None, Some("1588788367"), BODY, &p.keys, now, p.tolerance),
            Err(Rejection::MissingHeader(SIGNATURE_HEADER.into()))
        );
        assert_eq!(
            verify(Some(VECTOR), None, BODY, &p.keys, now, p.tolerance),
            Err(Rejection::MissingHeader(TIMESTAMP_HEADER.into()))
        );
        for signature in ["", "not base64!", "AAAA", &VECTOR[..60], &"A".repeat(200)] {
            assert!(
                matches!(check(&p, signature, BODY, T), Err(Rejection::MalformedHeader { .. })),
                "{signature:?}"
            );
        }
    }

    #[test]
    fn any_of_several_keys_may_match() {
        let verified = check(&provider(&[TEST_PUBLIC_KEY, PUBLIC_KEY]), VECTOR, BODY, T).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn keys_are_checked_at_build_time_and_pem_is_tolerated() {
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n{}\n-----END PUBLIC KEY-----\n",
            &PUBLIC_KEY[..64],
            &PUBLIC_KEY[64..]
        );
        assert!(SendGrid::new(&[Secret::new(pem)], DEFAULT_TOLERANCE).is_ok());
        for bad in ["", "not base64!", "AAAA", &PUBLIC_KEY[..40]] {
            let err = SendGrid::new(&[Secret::new(PUBLIC_KEY), Secret::new(bad)], DEFAULT_TOLERANCE).unwrap_err();
            assert_eq!(err.key, "secrets");
            assert!(err.message.contains("secret #2"), "{}", err.message);
        }
    }

    #[test]
    fn identifies_the_first_event_of_a_batch() {
        let body = br#"[{"email":"a@example.com","event":"delivered","sg_event_id":"sg-1","sg_message_id":"m"},{"event":"open","sg_event_id":"sg-2"}]"#;
        let headers = headers(&[]);
        assert_eq!(
            provider(&[PUBLIC_KEY]).identify(&post(&headers, body)),
            Identity::event(Some("sg-1".into()), Some("delivered".into()))
        );
        assert_eq!(identify(b"[]"), Identity::event(None, None));
        assert_eq!(identify(BODY), Identity::event(None, None));
    }
}
