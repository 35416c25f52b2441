//! A source as the ingest path uses it: its provider, subscription, limits
//! and identity overrides, built once from config.

use std::sync::Arc;

use gatehouse_deliver::approval::{ApprovalGate, GateInput};
use gatehouse_deliver::route::EventTypes;
use sha2::{Digest, Sha256};

use gatehouse_core::{EventId, NewDelivery, Secret};
use gatehouse_verify::providers::paypal::CertificateCache;
use gatehouse_verify::{Identity, InboundRequest, Provider};

use crate::config::{FieldSource, RouteConfig, SourceConfig};

/// One inbound endpoint, ready to serve.
#[derive(Debug)]
pub struct Source {
    /// The name in `/in/{name}`.
    pub name: Arc<str>,
    /// How its requests are verified and identified.
    pub provider: Arc<dyn Provider>,
    /// Largest accepted body in bytes.
    pub body_limit: usize,
    /// Signer certificates this source's verifier has asked for (PayPal).
    pub certificates: CertificateCache,
    /// `rate_limit`, if set.
    pub rate_limit: Option<super::limit::RateLimit>,
    subscription: EventTypes,
    routes: Vec<(Arc<str>, EventTypes, Option<ApprovalGate>)>,
    dedup: Option<FieldSource>,
    event_type: Option<FieldSource>,
}

/// What ingest stores about a verified request's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Unique per source.
    pub dedup_key: String,
    /// The provider's id, when known.
    pub provider_event_id: Option<String>,
    /// The event type, when known.
    pub event_type: Option<String>,
}

impl Source {
    /// Builds a source, with the routes that take its events, from validated
    /// config. Errors are config errors validation should have caught.
    pub fn build(
        config: &SourceConfig,
        secrets: &[Secret],
        default_body_limit: u64,
        routes: &[&RouteConfig],
    ) -> Result<Self, String> {
        let context = gatehouse_verify::BuildContext::default();
        let provider = gatehouse_verify::build_with(
            gatehouse_verify::ProviderSpec {
                provider: &config.provider,
                secrets,
                tolerance: config.tolerance,
                options: &config.verify,
            },
            &context,
        )
        .map_err(|e| e.to_string())?;
        let subscription = EventTypes::new(&config.events)?;
        let routes = routes
            .iter()
            .map(|route| {
                Ok((
                    Arc::from(route.name.as_str()),
                    EventTypes::new(&route.events)?,
                    ApprovalGate::from_config(route).map_err(|issue| issue.to_string())?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let body_limit = config.body_limit.map(|b| b.0).unwrap_or(default_body_limit);
        Ok(Self {
            name: Arc::from(config.name.as_str()),
            provider,
            body_limit: usize::try_from(body_limit).unwrap_or(usize::MAX),
            certificates: context.certificates,
            rate_limit: config.rate_limit.map(super::limit::RateLimit::per_second),
            subscription,
            routes,
            dedup: config.dedup.clone(),
            event_type: config.event_type.clone(),
        })
    }

    /// Whether this source subscribes to `event_type`. Events without a type
    /// are only subscribed to by sources that take every type.
    pub fn subscribes_to(&self, event_type: Option<&str>) -> bool {
        self.subscription.matches(event_type)
    }

    /// One delivery per route that subscribes to `event_type`: pending, or
    /// awaiting approval where the route's gate holds this body.
    pub fn deliveries_for(&self, event_type: Option<&str>, body: &[u8]) -> Vec<NewDelivery> {
        let mut input = GateInput::new(body);
        self.routes
            .iter()
            .filter(|(_, events, _)| events.matches(event_type))
            .map(|(name, _, gate)| ApprovalGate::delivery(gate.as_ref(), name.clone(), &mut input))
            .collect()
    }

    /// Applies the source's overrides to what the provider found, and falls
    /// back to the SHA-256 of the raw body when nothing identifies the event
    /// (or to the new event's own id where equal bodies are distinct events).
    pub fn resolve(&self, request: &InboundRequest<'_>, identity: &Identity, id: EventId) -> Resolved {
        let event_type = match &self.event_type {
            Some(field) => extract(field, request),
            None => identity.event_type.clone(),
        };
        let provider_event_id = identity.provider_event_id.clone();
        let dedup_key = match &self.dedup {
            Some(field) if field.body_sha256 => None,
            Some(field) => extract(field, request),
            None => provider_event_id.clone(),
        }
        .unwrap_or_else(|| {
            if self.provider.same_body_is_same_event() {
                format!("sha256:{}", hex::encode(Sha256::digest(request.body)))
            } else {
                format!("unique:{id}")
            }
        });
        // Keys and types come from signed but sender-chosen text: bound them
        // so one odd event cannot exceed an index's row size and fail a
        // whole batch. A long key is replaced by its hash, which stays unique.
        let dedup_key = if dedup_key.len() > MAX_DEDUP_KEY {
            format!("sha256:{}", hex::encode(Sha256::digest(dedup_key.as_bytes())))
        } else {
            dedup_key
        };
        Resolved {
            dedup_key,
            provider_event_id: provider_event_id.map(|id| truncate(id, MAX_LABEL)),
            event_type: event_type.map(|t| truncate(t, MAX_LABEL)),
        }
    }
}

/// Longest dedup key stored as is.
const MAX_DEDUP_KEY: usize = 200;
/// Longest provider id or event type stored.
const MAX_LABEL: usize = 255;

/// Cuts `text` to at most `max` bytes on a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// Reads a configured header or JSON pointer; strings as they are, other
/// JSON values as their JSON text.
fn extract(field: &FieldSource, request: &InboundRequest<'_>) -> Option<String> {
    if let Some(header) = &field.header {
        return request.header(header).map(str::to_string);
    }
    let pointer = field.json_pointer.as_deref()?;
    let body: serde_json::Value = serde_json::from_slice(request.body).ok()?;
    match body.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_verify::VerifyOptions;

    fn source(dedup: Option<FieldSource>, events: &[&str]) -> Source {
        let config = SourceConfig {
            name: "s".into(),
            provider: "none".into(),
            secrets: vec![],
            tolerance: None,
            events: events.iter().map(|e| e.to_string()).collect(),
            body_limit: None,
            dedup,
            event_type: None,
            verify: VerifyOptions {
                insecure: true,
                ..Default::default()
            },
            api: None,
            backfill: None,
            retention: None,
            poll: None,
            rate_limit: None,
        };
        Source::build(&config, &[], 1024, &[]).unwrap()
    }

    fn resolve(source: &Source, headers: &http::HeaderMap, body: &[u8]) -> Resolved {
        let request = InboundRequest {
            method: &http::Method::POST,
            url: "http://x/in/s",
            headers,
            body,
        };
        source.resolve(&request, &source.provider.identify(&request), EventId::new())
    }

    #[test]
    fn dedup_key_comes_from_the_provider_then_overrides_then_the_body_hash() {
        let headers = http::HeaderMap::new();
        let plain = source(None, &["*"]);
        assert_eq!(resolve(&plain, &headers, br#"{"id":"evt_1"}"#).dedup_key, "evt_1");
        let hashed = resolve(&plain, &headers, b"no id here").dedup_key;
        assert_eq!(hashed, format!("sha256:{}", hex::encode(Sha256::digest(b"no id here"))));

        let by_pointer = source(
            Some(FieldSource {
                header: None,
                json_pointer: Some("/data/ref".into()),
                body_sha256: false,
            }),
            &["*"],
        );
        assert_eq!(
            resolve(&by_pointer, &headers, br#"{"id":"a","data":{"ref":7}}"#).dedup_key,
            "7"
        );

        let mut with_header = http::HeaderMap::new();
        with_header.insert("x-request-id", "req-9".parse().unwrap());
        let by_header = source(
            Some(FieldSource {
                header: Some("X-Request-Id".into()),
                json_pointer: None,
                body_sha256: false,
            }),
            &["*"],
        );
        assert_eq!(resolve(&by_header, &with_header, br#"{"id":"a"}"#).dedup_key, "req-9");
    }

    #[test]
    fn equal_dropbox_bodies_are_distinct_events() {
        let mut config = SourceConfig {
            name: "dropbox".into(),
            provider: "dropbox".into(),
            secrets: vec![],
            tolerance: None,
            events: vec!["*".into()],
            body_limit: None,
            dedup: None,
            event_type: None,
            verify: VerifyOptions::default(),
            api: None,
            backfill: None,
            retention: None,
            poll: None,
            rate_limit: None,
        };
        config.secrets = vec!["app-secret".into()];
        let dropbox = Source::build(&config, &[Secret::new("app-secret")], 1024, &[]).unwrap();
        let headers = http::HeaderMap::new();
        let body = br#"{"list_folder":{"accounts":["dbid:1"]}}"#;
        let first = resolve(&dropbox, &headers, body).dedup_key;
        let second = resolve(&dropbox, &headers, body).dedup_key;
        assert!(first.starts_with("unique:evt_"), "{first}");
        assert_ne!(first, second);
    }

    #[test]
    fn oversized_keys_are_hashed_and_labels_truncated() {
        let headers = http::HeaderMap::new();
        let long = "é".repeat(300);
        let body = format!(r#"{{"id":"{long}","type":"{long}"}}"#);
        let resolved = resolve(&source(None, &["*"]), &headers, body.as_bytes());
        assert!(resolved.dedup_key.starts_with("sha256:") && resolved.dedup_key.len() == 71);
        assert!(resolved.event_type.unwrap().len() <= MAX_LABEL);
        assert!(resolved.provider_event_id.unwrap().len() <= MAX_LABEL);
    }

    #[test]
    fn subscriptions_match_globs_and_untyped_events_only_match_everything() {
        let narrow = source(None, &["payment_intent.*", "charge.refunded"]);
        assert!(narrow.subscribes_to(Some("payment_intent.succeeded")));
        assert!(narrow.subscribes_to(Some("charge.refunded")));
        assert!(!narrow.subscribes_to(Some("charge.succeeded")));
        assert!(!narrow.subscribes_to(None));
        assert!(source(None, &["*"]).subscribes_to(None));
    }
}
