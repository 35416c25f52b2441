//! `gatehouse events show --provider-id evt_…`: "was it processed?" in one
//! call: when the event arrived, how many times, how it was verified, and
//! every route's delivery state with its attempts and enrichment fetch.

use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Result};
use clap::Subcommand;
use serde::Serialize;

use gatehouse_core::{Attempt, Delivery, EventId, EventSummary, UnixMillis};
use gatehouse_store::{Enrichment, EventQuery, Store};

/// `gatehouse events …`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: EventsCommand,
}

/// The `events` subcommands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Show an event and everything that happened to it.
    #[command(group = clap::ArgGroup::new("which").required(true).args(["provider_id", "id"]))]
    Show {
        /// The config file.
        #[arg(long, short, env = "GATEHOUSE_CONFIG", default_value = "gatehouse.toml")]
        config: PathBuf,
        /// The provider's id: a Stripe event id (evt_…), a GitHub delivery
        /// GUID, or whatever the source dedups on.
        #[arg(long, value_name = "ID")]
        provider_id: Option<String>,
        /// gatehouse's own event id.
        #[arg(long, value_name = "EVENT_ID")]
        id: Option<String>,
        /// Only look in this source.
        #[arg(long)]
        source: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an `events` subcommand.
pub async fn run(args: EventsArgs) -> Result<()> {
    match args.command {
        EventsCommand::Show {
            config,
            provider_id,
            id,
            source,
            json,
        } => {
            let config = gatehouse_server::config::Config::load(&config)?;
            let store = gatehouse_server::storage::open(&config.file.storage).await?;
            let reports = match (provider_id.as_deref(), id.as_deref()) {
                (Some(provider_id), _) => lookup(&*store, provider_id, source.as_deref()).await?,
                (None, Some(id)) => {
                    let id: EventId = id.parse()?;
                    match store.event(id).await? {
                        Some(event) => vec![report(&*store, event.summary, event.verification).await?],
                        None => Vec::new(),
                    }
                }
                (None, None) => bail!("give --provider-id or --id"),
            };
            let asked = provider_id.or(id).unwrap_or_default();
            if json {
                let answer = serde_json::json!({ "found": !reports.is_empty(), "events": reports });
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else if reports.is_empty() {
                println!("{asked}: not received (no stored event has this id)");
            } else {
                for report in &reports {
                    print!("{}", render(report));
                }
            }
            if reports.is_empty() {
                bail!("no event {asked:?} was received");
            }
            Ok(())
        }
    }
}

/// One event with its deliveries.
#[derive(Debug, Serialize)]
pub struct EventReport {
    /// The event.
    #[serde(flatten)]
    pub event: EventSummary,
    /// How it was verified.
    pub verification: String,
    /// Every route's delivery.
    pub deliveries: Vec<DeliveryReport>,
}

/// One delivery with its attempts.
#[derive(Debug, Serialize)]
pub struct DeliveryReport {
    /// The delivery.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// Its attempts, first to last.
    pub attempt_log: Vec<Attempt>,
    /// The latest enrichment fetch, if the route enriches.
    pub enrichment: Option<Enrichment>,
}

/// Every stored event whose dedup key or provider id is `provider_id`.
pub async fn lookup(store: &dyn Store, provider_id: &str, source: Option<&str>) -> Result<Vec<EventReport>> {
    let events = store
        .list_events(&EventQuery {
            provider_event_id: Some(provider_id.to_string()),
            source: source.map(str::to_string),
            limit: 50,
            ..EventQuery::default()
        })
        .await?;
    let mut reports = Vec::with_capacity(events.len());
    for summary in events {
        let verification = store
            .event(summary.id)
            .await?
            .map(|event| event.verification)
            .unwrap_or_default();
        reports.push(report(store, summary, verification).await?);
    }
    Ok(reports)
}

async fn report(store: &dyn Store, event: EventSummary, verification: String) -> Result<EventReport> {
    let mut deliveries = Vec::new();
    for delivery in store.deliveries_for_event(event.id).await? {
        let attempt_log = store.attempts(delivery.id).await?;
        let enrichment = store.enrichment(delivery.id).await?;
        deliveries.push(DeliveryReport {
            delivery,
            attempt_log,
            enrichment,
        });
    }
    Ok(EventReport {
        event,
        verification,
        deliveries,
    })
}

/// `at` as RFC 3339 with milliseconds, UTC.
pub(crate) fn time(at: UnixMillis) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(at.0).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// The text form.
fn render(report: &EventReport) -> String {
    let event = &report.event;
    let mut out = format!(
        "event {} on source {}{}\n",
        event.id,
        event.source,
        event
            .provider_event_id
            .as_deref()
            .map(|id| format!(" (provider id {id})"))
            .unwrap_or_default()
    );
    let line = |out: &mut String, label: &str, value: String| out.push_str(&format!("  {label:<13}{value}\n"));
    line(&mut out, "type", event.event_type.clone().unwrap_or_else(|| "-".into()));
    line(
        &mut out,
        "received",
        format!("{} ({})", time(event.received_at), event.origin.as_str()),
    );
    let arrivals = match event.last_duplicate_at {
        Some(last) if event.duplicates > 0 => format!(
            "{} ({} duplicate{}, last at {})",
            event.duplicates + 1,
            event.duplicates,
            if event.duplicates == 1 { "" } else { "s" },
            time(last)
        ),
        _ => "1".into(),
    };
    line(&mut out, "arrivals", arrivals);
    line(&mut out, "verification", report.verification.clone());
    line(&mut out, "disposition", event.disposition.as_str().to_string());
    if let Some(pruned) = event.pruned_at {
        line(
            &mut out,
            "pruned",
            format!("{} (body and attempts removed)", time(pruned)),
        );
    }
    if report.deliveries.is_empty() {
        out.push_str("  no deliveries (no route takes it)\n");
    }
    for entry in &report.deliveries {
        let delivery = &entry.delivery;
        out.push_str(&format!(
            "  route {}: {} after {} attempt{} ({}){}\n",
            delivery.route,
            delivery.state.as_str(),
            delivery.attempts,
            if delivery.attempts == 1 { "" } else { "s" },
            delivery.id,
            delivery
                .last_error
                .as_deref()
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        ));
        for attempt in &entry.attempt_log {
            out.push_str(&format!(
                "    #{} {} {}{} in {} ms{}\n",
                attempt.number,
                time(attempt.started_at),
                attempt.outcome.as_str(),
                attempt
                    .status_code
                    .map(|status| format!(" (status {status})"))
                    .unwrap_or_default(),
                attempt.duration_ms,
                attempt
                    .error
                    .as_deref()
                    .map(|error| format!(": {error}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(enrichment) = &entry.enrichment {
            out.push_str(&format!(
                "    enrichment {} GET {} -> {}{}\n",
                time(enrichment.fetched_at),
                enrichment.url,
                enrichment
                    .status_code
                    .map(|status| format!("HTTP {status}"))
                    .unwrap_or_else(|| "no answer".into()),
                enrichment
                    .error
                    .as_deref()
                    .map(|error| format!(": {error}"))
                    .unwrap_or_default()
            ));
        }
    }
    out
}
