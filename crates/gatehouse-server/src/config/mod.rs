//! The configuration file, `gatehouse.toml`: plain data that serde reads
//! (unknown keys are errors), then [`Config::load`] validates it and resolves
//! secrets. Every error names the file, the line and the key at fault.
//!
//! Layers, lowest first: the file (or the embedded demo config), then
//! `GATEHOUSE_LISTEN`, `GATEHOUSE_PUBLIC_URL` and `GATEHOUSE_STORAGE_URL`
//! from the environment.

mod demo;
mod error;
mod locate;
mod secrets;

use gatehouse_core::units;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use gatehouse_core::Secret;
use gatehouse_verify::VerifyOptions;

pub use demo::{demo_config, DemoConfig};
pub use error::ConfigError;
pub use gatehouse_core::units::ByteSize;
pub use gatehouse_deliver::config::{DeliveryConfig, DestinationConfig, RetryConfig, RouteConfig};
pub use gatehouse_deliver::ResolvedDestination;
pub use locate::KeyPath;
pub(crate) use secrets::resolve as resolve_secret;

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The HTTP server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where events are stored.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Inbound endpoints, one per `[[sources]]` table.
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// Where events go, one per `[[destinations]]` table.
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    /// Source → destination joins, one per `[[routes]]` table.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The delivery workers.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on, e.g. `0.0.0.0:8080`. Port 0 picks a free port.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The URL providers use to reach this gateway (scheme, host, optional
    /// port, no trailing slash); Twilio and Square sign it. Defaults to
    /// `http://` + the request's `Host` header.
    pub public_url: Option<String>,
    /// Proxies whose `X-Forwarded-For`, `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` are believed (addresses or CIDR ranges, e.g.
    /// `"10.0.0.0/8"`). From anyone else those headers are ignored.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Largest accepted body, e.g. `"1MiB"` (default) or a number of bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit: ByteSize,
    /// How long a request waits for its batch to commit before answering 503.
    #[serde(default = "default_commit_timeout", with = "units::duration")]
    pub commit_timeout: Duration,
    /// Most events gathered into one batch before it is handed to the
    /// store (PostgreSQL, whose batches commit in parallel). SQLite takes
    /// each event as it arrives and commits every event waiting, up to
    /// 2,048 per transaction, whatever this says.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Serve HTTPS directly with these PEM files (relative to the config
    /// file); without it, plain HTTP (behind a TLS-terminating proxy).
    pub tls: Option<TlsFiles>,
}

/// `[server] tls = { cert = "fullchain.pem", key = "key.pem" }`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            public_url: None,
            trusted_proxies: Vec::new(),
            body_limit: default_body_limit(),
            commit_timeout: default_commit_timeout(),
            max_batch: default_max_batch(),
            tls: None,
        }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_body_limit() -> ByteSize {
    ByteSize(1024 * 1024)
}
fn default_commit_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_batch() -> usize {
    512
}

/// `[storage]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `sqlite://path/to/file.db` (relative to the working directory) or
    /// `postgres://user@host:port/database`.
    #[serde(default = "default_storage_url")]
    pub url: String,
    /// SQLite: how long to wait for a lock held by another process.
    #[serde(default = "default_busy_timeout", with = "units::duration")]
    pub busy_timeout: Duration,
    /// PostgreSQL: connections in the pool.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: default_storage_url(),
            busy_timeout: default_busy_timeout(),
            pool_size: default_pool_size(),
        }
    }
}

fn default_storage_url() -> String {
    "sqlite://gatehouse-data/gatehouse.db".into()
}
fn default_busy_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_pool_size() -> usize {
    16
}

/// One `[[sources]]` table: an endpoint `POST /in/{name}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The path segment: letters, digits, `-` and `_`.
    pub name: String,
    /// How requests are verified and identified: `stripe`, `github`, ….
    pub provider: String,
    /// Active secrets, any of which may match (rotation). Each is a literal,
    /// `env:NAME` or `file:PATH` (relative to the config file).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// How far a signed timestamp may be from now, e.g. `"5m"`.
    #[serde(default, with = "units::option_duration")]
    pub tolerance: Option<Duration>,
    /// Event types this source subscribes to, as globs (`payment_intent.*`);
    /// others are stored as ignored. Default: every type.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Largest accepted body for this source; defaults to `server.body_limit`.
    pub body_limit: Option<ByteSize>,
    /// Where the dedup key comes from, when the provider's own id won't do.
    pub dedup: Option<FieldSource>,
    /// Where the event type comes from, when the provider's won't do.
    pub event_type: Option<FieldSource>,
    /// Provider-specific verification options.
    #[serde(default)]
    pub verify: VerifyOptions,
    /// The provider's API, for backfill and route enrichment:
    /// `api = { base_url = "https://api.stripe.com", token = "env:STRIPE_KEY" }`.
    pub api: Option<crate::backfill::ApiConfig>,
    /// Scheduled backfill, e.g. `backfill = { every = "10m", lookback = "1h" }`
    /// (needs `api`).
    pub backfill: Option<crate::backfill::BackfillSchedule>,
    /// How long events keep their body, headers and attempts, e.g. `"30d"`;
    /// older events whose deliveries are all final become tombstones.
    /// Default: kept forever.
    #[serde(default, with = "units::option_duration")]
    pub retention: Option<Duration>,
    /// For `provider = "poll"`: the API to poll (see [`crate::poll`]).
    pub poll: Option<crate::poll::PollConfig>,
    /// Most verified requests a second, with bursts of up to as many; the
    /// rest are answered 429 with `Retry-After`. Default: no limit.
    pub rate_limit: Option<u32>,
}

fn default_events() -> Vec<String> {
    vec!["*".into()]
}

/// A value taken from the request: a header, a JSON pointer into the body,
/// or (for dedup) the SHA-256 of the raw body.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSource {
    /// A request header.
    pub header: Option<String>,
    /// A JSON pointer into the body, e.g. `/data/id`.
    pub json_pointer: Option<String>,
    /// Dedup only: use `sha256:<hex>` of the raw body.
    #[serde(default)]
    pub body_sha256: bool,
}

/// A validated configuration with secrets resolved.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it was read from (`<demo>` for the embedded demo).
    pub origin: PathBuf,
    /// The file as written.
    pub file: ConfigFile,
    /// Each source's resolved secrets, in the order of `file.sources`.
    pub secrets: Vec<Vec<Secret>>,
    /// Each destination with its secret and header values resolved, in the
    /// order of `file.destinations`.
    pub destinations: Vec<ResolvedDestination>,
    /// Each source's resolved `api.token`, in the order of `file.sources`.
    pub api_tokens: Vec<Option<Secret>>,
    /// Each enriching route's token and host allow-list, by route name.
    pub enrichment: std::collections::HashMap<String, gatehouse_deliver::enrich::EnrichResolved>,
    /// `server.tls`, loaded: HTTPS is served with it.
    pub tls: Option<std::sync::Arc<crate::tls::ServedCertificate>>,
}

impl Config {
    /// Reads, parses, layers the environment over, and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_text(path, &text)
    }

    /// Parses and validates config text that came from `origin`.
    pub fn from_text(origin: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::from_toml(origin, text, &e))?;
        apply_environment(&mut file);
        let base_dir = origin.parent().unwrap_or(Path::new("."));
        let invalid = |(key, message): (KeyPath, String)| ConfigError::Invalid {
            file: origin.to_path_buf(),
            line: locate::line_of(text, &key),
            key,
            message,
        };
        let secrets = validate(&file, base_dir).map_err(invalid)?;
        let destinations = validate_delivery(&file, base_dir).map_err(invalid)?;
        let (api_tokens, enrichment) = crate::backfill::validate(&file, base_dir).map_err(invalid)?;
        let tls = match &file.server.tls {
            Some(files) => Some(
                crate::tls::ServedCertificate::load(&base_dir.join(&files.cert), &base_dir.join(&files.key))
                    .map_err(|(which, message)| {
                        let key = match which {
                            crate::tls::TlsFile::Cert => "cert",
                            crate::tls::TlsFile::Key => "key",
                        };
                        (KeyPath::root("server").key("tls").key(key), message)
                    })
                    .map_err(invalid)?,
            ),
            None => None,
        };
        Ok(Self {
            origin: origin.to_path_buf(),
            file,
            secrets,
            destinations,
            api_tokens,
            enrichment,
            tls,
        })
    }
}

/// `GATEHOUSE_*` variables override the file, for containers and tests.
fn apply_environment(file: &mut ConfigFile) {
    if let Ok(listen) = std::env::var("GATEHOUSE_LISTEN") {
        file.server.listen = listen;
    }
    if let Ok(url) = std::env::var("GATEHOUSE_PUBLIC_URL") {
        file.server.public_url = Some(url);
    }
    if let Ok(url) = std::env::var("GATEHOUSE_STORAGE_URL") {
        file.storage.url = url;
    }
}

/// Checks what serde cannot: names, URLs, globs, providers and secrets.
/// Returns the resolved secrets, or the key at fault and what was expected.
fn validate(file: &ConfigFile, base_dir: &Path) -> Result<Vec<Vec<Secret>>, (KeyPath, String)> {
    use locate::KeyPath as K;
    if file.server.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err((
            K::root("server").key("listen"),
            format!(
                "{:?} is not an address (expected host:port, e.g. 127.0.0.1:8080)",
                file.server.listen
            ),
        ));
    }
    if let Some(url) = &file.server.public_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.ends_with('/') {
            return Err((
                K::root("server").key("public_url"),
                format!("{url:?} must start with http:// or https:// and not end with /"),
            ));
        }
    }
    for (index, proxy) in file.server.trusted_proxies.iter().enumerate() {
        crate::ingest::proxy::parse_network(proxy)
            .map_err(|message| (K::root("server").key("trusted_proxies").index(index), message))?;
    }
    if file.server.max_batch == 0 {
        return Err((K::root("server").key("max_batch"), "must be at least 1".into()));
    }
    crate::storage::check_url(&file.storage.url).map_err(|message| (K::root("storage").key("url"), message))?;

    let mut resolved = Vec::with_capacity(file.sources.len());
    let mut seen = std::collections::HashSet::new();
    for (index, source) in file.sources.iter().enumerate() {
        let at = |key: &str| K::root("sources").index(index).key(key);
        if source.name.is_empty()
            || !source
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err((
                at("name"),
                format!(
                    "{:?} is not a valid source name (letters, digits, - and _ only)",
                    source.name
                ),
            ));
        }
        if !seen.insert(source.name.as_str()) {
            return Err((at("name"), format!("source {:?} is defined twice", source.name)));
        }
        let mut secrets = Vec::with_capacity(source.secrets.len());
        for (secret_index, reference) in source.secrets.iter().enumerate() {
            let secret = secrets::resolve(reference, base_dir).map_err(|message| {
                (
                    K::root("sources").index(index).key("secrets").index(secret_index),
                    message,
                )
            })?;
            secrets.push(secret);
        }
        for (glob_index, pattern) in source.events.iter().enumerate() {
            globset::Glob::new(pattern).map_err(|e| {
                (
                    K::root("sources").index(index).key("events").index(glob_index),
                    format!("{pattern:?} is not a valid glob: {e}"),
                )
            })?;
        }
        for (key, field) in [("dedup", &source.dedup), ("event_type", &source.event_type)] {
            if let Some(field) = field {
                let chosen = [field.header.is_some(), field.json_pointer.is_some(), field.body_sha256]
                    .iter()
                    .filter(|b| **b)
                    .count();
                if chosen != 1 || (key == "event_type" && field.body_sha256) {
                    return Err((
                        at(key),
                        format!(
                            "set exactly one of header or json_pointer{}",
                            if key == "dedup" { " or body_sha256 = true" } else { "" }
                        ),
                    ));
                }
                if let Some(pointer) = &field.json_pointer {
                    if !pointer.is_empty() && !pointer.starts_with('/') {
                        return Err((
                            at(key).key("json_pointer"),
                            format!("{pointer:?} is not a JSON pointer (expected e.g. /data/id)"),
                        ));
                    }
                }
            }
        }
        if source.retention.is_some_and(|keep| keep.is_zero()) {
            return Err((at("retention"), "must be longer than zero (e.g. \"30d\")".into()));
        }
        if source.rate_limit == Some(0) {
            return Err((
                at("rate_limit"),
                "must be at least 1 (requests a second); leave it out for no limit".into(),
            ));
        }
        crate::poll::check_source(source, base_dir)
            .map_err(|(key, message)| (K::root("sources").index(index).join_dotted(&key), message))?;
        // A poll source verifies nothing: nothing is pushed to it.
        if source.provider != crate::poll::PROVIDER {
            gatehouse_verify::build(gatehouse_verify::ProviderSpec {
                provider: &source.provider,
                secrets: &secrets,
                tolerance: source.tolerance,
                options: &source.verify,
            })
            .map_err(|e| (K::root("sources").index(index).join_dotted(&e.key), e.message))?;
        }
        resolved.push(secrets);
    }
    Ok(resolved)
}

/// Checks destinations, routes and `[delivery]`: names unique, references
/// that exist, URLs, commands, jq programs, retry schedules, and a lease
/// longer than every timeout. Returns the destinations with their secret
/// and header values resolved.
fn validate_delivery(file: &ConfigFile, base_dir: &Path) -> Result<Vec<ResolvedDestination>, (KeyPath, String)> {
    use locate::KeyPath as K;
    let mut resolved = Vec::with_capacity(file.destinations.len());
    let mut names = std::collections::HashSet::new();
    for (index, destination) in file.destinations.iter().enumerate() {
        let at = |key: &str| K::root("destinations").index(index).join_dotted(key);
        destination.check().map_err(|issue| (at(&issue.key), issue.message))?;
        if !names.insert(destination.name.as_str()) {
            return Err((
                at("name"),
                format!("destination {:?} is defined twice", destination.name),
            ));
        }
        let secret = destination
            .secret
            .as_deref()
            .map(|reference| secrets::resolve(reference, base_dir).map_err(|message| (at("secret"), message)))
            .transpose()?;
        let headers = destination
            .headers
            .iter()
            .map(|(name, reference)| {
                secrets::resolve(reference, base_dir)
                    .map(|value| (name.clone(), value))
                    .map_err(|message| (at("headers").key(name), message))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ca_client = destination
            .ca_cert
            .as_ref()
            .map(|path| {
                gatehouse_deliver::destination::http::client_trusting(&base_dir.join(path))
                    .map_err(|message| (at("ca_cert"), message))
            })
            .transpose()?;
        let destination = ResolvedDestination {
            config: destination.clone(),
            secret,
            headers,
            ca_client,
        };
        destination.check().map_err(|issue| (at(&issue.key), issue.message))?;
        resolved.push(destination);
    }

    let sources: std::collections::HashSet<&str> = file.sources.iter().map(|s| s.name.as_str()).collect();
    let mut routes = std::collections::HashSet::new();
    for (index, route) in file.routes.iter().enumerate() {
        let at = |key: &str| K::root("routes").index(index).join_dotted(key);
        route.check().map_err(|issue| (at(&issue.key), issue.message))?;
        if !routes.insert(route.name.as_str()) {
            return Err((at("name"), format!("route {:?} is defined twice", route.name)));
        }
        if !sources.contains(route.source.as_str()) {
            return Err((
                at("source"),
                format!(
                    "no source is named {:?} (define it in a [[sources]] table)",
                    route.source
                ),
            ));
        }
        if !names.contains(route.destination.as_str()) {
            return Err((
                at("destination"),
                format!(
                    "no destination is named {:?} (define it in a [[destinations]] table)",
                    route.destination
                ),
            ));
        }
    }

    let delivery = &file.delivery;
    if delivery.workers == 0 {
        return Err((K::root("delivery").key("workers"), "must be at least 1".into()));
    }
    if delivery.poll_interval.is_zero() {
        return Err((
            K::root("delivery").key("poll_interval"),
            "must be longer than zero".into(),
        ));
    }
    let slowest = file
        .destinations
        .iter()
        .map(|d| {
            (
                d.timeout.unwrap_or(gatehouse_deliver::destination::DEFAULT_TIMEOUT),
                &d.name,
            )
        })
        .max();
    if let Some((timeout, name)) = slowest {
        if delivery.lease <= timeout {
            return Err((
                K::root("delivery").key("lease"),
                format!(
                    "the lease ({}) must be longer than the longest destination timeout ({} on {name:?}), \
                     or a delivery could be claimed again while its attempt is still running",
                    humantime::format_duration(delivery.lease),
                    humantime::format_duration(timeout)
                ),
            ));
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[storage]
url = "sqlite://test.db"

[[sources]]
name = "stripe"
provider = "stripe"
secrets = ["whsec_test"]

[[destinations]]
name = "orders"
type = "http"
url = "https://orders.internal/webhooks"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
headers = { authorization = "env:GATEHOUSE_TEST_ORDERS_TOKEN" }

[[destinations]]
name = "script"
type = "exec"
command = ["/usr/local/bin/on-event", "--quiet"]
timeout = "10s"

[[routes]]
name = "stripe-to-orders"
source = "stripe"
destination = "orders"
events = ["payment_intent.*"]
filter = '.data.object.amount > 100'
transform = '{id: .id, amount: .data.object.amount}'
retry = { max_attempts = 5, base = "30s", cap = "1h" }

[[routes]]
name = "stripe-to-script"
source = "stripe"
destination = "script"
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        std::env::set_var("GATEHOUSE_TEST_ORDERS_TOKEN", "Bearer t0ken");
        Config::from_text(Path::new("/etc/gatehouse/gatehouse.toml"), text)
    }

    fn error(text: &str) -> String {
        match load(text) {
            Ok(_) => panic!("expected an error"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn destinations_and_routes_load_with_secrets_resolved() {
        let config = load(BASE).expect("valid");
        assert_eq!(config.destinations.len(), 2);
        let orders = &config.destinations[0];
        assert_eq!(orders.headers[0].1.expose(), b"Bearer t0ken");
        assert!(orders.secret.is_some());
        assert!(!format!("{config:?}").contains("t0ken"), "secrets never print");
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let text = BASE.replace(
            "filter = '.data.object.amount > 100'",
            "filter = '.data.object.amount >'",
        );
        let message = error(&text);
        assert!(
            message.starts_with("/etc/gatehouse/gatehouse.toml:28: routes[0].filter: syntax error"),
            "{message}"
        );

        let text = BASE.replace("destination = \"script\"", "destination = \"scripts\"");
        let message = error(&text);
        assert!(
            message.contains("routes[1].destination: no destination is named \"scripts\""),
            "{message}"
        );

        let text = BASE.replace(
            "source = \"stripe\"\ndestination = \"script\"",
            "source = \"github\"\ndestination = \"script\"",
        );
        assert!(error(&text).contains("routes[1].source: no source is named \"github\""));

        let text =
            format!("{BASE}\n[[routes]]\nname = \"stripe-to-script\"\nsource = \"stripe\"\ndestination = \"script\"\n");
        assert!(error(&text).contains("routes[2].name: route \"stripe-to-script\" is defined twice"));

        let text = BASE.replace(
            "url = \"https://orders.internal/webhooks\"",
            "url = \"orders.internal\"",
        );
        assert!(error(&text).contains("destinations[0].url:"));

        let text = BASE.replace("command = [\"/usr/local/bin/on-event\", \"--quiet\"]", "command = []");
        assert!(error(&text).contains("destinations[1].command:"));

        let text = BASE.replace("type = \"exec\"", "type = \"queue\"");
        assert!(error(&text).contains("destinations[1].type: unknown destination type \"queue\""));

        let text = BASE.replace(
            "secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
            "secret = \"whsec_!!\"",
        );
        let message = error(&text);
        assert!(message.contains(":14: destinations[0].secret:"), "{message}");
        assert!(!message.contains("!!"), "{message}");

        let text = BASE.replace("env:GATEHOUSE_TEST_ORDERS_TOKEN", "env:GATEHOUSE_TEST_UNSET_TOKEN");
        assert!(error(&text).contains(
            "destinations[0].headers.authorization: environment variable GATEHOUSE_TEST_UNSET_TOKEN is not set"
        ));

        let text = BASE.replace("cap = \"1h\"", "cap = \"1s\"");
        assert!(error(&text).contains("routes[0].retry.cap:"));

        let text = format!("{BASE}\n[delivery]\nlease = \"10s\"\n");
        let message = error(&text);
        assert!(
            message.contains("delivery.lease: the lease (10s) must be longer"),
            "{message}"
        );
        assert!(message.contains("30s on \"orders\""), "{message}");
    }
}
