//! Durability off the writer's critical path.
//!
//! The writing connection runs with `synchronous=NORMAL`: a commit writes
//! its WAL frames and returns without waiting for the disk. Nobody is told
//! about the commit yet. The writer hands the answer to this thread, which
//! collects every answer waiting, calls `fdatasync` on the WAL file once,
//! and only then sends them. So a write is still acknowledged only once it
//! is on disk, exactly as with `synchronous=FULL`, but the writer starts
//! the next transaction while the disk syncs the last one, instead of
//! waiting for it. (SQLite itself syncs the WAL before every checkpoint and
//! the database after it, in this mode as in FULL.)
//!
//! One sync covers every commit that returned before it started: the frames
//! were written to the file by then, and `fdatasync` flushes the file, not
//! a descriptor.
//!
//! Work that reads through the writer (a delivery claim) may see a commit
//! a moment before its sync ends, so a delivery can start just before the
//! event's acknowledgement goes out. Only a power loss inside that window
//! makes a difference: the event is then delivered but not kept, the
//! provider (never having had a 2xx) sends it again, and it is delivered
//! again, which at-least-once delivery allows.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use gatehouse_store::StoreError;

/// What to do once the commits before it are durable (or syncing failed).
pub(crate) type Settle = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The handle the writer thread sends answers through.
pub(crate) struct Syncer {
    sender: mpsc::Sender<Settle>,
}

impl Syncer {
    /// Starts the sync thread for the database at `db_path` (in WAL mode).
    pub(crate) fn start(db_path: &Path) -> Result<Self, StoreError> {
        let mut wal = WalFile {
            wal_path: wal_path(db_path),
            file: None,
            identity: None,
        };
        // Fail at start-up, not on the first acknowledgement.
        wal.sync()?;
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("gatehouse-sqlite-sync".into())
            .spawn(move || run(wal, receiver))
            .map_err(|e| StoreError::Internal(format!("cannot start the SQLite sync thread: {e}")))?;
        Ok(Self { sender })
    }

    /// Runs `settle` once everything committed so far is on disk.
    pub(crate) fn settle(&self, settle: Settle) {
        if let Err(mpsc::SendError(settle)) = self.sender.send(settle) {
            settle(Err(StoreError::Unavailable(
                "the SQLite sync thread has stopped".into(),
            )));
        }
    }
}

/// Syncs for every batch of waiting answers until the writer is gone.
fn run(mut wal: WalFile, answers: mpsc::Receiver<Settle>) {
    while let Ok(first) = answers.recv() {
        let mut waiting = vec![first];
        waiting.extend(answers.try_iter());
        let synced = wal.sync();
        if let Err(error) = &synced {
            tracing::error!(%error, "Syncing the SQLite WAL failed; answering 503 to the writes waiting on it.");
        }
        for settle in waiting {
            settle(synced.clone());
        }
    }
}

/// `<db>-wal`, where SQLite keeps the WAL.
fn wal_path(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The WAL file, reopened if it is ever replaced.
///
/// Only the WAL is ever opened here, never the database file: SQLite's
/// locks on the database are POSIX locks, which closing *any* descriptor of
/// that file in the process would silently release (after which another
/// process could delete the WAL under the writer).
struct WalFile {
    wal_path: PathBuf,
    file: Option<File>,
    /// Device and inode of the open file.
    identity: Option<(u64, u64)>,
}

impl WalFile {
    fn sync(&mut self) -> Result<(), StoreError> {
        let unavailable = |what: &str, path: &Path, e: std::io::Error| {
            StoreError::Unavailable(format!("cannot {what} {}: {e}", path.display()))
        };
        // While the writer's connection is open SQLite keeps the same WAL
        // file (it truncates it, never replaces it). Should it ever be
        // removed, SQLite checkpointed it into the database and synced the
        // database first; a new WAL is then the one to sync.
        let current = std::fs::metadata(&self.wal_path).ok().map(|m| (m.dev(), m.ino()));
        if current != self.identity || self.file.is_none() {
            self.file = match current {
                Some(_) => Some(File::open(&self.wal_path).map_err(|e| unavailable("open", &self.wal_path, e))?),
                None => None,
            };
            self.identity = current;
        }
        match &self.file {
            Some(file) => file.sync_data().map_err(|e| unavailable("sync", &self.wal_path, e)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_waiting_answer_is_settled_after_a_sync() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("gatehouse.db");
        std::fs::write(&db, b"").expect("db");
        std::fs::write(wal_path(&db), b"frames").expect("wal");
        let syncer = Syncer::start(&db).expect("start");
        let (sender, receiver) = mpsc::channel();
        for n in 0..100 {
            let sender = sender.clone();
            syncer.settle(Box::new(move |synced| sender.send((n, synced.is_ok())).expect("send")));
        }
        let mut settled: Vec<_> = (0..100).map(|_| receiver.recv().expect("answer")).collect();
        settled.sort();
        assert_eq!(settled, (0..100).map(|n| (n, true)).collect::<Vec<_>>());
    }

    #[test]
    fn a_replaced_wal_is_reopened_and_a_missing_one_is_not_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("gatehouse.db");
        std::fs::write(&db, b"").expect("db");
        let mut wal = WalFile {
            wal_path: wal_path(&db),
            file: None,
            identity: None,
        };
        wal.sync().expect("no WAL yet: nothing to sync");
        assert!(wal.file.is_none());
        std::fs::write(wal_path(&db), b"first").expect("wal");
        wal.sync().expect("sync");
        let first = wal.identity.expect("opened");
        let replacement = dir.path().join("replacement");
        std::fs::write(&replacement, b"second").expect("replacement");
        std::fs::rename(&replacement, wal_path(&db)).expect("rename");
        wal.sync().expect("sync");
        assert_ne!(wal.identity, Some(first), "the new file is the one synced");
    }
}
