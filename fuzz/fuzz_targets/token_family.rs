//! Shared-token schemes: `token` (default and custom header), `gitlab`, and
//! `microsoft-graph` (the client state in the body), built through the
//! registry with the token from the input as the secret.
//!
//! Input (lines; see README.md): scheme, flags, token, extra (header name,
//! dedup id or change type), then the body. Invariants:
//!
//! - the token as sent verifies, with its index (also second of two);
//! - a token differing in one byte, a missing header and another secret are
//!   refused; the body is not covered (documented), so changing it changes
//!   nothing for `token`/`gitlab`;
//! - GitLab's dedup id is the first non-empty of `Idempotency-Key`,
//!   `X-Gitlab-Webhook-UUID`, `X-Gitlab-Event-UUID`;
//! - Graph refuses a batch in which any notification has another client
//!   state, types the batch by its first change type, and answers a POST to
//!   `?validationToken=` with exactly the decoded token, a GET with nothing.
#![no_main]

use gatehouse_core::{Secret, UnixMillis};
use gatehouse_fuzz::{build_provider, check_identity, check_rejection, note_once, pick, text, Lines};
use gatehouse_verify::{InboundRequest, Provider, Rejection, VerifyOptions};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;

struct Case<'a> {
    flags: [u8; 4],
    token: &'a [u8],
    extra: &'a [u8],
    body: &'a [u8],
}

impl Case<'_> {
    fn flag(&self, bit: u8) -> bool {
        self.flags[0] & (1 << bit) != 0
    }
}

type Scheme = fn(&Case<'_>);

const SCHEMES: &[(&str, Scheme)] = &[
    ("token", token_default),
    ("token-header", token_custom_header),
    ("gitlab", gitlab),
    ("microsoft-graph", microsoft_graph),
];

fuzz_target!(|data: &[u8]| {
    let mut lines = Lines::new(data);
    let &(_, scheme) = pick(lines.line(), SCHEMES);
    let flags = lines.bytes();
    let token = lines.line();
    let case = Case {
        flags,
        token: if token.is_empty() { b"glpat-s3cr3t-token" } else { token },
        extra: lines.line(),
        body: lines.rest(),
    };
    scheme(&case);
});

const NOW: UnixMillis = UnixMillis(1_700_000_000_000);
const DECOY: &[u8] = b"old-token";

/// The secrets: the token, after a decoy when the input asks for rotation.
fn secrets(case: &Case<'_>) -> (Vec<Secret>, usize) {
    if case.flag(0) && case.token != DECOY {
        (vec![Secret::new(DECOY), Secret::new(case.token)], 1)
    } else {
        (vec![Secret::new(case.token)], 0)
    }
}

/// Builds `name`, or notes that the registry does not know it.
fn build(name: &str, secrets: &[Secret], options: &VerifyOptions) -> Option<std::sync::Arc<dyn Provider>> {
    match build_provider(name, secrets, None, options) {
        Ok(provider) => Some(provider),
        Err(e) if e.key == "provider" => {
            note_once("token-family-unknown", || {
                format!("token_family: {name} is not in the registry: {e}")
            });
            None
        }
        Err(e) => panic!("{name}: a valid configuration was refused: {e}"),
    }
}

fn post<'a>(url: &'a str, headers: &'a HeaderMap, body: &'a [u8]) -> InboundRequest<'a> {
    static POST: Method = Method::POST;
    InboundRequest {
        method: &POST,
        url,
        headers,
        body,
    }
}

/// The token in `header`, and the checks every header-token scheme keeps.
fn header_token(name: &str, case: &Case<'_>, options: &VerifyOptions, header: &HeaderName) -> Option<()> {
    let value = HeaderValue::from_bytes(case.token).ok()?;
    let (secrets, index) = secrets(case);
    let provider = build(name, &secrets, options)?;
    let mut headers = HeaderMap::new();
    headers.insert(header.clone(), value);
    let url = gatehouse_fuzz::DEFAULT_URL;
    let request = post(url, &headers, case.body);

    let verified = provider
        .verify(&request, NOW)
        .unwrap_or_else(|e| panic!("{name}: refused its own token: {e}"));
    assert_eq!(verified.secret_index(), Some(index), "{name}");
    check_identity(name, &provider.identify(&request));

    // The body is not covered.
    let mut body = case.body.to_vec();
    body.push(b'!');
    assert!(
        provider.verify(&post(url, &headers, &body), NOW).is_ok(),
        "{name}: the body changed the result"
    );

    // One byte off.
    let mut wrong = case.token.to_vec();
    let at = usize::from(case.flags[1]) % wrong.len();
    wrong[at] ^= case.flags[2] | 0x01;
    if wrong.as_slice() != DECOY || !case.flag(0) {
        if let Ok(value) = HeaderValue::from_bytes(&wrong) {
            let mut headers = HeaderMap::new();
            headers.insert(header.clone(), value);
            let result = provider.verify(&post(url, &headers, case.body), NOW);
            assert_eq!(result, Err(Rejection::NoMatchingSignature), "{name}: byte {at} changed");
        }
    }

    // No header.
    let result = provider.verify(&post(url, &HeaderMap::new(), case.body), NOW);
    assert!(matches!(result, Err(Rejection::MissingHeader(_))), "{name}: {result:?}");
    if let Err(rejection) = &result {
        check_rejection(rejection);
    }

    // Another secret.
    if case.token != DECOY {
        let other = build(name, &[Secret::new(DECOY)], options)?;
        assert!(
            other.verify(&request, NOW).is_err(),
            "{name}: verifies with another secret"
        );
    }
    Some(())
}

fn token_default(case: &Case<'_>) {
    header_token(
        "token",
        case,
        &VerifyOptions::default(),
        &HeaderName::from_static("x-gitlab-token"),
    );
}

fn token_custom_header(case: &Case<'_>) {
    let name = text(case.extra).into_owned();
    let options = VerifyOptions {
        header: Some(name.clone()),
        ..Default::default()
    };
    let header = HeaderName::from_bytes(name.trim().as_bytes());
    let built = build_provider("token", &[Secret::new(case.token)], None, &options);
    match (&header, &built) {
        (Ok(header), Ok(_)) => {
            header_token("token", case, &options, header);
        }
        (Err(_), Err(e)) => assert_eq!(e.key, "verify.header", "token: {e}"),
        (Ok(_), Err(e)) => panic!("token: valid header name {name:?} refused: {e}"),
        (Err(_), Ok(_)) => panic!("token: invalid header name {name:?} accepted"),
    }
}

fn gitlab(case: &Case<'_>) {
    let header = HeaderName::from_static("x-gitlab-token");
    if header_token("gitlab", case, &VerifyOptions::default(), &header).is_none() {
        return;
    }
    // Which header is the dedup key.
    let Some(provider) = build("gitlab", &[Secret::new(case.token)], &VerifyOptions::default()) else {
        return;
    };
    let candidates: [(&str, &[u8]); 3] = [
        ("idempotency-key", case.extra),
        ("x-gitlab-webhook-uuid", b"w-1"),
        ("x-gitlab-event-uuid", b"e-1"),
    ];
    let mut headers = HeaderMap::new();
    let mut expected = None;
    for (bit, (name, value)) in candidates.into_iter().enumerate() {
        if !case.flag(bit as u8 + 1) {
            continue;
        }
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        if expected.is_none() {
            expected = value.to_str().ok().filter(|v| !v.is_empty()).map(str::to_owned);
        }
        headers.insert(HeaderName::from_static(name), value);
    }
    let identity = provider.identify(&post(gatehouse_fuzz::DEFAULT_URL, &headers, case.body));
    assert_eq!(identity.provider_event_id, expected, "gitlab: dedup key");
}

fn microsoft_graph(case: &Case<'_>) {
    #[cfg(gatehouse_provider = "microsoft_graph")]
    microsoft_graph_impl(case);
    #[cfg(not(gatehouse_provider = "microsoft_graph"))]
    let _ = case;
}

#[cfg(gatehouse_provider = "microsoft_graph")]
fn microsoft_graph_impl(case: &Case<'_>) {
    use gatehouse_fuzz::percent_encode;
    use gatehouse_verify::providers::microsoft_graph::notification_body;
    let name = "microsoft-graph";
    let validation_url = format!(
        "https://gatehouse.test/in/graph?validationToken={}",
        percent_encode(case.extra)
    );
    let Ok(client_state) = std::str::from_utf8(case.token) else {
        return;
    };
    let (secrets, index) = secrets(case);
    let Some(provider) = build(name, &secrets, &VerifyOptions::default()) else {
        return;
    };
    let change_type = text(case.extra);
    let body = notification_body(client_state, &change_type, "users/1");
    let headers = HeaderMap::new();
    let url = gatehouse_fuzz::DEFAULT_URL;

    let request = post(url, &headers, body.as_bytes());
    let verified = provider
        .verify(&request, NOW)
        .unwrap_or_else(|e| panic!("{name}: refused its own client state: {e}"));
    assert_eq!(verified.secret_index(), Some(index), "{name}");
    let identity = provider.identify(&request);
    check_identity(name, &identity);
    let expected_type = Some(change_type.into_owned()).filter(|t| !t.is_empty());
    assert_eq!(identity.event_type, expected_type, "{name}: event type");

    // A batch with one notification from someone else.
    let mut batch: serde_json::Value = serde_json::from_str(&body).expect("notification_body is JSON");
    let mut intruder = batch["value"][0].clone();
    intruder["clientState"] = serde_json::json!(text(case.body));
    if intruder["clientState"] != batch["value"][0]["clientState"] && case.body != DECOY {
        if let Some(value) = batch["value"].as_array_mut() {
            value.insert(usize::from(case.flag(1)), intruder);
        }
        let mixed = batch.to_string();
        let result = provider.verify(&post(url, &headers, mixed.as_bytes()), NOW);
        assert_eq!(result, Err(Rejection::NoMatchingSignature), "{name}: mixed batch");
    }

    // Another secret.
    if case.token != DECOY {
        if let Some(other) = build(name, &[Secret::new(DECOY)], &VerifyOptions::default()) {
            assert!(
                other.verify(&request, NOW).is_err(),
                "{name}: verifies with another secret"
            );
        }
    }

    // Subscription validation: POST answered with the decoded token, GET not.
    let expected = text(case.extra);
    let reply = provider.unsigned_handshake(&post(&validation_url, &headers, case.body));
    if expected.is_empty() || expected.len() > 4096 {
        assert!(reply.is_none(), "{name}: answered validation token {expected:?}");
    } else {
        let reply = reply.unwrap_or_else(|| panic!("{name}: did not answer validation token {expected:?}"));
        assert_eq!(&reply.body[..], expected.as_bytes(), "{name}: validation echo");
        assert_eq!(reply.content_type, "text/plain", "{name}");
    }
    static GET: Method = Method::GET;
    let get = InboundRequest {
        method: &GET,
        ..post(&validation_url, &headers, case.body)
    };
    assert!(provider.unsigned_handshake(&get).is_none(), "{name}: answered a GET");
}
