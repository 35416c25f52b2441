//! Maps driver and pool errors onto [`StoreError`]: which failures mean "the
//! database cannot be reached or cannot write right now" (ingest answers 503
//! and the provider retries) and which are everything else.
//!
//! Error text never carries row data. A database error is described by its
//! SQLSTATE and the names of the schema objects involved; its message is
//! added only for classes whose messages are about the server, never about
//! values (a data exception's message can quote the offending value, and a
//! constraint violation's detail always does).

use std::error::Error as _;

use deadpool_postgres::PoolError;
use gatehouse_store::StoreError;
use tokio_postgres::error::{DbError, SqlState};

/// A driver error met while doing `context` (e.g. `"insert events"`).
pub(crate) fn from_pg(context: &str, err: &tokio_postgres::Error) -> StoreError {
    if let Some(db) = err.as_db_error() {
        let text = describe_db_error(context, db);
        return if is_unavailable_state(db.code()) {
            StoreError::Unavailable(text)
        } else {
            StoreError::Internal(text)
        };
    }
    // Not an answer from the server: the driver's own error. Its text and
    // its cause (an io error, a type mismatch) never hold row values.
    let text = match err.source() {
        Some(cause) => format!("{context}: {err}: {cause}"),
        None => format!("{context}: {err}"),
    };
    if err.is_closed() || has_io_cause(err) {
        StoreError::Unavailable(text)
    } else {
        StoreError::Internal(text)
    }
}

/// A failure to get a connection from the pool.
pub(crate) fn from_pool(err: PoolError) -> StoreError {
    match err {
        PoolError::Timeout(kind) => {
            StoreError::Unavailable(format!("timed out getting a database connection ({kind:?})"))
        }
        PoolError::Backend(err) => from_pg("connect", &err),
        PoolError::Closed => StoreError::Unavailable("the connection pool is closed".into()),
        PoolError::NoRuntimeSpecified => StoreError::Internal("the connection pool has no async runtime".into()),
        PoolError::PostCreateHook(err) => StoreError::Internal(format!("connection set-up failed: {err}")),
    }
}

/// Whether a SQLSTATE means the database is down, unreachable, shutting
/// down, out of resources or not writable here, or that the transaction lost
/// a race it can win on a retry: conditions that pass, so the caller should
/// answer 503 and let the provider try again.
pub(crate) fn is_unavailable_state(code: &SqlState) -> bool {
    is_unavailable_code(code.code())
}

fn is_unavailable_code(code: &str) -> bool {
    // 08: connection exception. 53: insufficient resources (53100 disk
    // full, 53200 out of memory, 53300 too many connections).
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            // admin_shutdown, crash_shutdown, cannot_connect_now,
            // database_dropped, idle_session_timeout
            "57P01" | "57P02" | "57P03" | "57P04" | "57P05"
            // read_only_sql_transaction: a hot standby, e.g. after a failover
            | "25006"
            // serialization_failure, deadlock_detected: a retry succeeds
            | "40001" | "40P01"
            // lock_not_available (lock_timeout), query_canceled (statement_timeout)
            | "55P03" | "57014"
            // system_error, io_error: the server's disk
            | "58000" | "58030"
        )
}

/// Whether a database error's primary message is safe to repeat: it speaks
/// about the server or our SQL, not about the values in a row.
fn message_is_safe(code: &SqlState) -> bool {
    let code = code.code();
    is_unavailable_code(code)
        // feature_not_supported, invalid_transaction_state, invalid_schema_name,
        // syntax_error_or_access_rule_violation (missing tables, columns)
        || ["0A", "25", "3F", "42"].iter().any(|class| code.starts_with(class))
}

fn describe_db_error(context: &str, db: &DbError) -> String {
    let mut text = format!("{context}: SQLSTATE {}", db.code().code());
    if message_is_safe(db.code()) {
        text.push_str(": ");
        text.push_str(db.message());
    }
    let objects = [
        ("schema", db.schema()),
        ("table", db.table()),
        ("column", db.column()),
        ("constraint", db.constraint()),
    ];
    for (kind, name) in objects {
        if let Some(name) = name {
            text.push_str(&format!(" ({kind} {name})"));
        }
    }
    text
}

fn has_io_cause(err: &tokio_postgres::Error) -> bool {
    let mut cause = err.source();
    while let Some(err) = cause {
        if err.is::<std::io::Error>() {
            return true;
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(code: &str) -> bool {
        is_unavailable_state(&SqlState::from_code(code))
    }

    #[test]
    fn server_going_away_is_unavailable() {
        assert!(unavailable("57P01"), "admin_shutdown");
        assert!(unavailable("57P02"), "crash_shutdown");
        assert!(unavailable("57P03"), "cannot_connect_now");
    }

    #[test]
    fn connection_exceptions_are_unavailable() {
        for code in ["08000", "08003", "08006", "08001", "08004", "08P01"] {
            assert!(unavailable(code), "{code}");
        }
    }

    #[test]
    fn insufficient_resources_are_unavailable() {
        for code in ["53000", "53100", "53200", "53300", "53400"] {
            assert!(unavailable(code), "{code}");
        }
    }

    #[test]
    fn read_only_and_transient_conflicts_are_unavailable() {
        for code in ["25006", "40001", "40P01", "55P03", "57014", "58030"] {
            assert!(unavailable(code), "{code}");
        }
    }

    #[test]
    fn bugs_and_bad_data_are_internal() {
        for code in [
            "23505", // unique_violation: ingest never lets one escape
            "23502", // not_null_violation
            "22021", // character_not_in_repertoire
            "22P02", // invalid_text_representation
            "42P01", // undefined_table
            "42703", // undefined_column
            "54000", // program_limit_exceeded
            "28P01", // invalid_password: a configuration error, not an outage
            "XX000", // internal_error
        ] {
            assert!(!unavailable(code), "{code}");
        }
    }

    #[test]
    fn messages_that_may_quote_values_are_left_out() {
        assert!(!message_is_safe(&SqlState::UNIQUE_VIOLATION));
        assert!(!message_is_safe(&SqlState::INVALID_TEXT_REPRESENTATION));
        assert!(message_is_safe(&SqlState::DISK_FULL));
        assert!(message_is_safe(&SqlState::UNDEFINED_TABLE));
    }
}
