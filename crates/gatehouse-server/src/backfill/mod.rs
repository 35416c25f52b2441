//! Backfill: recover events a source missed (an outage, a bad deploy) from
//! the provider's API, and store them as if they had arrived, marked
//! `backfill`, exactly once.
//!
//! - [`stripe`]: lists events through the Events API (`GET /v1/events`,
//!   `created[gte]`, `starting_after` pages, optionally only those whose
//!   webhook failed) and ingests the ones not yet stored.
//! - [`github`]: lists the hook's recent deliveries, finds the ones not
//!   stored (by delivery GUID), and asks GitHub to redeliver them, or
//!   fetches their payloads and ingests them (`api.recover = "fetch"`).
//!
//! Both dedup exactly like live ingest: the event's dedup key (the
//! provider's id, unless the source overrides it) is checked against what
//! is stored before ingesting, and storage refuses a second copy anyway.
//! A run stops at the first error it cannot get past (after retrying
//! timeouts, 429 and 5xx) with a clear message and the summary so far;
//! what was ingested stays ingested, and running again picks up the rest.
//!
//! Config lives on the source: `api = { … }` ([`ApiConfig`]) and, for a
//! scheduled run, `backfill = { every, lookback }` ([`BackfillSchedule`]);
//! [`validate`] checks both, and every route's `enrich` against the
//! source's host allow-list. Every run is audited (`source.backfill`).

pub mod github;
pub mod stripe;

mod client;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use gatehouse_core::{units, Disposition, EventId, EventOrigin, Header, NewAuditEntry, NewEvent, Secret, UnixMillis};
use gatehouse_deliver::enrich::{host_allowed, is_loopback, EnrichResolved};
use gatehouse_store::{IngestOutcome, Store, StoreError};
use gatehouse_verify::{InboundRequest, Kind};

use crate::config::{Config, ConfigFile, KeyPath, SourceConfig};
use crate::ingest::source::Source;
pub use client::ApiClient;

/// Default time one API request may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default tries per API request (timeouts, 429 and 5xx are retried).
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// Default most pages one run reads before it stops with an error.
pub const DEFAULT_MAX_PAGES: u32 = 1000;
/// Default (and largest) page size; both APIs allow up to 100.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// `api = { … }` on a source: how gatehouse reaches the provider's API.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The API's base URL, e.g. `https://api.stripe.com` or
    /// `https://api.github.com` (https, or http to a loopback host).
    /// Needed for backfill.
    pub base_url: Option<String>,
    /// The API credential, sent as `Authorization: Bearer …`: a literal,
    /// `env:NAME` or `file:PATH`. Stripe: a (restricted) secret key with
    /// read access to events; GitHub: a token that can read (and
    /// redeliver) the hook's deliveries.
    pub token: Option<String>,
    /// Hosts (`host` or `host:port`) that route enrichment of this source's
    /// events may fetch from, besides `base_url`'s host.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// GitHub: the hook whose deliveries are listed, as its API path:
    /// `repos/OWNER/REPO/hooks/ID`, `orgs/ORG/hooks/ID` or `app/hook`.
    pub hook: Option<String>,
    /// GitHub: what to do with a missed delivery: `redeliver` (default; ask
    /// GitHub to send it again, through the signed webhook) or `fetch`
    /// (read its payload from the API and store it directly).
    #[serde(default)]
    pub recover: GithubRecovery,
    /// How long one API request may take (default 10 s).
    #[serde(default, with = "units::option_duration")]
    pub timeout: Option<Duration>,
    /// Tries per request (default 3): timeouts, connection errors, 429 and
    /// 5xx are retried with a short backoff; anything else stops the run.
    pub attempts: Option<u32>,
    /// Most pages one run reads (default 1000); a provider that keeps
    /// paginating past it stops the run with an error.
    pub max_pages: Option<u32>,
    /// Items per page (default and most 100).
    pub page_size: Option<u32>,
}

/// GitHub: how a missed delivery is recovered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GithubRecovery {
    /// `POST …/deliveries/{id}/attempts`: GitHub sends it again, signed.
    #[default]
    Redeliver,
    /// `GET …/deliveries/{id}`: store the payload from the API.
    Fetch,
}

/// `backfill = { every = "10m", lookback = "1h" }` on a source.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillSchedule {
    /// How often to run.
    #[serde(with = "units::duration")]
    pub every: Duration,
    /// How far back each run looks.
    #[serde(with = "units::duration")]
    pub lookback: Duration,
    /// Only events whose webhook delivery failed (Stripe
    /// `delivery_success=false`; GitHub deliveries without a 2xx answer).
    #[serde(default)]
    pub failed_only: bool,
}

impl ApiConfig {
    /// `base_url` without a trailing `/`.
    pub fn base(&self) -> Option<&str> {
        self.base_url.as_deref().map(|url| url.trim_end_matches('/'))
    }

    /// Hosts route enrichment may reach: `allow_hosts` and `base_url`'s host.
    pub fn effective_allow_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.allow_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        if let Some(authority) = self
            .base()
            .and_then(|url| url.parse::<http::Uri>().ok())
            .and_then(|uri| uri.authority().map(|a| a.as_str().to_ascii_lowercase()))
        {
            hosts.push(authority);
        }
        hosts
    }
}

/// Checks every source's `api` and `backfill` and every route's `enrich`
/// against its source; resolves the API tokens (in source order) and each
/// enriching route's token and allow-list. Errors name the key.
pub(crate) type Resolved = (Vec<Option<Secret>>, HashMap<String, EnrichResolved>);

/// See [`Resolved`].
pub(crate) fn validate(file: &ConfigFile, base_dir: &Path) -> Result<Resolved, (KeyPath, String)> {
    let mut tokens = Vec::with_capacity(file.sources.len());
    for (index, source) in file.sources.iter().enumerate() {
        let at = |key: &str| KeyPath::root("sources").index(index).join_dotted(key);
        tokens.push(validate_source(source, base_dir).map_err(|(key, message)| (at(&key), message))?);
    }
    let mut enrichment = HashMap::new();
    for (index, route) in file.routes.iter().enumerate() {
        let Some(enrich) = &route.enrich else { continue };
        let at = |key: &str| KeyPath::root("routes").index(index).join_dotted(key);
        let Some((source_index, source)) = file
            .sources
            .iter()
            .enumerate()
            .find(|(_, source)| source.name == route.source)
        else {
            // validate_delivery reports the unknown source first.
            continue;
        };
        let template = enrich.check().map_err(|issue| (at(&issue.key), issue.message))?;
        let allow_hosts = source
            .api
            .as_ref()
            .map(ApiConfig::effective_allow_hosts)
            .unwrap_or_default();
        if !host_allowed(template.authority(), &allow_hosts) {
            return Err((
                at("enrich.url"),
                format!(
                    "host {:?} is not allowed for source {:?}: add it to sources[{source_index}].api.allow_hosts \
                     (only hosts listed there, or the api.base_url host, may be fetched, so a payload cannot \
                     steer requests elsewhere)",
                    template.authority(),
                    source.name
                ),
            ));
        }
        let token = enrich
            .auth
            .as_deref()
            .map(|auth| {
                let reference = gatehouse_deliver::enrich::auth_reference(auth).map_err(|m| (at("enrich.auth"), m))?;
                crate::config::resolve_secret(reference, base_dir).map_err(|m| (at("enrich.auth"), m))
            })
            .transpose()?;
        if let Some(destination) = file.destinations.iter().find(|d| d.name == route.destination) {
            let sending = destination
                .timeout
                .unwrap_or(gatehouse_deliver::destination::DEFAULT_TIMEOUT);
            if file.delivery.lease <= sending + enrich.timeout() {
                return Err((
                    at("enrich.timeout"),
                    format!(
                        "delivery.lease ({}) must be longer than the enrichment timeout ({}) plus destination \
                         {:?}'s timeout ({})",
                        humantime::format_duration(file.delivery.lease),
                        humantime::format_duration(enrich.timeout()),
                        destination.name,
                        humantime::format_duration(sending)
                    ),
                ));
            }
        }
        enrichment.insert(route.name.clone(), EnrichResolved { token, allow_hosts });
    }
    Ok((tokens, enrichment))
}

/// Checks one source's `api` and `backfill`; keys relative to the source.
fn validate_source(source: &SourceConfig, base_dir: &Path) -> Result<Option<Secret>, (String, String)> {
    let err = |key: &str, message: String| (key.to_string(), message);
    let Some(api) = &source.api else {
        if source.backfill.is_some() {
            return Err(err(
                "backfill",
                "a scheduled backfill needs the provider's API: add api = { base_url = …, token = … }".into(),
            ));
        }
        return Ok(None);
    };
    if let Some(base) = &api.base_url {
        check_base_url(base).map_err(|m| err("api.base_url", m))?;
    }
    for (index, host) in api.allow_hosts.iter().enumerate() {
        if host.is_empty() || host.contains(['/', '@', ' ']) || host.contains("://") {
            return Err(err(
                &format!("api.allow_hosts.{index}"),
                format!("{host:?} is not a host (expected e.g. \"api.stripe.com\" or \"127.0.0.1:8080\")"),
            ));
        }
    }
    if let Some(hook) = &api.hook {
        if source.provider != "github" {
            return Err(err("api.hook", "only github sources list hook deliveries".into()));
        }
        let hook = hook.trim_matches('/');
        let parts: Vec<&str> = hook.split('/').collect();
        let shaped = matches!(
            parts.as_slice(),
            ["repos", _, _, "hooks", _] | ["orgs", _, "hooks", _] | ["app", "hook"]
        );
        if !shaped || parts.iter().any(|p| p.is_empty()) {
            return Err(err(
                "api.hook",
                format!(
                    "{hook:?} is not a hook path (expected repos/OWNER/REPO/hooks/ID, orgs/ORG/hooks/ID or app/hook)"
                ),
            ));
        }
    }
    if api.timeout.is_some_and(|t| t.is_zero()) {
        return Err(err("api.timeout", "must be longer than zero".into()));
    }
    if api.attempts == Some(0) {
        return Err(err("api.attempts", "must be at least 1".into()));
    }
    if api.max_pages == Some(0) {
        return Err(err("api.max_pages", "must be at least 1".into()));
    }
    if api.page_size.is_some_and(|size| size == 0 || size > 100) {
        return Err(err("api.page_size", "must be between 1 and 100".into()));
    }
    let token = api
        .token
        .as_deref()
        .map(|reference| crate::config::resolve_secret(reference, base_dir).map_err(|m| err("api.token", m)))
        .transpose()?;
    if let Some(schedule) = &source.backfill {
        if api.base_url.is_none() {
            return Err(err("backfill", "a scheduled backfill needs api.base_url".into()));
        }
        ApiKind::of(source).map_err(|m| err("backfill", m))?;
        if schedule.every < Duration::from_secs(1) {
            return Err(err("backfill.every", "must be at least 1s".into()));
        }
        if schedule.lookback.is_zero() {
            return Err(err("backfill.lookback", "must be longer than zero".into()));
        }
    }
    Ok(token)
}

/// An API base URL: https, or http to loopback; a host; no credentials.
fn check_base_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| format!("{url:?} is not a URL (expected e.g. https://api.stripe.com)"))?;
    let authority = uri.authority().ok_or_else(|| format!("{url:?} has no host"))?;
    if authority.as_str().contains('@') {
        return Err("the url must not hold credentials; use api.token".into());
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(authority.host()) => Ok(()),
        Some("http") => Err(format!(
            "{url:?}: plain http is allowed only to loopback hosts (127.0.0.1, localhost); use https://"
        )),
        _ => Err(format!("{url:?} must start with https://")),
    }
}

/// Which provider API a source backfills from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ApiKind {
    Stripe,
    Github { hook: String, recover: GithubRecovery },
}

impl ApiKind {
    fn of(source: &SourceConfig) -> Result<Self, String> {
        match source.provider.as_str() {
            "stripe" => Ok(ApiKind::Stripe),
            "github" => {
                let api = source.api.as_ref();
                let hook = api
                    .and_then(|api| api.hook.as_deref())
                    .ok_or_else(|| "a github backfill needs api.hook (e.g. repos/OWNER/REPO/hooks/ID)".to_string())?;
                Ok(ApiKind::Github {
                    hook: hook.trim_matches('/').to_string(),
                    recover: api.map(|api| api.recover).unwrap_or_default(),
                })
            }
            other => Err(format!(
                "backfill supports stripe and github sources, not {other:?} (its API has no event history)"
            )),
        }
    }
}

/// What one backfill run did; printed by the CLI and kept in the audit log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The source.
    pub source: String,
    /// The start of the window looked at.
    pub since: UnixMillis,
    /// Only failed webhook deliveries were looked at.
    pub failed_only: bool,
    /// Pages read.
    pub pages: u32,
    /// Events (or deliveries) the API listed in the window.
    pub listed: u64,
    /// Of those, already stored: nothing to do.
    pub already_stored: u64,
    /// Stored by this run, marked `backfill`.
    pub ingested: u64,
    /// GitHub: redeliveries requested (they arrive through the webhook).
    pub redelivered: u64,
    /// Missed ones that could not be recovered.
    pub failed: u64,
    /// Why the run stopped early, if it did.
    pub error: Option<String>,
}

/// Why a backfill cannot run at all.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// No such source in the config.
    #[error("no source is named {0:?}")]
    UnknownSource(String),
    /// The source cannot be backfilled as configured.
    #[error("source {source_name:?} cannot be backfilled: {message}")]
    NotConfigured {
        /// The source.
        source_name: String,
        /// What is missing.
        message: String,
    },
}

/// What to backfill.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    /// Events created (or delivered) at or after this time.
    pub since: UnixMillis,
    /// Only events whose webhook delivery failed.
    pub failed_only: bool,
}

/// One source's backfill, built from config, ready to run.
#[derive(Debug)]
pub struct Backfiller {
    source: Arc<Source>,
    kind: ApiKind,
    api: ApiClient,
    max_pages: u32,
    page_size: u32,
}

impl Backfiller {
    /// Builds the backfill of `source_name` from a validated config.
    pub fn from_config(config: &Config, source_name: &str) -> Result<Self, BackfillError> {
        let index = config
            .file
            .sources
            .iter()
            .position(|s| s.name == source_name)
            .ok_or_else(|| BackfillError::UnknownSource(source_name.to_string()))?;
        let source_config = &config.file.sources[index];
        let not_configured = |message: String| BackfillError::NotConfigured {
            source_name: source_name.to_string(),
            message,
        };
        let kind = ApiKind::of(source_config).map_err(not_configured)?;
        let api = source_config
            .api
            .as_ref()
            .ok_or_else(|| not_configured("add api = { base_url = …, token = … } to the source".into()))?;
        let base = api
            .base()
            .ok_or_else(|| not_configured("api.base_url is not set".into()))?;
        let routes: Vec<_> = config
            .file
            .routes
            .iter()
            .filter(|route| route.source == source_name)
            .collect();
        let secrets = config.secrets.get(index).map(Vec::as_slice).unwrap_or_default();
        let source =
            Source::build(source_config, secrets, config.file.server.body_limit.0, &routes).map_err(not_configured)?;
        let token = config.api_tokens.get(index).cloned().flatten();
        let api_client = ApiClient::new(
            base,
            token,
            api.timeout.unwrap_or(DEFAULT_TIMEOUT),
            api.attempts.unwrap_or(DEFAULT_ATTEMPTS),
            matches!(kind, ApiKind::Github { .. }),
        )
        .map_err(not_configured)?;
        Ok(Self {
            source: Arc::new(source),
            kind,
            api: api_client,
            max_pages: api.max_pages.unwrap_or(DEFAULT_MAX_PAGES),
            page_size: api.page_size.unwrap_or(DEFAULT_PAGE_SIZE),
        })
    }

    /// The source's name.
    pub fn source(&self) -> &str {
        &self.source.name
    }

    /// Runs once over `window`, calling `progress` after every page. Never
    /// fails: an error stops the run and is in [`Summary::error`], with
    /// the counts of what was done before it.
    pub async fn run(&self, store: &dyn Store, window: Window, progress: &mut (dyn FnMut(&Summary) + Send)) -> Summary {
        let mut run = Run {
            source: &self.source,
            store,
            summary: Summary {
                source: self.source.name.to_string(),
                since: window.since,
                failed_only: window.failed_only,
                ..Summary::default()
            },
            seen: HashSet::new(),
            progress,
        };
        let result = match &self.kind {
            ApiKind::Stripe => stripe::run(&mut run, &self.api, window, self.max_pages, self.page_size).await,
            ApiKind::Github { hook, recover } => {
                github::run(
                    &mut run,
                    &self.api,
                    hook,
                    *recover,
                    window,
                    self.max_pages,
                    self.page_size,
                )
                .await
            }
        };
        if let Err(message) = result {
            tracing::warn!(source = %self.source.name, error = %message, "Backfill stopped early.");
            run.summary.error = Some(message);
        }
        run.summary
    }
}

/// A run in progress: what the provider modules share.
pub(crate) struct Run<'a> {
    source: &'a Source,
    store: &'a dyn Store,
    /// Counts so far.
    pub(crate) summary: Summary,
    /// Dedup keys met in this run (lists repeat items: GitHub lists a
    /// redelivery under the same GUID).
    seen: HashSet<String>,
    progress: &'a mut (dyn FnMut(&Summary) + Send),
}

/// An event as the provider's API returned it, before identification.
pub(crate) struct Recovered {
    /// Headers as a webhook would carry them (lower-case names).
    pub headers: Vec<Header>,
    /// The body, as JSON text.
    pub body: Bytes,
    /// How its authenticity was established.
    pub verification: String,
}

impl Run<'_> {
    /// Reports a page read.
    pub(crate) fn page_done(&mut self) {
        self.summary.pages += 1;
        (self.progress)(&self.summary);
    }

    /// Which of these dedup keys are new: neither stored nor met earlier in
    /// this run. Counts the others as already stored.
    pub(crate) async fn missing(&mut self, keys: Vec<String>) -> Result<Vec<String>, String> {
        let fresh: Vec<String> = keys.into_iter().filter(|key| !self.seen.contains(key)).collect();
        let stored: HashSet<String> = if fresh.is_empty() {
            HashSet::new()
        } else {
            self.store
                .existing_dedup_keys(&self.source.name, &fresh)
                .await
                .map_err(storage_error)?
                .into_iter()
                .collect()
        };
        let mut missing = Vec::new();
        for key in fresh {
            if !self.seen.insert(key.clone()) {
                continue;
            }
            if stored.contains(&key) {
                self.summary.already_stored += 1;
            } else {
                missing.push(key);
            }
        }
        Ok(missing)
    }

    /// The dedup key `recovered` would be stored under, resolved as live
    /// ingest resolves it.
    pub(crate) fn dedup_key(&self, recovered: &Recovered) -> String {
        self.identify(recovered, EventId::new()).0.dedup_key
    }

    fn identify(&self, recovered: &Recovered, id: EventId) -> (crate::ingest::source::Resolved, Identified) {
        let headers = header_map(&recovered.headers);
        let request = InboundRequest {
            method: &http::Method::POST,
            url: "",
            headers: &headers,
            body: &recovered.body,
        };
        let identity = self.source.provider.identify(&request);
        let kind = match identity.kind {
            Kind::Event => Identified::Event,
            _ => Identified::Ping,
        };
        (self.source.resolve(&request, &identity, id), kind)
    }

    /// Stores recovered events whose dedup keys are not stored yet (the
    /// caller asked [`Run::missing`]), oldest first, in one transaction,
    /// with deliveries exactly as live ingest creates them.
    pub(crate) async fn ingest(&mut self, recovered: Vec<Recovered>) -> Result<(), String> {
        if recovered.is_empty() {
            return Ok(());
        }
        let count = recovered.len() as u64;
        let received_at = UnixMillis::now();
        let batch: Vec<NewEvent> = recovered
            .into_iter()
            .map(|event| {
                let id = EventId::new();
                let (resolved, kind) = self.identify(&event, id);
                let disposition = match kind {
                    Identified::Ping => Disposition::Ping,
                    Identified::Event if self.source.subscribes_to(resolved.event_type.as_deref()) => {
                        Disposition::Accepted
                    }
                    Identified::Event => Disposition::Ignored,
                };
                let deliveries = match disposition {
                    Disposition::Accepted => self.source.deliveries_for(resolved.event_type.as_deref(), &event.body),
                    Disposition::Ignored | Disposition::Ping => Vec::new(),
                };
                NewEvent {
                    id,
                    source: self.source.name.clone(),
                    received_at,
                    dedup_key: resolved.dedup_key,
                    provider_event_id: resolved.provider_event_id,
                    event_type: resolved.event_type,
                    disposition,
                    headers: event.headers,
                    body: event.body,
                    verification: event.verification,
                    remote_addr: None,
                    deliveries,
                    origin: EventOrigin::Backfill,
                }
            })
            .collect();
        match self.store.ingest(batch).await {
            Ok(outcomes) => {
                for outcome in outcomes {
                    match outcome {
                        IngestOutcome::Stored => self.summary.ingested += 1,
                        // It arrived live between the check and now.
                        IngestOutcome::Duplicate { .. } => self.summary.already_stored += 1,
                    }
                }
                Ok(())
            }
            Err(error) => {
                self.summary.failed += count;
                Err(storage_error(error))
            }
        }
    }
}

/// Event or ping, as the provider identified it.
enum Identified {
    Event,
    Ping,
}

fn storage_error(error: StoreError) -> String {
    format!("storage: {error}")
}

fn header_map(headers: &[Header]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for header in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(header.name.as_bytes()),
            http::HeaderValue::from_str(&header.value),
        ) {
            map.append(name, value);
        }
    }
    map
}

/// Appends a run to the audit log as `source.backfill` by `actor`
/// (`cli:alice`, `gatehouse:scheduler`), with the summary as details.
pub async fn audit(store: &dyn Store, actor: &str, summary: &Summary) -> Result<(), StoreError> {
    store
        .append_audit(NewAuditEntry {
            at: UnixMillis::now(),
            actor: actor.to_string(),
            action: "source.backfill".into(),
            object: format!("source:{}", summary.source),
            remote_addr: None,
            note: summary.error.clone(),
            details: serde_json::to_string(summary).unwrap_or_default(),
        })
        .await
}

/// The `source_state` key where a scheduled backfill notes its last run.
const LAST_RUN_KEY: &str = "backfill.last_run";

/// Starts the scheduled backfills (sources with `backfill = { … }`): each
/// runs every `every` over the last `lookback`, audited as
/// `gatehouse:scheduler`. The last run is kept in the database, so a
/// restart does not run again early. `None` when no source has a schedule.
pub fn start_scheduler(config: &Config, store: Arc<dyn Store>) -> Option<JoinHandle<()>> {
    let mut scheduled = Vec::new();
    for source in &config.file.sources {
        let Some(schedule) = source.backfill.clone() else {
            continue;
        };
        match Backfiller::from_config(config, &source.name) {
            Ok(backfiller) => scheduled.push((backfiller, schedule)),
            Err(error) => tracing::error!(%error, "Scheduled backfill not started."),
        }
    }
    if scheduled.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        // Aborting this task drops the set, which aborts every loop.
        let mut loops = tokio::task::JoinSet::new();
        for (backfiller, schedule) in scheduled {
            loops.spawn(schedule_loop(backfiller, schedule, store.clone()));
        }
        while loops.join_next().await.is_some() {}
    }))
}

async fn schedule_loop(backfiller: Backfiller, schedule: BackfillSchedule, store: Arc<dyn Store>) {
    let source = backfiller.source().to_string();
    let every_ms = i64::try_from(schedule.every.as_millis()).unwrap_or(i64::MAX);
    loop {
        let last = match store.source_state(&source, LAST_RUN_KEY).await {
            Ok(value) => value.and_then(|text| text.trim().parse::<i64>().ok()),
            Err(error) => {
                tracing::warn!(%source, %error, "Cannot read when the last backfill ran; running now.");
                None
            }
        };
        let now = UnixMillis::now();
        if let Some(last) = last {
            let due = last.saturating_add(every_ms);
            if due > now.0 {
                tokio::time::sleep(Duration::from_millis(u64::try_from(due - now.0).unwrap_or(0))).await;
                continue;
            }
        }
        let lookback = i64::try_from(schedule.lookback.as_millis()).unwrap_or(i64::MAX);
        let window = Window {
            since: UnixMillis(now.0.saturating_sub(lookback)),
            failed_only: schedule.failed_only,
        };
        let summary = backfiller.run(&*store, window, &mut |_| {}).await;
        tracing::info!(
            %source,
            listed = summary.listed,
            already_stored = summary.already_stored,
            ingested = summary.ingested,
            redelivered = summary.redelivered,
            failed = summary.failed,
            "Scheduled backfill ran."
        );
        if let Err(error) = audit(&*store, "gatehouse:scheduler", &summary).await {
            tracing::warn!(%source, %error, "Cannot audit the scheduled backfill.");
        }
        if let Err(error) = store.put_source_state(&source, LAST_RUN_KEY, &now.0.to_string()).await {
            tracing::warn!(%source, %error, "Cannot note when the backfill ran; sleeping a full period.");
            tokio::time::sleep(schedule.every).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, String> {
        Config::from_text(Path::new("/etc/gatehouse/gatehouse.toml"), text).map_err(|e| e.to_string())
    }

    const STRIPE: &str = r#"
[[sources]]
name = "stripe"
provider = "stripe"
secrets = ["whsec_test"]
api = { base_url = "https://api.stripe.com", token = "sk_test_1", allow_hosts = ["files.stripe.com"] }
backfill = { every = "10m", lookback = "1h" }

[[destinations]]
name = "orders"
type = "http"
url = "https://orders.internal/hooks"

[[routes]]
name = "enriched"
source = "stripe"
destination = "orders"
enrich = { url = "https://api.stripe.com/v1/payment_intents/{{ .data.object.id }}", auth = "bearer sk_test_2" }
"#;

    #[test]
    fn api_backfill_and_enrich_load() {
        let config = load(STRIPE).expect("valid");
        assert_eq!(
            config.api_tokens[0].as_ref().map(|t| t.expose().to_vec()),
            Some(b"sk_test_1".to_vec())
        );
        let resolved = &config.enrichment["enriched"];
        assert!(resolved.allow_hosts.contains(&"api.stripe.com".to_string()));
        assert!(resolved.allow_hosts.contains(&"files.stripe.com".to_string()));
        assert!(resolved.token.is_some());
        assert!(Backfiller::from_config(&config, "stripe").is_ok());
        assert!(matches!(
            Backfiller::from_config(&config, "nope"),
            Err(BackfillError::UnknownSource(_))
        ));
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let cases = [
            (
                STRIPE.replace("https://api.stripe.com/v1/payment", "https://evil.example/v1/payment"),
                ":18: routes[0].enrich.url: host \"evil.example\" is not allowed",
            ),
            (
                STRIPE.replace("{{ .data.object.id }}", "{{ .data.object. }}"),
                "routes[0].enrich.url: placeholder",
            ),
            (
                STRIPE.replace(
                    "base_url = \"https://api.stripe.com\"",
                    "base_url = \"http://api.stripe.com\"",
                ),
                ":6: sources[0].api.base_url: \"http://api.stripe.com\": plain http",
            ),
            (
                STRIPE.replace("every = \"10m\"", "every = \"0s\""),
                "sources[0].backfill.every: must be at least 1s",
            ),
            (
                STRIPE.replace(
                    "token = \"sk_test_1\"",
                    "token = \"env:GATEHOUSE_TEST_UNSET_STRIPE_KEY\"",
                ),
                "sources[0].api.token: environment variable GATEHOUSE_TEST_UNSET_STRIPE_KEY is not set",
            ),
            (
                STRIPE.replace("auth = \"bearer sk_test_2\"", "auth = \"basic x\""),
                "routes[0].enrich.auth: expected \"bearer <secret>\"",
            ),
            (
                STRIPE.replace("provider = \"stripe\"", "provider = \"github\""),
                "sources[0].backfill: a github backfill needs api.hook",
            ),
        ];
        for (text, expected) in cases {
            let message = load(&text).expect_err(expected);
            assert!(message.contains(expected), "{message}\nexpected: {expected}");
        }
    }
}
