//! Reads, on a small pool of read-only connections run off the async
//! runtime. WAL lets them proceed while the writer commits.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

use gatehouse_core::{Disposition, EventId, EventSummary, StoredEvent, UnixMillis, VerificationFailure};
use gatehouse_store::codec::decode_headers;
use gatehouse_store::{EventQuery, SourceCounts, StoreError};

use crate::{classify, open_connection, SqliteOptions};

/// Read-only connections, opened on demand and kept up to `options.readers`.
pub(crate) struct ReaderPool {
    path: PathBuf,
    options: SqliteOptions,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    pub(crate) fn new(path: PathBuf, options: SqliteOptions) -> Self {
        Self {
            path,
            options,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on a pooled connection on the blocking thread pool.
    pub(crate) async fn run<T, F>(self: &std::sync::Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match pool.take() {
                Some(conn) => conn,
                None => open_connection(&pool.path, &pool.options, true)?,
            };
            let result = read(&conn);
            pool.give_back(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("read task failed: {e}")))?
    }

    fn take(&self) -> Option<Connection> {
        // A poisoned lock only means another reader panicked; the Vec is intact.
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.options.readers {
            idle.push(conn);
        }
    }
}

pub(crate) const SUMMARY_COLUMNS: &str = "id, source, received_at, dedup_key, provider_event_id, event_type, \
     disposition, duplicates, last_duplicate_at, origin, pruned_at";
const FULL_COLUMNS: &str = "id, source, received_at, dedup_key, provider_event_id, event_type, disposition, \
     duplicates, last_duplicate_at, origin, pruned_at, headers, body, verification, remote_addr";

pub(crate) fn summary(row: &Row<'_>) -> rusqlite::Result<EventSummary> {
    let id: Vec<u8> = row.get(0)?;
    let id = EventId::from_slice(&id).ok_or(rusqlite::Error::IntegralValueOutOfRange(0, 16))?;
    let disposition: String = row.get(6)?;
    Ok(EventSummary {
        id,
        source: row.get(1)?,
        received_at: UnixMillis(row.get(2)?),
        dedup_key: row.get(3)?,
        provider_event_id: row.get(4)?,
        event_type: row.get(5)?,
        disposition: Disposition::parse(&disposition).unwrap_or(Disposition::Accepted),
        duplicates: row.get(7)?,
        last_duplicate_at: row.get::<_, Option<i64>>(8)?.map(UnixMillis),
        // An origin this build does not know (a newer gatehouse wrote it)
        // reads as live rather than failing the whole list.
        origin: gatehouse_core::EventOrigin::parse(&row.get::<_, String>(9)?).unwrap_or_default(),
        pruned_at: row.get::<_, Option<i64>>(10)?.map(UnixMillis),
    })
}

fn full(row: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let headers: String = row.get(11)?;
    let headers = decode_headers(&headers)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(11, rusqlite::types::Type::Text, Box::new(e)))?;
    let body: Vec<u8> = row.get(12)?;
    Ok(StoredEvent {
        summary: summary(row)?,
        headers,
        body: body.into(),
        verification: row.get(13)?,
        remote_addr: row.get(14)?,
    })
}

pub(crate) fn event_by_id(conn: &Connection, id: EventId) -> Result<Option<StoredEvent>, StoreError> {
    let sql = format!("SELECT {FULL_COLUMNS} FROM events WHERE id = ?1");
    let mut statement = conn.prepare_cached(&sql).map_err(|e| classify(&e))?;
    statement
        .query_row(params![&id.to_bytes()[..]], full)
        .optional()
        .map_err(|e| classify(&e))
}

pub(crate) fn event_by_dedup_key(
    conn: &Connection,
    source: &str,
    key: &str,
) -> Result<Option<StoredEvent>, StoreError> {
    let sql = format!(
        "SELECT {FULL_COLUMNS} FROM events WHERE seq = ({})",
        crate::dedup::SEQ_BY_KEY
    );
    let mut statement = conn.prepare_cached(&sql).map_err(|e| classify(&e))?;
    statement
        .query_row(params![source, key], full)
        .optional()
        .map_err(|e| classify(&e))
}

pub(crate) fn list_events(conn: &Connection, query: &EventQuery) -> Result<Vec<EventSummary>, StoreError> {
    // The console's filters live with the rest of the console's queries.
    crate::console::list_events(conn, query)
}

pub(crate) fn verification_failures(
    conn: &Connection,
    source: Option<&str>,
    limit: u32,
) -> Result<Vec<VerificationFailure>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT source, reason, remote_addr, at FROM verification_failures \
             WHERE (?1 IS NULL OR source = ?1) ORDER BY seq DESC LIMIT ?2",
        )
        .map_err(|e| classify(&e))?;
    let rows = statement
        .query_map(params![source, limit.clamp(1, 1000)], |row| {
            Ok(VerificationFailure {
                source: row.get(0)?,
                reason: row.get(1)?,
                remote_addr: row.get(2)?,
                at: UnixMillis(row.get(3)?),
            })
        })
        .map_err(|e| classify(&e))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(|e| classify(&e))
}

pub(crate) fn source_counts(conn: &Connection) -> Result<Vec<SourceCounts>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT source, sum(events), sum(duplicates), sum(failures) FROM ( \
               SELECT source, count(*) AS events, sum(duplicates) AS duplicates, 0 AS failures \
                 FROM events GROUP BY source \
               UNION ALL \
               SELECT source, 0, 0, count(*) FROM verification_failures GROUP BY source \
             ) GROUP BY source ORDER BY source",
        )
        .map_err(|e| classify(&e))?;
    let rows = statement
        .query_map([], |row| {
            Ok(SourceCounts {
                source: row.get(0)?,
                events: row.get::<_, i64>(1)? as u64,
                duplicates: row.get::<_, i64>(2)? as u64,
                verification_failures: row.get::<_, i64>(3)? as u64,
            })
        })
        .map_err(|e| classify(&e))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(|e| classify(&e))
}
