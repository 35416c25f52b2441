//! Imitates the senders: builds a request signed exactly as a provider would
//! sign it, with the identity headers a real delivery carries (GitHub's
//! event and delivery id, Standard Webhooks' message id, Shopify's topic and
//! webhook id, Linear's delivery id, …). One entry point, [`sign_request`],
//! serves `gatehouse send`, the fixture tests and the benchmarks; it
//! dispatches to each provider's own `sign` function, so a signing bug and
//! a verifying bug cannot cancel out in a hand-written copy.
//!
//! Symmetric schemes sign with the secret the source is configured with.
//! Discord, SendGrid and PayPal sign with a private key whose public half
//! the source verifies with: give them a [`SigningKey`] read by
//! [`SigningKey::from_private_key`], never the public key.
//!
//! Most schemes sign the body as given. Three carry their proof or their
//! freshness inside the JSON body, and the body is changed the way the
//! sender would write it: Mailgun's `signature` object is added (or
//! replaced), Microsoft Graph's `clientState` is set on every notification,
//! and Linear's `webhookTimestamp` is added when the body has none. An
//! added field is spliced in front of the others, leaving the rest of the
//! bytes as they were; a replaced one re-serialises the JSON.
//!
//! Ids the caller does not give are derived from the provider, the time and
//! the body, so the same inputs sign the same request (tests rely on it);
//! `gatehouse send` passes fresh random ids.

use std::fmt;

use base64::Engine as _;
use hmac::Mac;
use http::Method;
use sha2::{Digest, Sha256};

use gatehouse_core::{Secret, UnixMillis};

use crate::providers;
use crate::util::keyed_sha1;
use crate::VerifyOptions;

/// What a request is signed with.
pub enum SigningKey {
    /// A shared secret, exactly as the source is configured with it (HMAC
    /// keys, GitLab tokens, Microsoft Graph client states).
    Shared(Secret),
    /// A Discord application's Ed25519 private key.
    Ed25519(Box<ed25519_dalek::SigningKey>),
    /// A SendGrid ECDSA P-256 private key.
    P256(Box<p256::ecdsa::SigningKey>),
    /// A PayPal RSA private key, whose certificate the source fetches.
    Rsa(Box<rsa::RsaPrivateKey>),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key material.
        f.write_str(match self {
            SigningKey::Shared(_) => "SigningKey::Shared(***)",
            SigningKey::Ed25519(_) => "SigningKey::Ed25519(***)",
            SigningKey::P256(_) => "SigningKey::P256(***)",
            SigningKey::Rsa(_) => "SigningKey::Rsa(***)",
        })
    }
}

impl SigningKey {
    /// A shared secret.
    pub fn shared(secret: impl Into<Vec<u8>>) -> Self {
        SigningKey::Shared(Secret::new(secret))
    }

    /// Reads a private key: PEM (PKCS#8 `PRIVATE KEY` holding an Ed25519,
    /// P-256 or RSA key; SEC1 `EC PRIVATE KEY`; PKCS#1 `RSA PRIVATE KEY`),
    /// or 64 hex digits of an Ed25519 seed (what Discord examples print).
    pub fn from_private_key(text: &str) -> Result<Self, SignError> {
        use p256::pkcs8::DecodePrivateKey as _;
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        let text = text.trim();
        let mut seed = [0u8; 32];
        if hex::decode_to_slice(text, &mut seed).is_ok() {
            return Ok(SigningKey::Ed25519(Box::new(ed25519_dalek::SigningKey::from_bytes(
                &seed,
            ))));
        }
        if !text.starts_with("-----BEGIN ") {
            return Err(SignError::InvalidPrivateKey(
                "expected a PEM private key or 64 hex digits of an Ed25519 seed",
            ));
        }
        if let Ok(key) = ed25519_dalek::SigningKey::from_pkcs8_pem(text) {
            return Ok(SigningKey::Ed25519(Box::new(key)));
        }
        if let Ok(key) = p256::ecdsa::SigningKey::from_pkcs8_pem(text) {
            return Ok(SigningKey::P256(Box::new(key)));
        }
        if let Ok(key) = p256::SecretKey::from_sec1_pem(text) {
            return Ok(SigningKey::P256(Box::new(key.into())));
        }
        if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(text) {
            return Ok(SigningKey::Rsa(Box::new(key)));
        }
        if let Ok(key) = rsa::RsaPrivateKey::from_pkcs1_pem(text) {
            return Ok(SigningKey::Rsa(Box::new(key)));
        }
        Err(SignError::InvalidPrivateKey(
            "not an Ed25519, P-256 or RSA private key in PKCS#8, SEC1 or PKCS#1 PEM",
        ))
    }

    /// What the receiving source is configured with to verify this key's
    /// signatures: Discord's hex public key, SendGrid's base64
    /// SubjectPublicKeyInfo; `None` for a shared secret (the secret itself)
    /// and for RSA (PayPal verifies with the certificate instead).
    pub fn verifying_secret(&self) -> Option<String> {
        match self {
            SigningKey::Shared(_) | SigningKey::Rsa(_) => None,
            SigningKey::Ed25519(key) => Some(hex::encode(key.verifying_key().to_bytes())),
            SigningKey::P256(key) => {
                use p256::pkcs8::EncodePublicKey as _;
                let der = key.verifying_key().to_public_key_der().ok()?;
                Some(base64::engine::general_purpose::STANDARD.encode(der.as_bytes()))
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            SigningKey::Shared(_) => "a shared secret",
            SigningKey::Ed25519(_) => "an Ed25519 private key",
            SigningKey::P256(_) => "a P-256 private key",
            SigningKey::Rsa(_) => "an RSA private key",
        }
    }
}

/// A request to sign: where it goes, what it carries, and what the sender
/// would say about it.
#[derive(Clone, Copy, Debug)]
pub struct Unsigned<'a> {
    /// The method; providers deliver with POST.
    pub method: &'a Method,
    /// The URL the request is sent to, which Twilio and Square sign.
    pub url: &'a str,
    /// The body.
    pub body: &'a [u8],
    /// The event name a provider sends in a header: GitHub's `X-GitHub-Event`
    /// (`push`, or `pull_request.opened`: the part before the first `.`),
    /// Shopify's topic (`orders/create`), GitLab's `X-Gitlab-Event`.
    pub event: Option<&'a str>,
    /// The delivery's unique id (GitHub delivery, `webhook-id`, Shopify
    /// webhook id, …); derived from the inputs when `None`.
    pub id: Option<&'a str>,
    /// `Content-Type`; by default `application/json` for a body that looks
    /// like JSON and `application/x-www-form-urlencoded` otherwise.
    pub content_type: Option<&'a str>,
    /// PayPal: the URL of the certificate of the signing key, sent as
    /// `PAYPAL-CERT-URL` (it must be on the source's `verify.cert_hosts`).
    pub cert_url: Option<&'a str>,
}

static POST: Method = Method::POST;

impl<'a> Unsigned<'a> {
    /// A POST of `body` to `url`.
    pub fn post(url: &'a str, body: &'a [u8]) -> Self {
        Self {
            method: &POST,
            url,
            body,
            event: None,
            id: None,
            content_type: None,
            cert_url: None,
        }
    }

    /// With the event name (see [`Unsigned::event`]).
    pub fn event(mut self, event: &'a str) -> Self {
        self.event = Some(event);
        self
    }

    /// With the delivery id.
    pub fn id(mut self, id: &'a str) -> Self {
        self.id = Some(id);
        self
    }

    /// With PayPal's certificate URL.
    pub fn cert_url(mut self, url: &'a str) -> Self {
        self.cert_url = Some(url);
        self
    }
}

/// A request signed as its provider would send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRequest {
    /// The method.
    pub method: Method,
    /// The URL to request: the one given, except for a Twilio JSON body,
    /// whose `bodySHA256` is added to the query.
    pub url: String,
    /// The headers to send, `Content-Type` included, in the sender's casing.
    pub headers: Vec<(String, String)>,
    /// The body to send: the one given, except where the provider carries
    /// its proof or timestamp inside it (see the module docs).
    pub body: Vec<u8>,
}

impl SignedRequest {
    /// The value of header `name` (case-insensitive), if set.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be signed. Messages say what was expected and
/// never contain key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// No such provider.
    #[error("unknown provider {0:?} (expected one of: {names})", names = crate::provider_names().join(", "))]
    UnknownProvider(String),
    /// The provider signs with a private key and was given something else.
    #[error(
        "provider {provider:?} signs with {expected}, not {given}; give the private key \
         (the source is configured with its public half)"
    )]
    WrongKey {
        /// The provider.
        provider: &'static str,
        /// What it signs with.
        expected: &'static str,
        /// What it was given.
        given: &'static str,
    },
    /// A private key could not be read.
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(&'static str),
    /// The secret cannot be used by this provider as it is.
    #[error("provider {provider:?} cannot use this secret: {problem}")]
    InvalidSecret {
        /// The provider.
        provider: &'static str,
        /// What is wrong (never the secret).
        problem: &'static str,
    },
    /// The provider needs something the caller did not give.
    #[error("provider {provider:?} needs {what}")]
    Missing {
        /// The provider.
        provider: &'static str,
        /// What is missing, with an example.
        what: &'static str,
    },
    /// The `verify` options do not describe a scheme (generic `hmac`, `token`).
    #[error("invalid options: {0}")]
    Options(#[from] crate::BuildError),
    /// The body is not what the provider sends.
    #[error("provider {provider:?} cannot sign this body: {problem}")]
    InvalidBody {
        /// The provider.
        provider: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
}

/// Signs `request` as `provider` would at `now`, with `key` and the
/// source's `options` (Square's `notification_url`, PayPal's `webhook_id`,
/// the generic `hmac` scheme's description, `token`'s header).
pub fn sign_request(
    provider: &str,
    key: &SigningKey,
    options: &VerifyOptions,
    request: &Unsigned<'_>,
    now: UnixMillis,
) -> Result<SignedRequest, SignError> {
    let name = canonical_name(provider).ok_or_else(|| SignError::UnknownProvider(provider.to_owned()))?;
    let mut out = Draft::new(name, request, now);
    match name {
        "stripe" => {
            let secret = shared(name, key)?;
            out.content_type("application/json; charset=utf-8");
            out.header("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)");
            let signature = providers::stripe::sign(secret, now.as_secs(), &out.body);
            out.header("Stripe-Signature", &signature);
        }
        "github" => {
            let secret = shared(name, key)?;
            let event = request
                .event
                .or_else(|| github_ping(request.body))
                .ok_or(SignError::Missing {
                    provider: name,
                    what: "the event name sent as X-GitHub-Event, e.g. push or pull_request.opened",
                })?;
            let event = event.split('.').next().unwrap_or(event);
            let delivery = out.id(Format::Uuid, "delivery");
            out.content_type("application/json");
            out.header("User-Agent", "GitHub-Hookshot/gatehouse");
            out.header("X-GitHub-Event", event);
            out.header("X-GitHub-Delivery", &delivery);
            out.header("X-GitHub-Hook-ID", "1");
            out.header("X-GitHub-Hook-Installation-Target-Type", "repository");
            out.header("X-GitHub-Hook-Installation-Target-ID", "1");
            let mut sha1 = keyed_sha1(secret);
            sha1.update(&out.body);
            let legacy = format!("sha1={}", hex::encode(sha1.finalize().into_bytes()));
            out.header("X-Hub-Signature", &legacy);
            let signature = providers::github::sign(secret, &out.body);
            out.header("X-Hub-Signature-256", &signature);
        }
        "standard-webhooks" | "svix" => {
            let secret = shared(name, key)?;
            let decoded = providers::standard_webhooks::decode_secret(secret).ok_or(SignError::InvalidSecret {
                provider: name,
                problem: "expected \"whsec_\" followed by base64",
            })?;
            let names = if name == "svix" {
                providers::standard_webhooks::SVIX_HEADERS
            } else {
                providers::standard_webhooks::WEBHOOK_HEADERS
            };
            let id = out.id(Format::Prefixed("msg_"), "message");
            let signature = providers::standard_webhooks::sign(&decoded, &id, now.as_secs(), &out.body);
            out.content_type("application/json");
            out.header(names.id, &id);
            out.header(names.timestamp, &now.as_secs().to_string());
            out.header(names.signature, &signature);
        }
        "twilio" => {
            let secret = shared(name, key)?;
            let form = !looks_like_json(request.body, request.content_type);
            out.content_type(if form {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            });
            let token = out.id(Format::Uuid, "idempotency");
            out.header("User-Agent", "TwilioProxy/1.1");
            out.header("I-Twilio-Idempotency-Token", &token);
            let signature = if form {
                let params: Vec<(String, String)> = form_urlencoded::parse(&out.body).into_owned().collect();
                let params: Vec<(&str, &str)> = params.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                providers::twilio::sign(providers::twilio::Algorithm::Sha1, secret, &out.url, &params)
            } else {
                out.url = providers::twilio::url_with_body_hash(&out.url, &out.body);
                providers::twilio::sign(providers::twilio::Algorithm::Sha1, secret, &out.url, &[])
            };
            out.header("X-Twilio-Signature", &signature);
        }
        "slack" => {
            let secret = shared(name, key)?;
            let form = !looks_like_json(request.body, request.content_type);
            out.content_type(if form {
                "application/x-www-form-urlencoded"
            } else {
                "application/json"
            });
            out.header("User-Agent", "Slackbot 1.0 (+https://api.slack.com/robots)");
            out.header("X-Slack-Request-Timestamp", &now.as_secs().to_string());
            let signature = providers::slack::sign(secret, now.as_secs(), &out.body);
            out.header("X-Slack-Signature", &signature);
        }
        "shopify" => {
            let secret = shared(name, key)?;
            let topic = request.event.ok_or(SignError::Missing {
                provider: name,
                what: "the topic sent as X-Shopify-Topic, e.g. orders/create",
            })?;
            let webhook_id = out.id(Format::Uuid, "webhook");
            let event_id = out.derived(Format::Uuid, "event");
            out.content_type("application/json");
            out.header("User-Agent", "Shopify-Captain-Hook");
            out.header("X-Shopify-Topic", topic);
            out.header("X-Shopify-Shop-Domain", "gatehouse-test.myshopify.com");
            out.header("X-Shopify-API-Version", "2025-01");
            out.header("X-Shopify-Webhook-Id", &webhook_id);
            out.header("X-Shopify-Event-Id", &event_id);
            out.header("X-Shopify-Triggered-At", &rfc3339(now));
            let signature = providers::shopify::sign(secret, &out.body);
            out.header("X-Shopify-Hmac-Sha256", &signature);
        }
        "paypal" => {
            let SigningKey::Rsa(private) = key else {
                return Err(wrong_key(name, "an RSA private key (PEM)", key));
            };
            let webhook_id = options.webhook_id.as_deref().ok_or(SignError::Missing {
                provider: name,
                what:
                    "verify.webhook_id, the subscription id PayPal signs (e.g. --option webhook_id=1JE4291016473214C)",
            })?;
            let cert_url = request.cert_url.ok_or(SignError::Missing {
                provider: name,
                what: "the URL of the signing key's certificate, sent as PAYPAL-CERT-URL (e.g. --cert-url)",
            })?;
            let transmission_id = out.id(Format::Uuid, "transmission");
            let time = rfc3339(now);
            let signature = providers::paypal::sign(private, &transmission_id, &time, webhook_id, &out.body);
            out.content_type("application/json");
            out.header("User-Agent", "PayPal/AUHD-214.0-58071908");
            out.header("PAYPAL-TRANSMISSION-ID", &transmission_id);
            out.header("PAYPAL-TRANSMISSION-TIME", &time);
            out.header("PAYPAL-CERT-URL", cert_url);
            out.header("PAYPAL-AUTH-ALGO", providers::paypal::AUTH_ALGO);
            out.header("PAYPAL-TRANSMISSION-SIG", &signature);
        }
        "square" => {
            let secret = shared(name, key)?;
            let url = options.notification_url.as_deref().unwrap_or(request.url);
            let signature = providers::square::sign(secret, url, &out.body);
            out.content_type("application/json");
            out.header("User-Agent", "Square Connect v2");
            out.header("X-Square-HmacSha256-Signature", &signature);
        }
        "discord" => {
            let SigningKey::Ed25519(private) = key else {
                return Err(wrong_key(
                    name,
                    "an Ed25519 private key (PKCS#8 PEM or 64 hex digits of its seed)",
                    key,
                ));
            };
            let timestamp = now.as_secs().to_string();
            let signature = providers::discord::sign(&private.to_bytes(), &timestamp, &out.body);
            out.content_type("application/json");
            out.header("User-Agent", "Discord-Interactions/1.0 (+https://discord.com)");
            out.header("X-Signature-Ed25519", &signature);
            out.header("X-Signature-Timestamp", &timestamp);
        }
        "zoom" => {
            let secret = shared(name, key)?;
            out.content_type("application/json");
            out.header("User-Agent", "Zoom Marketplace/1.0a");
            out.header("x-zm-request-timestamp", &now.as_secs().to_string());
            let signature = providers::zoom::sign(secret, now.as_secs(), &out.body);
            out.header("x-zm-signature", &signature);
        }
        "gitlab" => {
            let token = shared_text(name, key)?;
            let event = request
                .event
                .map(str::to_owned)
                .or_else(|| gitlab_event(request.body))
                .ok_or(SignError::Missing {
                    provider: name,
                    what: "the event name sent as X-Gitlab-Event, e.g. \"Push Hook\" (or a body with object_kind)",
                })?;
            let uuid = out.id(Format::Uuid, "webhook");
            let event_uuid = out.derived(Format::Uuid, "event");
            out.content_type("application/json");
            out.header("User-Agent", "GitLab/17.4.0");
            out.header("X-Gitlab-Event", &event);
            out.header("X-Gitlab-Instance", "https://gitlab.example.com");
            out.header("X-Gitlab-Webhook-UUID", &uuid);
            out.header("X-Gitlab-Event-UUID", &event_uuid);
            out.header("Idempotency-Key", &uuid);
            out.header("X-Gitlab-Token", &providers::gitlab::sign(token));
        }
        "sendgrid" => {
            let SigningKey::P256(private) = key else {
                return Err(wrong_key(name, "a P-256 private key (PEM)", key));
            };
            let timestamp = now.as_secs().to_string();
            let signature = providers::sendgrid::sign(private, &timestamp, &out.body);
            out.content_type("application/json");
            out.header("User-Agent", "SendGrid Event API");
            out.header("X-Twilio-Email-Event-Webhook-Signature", &signature);
            out.header("X-Twilio-Email-Event-Webhook-Timestamp", &timestamp);
        }
        "linear" => {
            let secret = shared(name, key)?;
            let (has_timestamp, event_type) = linear_fields(request.body).ok_or(SignError::InvalidBody {
                provider: name,
                problem: "Linear sends a JSON object",
            })?;
            if !has_timestamp {
                out.body = splice_field(&out.body, "webhookTimestamp", &now.0.to_string());
            }
            let delivery = out.id(Format::Uuid, "delivery");
            out.content_type("application/json; charset=utf-8");
            out.header("User-Agent", "Linear-Webhook");
            out.header("Linear-Delivery", &delivery);
            if let Some(event_type) = event_type {
                out.header("Linear-Event", &event_type);
            }
            let signature = providers::linear::sign(secret, &out.body);
            out.header("Linear-Signature", &signature);
        }
        "intercom" => {
            let secret = shared(name, key)?;
            out.content_type("application/json");
            out.header("User-Agent", "intercom-parrot-service-rb");
            let signature = providers::intercom::sign(secret, &out.body);
            out.header("X-Hub-Signature", &signature);
        }
        "mailgun" => {
            let secret = shared(name, key)?;
            let timestamp = now.as_secs().to_string();
            let token = out.id(Format::Hex50, "token");
            let signature = providers::mailgun::sign(secret, &timestamp, &token);
            let value = serde_json::json!({ "timestamp": timestamp, "token": token, "signature": signature });
            out.body = set_field(name, &out.body, "signature", value)?;
            out.content_type("application/json");
            out.header("User-Agent", "mailgun/treq-16.12.0");
        }
        "microsoft-graph" => {
            let client_state = shared_text(name, key)?;
            out.body = set_client_state(&out.body, client_state)?;
            out.content_type("application/json; charset=utf-8");
        }
        "dropbox" => {
            let secret = shared(name, key)?;
            out.content_type("application/json");
            out.header("User-Agent", "DropboxWebhooks/1.0");
            let signature = providers::dropbox::sign(secret, &out.body);
            out.header("X-Dropbox-Signature", &signature);
        }
        "hmac" => {
            let secret = shared(name, key)?;
            let config = providers::hmac::HmacConfig::from_options(options, None)?;
            out.content_type_by_body();
            for (header, value) in providers::hmac::sign(&config, secret, now.as_secs(), &out.body) {
                out.header(header.as_str(), &value);
            }
        }
        "token" => {
            let token = shared_text(name, key)?;
            let header = options.header.as_deref().unwrap_or(providers::token::DEFAULT_HEADER);
            out.content_type_by_body();
            out.header(header, &providers::token::sign(token));
        }
        "none" => out.content_type_by_body(),
        // `canonical_name` only returns the names matched above.
        other => return Err(SignError::UnknownProvider(other.to_owned())),
    }
    Ok(out.finish())
}

/// The provider's name as [`crate::provider_names`] spells it.
fn canonical_name(provider: &str) -> Option<&'static str> {
    crate::provider_names().iter().copied().find(|name| *name == provider)
}

fn wrong_key(provider: &'static str, expected: &'static str, given: &SigningKey) -> SignError {
    SignError::WrongKey {
        provider,
        expected,
        given: given.kind(),
    }
}

fn shared<'k>(provider: &'static str, key: &'k SigningKey) -> Result<&'k [u8], SignError> {
    match key {
        SigningKey::Shared(secret) if !secret.expose().is_empty() => Ok(secret.expose()),
        SigningKey::Shared(_) => Err(SignError::InvalidSecret {
            provider,
            problem: "it is empty",
        }),
        other => Err(wrong_key(
            provider,
            "the shared secret the source is configured with",
            other,
        )),
    }
}

fn shared_text<'k>(provider: &'static str, key: &'k SigningKey) -> Result<&'k str, SignError> {
    let bytes = shared(provider, key)?;
    let text = std::str::from_utf8(bytes).map_err(|_| SignError::InvalidSecret {
        provider,
        problem: "it is sent as text and must be UTF-8",
    })?;
    if http::HeaderValue::from_str(text).is_err() && provider != "microsoft-graph" {
        return Err(SignError::InvalidSecret {
            provider,
            problem: "it is sent in a header and must be visible ASCII",
        });
    }
    Ok(text)
}

/// How a derived id is written.
#[derive(Clone, Copy)]
enum Format {
    /// `8-4-4-4-12` hex, version 4 style.
    Uuid,
    /// A prefix and 26 hex digits, e.g. `msg_…`.
    Prefixed(&'static str),
    /// 50 hex digits (Mailgun's token).
    Hex50,
}

/// The request being built.
struct Draft<'a> {
    provider: &'static str,
    request: &'a Unsigned<'a>,
    now: UnixMillis,
    url: String,
    body: Vec<u8>,
    content_type: Option<String>,
    headers: Vec<(String, String)>,
}

impl<'a> Draft<'a> {
    fn new(provider: &'static str, request: &'a Unsigned<'a>, now: UnixMillis) -> Self {
        Self {
            provider,
            request,
            now,
            url: request.url.to_owned(),
            body: request.body.to_vec(),
            content_type: request.content_type.map(str::to_owned),
            headers: Vec::new(),
        }
    }

    fn header(&mut self, name: &str, value: &str) {
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    /// The provider's usual content type, unless the caller chose one.
    fn content_type(&mut self, default: &str) {
        self.content_type.get_or_insert_with(|| default.to_owned());
    }

    fn content_type_by_body(&mut self) {
        if looks_like_json(&self.body, None) {
            self.content_type("application/json");
        } else {
            self.content_type("application/x-www-form-urlencoded");
        }
    }

    /// The caller's id, or one derived for `purpose`.
    fn id(&self, format: Format, purpose: &str) -> String {
        match self.request.id {
            Some(id) => id.to_owned(),
            None => self.derived(format, purpose),
        }
    }

    /// An id derived from the provider, `purpose`, the time and the body.
    fn derived(&self, format: Format, purpose: &str) -> String {
        let digest = Sha256::new()
            .chain_update(self.provider.as_bytes())
            .chain_update([0])
            .chain_update(purpose.as_bytes())
            .chain_update([0])
            .chain_update(self.request.id.unwrap_or_default().as_bytes())
            .chain_update([0])
            .chain_update(self.now.0.to_be_bytes())
            .chain_update(self.request.body)
            .finalize();
        let hex = hex::encode(digest);
        match format {
            Format::Uuid => format!(
                "{}-{}-4{}-8{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[13..16],
                &hex[17..20],
                &hex[20..32]
            ),
            Format::Prefixed(prefix) => format!("{prefix}{}", &hex[..26]),
            Format::Hex50 => hex[..50].to_owned(),
        }
    }

    fn finish(self) -> SignedRequest {
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        if let Some(content_type) = self.content_type {
            headers.push(("Content-Type".to_owned(), content_type));
        }
        headers.extend(self.headers);
        SignedRequest {
            method: self.request.method.clone(),
            url: self.url,
            headers,
            body: self.body,
        }
    }
}

/// Whether the body is JSON: by the caller's content type if given, else
/// by its first non-blank byte.
fn looks_like_json(body: &[u8], content_type: Option<&str>) -> bool {
    match content_type {
        Some(content_type) => !crate::util::is_form_urlencoded(Some(content_type)),
        None => matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{' | b'[')),
    }
}

/// `ping` for a body shaped like GitHub's ping (`zen` and `hook_id`).
fn github_ping(body: &[u8]) -> Option<&'static str> {
    #[derive(serde::Deserialize)]
    struct Ping {
        zen: Option<serde::de::IgnoredAny>,
        hook_id: Option<serde::de::IgnoredAny>,
    }
    let ping: Ping = serde_json::from_slice(body).ok()?;
    (ping.zen.is_some() && ping.hook_id.is_some()).then_some("ping")
}

/// GitLab's event header for a body's `object_kind`.
fn gitlab_event(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Kind {
        object_kind: Option<String>,
        event_type: Option<String>,
    }
    let kind: Kind = serde_json::from_slice(body).ok()?;
    let hook = match kind.object_kind?.as_str() {
        "push" => "Push Hook",
        "tag_push" => "Tag Push Hook",
        "issue" if kind.event_type.as_deref() == Some("confidential_issue") => "Confidential Issue Hook",
        "issue" => "Issue Hook",
        "note" => "Note Hook",
        "merge_request" => "Merge Request Hook",
        "wiki_page" => "Wiki Page Hook",
        "pipeline" => "Pipeline Hook",
        "build" => "Job Hook",
        "deployment" => "Deployment Hook",
        "release" => "Release Hook",
        "feature_flag" => "Feature Flag Hook",
        "emoji" => "Emoji Hook",
        _ => return None,
    };
    Some(hook.to_owned())
}

/// Whether a Linear body has a `webhookTimestamp`, and its `type.action`;
/// `None` if it is not a JSON object.
fn linear_fields(body: &[u8]) -> Option<(bool, Option<String>)> {
    #[derive(serde::Deserialize)]
    struct Fields {
        #[serde(rename = "webhookTimestamp")]
        webhook_timestamp: Option<serde::de::IgnoredAny>,
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    let fields: Fields = serde_json::from_slice(body).ok()?;
    Some((fields.webhook_timestamp.is_some(), fields.kind))
}

/// `body` (a JSON object with no field `name`) with `"name":<json>` added
/// in front of its other fields; every other byte stays as it was.
fn splice_field(body: &[u8], name: &str, json: &str) -> Vec<u8> {
    let open = body.iter().position(|b| *b == b'{').unwrap_or(0);
    let rest = &body[open + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(body.len() + name.len() + json.len() + 4);
    out.extend_from_slice(&body[..=open]);
    out.extend_from_slice(serde_json::Value::from(name).to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(json.as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

/// Sets top-level `name` to `value`: spliced in when absent, else the JSON
/// is re-serialised with the field replaced.
fn set_field(provider: &'static str, body: &[u8], name: &str, value: serde_json::Value) -> Result<Vec<u8>, SignError> {
    let not_object = SignError::InvalidBody {
        provider,
        problem: "expected a JSON object",
    };
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|_| not_object.clone())?;
    if !object.contains_key(name) {
        return Ok(splice_field(body, name, &value.to_string()));
    }
    object.insert(name.to_owned(), value);
    serde_json::to_vec(&object).map_err(|_| not_object)
}

/// Microsoft Graph: every notification in `value` carries the client state.
fn set_client_state(body: &[u8], client_state: &str) -> Result<Vec<u8>, SignError> {
    let invalid = SignError::InvalidBody {
        provider: "microsoft-graph",
        problem: "expected {\"value\": [notification, …]}",
    };
    let mut batch: serde_json::Value = serde_json::from_slice(body).map_err(|_| invalid.clone())?;
    let notifications = batch
        .get_mut("value")
        .and_then(serde_json::Value::as_array_mut)
        .filter(|value| !value.is_empty())
        .ok_or(invalid.clone())?;
    let wanted = serde_json::Value::from(client_state);
    if notifications.iter().all(|n| n.get("clientState") == Some(&wanted)) {
        return Ok(body.to_vec());
    }
    for notification in notifications {
        let object = notification.as_object_mut().ok_or(invalid.clone())?;
        object.insert("clientState".to_owned(), wanted.clone());
    }
    serde_json::to_vec(&batch).map_err(|_| invalid)
}

/// `now` as RFC 3339 UTC with seconds, e.g. `2023-11-14T22:13:20Z`.
pub fn rfc3339(now: UnixMillis) -> String {
    let secs = now.as_secs();
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build_with, BuildContext, InboundRequest, Kind, ProviderSpec};

    const NOW: UnixMillis = UnixMillis(1_700_000_000_123);
    const URL: &str = "http://gatehouse.test/in/source";
    const PAYPAL_KEY: &str = include_str!("../tests/data/paypal-signer.key.pem");
    const PAYPAL_CERT: &str = include_str!("../tests/data/paypal-signer.cert.pem");
    const CERT_URL: &str = "https://api.paypal.com/v1/notifications/certs/CERT-test";
    /// The P-256 test key of the SendGrid unit tests (a scalar made with
    /// Python's `cryptography`), as SEC1 PEM is awkward to inline: built
    /// from the scalar instead.
    const SENDGRID_SCALAR: &str = "4a04dddc48efc56629bb8ba3852a393a07bc4211008202462e0500aea9cd310d";

    fn sendgrid_key() -> SigningKey {
        let scalar = hex::decode(SENDGRID_SCALAR).unwrap();
        SigningKey::P256(Box::new(p256::ecdsa::SigningKey::from_slice(&scalar).unwrap()))
    }

    /// A key to sign with, the secrets the receiving source holds, its
    /// options, and a body a real sender would send, for every provider.
    fn setup(
        provider: &str,
    ) -> (
        SigningKey,
        Vec<Secret>,
        VerifyOptions,
        &'static str,
        Option<&'static str>,
    ) {
        let shared = |s: &str| (SigningKey::shared(s), vec![Secret::new(s)]);
        let json = r#"{"id":"evt_1","type":"thing.happened","data":{"x":"é"}}"#;
        let options = VerifyOptions::default();
        match provider {
            "stripe" => {
                let (k, s) = shared("whsec_test_secret");
                (k, s, options, json, None)
            }
            "github" => {
                let (k, s) = shared("It's a Secret to Everybody");
                (
                    k,
                    s,
                    options,
                    r#"{"action":"opened","number":1}"#,
                    Some("pull_request.opened"),
                )
            }
            "standard-webhooks" | "svix" => {
                let (k, s) = shared("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
                (k, s, options, json, None)
            }
            "twilio" => {
                let (k, s) = shared("12345");
                (
                    k,
                    s,
                    options,
                    "MessageSid=SM1&MessageStatus=delivered&Body=h%C3%A9+%26+co",
                    None,
                )
            }
            "slack" => {
                let (k, s) = shared("8f742231b10e8888abcd99yyyzzz85a5");
                (
                    k,
                    s,
                    options,
                    r#"{"type":"event_callback","event_id":"Ev1","event":{"type":"app_mention"}}"#,
                    None,
                )
            }
            "shopify" => {
                let (k, s) = shared("shopify-client-secret");
                (k, s, options, r#"{"id":820982911946154500}"#, Some("orders/create"))
            }
            "paypal" => {
                let key = SigningKey::from_private_key(PAYPAL_KEY).unwrap();
                let options = VerifyOptions {
                    webhook_id: Some("1JE4291016473214C".into()),
                    ..Default::default()
                };
                (
                    key,
                    vec![],
                    options,
                    r#"{"id":"WH-1","event_type":"PAYMENT.CAPTURE.COMPLETED"}"#,
                    None,
                )
            }
            "square" => {
                let (k, s) = shared("Ibxx_5AKakO-3qeNVR61Dw");
                let options = VerifyOptions {
                    notification_url: Some("https://example.test/hooks/square".into()),
                    ..Default::default()
                };
                (k, s, options, r#"{"event_id":"e1","type":"payment.created"}"#, None)
            }
            "discord" => {
                let key = SigningKey::from_private_key(&hex::encode((0u8..32).collect::<Vec<_>>())).unwrap();
                let public = key.verifying_secret().unwrap();
                (key, vec![Secret::new(public)], options, r#"{"type":2,"id":"i1"}"#, None)
            }
            "zoom" => {
                let (k, s) = shared("zoom-secret-token");
                (k, s, options, r#"{"event":"meeting.started","payload":{}}"#, None)
            }
            "gitlab" => {
                let (k, s) = shared("gitlab-token");
                (k, s, options, r#"{"object_kind":"push","ref":"refs/heads/main"}"#, None)
            }
            "sendgrid" => {
                let key = sendgrid_key();
                let public = key.verifying_secret().unwrap();
                (
                    key,
                    vec![Secret::new(public)],
                    options,
                    r#"[{"sg_event_id":"sg1","event":"delivered"}]"#,
                    None,
                )
            }
            "linear" => {
                let (k, s) = shared("linear-secret");
                (k, s, options, r#"{"action":"create","type":"Issue","data":{}}"#, None)
            }
            "intercom" => {
                let (k, s) = shared("intercom-secret");
                (
                    k,
                    s,
                    options,
                    r#"{"id":"notif_1","topic":"conversation.user.created"}"#,
                    None,
                )
            }
            "mailgun" => {
                let (k, s) = shared("key-mailgun");
                (k, s, options, r#"{"event-data":{"event":"delivered","id":"m1"}}"#, None)
            }
            "microsoft-graph" => {
                let (k, s) = shared("client-state-secret");
                (
                    k,
                    s,
                    options,
                    r#"{"value":[{"changeType":"created","resource":"me/messages/1"}]}"#,
                    None,
                )
            }
            "dropbox" => {
                let (k, s) = shared("dropbox-app-secret");
                (k, s, options, r#"{"list_folder":{"accounts":["dbid:1"]}}"#, None)
            }
            "hmac" => {
                let (k, s) = shared("hmac-secret");
                let options = VerifyOptions {
                    header: Some("X-Signature".into()),
                    algorithm: Some("sha512".into()),
                    encoding: Some("base64".into()),
                    prefix: Some("sha512=".into()),
                    timestamp_header: Some("X-Timestamp".into()),
                    signed_content: Some("{timestamp}.{body}".into()),
                    ..Default::default()
                };
                (k, s, options, json, None)
            }
            "token" => {
                let (k, s) = shared("token-secret");
                let options = VerifyOptions {
                    header: Some("X-Api-Key".into()),
                    ..Default::default()
                };
                (k, s, options, json, None)
            }
            "none" => {
                let options = VerifyOptions {
                    insecure: true,
                    ..Default::default()
                };
                (SigningKey::shared("unused"), vec![], options, json, None)
            }
            other => panic!("no setup for {other}"),
        }
    }

    fn header_map(signed: &SignedRequest) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (name, value) in &signed.headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn every_provider_verifies_what_it_signs() {
        for &name in crate::provider_names() {
            let (key, secrets, options, body, event) = setup(name);
            let mut unsigned = Unsigned::post(URL, body.as_bytes()).cert_url(CERT_URL);
            unsigned.event = event;
            let signed = sign_request(name, &key, &options, &unsigned, NOW).unwrap_or_else(|e| panic!("{name}: {e}"));
            let context = BuildContext::default();
            context
                .certificates
                .insert_pem(CERT_URL, PAYPAL_CERT.as_bytes(), NOW)
                .unwrap();
            let provider = build_with(
                ProviderSpec {
                    provider: name,
                    secrets: &secrets,
                    tolerance: None,
                    options: &options,
                },
                &context,
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let headers = header_map(&signed);
            let request = InboundRequest {
                method: &signed.method,
                url: &signed.url,
                headers: &headers,
                body: &signed.body,
            };
            let verified = provider.verify(&request, NOW);
            assert!(verified.is_ok(), "{name}: {verified:?} for {signed:?}");
            assert!(signed.header("content-type").is_some(), "{name}");
            // A changed body no longer verifies (none and token do not sign it).
            if !matches!(name, "none" | "token" | "gitlab" | "mailgun" | "microsoft-graph") {
                let mut tampered = signed.body.clone();
                let last = tampered.len() - 2;
                tampered[last] ^= 0x01;
                let request = InboundRequest {
                    body: &tampered,
                    ..request
                };
                assert!(
                    provider.verify(&request, NOW).is_err(),
                    "{name} accepted a changed body"
                );
            }
        }
    }

    #[test]
    fn identity_headers_are_what_the_verifiers_read() {
        let identify = |name: &str, signed: &SignedRequest| {
            let (_, secrets, options, _, _) = setup(name);
            let provider = crate::build(ProviderSpec {
                provider: name,
                secrets: &secrets,
                tolerance: None,
                options: &options,
            })
            .unwrap();
            let headers = header_map(signed);
            provider.identify(&InboundRequest {
                method: &signed.method,
                url: &signed.url,
                headers: &headers,
                body: &signed.body,
            })
        };
        let sign = |name: &str, unsigned: Unsigned<'_>| {
            let (key, _, options, _, _) = setup(name);
            sign_request(name, &key, &options, &unsigned, NOW).unwrap()
        };

        let body = br#"{"action":"opened"}"#;
        let github = sign(
            "github",
            Unsigned::post(URL, body).event("pull_request.opened").id("d-1"),
        );
        assert_eq!(github.header("x-github-event"), Some("pull_request"));
        let identity = identify("github", &github);
        assert_eq!(identity.provider_event_id.as_deref(), Some("d-1"));
        assert_eq!(identity.event_type.as_deref(), Some("pull_request.opened"));

        let ping = br#"{"zen":"Design for failure.","hook_id":1,"hook":{}}"#;
        let github_ping = sign("github", Unsigned::post(URL, ping));
        assert_eq!(identify("github", &github_ping).kind, Kind::Ping);

        let shopify = sign("shopify", Unsigned::post(URL, b"{}").event("orders/create").id("w-1"));
        let identity = identify("shopify", &shopify);
        assert_eq!(identity.provider_event_id.as_deref(), Some("w-1"));
        assert_eq!(identity.event_type.as_deref(), Some("orders/create"));

        let standard = sign(
            "standard-webhooks",
            Unsigned::post(URL, b"{\"type\":\"a.b\"}").id("msg_1"),
        );
        assert_eq!(
            identify("standard-webhooks", &standard).provider_event_id.as_deref(),
            Some("msg_1")
        );
        let svix = sign("svix", Unsigned::post(URL, b"{}"));
        assert!(svix.header("svix-id").is_some_and(|id| id.starts_with("msg_")));

        let linear = sign(
            "linear",
            Unsigned::post(URL, br#"{"type":"Issue","action":"create"}"#).id("l-1"),
        );
        assert_eq!(identify("linear", &linear).provider_event_id.as_deref(), Some("l-1"));

        let gitlab = sign(
            "gitlab",
            Unsigned::post(URL, br#"{"object_kind":"merge_request"}"#).id("g-1"),
        );
        assert_eq!(gitlab.header("x-gitlab-event"), Some("Merge Request Hook"));
        assert_eq!(identify("gitlab", &gitlab).provider_event_id.as_deref(), Some("g-1"));

        let mailgun = sign("mailgun", Unsigned::post(URL, br#"{"event-data":{"event":"opened"}}"#));
        let identity = identify("mailgun", &mailgun);
        assert_eq!(identity.event_type.as_deref(), Some("opened"));
        assert_eq!(identity.provider_event_id.map(|t| t.len()), Some(50));
    }

    #[test]
    fn same_inputs_sign_the_same_request_and_ids_differ_by_time() {
        let (key, _, options, body, event) = setup("github");
        let mut unsigned = Unsigned::post(URL, body.as_bytes());
        unsigned.event = event;
        let first = sign_request("github", &key, &options, &unsigned, NOW).unwrap();
        let again = sign_request("github", &key, &options, &unsigned, NOW).unwrap();
        let later = sign_request("github", &key, &options, &unsigned, UnixMillis(NOW.0 + 1)).unwrap();
        assert_eq!(first, again);
        assert_ne!(first.header("x-github-delivery"), later.header("x-github-delivery"));
        let delivery = first.header("x-github-delivery").unwrap();
        assert_eq!(delivery.len(), 36);
        assert_eq!(delivery.as_bytes()[14], b'4');
    }

    #[test]
    fn published_vectors_come_out_of_sign_request() {
        let at = UnixMillis::from_secs(1_700_000_000);
        let stripe = sign_request(
            "stripe",
            &SigningKey::shared("whsec_test_secret"),
            &VerifyOptions::default(),
            &Unsigned::post(URL, br#"{"id":"evt_test_webhook","object":"event"}"#),
            at,
        )
        .unwrap();
        assert_eq!(
            stripe.header("stripe-signature"),
            Some("t=1700000000,v1=d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990")
        );
        let twilio = sign_request(
            "twilio",
            &SigningKey::shared("12345"),
            &VerifyOptions::default(),
            &Unsigned::post(
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                br#"{"property": "value", "boolean": true}"#,
            ),
            at,
        )
        .unwrap();
        assert_eq!(
            twilio.url,
            "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
        assert_eq!(
            twilio.header("x-twilio-signature"),
            Some("a9nBmqA0ju/hNViExpshrM61xv4=")
        );
        let twilio_form = sign_request(
            "twilio",
            &SigningKey::shared("12345"),
            &VerifyOptions::default(),
            &Unsigned::post(
                "https://mycompany.com/myapp.php?foo=1&bar=2",
                b"CallSid=CA1234567890ABCDE&Caller=%2B12349013030&Digits=1234&From=%2B12349013030&To=%2B18005551212",
            ),
            at,
        )
        .unwrap();
        assert_eq!(
            twilio_form.header("x-twilio-signature"),
            Some("0/KCTR6DLpKmkAf8muzZqo1nDgQ=")
        );
        let standard = sign_request(
            "standard-webhooks",
            &SigningKey::shared("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            &VerifyOptions::default(),
            &Unsigned::post(URL, br#"{"test": 2432232314}"#).id("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            UnixMillis::from_secs(1_614_265_330),
        )
        .unwrap();
        assert_eq!(
            standard.header("webhook-signature"),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        );
    }

    #[test]
    fn asymmetric_providers_need_a_private_key() {
        let public_as_secret = SigningKey::shared("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8");
        let options = VerifyOptions {
            webhook_id: Some("WH".into()),
            ..Default::default()
        };
        for name in ["discord", "sendgrid", "paypal"] {
            let err = sign_request(name, &public_as_secret, &options, &Unsigned::post(URL, b"{}"), NOW).unwrap_err();
            assert!(matches!(err, SignError::WrongKey { .. }), "{name}: {err}");
            assert!(err.to_string().contains("private key"), "{err}");
        }
        // And a private key is not a shared secret.
        let err = sign_request(
            "stripe",
            &sendgrid_key(),
            &VerifyOptions::default(),
            &Unsigned::post(URL, b"{}"),
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err, SignError::WrongKey { .. }), "{err}");
    }

    #[test]
    fn private_keys_are_read_from_pem_and_hex() {
        assert!(matches!(
            SigningKey::from_private_key(PAYPAL_KEY),
            Ok(SigningKey::Rsa(_))
        ));
        let seed = hex::encode((0u8..32).collect::<Vec<_>>());
        let discord = SigningKey::from_private_key(&seed).unwrap();
        assert_eq!(
            discord.verifying_secret().as_deref(),
            Some("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
        );
        {
            use p256::pkcs8::EncodePrivateKey as _;
            let SigningKey::P256(key) = sendgrid_key() else {
                unreachable!()
            };
            let pem = key.to_pkcs8_pem(Default::default()).unwrap();
            let read = SigningKey::from_private_key(&pem).unwrap();
            assert_eq!(
                read.verifying_secret().as_deref(),
                Some("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEu31MgjFjsLJyW2svpf50wTN3PbLJoBcmIQIC+NKxH/gR8A8FwG8rsiImksFh3kFt+sAnSL0SjsOut+qAnUVJFg==")
            );
            let SigningKey::Ed25519(ed) = discord else {
                unreachable!()
            };
            let pem = ed.to_pkcs8_pem(Default::default()).unwrap();
            assert!(matches!(SigningKey::from_private_key(&pem), Ok(SigningKey::Ed25519(_))));
        }
        for bad in [
            "",
            "hunter2",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        ] {
            let err = SigningKey::from_private_key(bad).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        assert_eq!(
            format!("{:?}", SigningKey::shared("hunter2")),
            "SigningKey::Shared(***)"
        );
    }

    #[test]
    fn missing_inputs_are_named() {
        let key = SigningKey::shared("s");
        let options = VerifyOptions::default();
        let err = sign_request("github", &key, &options, &Unsigned::post(URL, b"{}"), NOW).unwrap_err();
        assert!(err.to_string().contains("X-GitHub-Event"), "{err}");
        let err = sign_request("shopify", &key, &options, &Unsigned::post(URL, b"{}"), NOW).unwrap_err();
        assert!(err.to_string().contains("X-Shopify-Topic"), "{err}");
        let rsa = SigningKey::from_private_key(PAYPAL_KEY).unwrap();
        let err = sign_request("paypal", &rsa, &options, &Unsigned::post(URL, b"{}"), NOW).unwrap_err();
        assert!(err.to_string().contains("webhook_id"), "{err}");
        let err = sign_request("strype", &key, &options, &Unsigned::post(URL, b"{}"), NOW).unwrap_err();
        assert!(err.to_string().contains("stripe"), "{err}");
        let err = sign_request("hmac", &key, &options, &Unsigned::post(URL, b"{}"), NOW).unwrap_err();
        assert!(err.to_string().contains("verify.header"), "{err}");
        let err = sign_request(
            "standard-webhooks",
            &SigningKey::shared("whsec_%%%"),
            &options,
            &Unsigned::post(URL, b"{}"),
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err, SignError::InvalidSecret { .. }), "{err}");
    }

    #[test]
    fn body_fields_are_spliced_without_touching_the_rest() {
        assert_eq!(
            splice_field(br#" { "b" : 1 }"#, "a", "2"),
            br#" {"a":2, "b" : 1 }"#.to_vec()
        );
        assert_eq!(splice_field(b"{ }", "a", "2"), br#"{"a":2 }"#.to_vec());
        let linear = sign_request(
            "linear",
            &SigningKey::shared("k"),
            &VerifyOptions::default(),
            &Unsigned::post(URL, br#"{"type":"Issue", "x": [1, 2]}"#),
            NOW,
        )
        .unwrap();
        assert_eq!(
            linear.body,
            br#"{"webhookTimestamp":1700000000123,"type":"Issue", "x": [1, 2]}"#.to_vec()
        );
        let kept = br#"{"webhookTimestamp":5,"type":"Issue"}"#;
        let linear = sign_request(
            "linear",
            &SigningKey::shared("k"),
            &VerifyOptions::default(),
            &Unsigned::post(URL, kept),
            NOW,
        )
        .unwrap();
        assert_eq!(linear.body, kept.to_vec(), "a timestamp the caller chose is kept");
        let graph = sign_request(
            "microsoft-graph",
            &SigningKey::shared("cs"),
            &VerifyOptions::default(),
            &Unsigned::post(URL, br#"{"value":[{"changeType":"updated"},{"clientState":"old"}]}"#),
            NOW,
        )
        .unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&graph.body).unwrap();
        assert_eq!(parsed["value"][0]["clientState"], "cs");
        assert_eq!(parsed["value"][1]["clientState"], "cs");
    }

    #[test]
    fn rfc3339_round_trips_through_the_paypal_parser() {
        for secs in [0, 951_782_400, 1_700_000_000, 4_102_444_799] {
            let text = rfc3339(UnixMillis::from_secs(secs));
            assert_eq!(providers::paypal::parse_rfc3339(&text), Some(secs), "{text}");
        }
        assert_eq!(rfc3339(UnixMillis::from_secs(1_700_000_000)), "2023-11-14T22:13:20Z");
    }
}
