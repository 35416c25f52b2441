//! Records finished attempts in batches, like ingest's group commit:
//! attempt tasks hand over their records and move on; one loop gathers
//! whatever is queued into one `finish_attempts` call (one transaction)
//! while the previous batch commits.
//!
//! A batch that fails (database down) is retried with backoff; the attempt
//! tasks wait meanwhile, which stops new claims. A `false` from the store
//! means the lease was lost: another worker took the delivery over after
//! it expired, and that worker's result counts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use gatehouse_core::{AttemptOutcome, FinishedAttempt, UnixMillis};
use gatehouse_store::Store;

/// Most attempts recorded in one transaction.
const MAX_BATCH: usize = 256;
/// Longest wait between two tries of a failing batch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The handle attempt tasks record through.
#[derive(Clone, Debug)]
pub(crate) struct Finisher {
    queue: mpsc::Sender<FinishedAttempt>,
}

impl Finisher {
    /// Starts the recording loop. It ends once every handle is dropped and
    /// the queue is recorded (or given up on: see [`Finisher::record`]).
    pub fn start(store: Arc<dyn Store>, owner: String, capacity: usize, wake: Arc<WakeHint>) -> (Self, JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(run(store, owner, receiver, wake));
        (Self { queue }, task)
    }

    /// Queues one record; waits while the queue is full (the database is
    /// slow or down).
    pub async fn record(&self, finished: FinishedAttempt) {
        if self.queue.send(finished).await.is_err() {
            // Only after the loop was aborted at shutdown; the lease will
            // expire and the delivery be attempted again.
            tracing::warn!("The attempt recorder has stopped; an attempt's result was not recorded.");
        }
    }
}

async fn run(store: Arc<dyn Store>, owner: String, mut receiver: mpsc::Receiver<FinishedAttempt>, wake: Arc<WakeHint>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut backoff = Duration::from_millis(50);
        let recorded = loop {
            match store.finish_attempts(&owner, batch.clone()).await {
                Ok(recorded) => break recorded,
                Err(error) => {
                    tracing::warn!(%error, batch = batch.len(), "Cannot record finished attempts; trying again.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        for (finished, recorded) in batch.iter().zip(recorded.iter().chain(std::iter::repeat(&false))) {
            if !recorded {
                tracing::warn!(delivery_id = %finished.delivery_id, "Lease lost: another worker took this delivery over; this attempt was not recorded.");
            } else if finished.attempt.outcome == AttemptOutcome::Retry {
                if let Some(at) = finished.next_attempt_at {
                    wake.note(at);
                }
            }
        }
        batch.clear();
    }
}

/// When this process next has retries due: the finisher notes each retry
/// it records, and the dispatcher wakes for the earliest instead of
/// waiting for the polling fallback (which still finds retries recorded by
/// other processes, or before a restart).
#[derive(Debug, Default)]
pub(crate) struct WakeHint {
    due: Mutex<BinaryHeap<Reverse<i64>>>,
    changed: Notify,
}

/// Most retry times remembered; past that, polling finds the rest.
const MAX_HINTS: usize = 4096;

impl WakeHint {
    fn due(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Reverse<i64>>> {
        // Held for a heap operation, never across an await. A poisoned lock
        // only means a panic elsewhere; the heap is intact.
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A retry is due at `at`.
    pub fn note(&self, at: UnixMillis) {
        let earlier = {
            let mut due = self.due();
            if due.len() >= MAX_HINTS {
                return;
            }
            let earlier = due.peek().is_none_or(|Reverse(first)| at.0 < *first);
            due.push(Reverse(at.0));
            earlier
        };
        if earlier {
            self.changed.notify_one();
        }
    }

    /// How long to wait at most from `now`: until the earliest retry, or `poll`.
    pub fn wait_time(&self, now: UnixMillis, poll: Duration) -> Duration {
        match self.due().peek() {
            None => poll,
            Some(Reverse(first)) => {
                Duration::from_millis(u64::try_from(first.saturating_sub(now.0)).unwrap_or(0)).min(poll)
            }
        }
    }

    /// A claim at `now` took everything due by then.
    pub fn claimed(&self, now: UnixMillis) {
        let mut due = self.due();
        while due.peek().is_some_and(|Reverse(first)| *first <= now.0) {
            due.pop();
        }
    }

    /// Resolves when an earlier retry was noted.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_tracks_the_earliest_retry() {
        let hint = WakeHint::default();
        let poll = Duration::from_secs(1);
        assert_eq!(hint.wait_time(UnixMillis(1000), poll), poll);
        hint.note(UnixMillis(1300));
        hint.note(UnixMillis(1200));
        hint.note(UnixMillis(5000));
        assert_eq!(hint.wait_time(UnixMillis(1000), poll), Duration::from_millis(200));
        assert_eq!(hint.wait_time(UnixMillis(1500), poll), Duration::ZERO);
        hint.claimed(UnixMillis(1100));
        assert_eq!(
            hint.wait_time(UnixMillis(1100), poll),
            Duration::from_millis(100),
            "not yet due: kept"
        );
        hint.claimed(UnixMillis(1300));
        assert_eq!(
            hint.wait_time(UnixMillis(1300), poll),
            poll,
            "5000 is further than the poll"
        );
        assert_eq!(hint.wait_time(UnixMillis(4500), poll), Duration::from_millis(500));
        hint.claimed(UnixMillis(5000));
        assert_eq!(hint.wait_time(UnixMillis(5000), poll), poll);
    }
}
