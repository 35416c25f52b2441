//! GitLab: `X-Gitlab-Token: <secret>`, a plain shared token compared in
//! constant time (through SHA-256 digests, as the `token` provider does). It
//! proves only that the sender knows the token: nothing covers the body.
//! The event type is `X-Gitlab-Event` (`Push Hook`, `Merge Request Hook`);
//! the dedup key is `Idempotency-Key` (GitLab 17.4+, stable across retries),
//! else `X-Gitlab-Webhook-UUID` (one per delivery), else
//! `X-Gitlab-Event-UUID` (one per triggering event). GitLab's newer signing
//! token (Standard Webhooks headers, behind a feature flag) can be verified
//! with the `standard-webhooks` provider.

use gatehouse_core::{Secret, UnixMillis};

use crate::providers::token::{digest, matching_token};
use crate::{Identity, InboundRequest, Provider, Rejection, Verified};

/// The token header.
pub const TOKEN_HEADER: &str = "x-gitlab-token";
/// The event name header.
pub const EVENT_HEADER: &str = "x-gitlab-event";
/// The dedup key headers, most reliable first.
pub const DEDUP_HEADERS: [&str; 3] = ["idempotency-key", "x-gitlab-webhook-uuid", "x-gitlab-event-uuid"];

/// GitLab's scheme for one source.
#[derive(Debug)]
pub struct GitLab {
    digests: Vec<[u8; 32]>,
}

impl GitLab {
    /// A verifier accepting any of `secrets` (the hook's secret tokens).
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            digests: secrets.iter().map(|s| digest(s.expose())).collect(),
        }
    }
}

/// Verifies a GitLab request: pure function over the token header's raw
/// value and the digests of the active tokens.
pub fn verify(token: Option<&[u8]>, digests: &[[u8; 32]]) -> Result<Verified, Rejection> {
    let token = token.ok_or(Rejection::MissingHeader(TOKEN_HEADER.into()))?;
    matching_token(token, digests)
        .map(|index| Verified::by_secret("gitlab-token", index))
        .ok_or(Rejection::NoMatchingSignature)
}

impl Provider for GitLab {
    fn name(&self) -> &'static str {
        "gitlab"
    }

    fn verify(&self, request: &InboundRequest<'_>, _now: UnixMillis) -> Result<Verified, Rejection> {
        verify(request.headers.get(TOKEN_HEADER).map(|v| v.as_bytes()), &self.digests)
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        let present = |name: &str| request.header(name).filter(|v| !v.is_empty()).map(str::to_owned);
        Identity::event(
            DEDUP_HEADERS.iter().find_map(|name| present(name)),
            present(EVENT_HEADER),
        )
    }
}

/// The header value GitLab sends: the token itself. Used by `gatehouse
/// send`, tests and benchmarks.
pub fn sign(token: &str) -> String {
    token.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const TOKEN: &str = "gitlab-hook-s3cr3t";
    const BODY: &[u8] = br#"{"object_kind":"push","ref":"refs/heads/main"}"#;

    fn provider(secrets: &[&str]) -> GitLab {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        GitLab::new(&secrets)
    }

    fn check(p: &GitLab, pairs: &[(&str, &str)], body: &[u8]) -> Result<Verified, Rejection> {
        let headers = headers(pairs);
        p.verify(&post(&headers, body), UnixMillis::from_secs(0))
    }

    #[test]
    fn matching_token_verifies() {
        let verified = check(&provider(&[TOKEN]), &[("X-Gitlab-Token", &sign(TOKEN))], BODY).unwrap();
        assert_eq!(verified.scheme(), "gitlab-token");
        assert_eq!(verified.secret_index(), Some(0));
    }

    #[test]
    fn wrong_token_is_rejected() {
        for value in ["gitlab-hook-s3cr3", "gitlab-hook-s3cr3t ", "GITLAB-HOOK-S3CR3T", ""] {
            assert_eq!(
                check(&provider(&[TOKEN]), &[("X-Gitlab-Token", value)], BODY),
                Err(Rejection::NoMatchingSignature),
                "{value:?}"
            );
        }
    }

    #[test]
    fn body_is_not_covered() {
        // A token scheme cannot detect a changed body; this documents it.
        let mut body = BODY.to_vec();
        body[4] ^= 1;
        assert!(check(&provider(&[TOKEN]), &[("X-Gitlab-Token", TOKEN)], &body).is_ok());
    }

    #[test]
    fn missing_header_is_rejected() {
        assert_eq!(
            check(&provider(&[TOKEN]), &[("X-Gitlab-Secret", TOKEN)], BODY),
            Err(Rejection::MissingHeader(TOKEN_HEADER.into()))
        );
    }

    #[test]
    fn second_token_during_rotation() {
        let verified = check(&provider(&["old", TOKEN]), &[("X-Gitlab-Token", TOKEN)], BODY).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn identifies_event_and_the_best_dedup_header() {
        let p = provider(&[TOKEN]);
        let all = headers(&[
            ("X-Gitlab-Event", "Push Hook"),
            ("Idempotency-Key", "908a6d9e-45fd-46c8-97e6-c4f350f219dd"),
            ("X-Gitlab-Webhook-UUID", "w-1"),
            ("X-Gitlab-Event-UUID", "e-1"),
        ]);
        assert_eq!(
            p.identify(&post(&all, BODY)),
            Identity::event(
                Some("908a6d9e-45fd-46c8-97e6-c4f350f219dd".into()),
                Some("Push Hook".into())
            )
        );
        let older = headers(&[
            ("X-Gitlab-Event", "Merge Request Hook"),
            ("X-Gitlab-Webhook-UUID", "w-1"),
        ]);
        assert_eq!(
            p.identify(&post(&older, BODY)),
            Identity::event(Some("w-1".into()), Some("Merge Request Hook".into()))
        );
        let oldest = headers(&[("X-Gitlab-Event-UUID", "e-1")]);
        assert_eq!(
            p.identify(&post(&oldest, BODY)),
            Identity::event(Some("e-1".into()), None)
        );
    }
}
