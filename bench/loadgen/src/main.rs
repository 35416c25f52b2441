//! `gatehouse-loadgen`: the benchmark tools for gatehouse's ingest path.
//!
//! Four subcommands:
//!
//! - `loadgen` drives HTTP/1.1 keep-alive load at a URL: one connection per
//!   concurrent worker, every request a distinct ~1 KB Stripe event signed
//!   exactly as Stripe signs it. It records each request's latency in an HDR
//!   histogram, counts status codes, and prints a summary (or one JSON line).
//! - `bare` is a minimal hyper server that reads each body and answers 200: the
//!   machine's reference limit, run in the same benchmark as gatehouse.
//! - `e2e` measures delivery latency end to end: in one process, a local sink
//!   (the destination gatehouse delivers to) and a paced sender of signed
//!   events; each event's latency is the time from its ingest ack to its
//!   arrival at the sink, both read from the same monotonic clock.
//! - `sink` is the counting sink alone, for delivery throughput: it counts
//!   distinct `webhook-id`s and duplicates and reports arrivals per second.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::{TcpListener, TcpStream};

/// HMAC-SHA256, the MAC Stripe signs with.
type HmacSha256 = Hmac<Sha256>;

/// The command line.
#[derive(Debug, Parser)]
#[command(
    name = "gatehouse-loadgen",
    about = "Benchmark tools for gatehouse's ingest and delivery paths"
)]
struct Cli {
    /// Tokio worker threads (default: one per CPU).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// What to run.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Send signed Stripe events to a URL and measure throughput and latency.
    Loadgen(LoadArgs),
    /// Run a minimal HTTP/1 server that answers 200 to everything.
    Bare(BareArgs),
    /// Measure delivery latency: ingest ack to arrival at a local sink.
    E2e(E2eArgs),
    /// Run a local sink that counts deliveries by `webhook-id`.
    Sink(SinkArgs),
}

/// Options of `loadgen`.
#[derive(Debug, Args)]
struct LoadArgs {
    /// Where to POST, e.g. `http://127.0.0.1:8080/in/stripe` (plain HTTP only).
    #[arg(long)]
    url: String,
    /// The source's Stripe signing secret, `whsec_…`; the whole string is the HMAC key.
    #[arg(long, env = "GATEHOUSE_BENCH_SECRET")]
    secret: String,
    /// Concurrent workers, each with its own keep-alive connection.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to send for, e.g. `10s`, `500ms`, `2m` (ignored with `--requests`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Send exactly this many requests instead of running for `--duration`.
    #[arg(long)]
    requests: Option<u64>,
    /// Target total request rate (req/s), paced evenly over the workers;
    /// default: as fast as the server answers.
    #[arg(long)]
    rate: Option<f64>,
    /// Size of each request body in bytes (a smaller value gives the smallest
    /// realistic event, about 900 bytes).
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Print one JSON line instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Exit 0 even if some requests failed or were answered non-2xx.
    #[arg(long)]
    allow_errors: bool,
}

/// Options of `bare`.
#[derive(Debug, Args)]
struct BareArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

/// Options of `e2e`.
#[derive(Debug, Args)]
struct E2eArgs {
    /// Where to POST, e.g. `http://127.0.0.1:8080/in/stripe` (plain HTTP only).
    #[arg(long)]
    url: String,
    /// The source's Stripe signing secret, `whsec_…`; the whole string is the HMAC key.
    #[arg(long, env = "GATEHOUSE_BENCH_SECRET")]
    secret: String,
    /// Address the sink listens on: the destination URL gatehouse delivers
    /// to must point here (any path).
    #[arg(long)]
    sink_listen: SocketAddr,
    /// Events sent per second, paced evenly over the workers.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long to send for, e.g. `10s`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// After the last ack, how long to wait at most for the missing deliveries.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    drain: Duration,
    /// Sending workers, each with its own keep-alive connection; a worker
    /// waits for each ack, so this bounds the rate to concurrency / ack time.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Size of each request body in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Print one JSON line instead of the human summary.
    #[arg(long)]
    json: bool,
    /// Exit 0 even if requests failed or deliveries are missing.
    #[arg(long)]
    allow_errors: bool,
}

/// Options of `sink`.
#[derive(Debug, Args)]
struct SinkArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Stop after this long (default: at SIGINT or SIGTERM, or `--expect`).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Stop once this many distinct `webhook-id`s have arrived.
    #[arg(long)]
    expect: Option<u64>,
    /// With `--expect`: keep counting this long after the last expected
    /// arrival, to catch late duplicates.
    #[arg(long, value_parser = parse_duration)]
    linger: Option<Duration>,
    /// Print one JSON line instead of the human summary.
    #[arg(long)]
    json: bool,
}

/// Parses `10s`, `250ms`, `2m`, `1h` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {text:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} (use ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("duration must be positive: {text:?}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Entry point: parses arguments, builds the runtime, maps errors to exit codes.
fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Builds a multi-threaded runtime and runs the chosen subcommand on it.
fn run(cli: Cli) -> Result<ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = cli.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.build().context("building the tokio runtime")?;
    match cli.command {
        Command::Loadgen(args) => runtime.block_on(load(args)),
        Command::Bare(args) => runtime.block_on(bare(args)).map(|()| ExitCode::SUCCESS),
        Command::E2e(args) => runtime.block_on(e2e(args)),
        Command::Sink(args) => runtime.block_on(sink(args)),
    }
}

// ---------------------------------------------------------------------------
// Stripe events and signatures
// ---------------------------------------------------------------------------

/// Length of the unique part of an event id (`evt_` + 24 characters, as Stripe's).
const ID_LEN: usize = 24;

/// A realistic `payment_intent.succeeded` event with placeholders for the id
/// and the creation time, padded to the requested size. Each request copies
/// the bytes and overwrites the placeholders in place, so building a body
/// costs one 1 KB copy.
#[derive(Clone, Debug)]
struct EventTemplate {
    /// The body with placeholder id and time.
    bytes: Vec<u8>,
    /// Offsets where the 24-character unique id is written (event and payment intent).
    id_at: [usize; 2],
    /// Offset of the 10-digit `created` Unix time.
    created_at: usize,
}

impl EventTemplate {
    /// Builds a template whose bodies are `size` bytes long, or the smallest
    /// realistic event if `size` is smaller than that.
    fn new(size: usize) -> Self {
        const ID: &str = "000000000000000000000000";
        const CREATED: &str = "1700000000";
        let head = format!(
            concat!(
                r#"{{"id":"evt_{id}","object":"event","api_version":"2024-06-20","created":{created},"#,
                r#""data":{{"object":{{"id":"pi_{id}","object":"payment_intent","amount":2000,"#,
                r#""amount_capturable":0,"amount_received":2000,"capture_method":"automatic","#,
                r#""confirmation_method":"automatic","currency":"usd","customer":"cus_PqR5tU7vW9xY1z","#,
                r#""description":""#
            ),
            id = ID,
            created = CREATED
        );
        let tail = concat!(
            r#"","livemode":false,"metadata":{"order_id":"ord_83921","channel":"web"},"#,
            r#""payment_method":"pm_1OaBcDeFgHiJkLmNoPqRsTuV","payment_method_types":["card"],"#,
            r#""receipt_email":"jenny.rosen@example.com","status":"succeeded"}},"livemode":false,"#,
            r#""pending_webhooks":1,"request":{"id":"req_a1b2c3d4e5f6g7","#,
            r#""idempotency_key":"b3f1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d"},"type":"payment_intent.succeeded"}"#
        );
        let filler = b"Thanks for your order! Items ship within two business days. ";
        let pad = size.saturating_sub(head.len() + tail.len());
        let mut bytes = Vec::with_capacity(head.len() + pad + tail.len());
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend(filler.iter().cycle().take(pad));
        bytes.extend_from_slice(tail.as_bytes());
        let evt = head.find("evt_").map_or(0, |at| at + 4);
        let pi = head.find("\"pi_").map_or(0, |at| at + 4);
        let created_at = head.find(CREATED).unwrap_or(0);
        Self {
            bytes,
            id_at: [evt, pi],
            created_at,
        }
    }

    /// The body for request `seq` of worker `worker` in run `run`, created at `unix`.
    fn render(&self, run: u32, worker: u16, seq: u64, unix: u64) -> Vec<u8> {
        let mut body = self.bytes.clone();
        let mut id = [0u8; ID_LEN];
        write_hex(&mut id[0..8], u64::from(run));
        write_hex(&mut id[8..12], u64::from(worker));
        write_hex(&mut id[12..24], seq);
        for at in self.id_at {
            body[at..at + ID_LEN].copy_from_slice(&id);
        }
        write_decimal(&mut body[self.created_at..self.created_at + 10], unix);
        body
    }
}

/// Writes the low digits of `value` as fixed-width lower-case hex into `out`.
fn write_hex(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// Writes the low digits of `value` as fixed-width decimal into `out`.
fn write_decimal(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Signs bodies as Stripe does: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
/// where the key is the secret's UTF-8 bytes including the `whsec_` prefix.
#[derive(Clone)]
struct StripeSigner {
    /// The MAC with the key already absorbed; cloned for each signature.
    keyed: HmacSha256,
}

impl StripeSigner {
    /// Prepares a signer for `secret`.
    fn new(secret: &str) -> Result<Self> {
        let keyed = HmacSha256::new_from_slice(secret.as_bytes()).context("HMAC key")?;
        Ok(Self { keyed })
    }

    /// The `Stripe-Signature` header value for `body` signed at Unix time `t`.
    fn header(&self, t: u64, body: &[u8]) -> String {
        let mut mac = self.keyed.clone();
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A run id that distinguishes this run's event ids from earlier runs
/// against the same database.
fn new_run_id() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (unix_now() as u32).rotate_left(12) ^ nanos ^ std::process::id().rotate_left(20)
}

// ---------------------------------------------------------------------------
// The load generator
// ---------------------------------------------------------------------------

/// Where requests go, parsed from `--url`.
#[derive(Clone, Debug)]
struct Target {
    /// `host:port` to connect to.
    connect: String,
    /// The `Host` header value.
    host: HeaderValue,
    /// Path and query to request.
    path: Uri,
}

impl Target {
    /// Parses a plain `http://` URL.
    fn parse(url: &str) -> Result<Self> {
        let uri: Uri = url.parse().with_context(|| format!("not a URL: {url}"))?;
        if uri.scheme_str() != Some("http") {
            bail!("only http:// URLs are supported, got {url}");
        }
        let authority = uri.authority().context("URL has no host")?;
        let port = authority.port_u16().unwrap_or(80);
        let connect = format!("{}:{port}", authority.host());
        let host = HeaderValue::from_str(authority.as_str()).context("host header")?;
        let path = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .context("URL path")?;
        Ok(Self { connect, host, path })
    }
}

/// What every worker shares.
struct Shared {
    /// Where to send.
    target: Target,
    /// Request bodies.
    template: EventTemplate,
    /// Signature maker.
    signer: StripeSigner,
    /// Distinguishes this run's event ids from earlier runs against the same database.
    run_id: u32,
    /// When to stop, in duration mode.
    deadline: Option<Instant>,
    /// Requests left to claim, in `--requests` mode.
    remaining: Option<AtomicU64>,
    /// Time between one worker's requests when paced (`--rate`).
    interval: Option<Duration>,
    /// When the run started; pacing schedules are offsets from here.
    start: Instant,
}

/// One worker's (and, merged, the whole run's) results.
struct Stats {
    /// Latency of every answered request, in microseconds.
    latency: Histogram<u64>,
    /// 2xx answers.
    ok: u64,
    /// 401 answers.
    unauthorized: u64,
    /// 503 answers.
    unavailable: u64,
    /// Any other status.
    other: u64,
    /// Connection or protocol failures (no status).
    errors: u64,
    /// The first error seen, for the summary.
    first_error: Option<String>,
}

impl Stats {
    /// Empty stats.
    fn new() -> Result<Self> {
        let latency = Histogram::new_with_bounds(1, 3_600_000_000, 3).context("histogram bounds")?;
        Ok(Self {
            latency,
            ok: 0,
            unauthorized: 0,
            unavailable: 0,
            other: 0,
            errors: 0,
            first_error: None,
        })
    }

    /// Adds another worker's results.
    fn merge(&mut self, other: Stats) -> Result<()> {
        self.latency.add(&other.latency).context("merging histograms")?;
        self.ok += other.ok;
        self.unauthorized += other.unauthorized;
        self.unavailable += other.unavailable;
        self.other += other.other;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }

    /// Counts one failure without a status.
    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }

    /// Requests that got an answer.
    fn answered(&self) -> u64 {
        self.ok + self.unauthorized + self.unavailable + self.other
    }
}

/// Runs `loadgen`: spawns the workers, waits for them, prints the summary.
async fn load(args: LoadArgs) -> Result<ExitCode> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let interval = match args.rate {
        Some(rate) if rate.is_finite() && rate > 0.0 => Some(Duration::from_secs_f64(args.concurrency as f64 / rate)),
        Some(rate) => bail!("--rate must be positive, got {rate}"),
        None => None,
    };
    let start = Instant::now();
    let shared = Arc::new(Shared {
        target: Target::parse(&args.url)?,
        template: EventTemplate::new(args.body_size),
        signer: StripeSigner::new(&args.secret)?,
        run_id: new_run_id(),
        deadline: args.requests.is_none().then(|| start + args.duration),
        remaining: args.requests.map(AtomicU64::new),
        interval,
        start,
    });
    let workers: Vec<_> = (0..args.concurrency)
        .map(|index| tokio::spawn(worker(Arc::clone(&shared), index, args.concurrency)))
        .collect();
    let mut total = Stats::new()?;
    for handle in workers {
        total.merge(handle.await.context("worker panicked")??)?;
    }
    let elapsed = start.elapsed();
    let summary = Summary::new(&args, &total, elapsed);
    if args.json {
        println!("{}", summary.json());
    } else {
        print!("{}", summary.human());
        if let Some(error) = &total.first_error {
            println!("first error  {error}");
        }
    }
    let failed = total.errors + total.answered() - total.ok;
    if failed > 0 && !args.allow_errors {
        eprintln!("loadgen: {failed} request(s) failed or were answered non-2xx (use --allow-errors to accept)");
        return Ok(ExitCode::from(1));
    }
    if total.answered() == 0 {
        eprintln!("loadgen: no request was answered");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// One worker: a keep-alive connection sending requests one after another,
/// reconnecting when the server closes it.
///
/// Latency is measured from the moment a request was sent. When paced and
/// running behind schedule (the previous answer came after this request's
/// planned send time), it is measured from the planned time instead, so a
/// server stall counts against every request it delayed (no coordinated
/// omission). A timer waking late while on schedule is not counted.
async fn worker(shared: Arc<Shared>, index: usize, concurrency: usize) -> Result<Stats> {
    let mut stats = Stats::new()?;
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let worker_id = index as u16;
    let mut seq: u64 = 0;
    let mut planned = shared
        .interval
        .map(|every| shared.start + every.mul_f64(index as f64 / concurrency as f64));
    loop {
        if !claim(&shared) {
            break;
        }
        let mut behind = false;
        if let Some(at) = planned {
            let now = Instant::now();
            if at > now {
                tokio::time::sleep_until(at.into()).await;
                if shared.deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            } else {
                behind = true;
            }
        }
        let ready = match sender.as_mut() {
            Some(s) if !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !ready {
            match connect(&shared.target).await {
                Ok(s) => sender = Some(s),
                Err(error) => {
                    sender = None;
                    stats.error(format!("{error:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    planned = planned.zip(shared.interval).map(|(at, every)| at + every);
                    continue;
                }
            }
        }
        let Some(conn) = sender.as_mut() else { continue };
        let unix = unix_now();
        let body = shared.template.render(shared.run_id, worker_id, seq, unix);
        seq += 1;
        let signature = shared.signer.header(unix, &body);
        let request = build_request(&shared.target, signature, body)?;
        let sent = Instant::now();
        let origin = match planned {
            Some(at) if behind => at,
            _ => sent,
        };
        match exchange(conn, request).await {
            Ok(status) => {
                let micros = origin.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
                stats.latency.saturating_record(micros.max(1));
                match status {
                    200..=299 => stats.ok += 1,
                    401 => stats.unauthorized += 1,
                    503 => stats.unavailable += 1,
                    _ => stats.other += 1,
                }
            }
            Err(error) => {
                stats.error(format!("{error:#}"));
                sender = None;
            }
        }
        planned = planned.zip(shared.interval).map(|(at, every)| at + every);
    }
    Ok(stats)
}

/// Claims the right to send one more request: false once the deadline has
/// passed or the request budget is spent.
fn claim(shared: &Shared) -> bool {
    if let Some(remaining) = &shared.remaining {
        return remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
    }
    shared.deadline.is_none_or(|d| Instant::now() < d)
}

/// Opens a TCP connection (no Nagle) and performs the HTTP/1 handshake.
async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(&target.connect)
        .await
        .with_context(|| format!("connecting to {}", target.connect))?;
    stream.set_nodelay(true).context("TCP_NODELAY")?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1 handshake")?;
    tokio::spawn(async move {
        // Ends when the server closes the connection or the sender is dropped;
        // request failures are reported through the sender.
        let _ = connection.await;
    });
    Ok(sender)
}

/// A signed POST of `body`.
fn build_request(target: &Target, signature: String, body: Vec<u8>) -> Result<Request<Full<Bytes>>> {
    Request::builder()
        .method(Method::POST)
        .uri(target.path.clone())
        .header(HOST, target.host.clone())
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header("stripe-signature", signature)
        .header(
            "user-agent",
            HeaderValue::from_static("Stripe/1.0 (+https://stripe.com/docs/webhooks)"),
        )
        .body(Full::new(Bytes::from(body)))
        .context("building the request")
}

/// Sends one request and reads the whole answer; returns its status code.
async fn exchange(sender: &mut SendRequest<Full<Bytes>>, request: Request<Full<Bytes>>) -> Result<u16> {
    let response = sender.send_request(request).await.context("sending the request")?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .context("reading the response body")?;
    Ok(status)
}

/// The numbers a run reports.
struct Summary {
    /// The URL loaded.
    url: String,
    /// Workers.
    concurrency: usize,
    /// Requested rate, if paced.
    target_rate: Option<f64>,
    /// Requests answered or failed.
    requests: u64,
    /// Wall time of the run, seconds.
    seconds: f64,
    /// Requests per second.
    rate: f64,
    /// 2xx answers per second.
    ok_rate: f64,
    /// Latency percentiles and mean in milliseconds: p50, p90, p99, p99.9, max, mean.
    ms: [f64; 6],
    /// 2xx, 401, 503, other, errors.
    counts: [u64; 5],
}

impl Summary {
    /// Computes the summary of a finished run.
    fn new(args: &LoadArgs, stats: &Stats, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let requests = stats.answered() + stats.errors;
        let h = &stats.latency;
        let ms = |micros: u64| micros as f64 / 1000.0;
        let empty = h.is_empty();
        let quantile = |q: f64| if empty { 0.0 } else { ms(h.value_at_quantile(q)) };
        Self {
            url: args.url.clone(),
            concurrency: args.concurrency,
            target_rate: args.rate,
            requests,
            seconds,
            rate: requests as f64 / seconds,
            ok_rate: stats.ok as f64 / seconds,
            ms: [
                quantile(0.50),
                quantile(0.90),
                quantile(0.99),
                quantile(0.999),
                if empty { 0.0 } else { ms(h.max()) },
                if empty { 0.0 } else { h.mean() / 1000.0 },
            ],
            counts: [
                stats.ok,
                stats.unauthorized,
                stats.unavailable,
                stats.other,
                stats.errors,
            ],
        }
    }

    /// The human-readable summary, several lines.
    fn human(&self) -> String {
        let [p50, p90, p99, p999, max, mean] = self.ms;
        let [ok, unauthorized, unavailable, other, errors] = self.counts;
        let pacing = self
            .target_rate
            .map_or_else(|| "unpaced".to_string(), |r| format!("paced at {r:.0} req/s"));
        format!(
            "target       {url} (concurrency {c}, {pacing})\n\
             requests     {n} in {s:.2} s = {rate:.0} req/s ({ok_rate:.0} 2xx/s)\n\
             latency ms   p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}  mean {mean:.3}\n\
             status       2xx {ok}  401 {unauthorized}  503 {unavailable}  other {other}  errors {errors}\n",
            url = self.url,
            c = self.concurrency,
            n = self.requests,
            s = self.seconds,
            rate = self.rate,
            ok_rate = self.ok_rate,
        )
    }

    /// The summary as one JSON object.
    fn json(&self) -> String {
        let [p50, p90, p99, p999, max, mean] = self.ms;
        let [ok, unauthorized, unavailable, other, errors] = self.counts;
        let target_rate = self
            .target_rate
            .map_or_else(|| "null".to_string(), |r| format!("{r:.3}"));
        format!(
            concat!(
                r#"{{"url":"{url}","concurrency":{c},"target_rate":{target_rate},"requests":{n},"#,
                r#""duration_s":{s:.3},"rate":{rate:.1},"ok_rate":{ok_rate:.1},"#,
                r#""p50_ms":{p50:.3},"p90_ms":{p90:.3},"p99_ms":{p99:.3},"p999_ms":{p999:.3},"#,
                r#""max_ms":{max:.3},"mean_ms":{mean:.3},"status_2xx":{ok},"status_401":{unauthorized},"#,
                r#""status_503":{unavailable},"status_other":{other},"errors":{errors}}}"#
            ),
            url = self.url.replace('\\', "\\\\").replace('"', "\\\""),
            c = self.concurrency,
            target_rate = target_rate,
            n = self.requests,
            s = self.seconds,
            rate = self.rate,
            ok_rate = self.ok_rate,
            p50 = p50,
            p90 = p90,
            p99 = p99,
            p999 = p999,
            max = max,
            mean = mean,
            ok = ok,
            unauthorized = unauthorized,
            unavailable = unavailable,
            other = other,
            errors = errors,
        )
    }
}

// ---------------------------------------------------------------------------
// The bare reference server
// ---------------------------------------------------------------------------

/// Runs `bare`: accepts connections forever and answers every request 200.
async fn bare(args: BareArgs) -> Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("local address")?;
    println!("bare listening on http://{addr}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually running out of file descriptors; back off briefly.
                eprintln!("bare: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer_ok);
            // A client closing mid-request is not the server's concern here.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Reads the request body fully and answers 200 `ok`.
async fn answer_ok(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    request.into_body().collect().await?;
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

// ---------------------------------------------------------------------------
// Delivery: the counting sink and the end-to-end latency run
// ---------------------------------------------------------------------------

/// What is known about one event id.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    /// When its ingest ack was received (`e2e` only).
    acked: Option<Instant>,
    /// When it first arrived at the sink.
    arrived: Option<Instant>,
}

/// Everything the sink (and, in `e2e`, the sender) has recorded.
#[derive(Debug, Default)]
struct Tally {
    /// Every id seen, acknowledged or arrived.
    events: HashMap<Box<str>, Seen>,
    /// Requests the sink received.
    requests: u64,
    /// Requests without a readable `webhook-id`.
    without_id: u64,
    /// Distinct ids that arrived.
    distinct: u64,
    /// Arrivals of an id that had already arrived.
    duplicates: u64,
    /// Distinct ids acknowledged by the ingest endpoint.
    acked: u64,
    /// Ids both acknowledged and arrived.
    matched: u64,
    /// Every request's arrival time, for the per-second counts.
    arrivals: Vec<Instant>,
    /// When the latest new id arrived.
    last_new: Option<Instant>,
}

/// The record the sink and the sender share.
#[derive(Debug, Default)]
struct Tracker {
    /// The counts, behind one lock (a few thousand updates a second at most
    /// ten thousands: no contention worth sharding for).
    tally: Mutex<Tally>,
}

impl Tracker {
    /// The tally, even if a holder panicked.
    fn lock(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a request that reached the sink at `at`, carrying `id` if any.
    fn arrive(&self, id: Option<&str>, at: Instant) {
        let mut guard = self.lock();
        let tally = &mut *guard;
        tally.requests += 1;
        tally.arrivals.push(at);
        let Some(id) = id else {
            tally.without_id += 1;
            return;
        };
        let acked = match tally.events.get_mut(id) {
            Some(seen) if seen.arrived.is_some() => {
                tally.duplicates += 1;
                return;
            }
            Some(seen) => {
                seen.arrived = Some(at);
                seen.acked.is_some()
            }
            None => {
                tally.events.insert(
                    id.into(),
                    Seen {
                        acked: None,
                        arrived: Some(at),
                    },
                );
                false
            }
        };
        tally.distinct += 1;
        tally.last_new = Some(at);
        if acked {
            tally.matched += 1;
        }
    }

    /// Records the ingest ack of `id`, received at `at`.
    fn ack(&self, id: &str, at: Instant) {
        let mut guard = self.lock();
        let tally = &mut *guard;
        let arrived = match tally.events.get_mut(id) {
            Some(seen) if seen.acked.is_some() => return,
            Some(seen) => {
                seen.acked = Some(at);
                seen.arrived.is_some()
            }
            None => {
                tally.events.insert(
                    id.into(),
                    Seen {
                        acked: Some(at),
                        arrived: None,
                    },
                );
                false
            }
        };
        tally.acked += 1;
        if arrived {
            tally.matched += 1;
        }
    }
}

/// Binds the sink's listener.
async fn bind_sink(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the sink to {addr}"))?;
    let local = listener.local_addr().context("local address")?;
    Ok((listener, local))
}

/// Accepts connections forever; every request is recorded and answered 200.
async fn serve_sink(listener: TcpListener, tracker: Arc<Tracker>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("sink: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let tracker = Arc::clone(&tracker);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| record_delivery(Arc::clone(&tracker), request));
            // gatehouse closing a pooled connection is not the sink's concern.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Records the arrival (time taken as soon as the head is parsed), reads the
/// body and answers 200 `ok`.
async fn record_delivery(
    tracker: Arc<Tracker>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let at = Instant::now();
    let id = request.headers().get("webhook-id").and_then(|v| v.to_str().ok());
    tracker.arrive(id, at);
    request.into_body().collect().await?;
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// Microseconds in `duration`, saturating.
fn micros(duration: Duration) -> u64 {
    duration.as_micros().min(u128::from(u64::MAX)) as u64
}

/// Milliseconds at quantile `q` (or the max for `q = 1`) of a histogram of
/// microseconds; 0 when empty.
fn quantile_ms(histogram: &Histogram<u64>, q: f64) -> f64 {
    if histogram.is_empty() {
        0.0
    } else if q >= 1.0 {
        histogram.max() as f64 / 1000.0
    } else {
        histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

/// A JSON number, or `null`.
fn json_opt(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "null".to_string(), |v| format!("{v:.decimals$}"))
}

/// The event id in an ingest ack `{"status":"accepted","id":"evt_…"}`.
fn accepted_id(body: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(body).ok()?;
    if !text.contains(r#""status":"accepted""#) {
        return None;
    }
    let start = text.find(r#""id":""#)? + 6;
    let len = text[start..].find('"')?;
    let id = &text[start..start + len];
    id.starts_with("evt_").then_some(id)
}

/// The sender's results in `e2e`.
struct SendStats {
    /// Time from sending each request to its ack, microseconds.
    ack_latency: Histogram<u64>,
    /// Requests written.
    sent: u64,
    /// 2xx answers carrying an accepted event id.
    acked: u64,
    /// 2xx answers that are not `{"status":"accepted","id":…}` (e.g. `duplicate`).
    not_accepted: u64,
    /// Non-2xx answers.
    non_2xx: u64,
    /// Connection or protocol failures.
    errors: u64,
    /// The first failure seen.
    first_error: Option<String>,
}

impl SendStats {
    /// Empty stats.
    fn new() -> Result<Self> {
        Ok(Self {
            ack_latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).context("histogram bounds")?,
            sent: 0,
            acked: 0,
            not_accepted: 0,
            non_2xx: 0,
            errors: 0,
            first_error: None,
        })
    }

    /// Adds another worker's results.
    fn merge(&mut self, other: SendStats) -> Result<()> {
        self.ack_latency.add(&other.ack_latency).context("merging histograms")?;
        self.sent += other.sent;
        self.acked += other.acked;
        self.not_accepted += other.not_accepted;
        self.non_2xx += other.non_2xx;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }

    /// Notes a failure for the summary.
    fn note(&mut self, what: String) {
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }
}

/// Runs `e2e`: starts the sink, sends paced events, waits for the
/// deliveries, reports ack-to-arrival latency.
async fn e2e(args: E2eArgs) -> Result<ExitCode> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be positive, got {}", args.rate);
    }
    let tracker = Arc::new(Tracker::default());
    let (listener, sink_addr) = bind_sink(args.sink_listen).await?;
    eprintln!("e2e: sink listening on http://{sink_addr}");
    let server = tokio::spawn(serve_sink(listener, Arc::clone(&tracker)));

    let start = Instant::now();
    let shared = Arc::new(Shared {
        target: Target::parse(&args.url)?,
        template: EventTemplate::new(args.body_size),
        signer: StripeSigner::new(&args.secret)?,
        run_id: new_run_id(),
        deadline: Some(start + args.duration),
        remaining: None,
        interval: Some(Duration::from_secs_f64(args.concurrency as f64 / args.rate)),
        start,
    });
    let workers: Vec<_> = (0..args.concurrency)
        .map(|index| {
            tokio::spawn(e2e_sender(
                Arc::clone(&shared),
                Arc::clone(&tracker),
                index,
                args.concurrency,
            ))
        })
        .collect();
    let mut sent = SendStats::new()?;
    for handle in workers {
        sent.merge(handle.await.context("sender panicked")??)?;
    }
    let sending = start.elapsed();

    // Wait for the deliveries still on their way.
    let drain_start = Instant::now();
    loop {
        let (acked, matched) = {
            let tally = tracker.lock();
            (tally.acked, tally.matched)
        };
        if matched >= acked || drain_start.elapsed() >= args.drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = drain_start.elapsed();
    server.abort();

    let report = E2eReport::new(&args, &sent, &tracker.lock(), sending, drained)?;
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
        if let Some(error) = &sent.first_error {
            println!("first error  {error}");
        }
    }
    let failed = sent.errors + sent.non_2xx + sent.not_accepted + report.missing;
    if failed > 0 && !args.allow_errors {
        eprintln!(
            "e2e: {} request(s) failed, {} answer(s) were not accepted, {} delivery(ies) missing (use --allow-errors to accept)",
            sent.errors + sent.non_2xx,
            sent.not_accepted,
            report.missing
        );
        return Ok(ExitCode::from(1));
    }
    if sent.acked == 0 {
        eprintln!("e2e: no event was acknowledged");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// One `e2e` sending worker: a keep-alive connection, paced; every accepted
/// ack is recorded with the time it was received.
async fn e2e_sender(shared: Arc<Shared>, tracker: Arc<Tracker>, index: usize, concurrency: usize) -> Result<SendStats> {
    let mut stats = SendStats::new()?;
    let every = shared.interval.context("e2e is always paced")?;
    let mut planned = shared.start + every.mul_f64(index as f64 / concurrency as f64);
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let worker_id = index as u16;
    let mut seq: u64 = 0;
    loop {
        if planned > Instant::now() {
            tokio::time::sleep_until(planned.into()).await;
        }
        if !claim(&shared) {
            break;
        }
        let ready = match sender.as_mut() {
            Some(s) if !s.is_closed() => s.ready().await.is_ok(),
            _ => false,
        };
        if !ready {
            match connect(&shared.target).await {
                Ok(s) => sender = Some(s),
                Err(error) => {
                    sender = None;
                    stats.errors += 1;
                    stats.note(format!("{error:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    planned += every;
                    continue;
                }
            }
        }
        let Some(conn) = sender.as_mut() else { continue };
        let unix = unix_now();
        let body = shared.template.render(shared.run_id, worker_id, seq, unix);
        seq += 1;
        let signature = shared.signer.header(unix, &body);
        let request = build_request(&shared.target, signature, body)?;
        let sent_at = Instant::now();
        stats.sent += 1;
        match exchange_body(conn, request).await {
            Ok((status, answer)) => {
                let acked_at = Instant::now();
                stats.ack_latency.saturating_record(micros(acked_at - sent_at).max(1));
                if (200..300).contains(&status) {
                    match accepted_id(&answer) {
                        Some(id) => {
                            tracker.ack(id, acked_at);
                            stats.acked += 1;
                        }
                        None => {
                            stats.not_accepted += 1;
                            stats.note(format!(
                                "2xx without an accepted id: {}",
                                String::from_utf8_lossy(&answer)
                            ));
                        }
                    }
                } else {
                    stats.non_2xx += 1;
                    let excerpt: String = String::from_utf8_lossy(&answer).chars().take(200).collect();
                    stats.note(format!("HTTP {status}: {excerpt}"));
                }
            }
            Err(error) => {
                stats.errors += 1;
                stats.note(format!("{error:#}"));
                sender = None;
            }
        }
        planned += every;
    }
    Ok(stats)
}

/// Sends one request and reads the whole answer; returns its status and body.
async fn exchange_body(sender: &mut SendRequest<Full<Bytes>>, request: Request<Full<Bytes>>) -> Result<(u16, Bytes)> {
    let response = sender.send_request(request).await.context("sending the request")?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the response body")?
        .to_bytes();
    Ok((status, body))
}

/// The numbers an `e2e` run reports.
struct E2eReport {
    /// The ingest URL.
    url: String,
    /// The requested rate.
    target_rate: f64,
    /// Sending workers.
    concurrency: usize,
    /// How long sending took, seconds.
    seconds: f64,
    /// How long the drain wait took, seconds.
    drain_seconds: f64,
    /// Requests written, acked, 2xx not accepted, non-2xx, failures.
    sent: [u64; 5],
    /// Acked events that arrived.
    arrived: u64,
    /// Acked events that never arrived (within the drain wait).
    missing: u64,
    /// Repeated arrivals of an id.
    duplicates: u64,
    /// Arrivals of ids never acked here.
    unexpected: u64,
    /// Arrivals without a `webhook-id`.
    without_id: u64,
    /// Events that arrived before their ack (latency clamped to 0).
    early: u64,
    /// Ack-to-arrival latency, ms: p50, p90, p99, p99.9, max, mean.
    ms: [f64; 6],
    /// Send-to-ack latency, ms: p50, p99.
    ack_ms: [f64; 2],
}

impl E2eReport {
    /// Computes the report from the sender's stats and the tally.
    fn new(args: &E2eArgs, sent: &SendStats, tally: &Tally, sending: Duration, drained: Duration) -> Result<Self> {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).context("histogram bounds")?;
        let mut early = 0;
        for seen in tally.events.values() {
            if let (Some(acked), Some(arrived)) = (seen.acked, seen.arrived) {
                match arrived.checked_duration_since(acked) {
                    Some(after) => latency.saturating_record(micros(after)),
                    None => {
                        early += 1;
                        latency.saturating_record(0);
                    }
                }
            }
        }
        let mean = if latency.is_empty() {
            0.0
        } else {
            latency.mean() / 1000.0
        };
        Ok(Self {
            url: args.url.clone(),
            target_rate: args.rate,
            concurrency: args.concurrency,
            seconds: sending.as_secs_f64(),
            drain_seconds: drained.as_secs_f64(),
            sent: [sent.sent, sent.acked, sent.not_accepted, sent.non_2xx, sent.errors],
            arrived: tally.matched,
            missing: tally.acked - tally.matched,
            duplicates: tally.duplicates,
            unexpected: tally.distinct - tally.matched,
            without_id: tally.without_id,
            early,
            ms: [
                quantile_ms(&latency, 0.50),
                quantile_ms(&latency, 0.90),
                quantile_ms(&latency, 0.99),
                quantile_ms(&latency, 0.999),
                quantile_ms(&latency, 1.0),
                mean,
            ],
            ack_ms: [
                quantile_ms(&sent.ack_latency, 0.50),
                quantile_ms(&sent.ack_latency, 0.99),
            ],
        })
    }

    /// The human-readable summary.
    fn human(&self) -> String {
        let [p50, p90, p99, p999, max, mean] = self.ms;
        let [ack50, ack99] = self.ack_ms;
        let [sent, acked, not_accepted, non_2xx, errors] = self.sent;
        format!(
            "target       {url} (concurrency {c}, paced at {rate:.0} events/s)\n\
             sent         {sent} in {s:.2} s ({ack_rate:.0} acked/s): {acked} acked, {not_accepted} 2xx not accepted, {non_2xx} non-2xx, {errors} errors\n\
             ack ms       p50 {ack50:.3}  p99 {ack99:.3} (send to ingest ack)\n\
             arrived      {arrived} of {acked} acked, {missing} missing after {d:.2} s drain, {dup} duplicates, \
             {unexpected} unexpected, {without_id} without webhook-id\n\
             latency ms   p50 {p50:.3}  p90 {p90:.3}  p99 {p99:.3}  p99.9 {p999:.3}  max {max:.3}  mean {mean:.3} \
             (ack to arrival; {early} arrived before their ack, counted as 0)\n",
            url = self.url,
            c = self.concurrency,
            rate = self.target_rate,
            s = self.seconds,
            ack_rate = acked as f64 / self.seconds.max(1e-9),
            arrived = self.arrived,
            missing = self.missing,
            d = self.drain_seconds,
            dup = self.duplicates,
            unexpected = self.unexpected,
            without_id = self.without_id,
            early = self.early,
        )
    }

    /// The report as one JSON object.
    fn json(&self) -> String {
        let [p50, p90, p99, p999, max, mean] = self.ms;
        let [ack50, ack99] = self.ack_ms;
        let [sent, acked, not_accepted, non_2xx, errors] = self.sent;
        format!(
            concat!(
                r#"{{"url":"{url}","concurrency":{c},"target_rate":{rate:.3},"duration_s":{s:.3},"#,
                r#""drain_s":{d:.3},"sent":{sent},"acked":{acked},"not_accepted":{not_accepted},"#,
                r#""non_2xx":{non_2xx},"errors":{errors},"arrived":{arrived},"missing":{missing},"#,
                r#""duplicates":{dup},"unexpected":{unexpected},"without_id":{without_id},"#,
                r#""arrived_before_ack":{early},"p50_ms":{p50:.3},"p90_ms":{p90:.3},"p99_ms":{p99:.3},"#,
                r#""p999_ms":{p999:.3},"max_ms":{max:.3},"mean_ms":{mean:.3},"#,
                r#""ack_p50_ms":{ack50:.3},"ack_p99_ms":{ack99:.3},"ack_rate":{ack_rate:.1}}}"#
            ),
            url = self.url.replace('\\', "\\\\").replace('"', "\\\""),
            c = self.concurrency,
            rate = self.target_rate,
            s = self.seconds,
            d = self.drain_seconds,
            arrived = self.arrived,
            missing = self.missing,
            dup = self.duplicates,
            unexpected = self.unexpected,
            without_id = self.without_id,
            early = self.early,
            sent = sent,
            acked = acked,
            not_accepted = not_accepted,
            non_2xx = non_2xx,
            errors = errors,
            p50 = p50,
            p90 = p90,
            p99 = p99,
            p999 = p999,
            max = max,
            mean = mean,
            ack50 = ack50,
            ack99 = ack99,
            ack_rate = acked as f64 / self.seconds.max(1e-9),
        )
    }
}

/// Runs `sink`: counts deliveries until a signal, `--duration` or `--expect`.
async fn sink(args: SinkArgs) -> Result<ExitCode> {
    if args.expect == Some(0) {
        bail!("--expect must be at least 1");
    }
    let tracker = Arc::new(Tracker::default());
    let (listener, addr) = bind_sink(args.listen).await?;
    println!("sink listening on http://{addr}");
    let server = tokio::spawn(serve_sink(listener, Arc::clone(&tracker)));
    let stopped_by = tokio::select! {
        signal = stop_signal() => signal?,
        () = sleep_for(args.duration) => "duration",
        () = wait_expected(&tracker, args.expect, args.linger) => "expect",
    };
    server.abort();
    let report = SinkReport::new(&args, addr, stopped_by, &tracker.lock());
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.human());
    }
    if args.expect.is_some() && !report.complete {
        eprintln!(
            "sink: {} distinct webhook-ids arrived, {} expected",
            report.distinct,
            args.expect.unwrap_or_default()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
async fn stop_signal() -> Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
        tokio::select! {
            _ = interrupt.recv() => Ok("SIGINT"),
            _ = terminate.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("listening for Ctrl-C")?;
        Ok("SIGINT")
    }
}

/// Sleeps for `duration`, or forever if there is none.
async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// Resolves `linger` after `expect` distinct ids have arrived, or never
/// without `expect`.
async fn wait_expected(tracker: &Tracker, expect: Option<u64>, linger: Option<Duration>) {
    let Some(expect) = expect else {
        return std::future::pending().await;
    };
    while tracker.lock().distinct < expect {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(linger) = linger {
        tokio::time::sleep(linger).await;
    }
}

/// The numbers a `sink` run reports.
struct SinkReport {
    /// Where it listened.
    addr: SocketAddr,
    /// What stopped it: `SIGINT`, `SIGTERM`, `duration` or `expect`.
    stopped_by: &'static str,
    /// Requests received.
    requests: u64,
    /// Distinct `webhook-id`s.
    distinct: u64,
    /// Repeated arrivals of an id.
    duplicates: u64,
    /// Requests without a `webhook-id`.
    without_id: u64,
    /// `--expect`, if given.
    expected: Option<u64>,
    /// Whether `--expect` distinct ids arrived.
    complete: bool,
    /// Unix time of the first arrival.
    first_unix: Option<f64>,
    /// Unix time of the arrival of the latest new id (with `--expect`, the
    /// moment the expected count was reached).
    last_new_unix: Option<f64>,
    /// Unix time of the last arrival of all.
    last_unix: Option<f64>,
    /// Seconds from the first arrival to the latest new id.
    span: Option<f64>,
    /// Distinct ids per second over that span.
    rate: Option<f64>,
    /// Requests received in each second since the first arrival.
    per_second: Vec<u64>,
}

impl SinkReport {
    /// Computes the report from the tally.
    fn new(args: &SinkArgs, addr: SocketAddr, stopped_by: &'static str, tally: &Tally) -> Self {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let wall = wall.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let unix = |at: Instant| wall - now.saturating_duration_since(at).as_secs_f64();
        let first = tally.arrivals.iter().min().copied();
        let last = tally.arrivals.iter().max().copied();
        let mut per_second = Vec::new();
        if let Some(first) = first {
            for at in &tally.arrivals {
                let second = at.saturating_duration_since(first).as_secs() as usize;
                if per_second.len() <= second {
                    per_second.resize(second + 1, 0);
                }
                per_second[second] += 1;
            }
        }
        let span = first
            .zip(tally.last_new)
            .map(|(first, last_new)| last_new.saturating_duration_since(first).as_secs_f64());
        let rate = span
            .filter(|s| *s > 0.0 && tally.distinct > 1)
            .map(|s| (tally.distinct - 1) as f64 / s);
        Self {
            addr,
            stopped_by,
            requests: tally.requests,
            distinct: tally.distinct,
            duplicates: tally.duplicates,
            without_id: tally.without_id,
            expected: args.expect,
            complete: args.expect.is_none_or(|n| tally.distinct >= n),
            first_unix: first.map(unix),
            last_new_unix: tally.last_new.map(unix),
            last_unix: last.map(unix),
            span,
            rate,
            per_second,
        }
    }

    /// The human-readable summary.
    fn human(&self) -> String {
        let expected = self.expected.map_or_else(String::new, |n| format!(" of {n} expected"));
        let span = match (self.span, self.rate) {
            (Some(span), Some(rate)) => {
                format!("{span:.3} s from the first arrival to the last new id = {rate:.0} deliveries/s")
            }
            _ => "too few arrivals for a rate".to_string(),
        };
        let per_second: Vec<String> = self.per_second.iter().map(u64::to_string).collect();
        format!(
            "sink         http://{addr} (stopped by {stopped_by})\n\
             arrivals     {distinct} distinct webhook-ids{expected}; {requests} requests, {duplicates} duplicates, \
             {without_id} without webhook-id\n\
             rate         {span}\n\
             per second   {per_second}\n",
            addr = self.addr,
            stopped_by = self.stopped_by,
            distinct = self.distinct,
            requests = self.requests,
            duplicates = self.duplicates,
            without_id = self.without_id,
            per_second = per_second.join(" "),
        )
    }

    /// The report as one JSON object.
    fn json(&self) -> String {
        let per_second: Vec<String> = self.per_second.iter().map(u64::to_string).collect();
        format!(
            concat!(
                r#"{{"listen":"{addr}","stopped_by":"{stopped_by}","requests":{requests},"#,
                r#""distinct":{distinct},"duplicates":{duplicates},"without_id":{without_id},"#,
                r#""expected":{expected},"complete":{complete},"first_arrival_unix":{first},"#,
                r#""last_new_arrival_unix":{last_new},"last_arrival_unix":{last},"span_s":{span},"#,
                r#""rate":{rate},"per_second":[{per_second}]}}"#
            ),
            addr = self.addr,
            stopped_by = self.stopped_by,
            requests = self.requests,
            distinct = self.distinct,
            duplicates = self.duplicates,
            without_id = self.without_id,
            expected = self.expected.map_or_else(|| "null".to_string(), |n| n.to_string()),
            complete = self.complete,
            first = json_opt(self.first_unix, 6),
            last_new = json_opt(self.last_new_unix, 6),
            last = json_opt(self.last_unix, 6),
            span = json_opt(self.span, 6),
            rate = json_opt(self.rate, 1),
            per_second = per_second.join(","),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_published_stripe_vector() {
        let signer = StripeSigner::new("whsec_test_secret").expect("signer");
        let header = signer.header(1_700_000_000, br#"{"id":"evt_test_webhook","object":"event"}"#);
        assert_eq!(
            header,
            "t=1700000000,v1=d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990"
        );
    }

    #[test]
    fn bodies_have_the_requested_size_unique_ids_and_the_time() {
        let template = EventTemplate::new(1024);
        let a = template.render(0xdead_beef, 3, 7, 1_700_000_123);
        let b = template.render(0xdead_beef, 3, 8, 1_700_000_123);
        assert_eq!(a.len(), 1024);
        assert_ne!(a, b);
        let text = std::str::from_utf8(&a).expect("utf-8");
        assert!(
            text.starts_with(r#"{"id":"evt_deadbeef0003000000000007","object":"event""#),
            "{text}"
        );
        assert!(text.contains(r#""id":"pi_deadbeef0003000000000007""#));
        assert!(text.contains(r#""created":1700000123,"#));
        assert!(text.ends_with(r#""type":"payment_intent.succeeded"}"#));
    }

    #[test]
    fn small_sizes_give_the_smallest_realistic_event() {
        let template = EventTemplate::new(10);
        let body = template.render(1, 1, 1, 1_700_000_000);
        assert!(body.len() > 10 && body.len() < 1024, "{}", body.len());
        assert!(!body.windows(5).any(|w| w == b"Thank"));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn targets_parse() {
        let target = Target::parse("http://127.0.0.1:9000/in/stripe").expect("target");
        assert_eq!(target.connect, "127.0.0.1:9000");
        assert_eq!(target.host, "127.0.0.1:9000");
        assert_eq!(target.path, "/in/stripe");
        assert!(Target::parse("https://example.com/").is_err());
    }

    #[test]
    fn ack_bodies_give_the_event_id() {
        assert_eq!(
            accepted_id(br#"{"status":"accepted","id":"evt_01J9ZQ4"}"#),
            Some("evt_01J9ZQ4")
        );
        assert_eq!(accepted_id(br#"{"status":"duplicate","id":"evt_01J9ZQ4"}"#), None);
        assert_eq!(accepted_id(br#"{"error":"unauthorized"}"#), None);
        assert_eq!(accepted_id(b"\xff\xfe"), None);
    }

    #[test]
    fn the_tracker_matches_acks_and_arrivals_in_either_order() {
        let tracker = Tracker::default();
        let t0 = Instant::now();
        let later = t0 + Duration::from_millis(3);
        tracker.ack("evt_a", t0);
        tracker.arrive(Some("evt_a"), later);
        tracker.arrive(Some("evt_b"), t0);
        tracker.ack("evt_b", later);
        tracker.arrive(Some("evt_b"), later);
        tracker.ack("evt_c", t0);
        tracker.arrive(Some("evt_x"), later);
        tracker.arrive(None, later);
        let tally = tracker.lock();
        assert_eq!(tally.requests, 5);
        assert_eq!(tally.acked, 3);
        assert_eq!(tally.matched, 2);
        assert_eq!(tally.distinct, 3);
        assert_eq!(tally.duplicates, 1);
        assert_eq!(tally.without_id, 1);
    }

    #[test]
    fn early_arrivals_count_as_zero_latency() {
        let cli = Cli::parse_from([
            "gatehouse-loadgen",
            "e2e",
            "--url",
            "http://127.0.0.1:1/in/stripe",
            "--secret",
            "whsec_x",
            "--sink-listen",
            "127.0.0.1:0",
        ]);
        let Command::E2e(args) = cli.command else {
            panic!("e2e");
        };
        let tracker = Tracker::default();
        let t0 = Instant::now();
        tracker.ack("evt_a", t0);
        tracker.arrive(Some("evt_a"), t0 + Duration::from_millis(4));
        tracker.arrive(Some("evt_b"), t0);
        tracker.ack("evt_b", t0 + Duration::from_millis(1));
        tracker.ack("evt_c", t0);
        let sent = SendStats::new().expect("stats");
        let report =
            E2eReport::new(&args, &sent, &tracker.lock(), Duration::from_secs(1), Duration::ZERO).expect("report");
        assert_eq!((report.arrived, report.missing, report.early), (2, 1, 1));
        assert_eq!(report.ms[0], 0.0);
        assert!((report.ms[4] - 4.0).abs() < 0.01, "{:?}", report.ms);
        assert!(report.json().contains(r#""missing":1,"#));
    }

    #[test]
    fn the_sink_counts_distinct_ids_and_duplicates_over_http() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let tracker = Arc::new(Tracker::default());
            let (listener, addr) = bind_sink("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
            let server = tokio::spawn(serve_sink(listener, Arc::clone(&tracker)));
            let target = Target::parse(&format!("http://{addr}/hook")).expect("target");
            let mut conn = connect(&target).await.expect("connect");
            for id in ["evt_1", "evt_2", "evt_1"] {
                let request = Request::builder()
                    .method(Method::POST)
                    .uri(target.path.clone())
                    .header(HOST, target.host.clone())
                    .header("webhook-id", id)
                    .body(Full::new(Bytes::from_static(b"{}")))
                    .expect("request");
                conn.ready().await.expect("ready");
                let (status, _) = exchange_body(&mut conn, request).await.expect("exchange");
                assert_eq!(status, 200);
            }
            server.abort();
            let cli = Cli::parse_from(["gatehouse-loadgen", "sink", "--expect", "2"]);
            let Command::Sink(args) = cli.command else {
                panic!("sink");
            };
            let report = SinkReport::new(&args, addr, "expect", &tracker.lock());
            assert_eq!((report.requests, report.distinct, report.duplicates), (3, 2, 1));
            assert!(report.complete);
            assert_eq!(report.per_second.iter().sum::<u64>(), 3);
            assert!(
                report.json().contains(r#""distinct":2,"duplicates":1,"#),
                "{}",
                report.json()
            );
        });
    }
}
