//! Storage for recovery: backfill lookups, per-source state, enrichment and retention.

use std::collections::HashMap;

use super::*;

/// The delivery states retention treats as done, from
/// [`DeliveryState::is_final`]: a state added later protects its event
/// until it is declared final.
fn final_states() -> Vec<&'static str> {
    DeliveryState::ALL
        .into_iter()
        .filter(DeliveryState::is_final)
        .map(|state| state.as_str())
        .collect()
}

/// The events a prune pass may take (`$1` source, `$2` cutoff, `$3` final
/// states): old enough, not yet pruned, and every delivery final.
const PRUNABLE: &str = "e.source = $1 AND e.received_at < $2 AND e.pruned_at IS NULL \
     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.state <> ALL($3::text[]))";

pub(crate) async fn existing_dedup_keys(
    store: &PostgresStore,
    source: &str,
    dedup_keys: &[String],
) -> Result<Vec<String>, StoreError> {
    if dedup_keys.is_empty() {
        return Ok(Vec::new());
    }
    // Keys are stored as `pg_text` made them; answer with the caller's own.
    let mut by_stored: HashMap<String, &String> = HashMap::with_capacity(dedup_keys.len());
    for key in dedup_keys {
        by_stored.entry(pg_text(key).into_owned()).or_insert(key);
    }
    let stored: Vec<&str> = by_stored.keys().map(String::as_str).collect();
    let found = store
        .query(
            "existing dedup keys",
            "SELECT dedup_key FROM events WHERE source = $1 AND dedup_key = ANY($2::text[])",
            &[&pg_text(source), &stored],
            |row| {
                row.try_get::<_, String>(0)
                    .map_err(|e| from_pg("existing dedup keys", &e))
            },
        )
        .await?;
    // In the order asked, each once.
    let mut out: Vec<String> = Vec::with_capacity(found.len());
    for key in dedup_keys {
        let stored = pg_text(key);
        if found.iter().any(|f| f == stored.as_ref()) && !out.contains(key) {
            out.push(key.clone());
        }
    }
    Ok(out)
}

pub(crate) async fn source_state(store: &PostgresStore, source: &str, key: &str) -> Result<Option<String>, StoreError> {
    let mut values = store
        .query(
            "read source state",
            "SELECT value FROM source_state WHERE source = $1 AND key = $2",
            &[&pg_text(source), &pg_text(key)],
            |row| {
                row.try_get::<_, String>(0)
                    .map_err(|e| from_pg("read source state", &e))
            },
        )
        .await?;
    Ok(values.pop())
}

pub(crate) async fn put_source_state(
    store: &PostgresStore,
    source: &str,
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    let client = store.client().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO source_state (source, key, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (source, key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at",
        )
        .await
        .map_err(|e| from_pg("write source state", &e))?;
    client
        .execute(
            &statement,
            &[&pg_text(source), &pg_text(key), &pg_text(value), &UnixMillis::now().0],
        )
        .await
        .map_err(|e| from_pg("write source state", &e))?;
    Ok(())
}

pub(crate) async fn save_enrichment(store: &PostgresStore, enrichment: Enrichment) -> Result<(), StoreError> {
    let client = store.client().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO enrichments (delivery_id, fetched_at, url, status_code, body, error) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (delivery_id) DO UPDATE SET fetched_at = EXCLUDED.fetched_at, url = EXCLUDED.url, \
             status_code = EXCLUDED.status_code, body = EXCLUDED.body, error = EXCLUDED.error",
        )
        .await
        .map_err(|e| from_pg("save enrichment", &e))?;
    let id = enrichment.delivery_id.to_bytes().to_vec();
    let error = enrichment.error.as_deref().map(pg_text);
    client
        .execute(
            &statement,
            &[
                &id,
                &enrichment.fetched_at.0,
                &pg_text(&enrichment.url),
                &enrichment.status_code,
                &&enrichment.body[..],
                &error,
            ],
        )
        .await
        .map_err(|e| from_pg("save enrichment", &e))?;
    Ok(())
}

pub(crate) async fn enrichment(store: &PostgresStore, delivery: DeliveryId) -> Result<Option<Enrichment>, StoreError> {
    let id = delivery.to_bytes().to_vec();
    let mut rows = store
        .query(
            "read enrichment",
            "SELECT fetched_at, url, status_code, body, error FROM enrichments WHERE delivery_id = $1",
            &[&id],
            |row| {
                let get = |e| from_pg("read enrichment", &e);
                Ok(Enrichment {
                    delivery_id: delivery,
                    fetched_at: UnixMillis(row.try_get(0).map_err(get)?),
                    url: row.try_get(1).map_err(get)?,
                    status_code: row.try_get(2).map_err(get)?,
                    body: row.try_get::<_, Vec<u8>>(3).map_err(get)?.into(),
                    error: row.try_get(4).map_err(get)?,
                })
            },
        )
        .await?;
    Ok(rows.pop())
}

pub(crate) async fn prune_events(
    store: &PostgresStore,
    source: &str,
    older_than: UnixMillis,
    limit: u32,
    now: UnixMillis,
    dry_run: bool,
) -> Result<PruneReport, StoreError> {
    let finals = final_states();
    let source = pg_text(source);
    let report = |row: &tokio_postgres::Row| {
        let get = |e| from_pg("prune events", &e);
        Ok(PruneReport {
            events: u64::try_from(row.try_get::<_, i64>(0).map_err(get)?).unwrap_or(0),
            attempts: u64::try_from(row.try_get::<_, i64>(1).map_err(get)?).unwrap_or(0),
        })
    };
    if dry_run {
        let sql = format!(
            "SELECT count(*)::int8, coalesce(sum((SELECT count(*) FROM deliveries d \
               JOIN attempts a ON a.delivery_id = d.id WHERE d.event_id = e.id)), 0)::int8 \
             FROM events e WHERE {PRUNABLE}"
        );
        let mut rows = store
            .query(
                "count prunable events",
                &sql,
                &[&source, &older_than.0, &finals],
                report,
            )
            .await?;
        return rows
            .pop()
            .ok_or_else(|| StoreError::Internal("count prunable events: no row".into()));
    }
    // One statement, so one short transaction. `SKIP LOCKED` leaves rows
    // another pruner (a second process) holds to it; `NO KEY UPDATE` does
    // not wait for the key-share locks a replay's new delivery takes.
    // Data-modifying CTEs always run to completion, whether or not the
    // final SELECT reads them.
    let sql = format!(
        "WITH victims AS ( \
             SELECT e.id FROM events e WHERE {PRUNABLE} \
             ORDER BY e.received_at LIMIT $4 FOR NO KEY UPDATE OF e SKIP LOCKED \
         ), gone_attempts AS ( \
             DELETE FROM attempts a USING deliveries d, victims v \
             WHERE d.event_id = v.id AND a.delivery_id = d.id RETURNING 1 \
         ), gone_enrichments AS ( \
             DELETE FROM enrichments x USING deliveries d, victims v \
             WHERE d.event_id = v.id AND x.delivery_id = d.id RETURNING 1 \
         ), pruned AS ( \
             UPDATE events SET body = ''::bytea, headers = '[]'::json, pruned_at = $5 \
             FROM victims WHERE events.id = victims.id RETURNING 1 \
         ) \
         SELECT (SELECT count(*) FROM pruned)::int8, (SELECT count(*) FROM gone_attempts)::int8, \
                (SELECT count(*) FROM gone_enrichments)::int8"
    );
    let limit = i64::from(limit.max(1));
    let mut rows = store
        .query(
            "prune events",
            &sql,
            &[&source, &older_than.0, &finals, &limit, &now.0],
            report,
        )
        .await?;
    rows.pop()
        .ok_or_else(|| StoreError::Internal("prune events: no row".into()))
}
