//! The shared storage conformance suite on PostgreSQL, then the checks only
//! PostgreSQL needs: connect failures, migrations, a server going away, big
//! batches.
//!
//! These tests need a server: set `GATEHOUSE_TEST_POSTGRES_URL`, e.g.
//! `postgres://postgres@127.0.0.1:5432/test`. Without it, every test that
//! needs the server writes `SKIPPED: …` to stderr and passes.
//!
//! Every test works in a brand-new schema of its own,
//! `gh_test_<unix seconds>_<pid>_<n>` (found through `search_path`): the
//! delivery checks claim every due delivery in their schema, so they cannot
//! share one with tests running in parallel, and reruns never see a
//! previous run's rows. Runs leave their schemas behind for inspection, and
//! the next run drops any older than an hour.

use std::collections::HashSet;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_core::{DeliveryState, UnixMillis};
use gatehouse_store::conformance::{event_with_routes, sample_event, unique_source};
use gatehouse_store::{ClaimRequest, IngestOutcome, Store, StoreError};
use gatehouse_store_postgres::{PostgresOptions, PostgresStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

const URL_VAR: &str = "GATEHOUSE_TEST_POSTGRES_URL";

/// The server's URL, or `None` after saying loudly that the test is skipped.
fn server_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var_os("GATEHOUSE_REQUIRE_POSTGRES").is_some() => {
            panic!("GATEHOUSE_REQUIRE_POSTGRES is set but {URL_VAR} is not: CI never skips PostgreSQL")
        }
        _ => {
            // Written to the process's stderr, not through eprintln!: the
            // test harness hides what passing tests print, and a skipped
            // suite must not look like a passing one.
            let line = format!("SKIPPED: {URL_VAR} is not set; PostgreSQL conformance tests did not run\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
            None
        }
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// The prefix of this run's schemas.
fn run_schema() -> &'static str {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    SCHEMA.get_or_init(|| format!("gh_test_{}_{}", unix_secs(), std::process::id()))
}

/// A schema name no other test of this run uses.
fn fresh_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{}_{}", run_schema(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn options() -> PostgresOptions {
    PostgresOptions {
        pool_size: 8,
        ..PostgresOptions::default()
    }
}

/// `url` with one more connection parameter; `value` must need no escaping.
fn with_param(url: &str, key: &str, value: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!(
            "{url}{separator}{key}={}",
            value.replace(' ', "%20").replace('=', "%3D")
        )
    } else {
        format!("{url} {key}='{value}'")
    }
}

/// `url` with `search_path` set to `schema` for every connection.
fn url_in_schema(url: &str, schema: &str) -> String {
    with_param(url, "options", &format!("-c search_path={schema}"))
}

async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(connection);
    client
}

/// Creates `schema` if needed, first dropping test schemas (these tests'
/// `gh_test_*` and the integration tests' `it_*`) older than an hour. Each
/// drop is its own transaction: dropping hundreds in one would exhaust the
/// server's lock table.
async fn create_schema(url: &str, schema: &str) {
    let client = admin_client(url).await;
    let stale = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'gh\\_test\\_%' OR nspname LIKE 'it\\_evt\\_%'",
            &[],
        )
        .await
        .expect("list test schemas");
    for row in stale {
        let name: String = row.get(0);
        if schema_age_secs(&name).is_some_and(|age| age > 3600) {
            // Another test may drop it at the same moment; that is fine.
            let _ = client
                .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                .await;
        }
    }
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await
        .expect("create the test schema");
}

/// How old a test schema is, from the time in its name: `gh_test_<secs>_…`
/// or `it_evt_<ULID>` (whose first 48 bits are milliseconds).
fn schema_age_secs(name: &str) -> Option<u64> {
    let created = if let Some(rest) = name.strip_prefix("gh_test_") {
        rest.split('_').next()?.parse::<u64>().ok()?
    } else {
        let id: gatehouse_core::EventId = name
            .strip_prefix("it_")?
            .to_uppercase()
            .replacen("EVT_", "evt_", 1)
            .parse()
            .ok()?;
        id.timestamp_ms() / 1000
    };
    Some(unix_secs().saturating_sub(created))
}

async fn connect_in(url: &str, schema: &str) -> Result<PostgresStore, StoreError> {
    create_schema(url, schema).await;
    PostgresStore::connect(&url_in_schema(url, schema), options()).await
}

/// A store in a new, empty schema, or `None` when no server is configured.
async fn make_store() -> Option<Arc<dyn Store>> {
    let url = server_url()?;
    let store = connect_in(&url, &fresh_schema()).await.expect("connect");
    Some(Arc::new(store))
}

gatehouse_store::conformance_tests!(optional: make_store());
gatehouse_store::recovery_conformance_tests!(optional: make_store());

async fn migration_versions(url: &str, schema: &str) -> Vec<i64> {
    let client = admin_client(url).await;
    client
        .query(
            &format!("SELECT version FROM \"{schema}\".gatehouse_schema_migrations ORDER BY version"),
            &[],
        )
        .await
        .expect("read migrations")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test]
async fn connect_fails_fast_when_nothing_listens() {
    let timeout = Duration::from_secs(2);
    let started = Instant::now();
    let result = tokio::time::timeout(
        timeout * 3,
        PostgresStore::connect(
            "postgres://postgres@127.0.0.1:1/test",
            PostgresOptions {
                connect_timeout: timeout,
                ..PostgresOptions::default()
            },
        ),
    )
    .await
    .expect("connect gave up on its own");
    let err = result.expect_err("nothing listens on port 1");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() <= timeout, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn connect_times_out_when_the_server_never_answers() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });

    let timeout = Duration::from_millis(500);
    let started = Instant::now();
    let err = PostgresStore::connect(
        &format!("postgres://postgres@127.0.0.1:{port}/test"),
        PostgresOptions {
            connect_timeout: timeout,
            ..PostgresOptions::default()
        },
    )
    .await
    .expect_err("the server never answers");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < timeout * 4, "took {:?}", started.elapsed());
    silent.abort();
}

#[tokio::test]
async fn connect_rejects_a_malformed_url_without_echoing_it() {
    let err = PostgresStore::connect("postgres://user:hunter2@[::1/db", PostgresOptions::default())
        .await
        .expect_err("malformed");
    assert!(!err.is_unavailable(), "{err:?}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_idempotent() {
    let Some(url) = server_url() else { return };
    let schema = fresh_schema();
    let first = connect_in(&url, &schema).await.expect("first connect");
    let event = sample_event(&unique_source("idem"), "evt_1");
    first.ingest(vec![event.clone()]).await.expect("ingest");
    drop(first);

    let second = connect_in(&url, &schema).await.expect("second connect");
    assert!(second.event(event.id).await.expect("read").is_some(), "data survives");
    assert_eq!(migration_versions(&url, &schema).await, vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_migrate_once() {
    let Some(url) = server_url() else { return };
    let schema = fresh_schema();
    create_schema(&url, &schema).await;
    let in_schema = url_in_schema(&url, &schema);
    let connects = (0..4).map(|_| {
        let url = in_schema.clone();
        tokio::spawn(async move { PostgresStore::connect(&url, options()).await })
    });
    for connect in connects.collect::<Vec<_>>() {
        connect.await.expect("task").expect("connect");
    }
    assert_eq!(migration_versions(&url, &schema).await, vec![1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let Some(url) = server_url() else { return };
    let schema = fresh_schema();
    connect_in(&url, &schema).await.expect("first connect");
    admin_client(&url)
        .await
        .execute(
            &format!("INSERT INTO \"{schema}\".gatehouse_schema_migrations (version) VALUES (999)"),
            &[],
        )
        .await
        .expect("pretend a newer gatehouse migrated");
    let err = connect_in(&url, &schema).await.expect_err("too new");
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 999,
                supported: 5
            }
        ),
        "{err:?}"
    );
}

/// A TCP proxy in front of the test server that can cut every connection
/// and refuse new ones: the database going down, then coming back.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    cut: Arc<Notify>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: (String, u16)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let down = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(Notify::new());
        let accept = tokio::spawn({
            let (down, cut) = (down.clone(), cut.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if down.load(Ordering::SeqCst) {
                        continue; // dropped: the connection closes at once
                    }
                    let mut outbound = TcpStream::connect(upstream.clone())
                        .await
                        .expect("reach the test server");
                    let cut = cut.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.notified() => {}
                        }
                    });
                }
            }
        });
        Self {
            port,
            down,
            cut,
            accept,
        }
    }

    fn go_down(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn come_back(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A proxy in front of the test server and a store connected through it in
/// `schema`, or `None` (after saying so) when the test URL has no TCP host.
async fn store_behind_a_proxy(url: &str, schema: &str) -> Option<(Proxy, PostgresStore)> {
    create_schema(url, schema).await;
    let config: tokio_postgres::Config = url.parse().expect("a valid test URL");
    let (Some(Host::Tcp(host)), port) = (config.get_hosts().first(), config.get_ports().first()) else {
        assert!(
            std::env::var_os("GATEHOUSE_REQUIRE_POSTGRES").is_none(),
            "the database-outage tests need a TCP host in the test URL"
        );
        let line = "SKIPPED: the database-outage tests need a TCP host in the test URL\n";
        let _ = std::io::stderr().write_all(line.as_bytes());
        return None;
    };
    let proxy = Proxy::start((host.clone(), port.copied().unwrap_or(5432))).await;

    let quote = |value: &str| format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut through_proxy = format!(
        "host=127.0.0.1 port={} options={}",
        proxy.port,
        quote(&format!("-c search_path={schema}"))
    );
    if let Some(user) = config.get_user() {
        through_proxy.push_str(&format!(" user={}", quote(user)));
    }
    if let Some(dbname) = config.get_dbname() {
        through_proxy.push_str(&format!(" dbname={}", quote(dbname)));
    }
    if let Some(password) = config.get_password() {
        through_proxy.push_str(&format!(" password={}", quote(&String::from_utf8_lossy(password))));
    }
    let store = PostgresStore::connect(
        &through_proxy,
        PostgresOptions {
            pool_size: 2,
            connect_timeout: Duration::from_secs(1),
        },
    )
    .await
    .expect("connect through the proxy");
    Some((proxy, store))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_is_unavailable_then_recovers() {
    let Some(url) = server_url() else { return };
    let Some((proxy, store)) = store_behind_a_proxy(&url, &fresh_schema()).await else {
        return;
    };
    let source = unique_source("outage");
    let before = sample_event(&source, "evt_before");
    store.ingest(vec![before.clone()]).await.expect("ingest while up");

    proxy.go_down();
    let err = store
        .ingest(vec![sample_event(&source, "evt_during")])
        .await
        .expect_err("the database is down");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let err = store.ping().await.expect_err("the database is down");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    proxy.come_back();
    // Dead connections are dropped when the pool next hands them out, and
    // new ones made: the store recovers by itself.
    let mut attempts = 0;
    while let Err(err) = store.ping().await {
        attempts += 1;
        assert!(attempts < 10, "still failing: {err:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcomes = store
        .ingest(vec![
            sample_event(&source, "evt_during"),
            sample_event(&source, "evt_before"),
        ])
        .await
        .expect("ingest after recovery");
    assert_eq!(
        outcomes,
        vec![IngestOutcome::Stored, IngestOutcome::Duplicate { original: before.id }],
        "the failed batch left nothing behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_in_text_does_not_fail_the_batch() {
    let Some(store) = make_store().await else { return };
    let source = unique_source("nul");
    let mut odd = sample_event(&source, "evt_a\0b");
    odd.event_type = Some("type\0".into());
    let plain = sample_event(&source, "evt_plain");
    let outcomes = store.ingest(vec![odd.clone(), plain]).await.expect("ingest");
    assert_eq!(outcomes, vec![IngestOutcome::Stored, IngestOutcome::Stored]);
    let found = store
        .event_by_dedup_key(&source, "evt_a\0b")
        .await
        .expect("read")
        .expect("found by the same key");
    assert_eq!(found.summary.id, odd.id);
    assert_eq!(found.summary.dedup_key, "evt_a\u{FFFD}b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_with_every_kind_of_duplicate() {
    let Some(store) = make_store().await else { return };
    let source = unique_source("full");
    let earlier: Vec<_> = (0..64).map(|i| sample_event(&source, &format!("old_{i}"))).collect();
    store.ingest(earlier.clone()).await.expect("ingest earlier");

    // 256 events: 160 new keys, 64 repeats of earlier events, and 32 repeats
    // of new keys from earlier in this batch.
    let mut batch: Vec<_> = (0..160).map(|i| sample_event(&source, &format!("new_{i}"))).collect();
    batch.extend((0..64).map(|i| sample_event(&source, &format!("old_{i}"))));
    batch.extend((0..32).map(|i| sample_event(&source, &format!("new_{i}"))));
    let started = Instant::now();
    let outcomes = store.ingest(batch.clone()).await.expect("ingest batch");
    let line = format!(
        "a batch of {} events committed in {:?}\n",
        batch.len(),
        started.elapsed()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());

    let mut expected: Vec<_> = (0..160).map(|_| IngestOutcome::Stored).collect();
    expected.extend(earlier.iter().map(|e| IngestOutcome::Duplicate { original: e.id }));
    expected.extend(batch[..32].iter().map(|e| IngestOutcome::Duplicate { original: e.id }));
    assert_eq!(outcomes, expected);

    let counts = store.source_counts().await.expect("counts");
    let mine = counts.iter().find(|c| c.source == source).expect("counted");
    assert_eq!((mine.events, mine.duplicates), (224, 96));
    let old = store.event(earlier[0].id).await.expect("read").expect("stored");
    assert_eq!(old.summary.duplicates, 1);
    assert_eq!(old.summary.last_duplicate_at, Some(batch[160].received_at));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_sharing_keys_never_deadlock() {
    let Some(store) = make_store().await else { return };
    // Open every pooled connection first, so the batches really overlap.
    let pings: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.ping().await })
        })
        .collect();
    for ping in pings {
        ping.await.expect("task").expect("ping");
    }
    for round in 0..5 {
        let source = unique_source(&format!("overlap-{round}"));
        let keys: Vec<String> = (0..200).map(|i| format!("evt_{i}")).collect();
        let mut tasks = Vec::new();
        for task in 0..8 {
            // Every batch holds all the keys, each in a different order.
            let mut order = keys.clone();
            order.rotate_left(task * 25);
            if task % 2 == 1 {
                order.reverse();
            }
            let batch: Vec<_> = order.iter().map(|key| sample_event(&source, key)).collect();
            let store = store.clone();
            tasks.push(tokio::spawn(async move { store.ingest(batch).await }));
        }
        let mut stored = 0;
        for task in tasks {
            let outcomes = task.await.expect("task").expect("ingest without a deadlock");
            stored += outcomes.iter().filter(|o| **o == IngestOutcome::Stored).count();
        }
        assert_eq!(stored, 200, "each key stored exactly once");
        let counts = store.source_counts().await.expect("counts");
        let mine = counts.iter().find(|c| c.source == source).expect("counted");
        assert_eq!((mine.events, mine.duplicates), (200, 7 * 200));
    }
}

fn claim(owner: &str, now: UnixMillis, limit: u32) -> ClaimRequest {
    ClaimRequest {
        owner: owner.to_string(),
        now,
        lease: Duration::from_secs(30),
        limit,
    }
}

fn in_a_second() -> UnixMillis {
    UnixMillis(UnixMillis::now().0 + 1000)
}

/// Two stores on one schema, as two gatehouse processes on one database.
async fn two_stores() -> Option<(String, Arc<PostgresStore>, Arc<PostgresStore>)> {
    let url = server_url()?;
    let schema = fresh_schema();
    let a = connect_in(&url, &schema).await.expect("connect a");
    let b = connect_in(&url, &schema).await.expect("connect b");
    Some((schema, Arc::new(a), Arc::new(b)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_one_process_wakes_a_worker_in_another() {
    let Some((_, a, b)) = two_stores().await else { return };
    // The first wait starts B's listening connection and returns once it
    // listens (it looks once for work missed while nobody listened).
    let started = Instant::now();
    b.wait_for_deliveries(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );

    // Nothing committed: the wait runs to its end (other tests' commits, in
    // other schemas, do not wake it).
    let quiet = Duration::from_millis(400);
    let started = Instant::now();
    b.wait_for_deliveries(quiet).await;
    assert!(
        started.elapsed() >= quiet - Duration::from_millis(50),
        "woke after {:?}",
        started.elapsed()
    );

    // An event without deliveries wakes nobody either.
    a.ingest(vec![sample_event(&unique_source("quiet"), "evt_none")])
        .await
        .expect("ingest");
    let started = Instant::now();
    b.wait_for_deliveries(quiet).await;
    assert!(
        started.elapsed() >= quiet - Duration::from_millis(50),
        "woke after {:?}",
        started.elapsed()
    );

    let max_wait = Duration::from_secs(20);
    let waiter = tokio::spawn({
        let b = b.clone();
        async move {
            let started = Instant::now();
            b.wait_for_deliveries(max_wait).await;
            started.elapsed()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let event = event_with_routes(&unique_source("wake"), "evt_wake", &["r"]);
    a.ingest(vec![event.clone()]).await.expect("ingest on A");
    let waited = tokio::time::timeout(max_wait * 2, waiter)
        .await
        .expect("the wait ends")
        .expect("task");
    assert!(waited < Duration::from_secs(5), "B woke only after {waited:?}");
    let claimed = b
        .claim_deliveries(&claim("b", in_a_second(), 10))
        .await
        .expect("claim on B");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].delivery.id, event.deliveries[0].id);

    // A wake-up while nobody waits is kept for the next wait: an operator
    // retry on A, then B waits.
    let finished =
        gatehouse_store::conformance::finished(event.deliveries[0].id, 1, gatehouse_core::AttemptOutcome::Dead, None);
    assert_eq!(
        b.finish_attempts("b", vec![finished]).await.expect("finish"),
        vec![true]
    );
    assert_eq!(
        a.retry_deliveries(&[event.deliveries[0].id], UnixMillis::now())
            .await
            .expect("retry"),
        1
    );
    // Time for the notification to reach B's listener, nobody waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    b.wait_for_deliveries(max_wait).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_claiming_together_never_share_a_delivery() {
    let Some((_, a, b)) = two_stores().await else { return };
    let source = unique_source("two-claimers");
    let events: Vec<_> = (0..300)
        .map(|i| event_with_routes(&source, &format!("e{i}"), &["r1", "r2"]))
        .collect();
    a.ingest(events).await.expect("ingest");

    let mut tasks = Vec::new();
    for worker in 0..8 {
        let store = if worker % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut empty = 0;
            // A claim can come back empty while others hold the rest locked;
            // stop after a few empty ones in a row.
            while empty < 3 {
                let claimed = store
                    .claim_deliveries(&claim(&format!("w{worker}"), in_a_second(), 5))
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    empty += 1;
                    tokio::task::yield_now().await;
                } else {
                    empty = 0;
                }
                for c in claimed {
                    assert_eq!(c.delivery.state, DeliveryState::InFlight);
                    assert_eq!(c.event.summary.id, c.delivery.event_id);
                    mine.push(c.delivery.id);
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "a delivery was claimed twice");
    assert_eq!(all.len(), 600, "every delivery claimed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_skip_rows_locked_elsewhere_without_waiting() {
    let Some(url) = server_url() else { return };
    let schema = fresh_schema();
    let store = connect_in(&url, &schema).await.expect("connect");
    let source = unique_source("skip-locked");
    let events: Vec<_> = (0..4)
        .map(|i| event_with_routes(&source, &format!("e{i}"), &["r"]))
        .collect();
    store.ingest(events.clone()).await.expect("ingest");

    // Another session holds the two oldest deliveries locked, as a claimer
    // in the middle of its statement would.
    let mut other = admin_client(&url_in_schema(&url, &schema)).await;
    let tx = other.transaction().await.expect("begin");
    let locked: Vec<Vec<u8>> = events[..2]
        .iter()
        .map(|e| e.deliveries[0].id.to_bytes().to_vec())
        .collect();
    let rows = tx
        .query("SELECT id FROM deliveries WHERE id = ANY($1) FOR UPDATE", &[&locked])
        .await
        .expect("lock two deliveries");
    assert_eq!(rows.len(), 2);

    let claimed = tokio::time::timeout(
        Duration::from_secs(5),
        store.claim_deliveries(&claim("w", in_a_second(), 10)),
    )
    .await
    .expect("the claim does not wait for the locks")
    .expect("claim");
    let ids: Vec<_> = claimed.iter().map(|c| c.delivery.id).collect();
    assert_eq!(ids, vec![events[2].deliveries[0].id, events[3].deliveries[0].id]);

    tx.rollback().await.expect("rollback");
    let claimed = store
        .claim_deliveries(&claim("w", in_a_second(), 10))
        .await
        .expect("claim");
    let ids: Vec<_> = claimed.iter().map(|c| c.delivery.id).collect();
    assert_eq!(ids, vec![events[0].deliveries[0].id, events[1].deliveries[0].id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_a_batch_records_each_attempt_once() {
    use gatehouse_core::AttemptOutcome;
    use gatehouse_store::conformance::finished;

    let Some(store) = make_store().await else { return };
    let source = unique_source("finish-batch");
    let events: Vec<_> = (0..3)
        .map(|i| event_with_routes(&source, &format!("e{i}"), &["r"]))
        .collect();
    store.ingest(events.clone()).await.expect("ingest");
    let ids: Vec<_> = events.iter().map(|e| e.deliveries[0].id).collect();
    assert_eq!(
        store
            .claim_deliveries(&claim("w", in_a_second(), 10))
            .await
            .expect("claim")
            .len(),
        3
    );

    let retry_at = UnixMillis(UnixMillis::now().0 + 60_000);
    let mut skipped = finished(ids[2], 1, AttemptOutcome::Skipped, None);
    skipped.attempt.error = Some("filter excluded the event".into());
    skipped.attempt.status_code = None;
    let batch = vec![
        finished(ids[0], 1, AttemptOutcome::Retry, Some(retry_at)),
        finished(ids[1], 1, AttemptOutcome::Succeeded, None),
        // The same delivery again: already settled by the line above.
        finished(ids[1], 1, AttemptOutcome::Dead, None),
        skipped.clone(),
        // Not held by this owner (it does not exist at all).
        finished(gatehouse_core::DeliveryId::new(), 1, AttemptOutcome::Succeeded, None),
    ];
    assert_eq!(
        store.finish_attempts("w", batch.clone()).await.expect("finish"),
        vec![true, true, false, true, false]
    );
    let first = store.delivery(ids[0]).await.expect("read").expect("exists");
    assert_eq!(
        (first.state, first.next_attempt_at, first.attempts),
        (DeliveryState::Retrying, retry_at, 1)
    );
    let second = store.delivery(ids[1]).await.expect("read").expect("exists");
    assert_eq!(
        (second.state, second.attempts, second.last_error),
        (DeliveryState::Succeeded, 1, None)
    );
    let third = store.delivery(ids[2]).await.expect("read").expect("exists");
    assert_eq!(third.state, DeliveryState::Skipped);
    assert_eq!(third.last_error.as_deref(), Some("filter excluded the event"));
    assert_eq!(
        store.attempts(ids[1]).await.expect("attempts"),
        vec![batch[1].attempt.clone()]
    );
    assert_eq!(store.attempts(ids[2]).await.expect("attempts"), vec![skipped.attempt]);
    assert_eq!(
        store.finish_attempts("w", Vec::new()).await.expect("finish"),
        Vec::<bool>::new()
    );

    // Released deliveries go back to the state they were claimed from.
    let again = store
        .claim_deliveries(&claim("w", UnixMillis(retry_at.0 + 1), 10))
        .await
        .expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery.attempts, 1);
    store.release_deliveries("other", &[ids[0]]).await.expect("release");
    assert_eq!(
        store.delivery(ids[0]).await.expect("read").expect("exists").state,
        DeliveryState::InFlight
    );
    store.release_deliveries("w", &[ids[0]]).await.expect("release");
    let released = store.delivery(ids[0]).await.expect("read").expect("exists");
    assert_eq!((released.state, released.attempts), (DeliveryState::Retrying, 1));
    assert!(released.next_attempt_at <= UnixMillis::now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listening_connection_comes_back_after_an_outage() {
    let Some(url) = server_url() else { return };
    let schema = fresh_schema();
    let Some((proxy, worker)) = store_behind_a_proxy(&url, &schema).await else {
        return;
    };
    let writer = connect_in(&url, &schema).await.expect("connect the writer");
    let started = Instant::now();
    worker.wait_for_deliveries(Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "listening took {:?}",
        started.elapsed()
    );

    // The listening connection is cut and cannot come back: waits run to
    // their end, and nothing fails.
    proxy.go_down();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let event = event_with_routes(&unique_source("outage-listen"), "evt_1", &["r"]);
    writer.ingest(vec![event]).await.expect("ingest");
    let quiet = Duration::from_millis(500);
    let started = Instant::now();
    worker.wait_for_deliveries(quiet).await;
    assert!(
        started.elapsed() >= quiet - Duration::from_millis(50),
        "woke after {:?}",
        started.elapsed()
    );

    // Back: the listener reconnects by itself (with backoff) and looks once
    // for work it may have missed.
    proxy.come_back();
    let started = Instant::now();
    worker.wait_for_deliveries(Duration::from_secs(20)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "reconnecting took {:?}",
        started.elapsed()
    );

    // And it hears commits again.
    let waiter = tokio::spawn(async move {
        let started = Instant::now();
        worker.wait_for_deliveries(Duration::from_secs(20)).await;
        started.elapsed()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let event = event_with_routes(&unique_source("outage-listen"), "evt_2", &["r"]);
    writer.ingest(vec![event]).await.expect("ingest");
    let waited = waiter.await.expect("task");
    assert!(waited < Duration::from_secs(5), "woke only after {waited:?}");
}

/// The test server's own certificate file (`ssl_cert_file`), which a
/// client can trust as its root: the server must have `ssl = on`.
async fn server_certificate(url: &str) -> String {
    let client = admin_client(url).await;
    let ssl: String = client.query_one("SHOW ssl", &[]).await.expect("SHOW ssl").get(0);
    assert_eq!(
        ssl, "on",
        "the test server must accept TLS (ssl = on, as Debian's PostgreSQL is set up) for the TLS tests"
    );
    client
        .query_one("SHOW ssl_cert_file", &[])
        .await
        .expect("SHOW ssl_cert_file")
        .get(0)
}

/// `url` (the URL form) with its host replaced by `host`.
fn with_host(url: &str, host: &str) -> String {
    let parsed: tokio_postgres::Config = url.parse().expect("test URL");
    let Some(Host::Tcp(current)) = parsed.get_hosts().first() else {
        panic!("the TLS tests need a TCP host in {URL_VAR}");
    };
    url.replacen(&format!("@{current}"), &format!("@{host}"), 1)
}

/// `url` with `sslmode` and, if given, `sslrootcert`.
fn with_tls(url: &str, mode: &str, root: Option<&str>) -> String {
    let url = with_param(url, "sslmode", mode);
    match root {
        Some(root) => with_param(&url, "sslrootcert", root),
        None => url,
    }
}

/// A store in a new schema, connecting through `tls_url` (the schema is
/// made over a plain connection to `url`).
async fn connect_tls(url: &str, tls_url: &str) -> Result<PostgresStore, StoreError> {
    let schema = fresh_schema();
    create_schema(url, &schema).await;
    PostgresStore::connect(&url_in_schema(tls_url, &schema), options()).await
}

/// How many of the server's connections with this `application_name` use
/// TLS, and how many there are.
async fn tls_connections(url: &str, application: &str) -> (i64, i64) {
    let row = admin_client(url)
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
            &[&application],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_with_the_servers_certificate_encrypts_every_connection() {
    let Some(url) = server_url() else { return };
    let certificate = server_certificate(&url).await;
    let application = format!("gatehouse-tls-{}", fresh_schema());
    let tls_url = with_param(
        &with_tls(&url, "verify-ca", Some(&certificate)),
        "application_name",
        &application,
    );
    let store = connect_tls(&url, &tls_url)
        .await
        .expect("TLS connect with the server's certificate as root");
    // The listening connection too: the first wait starts it.
    store.wait_for_deliveries(Duration::from_millis(200)).await;
    let stored = store
        .ingest(vec![event_with_routes(&unique_source("tls"), "evt_tls", &["r"])])
        .await
        .expect("ingest over TLS");
    assert!(matches!(stored[..], [IngestOutcome::Stored]), "{stored:?}");
    let (encrypted, total) = tls_connections(&url, &application).await;
    assert!(total >= 2, "the pool's connection and the listener's: {total}");
    assert_eq!(encrypted, total, "every connection of the store uses TLS");

    // Without sslmode, for contrast: plain, so the check above can fail.
    let plain = format!("{application}-plain");
    let plain_store = connect_tls(&url, &with_param(&url, "application_name", &plain))
        .await
        .expect("plain connect");
    let (encrypted, total) = tls_connections(&url, &plain).await;
    assert_eq!((encrypted, total), (0, 1));
    drop((store, plain_store));
}

#[tokio::test]
async fn verify_full_checks_the_host_name_in_the_certificate() {
    let Some(url) = server_url() else { return };
    let certificate = server_certificate(&url).await;
    // Debian's certificate names `localhost` only.
    let tls_url = with_tls(&with_host(&url, "localhost"), "verify-full", Some(&certificate));
    connect_tls(&url, &tls_url)
        .await
        .expect("the certificate names localhost");
    let by_address = with_tls(&with_host(&url, "127.0.0.1"), "verify-full", Some(&certificate));
    let text = connect_tls(&url, &by_address)
        .await
        .expect_err("the certificate does not name 127.0.0.1")
        .to_string();
    assert!(
        text.contains("not valid for name") && text.contains("sslrootcert"),
        "{text}"
    );
    // verify-ca takes the same certificate whatever the host is called.
    let chain_only = with_tls(&with_host(&url, "127.0.0.1"), "verify-ca", Some(&certificate));
    connect_tls(&url, &chain_only)
        .await
        .expect("verify-ca skips the host name");
}

#[tokio::test]
async fn require_refuses_a_certificate_no_trusted_root_signed() {
    let Some(url) = server_url() else { return };
    server_certificate(&url).await;
    let unrelated = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/unrelated-ca.pem");
    for mode in ["require", "verify-ca", "verify-full"] {
        let started = Instant::now();
        let text = connect_tls(&url, &with_tls(&with_host(&url, "localhost"), mode, Some(unrelated)))
            .await
            .expect_err("the server's certificate is not signed by the unrelated CA")
            .to_string();
        assert!(
            text.contains("UnknownIssuer") && text.contains("sslrootcert=/path/to/root.pem"),
            "{mode}: {text}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn an_unknown_sslmode_or_a_missing_root_file_is_refused_before_connecting() {
    for (url, expected) in [
        ("postgres://u:hunter2@127.0.0.1:1/db?sslmode=verify", "sslmode `verify`"),
        (
            "postgres://u:hunter2@127.0.0.1:1/db?sslmode=verify-full&sslrootcert=/nonexistent/root.pem",
            "/nonexistent/root.pem",
        ),
    ] {
        let err = PostgresStore::connect(url, options()).await.expect_err("refused");
        let text = err.to_string();
        assert!(!err.is_unavailable(), "a configuration error, not an outage: {err:?}");
        assert!(text.contains(expected) && !text.contains("hunter2"), "{text}");
    }
}
