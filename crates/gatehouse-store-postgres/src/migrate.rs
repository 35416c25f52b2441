//! The schema: SQL migrations embedded in the binary (`migrations/*.sql`)
//! and applied at connect.
//!
//! All pending migrations run in one transaction that first takes a
//! transaction-scoped advisory lock, so several gatehouse processes starting
//! on one database at once apply each migration exactly once: the others
//! wait for the lock, then find nothing left to do. Each applied version is
//! recorded in `gatehouse_schema_migrations`; a database at a version this
//! binary does not know is refused with [`StoreError::SchemaTooNew`] rather
//! than used with a schema it does not understand.

use gatehouse_store::StoreError;
use tracing::info;

use crate::error::from_pg;

/// One schema change.
pub(crate) struct Migration {
    /// Its version, recorded once applied. Strictly increasing.
    pub(crate) version: i64,
    /// A short name for the log.
    pub(crate) name: &'static str,
    /// The statements to run.
    pub(crate) sql: &'static str,
}

/// Every migration this build knows, oldest first.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "events",
        sql: include_str!("../migrations/0001_events.sql"),
    },
    Migration {
        version: 2,
        name: "deliveries",
        sql: include_str!("../migrations/0002_deliveries.sql"),
    },
    Migration {
        version: 3,
        name: "provider_id_index",
        sql: include_str!("../migrations/0003_provider_id_index.sql"),
    },
    Migration {
        version: 4,
        name: "console",
        sql: include_str!("../migrations/0004_console.sql"),
    },
    Migration {
        version: 5,
        name: "recovery",
        sql: include_str!("../migrations/0005_recovery.sql"),
    },
];

/// The newest schema version this build understands.
pub(crate) fn supported_version() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// The advisory lock key that serialises migrations across processes:
/// the bytes of "gatehous" read as a big-endian integer.
const MIGRATION_LOCK_KEY: i64 = 0x6761_7465_686f_7573;

/// Brings the schema up to [`supported_version`], or refuses a newer one.
pub(crate) async fn run(client: &mut deadpool_postgres::Client) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| from_pg("begin migrations", &e))?;
    // Held until commit or rollback; a second process blocks here.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(|e| from_pg("take the migration lock", &e))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS gatehouse_schema_migrations (
             version    bigint      PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(|e| from_pg("create gatehouse_schema_migrations", &e))?;
    let current: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM gatehouse_schema_migrations", &[])
        .await
        .and_then(|row| row.try_get(0))
        .map_err(|e| from_pg("read the schema version", &e))?;

    let supported = supported_version();
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let context = format!("apply migration {} ({})", migration.version, migration.name);
        tx.batch_execute(migration.sql)
            .await
            .map_err(|e| from_pg(&context, &e))?;
        tx.execute(
            "INSERT INTO gatehouse_schema_migrations (version, applied_at) VALUES ($1, now())",
            &[&migration.version],
        )
        .await
        .map_err(|e| from_pg(&context, &e))?;
        info!(
            version = migration.version,
            name = migration.name,
            "Applied database migration."
        );
    }
    tx.commit().await.map_err(|e| from_pg("commit migrations", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_and_increase_by_one() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, index as i64 + 1, "{}", migration.name);
            assert!(!migration.sql.trim().is_empty(), "{}", migration.name);
        }
        assert_eq!(supported_version(), MIGRATIONS.len() as i64);
    }
}
