//! The shared storage conformance suite on PostgreSQL, then the checks only
//! PostgreSQL needs: connect failures, migrations, a server going away, big
//! batches.
//!
//! These tests need a server: set `GATEHOUSE_TEST_POSTGRES_URL`, e.g.
//! `postgres://postgres@127.0.0.1:5432/test`. Without it, every test that
//! needs the server writes `SKIPPED: …` to stderr and passes.
//!
//! Each run of this binary works in a schema of its own,
//! `gh_test_<unix seconds>_<pid>` (found through `search_path`), so reruns
//! start from an empty schema and never see a previous run's rows; the
//! checks that need a brand-new database use a further schema each. Runs
//! leave their schemas behind for inspection, and the next run drops any
//! older than an hour.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_store::conformance::{sample_event, unique_source};
use gatehouse_store::{IngestOutcome, Store, StoreError};
use gatehouse_store_postgres::{PostgresOptions, PostgresStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

const URL_VAR: &str = "GATEHOUSE_TEST_POSTGRES_URL";

/// Serialises schema creation and clean-up between concurrent tests.
const SCHEMA_LOCK_KEY: i64 = 0x6768_5f74_6573_7473;

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

/// This run's schema.
fn run_schema() -> &'static str {
    static SCHEMA: OnceLock<String> = OnceLock::new();
    SCHEMA.get_or_init(|| format!("gh_test_{}_{}", unix_secs(), std::process::id()))
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

/// Creates `schema` if needed, dropping test schemas older than an hour.
async fn create_schema(url: &str, schema: &str) {
    let mut client = admin_client(url).await;
    let tx = client.transaction().await.expect("begin");
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])
        .await
        .expect("lock");
    let stale = tx
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'gh\\_test\\_%'",
            &[],
        )
        .await
        .expect("list test schemas");
    for row in stale {
        let name: String = row.get(0);
        let created: Option<u64> = name.split('_').nth(2).and_then(|secs| secs.parse().ok());
        if created.is_some_and(|secs| secs + 3600 < unix_secs()) {
            tx.batch_execute(&format!("DROP SCHEMA \"{name}\" CASCADE"))
                .await
                .expect("drop a stale test schema");
        }
    }
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await
        .expect("create the test schema");
    tx.commit().await.expect("commit");
}

async fn connect_in(url: &str, schema: &str) -> Result<PostgresStore, StoreError> {
    create_schema(url, schema).await;
    PostgresStore::connect(&url_in_schema(url, schema), options()).await
}

/// A store in this run's schema, or `None` when no server is configured.
async fn make_store() -> Option<Arc<dyn Store>> {
    let url = server_url()?;
    let store = connect_in(&url, run_schema()).await.expect("connect");
    Some(Arc::new(store))
}

gatehouse_store::conformance_tests!(optional: make_store());

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
    let schema = format!("{}_idempotent", run_schema());
    let first = connect_in(&url, &schema).await.expect("first connect");
    let event = sample_event(&unique_source("idem"), "evt_1");
    first.ingest(vec![event.clone()]).await.expect("ingest");
    drop(first);

    let second = connect_in(&url, &schema).await.expect("second connect");
    assert!(second.event(event.id).await.expect("read").is_some(), "data survives");
    assert_eq!(migration_versions(&url, &schema).await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_migrate_once() {
    let Some(url) = server_url() else { return };
    let schema = format!("{}_race", run_schema());
    create_schema(&url, &schema).await;
    let in_schema = url_in_schema(&url, &schema);
    let connects = (0..4).map(|_| {
        let url = in_schema.clone();
        tokio::spawn(async move { PostgresStore::connect(&url, options()).await })
    });
    for connect in connects.collect::<Vec<_>>() {
        connect.await.expect("task").expect("connect");
    }
    assert_eq!(migration_versions(&url, &schema).await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let Some(url) = server_url() else { return };
    let schema = format!("{}_newer", run_schema());
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
                supported: 1
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_goes_away_is_unavailable_then_recovers() {
    let Some(url) = server_url() else { return };
    create_schema(&url, run_schema()).await;
    let config: tokio_postgres::Config = url.parse().expect("a valid test URL");
    let (Some(Host::Tcp(host)), port) = (config.get_hosts().first(), config.get_ports().first()) else {
        assert!(
            std::env::var_os("GATEHOUSE_REQUIRE_POSTGRES").is_none(),
            "the database-outage test needs a TCP host in the test URL"
        );
        let line = "SKIPPED: the database-outage test needs a TCP host in the test URL\n";
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    };
    let proxy = Proxy::start((host.clone(), port.copied().unwrap_or(5432))).await;

    let quote = |value: &str| format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
    let mut through_proxy = format!(
        "host=127.0.0.1 port={} options={}",
        proxy.port,
        quote(&format!("-c search_path={}", run_schema()))
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
