//! Storage for the console: approval and exception queues, stats, users, sessions, tokens and the audit log.

use std::collections::{BTreeMap, HashSet};

use gatehouse_core::Role;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::*;
use crate::deliveries::id_bytes;

/// Charts return at most this many buckets (the latest ones).
const MAX_BUCKETS: i64 = 10_000;

/// A token's `last_used_at` is rewritten at most this often, so an API
/// client polling in a loop does not cost a row update per request.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

/// The distinct sources of stored events, by a loose index scan (one
/// index probe per source, not a scan of every event). Lets a lookup by
/// dedup key use `events_source_dedup_key` across all sources.
const SOURCES_CTE: &str = "WITH RECURSIVE sources AS ( \
       (SELECT source FROM events ORDER BY source LIMIT 1) \
       UNION ALL \
       SELECT (SELECT e.source FROM events AS e WHERE e.source > s.source ORDER BY e.source LIMIT 1) \
       FROM sources AS s WHERE s.source IS NOT NULL) ";

const USER_COLUMNS: &str = "id, username, role, password_hash, disabled, created_at, last_login_at";
const TOKEN_COLUMNS: &str = "id, name, token_hash, role, created_by, created_at, expires_at, revoked_at, last_used_at";
const AUDIT_COLUMNS: &str = "seq, at, actor, action, object, remote_addr, note, details";

/// A parameter of a statement built at run time.
type Param = Box<dyn ToSql + Sync + Send>;

/// A unique or foreign key violation as a conflict, anything else as usual.
fn conflict_or(context: &str, error: &tokio_postgres::Error, what: &str) -> StoreError {
    match error.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::FOREIGN_KEY_VIOLATION => {
            StoreError::Conflict(what.to_string())
        }
        _ => from_pg(context, error),
    }
}

fn role(row: &Row, index: usize, context: &str) -> Result<Role, StoreError> {
    let name: &str = row.try_get(index).map_err(|e| from_pg(context, &e))?;
    Role::parse(name).ok_or_else(|| StoreError::Internal(format!("{context}: unknown role")))
}

fn user_row(row: &Row, first: usize) -> Result<User, StoreError> {
    let get = |e| from_pg("decode user", &e);
    let id: &[u8] = row.try_get(first).map_err(get)?;
    Ok(User {
        id: UserId::from_slice(id).ok_or_else(|| StoreError::Internal("stored user id is not 16 bytes".into()))?,
        username: row.try_get(first + 1).map_err(get)?,
        role: role(row, first + 2, "decode user")?,
        password_hash: row.try_get(first + 3).map_err(get)?,
        disabled: row.try_get(first + 4).map_err(get)?,
        created_at: UnixMillis(row.try_get(first + 5).map_err(get)?),
        last_login_at: row.try_get::<_, Option<i64>>(first + 6).map_err(get)?.map(UnixMillis),
    })
}

fn user_at_0(row: &Row) -> Result<User, StoreError> {
    user_row(row, 0)
}

fn token(row: &Row) -> Result<ApiToken, StoreError> {
    let get = |e| from_pg("decode token", &e);
    let id: &[u8] = row.try_get(0).map_err(get)?;
    let time = |index: usize| -> Result<Option<UnixMillis>, StoreError> {
        Ok(row.try_get::<_, Option<i64>>(index).map_err(get)?.map(UnixMillis))
    };
    Ok(ApiToken {
        id: TokenId::from_slice(id).ok_or_else(|| StoreError::Internal("stored token id is not 16 bytes".into()))?,
        name: row.try_get(1).map_err(get)?,
        token_hash: row.try_get(2).map_err(get)?,
        role: role(row, 3, "decode token")?,
        created_by: row.try_get(4).map_err(get)?,
        created_at: UnixMillis(row.try_get(5).map_err(get)?),
        expires_at: time(6)?,
        revoked_at: time(7)?,
        last_used_at: time(8)?,
    })
}

fn audit_entry(row: &Row) -> Result<AuditEntry, StoreError> {
    let get = |e| from_pg("decode audit entry", &e);
    Ok(AuditEntry {
        seq: row.try_get(0).map_err(get)?,
        at: UnixMillis(row.try_get(1).map_err(get)?),
        actor: row.try_get(2).map_err(get)?,
        action: row.try_get(3).map_err(get)?,
        object: row.try_get(4).map_err(get)?,
        remote_addr: row.try_get(5).map_err(get)?,
        note: row.try_get(6).map_err(get)?,
        details: row.try_get(7).map_err(get)?,
    })
}

/// The lowest event id of millisecond `at`, as stored: ids sort by time, so
/// a time range is an id range over an index that already exists.
fn first_id_at(at: i64) -> Vec<u8> {
    EventId::first_at(u64::try_from(at).unwrap_or(0)).to_bytes().to_vec()
}

/// `head`, `WHERE` and the conditions joined by `AND`, `tail`, with each
/// `{}` in a condition numbered as the next parameter.
struct Filters {
    conditions: Vec<String>,
    params: Vec<Param>,
}

impl Filters {
    fn new() -> Self {
        Self {
            conditions: Vec::new(),
            params: Vec::new(),
        }
    }

    /// Adds a condition whose `{}` (every one of them) is `value`.
    fn add(&mut self, condition: &str, value: Param) {
        self.params.push(value);
        let placeholder = format!("${}", self.params.len());
        self.conditions.push(condition.replace("{}", &placeholder));
    }

    /// The statement, with the limit as the last parameter.
    fn finish(mut self, head: &str, tail: &str, limit: u32) -> (String, Vec<Param>) {
        let filter = if self.conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.conditions.join(" AND "))
        };
        self.params.push(Box::new(i64::from(limit.clamp(1, MAX_LIST_LIMIT))));
        let sql = format!("{head}{filter} {tail} LIMIT ${}", self.params.len());
        (sql, self.params)
    }
}

fn text(value: &str) -> Param {
    Box::new(pg_text(value).into_owned())
}

/// The statement and parameters for one event query: only the filters in
/// use become SQL, so each combination is its own cached statement with a
/// plan for exactly those comparisons.
pub(crate) fn list_events_sql(query: &EventQuery) -> (String, Vec<Param>) {
    let mut filters = Filters::new();
    let mut head = String::new();
    if let Some(source) = &query.source {
        filters.add("source = {}", text(source));
    }
    if let Some(event_type) = &query.event_type {
        filters.add("event_type = {}", text(event_type));
    }
    if let Some(key) = &query.provider_event_id {
        // The dedup key (almost always the provider's id) through
        // events_source_dedup_key for each source, plus the few events
        // whose provider id differs from their dedup key through the
        // partial index events_provider_event_id (its WHERE repeated so the
        // planner can prove it applies). As an array, the matches become an
        // index condition on events_pkey whatever the statistics say: with
        // `IN (subquery)` and stale statistics (after a bulk load) the plan
        // walked the whole pkey backwards, 350 ms on 1,000,000 events.
        head.push_str(SOURCES_CTE);
        filters.add(
            "id = ANY (ARRAY(SELECT id FROM events \
               WHERE source = ANY (ARRAY(SELECT source FROM sources WHERE source IS NOT NULL)) AND dedup_key = {} \
             UNION ALL SELECT id FROM events WHERE provider_event_id = {} \
               AND provider_event_id IS NOT NULL AND provider_event_id IS DISTINCT FROM dedup_key))",
            text(key),
        );
    }
    if let Some(disposition) = query.disposition {
        filters.add("disposition = {}", text(disposition.as_str()));
    }
    if let Some(state) = query.delivery_state {
        filters.add(
            "EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id AND d.state = {})",
            text(state.as_str()),
        );
    }
    if let Some(from) = query.received_from {
        filters.add("id >= {}", Box::new(first_id_at(from.0)));
    }
    if let Some(to) = query.received_to {
        filters.add("id < {}", Box::new(first_id_at(to.0)));
    }
    if let Some(needle) = &query.body_contains {
        filters.add("position({}::bytea IN body) > 0", Box::new(needle.as_bytes().to_vec()));
    }
    if let Some(before) = query.before {
        filters.add("id < {}", Box::new(before.to_bytes().to_vec()));
    }
    if let Some(after) = query.after {
        filters.add("id > {}", Box::new(after.to_bytes().to_vec()));
    }
    filters.finish(
        &format!("{head}SELECT {SUMMARY_COLUMNS} FROM events"),
        "ORDER BY id DESC",
        query.limit,
    )
}

/// Lists events; see [`list_events_sql`].
pub(crate) async fn list_events(store: &PostgresStore, query: &EventQuery) -> Result<Vec<EventSummary>, StoreError> {
    let (sql, params) = list_events_sql(query);
    let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    store.query("list events", &sql, &params, rows::summary).await
}

/// The ids of `asked` that are in `changed`, in the order asked, once each.
fn in_asked_order(asked: &[DeliveryId], changed: &HashSet<DeliveryId>) -> Vec<DeliveryId> {
    let mut seen = HashSet::with_capacity(changed.len());
    asked
        .iter()
        .copied()
        .filter(|id| changed.contains(id) && seen.insert(*id))
        .collect()
}

/// Runs an `UPDATE … WHERE id = ANY($1) … RETURNING id` and, when `notify`
/// and something changed, notifies the delivery listeners in the same
/// transaction (PostgreSQL delivers it only if the change commits).
async fn update_deliveries(
    store: &PostgresStore,
    context: &str,
    ids: &[DeliveryId],
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    notify: bool,
) -> Result<Vec<DeliveryId>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut client = store.client().await?;
    let tx = client.transaction().await.map_err(|e| from_pg(context, &e))?;
    let statement = tx.prepare_cached(sql).await.map_err(|e| from_pg(context, &e))?;
    let rows = tx.query(&statement, params).await.map_err(|e| from_pg(context, &e))?;
    let changed = rows
        .iter()
        .map(|row| {
            let id: &[u8] = row.try_get(0).map_err(|e| from_pg(context, &e))?;
            rows::delivery_id(id)
        })
        .collect::<Result<HashSet<_>, _>>()?;
    if notify && !changed.is_empty() {
        tx.execute(
            "SELECT pg_notify('gatehouse_deliveries', coalesce(current_schema(), ''))",
            &[],
        )
        .await
        .map_err(|e| from_pg(context, &e))?;
    }
    tx.commit().await.map_err(|e| from_pg(context, &e))?;
    if notify && !changed.is_empty() {
        store.wakeups.wake();
    }
    Ok(in_asked_order(ids, &changed))
}

pub(crate) async fn decide_approval(
    store: &PostgresStore,
    ids: &[DeliveryId],
    decision: &ApprovalDecision,
    now: UnixMillis,
) -> Result<Vec<DeliveryId>, StoreError> {
    let bytes = id_bytes(ids);
    match decision {
        ApprovalDecision::Approve => {
            update_deliveries(
                store,
                "approve deliveries",
                ids,
                "UPDATE deliveries SET state = 'pending', next_attempt_at = $2, last_error = NULL, updated_at = $2 \
                 WHERE id = ANY($1) AND state = 'awaiting_approval' RETURNING id",
                &[&bytes, &now.0],
                true,
            )
            .await
        }
        ApprovalDecision::Reject { reason } => {
            let reason = pg_text(reason);
            update_deliveries(
                store,
                "reject deliveries",
                ids,
                "UPDATE deliveries SET state = 'rejected', last_error = $3, updated_at = $2 \
                 WHERE id = ANY($1) AND state = 'awaiting_approval' RETURNING id",
                &[&bytes, &now.0, &reason],
                false,
            )
            .await
        }
    }
}

pub(crate) async fn resolve_deliveries(
    store: &PostgresStore,
    ids: &[DeliveryId],
    resolution: Resolution,
    note: &str,
    now: UnixMillis,
) -> Result<Vec<DeliveryId>, StoreError> {
    let prefix = match resolution {
        Resolution::Resolved => "resolved",
        Resolution::Discarded => "discarded",
    };
    let note = pg_text(note);
    let error = format!("{prefix}: {note}");
    let bytes = id_bytes(ids);
    update_deliveries(
        store,
        "resolve deliveries",
        ids,
        "UPDATE deliveries SET state = 'cancelled', last_error = $3, updated_at = $2 \
         WHERE id = ANY($1) AND state = 'dead' RETURNING id",
        &[&bytes, &now.0, &error],
        false,
    )
    .await
}

pub(crate) async fn exception_groups(store: &PostgresStore, limit: u32) -> Result<Vec<ExceptionGroup>, StoreError> {
    let limit = i64::from(limit.clamp(1, MAX_LIST_LIMIT));
    // Reads the partial index deliveries_dead. COLLATE "C": ties sorted as
    // Rust sorts strings, as on SQLite.
    let sql = "SELECT route, coalesce(last_error, ''), count(*), max(updated_at) \
               FROM deliveries WHERE state = 'dead' GROUP BY route, coalesce(last_error, '') \
               ORDER BY count(*) DESC, route COLLATE \"C\", coalesce(last_error, '') COLLATE \"C\" LIMIT $1";
    store
        .query("list exception groups", sql, &[&limit], |row| {
            let get = |e| from_pg("decode exception group", &e);
            let count: i64 = row.try_get(2).map_err(get)?;
            Ok(ExceptionGroup {
                route: row.try_get(0).map_err(get)?,
                last_error: row.try_get(1).map_err(get)?,
                count: u64::try_from(count).unwrap_or(0),
                latest_at: UnixMillis(row.try_get(3).map_err(get)?),
            })
        })
        .await
}

/// The first and last bucket starts and the width, in milliseconds, for
/// buckets from the one holding `since` to the one holding `now`, at most
/// [`MAX_BUCKETS`] of them.
fn bucket_range(since: UnixMillis, bucket: Duration, now: UnixMillis) -> (i64, i64, i64) {
    let width = i64::try_from(bucket.as_millis()).unwrap_or(i64::MAX).max(1);
    let last = now.0 - now.0.rem_euclid(width);
    let mut first = since.0 - since.0.rem_euclid(width);
    if last >= first && (last - first) / width >= MAX_BUCKETS {
        first = last - (MAX_BUCKETS - 1) * width;
    }
    (first, last, width)
}

pub(crate) async fn activity(
    store: &PostgresStore,
    since: UnixMillis,
    bucket: Duration,
) -> Result<Vec<ActivityBucket>, StoreError> {
    let (first, last, width) = bucket_range(since, bucket, UnixMillis::now());
    let end = last.saturating_add(width);
    let (from_id, to_id) = (first_id_at(first), first_id_at(end));
    // Events: one range over events_pkey (ids are times, so the range is
    // the recent end of the index and of the heap), bucketed by receive
    // time. Measured on 1,000,000 events: ~100 ms for a day of 110,000,
    // nearly all of it reading the rows. Tried and dropped: per source
    // over events_source_id (the generic plan reads the pkey range once
    // per source instead), and bucketing by the id's milliseconds
    // (decoding them costs more than reading `received_at`).
    let events_sql = "SELECT source, received_at - received_at % $3, count(*) FROM events \
                      WHERE id >= $1 AND id < $2 AND received_at >= $4 GROUP BY 1, 2";
    let event_counts = store
        .query("chart events", events_sql, &[&from_id, &to_id, &width, &first], |row| {
            let get = |e| from_pg("decode event chart", &e);
            Ok((
                row.try_get::<_, i64>(1).map_err(get)?,
                row.try_get::<_, String>(0).map_err(get)?,
                row.try_get::<_, i64>(2).map_err(get)?,
            ))
        })
        .await?;
    let failure_counts = store
        .query(
            "chart verification failures",
            "SELECT at - at % $3, source, count(*) FROM verification_failures \
             WHERE at >= $1 AND at < $2 GROUP BY 1, 2",
            &[&first, &end, &width],
            |row| {
                let get = |e| from_pg("decode failure chart", &e);
                Ok((
                    row.try_get::<_, i64>(0).map_err(get)?,
                    row.try_get::<_, String>(1).map_err(get)?,
                    row.try_get::<_, i64>(2).map_err(get)?,
                ))
            },
        )
        .await?;
    let mut buckets: BTreeMap<(i64, String), ActivityBucket> = BTreeMap::new();
    for (start, source, n) in event_counts {
        activity_bucket(&mut buckets, start, source).events = u64::try_from(n).unwrap_or(0);
    }
    for (start, source, n) in failure_counts {
        activity_bucket(&mut buckets, start, source).verification_failures = u64::try_from(n).unwrap_or(0);
    }
    Ok(buckets.into_values().collect())
}

/// The bucket of `source` starting at `start`, created empty if need be.
fn activity_bucket(
    buckets: &mut BTreeMap<(i64, String), ActivityBucket>,
    start: i64,
    source: String,
) -> &mut ActivityBucket {
    buckets
        .entry((start, source.clone()))
        .or_insert_with(|| ActivityBucket {
            start: UnixMillis(start),
            source,
            ..Default::default()
        })
}

pub(crate) async fn attempt_activity(
    store: &PostgresStore,
    since: UnixMillis,
    bucket: Duration,
) -> Result<Vec<AttemptBucket>, StoreError> {
    let (first, last, width) = bucket_range(since, bucket, UnixMillis::now());
    let end = last.saturating_add(width);
    // A range over the covering index attempts_started_at.
    store
        .query(
            "chart attempts",
            "SELECT started_at - started_at % $3 AS start, \
               count(*) FILTER (WHERE outcome = 'succeeded'), \
               count(*) FILTER (WHERE outcome IN ('retry', 'dead')) \
             FROM attempts WHERE started_at >= $1 AND started_at < $2 GROUP BY 1 ORDER BY 1",
            &[&first, &end, &width],
            |row| {
                let get = |e| from_pg("decode attempt chart", &e);
                Ok(AttemptBucket {
                    start: UnixMillis(row.try_get(0).map_err(get)?),
                    succeeded: u64::try_from(row.try_get::<_, i64>(1).map_err(get)?).unwrap_or(0),
                    failed: u64::try_from(row.try_get::<_, i64>(2).map_err(get)?).unwrap_or(0),
                })
            },
        )
        .await
}

pub(crate) async fn oldest_due_delivery(
    store: &PostgresStore,
    now: UnixMillis,
) -> Result<Option<UnixMillis>, StoreError> {
    // One probe of the partial index deliveries_due.
    let mut due = store
        .query(
            "oldest due delivery",
            "SELECT min(next_attempt_at) FROM deliveries \
             WHERE state IN ('pending', 'retrying') AND next_attempt_at <= $1",
            &[&now.0],
            |row| {
                let due: Option<i64> = row.try_get(0).map_err(|e| from_pg("decode oldest due", &e))?;
                Ok(due.map(UnixMillis))
            },
        )
        .await?;
    Ok(due.pop().flatten())
}

pub(crate) async fn create_user(store: &PostgresStore, user: NewUser) -> Result<User, StoreError> {
    let username = pg_text(&user.username).into_owned();
    let id = user.id.to_bytes();
    let id: &[u8] = &id;
    let client = store.client().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO users (id, username, role, password_hash, disabled, created_at) \
             VALUES ($1, $2, $3, $4, false, $5)",
        )
        .await
        .map_err(|e| from_pg("prepare create user", &e))?;
    client
        .execute(
            &statement,
            &[
                &id,
                &username,
                &user.role.as_str(),
                &user.password_hash,
                &user.created_at.0,
            ],
        )
        .await
        .map_err(|e| conflict_or("create user", &e, &format!("a user named {username:?} already exists")))?;
    Ok(User {
        id: user.id,
        username,
        role: user.role,
        password_hash: user.password_hash,
        disabled: false,
        created_at: user.created_at,
        last_login_at: None,
    })
}

pub(crate) async fn user_by_name(store: &PostgresStore, username: &str) -> Result<Option<User>, StoreError> {
    let username = pg_text(username);
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
    let mut users = store.query("read user", &sql, &[&username], user_at_0).await?;
    Ok(users.pop())
}

pub(crate) async fn user(store: &PostgresStore, id: UserId) -> Result<Option<User>, StoreError> {
    let id = id.to_bytes();
    let id: &[u8] = &id;
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let mut users = store.query("read user", &sql, &[&id], user_at_0).await?;
    Ok(users.pop())
}

pub(crate) async fn list_users(store: &PostgresStore) -> Result<Vec<User>, StoreError> {
    // COLLATE "C": sorted as Rust (and SQLite) sort strings.
    let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username COLLATE \"C\"");
    store.query("list users", &sql, &[], user_at_0).await
}

/// Updates the user named `$1` with `set` (which uses `$2`) and, when
/// `$3`, ends its sessions, in one statement. Returns whether it exists.
async fn update_user(
    store: &PostgresStore,
    context: &str,
    username: &str,
    set: &str,
    value: &(dyn ToSql + Sync),
    end_sessions: bool,
) -> Result<bool, StoreError> {
    let username = pg_text(username);
    let sql = format!(
        "WITH changed AS (UPDATE users SET {set} WHERE username = $1 RETURNING id), \
         ended AS (DELETE FROM sessions WHERE $3 AND user_id IN (SELECT id FROM changed)) \
         SELECT count(*) FROM changed"
    );
    let counts = store
        .query(context, &sql, &[&username, value, &end_sessions], |row| {
            row.try_get::<_, i64>(0).map_err(|e| from_pg(context, &e))
        })
        .await?;
    Ok(counts.first().is_some_and(|n| *n > 0))
}

pub(crate) async fn set_user_disabled(
    store: &PostgresStore,
    username: &str,
    disabled: bool,
) -> Result<bool, StoreError> {
    update_user(store, "disable user", username, "disabled = $2", &disabled, disabled).await
}

pub(crate) async fn set_user_password(
    store: &PostgresStore,
    username: &str,
    password_hash: &str,
) -> Result<bool, StoreError> {
    update_user(
        store,
        "set user password",
        username,
        "password_hash = $2",
        &password_hash,
        true,
    )
    .await
}

pub(crate) async fn record_login(store: &PostgresStore, id: UserId, at: UnixMillis) -> Result<(), StoreError> {
    let id = id.to_bytes();
    let id: &[u8] = &id;
    let client = store.client().await?;
    let statement = client
        .prepare_cached("UPDATE users SET last_login_at = $2 WHERE id = $1")
        .await
        .map_err(|e| from_pg("prepare record login", &e))?;
    client
        .execute(&statement, &[&id, &at.0])
        .await
        .map_err(|e| from_pg("record login", &e))?;
    Ok(())
}

pub(crate) async fn create_session(store: &PostgresStore, session: Session) -> Result<(), StoreError> {
    let user_id = session.user_id.to_bytes();
    let user_id: &[u8] = &user_id;
    let remote_addr = session.remote_addr.as_deref().map(pg_text);
    let client = store.client().await?;
    // Housekeeping on the (rare) login: expired sessions go.
    let statement = client
        .prepare_cached(
            "WITH expired AS (DELETE FROM sessions WHERE expires_at <= $4) \
             INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at, remote_addr) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .await
        .map_err(|e| from_pg("prepare create session", &e))?;
    client
        .execute(
            &statement,
            &[
                &session.token_hash,
                &user_id,
                &session.csrf_token,
                &session.created_at.0,
                &session.expires_at.0,
                &remote_addr,
            ],
        )
        .await
        .map_err(|e| conflict_or("create session", &e, "the session exists, or its user does not"))?;
    Ok(())
}

pub(crate) async fn session(
    store: &PostgresStore,
    token_hash: &str,
    now: UnixMillis,
) -> Result<Option<(Session, User)>, StoreError> {
    let sql = "SELECT s.token_hash, s.user_id, s.csrf_token, s.created_at, s.expires_at, s.remote_addr, \
                 u.id, u.username, u.role, u.password_hash, u.disabled, u.created_at, u.last_login_at \
               FROM sessions AS s JOIN users AS u ON u.id = s.user_id \
               WHERE s.token_hash = $1 AND s.expires_at > $2 AND NOT u.disabled";
    let token_hash = pg_text(token_hash);
    let mut found = store
        .query("read session", sql, &[&token_hash, &now.0], |row| {
            let get = |e| from_pg("decode session", &e);
            let user = user_row(row, 6)?;
            Ok((
                Session {
                    token_hash: row.try_get(0).map_err(get)?,
                    user_id: user.id,
                    csrf_token: row.try_get(2).map_err(get)?,
                    created_at: UnixMillis(row.try_get(3).map_err(get)?),
                    expires_at: UnixMillis(row.try_get(4).map_err(get)?),
                    remote_addr: row.try_get(5).map_err(get)?,
                },
                user,
            ))
        })
        .await?;
    Ok(found.pop())
}

pub(crate) async fn delete_session(store: &PostgresStore, token_hash: &str) -> Result<(), StoreError> {
    let token_hash = pg_text(token_hash);
    let client = store.client().await?;
    let statement = client
        .prepare_cached("DELETE FROM sessions WHERE token_hash = $1")
        .await
        .map_err(|e| from_pg("prepare delete session", &e))?;
    client
        .execute(&statement, &[&token_hash])
        .await
        .map_err(|e| from_pg("delete session", &e))?;
    Ok(())
}

pub(crate) async fn create_token(store: &PostgresStore, token: ApiToken) -> Result<(), StoreError> {
    let id = token.id.to_bytes();
    let id: &[u8] = &id;
    let (name, created_by) = (pg_text(&token.name), pg_text(&token.created_by));
    let time = |at: Option<UnixMillis>| at.map(|t| t.0);
    let client = store.client().await?;
    let statement = client
        .prepare_cached(&format!(
            "INSERT INTO api_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .await
        .map_err(|e| from_pg("prepare create token", &e))?;
    client
        .execute(
            &statement,
            &[
                &id,
                &name,
                &token.token_hash,
                &token.role.as_str(),
                &created_by,
                &token.created_at.0,
                &time(token.expires_at),
                &time(token.revoked_at),
                &time(token.last_used_at),
            ],
        )
        .await
        .map_err(|e| conflict_or("create token", &e, "a token with this id or secret exists"))?;
    Ok(())
}

pub(crate) async fn token_by_hash(
    store: &PostgresStore,
    token_hash: &str,
    now: UnixMillis,
) -> Result<Option<ApiToken>, StoreError> {
    // One statement: the update (only when the stored time is stale) and
    // the read, which sees the row as it was, hence the coalesce.
    let sql = "WITH touched AS ( \
                 UPDATE api_tokens SET last_used_at = $2 \
                 WHERE token_hash = $1 AND (last_used_at IS NULL OR last_used_at <= $2::int8 - $3::int8) \
                 RETURNING last_used_at) \
               SELECT id, name, token_hash, role, created_by, created_at, expires_at, revoked_at, \
                 coalesce((SELECT last_used_at FROM touched), last_used_at) \
               FROM api_tokens WHERE token_hash = $1";
    let token_hash = pg_text(token_hash);
    let mut found = store
        .query(
            "read token",
            sql,
            &[&token_hash, &now.0, &LAST_USED_GRANULARITY_MS],
            token,
        )
        .await?;
    Ok(found.pop())
}

pub(crate) async fn list_tokens(store: &PostgresStore) -> Result<Vec<ApiToken>, StoreError> {
    let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at DESC, id DESC");
    store.query("list tokens", &sql, &[], token).await
}

pub(crate) async fn revoke_token(store: &PostgresStore, id: TokenId, now: UnixMillis) -> Result<bool, StoreError> {
    let id = id.to_bytes();
    let id: &[u8] = &id;
    let revoked = store
        .query(
            "revoke token",
            "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING expires_at",
            &[&id, &now.0],
            |row| {
                let expires: Option<i64> = row.try_get(0).map_err(|e| from_pg("revoke token", &e))?;
                Ok(expires)
            },
        )
        .await?;
    // Revoking an expired token still marks it, but it was not active.
    Ok(revoked
        .first()
        .is_some_and(|expires| expires.is_none_or(|at| now.0 < at)))
}

pub(crate) async fn append_audit(store: &PostgresStore, entry: NewAuditEntry) -> Result<(), StoreError> {
    let (actor, action, object) = (pg_text(&entry.actor), pg_text(&entry.action), pg_text(&entry.object));
    let remote_addr = entry.remote_addr.as_deref().map(pg_text);
    let note = entry.note.as_deref().map(pg_text);
    let details = pg_text(&entry.details);
    let client = store.client().await?;
    let statement = client
        .prepare_cached(
            "INSERT INTO audit_log (at, actor, action, object, remote_addr, note, details) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .await
        .map_err(|e| from_pg("prepare append audit", &e))?;
    client
        .execute(
            &statement,
            &[&entry.at.0, &actor, &action, &object, &remote_addr, &note, &details],
        )
        .await
        .map_err(|e| from_pg("append audit", &e))?;
    Ok(())
}

pub(crate) async fn list_audit(store: &PostgresStore, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
    let mut filters = Filters::new();
    if let Some(actor) = &query.actor {
        filters.add("actor = {}", text(actor));
    }
    if let Some(prefix) = &query.action_prefix {
        // Not LIKE: `_` and `%` in a prefix would be wildcards.
        filters.add("starts_with(action, {})", text(prefix));
    }
    if let Some(object) = &query.object {
        filters.add("object = {}", text(object));
    }
    if let Some(before) = query.before {
        filters.add("seq < {}", Box::new(before));
    }
    let (sql, params) = filters.finish(
        &format!("SELECT {AUDIT_COLUMNS} FROM audit_log"),
        "ORDER BY seq DESC",
        query.limit,
    );
    let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
    store.query("list audit log", &sql, &params, audit_entry).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_filters_in_use_become_sql() {
        let (sql, params) = list_events_sql(&EventQuery {
            limit: 10,
            ..Default::default()
        });
        assert_eq!(
            sql,
            format!("SELECT {SUMMARY_COLUMNS} FROM events ORDER BY id DESC LIMIT $1")
        );
        assert_eq!(params.len(), 1);

        let (sql, params) = list_events_sql(&EventQuery {
            source: Some("s".into()),
            provider_event_id: Some("evt_1".into()),
            body_contains: Some("x".into()),
            before: Some(EventId::new()),
            limit: 10,
            ..Default::default()
        });
        assert!(sql.starts_with("WITH RECURSIVE sources"), "{sql}");
        assert!(sql.contains("dedup_key = $2"), "{sql}");
        assert!(sql.contains("provider_event_id = $2"), "{sql}");
        assert!(sql.contains("position($3::bytea IN body) > 0 AND id < $4"), "{sql}");
        assert!(sql.ends_with("ORDER BY id DESC LIMIT $5"), "{sql}");
        assert_eq!(params.len(), 5);
    }

    #[test]
    fn buckets_are_aligned_and_capped() {
        let minute = Duration::from_secs(60);
        assert_eq!(
            bucket_range(UnixMillis(125_000), minute, UnixMillis(250_000)),
            (120_000, 240_000, 60_000)
        );
        let (first, last, width) = bucket_range(UnixMillis(0), Duration::from_millis(1), UnixMillis(1_000_000));
        assert_eq!((last - first) / width + 1, MAX_BUCKETS);
    }
}
