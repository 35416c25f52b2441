//! Command-line interface: `serve`, `check-config`, `replay`, `retry`,
//! `pause` and `resume`.

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use gatehouse_core::{DeliveryId, DeliveryState, UnixMillis};
use gatehouse_deliver::replay::{ReplayRoutes, Selection};
use gatehouse_server::config::Config;
use gatehouse_server::Gateway;
use gatehouse_store::Store;

/// Self-hosted inbound webhook gateway: verify, store, route, deliver.
#[derive(Debug, Parser)]
#[command(name = "gatehouse", version, about)]
pub struct Cli {
    /// Log filter (tracing EnvFilter syntax); GATEHOUSE_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive webhooks. Without --config and without ./gatehouse.toml,
    /// starts the demo (config and SQLite under ./gatehouse-data/).
    Serve {
        /// The config file.
        #[arg(long, short, env = "GATEHOUSE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a config file without serving; exits non-zero on the first error.
    CheckConfig {
        /// The config file.
        #[arg(default_value = "gatehouse.toml")]
        config: PathBuf,
    },
    /// Deliver stored events again: new deliveries on every route that
    /// takes them, picked up by the running gatehouse processes.
    #[command(group = clap::ArgGroup::new("selection").required(true).args(["events", "source"]))]
    Replay {
        /// The config file (its routes decide where events go).
        #[arg(long, short, env = "GATEHOUSE_CONFIG", default_value = "gatehouse.toml")]
        config: PathBuf,
        /// Events to replay, by id (evt_…); repeat the flag or list several.
        #[arg(long = "event", value_name = "EVENT_ID", num_args = 1..)]
        events: Vec<String>,
        /// Replay events of this source received in a time range.
        #[arg(long, conflicts_with = "events")]
        source: Option<String>,
        /// Only event types matching this glob, e.g. "payment_intent.*".
        #[arg(long = "type", value_name = "GLOB", requires = "source")]
        event_type: Option<String>,
        /// Start of the range, as a duration before now, e.g. 2h or 3days.
        #[arg(long, value_name = "DURATION", requires = "source", conflicts_with = "from")]
        since: Option<String>,
        /// Start of the range, e.g. 2024-05-01T00:00:00Z.
        #[arg(long, value_name = "RFC3339", requires = "source")]
        from: Option<String>,
        /// End of the range, exclusive (default: now).
        #[arg(long, value_name = "RFC3339", requires = "source")]
        until: Option<String>,
        /// Only this route.
        #[arg(long)]
        route: Option<String>,
        /// Count what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Retry dead deliveries: by id, or every dead delivery of a route.
    #[command(group = clap::ArgGroup::new("selection").required(true).args(["deliveries", "route"]))]
    Retry {
        /// The config file.
        #[arg(long, short, env = "GATEHOUSE_CONFIG", default_value = "gatehouse.toml")]
        config: PathBuf,
        /// Deliveries to retry, by id (dlv_…); repeat the flag or list several.
        #[arg(long = "delivery", value_name = "DELIVERY_ID", num_args = 1..)]
        deliveries: Vec<String>,
        /// Retry the dead deliveries of this route (with --dead).
        #[arg(long, requires = "dead", conflicts_with = "deliveries")]
        route: Option<String>,
        /// Select the dead deliveries (the only ones that can be retried).
        #[arg(long, requires = "route")]
        dead: bool,
        /// Count what would be retried; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Pause a route: its deliveries are held (still created) until resumed.
    Pause {
        /// The config file.
        #[arg(long, short, env = "GATEHOUSE_CONFIG", default_value = "gatehouse.toml")]
        config: PathBuf,
        /// The route.
        route: String,
    },
    /// Resume a paused route: its held deliveries go out.
    Resume {
        /// The config file.
        #[arg(long, short, env = "GATEHOUSE_CONFIG", default_value = "gatehouse.toml")]
        config: PathBuf,
        /// The route.
        route: String,
    },
    /// Send a test request signed exactly as a provider would sign it.
    Send(crate::send::SendArgs),
    /// Manage console users: add, list, disable, enable, reset-password.
    Users(crate::access::UsersArgs),
    /// Manage API tokens: create (secret shown once), list, revoke.
    Tokens(crate::access::TokensArgs),
    /// Recover events a source missed from the provider's API (Stripe
    /// events, GitHub hook deliveries), exactly once.
    Backfill(crate::backfill::BackfillArgs),
    /// Look events up: `events show --provider-id evt_…` answers "was it processed?".
    Events(crate::events::EventsArgs),
    /// Follow events as they are committed, one line each, until Ctrl-C.
    Tail(crate::tail::TailArgs),
    /// Apply the sources' `retention` now: old events whose deliveries are
    /// final lose body, headers and attempts and stay as tombstones.
    Prune(crate::prune::PruneArgs),
}

/// Runs the chosen subcommand.
pub async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve { config } => serve(config).await,
        Command::CheckConfig { config } => check_config(&config),
        Command::Replay {
            config,
            events,
            source,
            event_type,
            since,
            from,
            until,
            route,
            dry_run,
        } => {
            let selection = match source {
                Some(source) => range(source, event_type, since, from, until)?,
                None => Selection::Events(parse_ids(&events)?),
            };
            replay(&config, &selection, route.as_deref(), dry_run).await
        }
        Command::Retry {
            config,
            deliveries,
            route,
            dead: _,
            dry_run,
        } => retry(&config, &deliveries, route.as_deref(), dry_run).await,
        Command::Pause { config, route } => set_paused(&config, &route, true).await,
        Command::Resume { config, route } => set_paused(&config, &route, false).await,
        Command::Send(args) => crate::send::run(args).await,
        Command::Users(args) => crate::access::users(args).await,
        Command::Tokens(args) => crate::access::tokens(args).await,
        Command::Backfill(args) => crate::backfill::run(args).await,
        Command::Events(args) => crate::events::run(args).await,
        Command::Tail(args) => crate::tail::run(args).await,
        Command::Prune(args) => crate::prune::run(args).await,
    }
}

/// The time range of `replay --source`.
fn range(
    source: String,
    event_type: Option<String>,
    since: Option<String>,
    from: Option<String>,
    until: Option<String>,
) -> Result<Selection> {
    let now = SystemTime::now();
    let start = match (since, from) {
        (Some(since), _) => {
            let ago = humantime::parse_duration(&since)
                .with_context(|| format!("--since {since:?} is not a duration (expected e.g. 30m, 2h, 3days)"))?;
            now.checked_sub(ago).unwrap_or(UNIX_EPOCH)
        }
        (None, Some(from)) => parse_time("--from", &from)?,
        (None, None) => bail!(
            "give --since (e.g. --since 2h) or --from (e.g. --from 2024-05-01T00:00:00Z); \
             replaying a source's whole history must be asked for explicitly"
        ),
    };
    let end = match until {
        Some(until) => parse_time("--until", &until)?,
        None => now,
    };
    Ok(Selection::Range {
        source,
        event_type,
        from: millis(start),
        to: millis(end),
    })
}

fn parse_time(flag: &str, text: &str) -> Result<SystemTime> {
    humantime::parse_rfc3339_weak(text)
        .with_context(|| format!("{flag} {text:?} is not a time (expected RFC 3339, e.g. 2024-05-01T12:00:00Z)"))
}

fn millis(time: SystemTime) -> UnixMillis {
    UnixMillis(
        time.duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0),
    )
}

fn parse_ids<T>(texts: &[String]) -> Result<Vec<T>>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    texts
        .iter()
        .flat_map(|text| text.split(','))
        .filter(|text| !text.trim().is_empty())
        .map(|text| text.trim().parse::<T>().map_err(anyhow::Error::from))
        .collect()
}

/// Loads the config and opens its storage.
pub(crate) async fn open(config_path: &Path) -> Result<(Config, Arc<dyn Store>)> {
    let config = Config::load(config_path)?;
    let store = gatehouse_server::storage::open(&config.file.storage)
        .await
        .with_context(|| format!("cannot open storage {}", redact_url(&config.file.storage.url)))?;
    Ok((config, store))
}

async fn replay(config_path: &Path, selection: &Selection, route: Option<&str>, dry_run: bool) -> Result<()> {
    let (config, store) = open(config_path).await?;
    if let Some(route) = route {
        // Checked here too, so the message names the config file.
        ReplayRoutes::new(&config.file.routes)
            .map_err(anyhow::Error::msg)?
            .only(route)?;
    }
    // Through the audited action, as `cli:<os user>`.
    let state = gatehouse_server::console_state(&config, store)?;
    let mut pages = 0;
    let report = gatehouse_console::actions::replay_with_progress(
        &state,
        &gatehouse_console::auth::Principal::cli(),
        selection,
        route,
        dry_run,
        |progress| {
            pages += 1;
            if pages > 1 {
                eprintln!(
                    "… {} events read, {} deliveries so far",
                    progress.events, progress.deliveries
                );
            }
        },
    )
    .await?;
    let events = plural(report.events, "event");
    let mut unrouted = if report.unrouted > 0 {
        format!(" ({} on no route)", report.unrouted)
    } else {
        String::new()
    };
    if report.pruned > 0 {
        unrouted.push_str(&format!(
            " ({} skipped: pruned by retention, only a tombstone is left)",
            report.pruned
        ));
    }
    if dry_run {
        println!(
            "dry run: {} would be created for {events}{unrouted}; nothing was changed",
            plural(report.deliveries, "delivery")
        );
    } else {
        println!(
            "replayed {events}{unrouted}: {} created",
            plural(report.deliveries, "delivery")
        );
    }
    Ok(())
}

async fn retry(config_path: &Path, deliveries: &[String], route: Option<&str>, dry_run: bool) -> Result<()> {
    let ids: Vec<DeliveryId> = parse_ids(deliveries)?;
    let (config, store) = open(config_path).await?;
    let count = match route {
        Some(route) => {
            if !config.file.routes.iter().any(|r| r.name == route) {
                bail!("no route is named {route:?} in {}", config_path.display());
            }
            let state = gatehouse_server::console_state(&config, store)?;
            let mut pages = 0;
            gatehouse_console::actions::retry_dead_with_progress(
                &state,
                &gatehouse_console::auth::Principal::cli(),
                route,
                None,
                dry_run,
                |count| {
                    pages += 1;
                    if pages > 1 {
                        eprintln!("… {count} so far");
                    }
                },
            )
            .await?
        }
        None if dry_run => {
            let mut dead = 0;
            for id in &ids {
                if store
                    .delivery(*id)
                    .await?
                    .is_some_and(|d| d.state == DeliveryState::Dead)
                {
                    dead += 1;
                }
            }
            dead
        }
        None => {
            let mut retried = 0;
            for chunk in ids.chunks(gatehouse_console::actions::MAX_IDS) {
                retried += gatehouse_console::actions::retry_deliveries(
                    &*store,
                    &gatehouse_console::auth::Principal::cli(),
                    chunk,
                )
                .await?;
            }
            retried
        }
    };
    let what = plural(count, "dead delivery");
    if dry_run {
        println!("dry run: {what} would be retried; nothing was changed");
    } else {
        println!("retried {what}: due again now");
    }
    if route.is_none() && (count as usize) < ids.len() {
        eprintln!(
            "{} of the {} given were not dead (or do not exist) and were left alone",
            ids.len() - count as usize,
            ids.len()
        );
    }
    Ok(())
}

async fn set_paused(config_path: &Path, route: &str, paused: bool) -> Result<()> {
    let (config, store) = open(config_path).await?;
    if !config.file.routes.iter().any(|r| r.name == route) {
        bail!("no route is named {route:?} in {}", config_path.display());
    }
    let state = gatehouse_server::console_state(&config, store)?;
    gatehouse_console::actions::set_route_paused(&state, &gatehouse_console::auth::Principal::cli(), route, paused)
        .await?;
    if paused {
        println!("route {route} paused: its deliveries are held until `gatehouse resume {route}`");
    } else {
        println!("route {route} resumed");
    }
    Ok(())
}

/// `1 event`, `3 events`; `1 dead delivery`, `2 dead deliveries`.
fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else if let Some(stem) = noun.strip_suffix('y') {
        format!("{count} {stem}ies")
    } else {
        format!("{count} {noun}s")
    }
}

fn check_config(path: &Path) -> Result<()> {
    let config = Config::load(path)?;
    println!(
        "{}: ok ({} source{}, {} route{}, {} destination{}, storage {})",
        path.display(),
        config.file.sources.len(),
        if config.file.sources.len() == 1 { "" } else { "s" },
        config.file.routes.len(),
        if config.file.routes.len() == 1 { "" } else { "s" },
        config.file.destinations.len(),
        if config.file.destinations.len() == 1 { "" } else { "s" },
        redact_url(&config.file.storage.url)
    );
    Ok(())
}

async fn serve(config_path: Option<PathBuf>) -> Result<()> {
    let default = PathBuf::from("gatehouse.toml");
    let (config, demo) = match config_path {
        Some(path) => (Config::load(&path)?, false),
        None if default.exists() => (Config::load(&default)?, false),
        None => {
            let demo = gatehouse_server::config::demo_config(Path::new("gatehouse-data"))
                .context("cannot write the demo config under ./gatehouse-data")?;
            (Config::load(&demo.path)?, true)
        }
    };
    let gateway = Gateway::start(&config).await?;
    let listener = tokio::net::TcpListener::bind(&config.file.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.file.server.listen))?;
    let address = listener.local_addr()?;
    // Tests and scripts read this line to find the port when listen uses port 0.
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    println!("gatehouse listening on {scheme}://{address}");
    if demo {
        let admin_password = crate::demo::ensure_admin(&*gateway.store()).await?;
        crate::demo::print_banner(&config, address, admin_password.as_deref());
    }
    tracing::info!(%address, storage = %redact_url(&config.file.storage.url), sources = config.file.sources.len(), "Serving.");
    gateway.serve(listener, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "Cannot listen for SIGTERM; only Ctrl-C stops the server.");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("Shutting down: no new connections; finishing commits.");
}

/// A storage URL without its password, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "event"), "1 event");
        assert_eq!(plural(0, "event"), "0 events");
        assert_eq!(plural(2, "dead delivery"), "2 dead deliveries");
    }

    #[test]
    fn ranges_need_a_start_and_parse_times() {
        let error = range("stripe".into(), None, None, None, None).expect_err("no start");
        assert!(error.to_string().contains("--since"), "{error}");
        let Selection::Range { from, to, .. } = range(
            "stripe".into(),
            None,
            None,
            Some("2024-05-01T00:00:00Z".into()),
            Some("2024-05-02T00:00:00Z".into()),
        )
        .expect("range") else {
            panic!("a range");
        };
        assert_eq!((from.0, to.0), (1_714_521_600_000, 1_714_608_000_000));
        assert!(range("s".into(), None, Some("soon".into()), None, None).is_err());
        assert!(range("s".into(), None, None, Some("yesterday".into()), None).is_err());
        let ids: Vec<DeliveryId> = parse_ids(&[format!("{},{}", DeliveryId::new(), DeliveryId::new())]).expect("ids");
        assert_eq!(ids.len(), 2);
        assert!(parse_ids::<DeliveryId>(&["evt_nope".into()]).is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/g.db"), "sqlite://data/g.db");
    }
}
