//! `gatehouse backfill --source S --since 2h [--failed-only]`: recovers
//! events a source missed from the provider's API, with progress on stderr
//! and the summary on stdout; every run is audited as `source.backfill`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use gatehouse_core::UnixMillis;
use gatehouse_server::backfill::{audit, Backfiller, Summary, Window};
use gatehouse_server::config::Config;

/// Arguments of `gatehouse backfill`.
#[derive(Debug, clap::Args)]
pub struct BackfillArgs {
    /// The config file (the source's `api` table says how to reach the provider).
    #[arg(long, short, env = "GATEHOUSE_CONFIG", default_value = "gatehouse.toml")]
    pub config: PathBuf,
    /// The source to backfill (a stripe or github source with `api`).
    #[arg(long)]
    pub source: String,
    /// How far back to look, e.g. 30m, 2h, 3days.
    #[arg(long, value_name = "DURATION")]
    pub since: String,
    /// Only events whose webhook delivery failed (Stripe
    /// `delivery_success=false`; GitHub deliveries without a 2xx answer).
    #[arg(long)]
    pub failed_only: bool,
}

/// Runs one backfill.
pub async fn run(args: BackfillArgs) -> Result<()> {
    let ago = humantime::parse_duration(&args.since).with_context(|| {
        format!(
            "--since {:?} is not a duration (expected e.g. 30m, 2h, 3days)",
            args.since
        )
    })?;
    let config = Config::load(&args.config)?;
    let backfiller = Backfiller::from_config(&config, &args.source)?;
    let store = gatehouse_server::storage::open(&config.file.storage)
        .await
        .with_context(|| {
            format!(
                "cannot open storage {}",
                crate::cli::redact_url(&config.file.storage.url)
            )
        })?;
    let since = SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| UnixMillis(i64::try_from(d.as_millis()).unwrap_or(0)))
        .unwrap_or_default();
    let window = Window {
        since,
        failed_only: args.failed_only,
    };
    let mut progress = Progress::new();
    let summary = backfiller
        .run(&*store, window, &mut |summary| progress.update(summary))
        .await;
    progress.finish();
    let actor = gatehouse_console::auth::Principal::cli().actor.audit_name();
    if let Err(error) = audit(&*store, &actor, &summary).await {
        eprintln!("warning: the audit log could not be written: {error}");
    }
    println!("{}", describe(&summary));
    if let Some(error) = &summary.error {
        bail!("backfill of {} stopped early: {error}", summary.source);
    }
    Ok(())
}

/// `backfill stripe: listed 250, already stored 200, ingested 50, …`.
fn describe(summary: &Summary) -> String {
    let mut text = format!(
        "backfill {}{}: listed {}, already stored {}, ingested {}",
        summary.source,
        if summary.failed_only { " (failed only)" } else { "" },
        summary.listed,
        summary.already_stored,
        summary.ingested
    );
    if summary.redelivered > 0 {
        text.push_str(&format!(", redelivery requested {}", summary.redelivered));
    }
    text.push_str(&format!(
        ", failed {} ({} page{})",
        summary.failed,
        summary.pages,
        if summary.pages == 1 { "" } else { "s" }
    ));
    if summary.error.is_some() {
        text.push_str("; stopped early, partial");
    }
    text
}

/// Progress on stderr: one line redrawn in place on a terminal, a line per
/// page otherwise (logs, CI).
struct Progress {
    terminal: bool,
    spinner: usize,
    drawn: bool,
}

impl Progress {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            spinner: 0,
            drawn: false,
        }
    }

    fn update(&mut self, summary: &Summary) {
        const FRAMES: [char; 4] = ['|', '/', '-', '\\'];
        let line = format!(
            "page {}: listed {}, already stored {}, ingested {}, redelivery requested {}",
            summary.pages, summary.listed, summary.already_stored, summary.ingested, summary.redelivered
        );
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            self.spinner = (self.spinner + 1) % FRAMES.len();
            let _ = write!(stderr, "\r\x1b[2K{} {line}", FRAMES[self.spinner]);
        } else {
            let _ = writeln!(stderr, "… {line}");
        }
        let _ = stderr.flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.terminal && self.drawn {
            let _ = writeln!(std::io::stderr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_well() {
        let summary = Summary {
            source: "stripe".into(),
            pages: 3,
            listed: 250,
            already_stored: 200,
            ingested: 50,
            ..Summary::default()
        };
        assert_eq!(
            describe(&summary),
            "backfill stripe: listed 250, already stored 200, ingested 50, failed 0 (3 pages)"
        );
        let partial = Summary {
            redelivered: 2,
            error: Some("boom".into()),
            pages: 1,
            ..summary
        };
        assert!(describe(&partial).ends_with("redelivery requested 2, failed 0 (1 page); stopped early, partial"));
    }
}
