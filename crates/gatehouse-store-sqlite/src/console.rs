//! Storage for the console: approval and exception queues, stats, users, sessions, tokens and the audit log.
//!
//! Every write runs on the writer thread; reads run on the read pool.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, OptionalExtension, Row};

use gatehouse_core::Role;

use super::*;

/// Lists and keyset pages return at most this many rows.
const MAX_LIMIT: u32 = 1000;

/// Charts return at most this many buckets (the latest ones).
const MAX_BUCKETS: i64 = 10_000;

/// A token's `last_used_at` is rewritten at most this often: on SQLite
/// every write is an fsync on the one writer that ingest also needs, and
/// an API client polling in a loop must not cost one per request.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

/// The distinct sources of stored events, by a loose index scan over
/// `events_by_source`: one index seek per source, not a scan of every
/// event. Lets a lookup by dedup key seek `dedup_keys (source, dedup_key)`
/// for each source.
const SOURCES_CTE: &str = "WITH RECURSIVE sources(source) AS ( \
       SELECT min(source) FROM events \
       UNION ALL \
       SELECT (SELECT min(e.source) FROM events AS e WHERE e.source > sources.source) FROM sources \
         WHERE sources.source IS NOT NULL) ";

const USER_COLUMNS: &str = "id, username, role, password_hash, disabled, created_at, last_login_at";
const TOKEN_COLUMNS: &str = "id, name, token_hash, role, created_by, created_at, expires_at, revoked_at, last_used_at";
const AUDIT_COLUMNS: &str = "seq, at, actor, action, object, remote_addr, note, details";

fn sql_error(error: rusqlite::Error) -> StoreError {
    classify(&error)
}

/// A constraint violation (a unique key already taken) as a conflict.
fn conflict_or(error: rusqlite::Error, what: &str) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, _) if failure.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Conflict(what.to_string())
        }
        _ => classify(&error),
    }
}

/// Why a stored value could not be decoded, as rusqlite reports it.
fn bad_column(column: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("stored {what} is not valid").into(),
    )
}

fn role(row: &Row<'_>, column: usize) -> rusqlite::Result<Role> {
    let name: String = row.get(column)?;
    Role::parse(&name).ok_or_else(|| bad_column(column, "role"))
}

fn user_row(row: &Row<'_>, first: usize) -> rusqlite::Result<User> {
    let id: Vec<u8> = row.get(first)?;
    Ok(User {
        id: UserId::from_slice(&id).ok_or_else(|| bad_column(first, "user id"))?,
        username: row.get(first + 1)?,
        role: role(row, first + 2)?,
        password_hash: row.get(first + 3)?,
        disabled: row.get(first + 4)?,
        created_at: UnixMillis(row.get(first + 5)?),
        last_login_at: row.get::<_, Option<i64>>(first + 6)?.map(UnixMillis),
    })
}

fn user_at_0(row: &Row<'_>) -> rusqlite::Result<User> {
    user_row(row, 0)
}

fn token(row: &Row<'_>) -> rusqlite::Result<ApiToken> {
    let id: Vec<u8> = row.get(0)?;
    Ok(ApiToken {
        id: TokenId::from_slice(&id).ok_or_else(|| bad_column(0, "token id"))?,
        name: row.get(1)?,
        token_hash: row.get(2)?,
        role: role(row, 3)?,
        created_by: row.get(4)?,
        created_at: UnixMillis(row.get(5)?),
        expires_at: row.get::<_, Option<i64>>(6)?.map(UnixMillis),
        revoked_at: row.get::<_, Option<i64>>(7)?.map(UnixMillis),
        last_used_at: row.get::<_, Option<i64>>(8)?.map(UnixMillis),
    })
}

fn audit_entry(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: row.get(0)?,
        at: UnixMillis(row.get(1)?),
        actor: row.get(2)?,
        action: row.get(3)?,
        object: row.get(4)?,
        remote_addr: row.get(5)?,
        note: row.get(6)?,
        details: row.get(7)?,
    })
}

/// The lowest event id of millisecond `at`, as stored: ids sort by time, so
/// a time range is an id range over an index that already exists.
fn first_id_at(at: i64) -> Vec<u8> {
    EventId::first_at(u64::try_from(at).unwrap_or(0)).to_bytes().to_vec()
}

/// Ids in the order given, each once.
fn unique_ids(ids: &[DeliveryId]) -> Vec<DeliveryId> {
    let mut seen = std::collections::HashSet::with_capacity(ids.len());
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}

/// Runs `sql` (one `?1` id plus `extra` parameters) on each id in one
/// transaction; returns the ids it changed.
fn update_each(
    conn: &mut Connection,
    ids: &[DeliveryId],
    sql: &str,
    extra: &[Value],
) -> Result<Vec<DeliveryId>, StoreError> {
    let tx = conn.transaction().map_err(sql_error)?;
    let mut changed = Vec::new();
    {
        let mut update = tx.prepare_cached(sql).map_err(sql_error)?;
        for id in ids {
            let mut values = vec![Value::Blob(id.to_bytes().to_vec())];
            values.extend(extra.iter().cloned());
            if update.execute(params_from_iter(values)).map_err(sql_error)? == 1 {
                changed.push(*id);
            }
        }
    }
    tx.commit().map_err(sql_error)?;
    Ok(changed)
}

/// Lists events: only the filters in use become SQL, so each combination
/// is its own cached statement and the planner sees plain comparisons it
/// can serve from an index (`?1 IS NULL OR …` hides them).
pub(crate) fn list_events(conn: &Connection, query: &EventQuery) -> Result<Vec<EventSummary>, StoreError> {
    let (sql, values) = list_events_sql(query);
    let mut statement = conn.prepare_cached(&sql).map_err(sql_error)?;
    let rows = statement
        .query_map(params_from_iter(values), crate::read::summary)
        .map_err(sql_error)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
}

/// The statement and its parameters for one event query.
pub(crate) fn list_events_sql(query: &EventQuery) -> (String, Vec<Value>) {
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    let mut head = String::new();
    let text = |value: &str| Value::Text(value.to_string());
    if let Some(source) = &query.source {
        conditions.push("source = ?");
        values.push(text(source));
    }
    if let Some(event_type) = &query.event_type {
        conditions.push("event_type = ?");
        values.push(text(event_type));
    }
    if let Some(key) = &query.provider_event_id {
        // The dedup key (almost always the provider's id) for each
        // source: merged into dedup_keys, or in the tail's rows (see
        // `dedup`); plus the few events whose provider id differs from
        // their dedup key through the partial index events_by_provider_id
        // (its WHERE is repeated so SQLite may use it).
        head.push_str(SOURCES_CTE);
        conditions.push(
            "seq IN (SELECT seq FROM dedup_keys WHERE source IN (SELECT source FROM sources WHERE source IS NOT NULL) \
               AND dedup_key = ? \
             UNION ALL SELECT seq FROM events WHERE seq > (SELECT merged_through FROM dedup_merge) \
               AND dedup_key = ? \
             UNION ALL SELECT seq FROM events WHERE provider_event_id = ? \
               AND provider_event_id IS NOT NULL AND provider_event_id IS NOT dedup_key)",
        );
        values.push(text(key));
        values.push(text(key));
        values.push(text(key));
    }
    if let Some(disposition) = query.disposition {
        conditions.push("disposition = ?");
        values.push(text(disposition.as_str()));
    }
    if let Some(state) = query.delivery_state {
        // SQLite has no statistics to choose with, so choose here. The
        // bulk states are found among the newest events at once: walk
        // them and probe each one's deliveries. The exception states are
        // rare: read them from a state index (deliveries_due and friends)
        // and sort those events, rather than walk a million to find none.
        if matches!(
            state,
            DeliveryState::Succeeded | DeliveryState::Pending | DeliveryState::InFlight | DeliveryState::Skipped
        ) {
            conditions.push("EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id AND d.state = ?)");
        } else {
            conditions.push("id IN (SELECT event_id FROM deliveries WHERE state = ?)");
        }
        values.push(text(state.as_str()));
    }
    if let Some(from) = query.received_from {
        conditions.push("id >= ?");
        values.push(Value::Blob(first_id_at(from.0)));
    }
    if let Some(to) = query.received_to {
        conditions.push("id < ?");
        values.push(Value::Blob(first_id_at(to.0)));
    }
    if let Some(needle) = &query.body_contains {
        // Both BLOBs: instr compares bytes.
        conditions.push("instr(body, ?) > 0");
        values.push(Value::Blob(needle.as_bytes().to_vec()));
    }
    if let Some(before) = query.before {
        conditions.push("id < ?");
        values.push(Value::Blob(before.to_bytes().to_vec()));
    }
    if let Some(after) = query.after {
        conditions.push("id > ?");
        values.push(Value::Blob(after.to_bytes().to_vec()));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    values.push(Value::Integer(i64::from(query.limit.clamp(1, MAX_LIMIT))));
    let sql = format!(
        "{head}SELECT {} FROM events{filter} ORDER BY id DESC LIMIT ?",
        crate::read::SUMMARY_COLUMNS
    );
    (sql, values)
}

pub(crate) async fn decide_approval(
    store: &SqliteStore,
    ids: &[DeliveryId],
    decision: &ApprovalDecision,
    now: UnixMillis,
) -> Result<Vec<DeliveryId>, StoreError> {
    let ids = unique_ids(ids);
    if ids.is_empty() {
        return Ok(ids);
    }
    let approve = matches!(decision, ApprovalDecision::Approve);
    let (sql, extra) = match decision {
        ApprovalDecision::Approve => (
            "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2, last_error = NULL, updated_at = ?2 \
             WHERE id = ?1 AND state = 'awaiting_approval'",
            vec![Value::Integer(now.0)],
        ),
        ApprovalDecision::Reject { reason } => (
            "UPDATE deliveries SET state = 'rejected', last_error = ?3, updated_at = ?2 \
             WHERE id = ?1 AND state = 'awaiting_approval'",
            vec![Value::Integer(now.0), Value::Text(reason.clone())],
        ),
    };
    let changed = store.write(move |conn| update_each(conn, &ids, sql, &extra)).await?;
    if approve && !changed.is_empty() {
        // Approved deliveries are due now: wake the workers.
        store.deliveries_ready.notify_one();
    }
    Ok(changed)
}

pub(crate) async fn resolve_deliveries(
    store: &SqliteStore,
    ids: &[DeliveryId],
    resolution: Resolution,
    note: &str,
    now: UnixMillis,
) -> Result<Vec<DeliveryId>, StoreError> {
    let ids = unique_ids(ids);
    if ids.is_empty() {
        return Ok(ids);
    }
    let prefix = match resolution {
        Resolution::Resolved => "resolved",
        Resolution::Discarded => "discarded",
    };
    let extra = vec![Value::Integer(now.0), Value::Text(format!("{prefix}: {note}"))];
    store
        .write(move |conn| {
            update_each(
                conn,
                &ids,
                "UPDATE deliveries SET state = 'cancelled', last_error = ?3, updated_at = ?2 \
                 WHERE id = ?1 AND state = 'dead'",
                &extra,
            )
        })
        .await
}

pub(crate) async fn exception_groups(store: &SqliteStore, limit: u32) -> Result<Vec<ExceptionGroup>, StoreError> {
    let limit = limit.clamp(1, MAX_LIMIT);
    store
        .readers
        .run(move |conn| {
            // The partial index deliveries_dead holds only dead deliveries;
            // without statistics SQLite would pick a larger index on state.
            let mut statement = conn
                .prepare_cached(
                    "SELECT route, coalesce(last_error, '') AS error, count(*) AS n, max(updated_at) \
                     FROM deliveries INDEXED BY deliveries_dead WHERE state = 'dead' GROUP BY route, error \
                     ORDER BY n DESC, route, error LIMIT ?1",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(params![limit], |row| {
                    Ok(ExceptionGroup {
                        route: row.get(0)?,
                        last_error: row.get(1)?,
                        count: row.get::<_, i64>(2)? as u64,
                        latest_at: UnixMillis(row.get(3)?),
                    })
                })
                .map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .await
}

/// The first bucket start and the width, in milliseconds, for buckets from
/// the one holding `since` to the one holding `now`, at most
/// [`MAX_BUCKETS`] of them.
pub(crate) fn bucket_range(since: UnixMillis, bucket: Duration, now: UnixMillis) -> (i64, i64, i64) {
    let width = i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX).max(1);
    let last = now.0 - now.0.rem_euclid(width);
    let mut first = since.0 - since.0.rem_euclid(width);
    if last >= first && (last - first) / width >= MAX_BUCKETS {
        first = last - (MAX_BUCKETS - 1) * width;
    }
    (first, last, width)
}

pub(crate) async fn activity(
    store: &SqliteStore,
    since: UnixMillis,
    bucket: Duration,
) -> Result<Vec<ActivityBucket>, StoreError> {
    let (first, last, width) = bucket_range(since, bucket, UnixMillis::now());
    store
        .readers
        .run(move |conn| {
            let mut buckets: BTreeMap<(i64, String), ActivityBucket> = BTreeMap::new();
            // Events: one count per source and bucket over the id range of
            // the bucket in events_by_source (source, id), reading the index
            // alone, never the rows (a row is a whole request body).
            let sources: Vec<String> = {
                let sql = format!("{SOURCES_CTE}SELECT source FROM sources WHERE source IS NOT NULL");
                let mut statement = conn.prepare_cached(&sql).map_err(sql_error)?;
                let rows = statement.query_map([], |row| row.get(0)).map_err(sql_error)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)?
            };
            let mut count = conn
                .prepare_cached("SELECT count(*) FROM events WHERE source = ?1 AND id >= ?2 AND id < ?3")
                .map_err(sql_error)?;
            for source in &sources {
                let mut start = first;
                while start <= last {
                    let end = start.saturating_add(width);
                    let events: i64 = count
                        .query_row(params![source, first_id_at(start), first_id_at(end)], |row| row.get(0))
                        .map_err(sql_error)?;
                    if events > 0 {
                        buckets
                            .entry((start, source.clone()))
                            .or_insert_with(|| ActivityBucket {
                                start: UnixMillis(start),
                                source: source.clone(),
                                ..Default::default()
                            })
                            .events = events as u64;
                    }
                    start = end;
                }
            }
            // Verification failures: one range over the covering index
            // verification_failures_by_at (at, source).
            let mut failures = conn
                .prepare_cached(
                    "SELECT at - (at % ?2) AS start, source, count(*) FROM verification_failures \
                     WHERE at >= ?1 AND at < ?3 GROUP BY start, source",
                )
                .map_err(sql_error)?;
            let rows = failures
                .query_map(params![first, width, last.saturating_add(width)], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, i64>(2)?))
                })
                .map_err(sql_error)?;
            for row in rows {
                let (start, source, n) = row.map_err(sql_error)?;
                buckets
                    .entry((start, source.clone()))
                    .or_insert_with(|| ActivityBucket {
                        start: UnixMillis(start),
                        source,
                        ..Default::default()
                    })
                    .verification_failures = n as u64;
            }
            Ok(buckets.into_values().collect())
        })
        .await
}

pub(crate) async fn attempt_activity(
    store: &SqliteStore,
    since: UnixMillis,
    bucket: Duration,
) -> Result<Vec<AttemptBucket>, StoreError> {
    let (first, last, width) = bucket_range(since, bucket, UnixMillis::now());
    store
        .readers
        .run(move |conn| {
            // A range over the covering index attempts_by_started_at.
            let mut statement = conn
                .prepare_cached(
                    "SELECT started_at - (started_at % ?2) AS start, \
                       sum(outcome = 'succeeded'), sum(outcome IN ('retry', 'dead')) \
                     FROM attempts WHERE started_at >= ?1 AND started_at < ?3 \
                     GROUP BY start ORDER BY start",
                )
                .map_err(sql_error)?;
            let rows = statement
                .query_map(params![first, width, last.saturating_add(width)], |row| {
                    Ok(AttemptBucket {
                        start: UnixMillis(row.get(0)?),
                        succeeded: row.get::<_, i64>(1)? as u64,
                        failed: row.get::<_, i64>(2)? as u64,
                    })
                })
                .map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .await
}

pub(crate) async fn oldest_due_delivery(
    store: &SqliteStore,
    now: UnixMillis,
) -> Result<Option<UnixMillis>, StoreError> {
    store
        .readers
        .run(move |conn| {
            // One seek per state in deliveries_due (state, next_attempt_at);
            // `state IN (…)` would defeat the min() optimisation.
            let mut statement = conn
                .prepare_cached(
                    "SELECT min(due) FROM ( \
                       SELECT min(next_attempt_at) AS due FROM deliveries \
                         WHERE state = 'pending' AND next_attempt_at <= ?1 \
                       UNION ALL \
                       SELECT min(next_attempt_at) FROM deliveries \
                         WHERE state = 'retrying' AND next_attempt_at <= ?1)",
                )
                .map_err(sql_error)?;
            let due: Option<i64> = statement
                .query_row(params![now.0], |row| row.get(0))
                .map_err(sql_error)?;
            Ok(due.map(UnixMillis))
        })
        .await
}

pub(crate) async fn create_user(store: &SqliteStore, user: NewUser) -> Result<User, StoreError> {
    store
        .write(move |conn| {
            conn.execute(
                "INSERT INTO users (id, username, role, password_hash, disabled, created_at) \
                 VALUES (?1, ?2, ?3, ?4, 0, ?5)",
                params![
                    &user.id.to_bytes()[..],
                    user.username,
                    user.role.as_str(),
                    user.password_hash,
                    user.created_at.0
                ],
            )
            .map_err(|e| conflict_or(e, &format!("a user named {:?} already exists", user.username)))?;
            Ok(User {
                id: user.id,
                username: user.username,
                role: user.role,
                password_hash: user.password_hash,
                disabled: false,
                created_at: user.created_at,
                last_login_at: None,
            })
        })
        .await
}

pub(crate) async fn user_by_name(store: &SqliteStore, username: &str) -> Result<Option<User>, StoreError> {
    let username = username.to_string();
    store
        .readers
        .run(move |conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?1");
            let mut statement = conn.prepare_cached(&sql).map_err(sql_error)?;
            statement
                .query_row(params![username], user_at_0)
                .optional()
                .map_err(sql_error)
        })
        .await
}

pub(crate) async fn user(store: &SqliteStore, id: UserId) -> Result<Option<User>, StoreError> {
    store
        .readers
        .run(move |conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1");
            let mut statement = conn.prepare_cached(&sql).map_err(sql_error)?;
            statement
                .query_row(params![&id.to_bytes()[..]], user_at_0)
                .optional()
                .map_err(sql_error)
        })
        .await
}

pub(crate) async fn list_users(store: &SqliteStore) -> Result<Vec<User>, StoreError> {
    store
        .readers
        .run(move |conn| {
            let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
            let mut statement = conn.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map([], user_at_0).map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .await
}

/// Runs `update` (which must return the user's id) for `username` and, if
/// `end_sessions`, deletes that user's sessions, in one transaction.
/// Returns whether the user exists.
async fn update_user(
    store: &SqliteStore,
    username: &str,
    update: &'static str,
    value: Value,
    end_sessions: bool,
) -> Result<bool, StoreError> {
    let username = username.to_string();
    store
        .write(move |conn| {
            let tx = conn.transaction().map_err(sql_error)?;
            let id: Option<Vec<u8>> = tx
                .prepare_cached(update)
                .map_err(sql_error)?
                .query_row(params![username, value], |row| row.get(0))
                .optional()
                .map_err(sql_error)?;
            if let (Some(id), true) = (&id, end_sessions) {
                tx.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")
                    .map_err(sql_error)?
                    .execute(params![id])
                    .map_err(sql_error)?;
            }
            tx.commit().map_err(sql_error)?;
            Ok(id.is_some())
        })
        .await
}

pub(crate) async fn set_user_disabled(store: &SqliteStore, username: &str, disabled: bool) -> Result<bool, StoreError> {
    update_user(
        store,
        username,
        "UPDATE users SET disabled = ?2 WHERE username = ?1 RETURNING id",
        Value::Integer(i64::from(disabled)),
        disabled,
    )
    .await
}

pub(crate) async fn set_user_password(
    store: &SqliteStore,
    username: &str,
    password_hash: &str,
) -> Result<bool, StoreError> {
    update_user(
        store,
        username,
        "UPDATE users SET password_hash = ?2 WHERE username = ?1 RETURNING id",
        Value::Text(password_hash.to_string()),
        true,
    )
    .await
}

pub(crate) async fn record_login(store: &SqliteStore, id: UserId, at: UnixMillis) -> Result<(), StoreError> {
    store
        .write(move |conn| {
            conn.prepare_cached("UPDATE users SET last_login_at = ?2 WHERE id = ?1")
                .map_err(sql_error)?
                .execute(params![&id.to_bytes()[..], at.0])
                .map_err(sql_error)?;
            Ok(())
        })
        .await
}

pub(crate) async fn create_session(store: &SqliteStore, session: Session) -> Result<(), StoreError> {
    store
        .write(move |conn| {
            let tx = conn.transaction().map_err(sql_error)?;
            // Housekeeping on the (rare) login: expired sessions go.
            tx.prepare_cached("DELETE FROM sessions WHERE expires_at <= ?1")
                .map_err(sql_error)?
                .execute(params![session.created_at.0])
                .map_err(sql_error)?;
            tx.prepare_cached(
                "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at, remote_addr) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(sql_error)?
            .execute(params![
                session.token_hash,
                &session.user_id.to_bytes()[..],
                session.csrf_token,
                session.created_at.0,
                session.expires_at.0,
                session.remote_addr,
            ])
            .map_err(|e| conflict_or(e, "the session exists, or its user does not"))?;
            tx.commit().map_err(sql_error)
        })
        .await
}

pub(crate) async fn session(
    store: &SqliteStore,
    token_hash: &str,
    now: UnixMillis,
) -> Result<Option<(Session, User)>, StoreError> {
    let token_hash = token_hash.to_string();
    store
        .readers
        .run(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT s.token_hash, s.user_id, s.csrf_token, s.created_at, s.expires_at, s.remote_addr, \
                       u.id, u.username, u.role, u.password_hash, u.disabled, u.created_at, u.last_login_at \
                     FROM sessions AS s JOIN users AS u ON u.id = s.user_id \
                     WHERE s.token_hash = ?1 AND s.expires_at > ?2 AND u.disabled = 0",
                )
                .map_err(sql_error)?;
            statement
                .query_row(params![token_hash, now.0], |row| {
                    let user = user_row(row, 6)?;
                    let session = Session {
                        token_hash: row.get(0)?,
                        user_id: user.id,
                        csrf_token: row.get(2)?,
                        created_at: UnixMillis(row.get(3)?),
                        expires_at: UnixMillis(row.get(4)?),
                        remote_addr: row.get(5)?,
                    };
                    Ok((session, user))
                })
                .optional()
                .map_err(sql_error)
        })
        .await
}

pub(crate) async fn delete_session(store: &SqliteStore, token_hash: &str) -> Result<(), StoreError> {
    let token_hash = token_hash.to_string();
    store
        .write(move |conn| {
            conn.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")
                .map_err(sql_error)?
                .execute(params![token_hash])
                .map_err(sql_error)?;
            Ok(())
        })
        .await
}

pub(crate) async fn create_token(store: &SqliteStore, token: ApiToken) -> Result<(), StoreError> {
    store
        .write(move |conn| {
            let sql = format!("INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
            conn.prepare_cached(&sql)
                .map_err(sql_error)?
                .execute(params![
                    &token.id.to_bytes()[..],
                    token.name,
                    token.token_hash,
                    token.role.as_str(),
                    token.created_by,
                    token.created_at.0,
                    token.expires_at.map(|t| t.0),
                    token.revoked_at.map(|t| t.0),
                    token.last_used_at.map(|t| t.0),
                ])
                .map_err(|e| conflict_or(e, "a token with this id or secret exists"))?;
            Ok(())
        })
        .await
}

pub(crate) async fn token_by_hash(
    store: &SqliteStore,
    token_hash: &str,
    now: UnixMillis,
) -> Result<Option<ApiToken>, StoreError> {
    let hash = token_hash.to_string();
    let found = store
        .readers
        .run(move |conn| {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?1");
            let mut statement = conn.prepare_cached(&sql).map_err(sql_error)?;
            statement.query_row(params![hash], token).optional().map_err(sql_error)
        })
        .await?;
    let Some(mut found) = found else {
        return Ok(None);
    };
    let stale = found
        .last_used_at
        .is_none_or(|used| used.0 <= now.0 - LAST_USED_GRANULARITY_MS);
    if stale {
        let id = found.id;
        store
            .write(move |conn| {
                conn.prepare_cached(
                    "UPDATE api_tokens SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1",
                )
                .map_err(sql_error)?
                .execute(params![&id.to_bytes()[..], now.0])
                .map_err(sql_error)?;
                Ok(())
            })
            .await?;
        found.last_used_at = Some(found.last_used_at.map_or(now, |used| used.max(now)));
    }
    Ok(Some(found))
}

pub(crate) async fn list_tokens(store: &SqliteStore) -> Result<Vec<ApiToken>, StoreError> {
    store
        .readers
        .run(move |conn| {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at DESC, id DESC");
            let mut statement = conn.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement.query_map([], token).map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .await
}

pub(crate) async fn revoke_token(store: &SqliteStore, id: TokenId, now: UnixMillis) -> Result<bool, StoreError> {
    store
        .write(move |conn| {
            let expires: Option<Option<i64>> = conn
                .prepare_cached(
                    "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL RETURNING expires_at",
                )
                .map_err(sql_error)?
                .query_row(params![&id.to_bytes()[..], now.0], |row| row.get(0))
                .optional()
                .map_err(sql_error)?;
            // Revoking an expired token still marks it, but it was not active.
            Ok(expires.is_some_and(|expires| expires.is_none_or(|at| now.0 < at)))
        })
        .await
}

pub(crate) async fn append_audit(store: &SqliteStore, entry: NewAuditEntry) -> Result<(), StoreError> {
    store
        .write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO audit_log (at, actor, action, object, remote_addr, note, details) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(sql_error)?
            .execute(params![
                entry.at.0,
                entry.actor,
                entry.action,
                entry.object,
                entry.remote_addr,
                entry.note,
                entry.details
            ])
            .map_err(sql_error)?;
            Ok(())
        })
        .await
}

pub(crate) async fn list_audit(store: &SqliteStore, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
    let query = query.clone();
    store
        .readers
        .run(move |conn| {
            let mut conditions: Vec<&str> = Vec::new();
            let mut values: Vec<Value> = Vec::new();
            if let Some(actor) = &query.actor {
                conditions.push("actor = ?");
                values.push(Value::Text(actor.clone()));
            }
            if let Some(prefix) = &query.action_prefix {
                // Not LIKE: `_` and `%` in a prefix would be wildcards.
                conditions.push("substr(action, 1, ?) = ?");
                values.push(Value::Integer(prefix.chars().count() as i64));
                values.push(Value::Text(prefix.clone()));
            }
            if let Some(object) = &query.object {
                conditions.push("object = ?");
                values.push(Value::Text(object.clone()));
            }
            if let Some(before) = query.before {
                conditions.push("seq < ?");
                values.push(Value::Integer(before));
            }
            let filter = if conditions.is_empty() {
                String::new()
            } else {
                format!(" WHERE {}", conditions.join(" AND "))
            };
            values.push(Value::Integer(i64::from(query.limit.clamp(1, MAX_LIMIT))));
            let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log{filter} ORDER BY seq DESC LIMIT ?");
            let mut statement = conn.prepare_cached(&sql).map_err(sql_error)?;
            let rows = statement
                .query_map(params_from_iter(values), audit_entry)
                .map_err(sql_error)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sql_error)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_audit_log_refuses_changes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gatehouse.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).expect("open");
        store
            .append_audit(NewAuditEntry {
                at: UnixMillis(1),
                actor: "user:alice".into(),
                action: "route.pause".into(),
                object: "route:orders".into(),
                remote_addr: None,
                note: None,
                details: String::new(),
            })
            .await
            .expect("append");
        let conn = open_connection(&path, &SqliteOptions::default(), false).expect("connect");
        for sql in ["UPDATE audit_log SET actor = 'user:mallory'", "DELETE FROM audit_log"] {
            let err = conn.execute(sql, []).expect_err(sql);
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        let count: i64 = conn
            .query_row("SELECT count(*) FROM audit_log WHERE actor = 'user:alice'", [], |row| {
                row.get(0)
            })
            .expect("count");
        assert_eq!(count, 1);
    }

    #[test]
    fn only_the_filters_in_use_become_sql() {
        let (sql, values) = list_events_sql(&EventQuery {
            limit: 5000,
            ..Default::default()
        });
        assert!(sql.ends_with("FROM events ORDER BY id DESC LIMIT ?"), "{sql}");
        assert_eq!(values, vec![Value::Integer(1000)], "the limit is capped");
        let (sql, values) = list_events_sql(&EventQuery {
            source: Some("s".into()),
            delivery_state: Some(DeliveryState::Dead),
            body_contains: Some("x".into()),
            limit: 10,
            ..Default::default()
        });
        assert!(
            sql.contains(
                "WHERE source = ? AND id IN (SELECT event_id FROM deliveries WHERE state = ?) AND instr(body, ?) > 0"
            ),
            "{sql}"
        );
        assert_eq!(values.len(), 4);
        assert_eq!(values[2], Value::Blob(b"x".to_vec()));
    }
}
