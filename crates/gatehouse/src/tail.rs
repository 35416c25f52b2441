//! `gatehouse tail`: events as they are committed, one line each (or one
//! JSON object each), until interrupted. Reads the store directly, so it
//! follows every gatehouse process that shares it.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

use gatehouse_core::EventSummary;
use gatehouse_store::tail::EventTail;

/// How often the store is asked for new events.
const POLL: Duration = Duration::from_millis(500);

/// `gatehouse tail`.
#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// The config file.
    #[arg(long, short, env = "GATEHOUSE_CONFIG", default_value = "gatehouse.toml")]
    pub config: PathBuf,
    /// Only this source's events.
    #[arg(long)]
    pub source: Option<String>,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One followed event, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Line<'a> {
    id: String,
    received_at: String,
    source: &'a str,
    event_type: Option<&'a str>,
    provider_event_id: Option<&'a str>,
    disposition: &'static str,
    origin: &'static str,
}

impl<'a> Line<'a> {
    fn of(event: &'a EventSummary) -> Self {
        Self {
            id: event.id.to_string(),
            received_at: crate::events::time(event.received_at),
            source: &event.source,
            event_type: event.event_type.as_deref(),
            provider_event_id: event.provider_event_id.as_deref(),
            disposition: event.disposition.as_str(),
            origin: event.origin.as_str(),
        }
    }

    fn text(&self) -> String {
        format!(
            "{}  {}  {}  {}  {}  {}",
            self.received_at,
            self.source,
            self.event_type.unwrap_or("-"),
            self.provider_event_id.unwrap_or("-"),
            self.disposition,
            self.id
        )
    }
}

/// Runs `gatehouse tail` until Ctrl-C, SIGTERM or a closed output.
pub async fn run(args: TailArgs) -> Result<()> {
    let (config, store) = crate::cli::open(&args.config).await?;
    if let Some(source) = &args.source {
        if !config.file.sources.iter().any(|s| &s.name == source) {
            bail!("{}: no source is named {source:?}", args.config.display());
        }
    }
    let mut tail = EventTail::starting_now(&*store, args.source.clone()).await?;
    eprintln!(
        "Following new events{} (Ctrl-C to stop).",
        args.source.as_deref().map(|s| format!(" of {s}")).unwrap_or_default()
    );
    let stop = crate::cli::shutdown_signal();
    tokio::pin!(stop);
    loop {
        match tail.poll(&*store).await {
            Ok(events) => {
                let mut out = std::io::stdout().lock();
                for event in &events {
                    let line = Line::of(event);
                    let text = if args.json {
                        serde_json::to_string(&line)?
                    } else {
                        line.text()
                    };
                    // A closed pipe (`gatehouse tail | head`) ends the tail.
                    if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                        return Ok(());
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "Could not read new events; trying again."),
        }
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::{Disposition, EventId, EventOrigin, UnixMillis};

    #[test]
    fn a_line_shows_dashes_for_what_is_missing() {
        let event = EventSummary {
            id: EventId::first_at(1_700_000_000_000),
            source: "stripe".into(),
            received_at: UnixMillis(1_700_000_000_000),
            dedup_key: "evt_1".into(),
            provider_event_id: None,
            event_type: Some("charge.refunded".into()),
            disposition: Disposition::Ignored,
            duplicates: 0,
            last_duplicate_at: None,
            origin: EventOrigin::Live,
            pruned_at: None,
        };
        let line = Line::of(&event);
        assert_eq!(
            line.text(),
            format!(
                "2023-11-14T22:13:20.000Z  stripe  charge.refunded  -  ignored  {}",
                event.id
            )
        );
        let json: serde_json::Value = serde_json::to_value(&line).expect("json");
        assert_eq!(json["provider_event_id"], serde_json::Value::Null);
        assert_eq!(json["origin"], "live");
    }
}
