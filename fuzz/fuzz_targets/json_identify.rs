//! `identify()` on arbitrary bodies, for every provider `provider_names()`
//! returns. The input is a body, optionally preceded by a header section
//! (same format as the `headers` target: without an empty line, all of it
//! is the body). Each provider identifies it as given and, when the input
//! sets no `Content-Type`, once more as JSON and once as a form, since
//! several providers branch on it.
//!
//! Invariants: no panic; identify is deterministic; a handshake reply is
//! sendable (and JSON when it says so); Slack echoes exactly the challenge
//! and Zoom answers with the plain token it was sent.
#![no_main]

use gatehouse_fuzz::{check_identity, fleet, Input};
use gatehouse_verify::{HandshakeReply, Identity, Kind};
use http::header::CONTENT_TYPE;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data, true);
    let mut variants = vec![input.clone()];
    if !input.headers.contains_key(CONTENT_TYPE) {
        for content_type in ["application/json", "application/x-www-form-urlencoded"] {
            let mut variant = input.clone();
            variant
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            variants.push(variant);
        }
    }
    for variant in &variants {
        let request = variant.request();
        for member in &fleet().members {
            let who = format!("{} ({})", member.name, member.label);
            let identity = member.provider.identify(&request);
            check_identity(&who, &identity);
            assert_eq!(
                identity,
                member.provider.identify(&request),
                "{who}: identify is not deterministic"
            );
            check_specific(member.name, &identity);
        }
    }
});

/// Checks that hold whatever the body, for providers whose handshake
/// answer echoes part of it.
fn check_specific(name: &str, identity: &Identity) {
    let Kind::Handshake(reply) = &identity.kind else {
        return;
    };
    match name {
        "slack" => {
            let answer = json(name, reply);
            assert!(
                answer["challenge"].is_string(),
                "slack: reply without a challenge: {answer}"
            );
            assert_eq!(answer.as_object().map(|o| o.len()), Some(1), "slack: {answer}");
        }
        "zoom" => {
            let answer = json(name, reply);
            assert!(answer["plainToken"].is_string(), "zoom: {answer}");
            let encrypted = answer["encryptedToken"].as_str().unwrap_or_default();
            assert!(
                encrypted.len() == 64 && encrypted.bytes().all(|b| b.is_ascii_hexdigit()),
                "zoom: encryptedToken {encrypted:?}"
            );
        }
        _ => {}
    }
}

fn json(name: &str, reply: &HandshakeReply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{name}: reply is not JSON ({e}): {:?}", reply.body))
}
