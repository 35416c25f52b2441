//! Deduplication on (source, dedup key) without a random-order index write
//! on every ingest.
//!
//! A UNIQUE index on `events (source, dedup_key)` dirties one leaf per event
//! (the keys are random), and each commit writes every dirty leaf to the
//! WAL, 8 KiB for a ~50-byte entry, and again at the checkpoint. That was
//! the largest part of ingest's disk writes. Instead the keys live in two
//! places (migration 0006):
//!
//! - `dedup_keys`: the keys of every event up to `dedup_merge.merged_through`,
//!   one row per (source, dedup key), primary-keyed on it;
//! - the *tail*, the events after that: their keys are only in their rows.
//!   The writer holds them in memory ([`DedupIndex`]); readers scan the
//!   tail's rows, a rowid range of at most a couple of merge runs.
//!
//! Once the tail holds `threshold` new keys, they are sorted into a merge
//! run (on a helper thread) and the writer inserts the run into
//! `dedup_keys` a slice per ingest transaction, in key order, so the entries of a run share leaves: over a run each leaf is
//! written about once, not once per event. The run's last slice moves
//! `merged_through` in the same transaction, so a reader sees each key in
//! one place or both, never in neither.
//!
//! Uniqueness holds because every check and insert runs inside the
//! writer's `BEGIN IMMEDIATE` transaction, holding SQLite's write lock,
//! against `dedup_keys` and the complete tail: the transaction first reads
//! any rows other connections (a second process) added since it last
//! looked.

use std::collections::HashMap;
use std::sync::{mpsc, Arc};

use rusqlite::{params, Connection, OptionalExtension};

use gatehouse_store::StoreError;

use crate::classify;

/// The `seq` of the event with source `?1` and dedup key `?2`, merged or in
/// the tail (`LIMIT 1`: during a run a key can be in both). The unary `+`
/// keeps SQLite from walking a source index over every event of the source
/// instead of the tail's rowid range (it did, on 120,000 events).
pub(crate) const SEQ_BY_KEY: &str = "SELECT seq FROM dedup_keys WHERE source = ?1 AND dedup_key = ?2 \
     UNION ALL SELECT seq FROM events WHERE seq > (SELECT merged_through FROM dedup_merge) \
       AND +source = ?1 AND +dedup_key = ?2 \
     LIMIT 1";

/// Tail keys that start a merge run, unless the store's options say
/// otherwise: enough that a run touches each leaf of `dedup_keys` about
/// once for many events, few enough that a reader's scan of the tail stays
/// in the milliseconds.
pub(crate) const DEFAULT_MERGE_THRESHOLD: usize = 16_384;

/// Fewest keys a transaction merges while a run is open, so a run also
/// ends when ingest is slow.
const MIN_SLICE: usize = 64;

/// source → dedup key → seq.
type Keys = HashMap<Arc<str>, HashMap<Arc<str>, i64>>;

/// A run's keys in `dedup_keys` order.
type Sorted = Vec<(Arc<str>, Arc<str>, i64)>;

/// The writer's view of deduplication: the tail's keys and the open run.
///
/// The tail is two generations: `current` gathers new keys; when it holds
/// `threshold` of them it is frozen into `merging` (a swap, not a copy), a
/// helper thread sorts it, and the writer merges the sorted run a slice per
/// transaction. The sort and the final free happen off the writer thread:
/// on the writer they stalled ingest for 4 and 7-12 ms per run (measured).
pub(crate) struct DedupIndex {
    /// Keys of events after the frozen generation: committed, or added by
    /// the open transaction.
    current: Keys,
    /// Keys in `current`.
    current_len: usize,
    /// The generation being merged, with the seq it runs through.
    merging: Option<(Arc<Keys>, i64)>,
    /// The sorted run, once the helper has sent it.
    run: Option<MergeRun>,
    /// Where the helper sends the sorted run.
    sorted: Option<mpsc::Receiver<Sorted>>,
    /// The highest `events.seq` this writer has seen.
    known_max: i64,
    /// Size of `current` that freezes it.
    threshold: usize,
    /// Keys added by the open transaction, removed again if it fails.
    uncommitted: Vec<(Arc<str>, Arc<str>)>,
    /// `known_max` when the open transaction began.
    known_max_at_begin: i64,
}

/// The frozen generation's keys in order, merged a slice at a time.
struct MergeRun {
    keys: Sorted,
    /// Keys before this one are committed to `dedup_keys`.
    next: usize,
}

/// What one transaction merged; applied once it commits.
pub(crate) struct MergeStep {
    next: usize,
    /// The slice was the run's last: `merged_through` moved.
    finished: bool,
}

impl DedupIndex {
    /// Reads `merged_through` and the tail's keys (at start-up: the tail is
    /// at most a couple of runs).
    pub(crate) fn load(conn: &Connection, threshold: usize) -> Result<Self, StoreError> {
        let merged_through: i64 = conn
            .query_row("SELECT merged_through FROM dedup_merge", [], |row| row.get(0))
            .map_err(|e| classify(&e))?;
        let mut index = Self {
            current: HashMap::new(),
            current_len: 0,
            merging: None,
            run: None,
            sorted: None,
            known_max: merged_through,
            threshold: threshold.max(1),
            uncommitted: Vec::new(),
            known_max_at_begin: merged_through,
        };
        index.catch_up(conn)?;
        index.freeze_if_due();
        Ok(index)
    }

    /// Call first in every ingest transaction (after `BEGIN IMMEDIATE`):
    /// reads the keys of rows other connections committed since this
    /// writer last looked.
    pub(crate) fn begin(&mut self, conn: &Connection) -> Result<(), StoreError> {
        self.uncommitted.clear();
        self.catch_up(conn)?;
        self.known_max_at_begin = self.known_max;
        Ok(())
    }

    fn catch_up(&mut self, conn: &Connection) -> Result<(), StoreError> {
        let newest: i64 = conn
            .prepare_cached("SELECT coalesce(max(seq), 0) FROM events")
            .map_err(|e| classify(&e))?
            .query_row([], |row| row.get(0))
            .map_err(|e| classify(&e))?;
        if newest <= self.known_max {
            return Ok(());
        }
        let mut rows = conn
            .prepare_cached("SELECT source, dedup_key, seq FROM events WHERE seq > ?1 ORDER BY seq")
            .map_err(|e| classify(&e))?;
        let found = rows
            .query_map(params![self.known_max], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| classify(&e))?;
        for row in found {
            let (source, key, seq) = row.map_err(|e| classify(&e))?;
            self.remember(Arc::from(source), Arc::from(key), seq);
        }
        self.known_max = newest;
        Ok(())
    }

    fn remember(&mut self, source: Arc<str>, key: Arc<str>, seq: i64) {
        if self.current.entry(source).or_default().insert(key, seq).is_none() {
            self.current_len += 1;
        }
    }

    /// The seq of the stored event with this key, if any.
    pub(crate) fn find(&self, conn: &Connection, source: &str, key: &str) -> Result<Option<i64>, StoreError> {
        let in_tail = |keys: &Keys| keys.get(source).and_then(|keys| keys.get(key)).copied();
        if let Some(seq) = in_tail(&self.current).or_else(|| self.merging.as_ref().and_then(|(m, _)| in_tail(m))) {
            return Ok(Some(seq));
        }
        conn.prepare_cached("SELECT seq FROM dedup_keys WHERE source = ?1 AND dedup_key = ?2")
            .map_err(|e| classify(&e))?
            .query_row(params![source, key], |row| row.get(0))
            .optional()
            .map_err(|e| classify(&e))
    }

    /// Records the key of an event the open transaction inserted.
    pub(crate) fn inserted(&mut self, source: &Arc<str>, key: &str, seq: i64) {
        let key: Arc<str> = Arc::from(key);
        self.remember(source.clone(), key.clone(), seq);
        self.uncommitted.push((source.clone(), key));
        self.known_max = self.known_max.max(seq);
    }

    /// Merges the next slice of the open run (about twice the events this
    /// transaction stored, so runs end before the tail doubles).
    pub(crate) fn merge_slice(&mut self, conn: &Connection, stored: usize) -> Result<Option<MergeStep>, StoreError> {
        if let Some(receiver) = &self.sorted {
            let keys = match receiver.try_recv() {
                Ok(keys) => Some(keys),
                Err(mpsc::TryRecvError::Empty) => None,
                // The helper died: sort here rather than never merge.
                Err(mpsc::TryRecvError::Disconnected) => self.merging.as_ref().map(|(frozen, _)| sorted(frozen)),
            };
            if let Some(keys) = keys {
                self.sorted = None;
                self.run = Some(MergeRun { keys, next: 0 });
            }
        }
        let (Some(run), Some((_, through))) = (&self.run, &self.merging) else {
            return Ok(None);
        };
        let end = (run.next + MIN_SLICE.max(stored * 2)).min(run.keys.len());
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO dedup_keys (source, dedup_key, seq) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            )
            .map_err(|e| classify(&e))?;
        for (source, key, seq) in &run.keys[run.next..end] {
            insert
                .execute(params![&**source, &**key, seq])
                .map_err(|e| classify(&e))?;
        }
        let finished = end == run.keys.len();
        if finished {
            conn.execute(
                "UPDATE dedup_merge SET merged_through = max(merged_through, ?1)",
                params![through],
            )
            .map_err(|e| classify(&e))?;
        }
        Ok(Some(MergeStep { next: end, finished }))
    }

    /// The open transaction committed: its keys stay, its slice is merged.
    pub(crate) fn committed(&mut self, step: Option<MergeStep>) {
        self.uncommitted.clear();
        if let Some(step) = step {
            if step.finished {
                // Every key of the frozen generation is in dedup_keys and
                // merged_through moved. Freeing ~16,000 keys takes
                // milliseconds: the helper does it.
                let done = (self.merging.take(), self.run.take());
                if let Err(error) = std::thread::Builder::new()
                    .name("gatehouse-sqlite-dedup".into())
                    .spawn(move || drop(done))
                {
                    tracing::debug!(%error, "Freeing a merged dedup run on the writer.");
                }
            } else if let Some(run) = self.run.as_mut() {
                run.next = step.next;
            }
        }
        self.freeze_if_due();
    }

    /// The open transaction rolled back: forget the keys it added.
    pub(crate) fn rolled_back(&mut self) {
        for (source, key) in self.uncommitted.drain(..) {
            if let Some(keys) = self.current.get_mut(&source) {
                if keys.remove(&key).is_some() {
                    self.current_len -= 1;
                }
            }
        }
        self.known_max = self.known_max_at_begin;
    }

    /// Freezes `current` once it is large enough and no run is open, and
    /// has it sorted off the writer thread.
    fn freeze_if_due(&mut self) {
        if self.merging.is_some() || self.current_len < self.threshold {
            return;
        }
        let frozen = Arc::new(std::mem::take(&mut self.current));
        self.current_len = 0;
        self.merging = Some((frozen.clone(), self.known_max));
        let (sender, receiver) = mpsc::channel();
        let to_sort = frozen.clone();
        let spawned = std::thread::Builder::new()
            .name("gatehouse-sqlite-dedup".into())
            .spawn(move || {
                let _ = sender.send(sorted(&to_sort));
            });
        match spawned {
            Ok(_) => self.sorted = Some(receiver),
            Err(error) => {
                tracing::warn!(%error, "Cannot start the dedup sort thread; sorting on the writer.");
                self.run = Some(MergeRun {
                    keys: sorted(&frozen),
                    next: 0,
                });
            }
        }
    }
}

/// The keys in `dedup_keys` order: SQLite compares TEXT bytewise (BINARY),
/// as `str` orders.
fn sorted(keys: &Keys) -> Sorted {
    let mut sorted: Sorted = keys
        .iter()
        .flat_map(|(source, keys)| keys.iter().map(move |(key, seq)| (source.clone(), key.clone(), *seq)))
        .collect();
    sorted.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    sorted
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use gatehouse_store::conformance::{event_with_routes, sample_event};
    use gatehouse_store::{EventQuery, IngestOutcome, Store};

    use crate::{open_connection, SqliteOptions, SqliteStore};

    fn open(path: &Path, threshold: usize) -> SqliteStore {
        let options = SqliteOptions {
            dedup_merge_threshold: threshold,
            ..SqliteOptions::default()
        };
        SqliteStore::open(path, options).expect("open")
    }

    fn count(path: &Path, sql: &str) -> i64 {
        let conn = open_connection(path, &SqliteOptions::default(), true).expect("connect");
        conn.query_row(sql, [], |row| row.get(0)).expect("count")
    }

    fn key(n: usize) -> String {
        // Not in arrival order, as real provider ids are not.
        format!("evt_{:08x}", (n as u32).wrapping_mul(2_654_435_761))
    }

    async fn is_found(store: &SqliteStore, n: usize) -> bool {
        let by_key = store.event_by_dedup_key("s", &key(n)).await.expect("lookup");
        let existing = store.existing_dedup_keys("s", &[key(n)]).await.expect("existing");
        let listed = store
            .list_events(&EventQuery {
                provider_event_id: Some(key(n)),
                limit: 10,
                ..EventQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(by_key.is_some(), !existing.is_empty(), "event {n}");
        assert_eq!(by_key.is_some(), listed.len() == 1, "event {n}: {listed:?}");
        by_key.is_some()
    }

    #[tokio::test]
    async fn each_key_is_stored_once_across_merge_runs_and_restarts() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gatehouse.db");
        let store = open(&path, 8);
        let mut stored = 0;
        for start in (0..200).step_by(7) {
            let mut batch: Vec<_> = (start..(start + 7).min(200))
                .map(|n| sample_event("s", &key(n)))
                .collect();
            // An arrival of an older event (merged by now, or in the
            // tail), and one of this batch's own events again.
            batch.push(sample_event("s", &key(start / 2)));
            batch.push(sample_event("s", &key(start)));
            let outcomes = store.ingest(batch).await.expect("ingest");
            let new = outcomes.iter().filter(|o| **o == IngestOutcome::Stored).count();
            assert_eq!(new, (start + 7).min(200) - start, "batch at {start}: {outcomes:?}");
            assert!(matches!(outcomes.last(), Some(IngestOutcome::Duplicate { .. })));
            stored += new;
        }
        assert_eq!(stored, 200);
        assert_eq!(count(&path, "SELECT count(*) FROM events"), 200);
        // Runs are sorted on a helper thread and merged by later
        // transactions; one that stores nothing still merges a slice.
        for _ in 0..500 {
            if count(&path, "SELECT merged_through FROM dedup_merge") >= 100 {
                break;
            }
            store.ingest(vec![sample_event("s", &key(0))]).await.expect("ingest");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let merged = count(&path, "SELECT count(*) FROM dedup_keys");
        let through = count(&path, "SELECT merged_through FROM dedup_merge");
        assert!(
            merged >= 100 && through >= 100,
            "runs merged: {merged} keys, through {through}"
        );
        assert_eq!(
            count(&path, "SELECT count(*) FROM events WHERE seq <= (SELECT merged_through FROM dedup_merge) AND seq NOT IN (SELECT seq FROM dedup_keys)"),
            0,
            "everything up to merged_through is in dedup_keys"
        );
        // One more key stays in the tail (fewer than the threshold).
        assert_eq!(
            store.ingest(vec![sample_event("s", &key(200))]).await.unwrap(),
            vec![IngestOutcome::Stored]
        );
        assert_eq!(
            count(
                &path,
                &format!("SELECT count(*) FROM dedup_keys WHERE dedup_key = '{}'", key(200))
            ),
            0
        );
        for n in [0, 1, 99, 150, 198, 199, 200] {
            assert!(is_found(&store, n).await, "event {n}");
        }
        assert!(!is_found(&store, 201).await);
        let counted = count(
            &path,
            "SELECT sum(duplicates) FROM events WHERE dedup_key <> 'evt_00000000'",
        );
        assert_eq!(
            counted,
            2 * 29 - 2,
            "each batch's two repeats are counted on their originals"
        );

        // A restart reloads the tail from the rows.
        drop(store);
        let store = open(&path, 8);
        let again = store
            .ingest((0..=200).map(|n| sample_event("s", &key(n))).collect())
            .await
            .expect("ingest");
        assert!(
            again.iter().all(|o| matches!(o, IngestOutcome::Duplicate { .. })),
            "{again:?}"
        );
        assert_eq!(count(&path, "SELECT count(*) FROM events"), 201);
        assert_eq!(
            store.ingest(vec![sample_event("s", &key(201))]).await.unwrap(),
            vec![IngestOutcome::Stored]
        );
        // Another source may use the same key.
        assert_eq!(
            store.ingest(vec![sample_event("t", &key(0))]).await.unwrap(),
            vec![IngestOutcome::Stored]
        );
    }

    #[test]
    fn a_lookup_reads_the_tail_by_rowid_not_the_whole_source() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gatehouse.db");
        drop(open(&path, 8));
        let conn = open_connection(&path, &SqliteOptions::default(), true).expect("connect");
        let mut plan = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", super::SEQ_BY_KEY))
            .expect("explain");
        let steps: Vec<String> = plan
            .query_map(rusqlite::params!["s", "k"], |row| row.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert!(
            steps.iter().any(|s| s.contains("dedup_keys USING PRIMARY KEY")),
            "{steps:?}"
        );
        assert!(
            steps
                .iter()
                .any(|s| s.contains("events USING INTEGER PRIMARY KEY (rowid>?)")),
            "{steps:?}"
        );
    }

    #[tokio::test]
    async fn a_second_store_on_the_same_file_sees_the_other_ones_new_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gatehouse.db");
        // The server and, say, `gatehouse backfill` in another process.
        let server = open(&path, 4);
        let cli = open(&path, 4);
        for n in 0..20 {
            let (first, second) = if n % 2 == 0 { (&server, &cli) } else { (&cli, &server) };
            assert_eq!(
                first.ingest(vec![sample_event("s", &key(n))]).await.unwrap(),
                vec![IngestOutcome::Stored]
            );
            let repeat = second.ingest(vec![sample_event("s", &key(n))]).await.unwrap();
            assert!(
                matches!(repeat[..], [IngestOutcome::Duplicate { .. }]),
                "event {n}: {repeat:?}"
            );
        }
        assert_eq!(count(&path, "SELECT count(*) FROM events"), 20);
    }

    #[tokio::test]
    async fn a_rolled_back_batch_leaves_no_key_behind() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gatehouse.db");
        let store = open(&path, 4);
        // Make the second event's delivery fail after the first event's
        // insert succeeded in the same transaction.
        let conn = open_connection(&path, &SqliteOptions::default(), false).expect("connect");
        conn.execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON deliveries WHEN NEW.route = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .expect("trigger");
        let batch = vec![sample_event("s", "evt_a"), event_with_routes("s", "evt_b", &["boom"])];
        assert!(store.ingest(batch).await.is_err());
        assert_eq!(count(&path, "SELECT count(*) FROM events"), 0);
        conn.execute_batch("DROP TRIGGER refuse").expect("drop trigger");
        let batch = vec![sample_event("s", "evt_a"), event_with_routes("s", "evt_b", &["boom"])];
        assert_eq!(
            store.ingest(batch).await.expect("ingest"),
            vec![IngestOutcome::Stored, IngestOutcome::Stored],
            "the failed batch's keys were forgotten"
        );
    }
}
