//! Destinations: where an attempt goes ([`http`] or [`exec`]), with the
//! per-destination concurrency limit and rate limit every attempt passes.
//!
//! The server resolves `env:` and `file:` references before anything here
//! runs: a destination is built from a [`ResolvedDestination`], so this
//! crate never reads the environment or the file system for secrets.

pub mod exec;
pub mod http;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;

use gatehouse_core::{DeliveryId, Header, Secret, StoredEvent};

use crate::config::{ConfigIssue, DestinationConfig, DestinationKind};
use crate::outcome::AttemptResult;
use crate::ratelimit::RateLimiter;

/// How much of a response body or a command's output is kept with the attempt.
pub const EXCERPT_LIMIT: usize = 4096;

/// A destination's config with its secret references resolved by the
/// caller (the server's config loader): the signing secret and the extra
/// header values, literal or read from `env:`/`file:`.
#[derive(Clone, Debug)]
pub struct ResolvedDestination {
    /// The config as written.
    pub config: DestinationConfig,
    /// The resolved `secret`, when one is configured.
    pub secret: Option<Secret>,
    /// The resolved `headers` values, by header name, in config order.
    pub headers: Vec<(String, Secret)>,
    /// A client trusting only `ca_cert`'s certificates, when it is set
    /// (built by the config loader, which reports a bad file).
    pub ca_client: Option<http::HttpClient>,
}

impl ResolvedDestination {
    /// Checks the config and the resolved values (the secret decodes, the
    /// header values are valid) without building anything.
    pub fn check(&self) -> Result<(), ConfigIssue> {
        self.config.check()?;
        if let Some(secret) = &self.secret {
            http::signing_key(secret)?;
        }
        http::extra_headers(&self.headers).map(|_| ())
    }
}

/// One attempt's request, whatever the destination.
#[derive(Clone, Debug)]
pub struct Outbound<'a> {
    /// The event delivered.
    pub event: &'a StoredEvent,
    /// The delivery attempted.
    pub delivery_id: DeliveryId,
    /// The route's name.
    pub route: &'a str,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// What to send: the raw body, or the transform's output.
    pub body: Bytes,
    /// Whether `body` is the transform's JSON output.
    pub transformed: bool,
}

/// What a destination reported about one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// How it ended, for [`crate::outcome::classify`].
    pub result: AttemptResult,
    /// The HTTP status, or the command's exit code.
    pub status_code: Option<i32>,
    /// Response headers (HTTP).
    pub headers: Vec<Header>,
    /// The first [`EXCERPT_LIMIT`] bytes of the body or output.
    pub excerpt: Bytes,
}

impl Report {
    /// A report with nothing but a result (nothing was sent, or nothing came back).
    pub fn bare(result: AttemptResult) -> Self {
        Self {
            result,
            status_code: None,
            headers: Vec::new(),
            excerpt: Bytes::new(),
        }
    }
}

/// A destination ready to take attempts.
#[derive(Debug)]
pub struct Destination {
    /// Its name in the config.
    pub name: Arc<str>,
    /// How long one attempt may take.
    pub timeout: Duration,
    sender: Sender,
    concurrency: Arc<Semaphore>,
    rate: Option<RateLimiter>,
}

#[derive(Debug)]
enum Sender {
    Http(Box<http::HttpDestination>),
    Exec(exec::ExecDestination),
}

/// The default attempt timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default number of attempts in flight to one destination.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// A slot to send to a destination: held for the whole attempt.
#[derive(Debug)]
pub struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Destination {
    /// Builds a destination; `client` is the shared HTTP client (only
    /// `http` destinations use it). The error names the key at fault.
    pub fn build(resolved: &ResolvedDestination, client: &http::HttpClient) -> Result<Self, ConfigIssue> {
        let config = &resolved.config;
        resolved.check()?;
        let sender = match config.kind()? {
            DestinationKind::Http => {
                let client = resolved.ca_client.as_ref().unwrap_or(client).clone();
                Sender::Http(Box::new(http::HttpDestination::build(resolved, client)?))
            }
            DestinationKind::Exec => Sender::Exec(exec::ExecDestination::build(config)?),
        };
        Ok(Self {
            name: Arc::from(config.name.as_str()),
            timeout: config.timeout.unwrap_or(DEFAULT_TIMEOUT),
            sender,
            concurrency: Arc::new(Semaphore::new(config.concurrency.unwrap_or(DEFAULT_CONCURRENCY))),
            rate: config.rate_limit.map(RateLimiter::per_second),
        })
    }

    /// Waits for a free slot under the concurrency limit and then for the
    /// rate limit, giving up (`None`) if that would pass `deadline`: a
    /// delivery that waited that long is better released than sent on an
    /// expiring lease.
    pub async fn acquire(&self, deadline: tokio::time::Instant) -> Option<Slot> {
        let permit = tokio::time::timeout_at(deadline, self.concurrency.clone().acquire_owned())
            .await
            .ok()?
            // The semaphore is never closed.
            .ok()?;
        if let Some(rate) = &self.rate {
            let at = rate.reserve(tokio::time::Instant::now(), deadline)?;
            tokio::time::sleep_until(at).await;
        }
        Some(Slot { _permit: permit })
    }

    /// Makes one attempt, within the destination's timeout. Never fails:
    /// every problem is a [`Report`] to classify.
    pub async fn send(&self, outbound: &Outbound<'_>, _slot: &Slot) -> Report {
        match &self.sender {
            Sender::Http(http) => http.send(outbound, self.timeout).await,
            Sender::Exec(exec) => exec.send(outbound, self.timeout).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn acquire_respects_concurrency_and_the_deadline() {
        let config: DestinationConfig = toml::from_str(
            "name = \"d\"\ntype = \"exec\"\ncommand = [\"/bin/true\"]\nconcurrency = 1\nrate_limit = 2\n",
        )
        .expect("config");
        let resolved = ResolvedDestination {
            config,
            secret: None,
            headers: Vec::new(),
            ca_client: None,
        };
        let destination = Destination::build(&resolved, &http::client().expect("client")).expect("builds");
        let start = tokio::time::Instant::now();
        let far = start + Duration::from_secs(60);
        let first = destination.acquire(far).await.expect("free");
        assert!(
            destination.acquire(start + Duration::from_millis(100)).await.is_none(),
            "the only slot is taken"
        );
        drop(first);
        let _second = destination.acquire(far).await.expect("free again");
        assert!(
            tokio::time::Instant::now() >= start + Duration::from_millis(500),
            "two per second: the second waits half a second"
        );
    }
}
