//! Standard Webhooks (and Svix, which uses the same scheme under `svix-*`
//! header names): `webhook-id`, `webhook-timestamp` and a space-separated
//! `webhook-signature` list of `v1,<base64>` entries, HMAC-SHA256 over
//! `<id>.<timestamp>.<raw body>` keyed with the base64-decoded secret (after
//! its `whsec_` prefix). Unknown versions such as `v1a` (Ed25519) are
//! skipped. gatehouse also signs its own outbound deliveries with [`sign`].

use std::time::Duration;

use base64::Engine as _;
use hmac::Mac;

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{
    check_timestamp, constant_time_eq, decode_base64_into, json_id_and_type, keyed_sha256, parse_unix_secs, HmacSha256,
};
use crate::{BuildError, Identity, InboundRequest, Provider, Rejection, Verified};

/// The three header names of one naming family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderNames {
    /// The message id header: the dedup key, and signed.
    pub id: &'static str,
    /// The unix-seconds timestamp header, signed.
    pub timestamp: &'static str,
    /// The signature list header.
    pub signature: &'static str,
}

/// The Standard Webhooks header names.
pub const WEBHOOK_HEADERS: HeaderNames = HeaderNames {
    id: "webhook-id",
    timestamp: "webhook-timestamp",
    signature: "webhook-signature",
};
/// Svix's header names for the same scheme.
pub const SVIX_HEADERS: HeaderNames = HeaderNames {
    id: "svix-id",
    timestamp: "svix-timestamp",
    signature: "svix-signature",
};
/// The specification's tolerance, applied to old and future timestamps alike.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
/// The prefix the specification puts before the base64 secret.
const SECRET_PREFIX: &str = "whsec_";
/// What a build error says a secret should look like.
const EXPECTED_SECRET: &str = "expected \"whsec_\" followed by non-empty base64";
/// The most `v1` entries read from one header; more is an attack, not rotation.
const MAX_SIGNATURES: usize = 8;

/// The Standard Webhooks scheme for one source.
#[derive(Debug)]
pub struct StandardWebhooks {
    keys: Vec<HmacSha256>,
    tolerance: Duration,
}

impl StandardWebhooks {
    /// A verifier accepting any of `secrets`, each `whsec_<base64>` (the
    /// prefix is optional). Fails, naming the secret by position only, if
    /// one does not decode.
    pub fn new(secrets: &[Secret], tolerance: Duration) -> Result<Self, BuildError> {
        let keys = secrets
            .iter()
            .enumerate()
            .map(|(index, secret)| {
                let key = decode_secret(secret.expose()).ok_or_else(|| {
                    BuildError::new(
                        "secrets",
                        format!(
                            "secret #{} is not a Standard Webhooks secret ({EXPECTED_SECRET})",
                            index + 1
                        ),
                    )
                })?;
                Ok(keyed_sha256(&key))
            })
            .collect::<Result<_, BuildError>>()?;
        Ok(Self { keys, tolerance })
    }
}

/// The HMAC key of a Standard Webhooks secret: base64-decoded after an
/// optional `whsec_` prefix, padding optional. `None` if it is not base64 or
/// decodes to nothing.
pub fn decode_secret(secret: &[u8]) -> Option<Vec<u8>> {
    // Padding is optional because secrets are often pasted without it, and
    // the official libraries (Python's `b64decode` in particular) accept both.
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let text = std::str::from_utf8(secret).ok()?.trim();
    let encoded = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
    LENIENT.decode(encoded).ok().filter(|key| !key.is_empty())
}

/// The signed headers of one request, with the names they were read under so
/// that rejections name the header the sender actually used.
#[derive(Clone, Copy, Debug)]
pub struct SignedHeaders<'a> {
    /// The naming family in use.
    pub names: HeaderNames,
    /// The message id header's value.
    pub id: Option<&'a str>,
    /// The timestamp header's value.
    pub timestamp: Option<&'a str>,
    /// The signature header's value.
    pub signature: Option<&'a str>,
}

impl<'a> SignedHeaders<'a> {
    /// Reads the `webhook-*` headers, or the `svix-*` ones when the request
    /// carries no `webhook-signature`. One family is used for all three so
    /// that a request mixing them is judged by a consistent set.
    pub fn from_request(request: &InboundRequest<'a>) -> Self {
        let names = if request.header(WEBHOOK_HEADERS.signature).is_none()
            && request.header(SVIX_HEADERS.signature).is_some()
        {
            SVIX_HEADERS
        } else {
            WEBHOOK_HEADERS
        };
        Self {
            names,
            id: request.header(names.id),
            timestamp: request.header(names.timestamp),
            signature: request.header(names.signature),
        }
    }
}

/// Reads the `v1` signatures of a signature header, decoded, skipping other
/// versions and `v1` entries that are not a base64 SHA-256 digest.
pub fn parse_signatures(header: &'static str, value: &str) -> Result<Vec<[u8; 32]>, Rejection> {
    let mut v1 = Vec::new();
    for entry in value.split_ascii_whitespace() {
        if v1.len() == MAX_SIGNATURES {
            break;
        }
        let Some(("v1", encoded)) = entry.split_once(',') else {
            continue;
        };
        let mut signature = [0u8; 32];
        // An undecodable entry cannot match; skipping it rather than failing
        // the request matches the official libraries.
        if decode_base64_into(encoded, &mut signature) {
            v1.push(signature);
        }
    }
    if v1.is_empty() {
        return Err(Rejection::MalformedHeader {
            header: header.into(),
            problem: "no v1,<base64> signature",
        });
    }
    Ok(v1)
}

/// Verifies a Standard Webhooks request: pure function over the signed
/// headers, raw body, prepared keys and the current time.
pub fn verify(
    headers: &SignedHeaders<'_>,
    body: &[u8],
    keys: &[HmacSha256],
    now: UnixMillis,
    tolerance: Duration,
) -> Result<Verified, Rejection> {
    let names = headers.names;
    let id = headers.id.ok_or(Rejection::MissingHeader(names.id.into()))?;
    let timestamp = headers
        .timestamp
        .ok_or(Rejection::MissingHeader(names.timestamp.into()))?;
    let signature = headers
        .signature
        .ok_or(Rejection::MissingHeader(names.signature.into()))?;
    if id.is_empty() {
        return Err(Rejection::MalformedHeader {
            header: names.id.into(),
            problem: "empty message id",
        });
    }
    let timestamp = parse_unix_secs(names.timestamp, timestamp)?;
    let candidates = parse_signatures(names.signature, signature)?;
    check_timestamp(timestamp, now, tolerance)?;
    for (index, key) in keys.iter().enumerate() {
        let expected = signed_digest(key, id, timestamp, body);
        // Check every candidate so timing does not reveal which one matched.
        let mut matched = false;
        for candidate in &candidates {
            matched |= constant_time_eq(&expected, candidate);
        }
        if matched {
            return Ok(Verified::by_secret("standard-webhooks-v1", index));
        }
    }
    Err(Rejection::NoMatchingSignature)
}

/// HMAC-SHA256 of `<id>.<timestamp>.<body>`. The timestamp is written in
/// canonical decimal, as the official libraries re-render it before signing.
fn signed_digest(key: &HmacSha256, id: &str, timestamp: i64, body: &[u8]) -> [u8; 32] {
    let mut mac = key.clone();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

impl Provider for StandardWebhooks {
    fn name(&self) -> &'static str {
        "standard-webhooks"
    }

    fn verify(&self, request: &InboundRequest<'_>, now: UnixMillis) -> Result<Verified, Rejection> {
        verify(
            &SignedHeaders::from_request(request),
            request.body,
            &self.keys,
            now,
            self.tolerance,
        )
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        let id = SignedHeaders::from_request(request).id.filter(|id| !id.is_empty());
        let (_, event_type) = json_id_and_type(request.body, "id", "type");
        Identity::event(id.map(str::to_owned), event_type)
    }
}

/// Signs a message: the `webhook-signature` value (`v1,<base64>`) for message
/// `id` sent at `timestamp` (unix seconds), with `key` the decoded secret
/// (see [`decode_secret`]). gatehouse sends `id` and `timestamp` in the
/// `webhook-id` and `webhook-timestamp` headers beside it.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = signed_digest(&keyed_sha256(key), id, timestamp, body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const T: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn provider(secrets: &[&str]) -> StandardWebhooks {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        StandardWebhooks::new(&secrets, DEFAULT_TOLERANCE).unwrap()
    }

    fn signed<'a>(signature: &'a str, timestamp: &'a str) -> SignedHeaders<'a> {
        SignedHeaders {
            names: WEBHOOK_HEADERS,
            id: Some(ID),
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    fn check(
        provider: &StandardWebhooks,
        headers: &SignedHeaders<'_>,
        body: &[u8],
        now: i64,
    ) -> Result<Verified, Rejection> {
        verify(
            headers,
            body,
            &provider.keys,
            UnixMillis::from_secs(now),
            provider.tolerance,
        )
    }

    #[test]
    fn published_vector_verifies() {
        let verified = check(&provider(&[SECRET]), &signed(VECTOR, "1614265330"), BODY, T).unwrap();
        assert_eq!(verified.secret_index(), Some(0));
        let key = decode_secret(SECRET.as_bytes()).unwrap();
        assert_eq!(sign(&key, ID, T, BODY), VECTOR);
    }

    #[test]
    fn secrets_decode_with_or_without_prefix_and_padding() {
        let key = decode_secret(SECRET.as_bytes()).unwrap();
        assert_eq!(key.len(), 24);
        assert_eq!(decode_secret(b"MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Some(key));
        assert_eq!(decode_secret(b"whsec_AQID"), Some(vec![1, 2, 3]));
        assert_eq!(decode_secret(b"whsec_AQI="), Some(vec![1, 2]));
        assert_eq!(decode_secret(b"whsec_AQI"), Some(vec![1, 2]));
        assert_eq!(decode_secret(b"whsec_"), None);
        assert_eq!(decode_secret(b"whsec_not base64!"), None);
        assert_eq!(decode_secret(&[0xff, 0xfe]), None);
    }

    #[test]
    fn undecodable_secret_is_a_build_error_without_the_secret() {
        let secrets = [Secret::new(SECRET), Secret::new("whsec_s3cr3t!!")];
        let err = StandardWebhooks::new(&secrets, DEFAULT_TOLERANCE).unwrap_err();
        assert_eq!(err.key, "secrets");
        assert!(err.message.contains("secret #2"), "{}", err.message);
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn wrong_secret_is_rejected() {
        assert_eq!(
            check(
                &provider(&["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]),
                &signed(VECTOR, "1614265330"),
                BODY,
                T
            ),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn secret_used_undecoded_is_a_different_key() {
        let mut mac = keyed_sha256(SECRET.as_bytes());
        mac.update(format!("{ID}.{T}.").as_bytes());
        mac.update(BODY);
        let wrong = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(
            check(&provider(&[SECRET]), &signed(&wrong, "1614265330"), BODY, T),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn one_changed_byte_is_rejected() {
        let mut body = BODY.to_vec();
        body[3] ^= 1;
        assert_eq!(
            check(&provider(&[SECRET]), &signed(VECTOR, "1614265330"), &body, T),
            Err(Rejection::NoMatchingSignature)
        );
        let other_id = SignedHeaders {
            id: Some("msg_other"),
            ..signed(VECTOR, "1614265330")
        };
        assert_eq!(
            check(&provider(&[SECRET]), &other_id, BODY, T),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let p = provider(&[SECRET]);
        let headers = signed(VECTOR, "1614265330");
        assert!(matches!(
            check(&p, &headers, BODY, T + 301),
            Err(Rejection::TimestampTooOld { .. })
        ));
        assert!(matches!(
            check(&p, &headers, BODY, T - 301),
            Err(Rejection::TimestampInFuture { .. })
        ));
        assert!(check(&p, &headers, BODY, T + 300).is_ok());
        assert!(check(&p, &headers, BODY, T - 300).is_ok());
    }

    #[test]
    fn missing_headers_are_rejected_by_name() {
        let p = provider(&[SECRET]);
        let full = signed(VECTOR, "1614265330");
        for (headers, missing) in [
            (SignedHeaders { id: None, ..full }, "webhook-id"),
            (
                SignedHeaders {
                    timestamp: None,
                    ..full
                },
                "webhook-timestamp",
            ),
            (
                SignedHeaders {
                    signature: None,
                    ..full
                },
                "webhook-signature",
            ),
        ] {
            assert_eq!(
                check(&p, &headers, BODY, T),
                Err(Rejection::MissingHeader(missing.into()))
            );
        }
    }

    #[test]
    fn malformed_headers_are_rejected() {
        let p = provider(&[SECRET]);
        for (signature, timestamp) in [
            ("", "1614265330"),
            ("garbage", "1614265330"),
            ("g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "1614265330"),
            ("v1=g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "1614265330"),
            ("v1,not-base64", "1614265330"),
            ("v1,AAAA", "1614265330"),
            ("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "1614265330"),
            (VECTOR, "yesterday"),
            (VECTOR, "1614265330.5"),
            (VECTOR, ""),
        ] {
            assert!(
                matches!(
                    check(&p, &signed(signature, timestamp), BODY, T),
                    Err(Rejection::MalformedHeader { .. })
                ),
                "{signature:?} {timestamp:?}"
            );
        }
        let empty_id = SignedHeaders {
            id: Some(""),
            ..signed(VECTOR, "1614265330")
        };
        assert!(matches!(
            check(&p, &empty_id, BODY, T),
            Err(Rejection::MalformedHeader { .. })
        ));
    }

    #[test]
    fn unknown_versions_are_skipped_and_any_v1_may_match() {
        let header = format!("v1a,{} v1,{} {VECTOR} v2,xyz", "A".repeat(86), "A".repeat(43) + "=");
        assert!(check(&provider(&[SECRET]), &signed(&header, "1614265330"), BODY, T).is_ok());
    }

    #[test]
    fn signatures_beyond_the_cap_are_not_read() {
        let decoy = format!("v1,{}=", "A".repeat(43));
        let header = format!("{} {VECTOR}", [decoy.as_str(); MAX_SIGNATURES].join(" "));
        assert_eq!(
            check(&provider(&[SECRET]), &signed(&header, "1614265330"), BODY, T),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn second_secret_during_rotation() {
        let verified = check(
            &provider(&["whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", SECRET]),
            &signed(VECTOR, "1614265330"),
            BODY,
            T,
        )
        .unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn svix_header_names_verify_and_identify() {
        let body = br#"{"type":"invoice.paid","id":"not-the-dedup-key"}"#;
        let key = decode_secret(SECRET.as_bytes()).unwrap();
        let signature = sign(&key, ID, T, body);
        let headers = headers(&[
            ("svix-id", ID),
            ("svix-timestamp", "1614265330"),
            ("svix-signature", &signature),
        ]);
        let p = provider(&[SECRET]);
        let request = post(&headers, body);
        assert!(p.verify(&request, UnixMillis::from_secs(T)).is_ok());
        assert_eq!(
            p.identify(&request),
            Identity::event(Some(ID.into()), Some("invoice.paid".into()))
        );
    }

    #[test]
    fn identifies_id_header_and_body_type() {
        let headers = headers(&[("webhook-id", ID), ("webhook-timestamp", "1614265330")]);
        let identity = provider(&[SECRET]).identify(&post(&headers, br#"{"type":"user.created"}"#));
        assert_eq!(identity, Identity::event(Some(ID.into()), Some("user.created".into())));
    }
}
