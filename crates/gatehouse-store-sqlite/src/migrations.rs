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
];

/// Applies the migrations this database has not seen, each in a transaction.
pub(crate) fn apply(conn: &mut Connection) -> Result<(), StoreError> {
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
        // PRAGMA takes no bound parameters; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))
            .map_err(|e| classify(&e))?;
        tx.commit().map_err(|e| classify(&e))?;
        tracing::info!(version = index + 1, "Applied SQLite migration.");
    }
    Ok(())
}
