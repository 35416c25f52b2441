//! Polling sources: for APIs without webhooks, gatehouse fetches a list
//! every `interval` and turns each new or changed item into an event, which
//! then goes through the same store, dedup and routes as a pushed one.
//!
//! ```toml
//! [[sources]]
//! name = "tickets"
//! provider = "poll"
//! poll = { url = "https://api.example.com/tickets", interval = "1m",
//!          auth = "bearer env:TICKETS_TOKEN", items = ".data[]", id = ".id",
//!          version = ".updated_at" }
//! ```
//!
//! - An item's dedup key is its `id`, or `id@version` when `version` is
//!   set, so an item whose version changed is a new event and an unchanged
//!   one never is (across restarts too: the events table is the memory).
//!   Keys already stored are skipped before ingest, so a poll repeated
//!   after a crash counts no duplicate arrivals.
//! - The event type is the `type` program's output when set, else
//!   `item.created` for an id not seen in the previous answer and
//!   `item.updated` for one that was.
//! - `ETag` and `Last-Modified` are sent back (`If-None-Match`,
//!   `If-Modified-Since`); a 304 costs nothing. They and the last answer's
//!   item versions are kept in the store's source state, so they survive
//!   restarts.
//! - A timeout, a connection error, a non-2xx answer (401 included), a body
//!   that is not JSON or is too large, or a failing jq program is logged
//!   and retried with exponential backoff; nothing is ingested from a bad
//!   answer, and the poller never stops.
//!
//! `/in/{source}` does not exist for a poll source: nothing can be pushed
//! to it.

mod fetch;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use gatehouse_core::units::{self, ByteSize};
use gatehouse_core::{Disposition, EventId, EventOrigin, Header, NewEvent, UnixMillis};
use gatehouse_deliver::approval::{ApprovalGate, GateInput};
use gatehouse_deliver::jq::{self, Program};
use gatehouse_deliver::route::EventTypes;
use gatehouse_store::{IngestOutcome, Store};

use crate::config::{Config, SourceConfig};

pub use fetch::FetchError;

/// The `provider` value of a polling source.
pub const PROVIDER: &str = "poll";

/// The source-state key a poller keeps its [`PollState`] under.
const STATE_KEY: &str = "poll";
/// Default time between polls.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default time one poll (request and body) may take.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest answer read.
const DEFAULT_MAX_BODY: u64 = 10 * 1024 * 1024;
/// The longest wait between polls after repeated errors (unless the
/// interval itself is longer).
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// Events committed per ingest call.
const INGEST_CHUNK: usize = 500;
/// Item versions remembered (to tell created from updated).
const MAX_REMEMBERED: usize = 50_000;
/// Longest dedup key stored as is (as for pushed events).
const MAX_DEDUP_KEY: usize = 200;

/// `poll = { … }` on a `provider = "poll"` source.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollConfig {
    /// The list to fetch with `GET` (https, or http).
    pub url: String,
    /// Time between polls (default 1 m, at least 1 s).
    #[serde(default = "default_interval", with = "units::duration")]
    pub interval: Duration,
    /// The credential: `bearer <secret>` (`Authorization: Bearer …`) or
    /// `header <Name> <secret>`; `<secret>` is a literal, `env:NAME` or
    /// `file:PATH`.
    pub auth: Option<String>,
    /// jq program giving the items, e.g. `.data[]`.
    pub items: String,
    /// jq program giving an item's id (a string or a number), e.g. `.id`.
    pub id: String,
    /// jq program giving an item's version, e.g. `.updated_at`: a changed
    /// version is a new event.
    pub version: Option<String>,
    /// jq program giving an item's event type, e.g. `"ticket." + .status`.
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// Time one poll may take (default 10 s).
    #[serde(default, with = "units::option_duration")]
    pub timeout: Option<Duration>,
    /// Largest answer read (default 10 MiB); a larger one is an error.
    pub max_body: Option<ByteSize>,
}

fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}

/// How a poll request authenticates.
#[derive(Clone)]
struct Auth {
    name: HeaderName,
    value: HeaderValue,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The value is a credential.
        f.debug_struct("Auth").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Parses and resolves `auth`: `bearer <secret>` or `header <Name> <secret>`.
fn parse_auth(text: &str, base_dir: &Path) -> Result<Auth, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let (name, prefix, reference) = match words.as_slice() {
        [kind, reference] if kind.eq_ignore_ascii_case("bearer") => {
            (http::header::AUTHORIZATION, "Bearer ", *reference)
        }
        [kind, name, reference] if kind.eq_ignore_ascii_case("header") => {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
            (name, "", *reference)
        }
        _ => {
            return Err(
                "expected \"bearer <secret>\" or \"header <Name> <secret>\" (secret: literal, env:NAME or file:PATH)"
                    .into(),
            )
        }
    };
    let secret = crate::config::resolve_secret(reference, base_dir)?;
    let mut value = prefix.as_bytes().to_vec();
    value.extend_from_slice(secret.expose());
    let mut value = HeaderValue::from_bytes(&value).map_err(|_| "the secret cannot be sent in a header".to_string())?;
    value.set_sensitive(true);
    Ok(Auth { name, value })
}

/// Checks a source's `provider = "poll"` settings, or refuses `poll` on
/// any other source. Errors name the key under the source (`poll.url`).
pub fn check_source(source: &SourceConfig, base_dir: &Path) -> Result<(), (String, String)> {
    if source.provider != PROVIDER {
        return match source.poll {
            Some(_) => Err(("poll".into(), format!("poll settings need provider = \"{PROVIDER}\""))),
            None => Ok(()),
        };
    }
    let Some(poll) = &source.poll else {
        return Err((
            "poll".into(),
            "provider \"poll\" needs poll = { url = \"…\", items = \"…\", id = \"…\" }".into(),
        ));
    };
    if !source.secrets.is_empty() {
        return Err((
            "secrets".into(),
            "a poll source verifies nothing; put the API credential in poll.auth".into(),
        ));
    }
    if source.dedup.is_some() {
        return Err((
            "dedup".into(),
            "a poll source's dedup key is its poll.id (and poll.version)".into(),
        ));
    }
    check_url(&poll.url).map_err(|message| ("poll.url".to_string(), message))?;
    if poll.interval < Duration::from_secs(1) {
        return Err(("poll.interval".into(), "must be at least 1s".into()));
    }
    if poll.timeout.is_some_and(|t| t.is_zero()) {
        return Err(("poll.timeout".into(), "must be longer than zero".into()));
    }
    if poll.max_body.is_some_and(|b| b.0 == 0) {
        return Err(("poll.max_body".into(), "must be at least 1 byte".into()));
    }
    for (key, program) in [
        ("poll.items", Some(&poll.items)),
        ("poll.id", Some(&poll.id)),
        ("poll.version", poll.version.as_ref()),
        ("poll.type", poll.event_type.as_ref()),
    ] {
        if let Some(program) = program {
            jq::compile(program).map_err(|message| (key.to_string(), message))?;
        }
    }
    if let Some(auth) = &poll.auth {
        parse_auth(auth, base_dir).map_err(|message| ("poll.auth".to_string(), message))?;
    }
    Ok(())
}

fn check_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("{url:?} is not a URL (expected e.g. https://api.example.com/items)"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err(format!("{url:?} must be an http:// or https:// URL with a host")),
    }
}

/// What a poller remembers between polls and across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PollState {
    /// The URL the validators below belong to (a changed URL drops them).
    #[serde(default)]
    url: String,
    /// The last answer's `ETag`.
    #[serde(default)]
    etag: Option<String>,
    /// The last answer's `Last-Modified`.
    #[serde(default)]
    last_modified: Option<String>,
    /// Each item id of the last answer and its version ("" without one).
    #[serde(default)]
    versions: BTreeMap<String, String>,
}

/// What one poll found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollReport {
    /// The answer was 304 Not Modified.
    pub not_modified: bool,
    /// Items in the answer.
    pub items: usize,
    /// Items skipped because their id was missing or not a string/number.
    pub skipped: usize,
    /// Events stored.
    pub stored: usize,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// The request or its answer failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The answer is not JSON.
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    /// A jq program failed on the answer.
    #[error("{key} failed: {message}")]
    Program {
        /// Which program.
        key: &'static str,
        /// Its error.
        message: String,
    },
    /// The store refused (it is down); the items are polled again later.
    #[error("storage: {0}")]
    Store(#[from] gatehouse_store::StoreError),
}

impl PollError {
    /// How long the server asked us to wait (429/503 `Retry-After`).
    fn retry_after(&self) -> Option<Duration> {
        match self {
            PollError::Fetch(error) => error.retry_after(),
            _ => None,
        }
    }
}

/// One polling source, ready to run.
pub struct Poller {
    source: Arc<str>,
    url: http::Uri,
    /// `scheme://host/path` without the query (which may hold a key), for
    /// the events' `verification` and the logs.
    display_url: String,
    auth: Option<Auth>,
    items: Program,
    id: Program,
    version: Option<Program>,
    event_type: Option<Program>,
    interval: Duration,
    timeout: Duration,
    max_body: usize,
    subscription: EventTypes,
    routes: Vec<(Arc<str>, EventTypes, Option<ApprovalGate>)>,
    client: gatehouse_deliver::destination::http::HttpClient,
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("source", &self.source)
            .field("url", &self.display_url)
            .finish_non_exhaustive()
    }
}

impl Poller {
    /// Builds the poller of a validated `provider = "poll"` source.
    pub fn build(config: &Config, source: &SourceConfig, store: Arc<dyn Store>) -> Result<Self, String> {
        let poll = source.poll.as_ref().ok_or("no poll settings")?;
        let base_dir = config.origin.parent().unwrap_or(Path::new("."));
        let url = check_url(&poll.url)?;
        let display_url = format!(
            "{}://{}{}",
            url.scheme_str().unwrap_or("http"),
            url.authority().map(|a| a.as_str()).unwrap_or(""),
            url.path()
        );
        let routes = config
            .file
            .routes
            .iter()
            .filter(|route| route.source == source.name)
            .map(|route| {
                Ok((
                    Arc::from(route.name.as_str()),
                    EventTypes::new(&route.events)?,
                    ApprovalGate::from_config(route).map_err(|issue| issue.to_string())?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            source: Arc::from(source.name.as_str()),
            url,
            display_url,
            auth: poll.auth.as_deref().map(|a| parse_auth(a, base_dir)).transpose()?,
            items: jq::compile(&poll.items)?,
            id: jq::compile(&poll.id)?,
            version: poll.version.as_deref().map(jq::compile).transpose()?,
            event_type: poll.event_type.as_deref().map(jq::compile).transpose()?,
            interval: poll.interval,
            timeout: poll.timeout.unwrap_or(DEFAULT_TIMEOUT),
            max_body: usize::try_from(poll.max_body.map_or(DEFAULT_MAX_BODY, |b| b.0)).unwrap_or(usize::MAX),
            subscription: EventTypes::new(&source.events)?,
            routes,
            client: gatehouse_deliver::destination::http::client()?,
            store,
        })
    }

    /// Polls until `stop` turns true: at once, then every `interval`, or
    /// later with backoff after errors.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut state: Option<PollState> = None;
        let mut failures: u32 = 0;
        loop {
            let result = tokio::select! {
                result = self.poll_with_state(&mut state) => result,
                _ = stop.changed() => return,
            };
            let delay = match result {
                Ok(report) => {
                    failures = 0;
                    if report.stored > 0 || report.skipped > 0 {
                        tracing::info!(
                            source = %self.source,
                            items = report.items,
                            stored = report.stored,
                            skipped = report.skipped,
                            "Polled."
                        );
                    } else {
                        tracing::debug!(source = %self.source, not_modified = report.not_modified, "Polled: nothing new.");
                    }
                    self.interval
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(self.interval, failures, error.retry_after());
                    tracing::warn!(
                        source = %self.source,
                        url = %self.display_url,
                        %error,
                        failures,
                        retry_in = ?delay,
                        "Poll failed; retrying with backoff."
                    );
                    delay
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Loads the saved state on first use (a store error leaves it unloaded
    /// for the next try), then polls once.
    async fn poll_with_state(&self, state: &mut Option<PollState>) -> Result<PollReport, PollError> {
        let loaded = match state.take() {
            Some(state) => state,
            None => {
                let saved = self.store.source_state(&self.source, STATE_KEY).await?;
                let mut loaded: PollState = saved
                    .as_deref()
                    .and_then(|text| serde_json::from_str(text).ok())
                    .unwrap_or_default();
                if loaded.url != self.url.to_string() {
                    // Validators of another URL mean nothing here.
                    loaded.etag = None;
                    loaded.last_modified = None;
                    loaded.url = self.url.to_string();
                }
                loaded
            }
        };
        let current = state.insert(loaded);
        self.poll_once(current).await
    }

    /// Fetches the list once and stores what is new. `state` is updated
    /// (and saved) only after the new items are committed.
    async fn poll_once(&self, state: &mut PollState) -> Result<PollReport, PollError> {
        let answer = fetch::get(
            &self.client,
            &self.url,
            self.auth.as_ref().map(|a| (&a.name, &a.value)),
            state.etag.as_deref(),
            state.last_modified.as_deref(),
            self.timeout,
            self.max_body,
        )
        .await?;
        let Some(body) = answer.body else {
            return Ok(PollReport {
                not_modified: true,
                ..PollReport::default()
            });
        };
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| PollError::NotJson(e.to_string()))?;
        let items = self.items.run(&value).map_err(|message| PollError::Program {
            key: "poll.items",
            message,
        })?;
        let mut report = PollReport {
            items: items.len(),
            ..PollReport::default()
        };

        // Each item's key, first occurrence only.
        let mut candidates = Vec::new();
        let mut versions = BTreeMap::new();
        let mut keys_seen = HashSet::new();
        for item in items {
            let Some(id) = self.label(&self.id, &item, "poll.id")? else {
                report.skipped += 1;
                continue;
            };
            let version = match &self.version {
                Some(program) => self.label(program, &item, "poll.version")?,
                None => None,
            };
            let key = match &version {
                Some(version) => format!("{id}@{version}"),
                None => id.clone(),
            };
            // Keys are sender-chosen text: bound them as pushed keys are.
            let key = if key.len() > MAX_DEDUP_KEY {
                format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
            } else {
                key
            };
            if !keys_seen.insert(key.clone()) {
                continue;
            }
            if versions.len() < MAX_REMEMBERED {
                versions.insert(id.clone(), version.clone().unwrap_or_default());
            }
            candidates.push((key, id, item));
        }

        // Keys already stored (earlier polls, before a restart) are not
        // ingested again, so they are not even counted as duplicates.
        let mut stored_keys = HashSet::new();
        for chunk in candidates.chunks(INGEST_CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|(key, _, _)| key.clone()).collect();
            stored_keys.extend(self.store.existing_dedup_keys(&self.source, &keys).await?);
        }
        let now = UnixMillis::now();
        let mut events = Vec::new();
        for (key, id, item) in candidates {
            if stored_keys.contains(&key) {
                continue;
            }
            let event_type = match &self.event_type {
                Some(program) => self.label(program, &item, "poll.type")?,
                None if state.versions.contains_key(&id) => Some("item.updated".to_string()),
                None => Some("item.created".to_string()),
            };
            events.push(self.event(key, id, event_type, &item, now));
        }
        for chunk in events.chunks(INGEST_CHUNK) {
            let outcomes = self.store.ingest(chunk.to_vec()).await?;
            report.stored += outcomes.iter().filter(|o| **o == IngestOutcome::Stored).count();
        }

        state.etag = answer.etag;
        state.last_modified = answer.last_modified;
        state.versions = versions;
        let text = serde_json::to_string(&*state).map_err(|e| PollError::NotJson(e.to_string()))?;
        self.store.put_source_state(&self.source, STATE_KEY, &text).await?;
        Ok(report)
    }

    /// A program's first output on an item as a label: strings as they
    /// are, numbers and booleans as their JSON text; `None` for null or no
    /// output. Arrays and objects are not labels.
    fn label(
        &self,
        program: &Program,
        item: &serde_json::Value,
        key: &'static str,
    ) -> Result<Option<String>, PollError> {
        let outputs = program
            .run(item)
            .map_err(|message| PollError::Program { key, message })?;
        Ok(match outputs.into_iter().next() {
            Some(serde_json::Value::String(text)) if !text.is_empty() => Some(text),
            Some(value @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Some(value.to_string()),
            _ => None,
        })
    }

    /// The event for one new or changed item.
    fn event(
        &self,
        dedup_key: String,
        id: String,
        event_type: Option<String>,
        item: &serde_json::Value,
        now: UnixMillis,
    ) -> NewEvent {
        // Serialising a JSON value cannot fail.
        let body = Bytes::from(serde_json::to_vec(item).unwrap_or_default());
        let subscribed = self.subscription.matches(event_type.as_deref());
        let deliveries = if subscribed {
            let mut input = GateInput::new(&body);
            self.routes
                .iter()
                .filter(|(_, events, _)| events.matches(event_type.as_deref()))
                .map(|(name, _, gate)| ApprovalGate::delivery(gate.as_ref(), name.clone(), &mut input))
                .collect()
        } else {
            Vec::new()
        };
        NewEvent {
            id: EventId::new(),
            source: self.source.clone(),
            received_at: now,
            dedup_key,
            provider_event_id: Some(truncate(id, 255)),
            event_type: event_type.map(|t| truncate(t, 255)),
            disposition: if subscribed {
                Disposition::Accepted
            } else {
                Disposition::Ignored
            },
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body,
            verification: format!("poll GET {}", self.display_url),
            remote_addr: None,
            deliveries,
            origin: EventOrigin::Poll,
        }
    }
}

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

/// The wait after `failures` failed polls in a row: the interval doubled
/// per failure, up to 15 minutes (or the interval, if longer), and never
/// shorter than what the server asked for.
fn backoff(interval: Duration, failures: u32, retry_after: Option<Duration>) -> Duration {
    let cap = interval.max(MAX_BACKOFF);
    let doubled = interval.saturating_mul(1u32 << failures.min(16)).min(cap);
    match retry_after {
        Some(asked) => doubled.max(asked.min(cap)),
        None => doubled,
    }
}

/// The running pollers, stopped together.
#[derive(Debug)]
pub struct Pollers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pollers {
    /// Starts one poller per `provider = "poll"` source in `config`.
    pub fn start(config: &Config, store: Arc<dyn Store>) -> Result<Self, (String, String)> {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        for source in config.file.sources.iter().filter(|s| s.provider == PROVIDER) {
            let poller =
                Poller::build(config, source, store.clone()).map_err(|message| (source.name.clone(), message))?;
            tracing::info!(source = %source.name, url = %poller.display_url, interval = ?poller.interval, "Polling.");
            tasks.push(tokio::spawn(poller.run(stopped.clone())));
        }
        Ok(Self { stop, tasks })
    }

    /// Stops every poller (a poll in progress is abandoned; what it
    /// committed stays, and the next start skips it) and waits for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_cap_and_honours_retry_after() {
        let second = Duration::from_secs(1);
        assert_eq!(backoff(second * 10, 1, None), second * 20);
        assert_eq!(backoff(second * 10, 3, None), second * 80);
        assert_eq!(backoff(second * 10, 30, None), MAX_BACKOFF);
        assert_eq!(backoff(second * 3600, 5, None), second * 3600);
        assert_eq!(backoff(second, 1, Some(second * 30)), second * 30);
        assert_eq!(backoff(second, 1, Some(second * 100_000)), MAX_BACKOFF);
    }

    #[test]
    fn auth_forms() {
        std::env::set_var("GATEHOUSE_TEST_POLL_TOKEN", "t0k3n");
        let bearer = parse_auth("bearer env:GATEHOUSE_TEST_POLL_TOKEN", Path::new(".")).expect("bearer");
        assert_eq!(bearer.name, http::header::AUTHORIZATION);
        assert_eq!(bearer.value.as_bytes(), b"Bearer t0k3n");
        assert!(!format!("{bearer:?}").contains("t0k3n"));
        let header = parse_auth("header X-Api-Key literal-key", Path::new(".")).expect("header");
        assert_eq!(header.name.as_str(), "x-api-key");
        assert_eq!(header.value.as_bytes(), b"literal-key");
        assert!(parse_auth("basic a:b", Path::new(".")).is_err());
        assert!(parse_auth("bearer env:GATEHOUSE_TEST_POLL_UNSET", Path::new(".")).is_err());
        assert!(parse_auth("header bad\u{7f}name x", Path::new(".")).is_err());
    }

    const POLL_SOURCE: &str = r#"
[storage]
url = "sqlite://test.db"

[[sources]]
name = "tickets"
provider = "poll"
retention = "30d"
poll = { url = "https://api.example.com/tickets", interval = "1m", items = ".data[]", id = ".id", version = ".updated_at" }
"#;

    fn config_error(text: &str) -> String {
        match Config::from_text(Path::new("/etc/gatehouse/gatehouse.toml"), text) {
            Ok(_) => panic!("expected an error"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn poll_sources_and_retention_load() {
        let config = Config::from_text(Path::new("/etc/gatehouse/gatehouse.toml"), POLL_SOURCE).expect("valid");
        let source = &config.file.sources[0];
        assert_eq!(source.retention, Some(Duration::from_secs(30 * 24 * 3600)));
        let poll = source.poll.as_ref().expect("poll");
        assert_eq!(poll.interval, Duration::from_secs(60));
        assert_eq!(poll.version.as_deref(), Some(".updated_at"));
    }

    #[test]
    fn poll_and_retention_errors_name_the_file_line_and_key() {
        let message = config_error(&POLL_SOURCE.replace("id = \".id\"", "id = \".id |\""));
        assert!(
            message.starts_with("/etc/gatehouse/gatehouse.toml:9: sources[0].poll.id:"),
            "{message}"
        );
        let message = config_error(&POLL_SOURCE.replace("https://api.example.com/tickets", "ftp://x/y"));
        assert!(message.contains(":9: sources[0].poll.url:"), "{message}");
        let message = config_error(&POLL_SOURCE.replace("interval = \"1m\"", "interval = \"10ms\""));
        assert!(
            message.contains("sources[0].poll.interval: must be at least 1s"),
            "{message}"
        );
        let message = config_error(
            &POLL_SOURCE.replace("interval = \"1m\"", "auth = \"bearer env:GATEHOUSE_TEST_POLL_NOT_SET\""),
        );
        assert!(message.contains("sources[0].poll.auth:"), "{message}");
        assert!(message.contains("GATEHOUSE_TEST_POLL_NOT_SET"), "{message}");
        let message = config_error(&POLL_SOURCE.replace("retention = \"30d\"", "retention = \"0s\""));
        assert!(
            message.contains(":8: sources[0].retention: must be longer than zero"),
            "{message}"
        );
        let message = config_error(&POLL_SOURCE.replace("retention = \"30d\"", "retention = \"soon\""));
        assert!(message.contains(":8:"), "{message}");
        let message = config_error(&POLL_SOURCE.replace("poll = {", "secrets = [\"whsec_x\"]\npoll = {"));
        assert!(
            message.contains("sources[0].secrets: a poll source verifies nothing"),
            "{message}"
        );
        let without_poll: String = POLL_SOURCE
            .lines()
            .filter(|l| !l.starts_with("poll ="))
            .collect::<Vec<_>>()
            .join("\n");
        let message = config_error(&without_poll);
        assert!(
            message.contains("sources[0].poll: provider \"poll\" needs"),
            "{message}"
        );
        let message =
            config_error(&POLL_SOURCE.replace("provider = \"poll\"", "provider = \"stripe\"\nsecrets = [\"whsec_x\"]"));
        assert!(
            message.contains("sources[0].poll: poll settings need provider = \"poll\""),
            "{message}"
        );
    }

    #[test]
    fn urls_need_http_and_a_host() {
        assert!(check_url("https://api.example.com/items?x=1").is_ok());
        assert!(check_url("http://127.0.0.1:9/items").is_ok());
        assert!(check_url("ftp://example.com/x").is_err());
        assert!(check_url("/relative").is_err());
        assert!(check_url("not a url").is_err());
    }
}
