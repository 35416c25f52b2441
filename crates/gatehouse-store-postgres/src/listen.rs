//! Waking delivery workers when deliveries become due, in this process or
//! any other on the same database.
//!
//! Every write that makes deliveries due (ingest, replay, operator retry,
//! release, resuming a route) runs `pg_notify('gatehouse_deliveries',
//! <schema>)` in its transaction; PostgreSQL delivers the notification at
//! commit to every session listening on the channel. Each store keeps one
//! dedicated connection, outside the pool, that `LISTEN`s and turns the
//! notifications for its own schema into a wake-up of the local waiters.
//! The payload is the schema so that deployments (or test runs) sharing a
//! database in separate schemas do not wake each other.
//!
//! The listening connection starts with the first
//! [`Wakeups::wait`] (processes that never run workers, such as the CLI,
//! never open it). If it fails it is made again in the background with
//! backoff; meanwhile waits simply run to their timeout and the delivery
//! engine's polling covers the gap. A heartbeat query notices connections
//! that died without the socket saying so.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use gatehouse_store::StoreError;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::{debug, info, warn};

use crate::error::from_pg;

/// The channel notified when deliveries may have become due. The SQL that
/// notifies spells it out too: see `notify_if_any!` in `deliveries`.
pub(crate) const CHANNEL: &str = "gatehouse_deliveries";

/// The first wait before making the listening connection again.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// The longest wait between attempts to make it again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How often the listening connection is checked with a query.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// How long the heartbeat query may take before the connection counts as dead.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the listener and the waiters share.
#[derive(Default)]
struct Signal {
    notify: Notify,
    /// Set by a wake-up that may have found no waiter; the next wait
    /// returns at once instead of sleeping through work that is due.
    pending: AtomicBool,
}

impl Signal {
    fn wake(&self) {
        self.pending.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// Wake-ups for `wait_for_deliveries`, fed by local writes and by the
/// listening connection.
pub(crate) struct Wakeups {
    signal: Arc<Signal>,
    /// How to connect: the pool's settings, `search_path` included.
    config: tokio_postgres::Config,
    /// The pool's TLS connector.
    tls: MakeRustlsConnect,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Wakeups {
    pub(crate) fn new(config: tokio_postgres::Config, tls: MakeRustlsConnect) -> Self {
        Self {
            signal: Arc::new(Signal::default()),
            config,
            tls,
            listener: Mutex::new(None),
        }
    }

    /// Wakes this process's waiters (after a local commit that made work
    /// due; other processes hear of it through the notification).
    pub(crate) fn wake(&self) {
        self.signal.wake();
    }

    /// Returns when woken, or after `max_wait`. A wake-up that came while
    /// nobody waited makes the next wait return at once.
    pub(crate) async fn wait(&self, max_wait: Duration) {
        self.start_listener();
        let notified = self.signal.notify.notified();
        tokio::pin!(notified);
        // Registered before the flag is checked, so a wake-up in between
        // is not lost.
        notified.as_mut().enable();
        if self.signal.pending.swap(false, Ordering::SeqCst) {
            return;
        }
        if tokio::time::timeout(max_wait, notified).await.is_ok() {
            // This wake-up is taken: the next wait sleeps until the next one.
            self.signal.pending.store(false, Ordering::SeqCst);
        }
    }

    /// Starts the listening task unless it runs already.
    fn start_listener(&self) {
        let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        // The task never ends by itself; if it panicked, start another.
        if listener.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        *listener = Some(tokio::spawn(listen(
            self.config.clone(),
            self.tls.clone(),
            self.signal.clone(),
        )));
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        let listener = self.listener.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = listener.take() {
            // Dropping the task closes its connection.
            task.abort();
        }
    }
}

/// Keeps a listening connection up for as long as the store lives.
async fn listen(config: tokio_postgres::Config, tls: MakeRustlsConnect, signal: Arc<Signal>) {
    let mut backoff = FIRST_BACKOFF;
    let mut failed_before = false;
    loop {
        let listened = AtomicBool::new(false);
        let err = session(&config, &tls, &signal, &listened, failed_before).await;
        if listened.load(Ordering::SeqCst) {
            backoff = FIRST_BACKOFF;
        }
        failed_before = true;
        warn!(
            error = %err,
            retry_in_ms = backoff.as_millis() as u64,
            "The connection listening for delivery notifications failed; making it again. \
             Workers fall back to polling meanwhile."
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One listening connection, from connect until it fails; returns why.
async fn session(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
    signal: &Signal,
    listened: &AtomicBool,
    failed_before: bool,
) -> StoreError {
    let (client, mut connection) = match config.connect(tls.clone()).await {
        Ok(pair) => pair,
        Err(err) => return from_pg("connect to listen for deliveries", &err),
    };
    let schema = OnceLock::<String>::new();

    // Drives the connection: replies go to `client`, notifications here.
    let drive = async {
        loop {
            match poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(notification))) => {
                    // Another schema's deployment on the same database: not ours.
                    if schema.get().is_none_or(|mine| mine == notification.payload()) {
                        signal.wake();
                    }
                }
                Some(Ok(AsyncMessage::Notice(notice))) => {
                    debug!(
                        severity = notice.severity(),
                        message = notice.message(),
                        "PostgreSQL notice."
                    );
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return from_pg("listen for deliveries", &err),
                None => return StoreError::Unavailable("the listening connection closed".into()),
            }
        }
    };

    let work = async {
        let row = client
            .query_one("SELECT coalesce(current_schema(), '')", &[])
            .await
            .map_err(|e| from_pg("read the current schema", &e))?;
        let current: String = row.try_get(0).map_err(|e| from_pg("read the current schema", &e))?;
        let _ = schema.set(current);
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| from_pg("listen for deliveries", &e))?;
        listened.store(true, Ordering::SeqCst);
        if failed_before {
            info!("Listening for delivery notifications again.");
        } else {
            debug!("Listening for delivery notifications.");
        }
        // Notifications sent while nobody listened are lost: look once.
        signal.wake();
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            match tokio::time::timeout(HEARTBEAT_TIMEOUT, client.batch_execute("SELECT 1")).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(from_pg("check the listening connection", &err)),
                Err(_) => {
                    return Err(StoreError::Unavailable(
                        "the listening connection did not answer its heartbeat".into(),
                    ))
                }
            }
        }
    };

    let result: Result<std::convert::Infallible, StoreError> = tokio::select! {
        err = drive => Err(err),
        result = work => result,
    };
    match result {
        Err(err) => err,
    }
}
