//! Deliveries as SQL: creating them (with their event, or on replay),
//! claiming due ones under a lease, recording finished attempts, and the
//! operator's retry.
//!
//! Each operation is one statement over array parameters (`UNNEST`), so a
//! batch costs one round trip whatever its size. The statements that make
//! deliveries due also notify the listeners (see `listen`) in the same
//! transaction: PostgreSQL delivers the notification only if it commits.
//!
//! Claims are `FOR UPDATE SKIP LOCKED`: concurrent claimers, in any number of
//! processes, each take rows nobody else is taking, without waiting for each
//! other. Writes that lock several deliveries lock them in id order, so two
//! of them never deadlock.

use std::collections::{HashMap, HashSet};

use deadpool_postgres::GenericClient;
use gatehouse_core::{AttemptOutcome, DeliveryId, EventId, FinishedAttempt, NewDelivery, UnixMillis};
use gatehouse_store::{ClaimRequest, ClaimedDelivery, StoreError};
use tokio_postgres::types::ToSql;

use crate::error::{from_pg, from_pool};
use crate::rows::{self, pg_int, pg_text, DELIVERY_COLUMNS, EVENT_COLUMNS};

/// The tail of a statement whose CTE `changed` returns one row per delivery
/// made due: selects how many, and notifies the listeners when there are any.
/// The channel is `listen::CHANNEL`; the payload names the schema.
macro_rules! count_and_notify {
    () => {
        "SELECT c.n, (SELECT pg_notify('gatehouse_deliveries', coalesce(current_schema(), ''))::text WHERE c.n > 0)
FROM (SELECT count(*) AS n FROM changed) AS c"
    };
}

/// Creates deliveries for events that exist. `at` is when each is due, and
/// its creation time.
const INSERT_DELIVERIES: &str = concat!(
    "WITH changed AS (
    INSERT INTO deliveries (id, event_id, route, state, attempts, next_attempt_at, created_at, updated_at,
                            last_error)
    SELECT d.id, d.event_id, d.route, d.state, 0, d.at, d.at, d.at, d.last_error
    FROM UNNEST($1::bytea[], $2::bytea[], $3::text[], $4::text[], $5::int8[], $6::text[]) WITH ORDINALITY
         AS d(id, event_id, route, state, at, last_error, ord)
    WHERE EXISTS (SELECT 1 FROM events WHERE events.id = d.event_id)
    ORDER BY d.ord
    RETURNING 1
)
",
    count_and_notify!()
);

/// Leases up to `$4` due deliveries to `$1` at `$2` until `$3`.
///
/// Due work and expired leases are read by two index scans (the partial
/// indexes `deliveries_due` and `deliveries_leases`), each in index order
/// and stopping after `$4` rows, then merged oldest due first: a claim
/// costs the same with a backlog of millions as with none. (One scan with
/// `OR` would read and sort every due delivery on each claim.) Up to `$4`
/// rows more than claimed may stay locked until the statement ends, which
/// only makes a concurrent claimer skip them this once.
fn claim_sql() -> String {
    format!(
        "UPDATE deliveries
SET state = 'in_flight', lease_owner = $1, lease_expires_at = $3, updated_at = $2
WHERE id IN (
    SELECT claimable.id FROM (
        SELECT due.id, due.next_attempt_at FROM (
            SELECT id, next_attempt_at FROM deliveries
            WHERE state IN ('pending', 'retrying') AND next_attempt_at <= $2
              AND route NOT IN (SELECT route FROM route_states WHERE paused)
            ORDER BY next_attempt_at
            LIMIT $4
            FOR UPDATE SKIP LOCKED
        ) AS due
        UNION ALL
        SELECT expired.id, expired.next_attempt_at FROM (
            SELECT id, next_attempt_at FROM deliveries
            WHERE state = 'in_flight' AND lease_expires_at < $2
              AND route NOT IN (SELECT route FROM route_states WHERE paused)
            ORDER BY lease_expires_at
            LIMIT $4
            FOR UPDATE SKIP LOCKED
        ) AS expired
    ) AS claimable
    ORDER BY claimable.next_attempt_at, claimable.id
    LIMIT $4
)
RETURNING {DELIVERY_COLUMNS}"
    )
}

/// Moves the deliveries `$1` still holds to their outcome's state and
/// records the attempts; returns the positions (1-based) recorded.
const FINISH_ATTEMPTS: &str = "\
WITH input AS (
    SELECT * FROM UNNEST($2::bytea[], $3::text[], $4::int8[], $5::text[]) WITH ORDINALITY
        AS i(id, state, next_attempt_at, error, ord)
), locked AS (
    SELECT deliveries.id, input.state, input.next_attempt_at, input.error, input.ord
    FROM deliveries JOIN input ON deliveries.id = input.id
    WHERE deliveries.state = 'in_flight' AND deliveries.lease_owner = $1
    ORDER BY deliveries.id
    FOR UPDATE OF deliveries
), updated AS (
    UPDATE deliveries
    SET state = locked.state,
        attempts = deliveries.attempts + 1,
        next_attempt_at = coalesce(locked.next_attempt_at, deliveries.next_attempt_at),
        last_error = locked.error,
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = $6
    FROM locked
    WHERE deliveries.id = locked.id AND deliveries.state = 'in_flight' AND deliveries.lease_owner = $1
    RETURNING locked.ord
), recorded AS (
    INSERT INTO attempts (delivery_id, number, started_at, duration_ms, status_code, response_headers,
                          response_excerpt, error, outcome)
    SELECT a.delivery_id, a.number, a.started_at, a.duration_ms, a.status_code, a.response_headers::json,
           a.response_excerpt, a.error, a.outcome
    FROM UNNEST($2::bytea[], $7::int4[], $8::int8[], $9::int4[], $10::int4[], $11::text[], $12::bytea[],
                $5::text[], $13::text[]) WITH ORDINALITY
         AS a(delivery_id, number, started_at, duration_ms, status_code, response_headers, response_excerpt,
              error, outcome, ord)
    JOIN updated ON updated.ord = a.ord
    ORDER BY a.ord
)
SELECT ord FROM updated";

/// Gives deliveries `$1` holds back: due again at once, as they were
/// before the claim (pending if never attempted, else retrying).
const RELEASE_DELIVERIES: &str = concat!(
    "WITH changed AS (
    UPDATE deliveries
    SET state = CASE WHEN attempts = 0 THEN 'pending' ELSE 'retrying' END,
        next_attempt_at = LEAST(next_attempt_at, $3),
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = $3
    WHERE id = ANY($2) AND state = 'in_flight' AND lease_owner = $1
    RETURNING 1
)
",
    count_and_notify!()
);

/// Makes dead deliveries due at `$2`.
const RETRY_DELIVERIES: &str = concat!(
    "WITH changed AS (
    UPDATE deliveries
    SET state = 'pending', next_attempt_at = $2, updated_at = $2
    WHERE id = ANY($1) AND state = 'dead'
    RETURNING 1
)
",
    count_and_notify!()
);

/// Pauses or resumes a route; resuming makes its deliveries claimable, so
/// it notifies.
pub(crate) const SET_ROUTE_PAUSED: &str = "\
WITH changed AS (
    INSERT INTO route_states (route, paused, updated_at) VALUES ($1, $2, $3)
    ON CONFLICT (route) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at
    RETURNING 1
)
SELECT (SELECT pg_notify('gatehouse_deliveries', coalesce(current_schema(), ''))::text WHERE NOT $2)
FROM changed";

/// Runs a statement built with `count_and_notify!` and returns its count.
async fn count_changed(
    client: &impl GenericClient,
    context: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = client.prepare_cached(sql).await.map_err(|e| from_pg(context, &e))?;
    let row = client
        .query_one(&statement, params)
        .await
        .map_err(|e| from_pg(context, &e))?;
    let count: i64 = row.try_get(0).map_err(|e| from_pg(context, &e))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Inserts `deliveries` (event id, delivery, when due) and notifies;
/// those whose event does not exist are skipped. Returns how many were
/// created.
pub(crate) async fn insert(
    client: &impl GenericClient,
    deliveries: &[(EventId, &NewDelivery, UnixMillis)],
) -> Result<u64, StoreError> {
    if deliveries.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Vec<u8>> = deliveries.iter().map(|(_, d, _)| d.id.to_bytes().to_vec()).collect();
    let event_ids: Vec<Vec<u8>> = deliveries.iter().map(|(e, _, _)| e.to_bytes().to_vec()).collect();
    let routes: Vec<_> = deliveries.iter().map(|(_, d, _)| pg_text(&d.route)).collect();
    let states: Vec<&str> = deliveries.iter().map(|(_, d, _)| d.state.as_str()).collect();
    let at: Vec<i64> = deliveries.iter().map(|(_, _, at)| at.0).collect();
    // An approval gate's rule, shown beside the held delivery.
    let held_by: Vec<_> = deliveries
        .iter()
        .map(|(_, d, _)| d.held_by.as_deref().map(pg_text))
        .collect();
    count_changed(
        client,
        "insert deliveries",
        INSERT_DELIVERIES,
        &[&ids, &event_ids, &routes, &states, &at, &held_by],
    )
    .await
}

/// Claims due deliveries; see `Store::claim_deliveries`.
pub(crate) async fn claim(
    pool: &deadpool_postgres::Pool,
    request: &ClaimRequest,
) -> Result<Vec<ClaimedDelivery>, StoreError> {
    if request.limit == 0 {
        return Ok(Vec::new());
    }
    let now = request.now.0;
    let lease_ms = i64::try_from(request.lease.as_millis()).unwrap_or(i64::MAX);
    let expires = now.saturating_add(lease_ms);
    let limit = i64::from(request.limit);
    let owner = pg_text(&request.owner);

    let client = pool.get().await.map_err(from_pool)?;
    let statement = client
        .prepare_cached(&claim_sql())
        .await
        .map_err(|e| from_pg("prepare claim deliveries", &e))?;
    let rows = client
        .query(&statement, &[&owner, &now, &expires, &limit])
        .await
        .map_err(|e| from_pg("claim deliveries", &e))?;
    let mut deliveries = rows.iter().map(rows::delivery).collect::<Result<Vec<_>, _>>()?;
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    // Oldest due first, as claimed (RETURNING keeps no order).
    deliveries.sort_by_key(|d| (d.next_attempt_at, d.id));

    let mut event_ids: Vec<Vec<u8>> = Vec::with_capacity(deliveries.len());
    let mut seen = HashSet::with_capacity(deliveries.len());
    for delivery in &deliveries {
        if seen.insert(delivery.event_id) {
            event_ids.push(delivery.event_id.to_bytes().to_vec());
        }
    }
    let statement = client
        .prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ANY($1)"))
        .await
        .map_err(|e| from_pg("prepare read claimed events", &e))?;
    let rows = client
        .query(&statement, &[&event_ids])
        .await
        .map_err(|e| from_pg("read claimed events", &e))?;
    let mut events = HashMap::with_capacity(rows.len());
    for row in &rows {
        let event = rows::stored_event(row)?;
        events.insert(event.summary.id, event);
    }
    deliveries
        .into_iter()
        .map(|delivery| {
            // The foreign key keeps every delivery's event.
            let event = events
                .get(&delivery.event_id)
                .cloned()
                .ok_or_else(|| StoreError::Internal("a claimed delivery's event is missing".into()))?;
            Ok(ClaimedDelivery { delivery, event })
        })
        .collect()
}

/// Records finished attempts; see `Store::finish_attempts`.
pub(crate) async fn finish(
    pool: &deadpool_postgres::Pool,
    owner: &str,
    finished: &[FinishedAttempt],
) -> Result<Vec<bool>, StoreError> {
    let mut recorded = vec![false; finished.len()];
    // A delivery listed twice: the first attempt settles it and clears the
    // lease, so a later one could never be recorded. Only the first is sent.
    let mut seen = HashSet::with_capacity(finished.len());
    let sent: Vec<usize> = (0..finished.len())
        .filter(|&i| seen.insert(finished[i].delivery_id))
        .collect();
    if sent.is_empty() {
        return Ok(recorded);
    }
    let now = UnixMillis::now().0;
    let n = sent.len();
    let mut ids = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut next_attempt_at = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut numbers = Vec::with_capacity(n);
    let mut started_at = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut status_codes = Vec::with_capacity(n);
    let mut headers = Vec::with_capacity(n);
    let mut excerpts: Vec<&[u8]> = Vec::with_capacity(n);
    let mut outcomes = Vec::with_capacity(n);
    for &i in &sent {
        let FinishedAttempt {
            delivery_id,
            attempt,
            next_attempt_at: next,
        } = &finished[i];
        let (state, next) = match attempt.outcome {
            AttemptOutcome::Succeeded => ("succeeded", None),
            // A retry without a time is due at once.
            AttemptOutcome::Retry => ("retrying", Some(next.map_or(now, |at| at.0))),
            AttemptOutcome::Dead => ("dead", None),
            AttemptOutcome::Skipped => ("skipped", None),
        };
        ids.push(delivery_id.to_bytes().to_vec());
        states.push(state);
        next_attempt_at.push(next);
        errors.push(attempt.error.as_deref().map(pg_text));
        numbers.push(pg_int(attempt.number));
        started_at.push(attempt.started_at.0);
        durations.push(pg_int(attempt.duration_ms));
        status_codes.push(attempt.status_code);
        headers.push(rows::headers_json(&attempt.response_headers)?);
        excerpts.push(&attempt.response_excerpt);
        outcomes.push(attempt.outcome.as_str());
    }
    let owner = pg_text(owner);
    let client = pool.get().await.map_err(from_pool)?;
    let statement = client
        .prepare_cached(FINISH_ATTEMPTS)
        .await
        .map_err(|e| from_pg("prepare finish attempts", &e))?;
    let rows = client
        .query(
            &statement,
            &[
                &owner,
                &ids,
                &states,
                &next_attempt_at,
                &errors,
                &now,
                &numbers,
                &started_at,
                &durations,
                &status_codes,
                &headers,
                &excerpts,
                &outcomes,
            ],
        )
        .await
        .map_err(|e| from_pg("finish attempts", &e))?;
    for row in rows {
        let ord: i64 = row.try_get(0).map_err(|e| from_pg("finish attempts", &e))?;
        let index = usize::try_from(ord - 1)
            .ok()
            .and_then(|position| sent.get(position))
            .copied()
            .ok_or_else(|| StoreError::Internal("finish attempts: returned an unknown position".into()))?;
        recorded[index] = true;
    }
    Ok(recorded)
}

/// Gives claimed deliveries back; returns how many were.
pub(crate) async fn release(
    pool: &deadpool_postgres::Pool,
    owner: &str,
    ids: &[DeliveryId],
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids = id_bytes(ids);
    let owner = pg_text(owner);
    let now = UnixMillis::now().0;
    let client = pool.get().await.map_err(from_pool)?;
    count_changed(&client, "release deliveries", RELEASE_DELIVERIES, &[&owner, &ids, &now]).await
}

/// Makes dead deliveries due at `now`; returns how many changed.
pub(crate) async fn retry(
    pool: &deadpool_postgres::Pool,
    ids: &[DeliveryId],
    now: UnixMillis,
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let ids = id_bytes(ids);
    let client = pool.get().await.map_err(from_pool)?;
    count_changed(&client, "retry deliveries", RETRY_DELIVERIES, &[&ids, &now.0]).await
}

/// Ids as `bytea[]`, sorted (so rows are locked in id order) and unique.
pub(crate) fn id_bytes(ids: &[DeliveryId]) -> Vec<Vec<u8>> {
    let mut bytes: Vec<Vec<u8>> = ids.iter().map(|id| id.to_bytes().to_vec()).collect();
    bytes.sort_unstable();
    bytes.dedup();
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notifying_sql_names_the_listened_channel() {
        let channel = format!("pg_notify('{}'", crate::listen::CHANNEL);
        for sql in [
            INSERT_DELIVERIES,
            RELEASE_DELIVERIES,
            RETRY_DELIVERIES,
            SET_ROUTE_PAUSED,
        ] {
            assert!(sql.contains(&channel), "{sql}");
        }
    }

    #[test]
    fn ids_are_sorted_and_unique() {
        let (a, b) = (DeliveryId::new(), DeliveryId::new());
        assert_eq!(id_bytes(&[b, a, b]), vec![a.to_bytes().to_vec(), b.to_bytes().to_vec()]);
    }
}
