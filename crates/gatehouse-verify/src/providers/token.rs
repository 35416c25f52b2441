//! `token`: a shared token sent verbatim in a header (GitLab's
//! `X-Gitlab-Token`, the default, and many in-house senders). It proves only
//! that the sender knows the token: nothing binds it to the body, so it is
//! the weakest scheme here and only as good as TLS. Event id and type come
//! from the body's `id` and `type` when it is JSON.

use std::borrow::Cow;

use http::HeaderName;
use sha2::{Digest, Sha256};

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{constant_time_eq, json_id_and_type};
use crate::{BuildError, Identity, InboundRequest, Provider, Rejection, Verified};

/// The header read when the source sets no `verify.header`.
pub const DEFAULT_HEADER: &str = "x-gitlab-token";

/// The token scheme for one source.
#[derive(Debug)]
pub struct Token {
    header: HeaderName,
    digests: Vec<[u8; 32]>,
}

impl Token {
    /// A verifier reading `header` (default `X-Gitlab-Token`) and accepting
    /// any of `secrets`. An empty secret is refused: it would accept a
    /// request that sends an empty header.
    pub fn new(header: Option<&str>, secrets: &[Secret]) -> Result<Self, BuildError> {
        let header = match header {
            None => HeaderName::from_static(DEFAULT_HEADER),
            Some(name) => HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                BuildError::new(
                    "verify.header",
                    format!("{name:?} is not a valid HTTP header name (expected e.g. \"X-Gitlab-Token\")"),
                )
            })?,
        };
        if let Some(index) = secrets.iter().position(|s| s.expose().is_empty()) {
            return Err(BuildError::new(
                "secrets",
                format!("secret #{} is empty (expected the token the sender sends)", index + 1),
            ));
        }
        Ok(Self {
            header,
            digests: secrets.iter().map(|s| digest(s.expose())).collect(),
        })
    }
}

/// Tokens are compared through their SHA-256 digests: equal-length values
/// compare in constant time, so neither the token's contents nor its length
/// leak through timing. Shared with the other providers that compare a
/// presented value with configured ones (GitLab, Microsoft Graph).
pub(crate) fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The index of the configured token (given by its [`digest`]) that
/// `presented` equals, compared in constant time.
pub(crate) fn matching_token(presented: &[u8], digests: &[[u8; 32]]) -> Option<usize> {
    let presented = digest(presented);
    digests
        .iter()
        .position(|expected| constant_time_eq(expected, &presented))
}

/// Verifies a token request: pure function over the header's raw value (and
/// name, for the rejection) and the digests of the active secrets.
pub fn verify(header: &HeaderName, value: Option<&[u8]>, digests: &[[u8; 32]]) -> Result<Verified, Rejection> {
    let value = value.ok_or_else(|| Rejection::MissingHeader(Cow::Owned(header.as_str().to_owned())))?;
    matching_token(value, digests)
        .map(|index| Verified::by_secret("token", index))
        .ok_or(Rejection::NoMatchingSignature)
}

impl Provider for Token {
    fn name(&self) -> &'static str {
        "token"
    }

    fn verify(&self, request: &InboundRequest<'_>, _now: UnixMillis) -> Result<Verified, Rejection> {
        // Raw bytes rather than text: a token need not be visible ASCII.
        let value = request.headers.get(&self.header).map(|v| v.as_bytes());
        verify(&self.header, value, &self.digests)
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        let (id, event_type) = json_id_and_type(request.body, "id", "type");
        Identity::event(id, event_type)
    }
}

/// The header value a sender sends: the token itself. Exists so `gatehouse
/// send`, tests and benchmarks imitate every provider the same way.
pub fn sign(token: &str) -> String {
    token.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const TOKEN: &str = "glpat-s3cr3t-token";
    const BODY: &[u8] = br#"{"object_kind":"push","id":"e1","type":"push"}"#;

    fn provider(header: Option<&str>, secrets: &[&str]) -> Token {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        Token::new(header, &secrets).unwrap()
    }

    fn check(p: &Token, pairs: &[(&str, &str)], body: &[u8]) -> Result<Verified, Rejection> {
        let headers = headers(pairs);
        p.verify(&post(&headers, body), UnixMillis::from_secs(0))
    }

    #[test]
    fn matching_token_verifies() {
        let p = provider(None, &[TOKEN]);
        let verified = check(&p, &[("X-Gitlab-Token", &sign(TOKEN))], BODY).unwrap();
        assert_eq!(verified.scheme(), "token");
        assert_eq!(verified.secret_index(), Some(0));
    }

    #[test]
    fn wrong_prefix_suffix_or_case_is_rejected() {
        let p = provider(None, &[TOKEN]);
        for value in [
            "glpat-s3cr3t-toke",
            "glpat-s3cr3t-token2",
            "GLPAT-S3CR3T-TOKEN",
            "other",
            "",
        ] {
            assert_eq!(
                check(&p, &[("x-gitlab-token", value)], BODY),
                Err(Rejection::NoMatchingSignature),
                "{value:?}"
            );
        }
    }

    #[test]
    fn body_is_not_covered() {
        // A token scheme cannot detect a changed body; this documents it.
        let mut body = BODY.to_vec();
        body[3] ^= 1;
        assert!(check(&provider(None, &[TOKEN]), &[("x-gitlab-token", TOKEN)], &body).is_ok());
    }

    #[test]
    fn missing_header_is_rejected_by_name() {
        let p = provider(Some("X-Webhook-Token"), &[TOKEN]);
        assert_eq!(
            check(&p, &[("x-gitlab-token", TOKEN)], BODY),
            Err(Rejection::MissingHeader("x-webhook-token".into()))
        );
        assert!(check(&p, &[("X-Webhook-Token", TOKEN)], BODY).is_ok());
    }

    #[test]
    fn non_ascii_header_bytes_are_compared_not_refused() {
        let mut headers = http::HeaderMap::new();
        headers.insert(DEFAULT_HEADER, http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let p = Token::new(None, &[Secret::new(&b"caf\xe9"[..])]).unwrap();
        assert!(p.verify(&post(&headers, BODY), UnixMillis::from_secs(0)).is_ok());
    }

    #[test]
    fn second_secret_during_rotation() {
        let p = provider(None, &["old-token", TOKEN]);
        assert_eq!(
            check(&p, &[("x-gitlab-token", TOKEN)], BODY).unwrap().secret_index(),
            Some(1)
        );
    }

    #[test]
    fn bad_header_name_and_empty_secret_are_build_errors() {
        assert_eq!(
            Token::new(Some("bad header"), &[Secret::new(TOKEN)]).unwrap_err().key,
            "verify.header"
        );
        let err = Token::new(None, &[Secret::new(TOKEN), Secret::new("")]).unwrap_err();
        assert_eq!(err.key, "secrets");
        assert!(err.message.contains("#2"), "{}", err.message);
    }

    #[test]
    fn identifies_json_id_and_type() {
        let p = provider(None, &[TOKEN]);
        let headers = headers(&[]);
        assert_eq!(
            p.identify(&post(&headers, BODY)),
            Identity::event(Some("e1".into()), Some("push".into()))
        );
        assert_eq!(p.identify(&post(&headers, b"")), Identity::event(None, None));
    }
}
