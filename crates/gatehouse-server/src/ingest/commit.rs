//! Group commit: concurrent requests share one transaction. Each handler
//! sends its event here and waits; a dispatcher gathers whatever is queued
//! into a batch while the previous batch commits, so under load one fsync
//! acknowledges hundreds of events, and at idle a lone event commits at once.
//! A store that merges concurrent ingests itself (SQLite's single writer)
//! gets each event directly, without the dispatcher in between.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use gatehouse_core::NewEvent;
use gatehouse_store::{IngestOutcome, Store, StoreError};

/// Why an event could not be committed. Every variant means "answer 503".
#[derive(Clone, Debug, thiserror::Error)]
pub enum CommitError {
    /// The store failed the batch.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The batch did not commit within `server.commit_timeout`.
    #[error("the commit did not finish within {0:?}")]
    TimedOut(Duration),
    /// The server is shutting down and the committer has stopped.
    #[error("the committer has stopped")]
    Stopped,
}

type Reply = oneshot::Sender<Result<IngestOutcome, CommitError>>;

/// The handle handlers use to commit events.
#[derive(Clone)]
pub struct Committer {
    route: Route,
}

/// How events reach the store.
#[derive(Clone)]
enum Route {
    /// Through the dispatcher, which gathers them into batches.
    Gathered(mpsc::Sender<(NewEvent, Reply)>),
    /// Straight to a store that gathers concurrent ingests itself.
    Direct { store: Arc<dyn Store>, timeout: Duration },
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let route = match &self.route {
            Route::Gathered(_) => "gathered",
            Route::Direct { .. } => "direct",
        };
        f.debug_struct("Committer").field("route", &route).finish()
    }
}

impl Committer {
    /// Starts the dispatcher (unless the store gathers ingests itself). It
    /// stops once every [`Committer`] clone is dropped and the queued
    /// events are committed; await the handle to know.
    pub fn start(store: Arc<dyn Store>, max_batch: usize, timeout: Duration) -> (Self, JoinHandle<()>) {
        if store.gathers_ingests() {
            // Nothing queues here: each request awaits its own commit, and
            // graceful shutdown waits for the requests.
            let route = Route::Direct { store, timeout };
            return (Self { route }, tokio::spawn(async {}));
        }
        // Enough room that bursts queue instead of failing; handlers wait on
        // their reply anyway, so the queue is bounded by in-flight requests.
        let (queue, receiver) = mpsc::channel(max_batch.saturating_mul(8).max(1024));
        let task = tokio::spawn(dispatch(store, receiver, max_batch, timeout));
        let route = Route::Gathered(queue);
        (Self { route }, task)
    }

    /// Commits one event (in a batch with whatever else is waiting) and
    /// returns once its transaction has committed or failed.
    pub async fn commit(&self, event: NewEvent) -> Result<IngestOutcome, CommitError> {
        match &self.route {
            Route::Gathered(queue) => {
                let (reply, answer) = oneshot::channel();
                queue.send((event, reply)).await.map_err(|_| CommitError::Stopped)?;
                answer.await.map_err(|_| CommitError::Stopped)?
            }
            Route::Direct { store, timeout } => ingest_within(&**store, vec![event], *timeout)
                .await?
                .pop()
                .ok_or_else(|| CommitError::Store(StoreError::Internal("no outcome for the event".into()))),
        }
    }
}

async fn dispatch(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<(NewEvent, Reply)>,
    max_batch: usize,
    timeout: Duration,
) {
    let parallel = store.max_concurrent_batches().max(1);
    let slots = Arc::new(Semaphore::new(parallel));
    let mut buffer = Vec::with_capacity(max_batch);
    loop {
        // Waiting for a free slot *before* collecting is what makes batches
        // grow under load: events queue while the previous commit runs.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        if receiver.recv_many(&mut buffer, max_batch).await == 0 {
            break;
        }
        if buffer.len() < max_batch {
            // Handlers that are mid-flight on other workers are about to
            // queue their events; one yield lets them join this batch
            // instead of paying for a commit of their own.
            tokio::task::yield_now().await;
            while buffer.len() < max_batch {
                match receiver.try_recv() {
                    Ok(item) => buffer.push(item),
                    Err(_) => break,
                }
            }
        }
        let batch = std::mem::replace(&mut buffer, Vec::with_capacity(max_batch));
        let store = store.clone();
        tokio::spawn(async move {
            commit_batch(&*store, batch, timeout).await;
            drop(slot);
        });
    }
    // Every sender is gone: wait for the batches still committing.
    let _ = slots.acquire_many(parallel as u32).await;
}

async fn commit_batch(store: &dyn Store, batch: Vec<(NewEvent, Reply)>, timeout: Duration) {
    let (events, replies): (Vec<NewEvent>, Vec<Reply>) = batch.into_iter().unzip();
    match ingest_within(store, events, timeout).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// Commits `events` in one [`Store::ingest`] call within `timeout`, and
/// checks the store returned one outcome per event.
async fn ingest_within(
    store: &dyn Store,
    events: Vec<NewEvent>,
    timeout: Duration,
) -> Result<Vec<IngestOutcome>, CommitError> {
    let size = events.len();
    match tokio::time::timeout(timeout, store.ingest(events)).await {
        Ok(Ok(outcomes)) if outcomes.len() == size => Ok(outcomes),
        Ok(Ok(outcomes)) => {
            tracing::error!(
                expected = size,
                got = outcomes.len(),
                "Store returned the wrong number of outcomes."
            );
            Err(CommitError::Store(StoreError::Internal(
                "outcome count mismatch".into(),
            )))
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, batch = size, "Batch not committed; answering 503.");
            Err(CommitError::Store(error))
        }
        Err(_) => {
            tracing::warn!(batch = size, ?timeout, "Batch commit timed out; answering 503.");
            Err(CommitError::TimedOut(timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use gatehouse_store::conformance::sample_event;
    use gatehouse_store::{IngestOutcome, Store};
    use gatehouse_store_sqlite::{SqliteOptions, SqliteStore};

    use super::Committer;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gathering_store_gets_each_event_directly_and_dedupes_across_requests() {
        let dir = tempfile::tempdir().expect("dir");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&dir.path().join("g.db"), SqliteOptions::default()).expect("open"));
        let (committer, dispatcher) = Committer::start(store.clone(), 512, Duration::from_secs(5));
        assert!(format!("{committer:?}").contains("direct"), "{committer:?}");
        dispatcher.await.expect("no dispatcher runs for a gathering store");

        // Concurrent requests, two of them for the same provider event.
        let commits: Vec<_> = (0..40)
            .map(|n| {
                let committer = committer.clone();
                let key = if n == 39 {
                    "evt_0".to_string()
                } else {
                    format!("evt_{n}")
                };
                tokio::spawn(async move { committer.commit(sample_event("stripe", &key)).await })
            })
            .collect();
        let mut stored = 0;
        let mut duplicates = 0;
        for commit in commits {
            match commit.await.expect("task").expect("committed") {
                IngestOutcome::Stored => stored += 1,
                IngestOutcome::Duplicate { .. } => duplicates += 1,
            }
        }
        assert_eq!((stored, duplicates), (39, 1));
        let counts = store.source_counts().await.expect("counts");
        assert_eq!(counts.len(), 1);
        assert_eq!((counts[0].events, counts[0].duplicates), (39, 1));
    }
}
