//! Intercom: `X-Hub-Signature: sha1=<hex HMAC-SHA1(app client secret, raw
//! body)>` (Intercom's docs are thin here: unconfirmed beyond this). There
//! is no timestamp; replay defence is deduplication on the notification's
//! `id`, which stays the same across Intercom's retries (its
//! `delivery_attempts` changes, so the body hash would not). The event type
//! is the `topic`, e.g. `conversation.user.created`; the `ping` topic sent
//! on set-up is a [`Kind::Ping`].

use std::borrow::Cow;

use hmac::Mac;

use gatehouse_core::{Secret, UnixMillis};

use crate::util::{decode_hex_into, first_matching_key, keyed_sha1, HmacSha1};
use crate::{Identity, InboundRequest, Kind, Provider, Rejection, Verified};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature";
/// What precedes the hex digest in the signature header.
const SIGNATURE_PREFIX: &str = "sha1=";
/// The topic Intercom sends when a webhook is set up.
const PING_TOPIC: &str = "ping";

/// Intercom's scheme for one source.
#[derive(Debug)]
pub struct Intercom {
    keys: Vec<HmacSha1>,
}

impl Intercom {
    /// A verifier accepting any of `secrets` (app client secrets, used as
    /// their raw bytes).
    pub fn new(secrets: &[Secret]) -> Self {
        Self {
            keys: secrets.iter().map(|s| keyed_sha1(s.expose())).collect(),
        }
    }
}

/// Verifies an Intercom request: pure function over the signature header
/// value, the raw body and the prepared keys.
pub fn verify(signature: Option<&str>, body: &[u8], keys: &[HmacSha1]) -> Result<Verified, Rejection> {
    let signature = signature.ok_or(Rejection::MissingHeader(SIGNATURE_HEADER.into()))?;
    let mut digest = [0u8; 20];
    let decoded = signature
        .strip_prefix(SIGNATURE_PREFIX)
        .is_some_and(|hex_digest| decode_hex_into(hex_digest, &mut digest));
    if !decoded {
        return Err(Rejection::MalformedHeader {
            header: SIGNATURE_HEADER.into(),
            problem: "expected sha1=<40 hex digits>",
        });
    }
    first_matching_key(keys, &digest, |mac| mac.update(body))
        .map(|index| Verified::by_secret("intercom-sha1", index))
        .ok_or(Rejection::NoMatchingSignature)
}

/// Identifies a verified Intercom notification from its body.
pub fn identify(body: &[u8]) -> Identity {
    #[derive(serde::Deserialize)]
    struct Notification<'a> {
        #[serde(borrow, default)]
        id: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        topic: Option<Cow<'a, str>>,
    }
    let Ok(notification) = serde_json::from_slice::<Notification<'_>>(body) else {
        return Identity::event(None, None);
    };
    let owned = |value: Option<Cow<'_, str>>| value.filter(|v| !v.is_empty()).map(Cow::into_owned);
    let id = owned(notification.id);
    let topic = owned(notification.topic);
    let kind = if topic.as_deref() == Some(PING_TOPIC) {
        Kind::Ping
    } else {
        Kind::Event
    };
    Identity {
        provider_event_id: id,
        event_type: topic,
        kind,
    }
}

impl Provider for Intercom {
    fn name(&self) -> &'static str {
        "intercom"
    }

    fn verify(&self, request: &InboundRequest<'_>, _now: UnixMillis) -> Result<Verified, Rejection> {
        verify(request.header(SIGNATURE_HEADER), request.body, &self.keys)
    }

    fn identify(&self, request: &InboundRequest<'_>) -> Identity {
        identify(request.body)
    }
}

/// Signs `body` as Intercom would: the `X-Hub-Signature` value. Used by
/// `gatehouse send`, tests and benchmarks.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = keyed_sha1(secret);
    mac.update(body);
    format!("{SIGNATURE_PREFIX}{}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{headers, post};

    const SECRET: &str = "intercom-client-secret";
    const BODY: &[u8] = br#"{"type":"notification_event","app_id":"abc123","data":{"type":"notification_event_data","item":{"type":"conversation","id":"1"}},"id":"notif_ccd8a4d2-3f2c-4d5c-9f3a-6d1e1b2c3d4e","topic":"conversation.user.created","delivery_attempts":1,"first_sent_at":1700000000}"#;
    /// Intercom publishes no vector: HMAC-SHA1(SECRET, BODY) computed with
    /// Python's `hmac` module.
    const VECTOR: &str = "sha1=27cf6e99ae72bea9be31490a9e9213fab15360cf";

    fn keys(secrets: &[&str]) -> Vec<HmacSha1> {
        secrets.iter().map(|s| keyed_sha1(s.as_bytes())).collect()
    }

    #[test]
    fn python_made_vector_verifies() {
        let verified = verify(Some(VECTOR), BODY, &keys(&[SECRET])).unwrap();
        assert_eq!(verified.scheme(), "intercom-sha1");
        assert_eq!(sign(SECRET.as_bytes(), BODY), VECTOR);
    }

    #[test]
    fn wrong_secret_and_changed_byte_are_rejected() {
        assert_eq!(
            verify(Some(VECTOR), BODY, &keys(&["other"])),
            Err(Rejection::NoMatchingSignature)
        );
        let mut body = BODY.to_vec();
        body[30] ^= 1;
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
        for value in ["", &VECTOR[5..], "sha256=27cf", "sha1=zz", &VECTOR[..VECTOR.len() - 1]] {
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
    fn identifies_topic_and_id_and_pings() {
        let headers = headers(&[]);
        let p = Intercom::new(&[Secret::new(SECRET)]);
        assert_eq!(
            p.identify(&post(&headers, BODY)),
            Identity::event(
                Some("notif_ccd8a4d2-3f2c-4d5c-9f3a-6d1e1b2c3d4e".into()),
                Some("conversation.user.created".into())
            )
        );
        let ping = identify(
            br#"{"type":"notification_event","topic":"ping","id":"notif_1","data":{"item":{"message":"hi"}}}"#,
        );
        assert_eq!(ping.kind, Kind::Ping);
        assert_eq!(ping.provider_event_id.as_deref(), Some("notif_1"));
        assert_eq!(identify(b"nope"), Identity::event(None, None));
    }
}
