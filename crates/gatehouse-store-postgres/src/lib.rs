//! The PostgreSQL implementation of the gatehouse [`Store`]: the backend
//! for running any number of gatehouse processes on one database. This
//! crate owns the PostgreSQL schema and its migrations, the connection pool,
//! and how each store operation becomes SQL.
//!
//! - [`PostgresStore`]: the store, over a pool of connections
//!   ([`PostgresOptions`] sizes it); connecting applies the migrations.
//! - `migrate`: the schema as SQL files under `migrations/`, embedded in the
//!   binary and applied under an advisory lock.
//! - `ingest`: how a batch becomes one transaction of at most three
//!   statements (one multi-row insert, one duplicate count, one insert of
//!   the stored events' deliveries).
//! - `deliveries`: claiming due deliveries under a lease (`SKIP LOCKED`),
//!   recording attempts, replay and the operator's retry.
//! - `listen`: the `LISTEN` connection that wakes delivery workers when any
//!   process commits due deliveries.
//! - `rows`: the columns queries select and how rows become domain types.
//! - `error`: which driver errors mean "unavailable, retry later".
//!
//! Besides the pool, a store that waits for deliveries
//! (`wait_for_deliveries`) holds one more connection, which `LISTEN`s for
//! the notifications other processes send when they commit due deliveries.
//!
//! - `tls`: TLS as the URL's `sslmode` and `sslrootcert` ask, always
//!   verified (rustls).
#![deny(missing_docs)]

mod console;
mod deliveries;
mod error;
mod ingest;
mod listen;
mod migrate;
mod recovery;
mod rows;
mod tls;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use gatehouse_core::{
    ApiToken, Attempt, AuditEntry, Delivery, DeliveryId, DeliveryState, EventId, EventSummary, FinishedAttempt,
    NewAuditEntry, NewDelivery, NewEvent, NewUser, Session, StoredEvent, TokenId, UnixMillis, User, UserId,
    VerificationFailure,
};
use gatehouse_store::{
    ActivityBucket, ApprovalDecision, AttemptBucket, AuditQuery, ClaimRequest, ClaimedDelivery, DeliveryQuery,
    Enrichment, EventQuery, ExceptionGroup, IngestOutcome, PruneReport, Resolution, SourceCounts, Store, StoreError,
};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tracing::info;

use crate::error::{from_pg, from_pool};
use crate::listen::Wakeups;
use crate::rows::{pg_text, ATTEMPT_COLUMNS, DELIVERY_COLUMNS, EVENT_COLUMNS, FAILURE_COLUMNS, SUMMARY_COLUMNS};

/// The most rows one list call returns, whatever limit it asks for.
const MAX_LIST_LIMIT: u32 = 1000;

/// How many ingest batches commit at once: PostgreSQL commits in parallel,
/// and a few concurrent group commits already keep the WAL writer busy.
const CONCURRENT_BATCHES: usize = 4;

/// How to size and time the connection pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostgresOptions {
    /// The most connections held open at once (at least 1).
    pub pool_size: usize,
    /// How long to wait for a new connection to be established, or for a
    /// pooled one to come free, before the operation fails as unavailable.
    pub connect_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`Store`] on a PostgreSQL database, shared by every gatehouse process
/// that points at it.
pub struct PostgresStore {
    pool: Pool,
    max_concurrent_batches: usize,
    wakeups: Wakeups,
}

/// Checks a PostgreSQL URL without connecting: that it parses, that its
/// `sslmode` is one gatehouse knows and that its `sslrootcert` file holds
/// certificates. The message never quotes the URL (it may hold a password).
pub fn check_url(url: &str) -> Result<(), String> {
    parse_url(url).map(|_| ())
}

/// What a URL says about connecting: the driver's settings and the TLS
/// parameters with their connector.
struct ConnectSettings {
    config: tokio_postgres::Config,
    tls_params: tls::TlsParams,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

fn parse_url(url: &str) -> Result<ConnectSettings, String> {
    let (url, tls_params) = tls::split_url(url)?;
    // The parse error would quote the URL, password included.
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|_| "invalid PostgreSQL URL (expected postgres://user:password@host:port/database)".to_string())?;
    let tls = tls::connector(&tls_params)?;
    Ok(ConnectSettings {
        config,
        tls_params,
        tls,
    })
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`
    /// or the `host=… user=…` form), checks that it answers, and applies any
    /// pending migrations. `sslmode=require`, `verify-ca` or `verify-full`
    /// (with `sslrootcert=/path/to/root.pem` for a private CA) make every
    /// connection TLS with a verified certificate.
    ///
    /// Fails with [`StoreError::Unavailable`] if the database cannot be
    /// reached within `options.connect_timeout`, and with
    /// [`StoreError::SchemaTooNew`] if a newer gatehouse already migrated it.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, StoreError> {
        let ConnectSettings {
            mut config,
            tls_params,
            tls,
        } = parse_url(url).map_err(StoreError::Internal)?;
        config.connect_timeout(options.connect_timeout);
        config.ssl_mode(match tls_params.mode {
            tls::TlsMode::Off => SslMode::Disable,
            tls::TlsMode::VerifyCa | tls::TlsMode::VerifyFull => SslMode::Require,
        });
        if tls_params.mode == tls::TlsMode::Off && !is_local(&config) {
            tracing::warn!(
                "Connecting to PostgreSQL on another host without TLS; \
                 add sslmode=verify-full (and sslrootcert=… for a private CA) to the URL to encrypt and verify."
            );
        }
        // A 2xx promises a durable commit, whatever the server's default:
        // force synchronous_commit on for gatehouse's sessions.
        let session_options = match config.get_options() {
            Some(existing) => format!("{existing} -c synchronous_commit=on"),
            None => "-c synchronous_commit=on".to_string(),
        };
        config.options(&session_options);
        if config.get_application_name().is_none() {
            config.application_name("gatehouse");
        }
        let wakeups = Wakeups::new(config.clone(), tls.clone());
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool_size = options.pool_size.max(1);
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| StoreError::Internal(format!("build the connection pool: {e}")))?;

        let mut client = pool.get().await.map_err(|error| {
            let refused_certificate =
                matches!(&error, deadpool_postgres::PoolError::Backend(e) if tls::is_certificate_error(e));
            let hint = " (the server's TLS certificate was refused: name its CA, or the server's own \
                        certificate, with sslrootcert=/path/to/root.pem in the URL; sslmode=verify-ca skips the \
                        host-name check)";
            match from_pool(error) {
                StoreError::Unavailable(text) if refused_certificate => StoreError::Unavailable(text + hint),
                StoreError::Internal(text) if refused_certificate => StoreError::Internal(text + hint),
                other => other,
            }
        })?;
        migrate::run(&mut client).await?;
        drop(client);
        info!(
            pool_size,
            schema_version = migrate::supported_version(),
            "Connected to PostgreSQL."
        );
        Ok(Self {
            pool,
            max_concurrent_batches: CONCURRENT_BATCHES.min(pool_size),
            wakeups,
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(from_pool)
    }

    /// Runs a cached prepared statement and decodes every row.
    async fn query<T>(
        &self,
        context: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        decode: impl Fn(&tokio_postgres::Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(|e| from_pg(context, &e))?;
        let rows = client
            .query(&statement, params)
            .await
            .map_err(|e| from_pg(context, &e))?;
        rows.iter().map(decode).collect()
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pool's own Debug would print the connection settings.
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("max_size", &status.max_size)
            .field("connections", &status.size)
            .field("idle", &status.available)
            .finish()
    }
}

/// Whether every host in `config` is this machine (a Unix socket, `localhost`
/// or a loopback address), where plain connections need no warning.
fn is_local(config: &tokio_postgres::Config) -> bool {
    use tokio_postgres::config::Host;
    let hosts_local = config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    });
    hosts_local && config.get_hostaddrs().iter().all(|ip| ip.is_loopback())
}

/// `head`, then ` WHERE` with each present filter (`"source ="` becomes
/// `source = $n`) joined by `AND`, then `tail` and `LIMIT $n`: only
/// placeholders vary, so each combination is one statement to cache.
fn filtered_sql(head: &str, filters: &[(&str, bool)], tail: &str) -> String {
    let mut conditions = Vec::new();
    let mut next = 1;
    for (condition, present) in filters {
        if *present {
            conditions.push(format!("{condition} ${next}"));
            next += 1;
        }
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!("{head}{filter} {tail} LIMIT ${next}")
}

/// The SQL for one combination of delivery list filters.
fn list_deliveries_sql(by_state: bool, by_route: bool, by_error: bool, before: bool) -> String {
    filtered_sql(
        &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries"),
        &[
            ("state =", by_state),
            ("route =", by_route),
            ("coalesce(last_error, '') =", by_error),
            ("id <", before),
        ],
        "ORDER BY id DESC",
    )
}

/// The SQL for events in a time range, after a cursor or from the start.
fn events_between_sql(after: bool) -> String {
    filtered_sql(
        &format!("SELECT {SUMMARY_COLUMNS} FROM events"),
        &[
            ("source =", true),
            ("received_at >=", true),
            ("received_at <", true),
            ("id >", after),
        ],
        "ORDER BY id",
    )
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn max_concurrent_batches(&self) -> usize {
        self.max_concurrent_batches
    }

    async fn ingest(&self, batch: Vec<NewEvent>) -> Result<Vec<IngestOutcome>, StoreError> {
        let outcomes = ingest::ingest(&self.pool, &batch).await?;
        let made_due = batch
            .iter()
            .zip(&outcomes)
            .any(|(event, outcome)| *outcome == IngestOutcome::Stored && !event.deliveries.is_empty());
        if made_due {
            self.wakeups.wake();
        }
        Ok(outcomes)
    }

    async fn record_verification_failures(&self, failures: Vec<VerificationFailure>) -> Result<(), StoreError> {
        if failures.is_empty() {
            return Ok(());
        }
        let sources: Vec<_> = failures.iter().map(|f| pg_text(&f.source)).collect();
        let reasons: Vec<_> = failures.iter().map(|f| pg_text(&f.reason)).collect();
        let remote_addrs: Vec<_> = failures.iter().map(|f| f.remote_addr.as_deref().map(pg_text)).collect();
        let at: Vec<i64> = failures.iter().map(|f| f.at.0).collect();
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "INSERT INTO verification_failures (source, reason, remote_addr, at)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[])",
            )
            .await
            .map_err(|e| from_pg("prepare record verification failures", &e))?;
        client
            .execute(&statement, &[&sources, &reasons, &remote_addrs, &at])
            .await
            .map_err(|e| from_pg("record verification failures", &e))?;
        Ok(())
    }

    async fn event(&self, id: EventId) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1");
        let id = id.to_bytes();
        let id: &[u8] = &id;
        let mut events = self.query("read event", &sql, &[&id], rows::stored_event).await?;
        Ok(events.pop())
    }

    async fn event_by_dedup_key(&self, source: &str, dedup_key: &str) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE source = $1 AND dedup_key = $2");
        let (source, dedup_key) = (pg_text(source), pg_text(dedup_key));
        let mut events = self
            .query(
                "read event by dedup key",
                &sql,
                &[&source, &dedup_key],
                rows::stored_event,
            )
            .await?;
        Ok(events.pop())
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Vec<EventSummary>, StoreError> {
        console::list_events(self, query).await
    }

    async fn verification_failures(
        &self,
        source: Option<&str>,
        limit: u32,
    ) -> Result<Vec<VerificationFailure>, StoreError> {
        let limit = i64::from(limit.min(MAX_LIST_LIMIT));
        match source.map(pg_text) {
            Some(source) => {
                let sql = format!(
                    "SELECT {FAILURE_COLUMNS} FROM verification_failures WHERE source = $1 \
                     ORDER BY at DESC, id DESC LIMIT $2"
                );
                self.query(
                    "list verification failures",
                    &sql,
                    &[&source, &limit],
                    rows::verification_failure,
                )
                .await
            }
            None => {
                let sql =
                    format!("SELECT {FAILURE_COLUMNS} FROM verification_failures ORDER BY at DESC, id DESC LIMIT $1");
                self.query(
                    "list verification failures",
                    &sql,
                    &[&limit],
                    rows::verification_failure,
                )
                .await
            }
        }
    }

    async fn source_counts(&self) -> Result<Vec<SourceCounts>, StoreError> {
        // COLLATE "C": sorted by bytes, as Rust sorts strings, whatever the
        // database's locale.
        let sql = "\
            SELECT source, coalesce(e.events, 0), coalesce(e.duplicates, 0), coalesce(f.failures, 0)
            FROM (SELECT source, count(*) AS events, sum(duplicates) AS duplicates
                  FROM events GROUP BY source) AS e
            FULL OUTER JOIN (SELECT source, count(*) AS failures
                             FROM verification_failures GROUP BY source) AS f
            USING (source)
            ORDER BY source COLLATE \"C\"";
        self.query("count events per source", sql, &[], |row| {
            let get = |e| from_pg("decode source counts", &e);
            let count = |index: usize| -> Result<u64, StoreError> {
                let value: i64 = row.try_get(index).map_err(get)?;
                Ok(u64::try_from(value).unwrap_or(0))
            };
            Ok(SourceCounts {
                source: row.try_get(0).map_err(get)?,
                events: count(1)?,
                duplicates: count(2)?,
                verification_failures: count(3)?,
            })
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.batch_execute("SELECT 1").await.map_err(|e| from_pg("ping", &e))
    }

    async fn wait_for_deliveries(&self, max_wait: Duration) {
        self.wakeups.wait(max_wait).await;
    }

    async fn claim_deliveries(&self, request: &ClaimRequest) -> Result<Vec<ClaimedDelivery>, StoreError> {
        deliveries::claim(&self.pool, request).await
    }

    async fn finish_attempts(&self, owner: &str, finished: Vec<FinishedAttempt>) -> Result<Vec<bool>, StoreError> {
        deliveries::finish(&self.pool, owner, &finished).await
    }

    async fn release_deliveries(&self, owner: &str, ids: &[DeliveryId]) -> Result<(), StoreError> {
        if deliveries::release(&self.pool, owner, ids).await? > 0 {
            self.wakeups.wake();
        }
        Ok(())
    }

    async fn add_deliveries(&self, deliveries: Vec<(EventId, NewDelivery)>) -> Result<u64, StoreError> {
        let now = UnixMillis::now();
        let rows: Vec<_> = deliveries
            .iter()
            .map(|(event, delivery)| (*event, delivery, now))
            .collect();
        let client = self.client().await?;
        let created = deliveries::insert(&client, &rows).await?;
        if created > 0 {
            self.wakeups.wake();
        }
        Ok(created)
    }

    async fn retry_deliveries(&self, ids: &[DeliveryId], now: UnixMillis) -> Result<u64, StoreError> {
        let changed = deliveries::retry(&self.pool, ids, now).await?;
        if changed > 0 {
            self.wakeups.wake();
        }
        Ok(changed)
    }

    async fn delivery(&self, id: DeliveryId) -> Result<Option<Delivery>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE id = $1");
        let id = id.to_bytes();
        let id: &[u8] = &id;
        let mut deliveries = self.query("read delivery", &sql, &[&id], rows::delivery).await?;
        Ok(deliveries.pop())
    }

    async fn deliveries_for_event(&self, event: EventId) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE event_id = $1 ORDER BY id");
        let event = event.to_bytes();
        let event: &[u8] = &event;
        self.query("read an event's deliveries", &sql, &[&event], rows::delivery)
            .await
    }

    async fn list_deliveries(&self, query: &DeliveryQuery) -> Result<Vec<Delivery>, StoreError> {
        let state = query.state.map(|state| state.as_str());
        let route = query.route.as_deref().map(pg_text);
        let before = query.before.map(|id| id.to_bytes());
        let before = before.as_ref().map(|bytes| bytes.as_slice());
        let limit = i64::from(query.limit.min(MAX_LIST_LIMIT));
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(4);
        if let Some(state) = &state {
            params.push(state);
        }
        if let Some(route) = &route {
            params.push(route);
        }
        let last_error = query.last_error.as_deref().map(pg_text);
        if let Some(last_error) = &last_error {
            params.push(last_error);
        }
        if let Some(before) = &before {
            params.push(before);
        }
        params.push(&limit);
        let sql = list_deliveries_sql(state.is_some(), route.is_some(), last_error.is_some(), before.is_some());
        self.query("list deliveries", &sql, &params, rows::delivery).await
    }

    async fn attempts(&self, delivery: DeliveryId) -> Result<Vec<Attempt>, StoreError> {
        let sql = format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE delivery_id = $1 ORDER BY number, id");
        let delivery = delivery.to_bytes();
        let delivery: &[u8] = &delivery;
        self.query("read attempts", &sql, &[&delivery], rows::attempt).await
    }

    async fn delivery_counts(&self) -> Result<Vec<(DeliveryState, u64)>, StoreError> {
        let sql = "SELECT state, count(*) FROM deliveries GROUP BY state";
        let mut counts = self
            .query("count deliveries per state", sql, &[], |row| {
                let get = |e| from_pg("decode delivery counts", &e);
                let state: &str = row.try_get(0).map_err(get)?;
                let count: i64 = row.try_get(1).map_err(get)?;
                let state = DeliveryState::parse(state)
                    .ok_or_else(|| StoreError::Internal("stored delivery has an unknown state".into()))?;
                Ok((state, u64::try_from(count).unwrap_or(0)))
            })
            .await?;
        // In lifecycle order.
        counts.sort_by_key(|(state, _)| DeliveryState::ALL.iter().position(|s| s == state));
        Ok(counts)
    }

    async fn set_route_paused(&self, route: &str, paused: bool) -> Result<(), StoreError> {
        let route = pg_text(route);
        let now = UnixMillis::now().0;
        let client = self.client().await?;
        let statement = client
            .prepare_cached(deliveries::SET_ROUTE_PAUSED)
            .await
            .map_err(|e| from_pg("prepare set route paused", &e))?;
        client
            .execute(&statement, &[&route, &paused, &now])
            .await
            .map_err(|e| from_pg("set route paused", &e))?;
        if !paused {
            self.wakeups.wake();
        }
        Ok(())
    }

    async fn paused_routes(&self) -> Result<Vec<String>, StoreError> {
        // COLLATE "C": sorted as Rust sorts strings.
        let sql = "SELECT route FROM route_states WHERE paused ORDER BY route COLLATE \"C\"";
        self.query("list paused routes", sql, &[], |row| {
            row.try_get(0).map_err(|e| from_pg("decode paused routes", &e))
        })
        .await
    }

    async fn events_between(
        &self,
        source: &str,
        from: UnixMillis,
        to: UnixMillis,
        after: Option<EventId>,
        limit: u32,
    ) -> Result<Vec<EventSummary>, StoreError> {
        let source = pg_text(source);
        let after = after.map(|id| id.to_bytes());
        let after = after.as_ref().map(|bytes| bytes.as_slice());
        let limit = i64::from(limit.min(MAX_LIST_LIMIT));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&source, &from.0, &to.0];
        if let Some(after) = &after {
            params.push(after);
        }
        params.push(&limit);
        let sql = events_between_sql(after.is_some());
        self.query("list events in a time range", &sql, &params, rows::summary)
            .await
    }

    async fn decide_approval(
        &self,
        ids: &[DeliveryId],
        decision: &ApprovalDecision,
        now: UnixMillis,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        console::decide_approval(self, ids, decision, now).await
    }

    async fn resolve_deliveries(
        &self,
        ids: &[DeliveryId],
        resolution: Resolution,
        note: &str,
        now: UnixMillis,
    ) -> Result<Vec<DeliveryId>, StoreError> {
        console::resolve_deliveries(self, ids, resolution, note, now).await
    }

    async fn exception_groups(&self, limit: u32) -> Result<Vec<ExceptionGroup>, StoreError> {
        console::exception_groups(self, limit).await
    }

    async fn activity(&self, since: UnixMillis, bucket: Duration) -> Result<Vec<ActivityBucket>, StoreError> {
        console::activity(self, since, bucket).await
    }

    async fn attempt_activity(&self, since: UnixMillis, bucket: Duration) -> Result<Vec<AttemptBucket>, StoreError> {
        console::attempt_activity(self, since, bucket).await
    }

    async fn oldest_due_delivery(&self, now: UnixMillis) -> Result<Option<UnixMillis>, StoreError> {
        console::oldest_due_delivery(self, now).await
    }

    async fn create_user(&self, user: NewUser) -> Result<User, StoreError> {
        console::create_user(self, user).await
    }

    async fn user_by_name(&self, username: &str) -> Result<Option<User>, StoreError> {
        console::user_by_name(self, username).await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>, StoreError> {
        console::user(self, id).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        console::list_users(self).await
    }

    async fn set_user_disabled(&self, username: &str, disabled: bool) -> Result<bool, StoreError> {
        console::set_user_disabled(self, username, disabled).await
    }

    async fn set_user_password(&self, username: &str, password_hash: &str) -> Result<bool, StoreError> {
        console::set_user_password(self, username, password_hash).await
    }

    async fn record_login(&self, id: UserId, at: UnixMillis) -> Result<(), StoreError> {
        console::record_login(self, id, at).await
    }

    async fn create_session(&self, session: Session) -> Result<(), StoreError> {
        console::create_session(self, session).await
    }

    async fn session(&self, token_hash: &str, now: UnixMillis) -> Result<Option<(Session, User)>, StoreError> {
        console::session(self, token_hash, now).await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        console::delete_session(self, token_hash).await
    }

    async fn create_token(&self, token: ApiToken) -> Result<(), StoreError> {
        console::create_token(self, token).await
    }

    async fn token_by_hash(&self, token_hash: &str, now: UnixMillis) -> Result<Option<ApiToken>, StoreError> {
        console::token_by_hash(self, token_hash, now).await
    }

    async fn list_tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        console::list_tokens(self).await
    }

    async fn revoke_token(&self, id: TokenId, now: UnixMillis) -> Result<bool, StoreError> {
        console::revoke_token(self, id, now).await
    }

    async fn append_audit(&self, entry: NewAuditEntry) -> Result<(), StoreError> {
        console::append_audit(self, entry).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        console::list_audit(self, query).await
    }

    async fn existing_dedup_keys(&self, source: &str, dedup_keys: &[String]) -> Result<Vec<String>, StoreError> {
        recovery::existing_dedup_keys(self, source, dedup_keys).await
    }

    async fn source_state(&self, source: &str, key: &str) -> Result<Option<String>, StoreError> {
        recovery::source_state(self, source, key).await
    }

    async fn put_source_state(&self, source: &str, key: &str, value: &str) -> Result<(), StoreError> {
        recovery::put_source_state(self, source, key, value).await
    }

    async fn save_enrichment(&self, enrichment: Enrichment) -> Result<(), StoreError> {
        recovery::save_enrichment(self, enrichment).await
    }

    async fn enrichment(&self, delivery: DeliveryId) -> Result<Option<Enrichment>, StoreError> {
        recovery::enrichment(self, delivery).await
    }

    async fn prune_events(
        &self,
        source: &str,
        older_than: UnixMillis,
        limit: u32,
        now: UnixMillis,
        dry_run: bool,
    ) -> Result<PruneReport, StoreError> {
        recovery::prune_events(self, source, older_than, limit, now, dry_run).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_and_range_sql() {
        assert_eq!(
            list_deliveries_sql(true, false, false, true),
            format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE state = $1 AND id < $2 ORDER BY id DESC LIMIT $3")
        );
        assert_eq!(
            list_deliveries_sql(true, false, true, false),
            format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE state = $1 AND coalesce(last_error, '') = $2 \
                 ORDER BY id DESC LIMIT $3"
            )
        );
        assert_eq!(
            events_between_sql(false),
            format!(
                "SELECT {SUMMARY_COLUMNS} FROM events WHERE source = $1 AND received_at >= $2 AND received_at < $3 \
                 ORDER BY id LIMIT $4"
            )
        );
        assert_eq!(
            events_between_sql(true),
            format!(
                "SELECT {SUMMARY_COLUMNS} FROM events WHERE source = $1 AND received_at >= $2 AND received_at < $3 \
                 AND id > $4 ORDER BY id LIMIT $5"
            )
        );
    }

    #[test]
    fn only_this_machine_is_local() {
        let local = |url: &str| is_local(&url.parse().expect("url"));
        assert!(local("postgres://u@127.0.0.1:5432/db"));
        assert!(local("postgres://u@localhost/db"));
        assert!(local("postgres://u@[::1]/db"));
        assert!(local("host=/var/run/postgresql user=u"));
        assert!(!local("postgres://u@db.internal/db"));
        assert!(!local("postgres://u@10.0.0.5/db"));
        assert!(!local("host=localhost,db.internal user=u"));
    }

    #[test]
    fn default_options() {
        let options = PostgresOptions::default();
        assert_eq!(options.pool_size, 16);
        assert_eq!(options.connect_timeout, Duration::from_secs(5));
    }
}
