//! Records verification failures off the request path: handlers answer 401
//! at once and hand the record to a background task that writes them in
//! batches. Under a flood the queue fills and records are dropped (and
//! counted), so an attacker cannot slow ingest down by failing on purpose.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use gatehouse_core::VerificationFailure;
use gatehouse_store::Store;

/// Hands failure records to the background writer.
#[derive(Clone, Debug)]
pub struct FailureRecorder {
    queue: mpsc::Sender<VerificationFailure>,
    dropped: Arc<AtomicU64>,
}

impl FailureRecorder {
    /// Starts the writer task; it ends when every recorder is dropped.
    pub fn start(store: Arc<dyn Store>) -> (Self, JoinHandle<()>) {
        let (queue, mut receiver) = mpsc::channel::<VerificationFailure>(4096);
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(256);
            while receiver.recv_many(&mut batch, 256).await > 0 {
                if let Err(error) = store.record_verification_failures(std::mem::take(&mut batch)).await {
                    tracing::warn!(%error, "Could not record verification failures.");
                }
            }
        });
        (
            Self {
                queue,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            task,
        )
    }

    /// Queues a record without waiting; drops it if the queue is full.
    pub fn record(&self, failure: VerificationFailure) {
        if self.queue.try_send(failure).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
