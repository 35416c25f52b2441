//! Cost of a full `Provider::verify` per provider on a realistic 1 KB body
//! (JSON, or a form for Twilio's form variant), signed by the provider's own
//! `sign` function and checked at a time inside the tolerance: the work the
//! ingest path pays for every request. Providers that verify a public-key
//! signature are marked `(asymmetric …)` in their id: they cost far more
//! than an HMAC by design.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use gatehouse_core::{Secret, UnixMillis};
use gatehouse_verify::providers::{
    discord, dropbox, github, gitlab, hmac, intercom, linear, mailgun, paypal, sendgrid, shopify, slack, square,
    standard_webhooks, stripe, token, twilio, zoom,
};
use gatehouse_verify::{build_with, BuildContext, InboundRequest, Provider, ProviderSpec, VerifyOptions};

const NOW_SECS: i64 = 1_700_000_000;
const BODY_LEN: usize = 1024;

/// A Stripe-like event, padded to exactly [`BODY_LEN`] bytes.
fn body() -> Vec<u8> {
    let head = r#"{"id":"evt_1OaBcDeFgHiJkLmNoPqRsTuV","object":"event","api_version":"2023-10-16","created":1700000000,"type":"payment_intent.succeeded","livemode":false,"pending_webhooks":1,"request":{"id":"req_AbCdEfGhIjKlMn","idempotency_key":"6f1c2a9e-4b7d-4f0e-9a51-0c3d2e1f4a5b"},"data":{"object":{"id":"pi_3OaBcDeFgHiJkLmN0aBcDeFg","object":"payment_intent","amount":2000,"amount_received":2000,"currency":"eur","customer":"cus_PqRsTuVwXyZaBc","payment_method":"pm_1OaBcDeFgHiJkLmNoPqRsTuV","status":"succeeded","metadata":{"order_id":"ord_000123456","channel":"web"},"description":""#;
    let tail = r#""}}}"#;
    let mut body = String::from(head);
    let padding = BODY_LEN - head.len() - tail.len();
    body.extend(std::iter::repeat_n('x', padding));
    body.push_str(tail);
    assert_eq!(body.len(), BODY_LEN);
    body.into_bytes()
}

/// `head`, JSON missing its last object's closing brace, padded with a `pad`
/// field to exactly [`BODY_LEN`] bytes and closed with `close`.
fn padded(head: &str, close: &str) -> Vec<u8> {
    let mut body = format!("{head},\"pad\":\"");
    let padding = BODY_LEN - body.len() - 1 - close.len();
    body.extend(std::iter::repeat_n('x', padding));
    body.push('"');
    body.push_str(close);
    assert_eq!(body.len(), BODY_LEN);
    body.into_bytes()
}

/// The URL every case is posted to, unless the scheme signs another.
const URL: &str = "https://gatehouse.example/in/bench";

/// One benchmark case: a built provider and the request its sender would send.
struct Case {
    id: &'static str,
    provider: Arc<dyn Provider>,
    headers: HeaderMap,
    url: String,
    body: Vec<u8>,
}

/// Everything a case needs but its id and headers; the default is the
/// shared 1 KB JSON body posted to [`URL`] with one secret.
struct Setup<'a> {
    provider: &'static str,
    secrets: Vec<Secret>,
    options: VerifyOptions,
    context: BuildContext,
    url: String,
    body: &'a [u8],
}

impl<'a> Setup<'a> {
    fn new(provider: &'static str, secret: &str, body: &'a [u8]) -> Self {
        Self {
            provider,
            secrets: vec![Secret::new(secret)],
            options: VerifyOptions::default(),
            context: BuildContext::default(),
            url: URL.to_owned(),
            body,
        }
    }
}

fn case(id: &'static str, setup: Setup<'_>, headers: Vec<(HeaderName, String)>) -> Case {
    let provider = build_with(
        ProviderSpec {
            provider: setup.provider,
            secrets: &setup.secrets,
            tolerance: None,
            options: &setup.options,
        },
        &setup.context,
    )
    .unwrap_or_else(|e| panic!("{id}: benchmark config is valid: {e}"));
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            name,
            HeaderValue::from_str(&value).expect("signatures are visible ASCII"),
        );
    }
    Case {
        id,
        provider,
        headers: map,
        url: setup.url,
        body: setup.body.to_vec(),
    }
}

/// A header pair from one of the providers' lowercase name constants.
fn named(name: &'static str, value: String) -> (HeaderName, String) {
    (HeaderName::from_static(name), value)
}

fn cases(body: &[u8]) -> Vec<Case> {
    let stripe_secret = "whsec_bench_stripe_secret_0123456789";
    let github_secret = "bench github secret";
    let sw_secret = "whsec_Z2F0ZWhvdXNlIGJlbmNobWFyayBzaWduaW5nIGtleSE=";
    let sw_key = standard_webhooks::decode_secret(sw_secret.as_bytes()).expect("bench secret is base64");
    let sw_id = "msg_2aBcDeFgHiJkLmNoPqRsTuVwXyZ";
    let hmac_secret = "bench hmac secret";
    let hmac_options = VerifyOptions {
        header: Some("X-Signature".into()),
        ..Default::default()
    };
    let hmac_config = hmac::HmacConfig::from_options(&hmac_options, None).expect("bench hmac config is valid");
    let hmac_headers = hmac::sign(&hmac_config, hmac_secret.as_bytes(), NOW_SECS, body);
    let token_secret = "glpat-bench-token-0123456789";

    let mut cases = vec![
        case(
            "stripe",
            Setup::new("stripe", stripe_secret, body),
            vec![named(
                stripe::SIGNATURE_HEADER,
                stripe::sign(stripe_secret.as_bytes(), NOW_SECS, body),
            )],
        ),
        case(
            "github",
            Setup::new("github", github_secret, body),
            vec![
                named(github::SIGNATURE_HEADER, github::sign(github_secret.as_bytes(), body)),
                named(github::EVENT_HEADER, "payment_intent".into()),
                named(github::DELIVERY_HEADER, "72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
            ],
        ),
        case(
            "standard-webhooks",
            Setup::new("standard-webhooks", sw_secret, body),
            vec![
                named(standard_webhooks::WEBHOOK_HEADERS.id, sw_id.into()),
                named(standard_webhooks::WEBHOOK_HEADERS.timestamp, NOW_SECS.to_string()),
                named(
                    standard_webhooks::WEBHOOK_HEADERS.signature,
                    standard_webhooks::sign(&sw_key, sw_id, NOW_SECS, body),
                ),
            ],
        ),
        case(
            "hmac",
            Setup {
                options: hmac_options,
                ..Setup::new("hmac", hmac_secret, body)
            },
            hmac_headers,
        ),
        case(
            "token",
            Setup::new("token", token_secret, body),
            vec![named(token::DEFAULT_HEADER, token::sign(token_secret))],
        ),
    ];
    cases.extend(tier_two_and_three(body));
    cases
}

/// The providers added after the first five, one case each (two for
/// Twilio's form and JSON variants).
fn tier_two_and_three(body: &[u8]) -> Vec<Case> {
    let mut cases = Vec::new();

    let twilio_token = "bench twilio auth token";
    let form_params: Vec<(String, String)> = [
        ("AccountSid", "AC0123456789abcdef0123456789abcdef"),
        ("ApiVersion", "2010-04-01"),
        ("From", "15005550006"),
        ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
        ("MessageStatus", "delivered"),
        ("SmsSid", "SM0123456789abcdef0123456789abcdef"),
        ("SmsStatus", "delivered"),
        ("To", "15005550009"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let mut form = form_params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    form.push_str("&Body=");
    let text = "x".repeat(BODY_LEN - form.len());
    form.push_str(&text);
    assert_eq!(form.len(), BODY_LEN);
    let mut params: Vec<(&str, &str)> = form_params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    params.push(("Body", &text));
    cases.push(case(
        "twilio (form)",
        Setup::new("twilio", twilio_token, form.as_bytes()),
        vec![
            named(
                twilio::SIGNATURE_HEADER,
                twilio::sign(twilio::Algorithm::Sha1, twilio_token.as_bytes(), URL, &params),
            ),
            (http::header::CONTENT_TYPE, "application/x-www-form-urlencoded".into()),
        ],
    ));
    let json_url = twilio::url_with_body_hash(URL, body);
    cases.push(case(
        "twilio (json)",
        Setup {
            url: json_url.clone(),
            ..Setup::new("twilio", twilio_token, body)
        },
        vec![
            named(
                twilio::SIGNATURE_HEADER,
                twilio::sign(twilio::Algorithm::Sha1, twilio_token.as_bytes(), &json_url, &[]),
            ),
            (http::header::CONTENT_TYPE, "application/json".into()),
        ],
    ));

    let slack_secret = "8f742231b10e8888abcd99yyyzzz85a5";
    cases.push(case(
        "slack",
        Setup::new("slack", slack_secret, body),
        vec![
            named(slack::SLACK_HEADERS.timestamp, NOW_SECS.to_string()),
            named(
                slack::SLACK_HEADERS.signature,
                slack::sign(slack_secret.as_bytes(), NOW_SECS, body),
            ),
        ],
    ));

    let shopify_secret = "shpss_bench_client_secret";
    cases.push(case(
        "shopify",
        Setup::new("shopify", shopify_secret, body),
        vec![
            named(
                shopify::SIGNATURE_HEADER,
                shopify::sign(shopify_secret.as_bytes(), body),
            ),
            named("x-shopify-topic", "orders/create".into()),
            named("x-shopify-webhook-id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043".into()),
        ],
    ));

    let paypal_key = <rsa::RsaPrivateKey as rsa::pkcs8::DecodePrivateKey>::from_pkcs8_pem(include_str!(
        "../tests/data/paypal-signer.key.pem"
    ))
    .expect("test key is PKCS#8 PEM");
    let paypal_cert_url = "https://api.paypal.com/v1/notifications/certs/CERT-bench";
    let paypal_context = BuildContext::default();
    paypal_context
        .certificates
        .insert_pem(
            paypal_cert_url,
            include_bytes!("../tests/data/paypal-signer.cert.pem"),
            UnixMillis::from_secs(NOW_SECS),
        )
        .expect("test certificate is valid in 2023");
    let paypal_webhook_id = "1JE4291016473214C";
    let transmission_id = "69cd13f0-d67a-11e5-baa3-778b53f4ae55";
    let transmission_time = "2023-11-14T22:13:20Z";
    let paypal_body = padded(
        r#"{"id":"WH-2WR32451HC0233532-67976317FL4543714","event_type":"PAYMENT.CAPTURE.COMPLETED""#,
        "}",
    );
    cases.push(case(
        "paypal (asymmetric rsa-2048)",
        Setup {
            secrets: vec![],
            options: VerifyOptions {
                webhook_id: Some(paypal_webhook_id.into()),
                ..Default::default()
            },
            context: paypal_context,
            ..Setup::new("paypal", "", &paypal_body)
        },
        vec![
            named(paypal::TRANSMISSION_ID_HEADER, transmission_id.into()),
            named(paypal::TRANSMISSION_TIME_HEADER, transmission_time.into()),
            named(
                paypal::SIGNATURE_HEADER,
                paypal::sign(
                    &paypal_key,
                    transmission_id,
                    transmission_time,
                    paypal_webhook_id,
                    &paypal_body,
                ),
            ),
            named(paypal::CERT_URL_HEADER, paypal_cert_url.into()),
            named(paypal::AUTH_ALGO_HEADER, paypal::AUTH_ALGO.into()),
        ],
    ));

    let square_key = "bench-square-signature-key";
    cases.push(case(
        "square",
        Setup::new("square", square_key, body),
        vec![named(
            square::SIGNATURE_HEADER,
            square::sign(square_key.as_bytes(), URL, body),
        )],
    ));

    let discord_seed = [42u8; 32];
    let discord_timestamp = NOW_SECS.to_string();
    cases.push(case(
        "discord (asymmetric ed25519)",
        Setup::new("discord", &discord::public_key_hex(&discord_seed), body),
        vec![
            named(discord::TIMESTAMP_HEADER, discord_timestamp.clone()),
            named(
                discord::SIGNATURE_HEADER,
                discord::sign(&discord_seed, &discord_timestamp, body),
            ),
        ],
    ));

    let zoom_secret = "bench-zoom-secret-token";
    cases.push(case(
        "zoom",
        Setup::new("zoom", zoom_secret, body),
        vec![
            named(zoom::ZOOM_HEADERS.timestamp, NOW_SECS.to_string()),
            named(
                zoom::ZOOM_HEADERS.signature,
                zoom::sign(zoom_secret.as_bytes(), NOW_SECS, body),
            ),
        ],
    ));

    let gitlab_token = "bench-gitlab-hook-token";
    cases.push(case(
        "gitlab",
        Setup::new("gitlab", gitlab_token, body),
        vec![
            named(gitlab::TOKEN_HEADER, gitlab::sign(gitlab_token)),
            named(gitlab::EVENT_HEADER, "Push Hook".into()),
        ],
    ));

    // A P-256 key made once with Python's `cryptography` package.
    let sendgrid_scalar: [u8; 32] = hex::decode("4a04dddc48efc56629bb8ba3852a393a07bc4211008202462e0500aea9cd310d")
        .expect("scalar is hex")
        .try_into()
        .expect("scalar is 32 bytes");
    let sendgrid_key = p256::ecdsa::SigningKey::from_bytes(&sendgrid_scalar.into()).expect("scalar is a valid key");
    let sendgrid_public = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEu31MgjFjsLJyW2svpf50wTN3PbLJoBcmIQIC+NKxH/gR8A8FwG8rsiImksFh3kFt+sAnSL0SjsOut+qAnUVJFg==";
    let sendgrid_body = padded(
        r#"[{"email":"alice@example.com","event":"delivered","sg_event_id":"sg-1""#,
        "}]",
    );
    let sendgrid_timestamp = NOW_SECS.to_string();
    cases.push(case(
        "sendgrid (asymmetric ecdsa-p256)",
        Setup::new("sendgrid", sendgrid_public, &sendgrid_body),
        vec![
            named(sendgrid::TIMESTAMP_HEADER, sendgrid_timestamp.clone()),
            named(
                sendgrid::SIGNATURE_HEADER,
                sendgrid::sign(&sendgrid_key, &sendgrid_timestamp, &sendgrid_body),
            ),
        ],
    ));

    let linear_secret = "lin_wh_bench_secret";
    let linear_body = padded(
        &format!(
            r#"{{"action":"create","type":"Issue","webhookTimestamp":{},"data":{{"id":"2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9"}}"#,
            NOW_SECS * 1000
        ),
        "}",
    );
    cases.push(case(
        "linear",
        Setup::new("linear", linear_secret, &linear_body),
        vec![
            named(
                linear::SIGNATURE_HEADER,
                linear::sign(linear_secret.as_bytes(), &linear_body),
            ),
            named(linear::DELIVERY_HEADER, "234d1a4e-b617-4388-90fe-adc3633d6b72".into()),
        ],
    ));

    let intercom_secret = "bench-intercom-client-secret";
    cases.push(case(
        "intercom",
        Setup::new("intercom", intercom_secret, body),
        vec![named(
            intercom::SIGNATURE_HEADER,
            intercom::sign(intercom_secret.as_bytes(), body),
        )],
    ));

    let mailgun_key = "key-bench-mailgun-signing-key";
    let mailgun_token = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0";
    let mailgun_body = padded(
        &format!(
            r#"{{"signature":{{"timestamp":"{NOW_SECS}","token":"{mailgun_token}","signature":"{}"}},"event-data":{{"event":"delivered","id":"CPgfbmQMTCKtHW6uIWtuVe"}}"#,
            mailgun::sign(mailgun_key.as_bytes(), &NOW_SECS.to_string(), mailgun_token)
        ),
        "}",
    );
    cases.push(case(
        "mailgun",
        Setup::new("mailgun", mailgun_key, &mailgun_body),
        vec![],
    ));

    let graph_state = "bench-graph-client-state-4b1f0a6c";
    let graph_body = padded(
        &format!(
            r#"{{"value":[{{"subscriptionId":"7f105c7d-2dc5-4530-97cd-4e7ae6534c07","clientState":"{graph_state}","changeType":"created","resource":"Users/1/messages/2","tenantId":"84bd8158-6d4d-4958-8b9f-9d6445542f95"}}]"#
        ),
        "}",
    );
    cases.push(case(
        "microsoft-graph",
        Setup::new("microsoft-graph", graph_state, &graph_body),
        vec![],
    ));

    let dropbox_secret = "bench-dropbox-app-secret";
    cases.push(case(
        "dropbox",
        Setup::new("dropbox", dropbox_secret, body),
        vec![named(
            dropbox::SIGNATURE_HEADER,
            dropbox::sign(dropbox_secret.as_bytes(), body),
        )],
    ));

    cases
}

fn verify_1kb(c: &mut Criterion) {
    let body = body();
    let method = Method::POST;
    // Well inside every tolerance, but not the signing instant itself.
    let now = UnixMillis::from_secs(NOW_SECS + 5);
    let mut group = c.benchmark_group("verify_1kb");
    for case in cases(&body) {
        assert_eq!(case.body.len(), BODY_LEN, "{}: benchmark body is 1 KB", case.id);
        let request = InboundRequest {
            method: &method,
            url: &case.url,
            headers: &case.headers,
            body: &case.body,
        };
        // A benchmark of the rejection path would measure the wrong thing.
        if let Err(rejection) = case.provider.verify(&request, now) {
            panic!("{}: benchmark request must verify: {rejection}", case.id);
        }
        group.bench_function(case.id, |b| {
            b.iter(|| case.provider.verify(black_box(&request), black_box(now)))
        });
    }
    group.finish();
}

criterion_group!(benches, verify_1kb);
criterion_main!(benches);
