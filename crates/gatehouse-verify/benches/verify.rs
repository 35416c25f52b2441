//! Cost of a full `Provider::verify` per provider on a realistic 1 KB JSON
//! body, signed by the provider's own `sign` function and checked at a time
//! inside the tolerance: the work the ingest path pays for every request.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use gatehouse_core::{Secret, UnixMillis};
use gatehouse_verify::providers::{github, hmac, standard_webhooks, stripe, token};
use gatehouse_verify::{build, InboundRequest, Provider, ProviderSpec, VerifyOptions};

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

/// One benchmark case: a built provider and the headers its sender would send.
struct Case {
    id: &'static str,
    provider: Arc<dyn Provider>,
    headers: HeaderMap,
}

fn case(id: &'static str, secret: &str, options: VerifyOptions, headers: Vec<(HeaderName, String)>) -> Case {
    let secrets = [Secret::new(secret)];
    let provider = build(ProviderSpec {
        provider: id,
        secrets: &secrets,
        tolerance: None,
        options: &options,
    })
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

    vec![
        case(
            "stripe",
            stripe_secret,
            VerifyOptions::default(),
            vec![named(
                stripe::SIGNATURE_HEADER,
                stripe::sign(stripe_secret.as_bytes(), NOW_SECS, body),
            )],
        ),
        case(
            "github",
            github_secret,
            VerifyOptions::default(),
            vec![
                named(github::SIGNATURE_HEADER, github::sign(github_secret.as_bytes(), body)),
                named(github::EVENT_HEADER, "payment_intent".into()),
                named(github::DELIVERY_HEADER, "72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
            ],
        ),
        case(
            "standard-webhooks",
            sw_secret,
            VerifyOptions::default(),
            vec![
                named(standard_webhooks::WEBHOOK_HEADERS.id, sw_id.into()),
                named(standard_webhooks::WEBHOOK_HEADERS.timestamp, NOW_SECS.to_string()),
                named(
                    standard_webhooks::WEBHOOK_HEADERS.signature,
                    standard_webhooks::sign(&sw_key, sw_id, NOW_SECS, body),
                ),
            ],
        ),
        case("hmac", hmac_secret, hmac_options, hmac_headers),
        case(
            "token",
            token_secret,
            VerifyOptions::default(),
            vec![named(token::DEFAULT_HEADER, token::sign(token_secret))],
        ),
    ]
}

fn verify_1kb(c: &mut Criterion) {
    let body = body();
    let method = Method::POST;
    // Well inside every tolerance, but not the signing instant itself.
    let now = UnixMillis::from_secs(NOW_SECS + 5);
    let mut group = c.benchmark_group("verify_1kb");
    for case in cases(&body) {
        let request = InboundRequest {
            method: &method,
            url: "https://gatehouse.example/in/bench",
            headers: &case.headers,
            body: &body,
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
