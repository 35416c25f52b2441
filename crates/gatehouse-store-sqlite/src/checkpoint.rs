//! Checkpoints off the writer's thread.
//!
//! A checkpoint copies the pages committed to the WAL back into the
//! database file and syncs both. SQLite's automatic checkpoint runs inside
//! the commit that crosses 1,000 WAL pages, so the writer stopped taking
//! new events for the copy and two syncs every few dozen transactions: a
//! sixth of its time under load (profiled), and the largest source of tail
//! latency. Here the writer's connection has automatic checkpoints off and
//! this thread, on a connection of its own, checkpoints in `PASSIVE` mode,
//! which never blocks the writer or readers.
//!
//! A passive checkpoint only copies the frames committed when it starts,
//! and SQLite restarts the WAL from its beginning only once every frame in
//! it has been copied. Under steady load the writer always commits more
//! during the copy, so the WAL would grow without end. Once it holds
//! [`RESET_AFTER_FRAMES`], this thread asks the writer to run the final
//! checkpoint itself, between two transactions: it has only the frames of
//! the last few milliseconds left to copy, and nothing is committed while it
//! runs, so the WAL is then wholly copied and the next commit starts it
//! over.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rusqlite::Connection;

use gatehouse_store::StoreError;

use crate::{classify, open_connection, SqliteOptions};

/// How often the checkpointer copies what was committed since its last
/// pass: at the peak ingest rate measured here, about the 1,000 pages
/// SQLite's own automatic checkpoint would copy at a time.
const PASS_INTERVAL: Duration = Duration::from_millis(25);

/// WAL frames (8 KiB pages) after which the writer is asked to finish a
/// checkpoint so the WAL starts over: 32 MiB, below the 64 MiB the WAL is
/// truncated to after a restart.
const RESET_AFTER_FRAMES: i64 = 4096;

/// The writer's side: whether the checkpointer asked it to finish a
/// checkpoint, and the means to do so.
#[derive(Clone, Default)]
pub(crate) struct ResetRequest(Arc<AtomicBool>);

impl ResetRequest {
    /// Call between transactions on the writer's connection: runs the final
    /// passive checkpoint if one was asked for, so the WAL restarts at the
    /// next commit.
    pub(crate) fn finish_if_asked(&self, writer: &Connection) {
        if !self.0.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Err(error) = passive_checkpoint(writer) {
            tracing::debug!(%error, "The writer's closing checkpoint failed; the checkpointer will ask again.");
        }
    }

    fn ask(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The checkpointer thread. Dropping this handle stops it and waits until
/// its connection is closed.
pub(crate) struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        crate::close_and_join(&mut self.stop, self.thread.take(), "checkpoint");
    }
}

impl Checkpointer {
    /// Opens a connection to `path` and starts checkpointing on it; the
    /// writer must have turned its automatic checkpoints off.
    pub(crate) fn start(path: &Path, options: &SqliteOptions, reset: ResetRequest) -> Result<Self, StoreError> {
        let conn = open_connection(path, options, false)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("gatehouse-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &stopped, &reset))
            .map_err(|e| StoreError::Internal(format!("cannot start the SQLite checkpoint thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

fn run(conn: &Connection, stopped: &mpsc::Receiver<()>, reset: &ResetRequest) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PASS_INTERVAL) {
        match passive_checkpoint(conn) {
            Ok(WalState { frames, .. }) if frames >= RESET_AFTER_FRAMES => {
                // One more pass first: it copies what was committed during
                // the long one, so the writer is left with only a few pages.
                if let Err(error) = passive_checkpoint(conn) {
                    tracing::debug!(%error, "Checkpoint pass failed.");
                }
                reset.ask();
            }
            Ok(_) => {}
            // A busy database or a full disk: the writer's commits report
            // that themselves; retry at the next pass.
            Err(error) => tracing::debug!(%error, "Checkpoint pass failed."),
        }
    }
}

/// The WAL after a checkpoint.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WalState {
    /// Frames in the WAL.
    pub(crate) frames: i64,
    /// Frames copied into the database.
    pub(crate) copied: i64,
}

/// `PRAGMA wal_checkpoint(PASSIVE)`: copies every frame no reader still
/// needs, without waiting for any lock.
pub(crate) fn passive_checkpoint(conn: &Connection) -> Result<WalState, StoreError> {
    conn.prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")
        .map_err(|e| classify(&e))?
        .query_row([], |row| {
            Ok(WalState {
                frames: row.get(1)?,
                copied: row.get(2)?,
            })
        })
        .map_err(|e| classify(&e))
}

#[cfg(test)]
mod tests {
    use gatehouse_store::conformance::sample_event;
    use gatehouse_store::Store;

    use super::*;
    use crate::SqliteStore;

    fn wal_bytes(db: &Path) -> u64 {
        let mut name = db.as_os_str().to_owned();
        name.push("-wal");
        std::fs::metadata(name).map(|m| m.len()).unwrap_or(0)
    }

    #[tokio::test]
    async fn dropping_the_store_closes_its_connections_and_removes_the_wal() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("g.db");
        let store = SqliteStore::open(&db, SqliteOptions::default()).expect("open");
        for n in 0..200 {
            store
                .ingest(vec![sample_event("stripe", &format!("evt_{n}"))])
                .await
                .expect("ingest");
        }
        assert!(store
            .event_by_dedup_key("stripe", "evt_7")
            .await
            .expect("read")
            .is_some());
        assert!(wal_bytes(&db) > 0, "the WAL is in use while the store is open");
        drop(store);
        // No waiting here: the process may exit right after the drop.
        for suffix in ["-wal", "-shm"] {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            assert!(
                !Path::new(&name).exists(),
                "{suffix} left behind after the store was dropped"
            );
        }
        let conn = open_connection(&db, &SqliteOptions::default(), true).expect("reopen");
        let events: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .expect("count");
        assert_eq!(events, 200);
    }

    #[test]
    fn the_writers_closing_checkpoint_copies_everything_and_the_wal_starts_over() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("g.db");
        let writer = open_connection(&db, &SqliteOptions::default(), false).expect("writer");
        let other = open_connection(&db, &SqliteOptions::default(), false).expect("other");
        writer
            .execute_batch("PRAGMA wal_autocheckpoint = 0; CREATE TABLE t (x BLOB);")
            .expect("setup");
        let insert = |n: usize| {
            for _ in 0..n {
                writer
                    .execute("INSERT INTO t VALUES (zeroblob(8000))", [])
                    .expect("insert");
            }
        };
        let reset = ResetRequest::default();

        // Not asked: the writer copies nothing, so the WAL keeps growing.
        insert(50);
        reset.finish_if_asked(&writer);
        insert(1);
        let unasked = passive_checkpoint(&other).expect("state");
        assert!(unasked.frames > 50, "the WAL went on: {unasked:?}");

        // Asked: the writer copies what is left and the next commit starts
        // the WAL over. (`other` copied everything above, so the next
        // insert restarted it; these 50 frames are new.)
        insert(50);
        reset.ask();
        reset.finish_if_asked(&writer);
        assert!(!reset.0.load(Ordering::Acquire), "the request is used up");
        insert(1);
        let asked = passive_checkpoint(&other).expect("state");
        assert!(asked.frames < 10, "the WAL started over: {asked:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_continuous_ingest() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("g.db");
        let store = SqliteStore::open(&db, SqliteOptions::default()).expect("open");
        // About 90 MB of events, committed without pause: the WAL must be
        // restarted along the way, not grow to hold them all.
        let mut largest = 0;
        for round in 0..60 {
            let batch = (0..500)
                .map(|n| {
                    let mut event = sample_event("stripe", &format!("evt_{round}_{n}"));
                    event.body = vec![b'x'; 3000].into();
                    event
                })
                .collect();
            store.ingest(batch).await.expect("ingest");
            largest = largest.max(wal_bytes(&db));
        }
        assert!(
            largest < 64 << 20,
            "the WAL grew to {largest} bytes; it should restart every {RESET_AFTER_FRAMES} frames"
        );
        let stored = store.source_counts().await.expect("counts")[0].events;
        assert_eq!(stored, 30_000);
    }
}
