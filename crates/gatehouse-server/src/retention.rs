//! Retention: a source's `retention = "30d"` removes the body, headers and
//! attempts of its events once they are that old and every delivery of
//! theirs is final, keeping the rest as a tombstone (ids, type, times,
//! final states), so "was `evt_…` processed?" still answers afterwards.
//!
//! The pruner runs in the server, once shortly after start and then every
//! few minutes, in small batches with a pause between them: each batch is
//! one short transaction, so ingest (on SQLite, queued behind the same
//! writer) never waits for more than one batch. `gatehouse prune` runs the
//! same passes by hand, or counts them with `--dry-run`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use gatehouse_core::UnixMillis;
use gatehouse_store::{PruneReport, Store, StoreError};

use crate::config::Config;

/// Events pruned per transaction.
pub const BATCH: u32 = 500;
/// The pause between batches, which lets ingest batches in.
pub const PAUSE: Duration = Duration::from_millis(20);
/// The wait after start before the first pass (startup stays quick).
const FIRST_PASS_AFTER: Duration = Duration::from_secs(1);
/// The wait between passes.
const EVERY: Duration = Duration::from_secs(5 * 60);

/// The sources with a retention, and how long each keeps events.
pub fn retained_sources(config: &Config) -> Vec<(String, Duration)> {
    config
        .file
        .sources
        .iter()
        .filter_map(|source| source.retention.map(|keep| (source.name.clone(), keep)))
        .collect()
}

/// The cutoff for a retention measured back from `now`.
pub fn cutoff(now: UnixMillis, keep: Duration) -> UnixMillis {
    UnixMillis(
        now.0
            .saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// Prunes (or, with `dry_run`, counts) what `source` keeps past `keep`:
/// batches of [`BATCH`] with [`PAUSE`] between them until none is left.
/// `progress` sees the running total after each batch.
pub async fn prune_source(
    store: &dyn Store,
    source: &str,
    keep: Duration,
    dry_run: bool,
    mut progress: impl FnMut(PruneReport),
) -> Result<PruneReport, StoreError> {
    let now = UnixMillis::now();
    let older_than = cutoff(now, keep);
    if dry_run {
        return store.prune_events(source, older_than, BATCH, now, true).await;
    }
    let mut total = PruneReport::default();
    loop {
        let batch = store.prune_events(source, older_than, BATCH, now, false).await?;
        total.events += batch.events;
        total.attempts += batch.attempts;
        if batch.events == 0 {
            return Ok(total);
        }
        progress(total);
        tokio::time::sleep(PAUSE).await;
    }
}

/// The background pruner, stopped with [`Pruner::shutdown`].
#[derive(Debug)]
pub struct Pruner {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Pruner {
    /// Starts the pruner when any source has a retention.
    pub fn start(config: &Config, store: Arc<dyn Store>) -> Option<Self> {
        let sources = retained_sources(config);
        if sources.is_empty() {
            return None;
        }
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut wait = FIRST_PASS_AFTER;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped.changed() => return,
                }
                for (source, keep) in &sources {
                    let pass = prune_source(&*store, source, *keep, false, |_| {});
                    let result = tokio::select! {
                        result = pass => result,
                        _ = stopped.changed() => return,
                    };
                    match result {
                        Ok(report) if report.events > 0 => tracing::info!(
                            source = %source,
                            events = report.events,
                            attempts = report.attempts,
                            "Retention pruned events to tombstones."
                        ),
                        Ok(_) => {}
                        // The next pass tries again; ingest is unaffected.
                        Err(error) => tracing::warn!(source = %source, %error, "Retention pass failed."),
                    }
                }
                wait = EVERY;
            }
        });
        Some(Self { stop, task })
    }

    /// Stops the pruner between batches (a batch is one transaction: it
    /// commits or rolls back whole) and waits for it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_is_now_minus_retention() {
        assert_eq!(
            cutoff(UnixMillis(10_000_000), Duration::from_secs(3600)),
            UnixMillis(10_000_000 - 3_600_000)
        );
        assert_eq!(cutoff(UnixMillis(5), Duration::MAX).0, 5 - i64::MAX);
    }
}
