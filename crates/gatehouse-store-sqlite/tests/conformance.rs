//! The shared storage conformance suite, on a fresh SQLite file per test.

use std::sync::Arc;

use gatehouse_store::Store;
use gatehouse_store_sqlite::{SqliteOptions, SqliteStore};

async fn fresh_store() -> Arc<dyn Store> {
    // The directory must outlive the store; leaking it keeps the test simple
    // and the OS cleans /tmp.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    Arc::new(SqliteStore::open(&dir.join("gatehouse.db"), SqliteOptions::default()).expect("open"))
}

gatehouse_store::conformance_tests!(fresh_store());
gatehouse_store::recovery_conformance_tests!(fresh_store());
