//! `hmac`: a generic HMAC scheme described by the source's `verify` options,
//! for senders without a dedicated provider (Shopify, Dropbox, in-house
//! services): which header carries the signature, the hash (SHA-1, SHA-256
//! or SHA-512), the encoding (hex or base64), an optional prefix, and what is
//! signed: a template over `{body}` and, with a timestamp header, `{timestamp}`.
//! Options are validated once at build time; requests only pay for the HMAC.

use std::borrow::Cow;
use std::time::Duration;

use base64::Engine as _;
use hmac::Mac;
use http::HeaderName;

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{
    check_timestamp, constant_time_eq, decode_base64_into, decode_hex_into, json_id_and_type, keyed_sha1, keyed_sha256,
    keyed_sha512, parse_unix_secs, HmacSha1, HmacSha256, HmacSha512,
};
use crate::{BuildError, Identity, InboundRequest, Provider, Rejection, Verified, VerifyOptions};

/// The tolerance for the timestamp header when the source sets none.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// The hash under the HMAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA1, for legacy senders only.
    Sha1,
    /// HMAC-SHA256, the default.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Algorithm {
    fn digest_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }

    fn scheme(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "hmac-sha1",
            Algorithm::Sha256 => "hmac-sha256",
            Algorithm::Sha512 => "hmac-sha512",
        }
    }
}

/// How the digest is written in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Hex, either case on input, lowercase when signing. The default.
    Hex,
    /// Standard padded base64.
    Base64,
}

/// One piece of the signed-content template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Body,
    Timestamp,
}

/// The scheme as configured: everything but the keys, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HmacConfig {
    header: HeaderName,
    algorithm: Algorithm,
    encoding: Encoding,
    prefix: String,
    timestamp_header: Option<HeaderName>,
    template: Vec<Part>,
    tolerance: Duration,
}

impl HmacConfig {
    /// Validates the `verify` options, naming the key at fault in the error.
    pub fn from_options(options: &VerifyOptions, tolerance: Option<Duration>) -> Result<Self, BuildError> {
        let header = options.header.as_deref().ok_or_else(|| {
            BuildError::new(
                "verify.header",
                "provider \"hmac\" needs the name of the header carrying the signature, e.g. \
                 header = \"X-Signature\"",
            )
        })?;
        let header = header_name("verify.header", header)?;
        let algorithm = match options.algorithm.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("sha256") => Algorithm::Sha256,
            Some("sha1") => Algorithm::Sha1,
            Some("sha512") => Algorithm::Sha512,
            Some(other) => {
                return Err(BuildError::new(
                    "verify.algorithm",
                    format!("unknown algorithm {other:?} (expected sha1, sha256 or sha512)"),
                ))
            }
        };
        let encoding = match options.encoding.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("hex") => Encoding::Hex,
            Some("base64") => Encoding::Base64,
            Some(other) => {
                return Err(BuildError::new(
                    "verify.encoding",
                    format!("unknown encoding {other:?} (expected hex or base64)"),
                ))
            }
        };
        let timestamp_header = options
            .timestamp_header
            .as_deref()
            .map(|name| header_name("verify.timestamp_header", name))
            .transpose()?;
        let template = parse_template(options.signed_content.as_deref().unwrap_or("{body}"))?;
        let signs_timestamp = template.contains(&Part::Timestamp);
        if signs_timestamp && timestamp_header.is_none() {
            return Err(BuildError::new(
                "verify.signed_content",
                "uses {timestamp}, so verify.timestamp_header must name the header carrying it",
            ));
        }
        if timestamp_header.is_some() && !signs_timestamp {
            // A timestamp outside the signed content can be rewritten by
            // anyone, so checking its freshness would prove nothing.
            return Err(BuildError::new(
                "verify.signed_content",
                "must include {timestamp} when verify.timestamp_header is set, e.g. \"{timestamp}.{body}\"",
            ));
        }
        if timestamp_header.as_ref() == Some(&header) {
            return Err(BuildError::new(
                "verify.timestamp_header",
                "must name a different header than verify.header",
            ));
        }
        let prefix = options.prefix.clone().unwrap_or_default();
        // Header values are visible ASCII; a prefix with anything else could
        // never match, so the source would refuse every request.
        if !prefix.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(BuildError::new(
                "verify.prefix",
                format!("{prefix:?} can never appear in a header (expected visible ASCII, e.g. \"sha256=\")"),
            ));
        }
        Ok(Self {
            header,
            algorithm,
            encoding,
            prefix,
            timestamp_header,
            template,
            tolerance: tolerance.unwrap_or(DEFAULT_TOLERANCE),
        })
    }
}

fn header_name(key: &str, name: &str) -> Result<HeaderName, BuildError> {
    HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        BuildError::new(
            key,
            format!("{name:?} is not a valid HTTP header name (expected e.g. \"X-Signature\")"),
        )
    })
}

fn parse_template(template: &str) -> Result<Vec<Part>, BuildError> {
    let invalid = |problem: String| {
        BuildError::new(
            "verify.signed_content",
            format!("{problem} (expected text with {{body}} once and optionally {{timestamp}}, e.g. \"{{timestamp}}.{{body}}\")"),
        )
    };
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        let Some(open) = rest.find('{') else {
            parts.push(Part::Literal(rest.to_owned()));
            break;
        };
        if open > 0 {
            parts.push(Part::Literal(rest[..open].to_owned()));
        }
        let after = &rest[open..];
        if let Some(tail) = after.strip_prefix("{body}") {
            parts.push(Part::Body);
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("{timestamp}") {
            parts.push(Part::Timestamp);
            rest = tail;
        } else {
            let shown: String = after.chars().take(16).collect();
            return Err(invalid(format!("unknown placeholder at {shown:?}")));
        }
    }
    match parts.iter().filter(|p| **p == Part::Body).count() {
        1 => Ok(parts),
        0 => Err(invalid("does not contain {body}".to_owned())),
        _ => Err(invalid("contains {body} more than once".to_owned())),
    }
}

/// The prepared keys, one HMAC state per secret in the configured hash.
#[derive(Clone, Debug)]
pub enum Keys {
    /// HMAC-SHA1 states.
    Sha1(Vec<HmacSha1>),
    /// HMAC-SHA256 states.
    Sha256(Vec<HmacSha256>),
    /// HMAC-SHA512 states.
    Sha512(Vec<HmacSha512>),
}

impl Keys {
    /// Prepares one keyed state per secret (used as their raw bytes).
    pub fn new(algorithm: Algorithm, secrets: &[Secret]) -> Self {
        match algorithm {
            Algorithm::Sha1 => Keys::Sha1(secrets.iter().map(|s| keyed_sha1(s.expose())).collect()),
            Algorithm::Sha256 => Keys::Sha256(secrets.iter().map(|s| keyed_sha256(s.expose())).collect()),
            Algorithm::Sha512 => Keys::Sha512(secrets.iter().map(|s| keyed_sha512(s.expose())).collect()),
        }
    }

    /// The index of the first key whose MAC of the content equals `signature`.
    fn first_match(&self, template: &[Part], timestamp: &str, body: &[u8], signature: &[u8]) -> Option<usize> {
        match self {
            Keys::Sha1(keys) => first_match(keys, template, timestamp, body, signature),
            Keys::Sha256(keys) => first_match(keys, template, timestamp, body, signature),
            Keys::Sha512(keys) => first_match(keys, template, timestamp, body, signature),
        }
    }
}

fn first_match<M: Mac + Clone>(
    keys: &[M],
    template: &[Part],
    timestamp: &str,
    body: &[u8],
    signature: &[u8],
) -> Option<usize> {
    keys.iter().position(|key| {
        let mut mac = key.clone();
        feed(&mut mac, template, timestamp, body);
        constant_time_eq(&mac.finalize().into_bytes(), signature)
    })
}

fn feed<M: Mac>(mac: &mut M, template: &[Part], timestamp: &str, body: &[u8]) {
    for part in template {
        match part {
            Part::Literal(text) => mac.update(text.as_bytes()),
            Part::Body => mac.update(body),
            Part::Timestamp => mac.update(timestamp.as_bytes()),
        }
    }
}

/// Verifies a request under a generic HMAC scheme: pure function over the
/// signature and timestamp header values, raw body, prepared keys and the
/// current time.
pub fn verify(
    config: &HmacConfig,
    keys: &Keys,
    signature: Option<&str>,
    timestamp: Option<&str>,
    body: &[u8],
    now: UnixMillis,
) -> Result<Verified, Rejection> {
    let signature_header = || Cow::Owned(config.header.as_str().to_owned());
    let signature = signature.ok_or_else(|| Rejection::MissingHeader(signature_header()))?;
    let malformed = |problem| Rejection::MalformedHeader {
        header: signature_header(),
        problem,
    };
    let encoded = signature
        .strip_prefix(config.prefix.as_str())
        .ok_or_else(|| malformed("does not start with the configured prefix"))?;
    let mut digest = [0u8; 64];
    let digest = &mut digest[..config.algorithm.digest_len()];
    let decoded = match config.encoding {
        Encoding::Hex => decode_hex_into(encoded, digest),
        Encoding::Base64 => decode_base64_into(encoded, digest),
    };
    if !decoded {
        return Err(malformed(match config.encoding {
            Encoding::Hex => "expected a hex digest of the configured algorithm",
            Encoding::Base64 => "expected a base64 digest of the configured algorithm",
        }));
    }
    // The timestamp is signed as the sender wrote it (trimmed): a generic
    // sender's own formatting is what its signature covers.
    let timestamp_text = match &config.timestamp_header {
        Some(name) => {
            let text = timestamp.ok_or_else(|| Rejection::MissingHeader(Cow::Owned(name.as_str().to_owned())))?;
            let secs = parse_unix_secs_named(name, text)?;
            check_timestamp(secs, now, config.tolerance)?;
            text.trim()
        }
        None => "",
    };
    match keys.first_match(&config.template, timestamp_text, body, digest) {
        Some(index) => Ok(Verified::by_secret(config.algorithm.scheme(), index)),
        None => Err(Rejection::NoMatchingSignature),
    }
}

/// [`parse_unix_secs`] for a header whose name is only known at run time.
fn parse_unix_secs_named(name: &HeaderName, text: &str) -> Result<i64, Rejection> {
    parse_unix_secs("timestamp", text).map_err(|_| Rejection::MalformedHeader {
        header: Cow::Owned(name.as_str().to_owned()),
        problem: "expected unix seconds",
    })
}

/// The generic HMAC scheme for one source.
#[derive(Debug)]
pub struct GenericHmac {
    config: HmacConfig,
    keys: Keys,
}

impl GenericHmac {
    /// A verifier for `config` accepting any of `secrets` (used as their raw bytes).
    pub fn new(config: HmacConfig, secrets: &[Secret]) -> Self {
        let keys = Keys::new(config.algorithm, secrets);
        Self { config, keys }
    }
}

impl Provider for GenericHmac {
    fn name(&self) -> &'static str {
        "hmac"
    }

    fn verify(&self, request: &InboundRequest<'_>, now: UnixMillis) -> Result<Verified, Rejection> {
        let timestamp = self
            .config
            .timestamp_header
            .as_ref()
            .and_then(|name| request.header(name.as_str()));
        verify(
            &self.config,
            &self.keys,
            request.header(self.config.header.as_str()),
            timestamp,
            request.body,
            now,
        )
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        let (id, event_type) = json_id_and_type(request.body, "id", "type");
        Identity::event(id, event_type)
    }
}

/// Signs `body` as a sender following `config` would at `timestamp` (unix
/// seconds, used only when the template signs one): the headers to send, the
/// signature first. Used by `gatehouse send`, tests and benchmarks.
pub fn sign(config: &HmacConfig, secret: &[u8], timestamp: i64, body: &[u8]) -> Vec<(HeaderName, String)> {
    let timestamp_text = timestamp.to_string();
    let digest = match config.algorithm {
        Algorithm::Sha1 => mac_bytes(keyed_sha1(secret), config, &timestamp_text, body),
        Algorithm::Sha256 => mac_bytes(keyed_sha256(secret), config, &timestamp_text, body),
        Algorithm::Sha512 => mac_bytes(keyed_sha512(secret), config, &timestamp_text, body),
    };
    let encoded = match config.encoding {
        Encoding::Hex => hex::encode(digest),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(digest),
    };
    let mut headers = vec![(config.header.clone(), format!("{}{encoded}", config.prefix))];
    if let Some(name) = &config.timestamp_header {
        headers.push((name.clone(), timestamp_text));
    }
    headers
}

fn mac_bytes<M: Mac>(mut mac: M, config: &HmacConfig, timestamp: &str, body: &[u8]) -> Vec<u8> {
    feed(&mut mac, &config.template, timestamp, body);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    fn options(pairs: &[(&str, &str)]) -> VerifyOptions {
        let mut options = VerifyOptions::default();
        for (key, value) in pairs {
            let value = Some((*value).to_owned());
            match *key {
                "header" => options.header = value,
                "algorithm" => options.algorithm = value,
                "encoding" => options.encoding = value,
                "prefix" => options.prefix = value,
                "timestamp_header" => options.timestamp_header = value,
                "signed_content" => options.signed_content = value,
                other => panic!("no option {other}"),
            }
        }
        options
    }

    fn provider(pairs: &[(&str, &str)], secrets: &[&str]) -> GenericHmac {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        GenericHmac::new(HmacConfig::from_options(&options(pairs), None).unwrap(), &secrets)
    }

    fn build_error(pairs: &[(&str, &str)]) -> BuildError {
        HmacConfig::from_options(&options(pairs), None).unwrap_err()
    }

    /// Verifies `body` sent with header pairs, at `now`.
    fn check(p: &GenericHmac, pairs: &[(&str, &str)], body: &[u8], now: i64) -> Result<Verified, Rejection> {
        let headers = headers(pairs);
        p.verify(&post(&headers, body), UnixMillis::from_secs(now))
    }

    // Shopify's scheme, checked against an HMAC computed independently
    // (Python's hmac module) since Shopify publishes no vector.
    const SHOPIFY: &[(&str, &str)] = &[("header", "X-Shopify-Hmac-Sha256"), ("encoding", "base64")];
    const SHOPIFY_SECRET: &str = "hush";
    const SHOPIFY_BODY: &[u8] = br#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    const SHOPIFY_SIGNATURE: &str = "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8=";

    #[test]
    fn expresses_shopify() {
        let p = provider(SHOPIFY, &[SHOPIFY_SECRET]);
        let verified = check(&p, &[("x-shopify-hmac-sha256", SHOPIFY_SIGNATURE)], SHOPIFY_BODY, 0).unwrap();
        assert_eq!(verified.scheme(), "hmac-sha256");
        assert_eq!(verified.secret_index(), Some(0));
        let signed = sign(&p.config, SHOPIFY_SECRET.as_bytes(), 0, SHOPIFY_BODY);
        assert_eq!(
            signed,
            vec![(
                HeaderName::from_static("x-shopify-hmac-sha256"),
                SHOPIFY_SIGNATURE.to_owned()
            )]
        );
    }

    #[test]
    fn github_vector_through_the_generic_scheme() {
        let p = provider(
            &[("header", "X-Hub-Signature-256"), ("prefix", "sha256=")],
            &["It's a Secret to Everybody"],
        );
        let vector = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(check(&p, &[("x-hub-signature-256", vector)], b"Hello, World!", 0).is_ok());
        // GitHub's legacy SHA-1 header, for senders that only send that.
        let p = provider(
            &[
                ("header", "X-Hub-Signature"),
                ("prefix", "sha1="),
                ("algorithm", "SHA1"),
            ],
            &["It's a Secret to Everybody"],
        );
        let legacy = "sha1=01dc10d0c83e72ed246219cdd91669667fe2ca59";
        assert!(check(&p, &[("x-hub-signature", legacy)], b"Hello, World!", 0).is_ok());
    }

    #[test]
    fn sha512_hex_round_trips() {
        let p = provider(&[("header", "x-sig"), ("algorithm", "sha512")], &["k"]);
        let signed = sign(&p.config, b"k", 0, b"body");
        assert_eq!(signed[0].1.len(), 128);
        assert_eq!(
            check(&p, &[("x-sig", &signed[0].1)], b"body", 0).unwrap().scheme(),
            "hmac-sha512"
        );
    }

    #[test]
    fn wrong_secret_is_rejected() {
        let p = provider(SHOPIFY, &["not hush"]);
        assert_eq!(
            check(&p, &[("x-shopify-hmac-sha256", SHOPIFY_SIGNATURE)], SHOPIFY_BODY, 0),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn one_changed_byte_is_rejected() {
        let mut body = SHOPIFY_BODY.to_vec();
        body[7] ^= 1;
        assert_eq!(
            check(
                &provider(SHOPIFY, &[SHOPIFY_SECRET]),
                &[("x-shopify-hmac-sha256", SHOPIFY_SIGNATURE)],
                &body,
                0
            ),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn second_secret_during_rotation() {
        let p = provider(SHOPIFY, &["old", SHOPIFY_SECRET]);
        let verified = check(&p, &[("x-shopify-hmac-sha256", SHOPIFY_SIGNATURE)], SHOPIFY_BODY, 0).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn missing_and_malformed_signatures_are_rejected() {
        let p = provider(SHOPIFY, &[SHOPIFY_SECRET]);
        assert_eq!(
            check(&p, &[], SHOPIFY_BODY, 0),
            Err(Rejection::MissingHeader("x-shopify-hmac-sha256".into()))
        );
        for value in [
            "",
            "garbage!",
            &SHOPIFY_SIGNATURE[..40],
            "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8",
            "0f450c5e6863c01462e32eba4e6849ac3961400043ef32367e6de9ebf40b328f",
        ] {
            assert!(
                matches!(
                    check(&p, &[("x-shopify-hmac-sha256", value)], SHOPIFY_BODY, 0),
                    Err(Rejection::MalformedHeader { .. })
                ),
                "{value:?}"
            );
        }
        let prefixed = provider(&[("header", "x-sig"), ("prefix", "sha256=")], &["k"]);
        let good = sign(&prefixed.config, b"k", 0, b"body").remove(0).1;
        for value in [
            &good[7..],
            &format!("sha1={}", &good[7..]),
            "sha256=xyz",
            &format!("{good}0"),
        ] {
            assert!(
                matches!(
                    check(&prefixed, &[("x-sig", value)], b"body", 0),
                    Err(Rejection::MalformedHeader { .. })
                ),
                "{value:?}"
            );
        }
    }

    const T: i64 = 1_700_000_000;
    const STAMPED: &[(&str, &str)] = &[
        ("header", "X-Signature"),
        ("prefix", "v1="),
        ("timestamp_header", "X-Timestamp"),
        ("signed_content", "{timestamp}.{body}"),
    ];

    #[test]
    fn timestamp_template_signs_timestamp_dot_body() {
        let p = provider(STAMPED, &["secret"]);
        // Independently: hex HMAC-SHA256("secret", "1700000000.{\"id\":\"e1\"}").
        let expected = "v1=46fc0b60e09563a94dea2fa3b7b63d83458dd87b30fac860dcbabac0df9bdbde";
        let signed = sign(&p.config, b"secret", T, br#"{"id":"e1"}"#);
        assert_eq!(
            signed,
            vec![
                (HeaderName::from_static("x-signature"), expected.to_owned()),
                (HeaderName::from_static("x-timestamp"), "1700000000".to_owned()),
            ]
        );
        let pairs = [("x-signature", expected), ("x-timestamp", "1700000000")];
        assert!(check(&p, &pairs, br#"{"id":"e1"}"#, T).is_ok());
        // The timestamp is signed: moving it breaks the signature.
        let moved = [("x-signature", expected), ("x-timestamp", "1700000001")];
        assert_eq!(
            check(&p, &moved, br#"{"id":"e1"}"#, T),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_rejected() {
        let p = provider(STAMPED, &["secret"]);
        let signed = sign(&p.config, b"secret", T, b"{}");
        let pairs = [("x-signature", signed[0].1.as_str()), ("x-timestamp", "1700000000")];
        assert!(matches!(
            check(&p, &pairs, b"{}", T + 301),
            Err(Rejection::TimestampTooOld { .. })
        ));
        assert!(matches!(
            check(&p, &pairs, b"{}", T - 301),
            Err(Rejection::TimestampInFuture { .. })
        ));
        assert!(check(&p, &pairs, b"{}", T + 300).is_ok());
        assert!(check(&p, &pairs, b"{}", T - 300).is_ok());
    }

    #[test]
    fn missing_and_malformed_timestamps_are_rejected() {
        let p = provider(STAMPED, &["secret"]);
        let signed = sign(&p.config, b"secret", T, b"{}");
        let signature = signed[0].1.as_str();
        assert_eq!(
            check(&p, &[("x-signature", signature)], b"{}", T),
            Err(Rejection::MissingHeader("x-timestamp".into()))
        );
        for timestamp in ["", "soon", "-1700000000", "1700000000000000000000"] {
            assert!(
                matches!(
                    check(&p, &[("x-signature", signature), ("x-timestamp", timestamp)], b"{}", T),
                    Err(Rejection::MalformedHeader { ref header, .. }) if header == "x-timestamp"
                ),
                "{timestamp:?}"
            );
        }
    }

    #[test]
    fn options_are_validated_with_the_key_named() {
        assert_eq!(build_error(&[]).key, "verify.header");
        assert_eq!(build_error(&[("header", "bad header")]).key, "verify.header");
        let err = build_error(&[("header", "x"), ("algorithm", "md5")]);
        assert_eq!(err.key, "verify.algorithm");
        assert!(err.message.contains("sha256"), "{}", err.message);
        assert_eq!(
            build_error(&[("header", "x"), ("encoding", "base32")]).key,
            "verify.encoding"
        );
        assert_eq!(
            build_error(&[("header", "x"), ("prefix", "sha\u{7f}=")]).key,
            "verify.prefix"
        );
        assert_eq!(
            build_error(&[
                ("header", "X-Sig"),
                ("timestamp_header", "x-sig"),
                ("signed_content", "{timestamp}{body}")
            ])
            .key,
            "verify.timestamp_header"
        );
        assert_eq!(
            build_error(&[
                ("header", "x"),
                ("timestamp_header", "a b"),
                ("signed_content", "{timestamp}{body}")
            ])
            .key,
            "verify.timestamp_header"
        );
        for template in ["{timestamp}.{body}", "{body}", "v0:{timestamp}:{body}"] {
            assert!(
                HmacConfig::from_options(
                    &options(&[("header", "x"), ("timestamp_header", "t"), ("signed_content", template)]),
                    None
                )
                .is_ok()
                    == template.contains("{timestamp}"),
                "{template}"
            );
        }
        for (pairs, needle) in [
            (
                &[("header", "x"), ("signed_content", "{timestamp}.{body}")][..],
                "timestamp_header",
            ),
            (
                &[("header", "x"), ("signed_content", "{timestamp}")][..],
                "does not contain {body}",
            ),
            (
                &[("header", "x"), ("signed_content", "")][..],
                "does not contain {body}",
            ),
            (
                &[("header", "x"), ("signed_content", "{body}{body}")][..],
                "more than once",
            ),
            (
                &[("header", "x"), ("signed_content", "{ts}.{body}")][..],
                "unknown placeholder",
            ),
            (
                &[("header", "x"), ("timestamp_header", "t")][..],
                "must include {timestamp}",
            ),
        ] {
            let err = build_error(pairs);
            assert_eq!(err.key, "verify.signed_content", "{pairs:?}");
            assert!(err.message.contains(needle), "{}", err.message);
        }
    }

    #[test]
    fn identifies_json_id_and_type_or_nothing() {
        let p = provider(SHOPIFY, &[SHOPIFY_SECRET]);
        let headers = headers(&[]);
        assert_eq!(
            p.identify(&post(&headers, br#"{"id":"e1","type":"order.paid"}"#)),
            Identity::event(Some("e1".into()), Some("order.paid".into()))
        );
        assert_eq!(p.identify(&post(&headers, b"a=b")), Identity::event(None, None));
    }
}
