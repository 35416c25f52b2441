//! `gatehouse-loadgen`: the benchmark tools for gatehouse's ingest path.
//!
//! Two subcommands:
//!
//! - `loadgen` drives HTTP/1.1 keep-alive load at a URL: one connection per
//!   concurrent worker, every request a distinct ~1 KB Stripe event signed
//!   exactly as Stripe signs it. It records each request's latency in an HDR
//!   histogram, counts status codes, and prints a summary (or one JSON line).
//! - `bare` is a minimal hyper server that reads each body and answers 200: the
//!   machine's reference limit, run in the same benchmark as gatehouse.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
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
#[command(name = "gatehouse-loadgen", about = "Benchmark tools for gatehouse's ingest path")]
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
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let run_id = (unix_now() as u32).rotate_left(12) ^ nanos ^ std::process::id().rotate_left(20);
    let start = Instant::now();
    let shared = Arc::new(Shared {
        target: Target::parse(&args.url)?,
        template: EventTemplate::new(args.body_size),
        signer: StripeSigner::new(&args.secret)?,
        run_id,
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
}
