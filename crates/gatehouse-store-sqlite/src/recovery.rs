//! Storage for recovery: backfill lookups, per-source state, enrichment and retention.

use rusqlite::{params, OptionalExtension};

use super::*;

/// `'succeeded', 'dead', …`: the delivery states retention treats as done.
/// Built from [`DeliveryState::is_final`] so a state added later protects
/// its event until it is declared final.
fn final_states_sql() -> String {
    DeliveryState::ALL
        .into_iter()
        .filter(DeliveryState::is_final)
        .map(|state| format!("'{}'", state.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The events a prune pass may take: old enough, not yet pruned, and every
/// delivery final (an event still being delivered keeps its body).
fn prunable_where() -> String {
    format!(
        "e.source = ?1 AND e.received_at < ?2 AND e.pruned_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.state NOT IN ({}))",
        final_states_sql()
    )
}

pub(crate) async fn existing_dedup_keys(
    store: &SqliteStore,
    source: &str,
    dedup_keys: &[String],
) -> Result<Vec<String>, StoreError> {
    if dedup_keys.is_empty() {
        return Ok(Vec::new());
    }
    let (source, keys) = (source.to_string(), dedup_keys.to_vec());
    store
        .readers
        .run(move |conn| {
            // One probe per key (an index seek, then the short tail): a
            // backfill page is at most a few hundred keys.
            let mut probe = conn
                .prepare_cached(crate::dedup::SEQ_BY_KEY)
                .map_err(|e| classify(&e))?;
            let mut found = Vec::new();
            for key in keys {
                let hit = probe
                    .query_row(params![source, key], |_| Ok(()))
                    .optional()
                    .map_err(|e| classify(&e))?;
                if hit.is_some() && !found.contains(&key) {
                    found.push(key);
                }
            }
            Ok(found)
        })
        .await
}

pub(crate) async fn source_state(store: &SqliteStore, source: &str, key: &str) -> Result<Option<String>, StoreError> {
    let (source, key) = (source.to_string(), key.to_string());
    store
        .readers
        .run(move |conn| {
            conn.prepare_cached("SELECT value FROM source_state WHERE source = ?1 AND key = ?2")
                .map_err(|e| classify(&e))?
                .query_row(params![source, key], |row| row.get(0))
                .optional()
                .map_err(|e| classify(&e))
        })
        .await
}

pub(crate) async fn put_source_state(
    store: &SqliteStore,
    source: &str,
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    let (source, key, value) = (source.to_string(), key.to_string(), value.to_string());
    store
        .write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO source_state (source, key, value, updated_at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (source, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .map_err(|e| classify(&e))?
            .execute(params![source, key, value, UnixMillis::now().0])
            .map_err(|e| classify(&e))?;
            Ok(())
        })
        .await
}

pub(crate) async fn save_enrichment(store: &SqliteStore, enrichment: Enrichment) -> Result<(), StoreError> {
    store
        .write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO enrichments (delivery_id, fetched_at, url, status_code, body, error) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (delivery_id) DO UPDATE SET fetched_at = excluded.fetched_at, url = excluded.url, \
                 status_code = excluded.status_code, body = excluded.body, error = excluded.error",
            )
            .map_err(|e| classify(&e))?
            .execute(params![
                &enrichment.delivery_id.to_bytes()[..],
                enrichment.fetched_at.0,
                enrichment.url,
                enrichment.status_code,
                &enrichment.body[..],
                enrichment.error,
            ])
            .map_err(|e| classify(&e))?;
            Ok(())
        })
        .await
}

pub(crate) async fn enrichment(store: &SqliteStore, delivery: DeliveryId) -> Result<Option<Enrichment>, StoreError> {
    store
        .readers
        .run(move |conn| {
            conn.prepare_cached(
                "SELECT fetched_at, url, status_code, body, error FROM enrichments WHERE delivery_id = ?1",
            )
            .map_err(|e| classify(&e))?
            .query_row(params![&delivery.to_bytes()[..]], |row| {
                Ok(Enrichment {
                    delivery_id: delivery,
                    fetched_at: UnixMillis(row.get(0)?),
                    url: row.get(1)?,
                    status_code: row.get(2)?,
                    body: row.get::<_, Vec<u8>>(3)?.into(),
                    error: row.get(4)?,
                })
            })
            .optional()
            .map_err(|e| classify(&e))
        })
        .await
}

pub(crate) async fn prune_events(
    store: &SqliteStore,
    source: &str,
    older_than: UnixMillis,
    limit: u32,
    now: UnixMillis,
    dry_run: bool,
) -> Result<PruneReport, StoreError> {
    let source = source.to_string();
    if dry_run {
        return store
            .readers
            .run(move |conn| {
                let sql = format!(
                    "SELECT count(*), coalesce(sum((SELECT count(*) FROM deliveries d \
                       JOIN attempts a ON a.delivery_id = d.id WHERE d.event_id = e.id)), 0) \
                     FROM events e WHERE {}",
                    prunable_where()
                );
                conn.prepare_cached(&sql)
                    .map_err(|e| classify(&e))?
                    .query_row(params![source, older_than.0], |row| {
                        Ok(PruneReport {
                            events: row.get::<_, i64>(0)?.max(0) as u64,
                            attempts: row.get::<_, i64>(1)?.max(0) as u64,
                        })
                    })
                    .map_err(|e| classify(&e))
            })
            .await;
    }
    let limit = limit.max(1);
    store
        .write(move |conn| {
            // One short transaction on the writer thread: ingest batches
            // queue behind it for as long as one pass takes, so callers keep
            // `limit` small and loop.
            let tx = conn.transaction().map_err(|e| classify(&e))?;
            let mut report = PruneReport::default();
            {
                let select = format!(
                    "SELECT e.id FROM events e WHERE {} ORDER BY e.received_at LIMIT ?3",
                    prunable_where()
                );
                let ids: Vec<Vec<u8>> = tx
                    .prepare_cached(&select)
                    .map_err(|e| classify(&e))?
                    .query_map(params![source, older_than.0, limit], |row| row.get(0))
                    .map_err(|e| classify(&e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| classify(&e))?;
                let mut delete_attempts = tx
                    .prepare_cached(
                        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id = ?1)",
                    )
                    .map_err(|e| classify(&e))?;
                let mut delete_enrichments = tx
                    .prepare_cached(
                        "DELETE FROM enrichments WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_id = ?1)",
                    )
                    .map_err(|e| classify(&e))?;
                let mut tombstone = tx
                    .prepare_cached("UPDATE events SET body = x'', headers = ?2, pruned_at = ?3 WHERE id = ?1")
                    .map_err(|e| classify(&e))?;
                let no_headers = gatehouse_store::codec::encode_headers(&[]);
                for id in &ids {
                    report.attempts += delete_attempts.execute(params![id]).map_err(|e| classify(&e))? as u64;
                    delete_enrichments.execute(params![id]).map_err(|e| classify(&e))?;
                    report.events += tombstone
                        .execute(params![id, no_headers, now.0])
                        .map_err(|e| classify(&e))? as u64;
                }
            }
            tx.commit().map_err(|e| classify(&e))?;
            Ok(report)
        })
        .await
}
