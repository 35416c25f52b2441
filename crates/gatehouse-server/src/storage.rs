//! Chooses the storage backend once, at start-up, from the URL scheme.

use std::path::PathBuf;
use std::sync::Arc;

use gatehouse_store::{Store, StoreError};
use gatehouse_store_postgres::{PostgresOptions, PostgresStore};
use gatehouse_store_sqlite::{SqliteOptions, SqliteStore};

use crate::config::StorageConfig;

/// Which database a storage URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file at this path.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

/// Parses a storage URL: `sqlite://relative/path.db`, `sqlite:///abs/path.db`
/// or `postgres://…` / `postgresql://…`.
pub fn parse_url(url: &str) -> Result<Backend, String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://gatehouse-data/gatehouse.db".into());
        }
        Ok(Backend::Sqlite(PathBuf::from(path)))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres(url.to_string()))
    } else {
        Err("expected sqlite://path/to/file.db or postgres://user@host:port/database".into())
    }
}

/// Validates a storage URL for the config loader: for PostgreSQL also its
/// TLS parameters (`sslmode`, and that `sslrootcert` can be read), without
/// connecting.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    match parse_url(url)? {
        Backend::Sqlite(_) => Ok(()),
        Backend::Postgres(url) => gatehouse_store_postgres::check_url(&url),
    }
}

/// Opens the configured store, applying its migrations.
pub async fn open(config: &StorageConfig) -> Result<Arc<dyn Store>, StoreError> {
    match parse_url(&config.url).map_err(StoreError::Internal)? {
        Backend::Sqlite(path) => {
            let options = SqliteOptions {
                busy_timeout: config.busy_timeout,
                ..SqliteOptions::default()
            };
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, options))
                .await
                .map_err(|e| StoreError::Internal(format!("opening SQLite failed: {e}")))??;
            Ok(Arc::new(store))
        }
        Backend::Postgres(url) => {
            let options = PostgresOptions {
                pool_size: config.pool_size,
                ..PostgresOptions::default()
            };
            Ok(Arc::new(PostgresStore::connect(&url, options).await?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_schemes_and_rejects_others() {
        assert_eq!(parse_url("sqlite://data/g.db"), Ok(Backend::Sqlite("data/g.db".into())));
        assert_eq!(parse_url("sqlite:///var/g.db"), Ok(Backend::Sqlite("/var/g.db".into())));
        assert!(matches!(parse_url("postgres://u@h/db"), Ok(Backend::Postgres(_))));
        assert!(parse_url("mysql://x").is_err());
        assert!(parse_url("sqlite://").is_err());
    }

    #[test]
    fn postgres_urls_are_checked_without_connecting() {
        assert_eq!(check_url("postgres://u@h:1/db?sslmode=disable"), Ok(()));
        let error = check_url("postgres://u:hunter2@h/db?sslmode=verify").expect_err("unknown sslmode");
        assert!(
            error.contains("sslmode `verify`") && !error.contains("hunter2"),
            "{error}"
        );
        let error = check_url("postgres://u@h/db?sslrootcert=/nonexistent/ca.pem").expect_err("missing root file");
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
    }
}
