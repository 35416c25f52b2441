//! `gatehouse prune [--dry-run] [--source S]`: applies the sources'
//! `retention` now (the server also does it in the background), or with
//! `--dry-run` says what would go. Pruned events stay as tombstones.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use gatehouse_core::{NewAuditEntry, UnixMillis};
use gatehouse_server::config::Config;
use gatehouse_server::retention;

/// Arguments of `gatehouse prune`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// The config file (each source's `retention` says what goes).
    #[arg(long, short, env = "GATEHOUSE_CONFIG", default_value = "gatehouse.toml")]
    pub config: PathBuf,
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Count what would be pruned; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Prunes (or counts) every retained source, or the one asked for.
pub async fn run(args: PruneArgs) -> Result<()> {
    let config = Config::load(&args.config)?;
    let mut sources = retention::retained_sources(&config);
    if let Some(only) = &args.source {
        if !config.file.sources.iter().any(|s| &s.name == only) {
            bail!("no source is named {only:?} in {}", args.config.display());
        }
        sources.retain(|(name, _)| name == only);
        if sources.is_empty() {
            bail!("source {only:?} has no retention (set e.g. retention = \"30d\" on it)");
        }
    }
    if sources.is_empty() {
        println!("no source has a retention; nothing to prune");
        return Ok(());
    }
    let store = gatehouse_server::storage::open(&config.file.storage)
        .await
        .with_context(|| {
            format!(
                "cannot open storage {}",
                crate::cli::redact_url(&config.file.storage.url)
            )
        })?;
    let actor = gatehouse_console::auth::Principal::cli().actor.audit_name();
    for (source, keep) in sources {
        let keep_text = humantime::format_duration(keep).to_string();
        let report = retention::prune_source(&*store, &source, keep, args.dry_run, |so_far| {
            eprintln!("… {source}: {} events pruned so far", so_far.events);
        })
        .await
        .with_context(|| format!("pruning {source}"))?;
        if args.dry_run {
            println!(
                "dry run: {source}: {} events and {} attempts older than {keep_text} would be pruned; nothing was changed",
                report.events, report.attempts
            );
            continue;
        }
        println!(
            "{source}: pruned {} events and {} attempts older than {keep_text} (tombstones kept)",
            report.events, report.attempts
        );
        let entry = NewAuditEntry {
            at: UnixMillis::now(),
            actor: actor.clone(),
            action: "source.prune".into(),
            object: format!("source:{source}"),
            remote_addr: None,
            note: None,
            details: serde_json::to_string(&report).unwrap_or_default(),
        };
        if let Err(error) = store.append_audit(entry).await {
            eprintln!("warning: the audit log could not be written: {error}");
        }
    }
    Ok(())
}
