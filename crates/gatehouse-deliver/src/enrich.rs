//! Enrichment: before an attempt, fetch fresh data for the event from the
//! provider's API (`enrich = { url = "https://api.stripe.com/v1/payment_intents/{{ .data.object.id }}" }`
//! on a route) and send it along with the event.
//!
//! The URL is a template whose `{{ … }}` placeholders are jq programs run on
//! the event's JSON body; their values are percent-encoded before they are
//! put in, so a payload can add path segments' worth of text but never
//! change the scheme, the host or the port. On top of that every rendered
//! URL is checked against the source's host allow-list before anything is
//! sent (defence in depth: the template's host is also checked when the
//! config loads). Plain `http` is allowed only to loopback hosts (tests,
//! sidecars); redirects are never followed; the response is capped and
//! must be JSON; the fetch has its own timeout.
//!
//! What goes out: `{"event": <what would otherwise be sent>, "fresh": <api
//! response>}`, or, with `into = "name"`, the event object with the
//! response added under that key. A failed fetch is an attempt failure like
//! any other: retried by the route's schedule when it may pass (timeouts,
//! 5xx, 429), dead at once when it cannot (4xx, a blocked host, a
//! placeholder with no value), and the fetch is stored with the delivery.

use crate::destination::http::{describe, status_text as status_name};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, USER_AGENT};
use http::Uri;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use tokio::time::Instant;

use gatehouse_core::units::ByteSize;
use gatehouse_core::{units, Secret};

use crate::config::ConfigIssue;
use crate::destination::http::HttpClient;
use crate::jq::{Input, Program};
use crate::outcome::{RetryRules, Verdict};

/// How long one fetch may take unless the route says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted unless the route says otherwise.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
/// Longest placeholder value put into a URL.
const MAX_VALUE_LEN: usize = 512;

/// `enrich = { … }` on a route.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichConfig {
    /// The URL to fetch, with `{{ jq }}` placeholders evaluated on the
    /// event's body (e.g. `{{ .data.object.id }}`), percent-encoded when
    /// put in. Placeholders may appear in the path and query only; the
    /// host must be in the source's `api.allow_hosts`.
    pub url: String,
    /// Credentials: `bearer <secret>`, where the secret is a literal,
    /// `env:NAME` or `file:PATH`; sent as `Authorization: Bearer …`.
    pub auth: Option<String>,
    /// Where the response goes: by default the body sent is
    /// `{"event": …, "fresh": …}`; with a key name, the event (which must
    /// be a JSON object) is sent with the response added under that key.
    /// The fetch happens after the route's filter (a skipped event costs
    /// nothing); "the event" is what would otherwise be sent: the raw body,
    /// or the transform's output. Placeholders always read the raw body.
    pub into: Option<String>,
    /// How long one fetch may take (default 10 s).
    #[serde(default, with = "units::option_duration")]
    pub timeout: Option<Duration>,
    /// Largest response accepted (default 1 MiB); a larger one fails the
    /// attempt for good.
    pub max_bytes: Option<ByteSize>,
}

impl EnrichConfig {
    /// Checks what can be checked without the source: the template (URL
    /// shape, jq placeholders), `auth`'s form, `into`, limits. Keys are
    /// relative to the route (`enrich.url`).
    pub fn check(&self) -> Result<Template, ConfigIssue> {
        let template = Template::parse(&self.url).map_err(|m| ConfigIssue::new("enrich.url", m))?;
        if let Some(auth) = &self.auth {
            auth_reference(auth).map_err(|m| ConfigIssue::new("enrich.auth", m))?;
        }
        if let Some(into) = &self.into {
            if into.is_empty() {
                return Err(ConfigIssue::new(
                    "enrich.into",
                    "name the key the response goes under, or leave `into` out for {\"event\": …, \"fresh\": …}",
                ));
            }
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigIssue::new("enrich.timeout", "must be longer than zero"));
        }
        if self.max_bytes.is_some_and(|b| b.0 == 0) {
            return Err(ConfigIssue::new("enrich.max_bytes", "must be at least 1 byte"));
        }
        Ok(template)
    }

    /// The fetch timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }
}

/// The secret reference in an `auth` value (`bearer env:STRIPE_KEY` →
/// `env:STRIPE_KEY`), for the server to resolve.
pub fn auth_reference(auth: &str) -> Result<&str, String> {
    let (scheme, reference) = auth.trim().split_once(char::is_whitespace).unwrap_or((auth.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") || reference.trim().is_empty() {
        return Err("expected \"bearer <secret>\", e.g. \"bearer env:STRIPE_KEY\"".into());
    }
    Ok(reference.trim())
}

/// One piece of a URL template.
#[derive(Debug)]
enum Part {
    Literal(String),
    Placeholder(Program),
}

/// A compiled URL template.
#[derive(Debug)]
pub struct Template {
    parts: Vec<Part>,
    scheme: String,
    /// `host` or `host:port`, lower-case, as written.
    authority: String,
    host: String,
}

impl Template {
    /// Parses `text`: literal text with `{{ jq }}` placeholders, which must
    /// compile and may only appear after the host.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let Some(length) = rest[start + 2..].find("}}") else {
                return Err(format!(
                    "{text:?}: a placeholder opened with {{{{ is never closed with }}}}"
                ));
            };
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let program = rest[start + 2..start + 2 + length].trim();
            let compiled = crate::jq::compile(program).map_err(|e| format!("placeholder {{{{ {program} }}}}: {e}"))?;
            parts.push(Part::Placeholder(compiled));
            rest = &rest[start + 2 + length + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        // The scheme and authority must be literal: everything up to the
        // first `/` after `://` comes from the first literal part.
        let head = match parts.first() {
            Some(Part::Literal(head)) => head.as_str(),
            _ => "",
        };
        let after_scheme = head.find("://").map(|i| i + 3);
        let has_placeholders = parts.iter().any(|part| matches!(part, Part::Placeholder(_)));
        let host_is_literal =
            !has_placeholders || after_scheme.is_some_and(|start| head[start..].contains(['/', '?', '#']));
        if !host_is_literal {
            return Err(format!(
                "{text:?}: the scheme and host must be written out, with placeholders only in the path or query \
                 (e.g. https://api.stripe.com/v1/payment_intents/{{{{ .data.object.id }}}})"
            ));
        }
        let sample: String = parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text.as_str(),
                Part::Placeholder(_) => "x",
            })
            .collect();
        let uri: Uri = sample
            .parse()
            .map_err(|_| format!("{text:?} is not a URL (expected e.g. https://api.stripe.com/v1/…)"))?;
        let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        if scheme != "https" && scheme != "http" {
            return Err(format!("{text:?} must start with https://"));
        }
        let authority = uri.authority().ok_or_else(|| format!("{text:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err("the url must not hold credentials; use auth = \"bearer env:NAME\"".into());
        }
        let host = authority.host().to_ascii_lowercase();
        if scheme == "http" && !is_loopback(&host) {
            return Err(format!(
                "{text:?}: plain http is allowed only to loopback hosts (127.0.0.1, localhost); use https://"
            ));
        }
        Ok(Self {
            parts,
            scheme,
            authority: authority.as_str().to_ascii_lowercase(),
            host,
        })
    }

    /// The host the template points at (lower-case, without the port).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The authority (`host` or `host:port`) the template points at.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Fills in the placeholders from `body`. The error says which
    /// placeholder had no usable value.
    pub fn render(&self, body: &[u8]) -> Result<String, String> {
        let mut input = None;
        let mut url = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => url.push_str(text),
                Part::Placeholder(program) => {
                    let input = match &input {
                        Some(input) => input,
                        None => input.insert(
                            Input::parse(body)
                                .map_err(|e| format!("the body is not JSON, so the url cannot be filled in: {e}"))?,
                        ),
                    };
                    let value = placeholder_value(program, input)?;
                    url.push_str(&percent_encode(&value));
                }
            }
        }
        Ok(url)
    }
}

/// A placeholder's value as text: strings as they are, numbers and booleans
/// as JSON; null, no output, objects and arrays are errors.
fn placeholder_value(program: &Program, input: &Input) -> Result<String, String> {
    let name = || format!("{{{{ {} }}}}", program.text());
    let output = program
        .first(input)
        .map_err(|e| format!("placeholder {}: {e}", name()))?
        .ok_or_else(|| format!("placeholder {} yielded nothing", name()))?;
    let value = match output.to_value() {
        serde_json::Value::String(text) => text,
        serde_json::Value::Number(number) => number.to_string(),
        serde_json::Value::Bool(flag) => flag.to_string(),
        serde_json::Value::Null => return Err(format!("placeholder {} is null: the event has no such field", name())),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
            return Err(format!("placeholder {} is not a string or number", name()))
        }
    };
    if value.is_empty() {
        return Err(format!("placeholder {} is empty", name()));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(format!("placeholder {} is longer than {MAX_VALUE_LEN} bytes", name()));
    }
    Ok(value)
}

/// Percent-encodes everything but RFC 3986's unreserved characters, so a
/// value can never add a `/`, `?`, `#`, `@` or `:` of its own.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether `host` is this machine.
pub fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

/// Whether `authority` (`host` or `host:port`) is on `allow_hosts`, whose
/// entries are a host (any port) or `host:port` (that port only).
pub fn host_allowed(authority: &str, allow_hosts: &[String]) -> bool {
    let authority = authority.to_ascii_lowercase();
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') => host,
        _ => authority.as_str(),
    };
    allow_hosts.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        entry == authority || entry == host
    })
}

/// Why a fetch failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnrichFailure {
    /// The template could not be filled in from this event.
    #[error("cannot build the url: {0}")]
    Template(String),
    /// The rendered URL points at a host the source does not allow.
    #[error("{0}")]
    Blocked(String),
    /// The API answered with a status other than 2xx.
    #[error("{url} answered {}", status_name(*status))]
    Status {
        /// The URL fetched.
        url: String,
        /// The status.
        status: u16,
    },
    /// No connection, or it broke.
    #[error("{url}: connection failed: {message}")]
    Connection {
        /// The URL fetched.
        url: String,
        /// What happened.
        message: String,
    },
    /// No complete answer within the timeout.
    #[error("{url}: no answer within {}", humanize(*limit))]
    TimedOut {
        /// The URL fetched.
        url: String,
        /// The timeout.
        limit: Duration,
    },
    /// The answer was larger than the cap.
    #[error("{url}: the response is larger than {limit} bytes")]
    TooLarge {
        /// The URL fetched.
        url: String,
        /// The cap.
        limit: u64,
    },
    /// The answer is not JSON (or `into` was set and the event is not an object).
    #[error("{0}")]
    NotJson(String),
}

/// `1.5s`, `10s`, `300ms`.
fn humanize(duration: Duration) -> String {
    if duration.as_millis() < 1000 {
        format!("{}ms", duration.as_millis())
    } else if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

impl EnrichFailure {
    /// Whether trying again later may succeed, and the reason to record.
    pub fn verdict(&self, rules: RetryRules) -> (Verdict, String) {
        let reason = format!("enrichment failed: {self}");
        let retry = Verdict::Retry { retry_after: None };
        let verdict = match self {
            EnrichFailure::Status { status, .. } => match status {
                408 | 429 | 500..=599 => retry,
                _ if rules.retry_client_errors => retry,
                _ => Verdict::Dead,
            },
            EnrichFailure::Connection { .. } | EnrichFailure::TimedOut { .. } => retry,
            EnrichFailure::Template(_)
            | EnrichFailure::Blocked(_)
            | EnrichFailure::TooLarge { .. }
            | EnrichFailure::NotJson(_) => Verdict::Dead,
        };
        (verdict, reason)
    }
}

/// What one fetch brought back, success or not: stored with the delivery.
#[derive(Clone, Debug)]
pub struct Fetched {
    /// The URL fetched (empty when it could not be built).
    pub url: String,
    /// The API's status, when it answered.
    pub status: Option<u16>,
    /// The response body (capped), or empty.
    pub body: Bytes,
    /// The failure, if any.
    pub failure: Option<EnrichFailure>,
}

/// The secret and allow-list of a route's enrichment, resolved by the
/// server (which reads `env:`/`file:` and the source's `api.allow_hosts`).
#[derive(Clone, Debug, Default)]
pub struct EnrichResolved {
    /// The bearer token, when `auth` is set.
    pub token: Option<Secret>,
    /// Hosts (or `host:port`) the URL may point at.
    pub allow_hosts: Vec<String>,
}

/// A route's enrichment, ready to fetch.
pub struct Enricher {
    template: Template,
    authorization: Option<HeaderValue>,
    allow_hosts: Vec<String>,
    into: Option<String>,
    timeout: Duration,
    max_bytes: u64,
    client: HttpClient,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("host", &self.template.authority)
            .field("allow_hosts", &self.allow_hosts)
            .field("authenticated", &self.authorization.is_some())
            .finish_non_exhaustive()
    }
}

impl Enricher {
    /// Builds a route's enrichment; the template's host must be allowed.
    pub fn build(config: &EnrichConfig, resolved: &EnrichResolved, client: HttpClient) -> Result<Self, ConfigIssue> {
        let template = config.check()?;
        if !host_allowed(template.authority(), &resolved.allow_hosts) {
            return Err(ConfigIssue::new(
                "enrich.url",
                format!(
                    "host {:?} is not in the source's api.allow_hosts ({})",
                    template.authority(),
                    if resolved.allow_hosts.is_empty() {
                        "empty".to_string()
                    } else {
                        resolved.allow_hosts.join(", ")
                    }
                ),
            ));
        }
        let authorization = match (&config.auth, &resolved.token) {
            (Some(_), Some(token)) => {
                let text = token
                    .expose_str()
                    .ok_or_else(|| ConfigIssue::new("enrich.auth", "the token is not text"))?;
                let mut value = HeaderValue::try_from(format!("Bearer {}", text.trim()))
                    .map_err(|_| ConfigIssue::new("enrich.auth", "the token cannot be sent in a header"))?;
                value.set_sensitive(true);
                Some(value)
            }
            (Some(_), None) => return Err(ConfigIssue::new("enrich.auth", "the token was not resolved")),
            (None, _) => None,
        };
        Ok(Self {
            template,
            authorization,
            allow_hosts: resolved.allow_hosts.clone(),
            into: config.into.clone(),
            timeout: config.timeout(),
            max_bytes: config.max_bytes.map(|b| b.0).unwrap_or(DEFAULT_MAX_BYTES),
            client,
        })
    }

    /// How long one fetch may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Renders the URL from the event's body and checks it: the scheme and
    /// authority are the template's, and on the allow-list.
    pub fn url_for(&self, body: &[u8]) -> Result<Uri, EnrichFailure> {
        let text = self.template.render(body).map_err(EnrichFailure::Template)?;
        let uri: Uri = text
            .parse()
            .map_err(|_| EnrichFailure::Template(format!("{text:?} is not a URL")))?;
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_ascii_lowercase())
            .unwrap_or_default();
        let scheme = uri.scheme_str().unwrap_or_default().to_ascii_lowercase();
        if authority != self.template.authority
            || scheme != self.template.scheme
            || !host_allowed(&authority, &self.allow_hosts)
        {
            return Err(EnrichFailure::Blocked(format!(
                "the url points at {authority:?}, which is not on the source's api.allow_hosts; nothing was fetched"
            )));
        }
        Ok(uri)
    }

    /// Fetches the URL for the event with `body`. Never fails: a failure is
    /// in [`Fetched::failure`].
    pub async fn fetch(&self, body: &[u8]) -> Fetched {
        let uri = match self.url_for(body) {
            Ok(uri) => uri,
            Err(failure) => {
                return Fetched {
                    url: String::new(),
                    status: None,
                    body: Bytes::new(),
                    failure: Some(failure),
                }
            }
        };
        let url = uri.to_string();
        let fetched = |status, body, failure| Fetched {
            url: url.clone(),
            status,
            body,
            failure,
        };
        let mut request = http::Request::get(uri);
        if let Some(headers) = request.headers_mut() {
            headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
            headers.insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("gatehouse/", env!("CARGO_PKG_VERSION"))),
            );
            if let Some(authorization) = &self.authorization {
                headers.insert(AUTHORIZATION, authorization.clone());
            }
        }
        let request = match request.body(Full::new(Bytes::new())) {
            Ok(request) => request,
            Err(error) => return fetched(None, Bytes::new(), Some(EnrichFailure::Template(error.to_string()))),
        };
        let deadline = Instant::now() + self.timeout;
        let timed_out = || EnrichFailure::TimedOut {
            url: url.clone(),
            limit: self.timeout,
        };
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_) => return fetched(None, Bytes::new(), Some(timed_out())),
            Ok(Err(error)) => {
                return fetched(
                    None,
                    Bytes::new(),
                    Some(EnrichFailure::Connection {
                        url: url.clone(),
                        message: describe(&error),
                    }),
                )
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let mut incoming = response.into_body();
        let mut collected = BytesMut::new();
        let mut too_large = false;
        loop {
            match tokio::time::timeout_at(deadline, incoming.frame()).await {
                Err(_) => return fetched(Some(status), collected.freeze(), Some(timed_out())),
                Ok(None) => break,
                Ok(Some(Err(error))) => {
                    return fetched(
                        Some(status),
                        collected.freeze(),
                        Some(EnrichFailure::Connection {
                            url: url.clone(),
                            message: error.to_string(),
                        }),
                    )
                }
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if (collected.len() + data.len()) as u64 > self.max_bytes {
                            let room = (self.max_bytes as usize).saturating_sub(collected.len());
                            collected.extend_from_slice(&data[..room.min(data.len())]);
                            too_large = true;
                            break;
                        }
                        collected.extend_from_slice(&data);
                    }
                }
            }
        }
        // Dropping an unfinished body closes the connection instead of
        // reading the rest of an oversized answer.
        drop(incoming);
        let body = collected.freeze();
        let failure = if !(200..300).contains(&status) {
            Some(EnrichFailure::Status {
                url: url.clone(),
                status,
            })
        } else if too_large {
            Some(EnrichFailure::TooLarge {
                url: url.clone(),
                limit: self.max_bytes,
            })
        } else if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
            Some(EnrichFailure::NotJson(format!(
                "{url} answered with a body that is not JSON"
            )))
        } else {
            None
        };
        fetched(Some(status), body, failure)
    }

    /// The body to send: `event` (the raw body or the transform's output)
    /// with the fresh response, as configured.
    pub fn combine(&self, event: &[u8], fresh: &[u8]) -> Result<Bytes, EnrichFailure> {
        let fresh: serde_json::Value =
            serde_json::from_slice(fresh).map_err(|_| EnrichFailure::NotJson("the API's answer is not JSON".into()))?;
        let event: serde_json::Value = serde_json::from_slice(event).map_err(|_| {
            EnrichFailure::NotJson("the event is not JSON, so the fresh data cannot be added to it".into())
        })?;
        let combined = match &self.into {
            None => serde_json::json!({ "event": event, "fresh": fresh }),
            Some(key) => match event {
                serde_json::Value::Object(mut object) => {
                    object.insert(key.clone(), fresh);
                    serde_json::Value::Object(object)
                }
                _ => {
                    return Err(EnrichFailure::NotJson(format!(
                        "the event is not a JSON object, so the fresh data cannot go under {key:?}"
                    )))
                }
            },
        };
        Ok(Bytes::from(combined.to_string()))
    }
}

/// Fetches for one attempt, stores the fetch with the delivery, and returns
/// the body to send, or the report that ends the attempt. `event` is the
/// raw body (placeholders read it); `sending` is what would be sent
/// without enrichment (the raw body or the transform's output).
pub(crate) async fn fetch_and_combine(
    store: &dyn gatehouse_store::Store,
    delivery_id: gatehouse_core::DeliveryId,
    enricher: &Enricher,
    event: &Bytes,
    sending: &Bytes,
) -> Result<Bytes, crate::destination::Report> {
    let fetched_at = gatehouse_core::UnixMillis::now();
    let fetched = enricher.fetch(event).await;
    let combined = match &fetched.failure {
        Some(failure) => Err(failure.clone()),
        None => enricher.combine(sending, &fetched.body),
    };
    let record = gatehouse_store::Enrichment {
        delivery_id,
        fetched_at,
        url: fetched.url.clone(),
        status_code: fetched.status.map(i32::from),
        body: fetched.body.clone(),
        error: combined.as_ref().err().map(ToString::to_string),
    };
    // The fetch is kept for the console; failing to keep it must not
    // hold up (or fail) the delivery itself.
    if let Err(error) = store.save_enrichment(record).await {
        tracing::warn!(%delivery_id, %error, "Cannot store the enrichment fetch; delivering anyway.");
    }
    combined.map_err(|failure| {
        let excerpt = fetched
            .body
            .slice(..fetched.body.len().min(crate::destination::EXCERPT_LIMIT));
        crate::destination::Report {
            result: crate::outcome::AttemptResult::Enrichment(failure),
            status_code: None,
            headers: Vec::new(),
            excerpt,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_compile_placeholders_and_keep_the_host_literal() {
        let template = Template::parse("https://api.stripe.com/v1/payment_intents/{{ .data.object.id }}?expand[]=x")
            .expect("template");
        assert_eq!(template.authority(), "api.stripe.com");
        let body = br#"{"data":{"object":{"id":"pi_1/../../evil?x=1#@other.host"}}}"#;
        let url = template.render(body).expect("render");
        assert_eq!(
            url,
            "https://api.stripe.com/v1/payment_intents/pi_1%2F..%2F..%2Fevil%3Fx%3D1%23%40other.host?expand[]=x"
        );
        let missing = template.render(br#"{"data":{}}"#).expect_err("missing");
        assert!(missing.contains("is null"), "{missing}");
        assert!(template.render(b"not json").is_err());

        for bad in [
            "https://{{ .host }}/v1/x",
            "https://api.stripe.com{{ .path }}",
            "ftp://api.stripe.com/x",
            "http://api.stripe.com/x",
            "https://api.stripe.com/v1/{{ .a | }}",
            "https://api.stripe.com/v1/{{ .a ",
            "https://user:pw@api.stripe.com/v1/x",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
        assert!(Template::parse("http://127.0.0.1:9/v1/{{ .id }}").is_ok());
    }

    #[test]
    fn allow_lists_match_hosts_and_ports() {
        let allow = vec!["api.stripe.com".to_string(), "127.0.0.1:8080".to_string()];
        assert!(host_allowed("api.stripe.com", &allow));
        assert!(host_allowed("API.stripe.com:443", &allow));
        assert!(host_allowed("127.0.0.1:8080", &allow));
        assert!(!host_allowed("127.0.0.1:8081", &allow));
        assert!(!host_allowed("evil.com", &allow));
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("[::1]"));
        assert!(!is_loopback("10.0.0.1"));
    }

    #[test]
    fn failures_are_classified() {
        let rules = RetryRules::default();
        let status = |status| EnrichFailure::Status {
            url: "https://x/".into(),
            status,
        };
        assert_eq!(status(404).verdict(rules).0, Verdict::Dead);
        assert!(status(404).verdict(rules).1.contains("HTTP 404 Not Found"));
        assert_eq!(status(503).verdict(rules).0, Verdict::Retry { retry_after: None });
        assert_eq!(EnrichFailure::Blocked("x".into()).verdict(rules).0, Verdict::Dead);
        assert_eq!(
            auth_reference("bearer env:STRIPE_KEY").expect("bearer"),
            "env:STRIPE_KEY"
        );
        assert!(auth_reference("basic x").is_err());
        assert!(auth_reference("bearer").is_err());
    }

    /// A server on 127.0.0.1:0 answering by path: `/big` 2 KiB, `/moved`
    /// a redirect, `/slow` after 2 s, `/html` not JSON, else JSON echoing
    /// the path and the authorization header.
    async fn api() -> String {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        let path = request.uri().path().to_string();
                        let auth = request
                            .headers()
                            .get(AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let response = http::Response::builder();
                        let response = match path.as_str() {
                            "/big" => response.body(Full::new(Bytes::from(format!("\"{}\"", "x".repeat(2048))))),
                            "/moved" => response
                                .status(302)
                                .header("location", "http://169.254.169.254/latest/meta-data")
                                .body(Full::new(Bytes::new())),
                            "/slow" => {
                                tokio::time::sleep(Duration::from_secs(2)).await;
                                response.body(Full::new(Bytes::from_static(b"{}")))
                            }
                            "/html" => response.body(Full::new(Bytes::from_static(b"<html>"))),
                            _ => response.body(Full::new(Bytes::from(
                                serde_json::json!({"path": path, "auth": auth}).to_string(),
                            ))),
                        };
                        Ok::<_, std::convert::Infallible>(response.expect("response"))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        base
    }

    fn enricher(base: &str, path: &str, extra: &str) -> Enricher {
        let config: EnrichConfig = toml::from_str(&format!(
            "url = \"{base}{path}\"\nauth = \"bearer k\"\ntimeout = \"300ms\"\nmax_bytes = 1024\n{extra}"
        ))
        .expect("config");
        let authority = base.trim_start_matches("http://").to_string();
        let resolved = EnrichResolved {
            token: Some(Secret::new("sk_1")),
            allow_hosts: vec![authority],
        };
        Enricher::build(&config, &resolved, crate::destination::http::client().expect("client")).expect("builds")
    }

    #[tokio::test]
    async fn fetches_are_capped_timed_and_never_redirected() {
        let base = api().await;
        let event = br#"{"data":{"object":{"id":"pi 1/2"}}}"#;

        let ok = enricher(&base, "/v1/pi/{{ .data.object.id }}", "").fetch(event).await;
        assert_eq!(ok.failure, None);
        assert_eq!(ok.url, format!("{base}/v1/pi/pi%201%2F2"));
        let fresh: serde_json::Value = serde_json::from_slice(&ok.body).expect("json");
        assert_eq!(fresh["path"], "/v1/pi/pi%201%2F2");
        assert_eq!(fresh["auth"], "Bearer sk_1");

        let big = enricher(&base, "/big", "").fetch(event).await;
        assert!(
            matches!(big.failure, Some(EnrichFailure::TooLarge { limit: 1024, .. })),
            "{big:?}"
        );
        assert!(big.body.len() <= 1024);

        let moved = enricher(&base, "/moved", "").fetch(event).await;
        assert!(
            matches!(moved.failure, Some(EnrichFailure::Status { status: 302, .. })),
            "{moved:?}"
        );
        let (verdict, reason) = moved.failure.expect("failure").verdict(RetryRules::default());
        assert_eq!(verdict, Verdict::Dead, "{reason}");

        let slow = enricher(&base, "/slow", "").fetch(event).await;
        assert!(matches!(slow.failure, Some(EnrichFailure::TimedOut { .. })), "{slow:?}");
        assert_eq!(
            slow.failure.expect("failure").verdict(RetryRules::default()).0,
            Verdict::Retry { retry_after: None }
        );

        let html = enricher(&base, "/html", "").fetch(event).await;
        assert!(matches!(html.failure, Some(EnrichFailure::NotJson(_))), "{html:?}");

        let into = enricher(&base, "/v1/x", "into = \"fresh_data\"");
        let combined = into.combine(br#"{"id":"evt_1"}"#, br#"{"a":1}"#).expect("combined");
        let combined: serde_json::Value = serde_json::from_slice(&combined).expect("json");
        assert_eq!(combined, serde_json::json!({"id": "evt_1", "fresh_data": {"a": 1}}));
        assert!(into.combine(b"[1]", b"{}").is_err(), "into needs an object");

        let denied = EnrichResolved {
            token: None,
            allow_hosts: vec!["api.stripe.com".into()],
        };
        let config: EnrichConfig = toml::from_str(&format!("url = \"{base}/x\"")).expect("config");
        let error = Enricher::build(&config, &denied, crate::destination::http::client().expect("client"))
            .expect_err("not allowed");
        assert_eq!(error.key, "enrich.url");
    }
}
