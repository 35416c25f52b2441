//! Embedded schema migrations, tracked with SQLite's `user_version`.

use rusqlite::Connection;

use gatehouse_store::StoreError;

use crate::classify;

/// Migrations in order; the database's `user_version` is how many ran.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_events.sql"),
    include_str!("../migrations/0002_deliveries.sql"),
    include_str!("../migrations/0003_provider_id_index.sql"),
    include_str!("../migrations/0004_console.sql"),
    include_str!("../migrations/0005_recovery.sql"),
    include_str!("../migrations/0006_dedup_keys.sql"),
];

/// Applies the migrations this database has not seen, each in a transaction.
///
/// Foreign keys are off while they run (a migration may rebuild a table
/// others refer to, which is how SQLite changes a constraint) and each
/// migration checks them before it commits.
pub(crate) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
    // The pragma is a no-op inside a transaction, so it goes around them.
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .map_err(|e| classify(&e))?;
    let applied = apply_each(conn);
    conn.execute_batch("PRAGMA foreign_keys = ON")
        .map_err(|e| classify(&e))?;
    applied
}

fn apply_each(conn: &mut Connection) -> Result<(), StoreError> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| classify(&e))?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: known,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(|e| classify(&e))?;
        tx.execute_batch(sql).map_err(|e| classify(&e))?;
        let violations: i64 = tx
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| row.get(0))
            .map_err(|e| classify(&e))?;
        if violations > 0 {
            return Err(StoreError::Internal(format!(
                "migration {} would leave {violations} broken foreign key reference(s)",
                index + 1
            )));
        }
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))
            .map_err(|e| classify(&e))?;
        tx.commit().map_err(|e| classify(&e))?;
        tracing::info!(version = index + 1, "Applied SQLite migration.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{open_connection, SqliteOptions, SqliteStore};
    use gatehouse_store::conformance::event_with_routes;
    use gatehouse_store::{IngestOutcome, Store};

    #[tokio::test]
    async fn the_dedup_keys_migration_keeps_rows_references_and_uniqueness() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gatehouse.db");
        // A database as version 5 left it, with events and deliveries.
        {
            let mut conn = open_connection(&path, &SqliteOptions::default(), false).expect("connect");
            let tx = conn.transaction().expect("tx");
            for sql in &MIGRATIONS[..5] {
                tx.execute_batch(sql).expect("old migration");
            }
            tx.execute_batch("PRAGMA user_version = 5").expect("version");
            for n in 0..50 {
                tx.execute(
                    "INSERT INTO events (id, source, dedup_key, disposition, received_at, headers, body, verification) \
                     VALUES (randomblob(16), 's', ?1, 'accepted', 1, '[]', x'7b7d', 'test')",
                    [format!("evt_{n}")],
                )
                .expect("event");
                tx.execute(
                    "INSERT INTO deliveries (id, event_id, route, state, next_attempt_at, created_at, updated_at) \
                     SELECT randomblob(16), id, 'r', 'pending', 1, 1, 1 FROM events WHERE dedup_key = ?1",
                    [format!("evt_{n}")],
                )
                .expect("delivery");
            }
            tx.commit().expect("commit");
        }
        let store = SqliteStore::open(&path, SqliteOptions::default()).expect("open migrates");
        let conn = open_connection(&path, &SqliteOptions::default(), true).expect("connect");
        let one = |sql: &str| -> i64 { conn.query_row(sql, [], |row| row.get(0)).expect(sql) };
        assert_eq!(one("PRAGMA user_version"), MIGRATIONS.len() as i64);
        assert_eq!(one("SELECT count(*) FROM events"), 50);
        assert_eq!(one("SELECT count(*) FROM dedup_keys"), 50);
        assert_eq!(one("SELECT merged_through FROM dedup_merge"), 50);
        assert_eq!(
            one("SELECT count(*) FROM deliveries JOIN events ON events.id = deliveries.event_id"),
            50
        );
        assert_eq!(one("SELECT count(*) FROM pragma_foreign_key_check"), 0);
        let enforced: i64 = store
            .write(|conn| {
                conn.query_row("PRAGMA foreign_keys", [], |row| row.get(0))
                    .map_err(|e| classify(&e))
            })
            .await
            .expect("pragma");
        assert_eq!(enforced, 1, "foreign keys are back on for the writer");
        let again = store
            .ingest(vec![event_with_routes("s", "evt_7", &["r"])])
            .await
            .expect("ingest");
        assert!(matches!(again[..], [IngestOutcome::Duplicate { .. }]), "{again:?}");
        let new = store
            .ingest(vec![event_with_routes("s", "evt_50", &["r"])])
            .await
            .expect("ingest");
        assert_eq!(new, vec![IngestOutcome::Stored]);
    }
}
