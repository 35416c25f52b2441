//! The writer thread: the only connection that writes. Each job is a closure
//! run on that connection, usually one transaction; a batch of events
//! commits (and fsyncs) once.

use std::sync::mpsc;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use gatehouse_core::{EventId, NewEvent, UnixMillis, VerificationFailure};
use gatehouse_store::codec::encode_headers;
use gatehouse_store::{IngestOutcome, StoreError};

use crate::checkpoint::ResetRequest;
use crate::classify;
use crate::dedup::{DedupIndex, MergeStep};
use crate::sync::{Settle, Syncer};

/// Work for the writer thread.
pub(crate) enum WriteJob {
    /// A batch of events to commit. Ingest batches already waiting when the
    /// writer gets to one are committed with it, in one transaction.
    Ingest {
        /// The events, in order.
        batch: Vec<NewEvent>,
        /// Where the outcomes (one per event) go, with whether any delivery
        /// was created.
        reply: oneshot::Sender<Result<(Vec<IngestOutcome>, bool), StoreError>>,
    },
    /// Anything else: the closure runs alone and returns how to answer
    /// once its commit is on disk.
    Run(Box<dyn FnOnce(&mut Connection) -> Settle + Send>),
}

/// Most events the writer merges into one ingest transaction: enough to
/// make one WAL sync serve every batch that queued up during the last one,
/// small enough to keep a transaction (and the wait of its first event)
/// short.
const MAX_MERGED_EVENTS: usize = 2048;

const INSERT_EVENT: &str = "INSERT INTO events (id, source, dedup_key, provider_event_id, event_type, disposition, \
     received_at, headers, body, verification, remote_addr, origin) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

const COUNT_DUPLICATE: &str = "UPDATE events SET duplicates = duplicates + 1, \
     last_duplicate_at = max(coalesce(last_duplicate_at, 0), ?2) WHERE seq = ?1 RETURNING id";

const INSERT_DELIVERY: &str = "INSERT INTO deliveries (id, event_id, route, state, next_attempt_at, created_at, \
     updated_at, last_error) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?5, ?6)";

const INSERT_FAILURE: &str =
    "INSERT INTO verification_failures (source, reason, remote_addr, at) VALUES (?1, ?2, ?3, ?4)";

/// Runs jobs until every sender is gone (the store was dropped), finishing
/// a checkpoint between two jobs when the checkpointer asks.
///
/// Each request's event arrives as its own ingest job (the server hands
/// them over as they come, see `Store::gathers_ingests`); merging the jobs
/// that queued up during the last commit into one transaction is what
/// makes this a group commit.
///
/// Answers go through the [`Syncer`]: nobody hears of a commit before the
/// WAL sync that makes it durable.
pub(crate) fn run(
    mut conn: Connection,
    mut dedup: DedupIndex,
    jobs: mpsc::Receiver<WriteJob>,
    syncer: Syncer,
    reset: ResetRequest,
) {
    let mut held: Option<WriteJob> = None;
    loop {
        let job = match held.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        reset.finish_if_asked(&conn);
        match job {
            WriteJob::Run(work) => syncer.settle(work(&mut conn)),
            WriteJob::Ingest { batch, reply } => {
                let mut merged = batch.len();
                let mut group = vec![(batch, reply)];
                while merged < MAX_MERGED_EVENTS {
                    match jobs.try_recv() {
                        Ok(WriteJob::Ingest { batch, reply }) => {
                            merged += batch.len();
                            group.push((batch, reply));
                        }
                        // Other work keeps its place: right after this group.
                        Ok(other) => {
                            held = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                ingest_group(&mut conn, &mut dedup, group, &syncer);
            }
        }
    }
}

/// Commits several batches in one transaction and, once it is on disk,
/// answers each with its own outcomes; on failure every batch gets the
/// error at once (none is stored).
fn ingest_group(
    conn: &mut Connection,
    dedup: &mut DedupIndex,
    group: Vec<(Vec<NewEvent>, IngestReply)>,
    syncer: &Syncer,
) {
    let mut sizes = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    let mut events = Vec::with_capacity(group.iter().map(|(batch, _)| batch.len()).sum());
    for (batch, reply) in group {
        sizes.push(batch.len());
        replies.push(reply);
        events.extend(batch);
    }
    match ingest(conn, dedup, &events) {
        Ok((outcomes, created_deliveries)) => syncer.settle(Box::new(move |synced| {
            let mut outcomes = outcomes.into_iter();
            for (size, reply) in sizes.into_iter().zip(replies) {
                let answer = match &synced {
                    Ok(()) => Ok(((&mut outcomes).take(size).collect(), created_deliveries)),
                    Err(error) => Err(error.clone()),
                };
                let _ = reply.send(answer);
            }
        })),
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// The answer channel of one ingest batch.
type IngestReply = oneshot::Sender<Result<(Vec<IngestOutcome>, bool), StoreError>>;

/// Commits a batch in one transaction, with the deliveries of the events it
/// stores. Any error rolls the whole batch back (the transaction is dropped
/// uncommitted), so callers answer 503 to all. The flag says whether any
/// delivery was created (workers should wake).
pub(crate) fn ingest(
    conn: &mut Connection,
    dedup: &mut DedupIndex,
    batch: &[NewEvent],
) -> Result<(Vec<IngestOutcome>, bool), StoreError> {
    // IMMEDIATE: the write lock from the start, so no other connection can
    // add a row between the dedup checks and the inserts.
    execute_cached(conn, "BEGIN IMMEDIATE")?;
    let result = ingest_in(conn, dedup, batch).and_then(|done| execute_cached(conn, "COMMIT").map(|()| done));
    match result {
        Ok((stored, merged)) => {
            dedup.committed(merged);
            Ok(stored)
        }
        Err(error) => {
            // The next job must not find this transaction still open.
            if !conn.is_autocommit() {
                if let Err(rollback) = conn.execute_batch("ROLLBACK") {
                    tracing::warn!(error = %rollback, "Rolling back a failed ingest transaction failed.");
                }
            }
            dedup.rolled_back();
            Err(error)
        }
    }
}

/// Runs a statement without parameters or rows, parsed once per
/// connection: parsing `BEGIN` and `COMMIT` anew for every transaction
/// took about 5 % of the writer's time (profiled).
fn execute_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut statement| statement.execute([]))
        .map(|_| ())
        .map_err(|e| classify(&e))
}

/// Everything [`ingest`] does inside its transaction, up to the commit.
#[allow(clippy::type_complexity)]
fn ingest_in(
    tx: &Connection,
    dedup: &mut DedupIndex,
    batch: &[NewEvent],
) -> Result<((Vec<IngestOutcome>, bool), Option<MergeStep>), StoreError> {
    dedup.begin(tx)?;
    let stored = insert_batch(tx, dedup, batch)?;
    let merged = dedup.merge_slice(tx, batch.len())?;
    Ok((stored, merged))
}

/// The inserts and duplicate counts of one batch, inside its transaction.
fn insert_batch(
    tx: &Connection,
    dedup: &mut DedupIndex,
    batch: &[NewEvent],
) -> Result<(Vec<IngestOutcome>, bool), StoreError> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut created_deliveries = false;
    let mut insert = tx.prepare_cached(INSERT_EVENT).map_err(|e| classify(&e))?;
    let mut count_duplicate = tx.prepare_cached(COUNT_DUPLICATE).map_err(|e| classify(&e))?;
    let mut insert_delivery = tx.prepare_cached(INSERT_DELIVERY).map_err(|e| classify(&e))?;
    for event in batch {
        // Stored before, earlier in this batch included: count the
        // arrival on the original.
        if let Some(seq) = dedup.find(tx, &event.source, &event.dedup_key)? {
            let original: Option<Vec<u8>> = count_duplicate
                .query_row(params![seq, event.received_at.0], |row| row.get(0))
                .optional()
                .map_err(|e| classify(&e))?;
            let original = original
                .as_deref()
                .and_then(EventId::from_slice)
                .ok_or_else(|| StoreError::Internal("duplicate without an original row".into()))?;
            outcomes.push(IngestOutcome::Duplicate { original });
            continue;
        }
        let event_id = event.id.to_bytes();
        insert
            .execute(params![
                &event_id[..],
                &*event.source,
                event.dedup_key,
                event.provider_event_id,
                event.event_type,
                event.disposition.as_str(),
                event.received_at.0,
                encode_headers(&event.headers),
                &event.body[..],
                event.verification,
                event.remote_addr,
                event.origin.as_str(),
            ])
            .map_err(|e| classify(&e))?;
        dedup.inserted(&event.source, &event.dedup_key, tx.last_insert_rowid());
        for delivery in &event.deliveries {
            insert_delivery
                .execute(params![
                    &delivery.id.to_bytes()[..],
                    &event_id[..],
                    &*delivery.route,
                    delivery.state.as_str(),
                    event.received_at.0,
                    delivery.held_by,
                ])
                .map_err(|e| classify(&e))?;
            created_deliveries = true;
        }
        outcomes.push(IngestOutcome::Stored);
    }
    Ok((outcomes, created_deliveries))
}

/// Records verification failures in one transaction.
pub(crate) fn record_failures(conn: &mut Connection, failures: &[VerificationFailure]) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(|e| classify(&e))?;
    {
        let mut insert = tx.prepare_cached(INSERT_FAILURE).map_err(|e| classify(&e))?;
        for failure in failures {
            insert
                .execute(params![
                    failure.source,
                    failure.reason,
                    failure.remote_addr,
                    failure.at.0
                ])
                .map_err(|e| classify(&e))?;
        }
    }
    tx.commit().map_err(|e| classify(&e))
}

/// Taking the write lock (and letting it go) proves the file is writable
/// now, not merely readable.
pub(crate) fn ping(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
        .map_err(|e| classify(&e))
}

/// Now, for rows written outside a caller-supplied time.
pub(crate) fn now() -> i64 {
    UnixMillis::now().0
}
