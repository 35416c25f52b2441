//! Delivery operations. Claims and state changes run on the writer thread
//! (SQLite has one writer, so the in-process claimer is the only claimer);
//! reads run on the read pool.

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};

use gatehouse_core::{
    Attempt, AttemptOutcome, Delivery, DeliveryId, DeliveryState, EventId, EventSummary, FinishedAttempt, NewDelivery,
    UnixMillis,
};
use gatehouse_store::codec::{decode_headers, encode_headers};
use gatehouse_store::{ClaimRequest, ClaimedDelivery, DeliveryQuery, StoreError};

use crate::read::{event_by_id, summary, SUMMARY_COLUMNS};
use crate::{classify, write};

const DELIVERY_COLUMNS: &str =
    "id, event_id, route, state, attempts, next_attempt_at, last_error, created_at, updated_at";

fn delivery(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let bad_id = |column| rusqlite::Error::IntegralValueOutOfRange(column, 16);
    let id: Vec<u8> = row.get(0)?;
    let event_id: Vec<u8> = row.get(1)?;
    let state: String = row.get(3)?;
    Ok(Delivery {
        id: DeliveryId::from_slice(&id).ok_or(bad_id(0))?,
        event_id: EventId::from_slice(&event_id).ok_or(bad_id(1))?,
        route: row.get(2)?,
        state: DeliveryState::parse(&state).ok_or(rusqlite::Error::InvalidColumnName(state))?,
        attempts: row.get(4)?,
        next_attempt_at: UnixMillis(row.get(5)?),
        last_error: row.get(6)?,
        created_at: UnixMillis(row.get(7)?),
        updated_at: UnixMillis(row.get(8)?),
    })
}

/// The paused routes, as a subquery.
const PAUSED: &str = "(SELECT route FROM route_states WHERE paused = 1)";

/// Claims due deliveries (or ones whose lease expired) on unpaused routes.
pub(crate) fn claim(conn: &mut Connection, request: &ClaimRequest) -> Result<Vec<ClaimedDelivery>, StoreError> {
    let now = request.now.0;
    let expires = now.saturating_add(request.lease.as_millis() as i64);
    let tx = conn.transaction().map_err(|e| classify(&e))?;
    let mut claimed = Vec::new();
    {
        // One ordered, limited index range scan per kind of claimable work
        // (pending, retrying, expired leases), merged: sorting every due
        // delivery before the LIMIT made each claim read the whole backlog
        // (50,000 rows to claim 512).
        let sql = format!(
            "UPDATE deliveries SET state = 'in_flight', lease_owner = ?1, lease_expires_at = ?2, updated_at = ?3 \
             WHERE id IN ( \
               SELECT id FROM ( \
                 SELECT * FROM (SELECT id, next_attempt_at AS due FROM deliveries \
                   WHERE state = 'pending' AND next_attempt_at <= ?3 AND route NOT IN {PAUSED} \
                   ORDER BY next_attempt_at LIMIT ?4) \
                 UNION ALL \
                 SELECT * FROM (SELECT id, next_attempt_at AS due FROM deliveries \
                   WHERE state = 'retrying' AND next_attempt_at <= ?3 AND route NOT IN {PAUSED} \
                   ORDER BY next_attempt_at LIMIT ?4) \
                 UNION ALL \
                 SELECT * FROM (SELECT id, lease_expires_at AS due FROM deliveries \
                   WHERE state = 'in_flight' AND lease_expires_at < ?3 AND route NOT IN {PAUSED} \
                   ORDER BY lease_expires_at LIMIT ?4) \
               ) ORDER BY due LIMIT ?4) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let mut statement = tx.prepare_cached(&sql).map_err(|e| classify(&e))?;
        let deliveries = statement
            .query_map(params![request.owner, expires, now, request.limit], delivery)
            .map_err(|e| classify(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| classify(&e))?;
        for delivery in deliveries {
            let event = event_by_id(&tx, delivery.event_id)?
                .ok_or_else(|| StoreError::Internal(format!("delivery {} has no event", delivery.id)))?;
            claimed.push(ClaimedDelivery { delivery, event });
        }
    }
    tx.commit().map_err(|e| classify(&e))?;
    Ok(claimed)
}

/// Records attempts whose lease `owner` still holds.
pub(crate) fn finish(
    conn: &mut Connection,
    owner: &str,
    finished: &[FinishedAttempt],
) -> Result<Vec<bool>, StoreError> {
    let tx = conn.transaction().map_err(|e| classify(&e))?;
    let mut recorded = Vec::with_capacity(finished.len());
    {
        let mut update = tx
            .prepare_cached(
                "UPDATE deliveries SET state = ?3, attempts = attempts + 1, next_attempt_at = coalesce(?4, next_attempt_at), \
                 last_error = ?5, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?6 \
                 WHERE id = ?1 AND state = 'in_flight' AND lease_owner = ?2",
            )
            .map_err(|e| classify(&e))?;
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, response_headers, \
                 response_excerpt, error, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(|e| classify(&e))?;
        let now = write::now();
        for item in finished {
            let attempt = &item.attempt;
            let state = match attempt.outcome {
                AttemptOutcome::Succeeded => DeliveryState::Succeeded,
                AttemptOutcome::Retry => DeliveryState::Retrying,
                AttemptOutcome::Dead => DeliveryState::Dead,
                AttemptOutcome::Skipped => DeliveryState::Skipped,
            };
            let id = item.delivery_id.to_bytes();
            let changed = update
                .execute(params![
                    &id[..],
                    owner,
                    state.as_str(),
                    item.next_attempt_at.map(|t| t.0),
                    attempt.error,
                    now
                ])
                .map_err(|e| classify(&e))?;
            if changed == 1 {
                insert
                    .execute(params![
                        &id[..],
                        attempt.number,
                        attempt.started_at.0,
                        attempt.duration_ms,
                        attempt.status_code,
                        encode_headers(&attempt.response_headers),
                        &attempt.response_excerpt[..],
                        attempt.error,
                        attempt.outcome.as_str(),
                    ])
                    .map_err(|e| classify(&e))?;
            }
            recorded.push(changed == 1);
        }
    }
    tx.commit().map_err(|e| classify(&e))?;
    Ok(recorded)
}

/// Gives claimed deliveries back, due now.
pub(crate) fn release(conn: &mut Connection, owner: &str, ids: &[DeliveryId]) -> Result<(), StoreError> {
    let tx = conn.transaction().map_err(|e| classify(&e))?;
    {
        let mut update = tx
            .prepare_cached(
                "UPDATE deliveries SET state = CASE WHEN attempts = 0 THEN 'pending' ELSE 'retrying' END, \
                 lease_owner = NULL, lease_expires_at = NULL, next_attempt_at = ?3, updated_at = ?3 \
                 WHERE id = ?1 AND state = 'in_flight' AND lease_owner = ?2",
            )
            .map_err(|e| classify(&e))?;
        let now = write::now();
        for id in ids {
            update
                .execute(params![&id.to_bytes()[..], owner, now])
                .map_err(|e| classify(&e))?;
        }
    }
    tx.commit().map_err(|e| classify(&e))
}

/// Adds deliveries to existing events (replay), due now.
pub(crate) fn add(conn: &mut Connection, deliveries: &[(EventId, NewDelivery)]) -> Result<u64, StoreError> {
    let tx = conn.transaction().map_err(|e| classify(&e))?;
    let mut created = 0;
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO deliveries (id, event_id, route, state, next_attempt_at, created_at, updated_at, \
                 last_error) SELECT ?1, ?2, ?3, ?4, ?5, ?5, ?5, ?6 WHERE EXISTS (SELECT 1 FROM events WHERE id = ?2)",
            )
            .map_err(|e| classify(&e))?;
        let now = write::now();
        for (event_id, delivery) in deliveries {
            created += insert
                .execute(params![
                    &delivery.id.to_bytes()[..],
                    &event_id.to_bytes()[..],
                    &*delivery.route,
                    delivery.state.as_str(),
                    now,
                    delivery.held_by,
                ])
                .map_err(|e| classify(&e))? as u64;
        }
    }
    tx.commit().map_err(|e| classify(&e))?;
    Ok(created)
}

/// Makes dead deliveries due at `now`.
pub(crate) fn retry(conn: &mut Connection, ids: &[DeliveryId], now: UnixMillis) -> Result<u64, StoreError> {
    let tx = conn.transaction().map_err(|e| classify(&e))?;
    let mut changed = 0;
    {
        let mut update = tx
            .prepare_cached(
                "UPDATE deliveries SET state = 'pending', next_attempt_at = ?2, updated_at = ?2 \
                 WHERE id = ?1 AND state = 'dead'",
            )
            .map_err(|e| classify(&e))?;
        for id in ids {
            changed += update
                .execute(params![&id.to_bytes()[..], now.0])
                .map_err(|e| classify(&e))? as u64;
        }
    }
    tx.commit().map_err(|e| classify(&e))?;
    Ok(changed)
}

/// Pauses or resumes a route.
pub(crate) fn set_paused(conn: &mut Connection, route: &str, paused: bool) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO route_states (route, paused, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (route) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at",
        params![route, paused, write::now()],
    )
    .map(|_| ())
    .map_err(|e| classify(&e))
}

pub(crate) fn by_id(conn: &Connection, id: DeliveryId) -> Result<Option<Delivery>, StoreError> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = ?1");
    let mut statement = conn.prepare_cached(&sql).map_err(|e| classify(&e))?;
    statement
        .query_row(params![&id.to_bytes()[..]], delivery)
        .optional()
        .map_err(|e| classify(&e))
}

pub(crate) fn for_event(conn: &Connection, event: EventId) -> Result<Vec<Delivery>, StoreError> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = ?1 ORDER BY id");
    let mut statement = conn.prepare_cached(&sql).map_err(|e| classify(&e))?;
    let rows = statement
        .query_map(params![&event.to_bytes()[..]], delivery)
        .map_err(|e| classify(&e))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(|e| classify(&e))
}

pub(crate) fn list(conn: &Connection, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
    let (sql, values) = list_sql(query);
    let mut statement = conn.prepare_cached(&sql).map_err(|e| classify(&e))?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(values), delivery)
        .map_err(|e| classify(&e))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(|e| classify(&e))
}

/// The statement for one delivery query. Only the filters in use become
/// SQL (`?1 IS NULL OR …` hides every index from the planner: a drill-down
/// into an exception group scanned all deliveries, 8 s on 1,000,000).
fn list_sql(query: &DeliveryQuery) -> (String, Vec<Value>) {
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    if let Some(route) = &query.route {
        conditions.push("route = ?");
        values.push(Value::Text(route.clone()));
    }
    if let Some(state) = query.state {
        // Without statistics SQLite would read every delivery of a bulk
        // state through a state index and sort them all; walking the
        // newest first finds a page at once. `+state` keeps it off the
        // state indexes. With a route, deliveries_by_route_state (route,
        // state, id) serves both the filter and the order.
        let bulk = matches!(
            state,
            DeliveryState::Succeeded | DeliveryState::Pending | DeliveryState::InFlight | DeliveryState::Skipped
        );
        conditions.push(if bulk && query.route.is_none() {
            "+state = ?"
        } else {
            "state = ?"
        });
        values.push(Value::Text(state.as_str().to_string()));
    }
    if let Some(error) = &query.last_error {
        // No error recorded is the empty error, as exception groups show it.
        conditions.push("coalesce(last_error, '') = ?");
        values.push(Value::Text(error.clone()));
    }
    if let Some(before) = query.before {
        conditions.push("id < ?");
        values.push(Value::Blob(before.to_bytes().to_vec()));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    values.push(Value::Integer(i64::from(query.limit.clamp(1, 1000))));
    (
        format!("SELECT {DELIVERY_COLUMNS} FROM deliveries{filter} ORDER BY id DESC LIMIT ?"),
        values,
    )
}

pub(crate) fn attempts(conn: &Connection, id: DeliveryId) -> Result<Vec<Attempt>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT number, started_at, duration_ms, status_code, response_headers, response_excerpt, error, outcome \
             FROM attempts WHERE delivery_id = ?1 ORDER BY number, seq",
        )
        .map_err(|e| classify(&e))?;
    let rows = statement
        .query_map(params![&id.to_bytes()[..]], |row| {
            let headers: String = row.get(4)?;
            let excerpt: Vec<u8> = row.get(5)?;
            let outcome: String = row.get(7)?;
            Ok((
                Attempt {
                    number: row.get(0)?,
                    started_at: UnixMillis(row.get(1)?),
                    duration_ms: row.get(2)?,
                    status_code: row.get(3)?,
                    response_headers: Vec::new(),
                    response_excerpt: excerpt.into(),
                    error: row.get(6)?,
                    outcome: AttemptOutcome::parse(&outcome).unwrap_or(AttemptOutcome::Dead),
                },
                headers,
            ))
        })
        .map_err(|e| classify(&e))?;
    let mut attempts = Vec::new();
    for row in rows {
        let (mut attempt, headers) = row.map_err(|e| classify(&e))?;
        attempt.response_headers = decode_headers(&headers)?;
        attempts.push(attempt);
    }
    Ok(attempts)
}

pub(crate) fn counts(conn: &Connection) -> Result<Vec<(DeliveryState, u64)>, StoreError> {
    let mut statement = conn
        .prepare_cached("SELECT state, count(*) FROM deliveries GROUP BY state ORDER BY state")
        .map_err(|e| classify(&e))?;
    let rows = statement
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))
        .map_err(|e| classify(&e))?;
    let mut counts = Vec::new();
    for row in rows {
        let (state, count) = row.map_err(|e| classify(&e))?;
        if let Some(state) = DeliveryState::parse(&state) {
            counts.push((state, count as u64));
        }
    }
    Ok(counts)
}

pub(crate) fn paused(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut statement = conn
        .prepare_cached("SELECT route FROM route_states WHERE paused = 1 ORDER BY route")
        .map_err(|e| classify(&e))?;
    let rows = statement.query_map([], |row| row.get(0)).map_err(|e| classify(&e))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(|e| classify(&e))
}

pub(crate) fn events_between(
    conn: &Connection,
    source: &str,
    from: UnixMillis,
    to: UnixMillis,
    after: Option<EventId>,
    limit: u32,
) -> Result<Vec<EventSummary>, StoreError> {
    let sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM events WHERE source = ?1 AND received_at >= ?2 AND received_at < ?3 \
         AND (?4 IS NULL OR id > ?4) ORDER BY id LIMIT ?5"
    );
    let after = after.map(|id| id.to_bytes().to_vec());
    let mut statement = conn.prepare_cached(&sql).map_err(|e| classify(&e))?;
    let rows = statement
        .query_map(params![source, from.0, to.0, after, limit.clamp(1, 1000)], summary)
        .map_err(|e| classify(&e))?;
    rows.collect::<Result<Vec<_>, _>>().map_err(|e| classify(&e))
}
