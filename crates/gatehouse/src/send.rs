//! `gatehouse send`: sends a request signed exactly as a provider would sign
//! it, to test a source end to end without the provider. The body is one of
//! the built-in samples (`samples/<provider>/`, with fresh ids and times
//! filled in) or a file; signing is `gatehouse_verify::sign_request`, the
//! same code the fixture tests check against the providers' own SDKs.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rand::Rng;

use gatehouse_core::{Secret, UnixMillis};
use gatehouse_verify::signing::{rfc3339, sign_request, SignedRequest, SigningKey, Unsigned};
use gatehouse_verify::VerifyOptions;

/// Arguments of `gatehouse send`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// The provider to imitate, e.g. stripe (see --list).
    #[arg(long, required_unless_present = "list")]
    pub provider: Option<String>,
    /// The secret the source is configured with: a literal, env:NAME or file:PATH.
    #[arg(long, value_name = "SECRET")]
    pub secret: Option<String>,
    /// Discord, SendGrid, PayPal: a file with the private key that signs
    /// (PEM; for Discord also 64 hex digits of the seed). The source holds
    /// its public half.
    #[arg(long, value_name = "FILE", conflicts_with = "secret")]
    pub private_key: Option<PathBuf>,
    /// The sample to send (see --list; default: the provider's first). With
    /// --file: the event name the provider puts in a header (GitHub's
    /// X-GitHub-Event, Shopify's topic).
    #[arg(long)]
    pub event: Option<String>,
    /// Send this file's bytes as the body instead of a sample.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// A `verify` option of the receiving source, as KEY=VALUE (repeat the
    /// flag for several): notification_url=…, webhook_id=…, header=…,
    /// algorithm=…, encoding=…, prefix=…, timestamp_header=…, signed_content=….
    #[arg(long = "option", value_name = "KEY=VALUE")]
    pub options: Vec<String>,
    /// PayPal: the URL of --private-key's certificate (sent as PAYPAL-CERT-URL;
    /// it must be on the source's verify.cert_hosts).
    #[arg(long, value_name = "URL")]
    pub cert_url: Option<String>,
    /// The delivery id (GitHub delivery, webhook-id, Shopify webhook id, …);
    /// default a fresh one. Send twice with the same id to test deduplication.
    #[arg(long)]
    pub id: Option<String>,
    /// An extra header, "Name: value", sent after the signed ones (repeatable).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Where to send it: the source's URL, e.g. http://127.0.0.1:8080/in/stripe.
    /// Twilio and Square sign this URL.
    #[arg(long, required_unless_present = "list")]
    pub url: Option<String>,
    /// Print the signed request as JSON instead of sending it.
    #[arg(long)]
    pub dry_run: bool,
    /// List the providers and their sample events.
    #[arg(long)]
    pub list: bool,
    /// For an https:// URL, trust only the certificates in this PEM file
    /// (the gateway's own self-signed certificate, or a private CA) instead
    /// of the system's roots.
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<PathBuf>,
    /// Give up waiting for the answer after this long.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// A built-in sample payload.
struct Sample {
    /// The providers it is for.
    providers: &'static [&'static str],
    /// Its event name, as given to --event.
    event: &'static str,
    /// The body, with `{{placeholders}}` (see [`fill`]).
    template: &'static str,
    /// A form body rather than JSON.
    form: bool,
}

macro_rules! sample {
    ($providers:expr, $event:literal, $path:literal) => {
        Sample {
            providers: $providers,
            event: $event,
            template: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/", $path)),
            form: is_form_file($path),
        }
    };
}

/// Whether a sample file is a form body (`.form`) rather than JSON.
const fn is_form_file(path: &str) -> bool {
    let bytes = path.as_bytes();
    let suffix = b".form";
    if bytes.len() < suffix.len() {
        return false;
    }
    let mut i = 0;
    while i < suffix.len() {
        if bytes[bytes.len() - suffix.len() + i] != suffix[i] {
            return false;
        }
        i += 1;
    }
    true
}

const STANDARD: &[&str] = &["standard-webhooks", "svix"];
const GENERIC: &[&str] = &["hmac", "token", "none"];

/// The sample library, each provider's default first.
static SAMPLES: &[Sample] = &[
    sample!(
        &["stripe"],
        "payment_intent.succeeded",
        "stripe/payment_intent.succeeded.json"
    ),
    sample!(
        &["stripe"],
        "checkout.session.completed",
        "stripe/checkout.session.completed.json"
    ),
    sample!(&["stripe"], "charge.refunded", "stripe/charge.refunded.json"),
    sample!(&["github"], "push", "github/push.json"),
    sample!(&["github"], "ping", "github/ping.json"),
    sample!(&["github"], "pull_request.opened", "github/pull_request.opened.json"),
    sample!(&["github"], "issues.opened", "github/issues.opened.json"),
    sample!(STANDARD, "invoice.paid", "standard-webhooks/invoice.paid.json"),
    sample!(STANDARD, "user.created", "standard-webhooks/user.created.json"),
    sample!(&["twilio"], "message.delivered", "twilio/message.delivered.form"),
    sample!(&["twilio"], "message.received", "twilio/message.received.form"),
    sample!(&["twilio"], "call.completed", "twilio/call.completed.form"),
    sample!(&["slack"], "app_mention", "slack/app_mention.json"),
    sample!(&["slack"], "url_verification", "slack/url_verification.json"),
    sample!(&["slack"], "/deploy", "slack/slash_command.form"),
    sample!(&["shopify"], "orders/create", "shopify/orders-create.json"),
    sample!(&["shopify"], "products/update", "shopify/products-update.json"),
    sample!(
        &["paypal"],
        "PAYMENT.CAPTURE.COMPLETED",
        "paypal/PAYMENT.CAPTURE.COMPLETED.json"
    ),
    sample!(&["square"], "payment.updated", "square/payment.updated.json"),
    sample!(&["discord"], "application_command", "discord/application_command.json"),
    sample!(&["discord"], "ping", "discord/ping.json"),
    sample!(&["zoom"], "meeting.started", "zoom/meeting.started.json"),
    sample!(
        &["zoom"],
        "endpoint.url_validation",
        "zoom/endpoint.url_validation.json"
    ),
    sample!(&["gitlab"], "push", "gitlab/push.json"),
    sample!(&["gitlab"], "merge_request", "gitlab/merge_request.json"),
    sample!(&["sendgrid"], "delivered", "sendgrid/delivered.json"),
    sample!(&["linear"], "Issue.create", "linear/Issue.create.json"),
    sample!(
        &["intercom"],
        "conversation.user.created",
        "intercom/conversation.user.created.json"
    ),
    sample!(&["intercom"], "ping", "intercom/ping.json"),
    sample!(&["mailgun"], "delivered", "mailgun/delivered.json"),
    sample!(&["microsoft-graph"], "created", "microsoft-graph/created.json"),
    sample!(&["dropbox"], "notification", "dropbox/notification.json"),
    sample!(GENERIC, "example", "generic/example.json"),
];

fn samples_for(provider: &str) -> impl Iterator<Item = &'static Sample> + '_ {
    SAMPLES.iter().filter(move |s| s.providers.contains(&provider))
}

/// Runs `gatehouse send`.
pub async fn run(args: SendArgs) -> Result<()> {
    if args.list {
        print!("{}", list());
        return Ok(());
    }
    // clap requires both unless --list.
    let (Some(provider), Some(url)) = (args.provider.as_deref(), args.url.as_deref()) else {
        bail!("--provider and --url are required");
    };
    if !gatehouse_verify::provider_names().contains(&provider) {
        bail!(
            "unknown provider {provider:?} (expected one of: {})",
            gatehouse_verify::provider_names().join(", ")
        );
    }
    let now = UnixMillis::now();
    let mut rng = rand::thread_rng();
    let (body, event, form) = match &args.file {
        Some(path) => {
            let body = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            (body, args.event.clone(), false)
        }
        None => {
            let sample = match args.event.as_deref() {
                Some(event) => samples_for(provider).find(|s| s.event == event).with_context(|| {
                    format!(
                        "provider {provider} has no sample {event:?} (expected one of: {}; or give --file)",
                        samples_for(provider).map(|s| s.event).collect::<Vec<_>>().join(", ")
                    )
                })?,
                None => samples_for(provider)
                    .next()
                    .with_context(|| format!("provider {provider} has no samples; give --file"))?,
            };
            (
                fill(sample.template, now, &mut rng).into_bytes(),
                Some(sample.event.to_owned()),
                sample.form,
            )
        }
    };
    let key = signing_key(provider, args.secret.as_deref(), args.private_key.as_ref())?;
    let options = parse_options(&args.options)?;
    let id = args.id.clone().unwrap_or_else(|| fresh_id(provider, &mut rng));
    let mut unsigned = Unsigned::post(url, &body).id(&id);
    unsigned.event = event.as_deref();
    unsigned.cert_url = args.cert_url.as_deref();
    if form {
        unsigned.content_type = Some("application/x-www-form-urlencoded");
    }
    let mut signed = sign_request(provider, &key, &options, &unsigned, now)?;
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("--header {header:?} is not \"Name: value\""))?;
        signed.headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
    if args.dry_run {
        println!("{}", serde_json::to_string_pretty(&as_json(&signed))?);
        if let Some(public) = key.verifying_secret() {
            eprintln!("the source verifies this with secrets = [\"{public}\"]");
        }
        return Ok(());
    }
    let (status, answer) = deliver(&signed, args.cacert.as_deref(), args.timeout).await?;
    println!("HTTP {status}");
    let answer = String::from_utf8_lossy(&answer);
    if !answer.is_empty() {
        println!("{answer}");
    }
    if !status.is_success() {
        bail!("{url} answered HTTP {}", status.as_u16());
    }
    Ok(())
}

/// The provider list with each one's samples.
fn list() -> String {
    let mut out = String::from("provider            sample events (--event; the first is the default)\n");
    for &provider in gatehouse_verify::provider_names() {
        let events: Vec<&str> = samples_for(provider).map(|s| s.event).collect();
        let key = match provider {
            "discord" | "sendgrid" | "paypal" => "  [--private-key]",
            _ => "",
        };
        out.push_str(&format!("{provider:<19} {}{key}\n", events.join(", ")));
    }
    out
}

/// The key to sign with: the private key file, the secret, or (for
/// `none`) nothing.
fn signing_key(provider: &str, secret: Option<&str>, private_key: Option<&PathBuf>) -> Result<SigningKey> {
    if let Some(path) = private_key {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read private key {}", path.display()))?;
        return Ok(SigningKey::from_private_key(&text)?);
    }
    match secret {
        Some(reference) => Ok(SigningKey::Shared(resolve_secret(reference)?)),
        None if provider == "none" => Ok(SigningKey::shared("unused")),
        None if matches!(provider, "discord" | "sendgrid" | "paypal") => {
            bail!("provider {provider} signs with a private key: give --private-key FILE")
        }
        None => bail!("give --secret (the source's secret: a literal, env:NAME or file:PATH)"),
    }
}

/// A literal, `env:NAME` or `file:PATH`, as in the config file; errors name
/// the variable or file, never the secret.
fn resolve_secret(reference: &str) -> Result<Secret> {
    let secret = if let Some(name) = reference.strip_prefix("env:") {
        let value = std::env::var_os(name).with_context(|| format!("environment variable {name} is not set"))?;
        Secret::new(value.into_encoded_bytes())
    } else if let Some(path) = reference.strip_prefix("file:") {
        let mut bytes = std::fs::read(path).with_context(|| format!("cannot read secret file {path}"))?;
        // Editors and `echo` add a final newline that is not part of the secret.
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Secret::new(bytes)
    } else {
        Secret::new(reference.as_bytes())
    };
    if secret.expose().is_empty() {
        bail!("--secret is empty");
    }
    Ok(secret)
}

/// `--option KEY=VALUE` flags as the source's `verify` table.
fn parse_options(options: &[String]) -> Result<VerifyOptions> {
    let mut table = serde_json::Map::new();
    for option in options {
        let (key, value) = option
            .split_once('=')
            .with_context(|| format!("--option {option:?} is not KEY=VALUE (e.g. webhook_id=1JE4291016473214C)"))?;
        let value = match key {
            "cert_hosts" => value.split(',').map(|h| serde_json::Value::from(h.trim())).collect(),
            "insecure" => serde_json::Value::from(value == "true"),
            _ => serde_json::Value::from(value),
        };
        table.insert(key.to_owned(), value);
    }
    serde_json::from_value(serde_json::Value::Object(table)).context("invalid --option")
}

/// A fresh delivery id in the provider's style.
fn fresh_id(provider: &str, rng: &mut impl Rng) -> String {
    match provider {
        "standard-webhooks" | "svix" => format!("msg_{}", alphanumeric(rng, 27)),
        "mailgun" => hex(rng, 25),
        _ => uuid(rng),
    }
}

/// Fills a sample's placeholders; each stands for one value throughout the
/// payload, so ids that refer to each other stay consistent:
/// `{{uid}}` 24 lowercase alphanumerics, `{{uuid}}`, `{{sha}}` 40 hex digits,
/// `{{hex32}}`, `{{upper10}}`, `{{b64id}}` 22 base64url characters,
/// `{{digits18}}`, `{{small}}` (1–99999), `{{big}}` (a 16-digit number),
/// `{{unix}}`, `{{unix_ms}}` and `{{iso}}` (now).
fn fill(template: &str, now: UnixMillis, rng: &mut impl Rng) -> String {
    let values = [
        ("{{uid}}", lower_alphanumeric(rng, 24)),
        ("{{uuid}}", uuid(rng)),
        ("{{sha}}", hex(rng, 20)),
        ("{{hex32}}", hex(rng, 16)),
        ("{{upper10}}", upper_alphanumeric(rng, 10)),
        ("{{b64id}}", base64url(rng, 22)),
        (
            "{{digits18}}",
            format!("{}", rng.gen_range(100_000_000_000_000_000u64..999_999_999_999_999_999)),
        ),
        ("{{small}}", rng.gen_range(1..100_000u32).to_string()),
        (
            "{{big}}",
            rng.gen_range(1_000_000_000_000_000u64..9_000_000_000_000_000)
                .to_string(),
        ),
        ("{{unix_ms}}", now.0.to_string()),
        ("{{unix}}", now.as_secs().to_string()),
        ("{{iso}}", rfc3339(now)),
    ];
    let mut text = template.to_owned();
    for (placeholder, value) in &values {
        text = text.replace(placeholder, value);
    }
    text
}

fn pick(rng: &mut impl Rng, alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

fn lower_alphanumeric(rng: &mut impl Rng, len: usize) -> String {
    pick(rng, b"abcdefghijklmnopqrstuvwxyz0123456789", len)
}

fn upper_alphanumeric(rng: &mut impl Rng, len: usize) -> String {
    pick(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", len)
}

fn alphanumeric(rng: &mut impl Rng, len: usize) -> String {
    pick(
        rng,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
        len,
    )
}

fn base64url(rng: &mut impl Rng, len: usize) -> String {
    pick(
        rng,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
        len,
    )
}

fn hex(rng: &mut impl Rng, bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rng.gen::<u8>())).collect()
}

fn uuid(rng: &mut impl Rng) -> String {
    let h = hex(rng, 16);
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        ["8", "9", "a", "b"][rng.gen_range(0..4)],
        &h[17..20],
        &h[20..32]
    )
}

/// The signed request as `--dry-run` prints it: the body as text when it is
/// UTF-8, else as `body_base64`.
fn as_json(signed: &SignedRequest) -> serde_json::Value {
    let mut json = serde_json::json!({
        "method": signed.method.as_str(),
        "url": signed.url,
        "headers": signed.headers,
    });
    match std::str::from_utf8(&signed.body) {
        Ok(text) => json["body"] = text.into(),
        Err(_) => {
            use base64::Engine as _;
            json["body_base64"] = base64::engine::general_purpose::STANDARD.encode(&signed.body).into();
        }
    }
    json
}

/// Sends the request; returns the status and the answer's body.
async fn deliver(
    signed: &SignedRequest,
    cacert: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<(http::StatusCode, Bytes)> {
    let client = match cacert {
        Some(roots) => gatehouse_deliver::destination::http::client_trusting(roots),
        None => gatehouse_deliver::destination::http::client(),
    }
    .map_err(anyhow::Error::msg)?;
    let uri: http::Uri = signed.url.parse().with_context(|| {
        format!(
            "--url {:?} is not a URL (expected e.g. http://127.0.0.1:8080/in/stripe)",
            signed.url
        )
    })?;
    let mut request = http::Request::builder().method(signed.method.clone()).uri(uri);
    for (name, value) in &signed.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let request = request
        .body(Full::new(Bytes::from(signed.body.clone())))
        .context("cannot build the request")?;
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| {
            format!(
                "no answer from {} within {}",
                signed.url,
                humantime::format_duration(timeout)
            )
        })?
        .with_context(|| format!("cannot send to {}", signed.url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_has_a_sample_and_every_sample_fills_to_valid_content() {
        let mut rng = rand::thread_rng();
        for &provider in gatehouse_verify::provider_names() {
            assert!(samples_for(provider).next().is_some(), "{provider} has no sample");
        }
        for sample in SAMPLES {
            let body = fill(sample.template, UnixMillis::from_secs(1_700_000_000), &mut rng);
            assert!(!body.contains("{{"), "{}: unfilled placeholder", sample.event);
            if !sample.form {
                serde_json::from_str::<serde_json::Value>(&body)
                    .unwrap_or_else(|e| panic!("{}: not JSON: {e}", sample.event));
            }
        }
    }

    #[test]
    fn placeholders_are_consistent_within_a_payload_and_fresh_across() {
        let mut rng = rand::thread_rng();
        let now = UnixMillis::from_secs(1_700_000_000);
        let one = fill("{{uid}} {{uid}} {{iso}}", now, &mut rng);
        let (a, rest) = one.split_once(' ').unwrap();
        assert!(rest.starts_with(a));
        assert!(one.ends_with("2023-11-14T22:13:20Z"));
        assert_ne!(fill("{{uid}}", now, &mut rng), fill("{{uid}}", now, &mut rng));
        assert_eq!(uuid(&mut rng).len(), 36);
    }

    #[test]
    fn options_become_the_verify_table() {
        let options =
            parse_options(&["webhook_id=WH-1".into(), "cert_hosts=127.0.0.1, api.paypal.com".into()]).unwrap();
        assert_eq!(options.webhook_id.as_deref(), Some("WH-1"));
        assert_eq!(
            options.cert_hosts,
            Some(vec!["127.0.0.1".to_string(), "api.paypal.com".to_string()])
        );
        let error = parse_options(&["colour=blue".into()]).unwrap_err();
        assert!(format!("{error:#}").contains("colour"), "{error:#}");
        assert!(parse_options(&["no-equals".into()]).is_err());
    }

    #[test]
    fn the_list_names_every_provider() {
        let list = list();
        for &provider in gatehouse_verify::provider_names() {
            assert!(list.contains(provider), "{provider}");
        }
        assert!(list.contains("payment_intent.succeeded"));
    }
}
