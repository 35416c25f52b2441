//! Group commit: concurrent requests share one transaction. Each handler
//! sends its event here and waits; a dispatcher gathers whatever is queued
//! into a batch while the previous batch commits, so under load one fsync
//! acknowledges hundreds of events, and at idle a lone event commits at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use gatehouse_core::NewEvent;
use gatehouse_store::{IngestOutcome, Store, StoreError};

/// Why an event could not be committed. Every variant means "answer 503".
#[derive(Debug, thiserror::Error)]
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
#[derive(Clone, Debug)]
pub struct Committer {
    queue: mpsc::Sender<(NewEvent, Reply)>,
}

impl Committer {
    /// Starts the dispatcher. It stops once every [`Committer`] clone is
    /// dropped and the queued events are committed; await the handle to know.
    pub fn start(store: Arc<dyn Store>, max_batch: usize, timeout: Duration) -> (Self, JoinHandle<()>) {
        // Enough room that bursts queue instead of failing; handlers wait on
        // their reply anyway, so the queue is bounded by in-flight requests.
        let (queue, receiver) = mpsc::channel(max_batch.saturating_mul(8).max(1024));
        let task = tokio::spawn(dispatch(store, receiver, max_batch, timeout));
        (Self { queue }, task)
    }

    /// Commits one event (in a batch with whatever else is waiting) and
    /// returns once its transaction has committed or failed.
    pub async fn commit(&self, event: NewEvent) -> Result<IngestOutcome, CommitError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((event, reply))
            .await
            .map_err(|_| CommitError::Stopped)?;
        answer.await.map_err(|_| CommitError::Stopped)?
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
    let size = events.len();
    match tokio::time::timeout(timeout, store.ingest(events)).await {
        Ok(Ok(outcomes)) if outcomes.len() == size => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Ok(Ok(outcomes)) => {
            tracing::error!(
                expected = size,
                got = outcomes.len(),
                "Store returned the wrong number of outcomes."
            );
            fail_all(replies, || {
                CommitError::Store(StoreError::Internal("outcome count mismatch".into()))
            });
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, batch = size, "Batch not committed; answering 503.");
            let message = error.to_string();
            let unavailable = error.is_unavailable();
            fail_all(replies, || {
                if unavailable {
                    CommitError::Store(StoreError::Unavailable(message.clone()))
                } else {
                    CommitError::Store(StoreError::Internal(message.clone()))
                }
            });
        }
        Err(_) => {
            tracing::warn!(batch = size, ?timeout, "Batch commit timed out; answering 503.");
            fail_all(replies, || CommitError::TimedOut(timeout));
        }
    }
}

fn fail_all(replies: Vec<Reply>, error: impl Fn() -> CommitError) {
    for reply in replies {
        let _ = reply.send(Err(error()));
    }
}
