//! The interface every provider implements. A provider is built once per
//! source (secrets decoded, keys prepared) and then answers three pure
//! questions about each request: is it an unsigned handshake, is it genuine,
//! and what is it.

use std::fmt;

use bytes::Bytes;

use gatehouse_core::UnixMillis;

use crate::{InboundRequest, Rejection};

/// What a successful verification proves. Only a [`Provider`] makes one, so
/// code that holds a `Verified` knows the request passed its source's check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    scheme: &'static str,
    secret_index: Option<usize>,
}

impl Verified {
    /// Proof that the request matched `scheme` with the active secret at
    /// `secret_index` (0-based, in config order). Providers call this only
    /// after their check passed.
    pub fn by_secret(scheme: &'static str, secret_index: usize) -> Self {
        Self {
            scheme,
            secret_index: Some(secret_index),
        }
    }

    /// Proof that the request matched `scheme` with a key that is not one of
    /// the source's secrets: PayPal's signer certificate, fetched from an
    /// allow-listed host.
    pub fn by_certificate(scheme: &'static str) -> Self {
        Self {
            scheme,
            secret_index: None,
        }
    }

    /// A source configured with `provider = "none"` and `insecure = true`.
    pub(crate) fn unverified_by_configuration() -> Self {
        Self {
            scheme: "none (insecure)",
            secret_index: None,
        }
    }

    /// The scheme that matched, e.g. `stripe-v1`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// Which secret matched (0-based), when a secret was used.
    pub fn secret_index(&self) -> Option<usize> {
        self.secret_index
    }
}

impl fmt::Display for Verified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.secret_index {
            Some(index) => write!(f, "{}, secret #{}", self.scheme, index + 1),
            None => f.write_str(self.scheme),
        }
    }
}

/// What kind of message a verified request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An event to store and route.
    Event,
    /// A provider's ping (GitHub `ping`): stored, acknowledged, never routed.
    Ping,
    /// A signed handshake that needs a specific answer (Slack
    /// `url_verification`, Zoom `endpoint.url_validation`): recorded, answered
    /// with the reply, never routed.
    Handshake(HandshakeReply),
}

/// The exact answer a provider expects to a handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeReply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type` of the answer.
    pub content_type: &'static str,
    /// Extra headers (e.g. `X-Content-Type-Options: nosniff`).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Bytes,
}

/// What a verified request says about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The provider's id for the event or delivery: the dedup key when present.
    pub provider_event_id: Option<String>,
    /// The event type, e.g. `payment_intent.succeeded`.
    pub event_type: Option<String>,
    /// Event, ping or handshake.
    pub kind: Kind,
}

impl Identity {
    /// An ordinary event.
    pub fn event(provider_event_id: Option<String>, event_type: Option<String>) -> Self {
        Self {
            provider_event_id,
            event_type,
            kind: Kind::Event,
        }
    }
}

/// One provider's scheme, built for one source. Implementations hold their
/// decoded secrets and options, and are pure: no I/O, no clock, no state.
pub trait Provider: Send + Sync + fmt::Debug {
    /// The provider's config name, e.g. `stripe`.
    fn name(&self) -> &'static str;

    /// Answers a handshake that arrives unsigned by design (Dropbox's
    /// `GET ?challenge=`, Microsoft Graph's `validationToken`) before any
    /// verification. Most providers have none.
    fn unsigned_handshake(&self, _request: &InboundRequest<'_>) -> Option<HandshakeReply> {
        None
    }

    /// Checks the request's signature against every active secret.
    fn verify(&self, request: &InboundRequest<'_>, now: UnixMillis) -> Result<Verified, Rejection>;

    /// Whether two requests with the same body are the same event when the
    /// provider gives no id. True for most; false where identical bodies
    /// are routine for distinct notifications (Dropbox's "something changed
    /// for these accounts"), so those are never collapsed.
    fn same_body_is_same_event(&self) -> bool {
        true
    }

    /// Extracts the event id, type and kind from a request that passed
    /// [`Provider::verify`]. Never fails: what cannot be found is `None`.
    fn identify(&self, request: &InboundRequest<'_>) -> Identity;
}
