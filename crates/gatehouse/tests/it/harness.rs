//! The test harness: writes a config, spawns `gatehouse serve` on port 0,
//! reads the port from its first stdout line, and sends requests over a real
//! socket. A [`Database`] is a fresh SQLite file or a fresh PostgreSQL schema
//! behind a TCP proxy the test can cut to simulate the database going down.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use gatehouse_store::Store;

/// Declares each check once per backend: `sqlite::check` and
/// `postgres::check`, the latter skipped loudly without a PostgreSQL URL.
macro_rules! on_both_backends {
    ($($check:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let db = crate::harness::Database::fresh(crate::harness::Backend::Sqlite, stringify!($check)).await.expect("sqlite");
                    super::$check(db).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(db) = crate::harness::Database::fresh(crate::harness::Backend::Postgres, stringify!($check)).await else {
                        return;
                    };
                    super::$check(db).await;
                }
            )+
        }
    };
}

pub const STRIPE_SECRET: &str = "whsec_integration_test_secret";
pub const GITHUB_SECRET: &str = "It's a Secret to Everybody";

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL URL from the environment, or a loud skip notice.
pub fn postgres_url(test: &str) -> Option<String> {
    match std::env::var("GATEHOUSE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("GATEHOUSE_REQUIRE_POSTGRES").is_some() => {
            panic!("{test}: GATEHOUSE_REQUIRE_POSTGRES is set but GATEHOUSE_TEST_POSTGRES_URL is not")
        }
        _ => {
            // Written straight to the stderr handle, which the test harness
            // does not capture, so the skip shows even when the test passes.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test}: GATEHOUSE_TEST_POSTGRES_URL is not set; this PostgreSQL test did not run"
            );
            None
        }
    }
}

/// A fresh database for one test.
pub struct Database {
    pub backend: Backend,
    /// The URL gatehouse is configured with.
    pub url: String,
    /// SQLite: the file. PostgreSQL: none.
    pub sqlite_path: Option<PathBuf>,
    /// PostgreSQL: the proxy between gatehouse and the server.
    proxy: Option<Proxy>,
    _dir: tempfile::TempDir,
}

impl Database {
    /// A fresh database, or `None` when PostgreSQL is not configured.
    pub async fn fresh(backend: Backend, test: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => {
                let path = dir.path().join("gatehouse.db");
                Some(Self {
                    backend,
                    url: format!("sqlite://{}", path.display()),
                    sqlite_path: Some(path),
                    proxy: None,
                    _dir: dir,
                })
            }
            Backend::Postgres => {
                let base = postgres_url(test)?;
                let schema = format!("it_{}", gatehouse_core::EventId::new().to_string().to_lowercase());
                let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
                    .await
                    .expect("connect to PostgreSQL");
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("CREATE SCHEMA {schema}"))
                    .await
                    .expect("create schema");
                let upstream = postgres_addr(&base);
                let proxy = Proxy::start(upstream).await;
                let url = with_host_and_schema(&base, proxy.addr, &schema);
                Some(Self {
                    backend,
                    url,
                    sqlite_path: None,
                    proxy: Some(proxy),
                    _dir: dir,
                })
            }
        }
    }

    /// A store on the same database, for checking what was committed.
    pub async fn open_store(&self) -> Arc<dyn Store> {
        match self.backend {
            Backend::Sqlite => Arc::new(
                gatehouse_store_sqlite::SqliteStore::open(
                    self.sqlite_path.as_ref().expect("sqlite path"),
                    Default::default(),
                )
                .expect("open sqlite"),
            ),
            Backend::Postgres => Arc::new(
                gatehouse_store_postgres::PostgresStore::connect(&self.url, Default::default())
                    .await
                    .expect("connect postgres"),
            ),
        }
    }

    /// Makes the database unavailable to gatehouse until the returned guard
    /// is dropped: SQLite by holding an exclusive lock from this process,
    /// PostgreSQL by cutting the proxy.
    pub async fn make_unavailable(&mut self) -> Outage {
        match self.backend {
            Backend::Sqlite => {
                let conn = rusqlite::Connection::open(self.sqlite_path.as_ref().expect("sqlite path")).expect("open");
                conn.execute_batch("BEGIN EXCLUSIVE").expect("lock");
                Outage::Sqlite(conn)
            }
            Backend::Postgres => {
                let proxy = self.proxy.as_mut().expect("proxy");
                proxy.cut();
                Outage::Postgres
            }
        }
    }

    /// Ends an outage.
    pub async fn restore(&mut self, outage: Outage) {
        match outage {
            Outage::Sqlite(conn) => {
                conn.execute_batch("ROLLBACK").expect("unlock");
            }
            Outage::Postgres => {
                let proxy = self.proxy.as_mut().expect("proxy");
                proxy.resume().await;
            }
        }
    }
}

/// An ongoing simulated outage.
pub enum Outage {
    Sqlite(rusqlite::Connection),
    Postgres,
}

fn postgres_addr(url: &str) -> SocketAddr {
    let config: tokio_postgres::Config = url.parse().expect("postgres url");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    let host = if host == "localhost" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}").parse().expect("postgres address")
}

/// The base URL pointed at the proxy, with the test's schema as search path.
fn with_host_and_schema(base: &str, proxy: SocketAddr, schema: &str) -> String {
    let config: tokio_postgres::Config = base.parse().expect("postgres url");
    let user = config.get_user().unwrap_or("postgres");
    let database = config.get_dbname().unwrap_or("test");
    format!("postgres://{user}@{proxy}/{database}?options=-csearch_path%3D{schema}")
}

/// A TCP proxy to PostgreSQL that can be cut (every connection dropped, new
/// ones refused) and resumed on the same port.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let mut proxy = Self {
            addr,
            upstream,
            task: None,
        };
        proxy.task = Some(tokio::spawn(Self::accept_loop(listener, upstream)));
        proxy
    }

    async fn accept_loop(listener: TcpListener, upstream: SocketAddr) {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            connections.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
        // Dropping the JoinSet (when this task is aborted) aborts every
        // connection task, closing both sockets.
    }

    fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    async fn resume(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot rebind the proxy: {e}"),
            }
        };
        self.task = Some(tokio::spawn(Self::accept_loop(listener, self.upstream)));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A running `gatehouse serve` process.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// `http`, or `https` under `server.tls`.
    pub scheme: &'static str,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// The config used by most tests: a Stripe source subscribed to
/// `payment_intent.*` with a 1 KiB body limit, and a GitHub source.
pub fn standard_sources() -> String {
    format!(
        r#"
[[sources]]
name = "stripe"
provider = "stripe"
secrets = ["whsec_old_rotated_out", "{STRIPE_SECRET}"]
events = ["payment_intent.*"]
body_limit = "1KiB"

[[sources]]
name = "github"
provider = "github"
secrets = ["{GITHUB_SECRET}"]
"#
    )
}

impl Server {
    /// Starts `gatehouse serve` on `database` with these `[[sources]]`.
    pub fn start(database: &Database, sources: &str) -> Self {
        Self::start_with_env(database, sources, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(database: &Database, sources: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("gatehouse.toml");
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ncommit_timeout = \"3s\"\n\n[storage]\nurl = \"{}\"\nbusy_timeout = \"200ms\"\n{sources}",
            database.url
        );
        std::fs::write(&config_path, config).expect("write config");
        Self::spawn_with_env(config_path, dir, env)
    }

    /// Starts `gatehouse serve --config path`.
    pub fn spawn(config_path: PathBuf, dir: tempfile::TempDir) -> Self {
        Self::spawn_with_env(config_path, dir, &[])
    }

    /// Starts `gatehouse serve --config path` with extra environment variables.
    pub fn spawn_with_env(config_path: PathBuf, dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .envs(env.iter().copied())
            .env("GATEHOUSE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gatehouse");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (scheme, addr) = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("gatehouse listening on http://") {
                        break ("http", rest.trim().parse().expect("address"));
                    }
                    if let Some(rest) = line.strip_prefix("gatehouse listening on https://") {
                        break ("https", rest.trim().parse().expect("address"));
                    }
                }
                _ => {
                    let status = child.wait().expect("wait");
                    panic!("gatehouse exited before listening: {status}");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            addr,
            scheme,
            config_path,
            _dir: dir,
        }
    }

    /// The URL of a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Stops the process with SIGKILL (no graceful anything).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request.
pub async fn send(method: &str, url: &str, headers: &[(&str, String)], body: impl Into<Bytes>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request.body(Full::new(body.into())).expect("request");
    Answer::read(client.request(request).await.expect("send request")).await
}

impl Answer {
    /// Reads a whole response.
    pub async fn read(response: hyper::Response<hyper::body::Incoming>) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        Self {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// POSTs a GitHub delivery signed with [`GITHUB_SECRET`] to the `github`
/// source.
pub async fn send_github_event(server: &Server, event: &str, delivery: &str, body: &str) -> Answer {
    let signature = gatehouse_verify::providers::github::sign(GITHUB_SECRET.as_bytes(), body.as_bytes());
    send(
        "POST",
        &server.url("/in/github"),
        &[
            ("x-hub-signature-256", signature),
            ("x-github-event", event.into()),
            ("x-github-delivery", delivery.into()),
        ],
        body.to_string(),
    )
    .await
}

/// A Stripe event body.
pub fn stripe_body(id: &str, event_type: &str) -> String {
    format!(r#"{{"id":"{id}","object":"event","type":"{event_type}","data":{{"object":{{"id":"pi_1"}}}}}}"#)
}

/// The Stripe-Signature header for `body` signed now with `secret`.
pub fn stripe_signature(secret: &str, body: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    gatehouse_verify::providers::stripe::sign(secret.as_bytes(), now, body.as_bytes())
}

/// POSTs a correctly signed Stripe event.
pub async fn send_stripe(server: &Server, id: &str, event_type: &str) -> Answer {
    let body = stripe_body(id, event_type);
    let signature = stripe_signature(STRIPE_SECRET, &body);
    send(
        "POST",
        &server.url("/in/stripe"),
        &[
            ("stripe-signature", signature),
            ("content-type", "application/json".into()),
        ],
        body,
    )
    .await
}

/// POSTs `body` signed as Stripe would; returns the answer.
pub async fn send_stripe_body(server: &Server, body: &str) -> Answer {
    let signature = stripe_signature(STRIPE_SECRET, body);
    send(
        "POST",
        &server.url("/in/stripe"),
        &[
            ("stripe-signature", signature),
            ("content-type", "application/json".into()),
        ],
        body.to_string(),
    )
    .await
}

/// Runs the `gatehouse` binary with `args`; returns success, stdout, stderr.
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .args(args)
        .env("GATEHOUSE_LOG", "warn")
        .output()
        .expect("run gatehouse");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `check` every 20 ms until it returns `Some`, or panics naming
/// `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How the sink answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// Wait this long before answering.
    pub delay: Duration,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

/// One request the sink received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived (before any scripted delay).
    pub at: Instant,
    pub method: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `webhook-id` header.
    pub fn webhook_id(&self) -> String {
        self.header("webhook-id").unwrap_or_default().to_string()
    }

    /// Whether the Standard Webhooks signature verifies with `secret`.
    pub fn verifies(&self, secret: &str) -> bool {
        use gatehouse_verify::providers::standard_webhooks;
        let Some(key) = standard_webhooks::decode_secret(secret.as_bytes()) else {
            return false;
        };
        let signed = standard_webhooks::SignedHeaders {
            names: standard_webhooks::WEBHOOK_HEADERS,
            id: self.header("webhook-id"),
            timestamp: self.header("webhook-timestamp"),
            signature: self.header("webhook-signature"),
        };
        standard_webhooks::verify(
            &signed,
            &self.body,
            &[gatehouse_verify::util::keyed_sha256(&key)],
            gatehouse_core::UnixMillis::now(),
            standard_webhooks::DEFAULT_TOLERANCE,
        )
        .is_ok()
    }
}

#[derive(Default)]
struct SinkState {
    script: std::sync::Mutex<std::collections::VecDeque<Reply>>,
    default: std::sync::Mutex<Option<Reply>>,
    received: std::sync::Mutex<Vec<Received>>,
}

/// A recording HTTP receiver on 127.0.0.1:0. Each request takes the next
/// scripted reply, or the default (200 unless set); the script can change
/// mid-test.
#[derive(Clone)]
pub struct Sink {
    pub url: String,
    state: Arc<SinkState>,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Sink {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sink");
        let url = format!("http://{}/hooks", listener.local_addr().expect("sink addr"));
        let state = Arc::new(SinkState::default());
        let serving = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = serving.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let at = Instant::now();
                            let (parts, body) = request.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            state.received.lock().expect("lock").push(Received {
                                at,
                                method: parts.method.to_string(),
                                headers: parts.headers,
                                body,
                            });
                            let next = state.script.lock().expect("lock").pop_front();
                            let reply = next
                                .or_else(|| state.default.lock().expect("lock").clone())
                                .unwrap_or(Reply::status(200));
                            tokio::time::sleep(reply.delay).await;
                            let mut response = hyper::Response::builder().status(reply.status);
                            for (name, value) in &reply.headers {
                                response = response.header(*name, value);
                            }
                            Ok::<_, std::convert::Infallible>(
                                response.body(Full::new(Bytes::from_static(b"ok"))).expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            state,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// Queues replies for the next requests.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().expect("lock").extend(replies);
    }

    /// The reply once the script is used up.
    pub fn answer_by_default(&self, reply: Reply) {
        *self.state.default.lock().expect("lock") = Some(reply);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    /// Waits until at least `count` requests arrived; returns them all.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Received> {
        eventually(&format!("the sink received {count} requests"), limit, || async {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
        .await
    }
}
