//! Microsoft Graph change notifications. Graph signs nothing: each
//! notification in the body's `value` array carries the `clientState` given
//! when the subscription was created, and a request is accepted only if
//! every one of them equals one of the source's secrets (compared in
//! constant time through SHA-256 digests). That proves only knowledge of
//! the client state, so use a long random one and TLS. The `validationTokens`
//! of rich notifications (JWTs) are not checked here.
//!
//! Subscription validation arrives unsigned by design: a POST to
//! `<url>?validationToken=<urlencoded>` is answered, before any
//! verification, `200 text/plain` with the decoded token (and
//! `X-Content-Type-Options: nosniff`, as the echo is sender-chosen text).
//!
//! The event type is the first notification's `changeType` (`created`,
//! `updated`, `deleted`) or, for lifecycle notifications, its
//! `lifecycleEvent` (`reauthorizationRequired`). No provider id is returned:
//! notifications are batched and their `id` is optional, and
//! subscription + resource + change type would merge two genuine updates
//! of the same resource, so deduplication falls back to the SHA-256 of the
//! body, which catches Graph's redelivery of an identical batch.

use std::borrow::Cow;

use bytes::Bytes;
use http::Method;

use gatehouse_core::{Secret, UnixMillis};

use crate::providers::token::{digest, matching_token};
use crate::util::query_param;
use crate::{HandshakeReply, Identity, InboundRequest, Provider, Rejection, Verified};

/// The query parameter of a subscription validation request.
pub const VALIDATION_PARAM: &str = "validationToken";
/// The longest validation token echoed back; Graph's are far shorter.
const MAX_VALIDATION_TOKEN: usize = 4096;

/// Microsoft Graph's scheme for one source.
#[derive(Debug)]
pub struct MicrosoftGraph {
    digests: Vec<[u8; 32]>,
}

impl MicrosoftGraph {
    /// A verifier accepting notifications whose `clientState` is any of
    /// `secrets`.
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            digests: secrets.iter().map(|s| digest(s.expose())).collect(),
        }
    }
}

/// The answer to a subscription validation request, if `request` is one: a
/// POST whose URL carries a non-empty `validationToken`.
pub fn validation_reply(method: &Method, url: &str) -> Option<HandshakeReply> {
    if method != Method::POST {
        return None;
    }
    let token = query_param(url, VALIDATION_PARAM)?;
    if token.is_empty() || token.len() > MAX_VALIDATION_TOKEN {
        return None;
    }
    Some(HandshakeReply {
        status: 200,
        content_type: "text/plain",
        headers: vec![("x-content-type-options", "nosniff".to_owned())],
        body: Bytes::from(token.into_owned()),
    })
}

/// The fields of a notification batch that verification and identification read.
#[derive(serde::Deserialize)]
struct Batch<'a> {
    #[serde(borrow, default)]
    value: Option<Vec<Notification<'a>>>,
}

#[derive(serde::Deserialize)]
struct Notification<'a> {
    #[serde(borrow, default, rename = "clientState")]
    client_state: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "changeType")]
    change_type: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "lifecycleEvent")]
    lifecycle_event: Option<Cow<'a, str>>,
}

/// Verifies a notification batch: pure function over the raw body and the
/// digests of the configured client states. Every notification must match.
pub fn verify(body: &[u8], digests: &[[u8; 32]]) -> Result<Verified, Rejection> {
    let batch: Batch<'_> = serde_json::from_slice(body).map_err(|_| Rejection::MalformedBody("not a JSON object"))?;
    let notifications = batch
        .value
        .filter(|value| !value.is_empty())
        .ok_or(Rejection::MalformedBody("no notifications in \"value\""))?;
    let mut first_index = None;
    for notification in &notifications {
        let client_state = notification
            .client_state
            .as_deref()
            .ok_or(Rejection::NoMatchingSignature)?;
        let index = matching_token(client_state.as_bytes(), digests).ok_or(Rejection::NoMatchingSignature)?;
        first_index.get_or_insert(index);
    }
    // Invariant: `notifications` is not empty, so the loop set it.
    let index = first_index.unwrap_or(0);
    Ok(Verified::by_secret("graph-client-state", index))
}

/// Identifies a verified notification batch by its first notification.
pub fn identify(body: &[u8]) -> Identity {
    let first = serde_json::from_slice::<Batch<'_>>(body)
        .ok()
        .and_then(|batch| batch.value)
        .and_then(|value| value.into_iter().next());
    let event_type = first.and_then(|n| {
        n.change_type
            .filter(|c| !c.is_empty())
            .or(n.lifecycle_event.filter(|l| !l.is_empty()))
            .map(Cow::into_owned)
    });
    Identity::event(None, event_type)
}

impl Provider for MicrosoftGraph {
    fn name(&self) -> &'static str {
        "microsoft-graph"
    }

    fn unsigned_handshake(&self, request: &InboundRequest<'_>) -> Option<HandshakeReply> {
        validation_reply(request.method, request.url)
    }

    fn verify(&self, request: &InboundRequest<'_>, _now: UnixMillis) -> Result<Verified, Rejection> {
        verify(request.body, &self.digests)
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        identify(request.body)
    }
}

/// A one-notification batch as Graph would send it for `client_state`
/// (Graph signs nothing: the client state in the body is the credential).
/// Used by `gatehouse send`, tests and benchmarks.
pub fn notification_body(client_state: &str, change_type: &str, resource: &str) -> String {
    serde_json::json!({
        "value": [{
            "subscriptionId": "00000000-0000-0000-0000-000000000000",
            "clientState": client_state,
            "changeType": change_type,
            "resource": resource,
            "tenantId": "00000000-0000-0000-0000-000000000000",
        }]
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const STATE: &str = "secretClientValue-4b1f0a6c";
    const BODY: &[u8] = br##"{"value":[{"id":"lsgTZMr9KwAAA","subscriptionId":"7f105c7d-2dc5-4530-97cd-4e7ae6534c07","subscriptionExpirationDateTime":"2019-03-20T11:00:00.0000000Z","clientState":"secretClientValue-4b1f0a6c","changeType":"created","resource":"Users/{user-id}/messages/{message-id}","tenantId":"84bd8158-6d4d-4958-8b9f-9d6445542f95","resourceData":{"@odata.type":"#Microsoft.Graph.Message","id":"{message-id}"}}]}"##;

    fn provider(secrets: &[&str]) -> MicrosoftGraph {
        let secrets: Vec<Secret> = secrets.iter().map(|s| Secret::new(*s)).collect();
        MicrosoftGraph::new(&secrets)
    }

    fn check(p: &MicrosoftGraph, body: &[u8]) -> Result<Verified, Rejection> {
        verify(body, &p.digests)
    }

    #[test]
    fn matching_client_state_verifies() {
        let verified = check(&provider(&[STATE]), BODY).unwrap();
        assert_eq!(verified.scheme(), "graph-client-state");
        assert_eq!(verified.secret_index(), Some(0));
        assert!(check(
            &provider(&[STATE]),
            notification_body(STATE, "updated", "me/events").as_bytes()
        )
        .is_ok());
    }

    #[test]
    fn wrong_or_missing_client_state_is_rejected() {
        assert_eq!(check(&provider(&["other"]), BODY), Err(Rejection::NoMatchingSignature));
        let without = br#"{"value":[{"changeType":"created","resource":"r"}]}"#;
        assert_eq!(check(&provider(&[STATE]), without), Err(Rejection::NoMatchingSignature));
        let near = notification_body("secretClientValue-4b1f0a6", "created", "r");
        assert_eq!(
            check(&provider(&[STATE]), near.as_bytes()),
            Err(Rejection::NoMatchingSignature)
        );
    }

    #[test]
    fn every_notification_in_a_batch_must_match() {
        let mixed = format!(
            r#"{{"value":[{{"clientState":"{STATE}","changeType":"created"}},{{"clientState":"forged","changeType":"deleted"}}]}}"#
        );
        assert_eq!(
            check(&provider(&[STATE]), mixed.as_bytes()),
            Err(Rejection::NoMatchingSignature)
        );
        // During a rotation a batch may mix the old and the new state.
        let rotating = format!(
            r#"{{"value":[{{"clientState":"{STATE}","changeType":"created"}},{{"clientState":"old-state","changeType":"deleted"}}]}}"#
        );
        let verified = check(&provider(&["old-state", STATE]), rotating.as_bytes()).unwrap();
        assert_eq!(verified.secret_index(), Some(1));
    }

    #[test]
    fn body_that_is_not_a_batch_is_rejected() {
        for body in [&b"not json"[..], b"[]", br#"{"value":[]}"#, br#"{"value":7}"#, b"{}"] {
            assert!(
                matches!(check(&provider(&[STATE]), body), Err(Rejection::MalformedBody(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn validation_request_is_answered_unsigned_with_the_decoded_token() {
        let headers = headers(&[]);
        let request = InboundRequest {
            method: &Method::POST,
            url: "https://gatehouse.test/in/graph?validationToken=Validation%3A+Testing+client+application+reachability+for+subscription+Request-Id%3A+2c8d",
            headers: &headers,
            body: b"",
        };
        let reply = provider(&[STATE]).unsigned_handshake(&request).unwrap();
        assert_eq!(reply.status, 200);
        assert_eq!(reply.content_type, "text/plain");
        assert_eq!(
            reply.body,
            Bytes::from_static(
                b"Validation: Testing client application reachability for subscription Request-Id: 2c8d"
            )
        );
        assert_eq!(reply.headers, vec![("x-content-type-options", "nosniff".to_owned())]);
    }

    #[test]
    fn other_requests_are_not_validation_requests() {
        let headers = headers(&[]);
        let plain = post(&headers, BODY);
        assert_eq!(provider(&[STATE]).unsigned_handshake(&plain), None);
        let get = InboundRequest {
            method: &Method::GET,
            url: "https://gatehouse.test/in/graph?validationToken=abc",
            ..plain
        };
        assert_eq!(provider(&[STATE]).unsigned_handshake(&get), None);
        let empty = InboundRequest {
            url: "https://gatehouse.test/in/graph?validationToken=",
            ..plain
        };
        assert_eq!(provider(&[STATE]).unsigned_handshake(&empty), None);
        let huge = format!("https://gatehouse.test/in/graph?validationToken={}", "a".repeat(5000));
        let huge = InboundRequest { url: &huge, ..plain };
        assert_eq!(provider(&[STATE]).unsigned_handshake(&huge), None);
    }

    #[test]
    fn identifies_change_type_or_lifecycle_event_without_an_id() {
        let headers = headers(&[]);
        assert_eq!(
            provider(&[STATE]).identify(&post(&headers, BODY)),
            Identity::event(None, Some("created".into()))
        );
        let lifecycle =
            br#"{"value":[{"subscriptionId":"s","lifecycleEvent":"reauthorizationRequired","clientState":"x"}]}"#;
        assert_eq!(
            identify(lifecycle),
            Identity::event(None, Some("reauthorizationRequired".into()))
        );
        assert_eq!(identify(b"{}"), Identity::event(None, None));
    }
}
