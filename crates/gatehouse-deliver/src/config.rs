//! Delivery config as plain data: `[[destinations]]`, `[[routes]]` and
//! `[delivery]`. The server's config loader reads and validates it; the
//! engine builds the running routes from it.

use std::time::Duration;

use serde::Deserialize;

use gatehouse_core::{units, RetryPolicy};

use crate::outcome::RetryRules;

/// `[[destinations]]`: where deliveries go.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Unique name that routes refer to.
    pub name: String,
    /// `http` or `exec`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `http`: the URL to send to.
    pub url: Option<String>,
    /// `http`: the method (default `POST`).
    pub method: Option<String>,
    /// `http`: extra headers sent with every request. Values may be
    /// `env:NAME` or `file:PATH` to keep credentials out of the file.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// `http`: original request headers to pass on by name (e.g.
    /// `x-request-id`). `content-type` is always passed on (or set to
    /// `application/json` for a transformed body); the `webhook-*` headers
    /// are gatehouse's own.
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// `http`: the Standard Webhooks secret (`whsec_…`, literal, `env:` or
    /// `file:`) gatehouse signs each request with, so the receiver can verify
    /// the gateway.
    pub secret: Option<String>,
    /// `exec`: the program and its arguments (never a shell string). The
    /// body goes to its stdin; `GATEHOUSE_EVENT_ID`, `GATEHOUSE_DELIVERY_ID`,
    /// `GATEHOUSE_SOURCE`, `GATEHOUSE_ROUTE`, `GATEHOUSE_EVENT_TYPE`,
    /// `GATEHOUSE_PROVIDER_EVENT_ID` and `GATEHOUSE_ATTEMPT` to its
    /// environment; exit status 0 is success, anything else is retried.
    #[serde(default)]
    pub command: Vec<String>,
    /// How long one attempt may take (default 30 s): for `http`,
    /// connecting, sending and the answer's status and first 4 KiB; for
    /// `exec`, the whole run (the command is killed after it).
    /// `delivery.lease` must be longer than every destination's timeout.
    #[serde(default, with = "units::option_duration")]
    pub timeout: Option<Duration>,
    /// Most attempts in flight at once to this destination (default 16).
    pub concurrency: Option<usize>,
    /// Most attempts per second to this destination (default unlimited).
    pub rate_limit: Option<u32>,
    /// `http`: a PEM file (relative to the config file) whose certificates
    /// are the only ones trusted for this destination's https:// URL: a
    /// private CA, or the receiver's own self-signed certificate. Default:
    /// the system's roots.
    pub ca_cert: Option<std::path::PathBuf>,
}

/// `[[routes]]`: which events of a source go to a destination, and how.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, shown in the console and used to pause the route.
    pub name: String,
    /// The source whose events it takes.
    pub source: String,
    /// The destination it delivers to.
    pub destination: String,
    /// Event-type globs this route subscribes to (default every type).
    #[serde(default = "every_event")]
    pub events: Vec<String>,
    /// A jq program run on the JSON body: the event is delivered only if
    /// its first output is neither `false` nor `null`; no output skips it
    /// too. A runtime error, or a body that is not JSON, makes the delivery
    /// dead with the reason (it is not retried).
    pub filter: Option<String>,
    /// A jq program whose first output replaces the body sent (as compact
    /// JSON, `content-type: application/json`, signed as sent). No output,
    /// a runtime error or a body that is not JSON makes the delivery dead.
    pub transform: Option<String>,
    /// Hold every delivery of this route until an operator approves or
    /// rejects it in the console, the API or the CLI.
    #[serde(default)]
    pub approval: bool,
    /// Hold only deliveries of events for which this jq program's first
    /// output is truthy, e.g. `.data.object.amount > 10000` for large
    /// refunds. A body that is not JSON, or a runtime error, holds the
    /// delivery too (the gate fails closed).
    pub approval_when: Option<String>,
    /// Fetch fresh data from the provider's API before each attempt and
    /// send it with the event (see [`crate::enrich`]).
    pub enrich: Option<crate::enrich::EnrichConfig>,
    /// The retry schedule.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Pause the route at every start: deliveries are created and held
    /// until `gatehouse resume <route>`. `false` resumes nothing: a route an
    /// operator paused stays paused.
    #[serde(default)]
    pub paused: bool,
}

/// `retry = { … }` on a route.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (default 15).
    pub max_attempts: Option<u32>,
    /// The first backoff ceiling (default 1 min).
    #[serde(default, with = "units::option_duration")]
    pub base: Option<Duration>,
    /// The largest backoff ceiling (default 24 h).
    #[serde(default, with = "units::option_duration")]
    pub cap: Option<Duration>,
    /// Also retry 3xx and 4xx answers other than 408 and 429 (default:
    /// dead at once).
    #[serde(default)]
    pub retry_client_errors: bool,
}

/// `[delivery]`: the workers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Run delivery workers in this process (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Attempts in flight at once across all destinations (default 256).
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// How long a claim holds before another process may take it over.
    #[serde(default = "default_lease", with = "units::duration")]
    pub lease: Duration,
    /// Polling fallback when no wake-up arrives.
    #[serde(default = "default_poll", with = "units::duration")]
    pub poll_interval: Duration,
    /// On shutdown, how long attempts already sending may take to finish
    /// before they are cut off and their deliveries released (default 10 s).
    #[serde(default = "default_grace", with = "units::duration")]
    pub shutdown_grace: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: default_workers(),
            lease: default_lease(),
            poll_interval: default_poll(),
            shutdown_grace: default_grace(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_workers() -> usize {
    256
}
fn default_lease() -> Duration {
    Duration::from_secs(60)
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_grace() -> Duration {
    Duration::from_secs(10)
}

fn every_event() -> Vec<String> {
    vec!["*".into()]
}

/// A config value that is not acceptable: the key (relative to its
/// `[[destinations]]` or `[[routes]]` table, dotted) and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigIssue {
    /// The key at fault, e.g. `url`, `filter`, `retry.base`.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigIssue {
    /// An issue with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The kinds of destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationKind {
    /// An HTTP request to a URL.
    Http,
    /// A command run with the event on stdin.
    Exec,
}

/// Headers gatehouse sets itself: neither configurable nor forwarded.
pub const RESERVED_HEADERS: [&str; 9] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-length",
    "transfer-encoding",
    "host",
    "connection",
    "upgrade",
    "te",
];

/// Whether `name` is usable as a destination or route name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_header_name(key: &str, name: &str) -> Result<(), ConfigIssue> {
    let parsed = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| ConfigIssue::new(key, format!("{name:?} is not a valid header name")))?;
    if RESERVED_HEADERS.contains(&parsed.as_str()) {
        return Err(ConfigIssue::new(
            key,
            format!("{name:?} is set by gatehouse itself and cannot be configured"),
        ));
    }
    Ok(())
}

impl DestinationConfig {
    /// The destination's kind, from `type`.
    pub fn kind(&self) -> Result<DestinationKind, ConfigIssue> {
        match self.kind.as_str() {
            "http" => Ok(DestinationKind::Http),
            "exec" => Ok(DestinationKind::Exec),
            other => Err(ConfigIssue::new(
                "type",
                format!("unknown destination type {other:?} (expected \"http\" or \"exec\")"),
            )),
        }
    }

    /// Checks what serde cannot, on this table alone (secrets and header
    /// values are checked when the destination is built from resolved values).
    pub fn check(&self) -> Result<(), ConfigIssue> {
        if !valid_name(&self.name) {
            return Err(ConfigIssue::new(
                "name",
                format!(
                    "{:?} is not a valid destination name (letters, digits, - and _ only)",
                    self.name
                ),
            ));
        }
        let only_http = |key: &str, set: bool| {
            if set {
                Err(ConfigIssue::new(key, "only http destinations use this key"))
            } else {
                Ok(())
            }
        };
        match self.kind()? {
            DestinationKind::Http => {
                let url = self
                    .url
                    .as_deref()
                    .ok_or_else(|| ConfigIssue::new("url", "an http destination needs a url"))?;
                check_url(url).map_err(|message| ConfigIssue::new("url", message))?;
                if let Some(method) = &self.method {
                    http::Method::from_bytes(method.as_bytes())
                        .map_err(|_| ConfigIssue::new("method", format!("{method:?} is not an HTTP method")))?;
                }
                if !self.command.is_empty() {
                    return Err(ConfigIssue::new("command", "only exec destinations run a command"));
                }
                for name in self.headers.keys() {
                    check_header_name("headers", name)?;
                }
                for name in &self.forward_headers {
                    check_header_name("forward_headers", name)?;
                }
            }
            DestinationKind::Exec => {
                if self.command.first().is_none_or(|program| program.is_empty()) {
                    return Err(ConfigIssue::new(
                        "command",
                        "an exec destination needs a command: the program and its arguments, e.g. [\"/usr/local/bin/on-event\", \"--verbose\"]",
                    ));
                }
                only_http("url", self.url.is_some())?;
                only_http("method", self.method.is_some())?;
                only_http("headers", !self.headers.is_empty())?;
                only_http("forward_headers", !self.forward_headers.is_empty())?;
                only_http("secret", self.secret.is_some())?;
                only_http("ca_cert", self.ca_cert.is_some())?;
            }
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigIssue::new("timeout", "must be longer than zero"));
        }
        if self.concurrency == Some(0) {
            return Err(ConfigIssue::new("concurrency", "must be at least 1"));
        }
        if self.rate_limit == Some(0) {
            return Err(ConfigIssue::new(
                "rate_limit",
                "must be at least 1 (attempts per second); leave it out for no limit",
            ));
        }
        Ok(())
    }
}

/// Checks an http destination's URL: http or https, a host, no credentials.
fn check_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("{url:?} is not a URL (expected e.g. https://orders.internal/webhooks)"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(format!("{url:?} must start with http:// or https://")),
    }
    let authority = uri.authority().ok_or_else(|| format!("{url:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err(
            "the url must not hold credentials; send them as a header instead (e.g. headers.authorization = \"env:ORDERS_TOKEN\")"
                .into(),
        );
    }
    if authority.host().is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(uri)
}

impl RouteConfig {
    /// Checks what serde cannot: the name, the globs, the jq programs and
    /// the retry schedule. Whether the source and destination exist is the
    /// caller's check (it knows the other tables).
    pub fn check(&self) -> Result<(), ConfigIssue> {
        self.check_and_compile().map(|_| ())
    }

    /// [`RouteConfig::check`], returning the compiled filter and transform.
    pub(crate) fn check_and_compile(
        &self,
    ) -> Result<(Option<crate::jq::Program>, Option<crate::jq::Program>), ConfigIssue> {
        if !valid_name(&self.name) {
            return Err(ConfigIssue::new(
                "name",
                format!(
                    "{:?} is not a valid route name (letters, digits, - and _ only)",
                    self.name
                ),
            ));
        }
        if self.events.is_empty() {
            return Err(ConfigIssue::new(
                "events",
                "list at least one event-type glob (\"*\" takes every type)",
            ));
        }
        crate::route::EventTypes::new(&self.events).map_err(|message| ConfigIssue::new("events", message))?;
        let compile = |key: &str, program: &Option<String>| {
            program
                .as_deref()
                .map(|text| crate::jq::compile(text).map_err(|message| ConfigIssue::new(key, message)))
                .transpose()
        };
        let filter = compile("filter", &self.filter)?;
        let transform = compile("transform", &self.transform)?;
        crate::approval::ApprovalGate::from_config(self)?;
        if let Some(enrich) = &self.enrich {
            enrich.check()?;
        }
        self.retry.check()?;
        Ok((filter, transform))
    }
}

impl RetryConfig {
    /// The schedule: the route's values over the defaults.
    pub fn policy(&self) -> RetryPolicy {
        let default = RetryPolicy::default();
        RetryPolicy {
            max_attempts: self.max_attempts.unwrap_or(default.max_attempts),
            base: self.base.unwrap_or(default.base),
            cap: self.cap.unwrap_or(default.cap),
        }
    }

    /// What is retried.
    pub fn rules(&self) -> RetryRules {
        RetryRules {
            retry_client_errors: self.retry_client_errors,
        }
    }

    fn check(&self) -> Result<(), ConfigIssue> {
        let policy = self.policy();
        if policy.max_attempts == 0 {
            return Err(ConfigIssue::new(
                "retry.max_attempts",
                "must be at least 1 (the first attempt counts)",
            ));
        }
        if policy.base.is_zero() {
            return Err(ConfigIssue::new("retry.base", "must be longer than zero"));
        }
        if policy.cap < policy.base {
            return Err(ConfigIssue::new(
                if self.cap.is_some() { "retry.cap" } else { "retry.base" },
                format!(
                    "the cap ({:?}) must not be shorter than the base ({:?})",
                    policy.cap, policy.base
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(text: &str) -> DestinationConfig {
        toml::from_str(text).expect("parses")
    }

    fn route(text: &str) -> RouteConfig {
        toml::from_str(text).expect("parses")
    }

    fn issue_key<T>(result: Result<T, ConfigIssue>) -> String {
        match result {
            Ok(_) => panic!("expected an issue"),
            Err(issue) => issue.key,
        }
    }

    #[test]
    fn destinations_are_checked_by_kind() {
        assert!(
            destination("name = \"a\"\ntype = \"http\"\nurl = \"https://x.test/hook\"")
                .check()
                .is_ok()
        );
        assert!(destination("name = \"a\"\ntype = \"exec\"\ncommand = [\"/bin/cat\"]")
            .check()
            .is_ok());
        let cases = [
            ("name = \"a b\"\ntype = \"http\"\nurl = \"https://x.test\"", "name"),
            ("name = \"a\"\ntype = \"queue\"", "type"),
            ("name = \"a\"\ntype = \"http\"", "url"),
            ("name = \"a\"\ntype = \"http\"\nurl = \"ftp://x.test\"", "url"),
            ("name = \"a\"\ntype = \"http\"\nurl = \"not a url\"", "url"),
            ("name = \"a\"\ntype = \"http\"\nurl = \"https://u:p@x.test\"", "url"),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"https://x.test\"\nmethod = \"G T\"",
                "method",
            ),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"https://x.test\"\nheaders = { \"webhook-id\" = \"x\" }",
                "headers",
            ),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"https://x.test\"\nforward_headers = [\"bad header\"]",
                "forward_headers",
            ),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"https://x.test\"\ntimeout = \"0s\"",
                "timeout",
            ),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"https://x.test\"\nconcurrency = 0",
                "concurrency",
            ),
            (
                "name = \"a\"\ntype = \"http\"\nurl = \"https://x.test\"\nrate_limit = 0",
                "rate_limit",
            ),
            ("name = \"a\"\ntype = \"exec\"\ncommand = []", "command"),
            ("name = \"a\"\ntype = \"exec\"\ncommand = [\"\"]", "command"),
            (
                "name = \"a\"\ntype = \"exec\"\ncommand = [\"/bin/cat\"]\nurl = \"https://x.test\"",
                "url",
            ),
            (
                "name = \"a\"\ntype = \"exec\"\ncommand = [\"/bin/cat\"]\nsecret = \"whsec_AQID\"",
                "secret",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(issue_key(destination(text).check()), key, "{text}");
        }
    }

    #[test]
    fn routes_are_checked() {
        let ok = route("name = \"r\"\nsource = \"s\"\ndestination = \"d\"\nfilter = \".type == \\\"x\\\"\"");
        assert!(ok.check().is_ok());
        let cases = [
            ("name = \"r!\"\nsource = \"s\"\ndestination = \"d\"", "name"),
            (
                "name = \"r\"\nsource = \"s\"\ndestination = \"d\"\nevents = []",
                "events",
            ),
            (
                "name = \"r\"\nsource = \"s\"\ndestination = \"d\"\nevents = [\"a[\"]",
                "events",
            ),
            (
                "name = \"r\"\nsource = \"s\"\ndestination = \"d\"\nfilter = \".a |\"",
                "filter",
            ),
            (
                "name = \"r\"\nsource = \"s\"\ndestination = \"d\"\ntransform = \"nope(1)\"",
                "transform",
            ),
            (
                "name = \"r\"\nsource = \"s\"\ndestination = \"d\"\nretry = { max_attempts = 0 }",
                "retry.max_attempts",
            ),
            (
                "name = \"r\"\nsource = \"s\"\ndestination = \"d\"\nretry = { base = \"0s\" }",
                "retry.base",
            ),
            (
                "name = \"r\"\nsource = \"s\"\ndestination = \"d\"\nretry = { base = \"2m\", cap = \"1m\" }",
                "retry.cap",
            ),
        ];
        for (text, key) in cases {
            assert_eq!(issue_key(route(text).check()), key, "{text}");
        }
    }

    #[test]
    fn retry_config_fills_in_defaults() {
        let retry: RetryConfig = toml::from_str("base = \"100ms\"\nretry_client_errors = true").expect("parses");
        let policy = retry.policy();
        assert_eq!(policy.base, Duration::from_millis(100));
        assert_eq!(policy.max_attempts, RetryPolicy::default().max_attempts);
        assert!(retry.rules().retry_client_errors);
        assert!(
            toml::from_str::<RetryConfig>("bse = \"1s\"").is_err(),
            "unknown keys are refused"
        );
    }
}
