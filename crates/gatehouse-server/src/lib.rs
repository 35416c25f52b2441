//! The gatehouse server. A map of the pipeline as modules:
//!
//! - [`config`]: `gatehouse.toml`, validated, secrets resolved, errors with
//!   file, line and key; the embedded demo.
//! - [`storage`]: picks SQLite or PostgreSQL from the storage URL.
//! - [`ingest`]: `POST /in/{source}`: body limit, verify, identify, group
//!   commit, answer.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`backfill`]: recover missed events from the provider's API (Stripe,
//!   GitHub), on demand (`gatehouse backfill`) or on a schedule.
//! - delivery: the `gatehouse-deliver` engine, started here when
//!   `delivery.enabled`, stopped after ingest has drained.
//! - [`telemetry`]: ingest events as types, counters.
//! - [`tls`]: HTTPS served directly, when `server.tls` names the files.
//!
//! [`Gateway::start`] builds everything from a [`config::Config`];
//! [`Gateway::serve`] takes the listener and a shutdown signal, so tests bind
//! port 0 and stop the server when they like.
#![deny(missing_docs)]

pub mod backfill;
pub mod config;
pub mod health;
pub mod ingest;
pub mod poll;
pub mod retention;
pub mod storage;
pub mod telemetry;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use gatehouse_deliver::{Engine, EngineHandle, RouteTable};
use gatehouse_store::{Store, StoreError};

use config::Config;
use ingest::commit::Committer;
use ingest::failures::FailureRecorder;
use ingest::source::Source;
use ingest::IngestState;
use telemetry::Metrics;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("cannot open storage: {0}")]
    Storage(#[from] StoreError),
    /// The routes and destinations could not be built, or the delivery
    /// settings do not fit them (validation should have caught it).
    #[error("delivery: {0}")]
    Delivery(String),
    /// A setting validation should have caught.
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
    /// The outbound HTTPS client could not be set up (no TLS roots).
    #[error("cannot set up outbound HTTPS: {message}")]
    Outbound {
        /// What failed.
        message: String,
    },
    /// A source could not be built (validation should have caught it).
    #[error("source {source_name}: {message}")]
    Source {
        /// The source.
        source_name: String,
        /// What failed.
        message: String,
    },
}

/// A gateway ready to serve: storage open, sources built, committer and
/// delivery engine running.
pub struct Gateway {
    router: Router,
    store: Arc<dyn Store>,
    committer_task: JoinHandle<()>,
    failures_task: JoinHandle<()>,
    /// The delivery engine, when `delivery.enabled`.
    engine: Option<EngineHandle>,
    /// Scheduled backfills, when a source has `backfill = { … }`.
    backfill_task: Option<JoinHandle<()>>,
    /// The `provider = "poll"` sources' pollers.
    pollers: poll::Pollers,
    /// The retention pruner, when a source has `retention`.
    pruner: Option<retention::Pruner>,
    /// `server.tls`: serve HTTPS with it.
    tls: Option<Arc<tls::ServedCertificate>>,
}

impl Gateway {
    /// Opens storage, builds the sources from `config`, and starts the
    /// delivery engine when `delivery.enabled`.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let store = storage::open(&config.file.storage).await?;
        let mut sources = HashMap::new();
        for (source_config, secrets) in config.file.sources.iter().zip(&config.secrets) {
            // A poll source has no endpoint: /in/{name} answers 404.
            if source_config.provider == poll::PROVIDER {
                continue;
            }
            let routes: Vec<_> = config
                .file
                .routes
                .iter()
                .filter(|route| route.source == source_config.name)
                .collect();
            let source =
                Source::build(source_config, secrets, config.file.server.body_limit.0, &routes).map_err(|message| {
                    StartError::Source {
                        source_name: source_config.name.clone(),
                        message,
                    }
                })?;
            if source_config.provider == "none" {
                tracing::warn!(
                    source = %source_config.name,
                    "Source accepts UNVERIFIED requests (provider \"none\", insecure = true): anyone who can reach it can inject events."
                );
            }
            sources.insert(source_config.name.clone(), Arc::new(source));
        }
        let metrics = Arc::new(Metrics::new(sources.keys().map(String::as_str)));
        let (committer, committer_task) = Committer::start(
            store.clone(),
            config.file.server.max_batch,
            config.file.server.commit_timeout,
        );
        let (failures, failures_task) = FailureRecorder::start(store.clone());
        let ingest_state = IngestState {
            sources: Arc::new(sources),
            committer,
            failures: failures.clone(),
            metrics: metrics.clone(),
            public_url: config.file.server.public_url.as_deref().map(Arc::from),
            proxies: Arc::new(
                ingest::proxy::TrustedProxies::new(&config.file.server.trusted_proxies)
                    .map_err(|message| StartError::Config { message })?
                    .serving_tls(config.tls.is_some()),
            ),
            certificates: ingest::certificates::CertificateFetcher::new()
                .map_err(|message| StartError::Outbound { message })?,
        };
        let router = Router::new()
            .merge(ingest::router(ingest_state))
            .merge(health::router(health::HealthState {
                store: store.clone(),
                metrics,
                failures,
            }))
            .merge(gatehouse_console::router(console_state(config, store.clone())?));
        let engine = if config.file.delivery.enabled {
            Some(start_engine(config, store.clone()).await?)
        } else {
            tracing::info!("Delivery is disabled here (delivery.enabled = false); another process delivers.");
            None
        };
        let backfill_task = backfill::start_scheduler(config, store.clone());
        let pollers = poll::Pollers::start(config, store.clone())
            .map_err(|(source_name, message)| StartError::Source { source_name, message })?;
        let pruner = retention::Pruner::start(config, store.clone());
        Ok(Self {
            router,
            store,
            committer_task,
            failures_task,
            engine,
            backfill_task,
            pollers,
            pruner,
            tls: config.tls.clone(),
        })
    }

    /// The store, for callers that need it beside the server.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting connections,
    /// lets in-flight requests finish (each waits for its commit), waits
    /// for the committer to drain, and then stops the delivery engine
    /// (attempts in progress get `delivery.shutdown_grace`; deliveries not
    /// attempted are released for the next process).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let service = self.router.into_make_service_with_connect_info::<SocketAddr>();
        match self.tls {
            Some(tls) => {
                // TapIo (a no-op here) is what gives a custom listener
                // axum's ConnectInfo<SocketAddr>.
                let listener = tls::TlsListener::new(listener, tls)?.tap_io(|_| {});
                axum::serve(listener, service).with_graceful_shutdown(shutdown).await?;
            }
            None => {
                let listener = listener.tap_io(|tcp| {
                    // Small JSON answers must not wait for Nagle's algorithm.
                    let _ = tcp.set_nodelay(true);
                });
                axum::serve(listener, service).with_graceful_shutdown(shutdown).await?;
            }
        }
        // A backfill cut off mid-page loses nothing: what it stored is
        // committed, and the next run picks up the rest.
        if let Some(task) = self.backfill_task {
            task.abort();
        }
        // Likewise a poll or a prune batch: committed work stays, and the
        // next start skips what is already stored or pruned.
        self.pollers.shutdown().await;
        if let Some(pruner) = self.pruner {
            pruner.shutdown().await;
        }
        // The router (and with it every Committer clone) is gone now, so the
        // committer finishes the queued batches and stops.
        let _ = self.committer_task.await;
        let _ = self.failures_task.await;
        // Every acknowledged event is committed with its deliveries; the
        // engine now finishes or releases what it holds.
        if let Some(engine) = self.engine {
            engine.shutdown().await;
        }
        tracing::info!("Shut down cleanly; every received event was committed or answered.");
        Ok(())
    }
}

/// What the console and the API need from the config: the store and the
/// sources, routes and destinations with every secret left out.
pub fn console_state(config: &Config, store: Arc<dyn Store>) -> Result<gatehouse_console::ConsoleState, StartError> {
    let catalog = gatehouse_console::Catalog {
        sources: config
            .file
            .sources
            .iter()
            .map(|source| gatehouse_console::state::SourceInfo {
                name: source.name.clone(),
                provider: source.provider.clone(),
                events: source.events.clone(),
            })
            .collect(),
        routes: config.file.routes.clone(),
        destinations: config
            .file
            .destinations
            .iter()
            .map(gatehouse_console::state::DestinationInfo::from_config)
            .collect(),
    };
    // Cookies get `Secure` when people reach the console over HTTPS.
    let secure_cookies = config.tls.is_some()
        || config
            .file
            .server
            .public_url
            .as_deref()
            .is_some_and(|url| url.starts_with("https://"));
    let proxies = ingest::proxy::TrustedProxies::new(&config.file.server.trusted_proxies)
        .map_err(|message| StartError::Config { message })?;
    Ok(gatehouse_console::ConsoleState::new(store, catalog, secure_cookies)
        .map_err(StartError::Delivery)?
        .with_client_address(Arc::new(move |peer, headers| proxies.client_address(peer, headers))))
}

/// Builds the routes and starts the delivery engine.
async fn start_engine(config: &Config, store: Arc<dyn Store>) -> Result<EngineHandle, StartError> {
    let table = RouteTable::build_with_enrichment(&config.file.routes, &config.destinations, &config.enrichment)
        .map_err(|e| StartError::Delivery(e.to_string()))?;
    let owner = gatehouse_deliver::engine::default_owner();
    let engine = Engine::new(store, table, config.file.delivery.clone(), owner)
        .map_err(|e| StartError::Delivery(e.to_string()))?;
    Ok(engine.start().await?)
}
